//! Real Redis clients, unmodified, against real nodes: the Rust `redis`
//! crate (RESP2 and RESP3, pipelines, MULTI/EXEC, cluster mode through a
//! node's kill -9), redis-py (tests/clients/redis_py_check.py, with its
//! defaults) and redis-cli (`--scan`, `--bigkeys`, `--stat`, `HELP`, `-a`).
//! Also, end to end: expiry on every replica, counters incremented on both
//! sides of a partition, SCAN of 10,000 keys across a node failure, AUTH,
//! and ACL users (redis-py and redis-rs with a user name and password).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, bulk, have, live_nodes, python_with_redis, wait_until};
use distro_db::resp::Frame;
use redis::{Commands, RedisResult};

fn url(port: u16, resp3: bool) -> String {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    format!("redis://127.0.0.1:{port}/{proto}")
}

fn connect(port: u16, resp3: bool) -> redis::Connection {
    let client = redis::Client::open(url(port, resp3)).expect("client");
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    con
}

#[test]
fn redis_rs_speaks_resp2_and_resp3() {
    // W=3: an INCR is answered once every replica holds it, so a DECR
    // through another node counts from it. With W=2 the third replica may
    // not have it yet, and the DECR answers its own view (docs/redis.md,
    // Counters): that failed once in five full test runs here.
    let c = Cluster::start_with(3, &["--w", "3"]);
    let (p0, p1) = (c.nodes[0].port, c.nodes[1].port);
    for resp3 in [false, true] {
        let mut con = connect(p0, resp3);
        let mut other = connect(p1, resp3);
        let k = |s: &str| format!("rs{}:{s}", u8::from(resp3));
        let _: () = con.set(k("a"), "1").unwrap();
        assert_eq!(other.get::<_, String>(k("a")).unwrap(), "1");
        let _: () = con.mset(&[(k("m1"), "x"), (k("m2"), "y")]).unwrap();
        let got: Vec<Option<String>> = con.mget(&[k("m1"), k("m2"), k("m3")]).unwrap();
        assert_eq!(got, vec![Some("x".into()), Some("y".into()), None]);
        assert_eq!(con.exists::<_, usize>(&[k("m1"), k("m3")]).unwrap(), 1);
        assert_eq!(
            con.del::<_, usize>(&[k("m1"), k("m2"), k("m3")]).unwrap(),
            2
        );
        assert_eq!(con.incr::<_, _, i64>(k("n"), 5).unwrap(), 5);
        assert_eq!(other.decr::<_, _, i64>(k("n"), 2).unwrap(), 3);
        let _: () = con.set_ex(k("e"), "v", 100).unwrap();
        let ttl: i64 = con.ttl(k("e")).unwrap();
        assert!((99..=100).contains(&ttl), "{ttl}");
        // A plain pipeline and a MULTI/EXEC one.
        let mut pipe = redis::pipe();
        for i in 0..50 {
            pipe.set(k(&format!("p{i}")), i).ignore();
        }
        pipe.get(k("p7"));
        let (seven,): (i64,) = pipe.query(&mut con).unwrap();
        assert_eq!(seven, 7);
        let (set, n, v): (String, i64, String) = redis::pipe()
            .atomic()
            .set(k("t"), "tv")
            .incr(k("n"), 1)
            .get(k("t"))
            .query(&mut con)
            .unwrap();
        assert_eq!((set.as_str(), n, v.as_str()), ("OK", 4, "tv"));
        // SCAN through the library's iterator.
        let found: HashSet<String> = con
            .scan_match::<_, String>(k("p*"))
            .unwrap()
            .collect::<RedisResult<_>>()
            .unwrap();
        assert_eq!(found.len(), 50);
        // Errors are errors, not crashes.
        let bad: RedisResult<String> = redis::cmd("SELECT").arg(1).query(&mut con);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("DB index is out of range")
        );
        // Connection commands answer honestly.
        let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
        assert!(id > 0);
        let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
        assert!(count > 50, "{count}");
    }
}

