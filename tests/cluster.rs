//! Multi-process tests of the data path: real nodes on loopback, driven
//! through RESP and through the REPL.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{Cluster, ReplProc, bulk, db_bin, live_nodes, wait_until};
use distro_db::resp::Frame;

#[test]
fn write_through_one_node_read_through_another() {
    let c = Cluster::start(3);
    assert_eq!(c.cmd(0, &["SET", "user:1", "alice"]), Frame::ok());
    assert_eq!(c.cmd(1, &["GET", "user:1"]), bulk("alice"));
    assert_eq!(c.cmd(2, &["GET", "user:1"]), bulk("alice"));
    assert_eq!(c.cmd(2, &["GET", "nobody"]), Frame::Null);
    // Overwrite through a third node, delete through the first.
    // W=3: every replica has "bob" before the DEL below is coordinated.
    assert_eq!(c.cmd(2, &["SET", "user:1", "bob", "W=3"]), Frame::ok());
    assert_eq!(c.cmd(0, &["GET", "user:1"]), bulk("bob"));
    assert_eq!(c.cmd(0, &["VDEL", "user:1", "W=3"]), Frame::Integer(1));
    assert_eq!(c.cmd(1, &["GET", "user:1"]), Frame::Null);
    assert_eq!(c.cmd(1, &["DEL", "user:1"]), Frame::Integer(0));
    // Every node of a 3-node cluster with N=3 owns every key.
    let owners = c.cmd(0, &["OWNERS", "user:1"]).text().expect("OWNERS");
    assert_eq!(owners.lines().count(), 3);
}

#[test]
fn sigkill_one_of_three_and_keep_reading_and_writing() {
    let mut c = Cluster::start(3);
    for i in 0..30 {
        assert_eq!(
            c.cmd(i % 3, &["SET", &format!("k{i}"), &format!("v{i}")]),
            Frame::ok()
        );
    }
    c.nodes[2].sigkill();
    // Reads and writes work at once (the dead replica is simply not waited for)...
    for i in 0..30 {
        assert_eq!(
            c.cmd(i % 2, &["GET", &format!("k{i}")]),
            bulk(&format!("v{i}")),
            "k{i}"
        );
    }
    for i in 30..40 {
        assert_eq!(
            c.cmd(i % 2, &["SET", &format!("k{i}"), &format!("v{i}")]),
            Frame::ok()
        );
    }
    // ...and the failure detector marks the node down within a few seconds.
    let (a0, dead) = (c.nodes[0].addr(), c.nodes[2].id.clone());
    wait_until(Duration::from_secs(15), "node 2 to be marked down", || {
        !live_nodes(&a0).contains(&dead)
    });
    for i in 30..40 {
        assert_eq!(c.cmd(1, &["GET", &format!("k{i}")]), bulk(&format!("v{i}")));
    }
    // With two of three down, a quorum of two cannot be met: a clear error.
    c.nodes[1].sigkill();
    let reply = c.cmd(0, &["GET", "k1"]);
    let Frame::Error(msg) = reply else {
        panic!("expected an error, got {reply:?}")
    };
    assert!(msg.contains("read quorum not met: 1 of 2"), "{msg}");
    let reply = c.cmd(0, &["SET", "k1", "x"]);
    let Frame::Error(msg) = reply else {
        panic!("expected an error, got {reply:?}")
    };
    assert!(msg.contains("write outcome unknown: 1 of 2"), "{msg}");
    // R=1 and W=1 overrides still work on the survivor.
    assert_eq!(c.cmd(0, &["GET", "k1", "R=1"]), bulk("x"));
    assert_eq!(c.cmd(0, &["SET", "k2", "y", "W=1"]), Frame::ok());
}

