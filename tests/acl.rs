//! Multi-process: client users and their rights (`--user NAME:PASSWORD:RIGHTS`,
//! `--users-file`, `DISTRO_DB_USERS`). Without `--password` a node with
//! users lets nothing but `AUTH`, `HELLO ... AUTH` and `QUIT` through before
//! authentication; a read-only user reads but cannot write; a read-write user
//! cannot stop, reconfigure, partition or shrink the cluster; an admin can.
//! Every refusal is Redis's `NOPERM` and does nothing, inside `MULTI` and in
//! a pipeline too. `ACL WHOAMI`, `LIST`, `USERS`, `CAT` and `DRYRUN` answer
//! as Redis does. The command-line tools authenticate as a user.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, ReplProc, bulk, db_bin, wait_until};
use distro_db::client::Client;
use distro_db::resp::{self, DecodeError, Frame};
use sha2::{Digest, Sha256};

const ROOT: (&str, &str) = ("root", "root pass");

/// The users every test cluster has: a reader and a writer given as flags,
/// an admin (whose password holds a space) in a users file.
fn users(dir: &std::path::Path) -> Vec<String> {
    let file = dir.join("users");
    std::fs::write(&file, format!("# the admin\n{}:{}:admin\n", ROOT.0, ROOT.1)).unwrap();
    vec![
        "--user".into(),
        "reader:rpw:read".into(),
        "--user".into(),
        "writer:w:p:w:readwrite".into(),
        "--users-file".into(),
        file.display().to_string(),
    ]
}

/// A cluster of `n` nodes with the users above (and fault injection, for
/// the admin's FAULT).
fn cluster(n: usize) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = users(dir.path());
    flags.push("--fault-injection".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (Cluster::start_as(n, &flags, ROOT.0, ROOT.1), dir)
}

/// A connection to `addr` authenticated as `user`.
fn login(addr: &str, user: &str, password: &str) -> Client {
    let mut c = Client::connect(addr).unwrap();
    assert_eq!(c.call(&["AUTH", user, password]).unwrap(), Frame::ok());
    c
}

fn call(c: &mut Client, args: &[&str]) -> Frame {
    c.call(args).unwrap()
}

fn noperm(user: &str, cmd: &str) -> Frame {
    Frame::Error(format!(
        "NOPERM User {user} has no permissions to run the '{cmd}' command"
    ))
}

fn noauth() -> Frame {
    Frame::Error("NOAUTH Authentication required.".into())
}

