//! Multi-process tests of the command line: `db local` (its children, EXIT,
//! QUIT, signals, the terminal), port and flag validation, where logs go.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    PtyProc, ReplProc, ShutdownOnDrop, db_bin, free_block, listening, live_nodes, wait_until,
};

/// Runs `db` with `args` to completion (bounded: these commands fail at once).
fn db(args: &[&str]) -> Output {
    let mut child = Command::new(db_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("db runs");
    wait_until(Duration::from_secs(20), "db to exit", || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `db local` on `base` with piped stdin/stdout; its stderr goes to a file.
fn local(base: u16, nodes: u16, stderr_file: &Path) -> ReplProc {
    let mut cmd = Command::new(db_bin());
    cmd.args([
        "local",
        "--base-port",
        &base.to_string(),
        "--nodes",
        &nodes.to_string(),
    ])
    .env("TMPDIR", stderr_file.parent().expect("dir"))
    .stderr(std::fs::File::create(stderr_file).expect("stderr file"));
    ReplProc::spawn(cmd)
}

#[test]
fn local_exit_leaves_the_cluster_running_and_quit_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_block(3);
    let ports: Vec<u16> = (base..base + 3).collect();
    let _guard = ShutdownOnDrop(ports.clone());
    let err = dir.path().join("stderr");
    let mut repl = local(base, 3, &err);
    assert_eq!(repl.ask("SET a 1"), "OK");
    // The nodes log to files in TMPDIR, named on stderr.
    let text = std::fs::read_to_string(&err).unwrap();
    for p in &ports {
        let log = dir.path().join(format!("distro-db-node-{p}.log"));
        assert!(text.contains(&log.display().to_string()), "{text}");
        assert!(common::read(&log).contains("node started"));
    }
    // HELP tells the truth about EXIT here.
    repl.send("HELP");
    let help: Vec<String> = (0..20).map(|_| repl.line()).collect();
    assert!(
        help.iter()
            .any(|l| l.contains("EXIT") && l.contains("the cluster keeps running")),
        "{help:?}"
    );
    // EXIT: db local exits, every node keeps running.
    repl.send("EXIT");
    assert!(repl.wait_exit(Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(
        text.contains(&format!(
            "reconnect: db repl --connect 127.0.0.1:{}",
            base + 2
        )),
        "{text}"
    );
    assert!(text.contains("QUIT"), "{text}");
    let addr = format!("127.0.0.1:{base}");
    assert!(ports.iter().all(|&p| listening(p)));
    assert_eq!(live_nodes(&addr).len(), 3);
    // QUIT from another REPL stops them all.
    let mut cmd = Command::new(db_bin());
    cmd.args(["repl", "--connect", &addr]);
    let mut other = ReplProc::spawn(cmd);
    assert_eq!(other.ask("GET a"), "\"1\"");
    assert!(other.ask("QUIT").starts_with("OK"));
    other.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "every node to stop", || {
        ports.iter().all(|&p| !listening(p))
    });
}

#[test]
fn local_quit_stops_every_node_and_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_block(2);
    let _guard = ShutdownOnDrop(vec![base, base + 1]);
    let err = dir.path().join("stderr");
    let mut repl = local(base, 2, &err);
    assert_eq!(repl.ask("PING"), "PONG");
    assert!(repl.ask("QUIT").starts_with("OK"));
    assert!(repl.wait_exit(Duration::from_secs(20)).success());
    // db local waited for its children: nothing listens any more.
    assert!(!listening(base) && !listening(base + 1));
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(text.contains("every node has stopped"), "{text}");
}

#[test]
fn local_on_a_terminal_survives_ctrl_c_and_restores_the_terminal_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_block(2);
    let _guard = ShutdownOnDrop(vec![base, base + 1]);
    let mut cmd = Command::new(db_bin());
    cmd.args(["local", "--nodes", "2", "--base-port", &base.to_string()])
        .env("TMPDIR", dir.path())
        .env("HOME", dir.path());
    let mut term = PtyProc::spawn(cmd);
    term.wait_for("db> ", 1);
    // At the prompt the terminal is raw: no echo by the terminal itself.
    assert_eq!(term.echo_and_canonical(), (false, false));
    term.type_bytes(b"SET a 1\r");
    term.wait_for("OK", 1);
    // Ctrl-C abandons the line; the nodes (in their own session) live on.
    term.type_bytes(b"GET b\x03");
    term.wait_for("^C", 1);
    term.type_bytes(b"GET a\r");
    term.wait_for("\"1\"", 1);
    assert_eq!(live_nodes(&format!("127.0.0.1:{base}")).len(), 2);
    // kill PID: the terminal is restored, the nodes are stopped, non-zero exit.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(term.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = term.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert_eq!(term.echo_and_canonical(), (true, true));
    assert!(term.screen().contains("SIGTERM received"));
    assert!(!listening(base) && !listening(base + 1));
}

#[test]
fn local_checks_the_configuration_before_starting_anything() {
    let base = free_block(3);
    let o = db(&["local", "--base-port", &base.to_string(), "--r", "4"]);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(
        text.contains("R (4) and W (2) cannot exceed N (3)"),
        "{text}"
    );
    assert!(text.contains("no node was started"), "{text}");
    assert!(!text.contains("is the port in use"), "{text}");
    assert!(!listening(base));
    // Ports past 65535 (the old code wrapped around to port 0 and exited 0).
    let o = db(&["local", "--base-port", "65535", "--nodes", "2"]);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(text.contains("past the last port (65535)"), "{text}");
    let o = db(&["local", "--base-port", "0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("port 0 is not allowed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn local_names_the_holder_of_a_taken_explicit_port() {
    let base = free_block(3);
    let holder = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let o = db(&["local", "--base-port", &base.to_string()]);
    assert!(!o.status.success());
    let text = stderr(&o);
    let me = std::process::id();
    assert!(
        text.contains(&format!("port {} TCP in use by pid {me} (", base + 1)),
        "{text}"
    );
    assert!(!listening(base), "nothing was started");
    drop(holder);
    let udp = std::net::UdpSocket::bind(("127.0.0.1", base + 2)).unwrap();
    let text = stderr(&db(&["local", "--base-port", &base.to_string()]));
    assert!(
        text.contains(&format!("port {} UDP in use by pid {me}", base + 2)),
        "{text}"
    );
    drop(udp);
}

#[test]
fn port_zero_is_refused_everywhere() {
    for args in [
        &["slave", "0"][..],
        &["master", "0"][..],
        &["node", "--listen", "127.0.0.1:0"][..],
    ] {
        let o = db(args);
        assert!(!o.status.success(), "{args:?}");
        let text = stderr(&o);
        assert!(text.contains("port 0 is not allowed"), "{args:?}: {text}");
    }
}

#[test]
fn slave_on_every_interface_asks_for_advertise_and_accepts_it() {
    let port = common::free_port();
    let o = db(&["slave", &port.to_string(), "--host", "0.0.0.0"]);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(
        text.contains("--host 0.0.0.0 listens on every interface")
            && text.contains("pass --advertise IP:"),
        "{text}"
    );
    // With --advertise the same command starts, under the advertised id.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(db_bin())
        .args(["slave", &port.to_string(), "--host", "0.0.0.0"])
        .args(["--advertise", &format!("127.0.0.1:{port}")])
        // Every interface without a cluster secret: only when told so.
        .arg("--insecure-peers")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "the node to answer", || {
        live_nodes(&format!("127.0.0.1:{port}")) == [format!("node-{port}")]
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn node_logs_have_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // stderr redirected to a file: logs go there, without ANSI codes.
    let err = dir.path().join("stderr");
    let mut child = Command::new(db_bin())
        .args(["slave", &port.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "logs on stderr", || {
        common::read(&err).contains("node started")
    });
    assert!(!common::read(&err).contains('\x1b'));
    let _ = child.kill();
    let _ = child.wait();
    // --log-file: the same, in that file.
    let port = common::free_port();
    let log = dir.path().join("node.log");
    let mut child = Command::new(db_bin())
        .args([
            "node",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-file",
        ])
        .arg(&log)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard2 = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "logs in the file", || {
        common::read(&log).contains("node started")
    });
    assert!(!common::read(&log).contains('\x1b'));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn slave_on_a_terminal_prints_one_line_and_logs_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut cmd = Command::new(db_bin());
    cmd.args(["slave", &port.to_string()])
        .env("TMPDIR", dir.path());
    let mut term = PtyProc::spawn(cmd);
    let _guard = ShutdownOnDrop(vec![port]);
    let log = dir.path().join(format!("distro-db-node-{port}.log"));
    wait_until(Duration::from_secs(20), "the log file", || {
        common::read(&log).contains("node started")
    });
    let line = format!("node-{port} on 127.0.0.1:{port}, logs: {}", log.display());
    term.wait_for(&line, 1);
    // Nothing else reaches the terminal, and the file has no colour codes.
    assert_eq!(term.screen().trim_end(), line, "{:?}", term.screen());
    assert!(!common::read(&log).contains('\x1b'));
    let _ = term.child.kill();
    let _ = term.child.wait();
}

#[test]
fn master_help_says_exit_stops_its_node_and_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut cmd = Command::new(db_bin());
    cmd.args(["master", &port.to_string(), "--log-file"])
        .arg(dir.path().join("master.log"));
    let mut repl = ReplProc::spawn(cmd);
    let _guard = ShutdownOnDrop(vec![port]);
    repl.send("HELP");
    let help: Vec<String> = (0..20).map(|_| repl.line()).collect();
    assert!(
        help.iter()
            .any(|l| l.contains("EXIT") && l.contains("stop this node")),
        "{help:?}"
    );
    repl.send("EXIT");
    assert!(repl.wait_exit(Duration::from_secs(15)).success());
    assert!(!listening(port));
}

#[test]
fn a_node_whose_port_is_taken_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut first = Command::new(db_bin())
        .args(["slave", &port.to_string(), "--log-file"])
        .arg(dir.path().join("first.log"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "the first node", || {
        listening(port)
    });
    let o = db(&["slave", &port.to_string(), "--log-file", "-"]);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(
        text.contains(&format!("port {port} TCP in use by pid {} (", first.id())),
        "{text}"
    );
    let _ = first.kill();
    let _ = first.wait();
}