#[test]
fn concurrent_writes_with_one_context_become_siblings_and_a_write_resolves_them() {
    let c = Cluster::start(3);
    assert_eq!(c.cmd(0, &["SET", "cart", "base"]), Frame::ok());
    let ctx = context(&c.cmd(0, &["VGET", "cart"]));
    let ctx_arg = format!("CTX={ctx}");
    // Two clients, two coordinators, the same earlier context.
    assert_eq!(c.cmd(0, &["SET", "cart", "apple", &ctx_arg]), Frame::ok());
    assert_eq!(c.cmd(1, &["SET", "cart", "pear", &ctx_arg]), Frame::ok());
    assert_eq!(c.siblings(2, "cart", 2), vec![bulk("apple"), bulk("pear")]);
    // A plain GET answers one of them, the same one through every node
    // (the most recently written), as a Redis client expects one value.
    let pick = c.cmd(2, &["GET", "cart", "R=3"]);
    assert!(pick == bulk("apple") || pick == bulk("pear"), "{pick:?}");
    for i in 0..2 {
        assert_eq!(c.cmd(i, &["GET", "cart", "R=3"]), pick);
    }
    // VGET shows both with a context that covers both.
    let both = c.cmd(2, &["VGET", "cart"]);
    let Frame::Array(items) = &both else {
        panic!("VGET")
    };
    assert_eq!(items.len(), 3, "{both:?}");
    let ctx2 = format!("CTX={}", context(&both));
    assert_eq!(c.cmd(2, &["SET", "cart", "apple+pear", &ctx2]), Frame::ok());
    for i in 0..3 {
        assert_eq!(c.cmd(i, &["GET", "cart", "R=3"]), bulk("apple+pear"));
    }
    // A write with a stale context (the first one) does not erase the
    // resolution it never saw: it becomes a sibling of it.
    assert_eq!(
        c.cmd(1, &["SET", "cart", "late", &ctx_arg, "W=3"]),
        Frame::ok()
    );
    assert_eq!(
        c.siblings(0, "cart", 2),
        vec![bulk("apple+pear"), bulk("late")]
    );
    // A plain SET (no context) supersedes everything its coordinator has seen.
    assert_eq!(c.cmd(0, &["SET", "cart", "reset", "W=3"]), Frame::ok());
    assert_eq!(c.cmd(2, &["GET", "cart"]), bulk("reset"));
}

fn context(vget: &Frame) -> String {
    match vget {
        Frame::Array(items) => match items.first() {
            Some(Frame::Bulk(ctx)) => String::from_utf8(ctx.clone()).expect("utf-8"),
            other => panic!("no context in {other:?}"),
        },
        other => panic!("VGET answered {other:?}"),
    }
}

#[test]
fn repl_client_kill_and_quit() {
    let mut c = Cluster::start(3);
    let mut cmd = Command::new(db_bin());
    cmd.arg("repl").arg("--connect").arg(c.nodes[0].addr());
    let mut repl = ReplProc::spawn(cmd);
    assert_eq!(repl.ask("SET greeting \"hello world\""), "OK");
    assert_eq!(repl.ask("GET greeting"), "\"hello world\"");
    assert_eq!(repl.ask("GET missing"), "(nil)");
    assert_eq!(repl.ask("PING"), "PONG");
    assert!(
        repl.ask("FROB x")
            .starts_with("(error) ERR unknown command 'FROB'")
    );
    assert_eq!(
        repl.ask("GET"),
        "(error) ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(repl.ask("SET k \"open"), "(error) ERR unbalanced quotes");
    assert_eq!(
        repl.ask("GET greeting R=4"),
        "(error) ERR R=4 exceeds N=3 (the number of replicas of this key)"
    );
    // NODES: one line per node.
    repl.send("NODES");
    let lines: Vec<String> = (0..3).map(|_| repl.line()).collect();
    for n in &c.nodes {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{} {} live", n.id, n.addr()))),
            "{lines:?}"
        );
    }
    // KILL: the process exits within 2 s; reads and writes keep working.
    let victim = c.nodes[2].id.clone();
    assert_eq!(repl.ask(&format!("KILL {victim}")), "OK");
    wait_until(Duration::from_secs(2), "the killed node to exit", || {
        !c.nodes[2].running()
    });
    assert_eq!(repl.ask("SET after kill"), "OK");
    assert_eq!(repl.ask("GET after"), "\"kill\"");
    assert!(
        repl.ask("KILL nobody")
            .starts_with("(error) ERR unknown node 'nobody'")
    );
    // QUIT stops every node and the REPL.
    // The killed node cannot be told to stop: the answer says so.
    let quit = repl.ask("QUIT");
    assert!(quit.starts_with("OK (1 of 2 other nodes stopped"), "{quit}");
    repl.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "every node to exit", || {
        c.nodes.iter_mut().all(|n| !n.running())
    });
}

#[test]
fn repl_exits_at_end_of_input_without_stopping_the_cluster() {
    let mut c = Cluster::start(1);
    let mut cmd = Command::new(db_bin());
    cmd.arg("repl").arg("--connect").arg(c.nodes[0].addr());
    let mut repl = ReplProc::spawn(cmd);
    assert_eq!(repl.ask("SET a 1"), "OK");
    repl.close_stdin();
    assert!(repl.wait_exit(Duration::from_secs(10)).success());
    assert!(c.nodes[0].running());
    assert_eq!(c.cmd(0, &["GET", "a"]), bulk("1"));
}