#[test]
fn a_key_with_siblings_reads_as_one_value_in_typed_clients() {
    let c = Cluster::start(3);
    assert_eq!(c.cmd(0, &["SET", "cart", "base"]), Frame::ok());
    let Frame::Array(items) = c.cmd(0, &["VGET", "cart"]) else {
        panic!("VGET")
    };
    let Frame::Bulk(ctx) = &items[0] else {
        panic!("context")
    };
    let ctx = format!("CTX={}", String::from_utf8_lossy(ctx));
    assert_eq!(c.cmd(0, &["SET", "cart", "apple", &ctx]), Frame::ok());
    assert_eq!(c.cmd(1, &["SET", "cart", "pear", &ctx]), Frame::ok());
    assert_eq!(c.siblings(2, "cart", 3), vec![bulk("apple"), bulk("pear")]);
    for resp3 in [false, true] {
        let mut con = connect(c.nodes[2].port, resp3);
        let v: String = con.get("cart").expect("a string, not an array");
        assert!(v == "apple" || v == "pear", "{v}");
    }
    // Changing the value in place would have to drop one: refused.
    for cmd in [
        &["EXPIRE", "cart", "100"][..],
        &["PERSIST", "cart"],
        &["INCR", "cart"],
    ] {
        let Frame::Error(e) = c.cmd(0, cmd) else {
            panic!("{cmd:?} on a key with siblings")
        };
        assert!(e.contains("2 concurrent values"), "{e}");
    }
    assert_eq!(c.siblings(0, "cart", 3), vec![bulk("apple"), bulk("pear")]);
    // The same read counts as conflicted, and with --sibling-reads error
    // (tested in the unit tests of the API) it would name VGET.
    let Frame::Bulk(info) = c.cmd(2, &["INFO", "stats"]) else {
        panic!("INFO")
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(!info.contains("distro_db_conflicted_reads:0\r"), "{info}");
}

/// redis-rs's async cluster client (its sync `ClusterConnection` refreshes
/// its slot map only on MOVED, so it keeps dialling a dead node: see
/// docs/redis.md).
#[test]
fn connection_commands_answer_like_redis() {
    let c = Cluster::start(1);
    let mut a = c.client(0);
    let mut b = c.client(0);
    let call = |cl: &mut distro_db::client::Client, args: &[&str]| cl.call(args).unwrap();
    // A command refused while queuing aborts the transaction: nothing applied.
    assert_eq!(call(&mut a, &["MULTI"]), Frame::ok());
    assert_eq!(
        call(&mut a, &["SET", "t", "1"]),
        Frame::Simple("QUEUED".into())
    );
    assert!(matches!(
        call(&mut a, &["MSETNX", "u", "1"]),
        Frame::Error(_)
    ));
    let Frame::Error(e) = call(&mut a, &["EXEC"]) else {
        panic!("EXEC after a refused command")
    };
    assert!(e.starts_with("EXECABORT"), "{e}");
    assert_eq!(call(&mut a, &["GET", "t"]), Frame::Null);
    // A good transaction runs in order.
    assert_eq!(call(&mut a, &["MULTI"]), Frame::ok());
    call(&mut a, &["SET", "t", "1"]);
    call(&mut a, &["INCR", "t"]);
    assert_eq!(
        call(&mut a, &["EXEC"]),
        Frame::Array(vec![Frame::ok(), Frame::Integer(2)])
    );
    // CLIENT KILL filters: no pub/sub clients here; by id it closes one.
    assert_eq!(
        call(&mut a, &["CLIENT", "KILL", "TYPE", "pubsub"]),
        Frame::Integer(0)
    );
    assert_eq!(
        call(&mut a, &["CLIENT", "KILL", "USER", "bob"]),
        Frame::Integer(0)
    );
    let Frame::Integer(b_id) = call(&mut b, &["CLIENT", "ID"]) else {
        panic!("CLIENT ID")
    };
    let id = b_id.to_string();
    assert_eq!(
        call(&mut a, &["CLIENT", "KILL", "ID", &id]),
        Frame::Integer(1)
    );
    assert!(
        b.call(&["PING"]).is_err(),
        "the killed connection is closed"
    );
    // SHUTDOWN ABORT cancels nothing and stops nothing.
    assert!(matches!(
        call(&mut a, &["SHUTDOWN", "ABORT"]),
        Frame::Error(_)
    ));
    assert_eq!(call(&mut a, &["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn redis_rs_cluster_client_keeps_serving_through_a_kill_9() {
    let mut c = Cluster::start_with(3, &["--gossip-interval-ms", "100"]);
    let urls: Vec<String> = c.nodes.iter().map(|n| url(n.port, false)).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .build()
        .expect("cluster client");
    let mut con = rt
        .block_on(client.get_async_connection())
        .expect("cluster connection");
    let mut ok_after_kill = 0usize;
    let mut failures: Vec<(Instant, String)> = Vec::new();
    let mut first_ok_after_failure: Option<Instant> = None;
    let mut killed: Option<Instant> = None;
    let start = Instant::now();
    for i in 0..1_000_000u64 {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        if killed.is_none() && i == 300 {
            c.nodes[1].sigkill();
            killed = Some(Instant::now());
        }
        let key = format!("fo{i}");
        let r: RedisResult<Option<u64>> = rt.block_on(async {
            redis::AsyncCommands::set::<_, _, ()>(&mut con, &key, i).await?;
            redis::AsyncCommands::get(&mut con, &key).await
        });
        match r {
            Ok(v) => {
                assert_eq!(v, Some(i), "{key}");
                if let Some(k) = killed {
                    ok_after_kill += 1;
                    if first_ok_after_failure.is_none() && !failures.is_empty() {
                        first_ok_after_failure = Some(Instant::now());
                    }
                    if k.elapsed() > Duration::from_secs(8) && ok_after_kill > 200 {
                        break;
                    }
                }
            }
            Err(e) => {
                failures.push((Instant::now(), e.to_string()));
                assert!(failures.len() < 1000, "the client never recovered: {e}");
            }
        }
    }
    assert!(killed.is_some(), "the node was killed");
    let after: Vec<&(Instant, String)> = failures
        .iter()
        .filter(|(t, _)| first_ok_after_failure.is_some_and(|r| *t > r))
        .collect();
    eprintln!(
        "cluster client: {ok_after_kill} ok after the kill, {} failed ({} after the reconnect)",
        failures.len(),
        after.len()
    );
    assert!(after.is_empty(), "failures after the reconnect: {after:?}");
    assert!(
        failures.len() <= 5,
        "failures around the kill: {failures:?}"
    );
    assert!(
        ok_after_kill > 200,
        "{ok_after_kill} requests after the kill"
    );
}

#[test]
fn redis_py_with_its_defaults() {
    let Some((python, path)) = python_with_redis() else {
        return;
    };
    let c = Cluster::start_with(3, &["--gossip-interval-ms", "100"]);
    let ports: Vec<String> = c.nodes.iter().map(|n| n.port.to_string()).collect();
    run_python(
        &python,
        path,
        "redis_py_check.py",
        &[
            ("DDB_PORTS", ports.join(",")),
            ("DDB_KILL_PID", c.nodes[2].child.id().to_string()),
        ],
        "redis-py: all checks passed",
    );
}

/// Runs `tests/clients/<script>` with `env`, and checks it succeeded and
/// printed `passed`.
fn run_python(
    python: &str,
    path: Option<PathBuf>,
    script: &str,
    env: &[(&str, String)],
    passed: &str,
) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(&script).envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(p) = path {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.output().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "{} failed: {stderr}",
        script.display()
    );
    assert!(stdout.contains(passed));
}

#[test]
fn redis_py_and_redis_rs_with_acl_users() {
    let c = Cluster::start_as(
        1,
        &[
            "--user",
            "reader:rpw:read",
            "--user",
            "writer:wpw:readwrite",
            "--user",
            "root:rootpw:admin",
        ],
        "root",
        "rootpw",
    );
    let port = c.nodes[0].port;
    // redis-rs: a user and password in the URL, RESP2 and RESP3.
    for resp3 in [false, true] {
        let proto = if resp3 { "?protocol=resp3" } else { "" };
        let root =
            redis::Client::open(format!("redis://root:rootpw@127.0.0.1:{port}/{proto}")).unwrap();
        let mut root = root.get_connection().unwrap();
        let _: () = root.set("rs:k", "v").unwrap();
        let reader =
            redis::Client::open(format!("redis://reader:rpw@127.0.0.1:{port}/{proto}")).unwrap();
        let mut reader = reader.get_connection().unwrap();
        assert_eq!(reader.get::<_, String>("rs:k").unwrap(), "v");
        let err = reader.set::<_, _, ()>("rs:k", "x").unwrap_err();
        assert!(
            err.to_string()
                .contains("User reader has no permissions to run the 'set' command"),
            "{err}"
        );
        assert_eq!(root.get::<_, String>("rs:k").unwrap(), "v");
        let wrong =
            redis::Client::open(format!("redis://reader:nope@127.0.0.1:{port}/{proto}")).unwrap();
        assert!(wrong.get_connection().is_err(), "a wrong password connects");
    }
    let Some((python, path)) = python_with_redis() else {
        return;
    };
    run_python(
        &python,
        path,
        "redis_py_acl.py",
        &[
            ("DDB_PORT", port.to_string()),
            ("DDB_NODE_ID", c.nodes[0].id.clone()),
        ],
        "redis-py acl: all checks passed",
    );
    assert_eq!(c.cmd(0, &["GET", "rs:k"]), bulk("v"));
}

#[test]
fn redis_cli_tools_work() {
    if !have("redis-cli", "--version") {
        return;
    }
    let c = Cluster::start(3);
    let port = c.nodes[0].port.to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for i in 0..200 {
        assert_eq!(
            cli(&["SET", &format!("cli:{i}"), &"v".repeat(i + 1)]).trim(),
            "OK"
        );
    }
    let scanned: HashSet<String> = cli(&["--scan", "--pattern", "cli:*"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(scanned.len(), 200);
    let big = cli(&["--bigkeys"]);
    assert!(
        big.contains("Biggest string found '\"cli:199\"' has 200 bytes"),
        "{big}"
    );
    assert!(big.contains("200 strings"), "{big}");
    let help = cli(&["HELP", "SET"]);
    assert!(help.contains("NX|XX") && help.contains("summary"), "{help}");
    assert_eq!(
        cli(&["-3", "HELLO", "3"]).lines().next(),
        Some("server redis")
    );
    // --stat prints a line a second, forever, to a terminal: run it under
    // `script` for about three seconds and read the key count.
    if have("script", "--version") {
        let out = Command::new("timeout")
            .args(["3", "script", "-qc"])
            .arg(format!("redis-cli -h 127.0.0.1 -p {port} --stat"))
            .arg("/dev/null")
            .output()
            .expect("script runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(char::is_numeric))
            .unwrap_or_else(|| panic!("no figures from --stat: {text}"));
        let keys: u64 = row.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(keys, 200, "{row}");
    }
}

#[test]
fn expired_keys_are_gone_on_every_replica_and_stay_gone() {
    let c = Cluster::start_with(3, &["--aae-interval-ms", "200"]);
    assert_eq!(
        c.cmd(0, &["SET", "short", "lived", "PX", "500"]),
        Frame::ok()
    );
    assert_eq!(
        c.cmd(0, &["SET", "long", "lived", "EX", "100"]),
        Frame::ok()
    );
    let Frame::Integer(pttl) = c.cmd(1, &["PTTL", "short"]) else {
        panic!("PTTL")
    };
    assert!((1..=500).contains(&pttl), "{pttl}");
    // Every owner turns its copy into a tombstone once the deadline passed.
    let replicas = || c.cmd(0, &["REPLICAS", "short"]).text().expect("REPLICAS");
    wait_until(
        Duration::from_secs(20),
        "every owner to hold a tombstone",
        || {
            let r = replicas();
            r.lines().filter(|l| l.contains("(owner")).count() == 3
                && r.lines()
                    .filter(|l| l.contains("(owner"))
                    .all(|l| l.contains("=(deleted)"))
        },
    );
    for i in 0..3 {
        assert_eq!(c.cmd(i, &["GET", "short", "R=3"]), Frame::Null);
        assert_eq!(c.cmd(i, &["TTL", "short"]), Frame::Integer(-2));
    }
    // Anti-entropy rounds (every 200 ms) bring nothing back.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(!replicas().contains("\"lived\""), "{}", replicas());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.cmd(2, &["GET", "long"]), bulk("lived"));
    assert_eq!(c.cmd(2, &["EXISTS", "short", "long"]), Frame::Integer(1));
}

#[test]
fn increments_on_both_sides_of_a_partition_all_count() {
    // W=1: each side of the partition can acknowledge on its own.
    let c = Cluster::start_with(
        3,
        &[
            "--fault-injection",
            "--w",
            "1",
            "--gossip-interval-ms",
            "100",
        ],
    );
    let (id0, id1, id2) = (
        c.nodes[0].id.clone(),
        c.nodes[1].id.clone(),
        c.nodes[2].id.clone(),
    );
    assert_eq!(c.cmd(0, &["INCRBY", "hits", "100"]), Frame::Integer(100));
    assert_eq!(c.cmd(2, &["FAULT", "PARTITION", &id0, &id1]), Frame::ok());
    let (a0, a2) = (c.nodes[0].addr(), c.nodes[2].addr());
    wait_until(Duration::from_secs(20), "the partition to be seen", || {
        !live_nodes(&a0).contains(&id2) && live_nodes(&a2) == vec![id2.clone()]
    });
    for _ in 0..5 {
        assert!(matches!(c.cmd(0, &["INCR", "hits"]), Frame::Integer(_)));
    }
    for _ in 0..3 {
        assert!(matches!(
            c.cmd(2, &["INCRBY", "hits", "10"]),
            Frame::Integer(_)
        ));
    }
    assert!(matches!(c.cmd(1, &["DECR", "hits"]), Frame::Integer(_)));
    assert_eq!(c.cmd(2, &["FAULT", "HEAL"]), Frame::ok());
    wait_until(Duration::from_secs(20), "the partition to heal", || {
        live_nodes(&a0).contains(&id2) && live_nodes(&a2).len() == 3
    });
    // 100 + 5 - 1 on one side, + 30 on the other.
    wait_until(Duration::from_secs(30), "every node to read 134", || {
        (0..3).all(|i| c.cmd(i, &["GET", "hits", "R=3"]) == bulk("134"))
    });
    assert_eq!(c.cmd(1, &["INCR", "hits"]), Frame::Integer(135));
}

#[test]
fn scan_returns_every_key_once_across_a_node_failure() {
    let mut c = Cluster::start_with(3, &["--gossip-interval-ms", "100"]);
    let mut con = connect(c.nodes[0].port, false);
    // In pipelines of 500: one of 10,000 runs up to 1,024 replicated
    // writes at once, which a loaded 2-core machine does not always finish
    // within the request timeout (this test is about SCAN, not load).
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in chunk * 500..(chunk + 1) * 500 {
            pipe.set(format!("scan:{i:05}"), i).ignore();
        }
        let () = pipe.query(&mut con).expect("500 SETs");
    }
    let scan_page = |port: u16, cursor: u64| -> (u64, Vec<String>) {
        let mut con = connect(port, false);
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query(&mut con)
            .expect("SCAN")
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0;
    let mut pages = 0;
    // The first half through node 0; then node 1 dies and node 2 carries
    // on from the same cursor.
    loop {
        let port = if pages < 10 {
            c.nodes[0].port
        } else {
            c.nodes[2].port
        };
        if pages == 10 {
            c.nodes[1].sigkill();
        }
        let (next, keys) = scan_page(port, cursor);
        seen.extend(keys);
        pages += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(pages < 5_000, "SCAN does not end");
    }
    assert!(
        pages > 10,
        "the scan ended before the failure: {pages} pages"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a key was returned twice");
    assert_eq!(seen.len(), 10_000);
    let Frame::Integer(n) = c.cmd(0, &["DBSIZE"]) else {
        panic!("DBSIZE")
    };
    assert_eq!(n, 10_000);
}

#[test]
fn a_password_guards_every_command() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    // Its own cluster id and itself as its seed: with the default seeds it
    // would gossip towards the README's ports (and any local cluster there).
    let cluster_id = format!("auth-{port}");
    let own = format!("127.0.0.1:{port}");
    let child = common::checked(
        Command::new(common::db_bin())
            .args(["node", "--listen", &own, "--seed", &own])
            .args(["--cluster-id", &cluster_id]),
    )
    .env("DISTRO_DB_PASSWORD", "s3cret pass")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .expect("db starts");
    // Killed when the test ends, even if it fails.
    let _node = common::NodeProc {
        port,
        id: format!("node-{port}"),
        child,
        log: dir.path().join("node.log"),
    };
    let addr = format!("127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "the node to listen", || {
        distro_db::client::Client::connect(&addr).is_ok()
    });
    let mut raw = distro_db::client::Client::connect(&addr).unwrap();
    let call = |c: &mut distro_db::client::Client, args: &[&str]| c.call(args).unwrap();
    let noauth = Frame::Error("NOAUTH Authentication required.".into());
    assert_eq!(call(&mut raw, &["GET", "k"]), noauth);
    assert_eq!(call(&mut raw, &["SHUTDOWN"]), noauth);
    assert_eq!(call(&mut raw, &["KILL", "x"]), noauth);
    let Frame::Error(e) = call(&mut raw, &["AUTH", "wrong"]) else {
        panic!("a wrong password")
    };
    assert!(e.starts_with("WRONGPASS"), "{e}");
    let Frame::Error(e) = call(&mut raw, &["HELLO", "3"]) else {
        panic!("HELLO without AUTH")
    };
    assert!(e.starts_with("NOAUTH"), "{e}");
    assert_eq!(
        call(&mut raw, &["AUTH", "default", "s3cret pass"]),
        Frame::ok()
    );
    // A node alone forms its cluster once its seeds had time to answer.
    wait_until(
        Duration::from_secs(20),
        "the node to form its cluster",
        || call(&mut raw, &["SET", "k", "v"]) == Frame::ok(),
    );
    // HELLO ... AUTH authenticates and switches protocol at once.
    let mut c3 = distro_db::client::Client::connect(&addr).unwrap();
    assert!(matches!(
        call(&mut c3, &["HELLO", "3", "AUTH", "default", "s3cret pass"]),
        Frame::Map(_)
    ));
    // Libraries: a password in the URL.
    let client = redis::Client::open(format!("redis://:s3cret%20pass@127.0.0.1:{port}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    assert_eq!(con.get::<_, String>("k").unwrap(), "v");
    // RESET forgets the authentication.
    assert_eq!(call(&mut raw, &["RESET"]), Frame::Simple("RESET".into()));
    assert_eq!(call(&mut raw, &["GET", "k"]), noauth);
    if have("redis-cli", "--version") {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "-a",
                "s3cret pass",
                "--no-auth-warning",
                "GET",
                "k",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
    }
}

/// Runs redis-cli with `args`, bounded by `timeout` (coreutils), and answers
/// its standard output.
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster view has one master with every slot and the other members
/// as its replicas, the same in SLOTS, SHARDS and NODES on every node; so
/// `redis-cli --cluster check`/`info` report the true key count and the
/// replicas, redis-py's cluster-wide SCAN (every primary) sees each key
/// once, and a plain client pinned to any node still scans every key.
#[test]
fn cluster_tools_see_one_master_its_replicas_and_each_key_once() {
    if !have("redis-cli", "--version") {
        return;
    }
    let c = Cluster::start(3);
    const KEYS: usize = 300;
    let mut con = c.client(1);
    for i in 0..KEYS {
        let k = format!("cs:{i}");
        assert_eq!(con.call(&["SET", &k, "v"]).unwrap(), Frame::ok());
    }
    // W=2: the third copy of the last writes may still be on its way.
    wait_until(Duration::from_secs(30), "DBSIZE to count every key", || {
        (0..3).all(|i| c.cmd(i, &["DBSIZE"]) == Frame::Integer(KEYS as i64))
    });
    // Every node names the same master, the first member in id order, in
    // every view.
    let mut ids: Vec<&str> = c.nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    let master_port = c
        .nodes
        .iter()
        .find(|n| n.id == ids[0])
        .map(|n| n.port)
        .unwrap();
    for i in 0..3 {
        let nodes = c.cmd(i, &["CLUSTER", "NODES"]).text().expect("NODES");
        let masters: Vec<&str> = nodes.lines().filter(|l| l.contains("master")).collect();
        assert_eq!(masters.len(), 1, "{nodes}");
        assert!(masters[0].contains(&format!(":{master_port}@")), "{nodes}");
        assert!(masters[0].ends_with(" 0-16383"), "{nodes}");
        let master_id = masters[0].split(' ').next().unwrap();
        let replicas = nodes
            .lines()
            .filter(|l| l.contains(&format!("slave {master_id} ")))
            .count();
        assert_eq!(replicas, 2, "{nodes}");
        let Frame::Array(slots) = c.cmd(i, &["CLUSTER", "SLOTS"]) else {
            panic!("SLOTS")
        };
        for range in &slots {
            let Frame::Array(entry) = range else {
                panic!("a range")
            };
            assert_eq!(entry.len(), 2 + 3, "a master and two replicas: {entry:?}");
            let Frame::Array(first) = &entry[2] else {
                panic!("a node")
            };
            assert_eq!(first[1], Frame::Integer(i64::from(master_port)));
            assert_eq!(first[2], bulk(master_id));
        }
        let shards = format!("{:?}", c.cmd(i, &["CLUSTER", "SHARDS"]));
        assert_eq!(shards.matches("\"master\"").count(), 1, "{shards}");
        assert_eq!(shards.matches("\"replica\"").count(), 2, "{shards}");
    }
    // redis-cli --cluster check and info, through a replica and the master.
    let replica = c.nodes.iter().find(|n| n.port != master_port).unwrap();
    let check = redis_cli(&["--cluster", "check", &replica.addr()]);
    for want in [
        format!("[OK] {KEYS} keys in 1 masters."),
        format!("{KEYS} keys | 16384 slots | 2 slaves."),
        "2 additional replica(s)".to_string(),
        "[OK] All nodes agree about slots configuration.".to_string(),
        "[OK] All 16384 slots covered.".to_string(),
    ] {
        assert!(check.contains(&want), "no '{want}' in:\n{check}");
    }
    assert_eq!(check.matches("replicates ").count(), 2, "{check}");
    let info = redis_cli(&["--cluster", "info", &format!("127.0.0.1:{master_port}")]);
    assert!(
        info.contains(&format!("{KEYS} keys | 16384 slots | 2 slaves.")),
        "{info}"
    );
    assert!(
        info.contains(&format!("[OK] {KEYS} keys in 1 masters.")),
        "{info}"
    );
    // redis-py: RedisCluster's scan_iter, keys and dbsize over every
    // primary, and a plain client on each node.
    let Some((python, path)) = python_with_redis() else {
        return;
    };
    let ports: Vec<String> = c.nodes.iter().map(|n| n.port.to_string()).collect();
    run_python(
        &python,
        path,
        "redis_py_cluster_scan.py",
        &[
            ("DDB_PORTS", ports.join(",")),
            ("DDB_KEYS", KEYS.to_string()),
        ],
        "redis-py cluster scan: all checks passed",
    );
}

/// distro-db's reports come as lines redis-cli prints one per line: an
/// array of status lines in RESP2, a verbatim string in RESP3 (not one
/// escaped string); refused commands say why in the error.
#[test]
fn redis_cli_shows_reports_as_lines_and_refusals_with_their_reason() {
    if !have("redis-cli", "--version") || !have("script", "--version") {
        return;
    }
    let c = Cluster::start(3);
    assert_eq!(c.cmd(0, &["SET", "rk", "v"]), Frame::ok());
    let port = c.nodes[0].port.to_string();
    // Under `script`, redis-cli's output is a terminal: the interactive
    // formatting (quotes and escapes for bulk strings).
    let tty = |args: &str| {
        let out = Command::new("timeout")
            .args(["60", "script", "-qc"])
            .arg(format!("redis-cli -h 127.0.0.1 -p {port} {args}"))
            .arg("/dev/null")
            .output()
            .expect("script runs");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    for resp in ["", "-3"] {
        let nodes = tty(&format!("{resp} NODES"));
        for n in &c.nodes {
            assert!(
                nodes
                    .lines()
                    .any(|l| l.contains(&n.id) && l.contains("live")),
                "{resp}: {} not on a line of its own:\n{nodes}",
                n.id
            );
        }
        assert!(!nodes.contains("\\n"), "{resp}: an escaped line:\n{nodes}");
        let status = tty(&format!("{resp} STATUS"));
        assert!(status.lines().count() > 5, "{resp}:\n{status}");
        assert!(!status.contains("\\n"), "{resp}:\n{status}");
        let replicas = tty(&format!("{resp} REPLICAS rk"));
        assert_eq!(
            replicas.lines().filter(|l| l.contains("(owner")).count(),
            3,
            "{resp}:\n{replicas}"
        );
        assert!(!replicas.contains("\\n"), "{resp}:\n{replicas}");
    }
    let refused = redis_cli(&["-p", &port, "HSET", "h", "f", "v"]);
    assert!(
        refused.contains("HSET is not supported: distro-db stores strings only"),
        "{refused}"
    );
    let refused = redis_cli(&["-p", &port, "CLUSTER", "FAILOVER"]);
    assert!(refused.contains("no failover to run"), "{refused}");
}