fn wrongpass() -> Frame {
    Frame::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

fn text(f: &Frame) -> String {
    f.text().unwrap_or_else(|| panic!("not text: {f:?}"))
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn nothing_runs_before_auth_and_wrong_pairs_are_refused() {
    let (c, _dir) = cluster(1);
    let addr = c.nodes[0].addr();
    let mut raw = Client::connect(&addr).unwrap();
    for cmd in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["PING"],
        &["KILL", &c.nodes[0].id],
        &["SHUTDOWN"],
        &["ACL", "WHOAMI"],
        &["MULTI"],
    ] {
        assert_eq!(call(&mut raw, cmd), noauth(), "{cmd:?}");
    }
    // With users and no --password the default user is disabled: a
    // password alone, or as `default`, is a wrong pair.
    assert_eq!(call(&mut raw, &["AUTH", "rpw"]), wrongpass());
    assert_eq!(call(&mut raw, &["AUTH", "default", "rpw"]), wrongpass());
    assert_eq!(call(&mut raw, &["AUTH", "", "rpw"]), wrongpass());
    assert_eq!(call(&mut raw, &["AUTH", "reader", "wrong"]), wrongpass());
    assert_eq!(call(&mut raw, &["AUTH", "nobody", "rpw"]), wrongpass());
    assert_eq!(call(&mut raw, &["AUTH", "READER", "rpw"]), wrongpass());
    assert_eq!(call(&mut raw, &["GET", "k"]), noauth());
    let Frame::Error(e) = call(&mut raw, &["HELLO", "3"]) else {
        panic!("HELLO without AUTH")
    };
    assert!(e.starts_with("NOAUTH HELLO must be called"), "{e}");
    assert_eq!(
        call(&mut raw, &["HELLO", "3", "AUTH", "reader", "nope"]),
        wrongpass()
    );

    // AUTH user pass.
    assert_eq!(call(&mut raw, &["AUTH", "reader", "rpw"]), Frame::ok());
    assert_eq!(call(&mut raw, &["ACL", "WHOAMI"]), bulk("reader"));
    assert_eq!(call(&mut raw, &["GET", "k"]), Frame::Null);
    // A wrong pair later leaves the connection as it was.
    assert_eq!(call(&mut raw, &["AUTH", "writer", "nope"]), wrongpass());
    assert_eq!(call(&mut raw, &["ACL", "WHOAMI"]), bulk("reader"));
    // A password may hold colons: the writer's is `w:p:w`.
    assert_eq!(call(&mut raw, &["AUTH", "writer", "w:p:w"]), Frame::ok());
    assert_eq!(call(&mut raw, &["ACL", "WHOAMI"]), bulk("writer"));

    // HELLO 3 AUTH user pass authenticates and switches protocol at once.
    let mut c3 = Client::connect(&addr).unwrap();
    let Frame::Map(hello) = call(&mut c3, &["HELLO", "3", "AUTH", "writer", "w:p:w"]) else {
        panic!("HELLO answers a map")
    };
    assert!(
        hello.contains(&(bulk("proto"), Frame::Integer(3))),
        "{hello:?}"
    );
    assert_eq!(call(&mut c3, &["ACL", "WHOAMI"]), bulk("writer"));
    assert_eq!(call(&mut c3, &["SET", "k", "v"]), Frame::ok());
    // CLIENT LIST (admin) shows who is who.
    let mut root = login(&addr, ROOT.0, ROOT.1);
    let list = text(&call(&mut root, &["CLIENT", "LIST"]));
    assert!(list.contains(" user=writer "), "{list}");
    assert!(list.contains(" user=root "), "{list}");
    // CLIENT KILL USER closes that user's connections.
    assert_eq!(
        call(&mut root, &["CLIENT", "KILL", "USER", "nobody"]),
        Frame::Integer(0)
    );
    assert_eq!(
        call(&mut root, &["CLIENT", "KILL", "USER", "writer"]),
        Frame::Integer(2)
    );

    // RESET forgets the user.
    assert_eq!(call(&mut root, &["RESET"]), Frame::Simple("RESET".into()));
    assert_eq!(call(&mut root, &["GET", "k"]), noauth());
}

#[test]
fn a_read_only_user_reads_and_cannot_write() {
    let (c, _dir) = cluster(1);
    let addr = c.nodes[0].addr();
    let mut root = login(&addr, ROOT.0, ROOT.1);
    assert_eq!(call(&mut root, &["SET", "k", "v"]), Frame::ok());
    assert_eq!(call(&mut root, &["SET", "n", "1"]), Frame::ok());

    let mut reader = login(&addr, "reader", "rpw");
    assert_eq!(call(&mut reader, &["GET", "k"]), bulk("v"));
    assert_eq!(
        call(&mut reader, &["MGET", "k", "n"]),
        Frame::Array(vec![bulk("v"), bulk("1")])
    );
    assert_eq!(call(&mut reader, &["EXISTS", "k"]), Frame::Integer(1));
    assert!(matches!(call(&mut reader, &["VGET", "k"]), Frame::Array(_)));
    assert!(call(&mut reader, &["NODES"]).text().is_some());
    assert!(matches!(
        call(&mut reader, &["INFO"]),
        Frame::Bulk(_) | Frame::Verbatim(..)
    ));
    for (cmd, name) in [
        (&["SET", "k", "x"][..], "set"),
        (&["SET", "k", "x", "GET"], "set"),
        (&["GETSET", "k", "x"], "getset"),
        (&["GETDEL", "k"], "getdel"),
        (&["MSET", "k", "x"], "mset"),
        (&["DEL", "k"], "del"),
        (&["UNLINK", "k"], "unlink"),
        (&["VDEL", "k"], "vdel"),
        (&["INCR", "n"], "incr"),
        (&["DECRBY", "n", "5"], "decrby"),
        (&["EXPIRE", "k", "1"], "expire"),
        (&["PERSIST", "k"], "persist"),
        (&["GETEX", "k", "EX", "1"], "getex"),
        (&["KILL", &c.nodes[0].id], "kill"),
        (&["SHUTDOWN"], "shutdown"),
        (&["CONFIG", "GET", "*"], "config|get"),
        (&["ACL", "LIST"], "acl|list"),
    ] {
        assert_eq!(call(&mut reader, cmd), noperm("reader", name), "{cmd:?}");
    }
    // Nothing changed.
    assert_eq!(call(&mut root, &["GET", "k"]), bulk("v"));
    assert_eq!(call(&mut root, &["GET", "n"]), bulk("1"));
    assert_eq!(call(&mut root, &["TTL", "k"]), Frame::Integer(-1));
    assert!(c.nodes.iter().all(|n| Client::connect(&n.addr()).is_ok()));
}

#[test]
fn a_readwrite_user_cannot_stop_or_change_the_cluster_and_an_admin_can() {
    let (mut c, _dir) = cluster(2);
    let addr = c.nodes[0].addr();
    let (me, other) = (c.nodes[0].id.clone(), c.nodes[1].id.clone());
    let mut writer = login(&addr, "writer", "w:p:w");
    assert_eq!(call(&mut writer, &["SET", "k", "v"]), Frame::ok());
    assert_eq!(call(&mut writer, &["INCR", "n"]), Frame::Integer(1));
    assert_eq!(call(&mut writer, &["GET", "k"]), bulk("v"));
    for (cmd, name) in [
        (&["KILL", other.as_str()][..], "kill"),
        (&["KILL", me.as_str()], "kill"),
        (&["SHUTDOWN"], "shutdown"),
        (&["SHUTDOWN", "NOSAVE"], "shutdown"),
        (&["SHUTDOWN", "CLUSTER"], "shutdown"),
        (&["CONFIG", "SET", "maxmemory", "1"], "config|set"),
        (&["CONFIG", "GET", "maxmemory"], "config|get"),
        (&["CONFIG", "RESETSTAT"], "config|resetstat"),
        (&["FAULT", "PARTITION", other.as_str()], "fault|partition"),
        (&["FAULT", "LOSS", other.as_str(), "100"], "fault|loss"),
        (&["FAULT", "DELAY", other.as_str(), "1000"], "fault|delay"),
        (&["FAULT", "HEAL"], "fault|heal"),
        (&["FAULT", "SHOW"], "fault|show"),
        (&["LEAVE"], "leave"),
        (&["REMOVE", other.as_str()], "remove"),
        (&["REMOVE", other.as_str(), "FORCE"], "remove"),
        (&["CLIENT", "KILL", "ID", "1"], "client|kill"),
        (&["CLIENT", "KILL", "USER", "root"], "client|kill"),
        (&["CLIENT", "LIST"], "client|list"),
        (&["ACL", "LIST"], "acl|list"),
        (&["ACL", "USERS"], "acl|users"),
        (&["ACL", "DRYRUN", "reader", "GET", "k"], "acl|dryrun"),
    ] {
        assert_eq!(call(&mut writer, cmd), noperm("writer", name), "{cmd:?}");
    }
    // Connection commands are open to every user.
    assert_eq!(call(&mut writer, &["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(call(&mut writer, &["CLIENT", "SETNAME", "w"]), Frame::ok());
    assert!(matches!(
        call(&mut writer, &["CLIENT", "ID"]),
        Frame::Integer(_)
    ));
    assert!(matches!(
        call(&mut writer, &["COMMAND", "COUNT"]),
        Frame::Integer(_)
    ));

    // Both nodes still run, both still members, no fault rule, nobody left.
    for n in &mut c.nodes {
        assert!(n.running(), "{} stopped", n.id);
    }
    let mut root = login(&addr, ROOT.0, ROOT.1);
    let nodes = text(&call(&mut root, &["NODES"]));
    assert_eq!(nodes.matches(" live").count(), 2, "{nodes}");
    let ring = text(&call(&mut root, &["RING"]));
    assert!(ring.lines().next().unwrap().contains("settled"), "{ring}");
    assert!(!ring.contains("leaving"), "{ring}");
    let other_addr = c.nodes[1].addr();
    let faults = text(&call(&mut root, &["FAULT", "SHOW"]));
    assert!(
        !faults.contains(&other_addr),
        "a fault rule was set: {faults}"
    );
    let mut raw = Client::connect(&addr).unwrap();
    assert_eq!(call(&mut raw, &["CLIENT", "ID"]), noauth());
    drop(raw);

    // The admin can.
    assert!(matches!(
        call(&mut root, &["CONFIG", "GET", "maxmemory"]),
        Frame::Array(_) | Frame::Map(_)
    ));
    assert!(matches!(
        call(&mut root, &["CLIENT", "LIST"]),
        Frame::Verbatim(..) | Frame::Bulk(_)
    ));
    assert_eq!(
        call(&mut root, &["FAULT", "DELAY", other.as_str(), "1"]),
        Frame::ok()
    );
    assert_eq!(call(&mut root, &["FAULT", "HEAL"]), Frame::ok());
    assert_eq!(call(&mut root, &["KILL", other.as_str()]), Frame::ok());
    wait_until(Duration::from_secs(20), "the killed node to exit", || {
        !c.nodes[1].running()
    });
    assert_eq!(call(&mut root, &["SHUTDOWN"]), Frame::ok());
    wait_until(Duration::from_secs(20), "the node to stop", || {
        !c.nodes[0].running()
    });
}

#[test]
fn acl_commands_answer_as_redis() {
    let (c, _dir) = cluster(1);
    let addr = c.nodes[0].addr();
    let mut root = login(&addr, ROOT.0, ROOT.1);
    assert_eq!(call(&mut root, &["ACL", "WHOAMI"]), bulk("root"));
    assert_eq!(
        call(&mut root, &["ACL", "USERS"]),
        Frame::Array(vec![
            bulk("default"),
            bulk("reader"),
            bulk("root"),
            bulk("writer")
        ])
    );
    let Frame::Array(lines) = call(&mut root, &["ACL", "LIST"]) else {
        panic!("ACL LIST answers an array")
    };
    let lines: Vec<String> = lines.iter().map(text).collect();
    assert_eq!(
        lines,
        [
            "user default off ~* &* -@all".to_string(),
            format!(
                "user reader on #{} ~* &* -@all +@read +@connection +@transaction",
                sha256_hex("rpw")
            ),
            format!("user root on #{} ~* &* +@all", sha256_hex(ROOT.1)),
            format!(
                "user writer on #{} ~* &* -@all +@read +@write +@connection +@transaction",
                sha256_hex("w:p:w")
            ),
        ]
    );
    // No password appears anywhere an admin can look.
    for probe in [
        &["ACL", "LIST"][..],
        &["CONFIG", "GET", "*"],
        &["INFO"],
        &["STATUS"],
        &["CLIENT", "LIST"],
    ] {
        let shown = format!("{:?}", call(&mut root, probe));
        for pw in ["rpw", "w:p:w", ROOT.1] {
            assert!(!shown.contains(pw), "{probe:?} shows a password");
        }
    }
    let Frame::Array(cats) = call(&mut root, &["ACL", "CAT"]) else {
        panic!("ACL CAT answers an array")
    };
    assert!(cats.contains(&bulk("read")) && cats.contains(&bulk("admin")));
    let Frame::Array(admin) = call(&mut root, &["ACL", "CAT", "admin"]) else {
        panic!("ACL CAT admin answers an array")
    };
    assert!(admin.contains(&bulk("config|set")) && admin.contains(&bulk("kill")));
    assert_eq!(
        call(&mut root, &["ACL", "DRYRUN", "reader", "GET", "k"]),
        Frame::ok()
    );
    assert_eq!(
        call(&mut root, &["ACL", "DRYRUN", "reader", "SET", "k", "v"]),
        bulk("User reader has no permissions to run the 'set' command")
    );
    assert_eq!(
        call(
            &mut root,
            &["ACL", "DRYRUN", "writer", "CONFIG", "SET", "a", "b"]
        ),
        bulk("User writer has no permissions to run the 'config|set' command")
    );
    assert_eq!(
        call(&mut root, &["ACL", "DRYRUN", "nobody", "GET", "k"]),
        Frame::err("User 'nobody' not found")
    );
    let Frame::Error(e) = call(&mut root, &["ACL", "SETUSER", "eve", "on", ">x", "+@all"]) else {
        panic!("SETUSER is refused")
    };
    assert!(e.starts_with("ERR ACL SETUSER is not supported"), "{e}");
    // Every user may ask who it is, and list the categories.
    let mut reader = login(&addr, "reader", "rpw");
    assert_eq!(call(&mut reader, &["ACL", "WHOAMI"]), bulk("reader"));
    assert!(matches!(
        call(&mut reader, &["ACL", "CAT"]),
        Frame::Array(_)
    ));
}

#[test]
fn a_forbidden_command_aborts_its_transaction() {
    let (c, _dir) = cluster(1);
    let addr = c.nodes[0].addr();
    let mut writer = login(&addr, "writer", "w:p:w");
    assert_eq!(call(&mut writer, &["MULTI"]), Frame::ok());
    assert_eq!(
        call(&mut writer, &["SET", "a", "1"]),
        Frame::Simple("QUEUED".into())
    );
    assert_eq!(
        call(&mut writer, &["CONFIG", "SET", "maxmemory", "1"]),
        noperm("writer", "config|set")
    );
    assert_eq!(
        call(&mut writer, &["KILL", &c.nodes[0].id]),
        noperm("writer", "kill")
    );
    assert_eq!(
        call(&mut writer, &["EXEC"]),
        Frame::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(call(&mut writer, &["GET", "a"]), Frame::Null);

    // A reader's transaction with a write: nothing of it runs.
    let mut root = login(&addr, ROOT.0, ROOT.1);
    assert_eq!(call(&mut root, &["SET", "k", "v"]), Frame::ok());
    let mut reader = login(&addr, "reader", "rpw");
    assert_eq!(call(&mut reader, &["MULTI"]), Frame::ok());
    assert_eq!(
        call(&mut reader, &["GET", "k"]),
        Frame::Simple("QUEUED".into())
    );
    assert_eq!(call(&mut reader, &["DEL", "k"]), noperm("reader", "del"));
    assert_eq!(
        call(&mut reader, &["EXEC"]),
        Frame::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(call(&mut root, &["GET", "k"]), bulk("v"));
    // An allowed transaction runs.
    assert_eq!(call(&mut writer, &["MULTI"]), Frame::ok());
    call(&mut writer, &["SET", "a", "2"]);
    call(&mut writer, &["GET", "a"]);
    assert_eq!(
        call(&mut writer, &["EXEC"]),
        Frame::Array(vec![Frame::ok(), bulk("2")])
    );
    assert!(c.nodes.iter().all(|n| Client::connect(&n.addr()).is_ok()));
}

/// Sends every command in one write and reads their replies, in order.
fn pipeline(addr: &str, cmds: &[&[&str]]) -> Vec<Frame> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    for cmd in cmds {
        out.extend_from_slice(&Frame::command(cmd.iter().map(|w| w.as_bytes())).to_bytes());
    }
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 4096];
    while replies.len() < cmds.len() {
        match resp::decode(&buf) {
            Ok((frame, used)) => {
                buf.drain(..used);
                replies.push(frame);
                continue;
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => panic!("{e:?}"),
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {} replies", replies.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    replies
}

#[test]
fn a_pipeline_runs_what_is_allowed_and_refuses_the_rest() {
    let (c, _dir) = cluster(1);
    let addr = c.nodes[0].addr();
    let id = c.nodes[0].id.clone();
    let mut root = login(&addr, ROOT.0, ROOT.1);
    assert_eq!(call(&mut root, &["SET", "k", "v"]), Frame::ok());
    let replies = pipeline(
        &addr,
        &[
            &["GET", "k"],
            &["AUTH", "reader", "rpw"],
            &["GET", "k"],
            &["SET", "k", "x"],
            &["GET", "k"],
            &["DEL", "k"],
            &["PING"],
            &["SHUTDOWN", "CLUSTER"],
            &["KILL", &id],
            &["AUTH", "writer", "w:p:w"],
            &["SET", "j", "1"],
            &["KILL", &id],
            &["GET", "k"],
        ],
    );
    assert_eq!(
        replies,
        [
            noauth(),
            Frame::ok(),
            bulk("v"),
            noperm("reader", "set"),
            bulk("v"),
            noperm("reader", "del"),
            Frame::Simple("PONG".into()),
            noperm("reader", "shutdown"),
            noperm("reader", "kill"),
            Frame::ok(),
            Frame::ok(),
            noperm("writer", "kill"),
            bulk("v"),
        ]
    );
    assert_eq!(call(&mut root, &["GET", "k"]), bulk("v"));
    assert_eq!(call(&mut root, &["GET", "j"]), bulk("1"));
}

/// Starts a node by hand with `args` and `envs`, expecting it to stop at
/// once: whether it exited with success, and its standard error.
fn start_fails(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &addr, "--seed", &addr])
            .args(["--cluster-id", &format!("acl-{port}")])
            .args(args),
    )
    .env_remove("DISTRO_DB_PASSWORD")
    .env_remove("DISTRO_DB_USERS")
    .env_remove("DISTRO_DB_USER")
    .envs(envs.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = out.id();
    let out = {
        let mut child = out;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break child.wait_with_output().unwrap();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {pid} with {args:?} did not refuse to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_users_are_refused_at_start_without_showing_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    std::fs::write(&file, "alice:hunter2:read\nbob:hunter3:superuser\n").unwrap();
    let file = file.display().to_string();
    for (args, envs, why) in [
        (
            &["--user", "alice:hunter2"][..],
            &[][..],
            "NAME:PASSWORD:RIGHTS",
        ),
        (&["--user", "alice::read"], &[], "the password is empty"),
        (
            &["--user", "alice:hunter2:root"],
            &[],
            "must be read, readwrite or admin",
        ),
        (
            &["--user", "alice:read:hunter2"],
            &[],
            "must be read, readwrite or admin",
        ),
        (
            &[
                "--user",
                "alice:hunter2:read",
                "--user",
                "alice:hunter3:admin",
            ],
            &[],
            "user 'alice' is given twice",
        ),
        (
            &["--user", "default:hunter2:read", "--password", "hunter3"],
            &[],
            "user 'default' is given twice",
        ),
        (&["--users-file", &file], &[], "line 2: user 'bob'"),
        (
            &["--user", "alice:hunter2:read"],
            &[("DISTRO_DB_USERS", "alice:hunter3:admin")],
            "user 'alice' is given twice",
        ),
        (
            &[],
            &[("DISTRO_DB_USERS", "bob:hunter2")],
            "DISTRO_DB_USERS",
        ),
        // A client's credentials in the environment are not a node's.
        (
            &["--user", "alice:hunter2:read"],
            &[
                ("DISTRO_DB_USER", "alice"),
                ("DISTRO_DB_PASSWORD", "hunter2"),
            ],
            "DISTRO_DB_PASSWORD is set together with DISTRO_DB_USER",
        ),
    ] {
        let (ok, stderr) = start_fails(args, envs);
        assert!(!ok, "{args:?} started");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("hunter"),
            "{args:?} printed a password: {stderr}"
        );
    }
}

#[test]
fn users_from_the_environment_and_the_password_together() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let addr = format!("127.0.0.1:{port}");
    let child = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &addr, "--seed", &addr])
            .args(["--cluster-id", &format!("acl-{port}")])
            .args(["--user", "alice:apw:read"]),
    )
    .env("DISTRO_DB_USERS", "bob:bpw:readwrite\ncarol:cpw:admin")
    .env("DISTRO_DB_PASSWORD", "dpw")
    .env_remove("DISTRO_DB_USER")
    .env("RUST_LOG", "debug,chitchat=warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let node = common::NodeProc {
        port,
        id: format!("node-{port}"),
        child,
        log,
    };
    let addr = node.addr();
    wait_until(Duration::from_secs(20), "the node to listen", || {
        Client::connect(&addr).is_ok()
    });
    // --password is the default user's, with every right (as requirepass).
    let mut d = Client::connect(&addr).unwrap();
    assert_eq!(call(&mut d, &["GET", "k"]), noauth());
    assert_eq!(call(&mut d, &["AUTH", "dpw"]), Frame::ok());
    assert_eq!(call(&mut d, &["ACL", "WHOAMI"]), bulk("default"));
    assert!(matches!(call(&mut d, &["ACL", "LIST"]), Frame::Array(l) if l.len() == 4));
    for (user, pw, whoami) in [
        ("alice", "apw", "alice"),
        ("bob", "bpw", "bob"),
        ("carol", "cpw", "carol"),
    ] {
        let mut u = login(&addr, user, pw);
        assert_eq!(call(&mut u, &["ACL", "WHOAMI"]), bulk(whoami));
    }
    wait_until(
        Duration::from_secs(20),
        "the node to form its cluster",
        || call(&mut d, &["SET", "k", "v"]) == Frame::ok(),
    );
    let mut bob = login(&addr, "bob", "bpw");
    assert_eq!(call(&mut bob, &["SET", "k", "w"]), Frame::ok());
    assert_eq!(call(&mut bob, &["KILL", &node.id]), noperm("bob", "kill"));
    // Nothing the node logged (at debug level) holds a password.
    let logged = node.log_text();
    for pw in ["apw", "bpw", "cpw", "dpw"] {
        assert!(!logged.contains(pw), "the log shows a password");
    }
}

#[test]
fn the_tools_authenticate_as_a_user() {
    let (c, _dir) = cluster(1);
    let addr = c.nodes[0].addr();
    let mut root = login(&addr, ROOT.0, ROOT.1);
    assert_eq!(call(&mut root, &["SET", "k", "v"]), Frame::ok());

    // `db repl --user reader`, the password from the environment.
    let mut cmd = Command::new(db_bin());
    cmd.args(["repl", "--connect", &addr, "--user", "reader"])
        .env("DISTRO_DB_PASSWORD", "rpw")
        .env_remove("DISTRO_DB_USER")
        .stderr(Stdio::null());
    let mut repl = ReplProc::spawn(cmd);
    assert_eq!(repl.ask("GET k"), "\"v\"");
    assert_eq!(
        repl.ask("SET k x"),
        "(error) NOPERM User reader has no permissions to run the 'set' command"
    );
    // AUTH at the prompt is remembered for reconnects.
    assert_eq!(repl.ask("AUTH writer w:p:w"), "OK");
    assert_eq!(
        call(&mut root, &["CLIENT", "KILL", "USER", "writer"]),
        Frame::Integer(1)
    );
    wait_until(
        Duration::from_secs(10),
        "the REPL's connection to close",
        || !text(&call(&mut root, &["CLIENT", "LIST"])).contains("user=writer"),
    );
    assert_eq!(repl.ask("SET k y"), "OK");
    assert_eq!(repl.ask("ACL WHOAMI"), "\"writer\"");
    repl.close_stdin();
    // Piped, the REPL exits 1: one command (SET as reader) got an error.
    assert_eq!(repl.wait_exit(Duration::from_secs(10)).code(), Some(1));

    // `db repl` with DISTRO_DB_USER.
    let mut cmd = Command::new(db_bin());
    cmd.args(["repl", "--connect", &addr])
        .env("DISTRO_DB_USER", "reader")
        .env("DISTRO_DB_PASSWORD", "rpw")
        .stderr(Stdio::null());
    let mut repl = ReplProc::spawn(cmd);
    assert_eq!(repl.ask("ACL WHOAMI"), "\"reader\"");
    repl.close_stdin();
    repl.wait_exit(Duration::from_secs(10));

    // `db leave` as a read-write user is refused, and the node stays.
    let out = Command::new(db_bin())
        .args(["leave", "--connect", &addr, "--user", "writer"])
        .env("DISTRO_DB_PASSWORD", "w:p:w")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOPERM User writer has no permissions to run the 'leave' command"),
        "{stderr}"
    );
    // A wrong password is an AUTH failure.
    let out = Command::new(db_bin())
        .args(["leave", "--connect", &addr])
        .env("DISTRO_DB_USER", "root")
        .env("DISTRO_DB_PASSWORD", "wrong")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("WRONGPASS"),
        "{stderr}"
    );
    // --user without a password says so.
    let out = Command::new(db_bin())
        .args(["leave", "--connect", &addr, "--user", "root"])
        .env_remove("DISTRO_DB_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DISTRO_DB_PASSWORD"), "{stderr}");
    assert_eq!(call(&mut root, &["GET", "k"]), bulk("y"));
    let ring = text(&call(&mut root, &["RING"]));
    assert!(!ring.contains("leaving"), "{ring}");
}