#[test]
fn master_with_two_slaves() {
    // The README's start (`db slave 55551 & db slave 55552 & db master
    // 55553`), on a free block of ports instead of the reserved ones, each
    // node told the others as seeds (the default seeds of a node given none
    // are the reserved ports: a unit test of src/config.rs covers that rule).
    let base = common::free_block(3);
    let ports = [base, base + 1, base + 2];
    let seeds: Vec<String> = ports
        .iter()
        .flat_map(|p| ["--seed".to_string(), format!("127.0.0.1:{p}")])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut slaves: Vec<common::NodeProc> = ports[..2]
        .iter()
        .map(|&port| {
            let log = dir.path().join(format!("{port}.log"));
            let child = common::checked(
                Command::new(db_bin())
                    .arg("slave")
                    .arg(port.to_string())
                    .args(&seeds),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
            common::NodeProc {
                port,
                id: format!("node-{port}"),
                child,
                log,
            }
        })
        .collect();
    let mut cmd = Command::new(db_bin());
    cmd.arg("master")
        .arg(ports[2].to_string())
        .args(&seeds)
        .arg("--log-file")
        .arg(dir.path().join("master.log"));
    let mut master = ReplProc::spawn(cmd);
    let _guard = common::ShutdownOnDrop(vec![ports[2]]);
    let at = format!("127.0.0.1:{}", ports[2]);
    wait_until(Duration::from_secs(20), "three live nodes", || {
        live_nodes(&at).len() == 3
    });
    assert_eq!(master.ask("SET user:1 alice"), "OK");
    assert_eq!(master.ask("GET user:1"), "\"alice\"");
    assert_eq!(master.ask(&format!("KILL node-{}", ports[0])), "OK");
    wait_until(Duration::from_secs(10), "the killed slave to exit", || {
        !slaves[0].running()
    });
    assert_eq!(master.ask("GET user:1"), "\"alice\"");
    assert_eq!(master.ask("SET user:2 bob"), "OK");
    assert!(master.ask("QUIT").starts_with("OK"));
    master.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "the other slave to exit", || {
        !slaves[1].running()
    });
}

#[test]
fn repl_hex_escapes_reach_the_node_as_raw_bytes() {
    let c = Cluster::start(1);
    let mut cmd = Command::new(db_bin());
    cmd.arg("repl").arg("--connect").arg(c.nodes[0].addr());
    let mut repl = ReplProc::spawn(cmd);
    assert_eq!(repl.ask(r#"SET bin "\xff\x00""#), "OK");
    assert_eq!(repl.ask("GET bin"), r#""\xff\x00""#);
    // A raw client sees exactly the two bytes ff 00 (not c3 bf 00).
    let mut s = std::net::TcpStream::connect(c.nodes[0].addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n").unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while !reply.ends_with(b"\r\n") || reply.len() < 8 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reply, b"$2\r\n\xff\x00\r\n");
}

#[test]
fn repl_kill_of_its_own_node_says_so_and_exits() {
    let mut c = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let mut cmd = Command::new(db_bin());
    cmd.arg("repl")
        .arg("--connect")
        .arg(c.nodes[0].addr())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut repl = ReplProc::spawn(cmd);
    let me = c.nodes[0].id.clone();
    assert_eq!(repl.ask(&format!("KILL {me}")), "OK");
    assert!(repl.wait_exit(Duration::from_secs(10)).success());
    let text = common::read(&err);
    assert!(
        text.contains(&format!(
            "{me} at {} (the node this REPL is connected to) is stopping; the REPL exits",
            c.nodes[0].addr()
        )),
        "{text}"
    );
    wait_until(Duration::from_secs(5), "the node to exit", || {
        !c.nodes[0].running()
    });
    assert!(c.nodes[1].running());
}

#[test]
fn repl_refuses_an_oversized_value_before_sending_it() {
    let c = Cluster::start(1);
    let mut cmd = Command::new(db_bin());
    cmd.arg("repl").arg("--connect").arg(c.nodes[0].addr());
    let mut repl = ReplProc::spawn(cmd);
    let big = "v".repeat(distro_db::config::MAX_VALUE_LEN + 1);
    let answer = repl.ask(&format!("SET k {big}"));
    assert_eq!(
        answer,
        "(error) ERR value too large: 8.0 MiB (8388609 bytes); the limit is 8 MiB (8388608 bytes); nothing was sent"
    );
    // The connection is intact.
    assert_eq!(repl.ask("PING"), "PONG");
    let answer = repl.ask("FROB x");
    assert_eq!(
        answer,
        "(error) ERR unknown command 'FROB', with args beginning with: 'x' (type HELP for the list)"
    );
}
