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
    let mut child = common::checked(Command::new(db_bin()).args(args))
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
    // `db` is not on the tests' PATH: the hint names this binary by its path.
    let exe = std::fs::canonicalize(db_bin()).unwrap();
    assert!(
        text.contains(&format!(
            "reconnect: {} repl --connect 127.0.0.1:{}",
            exe.display(),
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
    let own = format!("127.0.0.1:{port}");
    let o = db(&[
        "slave",
        &port.to_string(),
        "--host",
        "0.0.0.0",
        "--seed",
        &own,
    ]);
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
    let mut child = common::checked(
        Command::new(db_bin())
            .args(["slave", &port.to_string(), "--host", "0.0.0.0"])
            .args(["--advertise", &own, "--seed", &own]),
    )
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
    let own = format!("127.0.0.1:{port}");
    let mut child =
        common::checked(Command::new(db_bin()).args(["slave", &port.to_string(), "--seed", &own]))
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
    let own = format!("127.0.0.1:{port}");
    let mut child = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &own, "--seed", &own, "--log-file"])
            .arg(&log),
    )
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
        .args(["--seed", &format!("127.0.0.1:{port}")])
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
    let err = dir.path().join("stderr");
    let mut cmd = Command::new(db_bin());
    cmd.args(["master", &port.to_string(), "--log-file"])
        .arg(dir.path().join("master.log"))
        .args(["--seed", &format!("127.0.0.1:{port}")])
        .stderr(std::fs::File::create(&err).unwrap());
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
    // EXIT says what it did.
    let text = common::read(&err);
    assert!(
        text.contains(&format!(
            "EXIT: stopping node-{port} (this REPL is its terminal)"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("node-{port} stopped")), "{text}");
}

#[test]
fn a_node_whose_port_is_taken_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let own = format!("127.0.0.1:{port}");
    let mut first = common::checked(
        Command::new(db_bin())
            .args(["slave", &port.to_string(), "--seed", &own, "--log-file"])
            .arg(dir.path().join("first.log")),
    )
    .stdin(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "the first node", || {
        listening(port)
    });
    let o = db(&[
        "slave",
        &port.to_string(),
        "--seed",
        &own,
        "--log-file",
        "-",
    ]);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(
        text.contains(&format!("port {port} TCP in use by pid {} (", first.id())),
        "{text}"
    );
    let _ = first.kill();
    let _ = first.wait();
}

/// `db node` with `args` and `envs` (DISTRO_DB_USER removed), stderr to a
/// file; a guard stops it.
fn node_with(args: &[&str], envs: &[(&str, &str)], err: &Path) -> std::process::Child {
    let mut cmd = Command::new(db_bin());
    cmd.arg("node")
        .args(args)
        .env_remove("DISTRO_DB_USER")
        .env_remove("DISTRO_DB_PASSWORD")
        .env_remove("DISTRO_DB_CLUSTER_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    common::checked(&mut cmd).spawn().expect("db node runs")
}

/// `CONFIG GET name` on `addr`, authenticated with `password`.
fn config_get(addr: &str, password: &str, name: &str) -> String {
    let mut c = common::connect_as(addr, Some(&("default".into(), password.into()))).unwrap();
    // A RESP2 connection: the map comes as [name, value].
    match c.call(&["CONFIG", "GET", name]).unwrap() {
        distro_db::resp::Frame::Array(items) => match items.as_slice() {
            [_, distro_db::resp::Frame::Bulk(v)] => String::from_utf8_lossy(v).into_owned(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Every line of a log written with --log-format json is a JSON object.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

#[test]
fn config_file_precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"{addr}\"\nseed = [\"{addr}\"]\npassword = \"from-file\"\n\
             timeout-ms = 1111\naae-interval-ms = 2222\nlog = \"error\"\nlog-format = \"json\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let mut child = node_with(
        &[
            "--config",
            file.to_str().unwrap(),
            "--aae-interval-ms",
            "3333",
            "--log",
            "info",
            "--log-file",
            log.to_str().unwrap(),
        ],
        &[("DISTRO_DB_PASSWORD", "from-env"), ("RUST_LOG", "error")],
        &dir.path().join("stderr"),
    );
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "the node", || listening(port));
    // env > file: the password of DISTRO_DB_PASSWORD, not the file's.
    assert!(common::connect_as(&addr, Some(&("default".into(), "from-file".into()))).is_err());
    // file > default; flag > file.
    assert_eq!(
        config_get(&addr, "from-env", "distro-db-timeout-ms"),
        "1111"
    );
    assert_eq!(
        config_get(&addr, "from-env", "distro-db-aae-interval-ms"),
        "3333"
    );
    assert_eq!(config_get(&addr, "from-env", "distro-db-r"), "2");
    // flag > env > file: --log info beats RUST_LOG=error and the file's
    // error, so the start is logged; in the file's format, JSON.
    wait_until(Duration::from_secs(20), "the start in the log", || {
        common::read(&log).contains("node started")
    });
    let lines = json_lines(&common::read(&log));
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "INFO" && v["fields"]["message"] == "node started"),
        "{lines:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_example_config_file_starts_a_node_in_json_logs() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/distro-db.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let log = dir.path().join("node.log");
    let data = dir.path().join("data");
    // The host-specific values of the example, overridden by flags; all
    // its other settings apply.
    let mut child = node_with(
        &[
            "--config",
            example.to_str().unwrap(),
            "--listen",
            &addr,
            "--advertise",
            &addr,
            "--seed",
            &addr,
            "--data-dir",
            data.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[],
        &dir.path().join("stderr"),
    );
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "the node", || {
        listening(port) && common::read(&log).contains("node started")
    });
    let mut c = distro_db::client::Client::connect(&addr).unwrap();
    assert_eq!(
        c.call(&["PING"]).unwrap(),
        distro_db::resp::Frame::Simple("PONG".into())
    );
    assert!(data.join("node.id").exists() || std::fs::read_dir(&data).unwrap().next().is_some());
    let lines = json_lines(&common::read(&log));
    assert!(
        lines
            .iter()
            .all(|v| v["timestamp"].is_string() && v["level"].is_string()),
        "{lines:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_example_config_file_names_every_node_flag() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/distro-db.example.toml"),
    )
    .unwrap();
    let keys: Vec<&str> = example
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    let help = String::from_utf8(db(&["node", "--help"]).stdout).unwrap();
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .filter(|w| !w.is_empty() && !matches!(*w, "help" | "config" | "listen" | "advertise"))
        .collect();
    for flag in &flags {
        assert!(
            keys.contains(flag),
            "docs/distro-db.example.toml does not mention `{flag}`"
        );
    }
    for key in &keys {
        assert!(
            help.contains(&format!("--{key} ")) || help.contains(&format!("--{key}\n")),
            "`{key}` in docs/distro-db.example.toml is not a flag of db node"
        );
    }
}

#[test]
fn bad_config_files_are_refused_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    for (text, want) in [
        (
            "listen = \"127.0.0.1:1\"\nseed = [\"127.0.0.1:1\"]\ndata_dir = \"/x\"\n",
            "unknown key `data_dir` (did you mean `data-dir`?)",
        ),
        (
            "listen = \"127.0.0.1:1\"\nseed = [\"127.0.0.1:1\"]\nsegment-size = \"12 parsecs\"\n",
            "`segment-size`: invalid value '12 parsecs'",
        ),
        (
            "listen = \"127.0.0.1:1\"\nseed = [\"127.0.0.1:1\"]\nlog-format = \"xml\"\n",
            "`log-format`: invalid value 'xml'",
        ),
        (
            "listen = \"127.0.0.1:1\"\nseed = [\"127.0.0.1:1\"]\n[node]\n",
            "unknown key `node`",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let o = db(&["node", "--config", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("config file {}", file.display())),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
    }
    let o = db(&[
        "node",
        "--config",
        dir.path().join("none.toml").to_str().unwrap(),
        "--seed",
        "127.0.0.1:1",
    ]);
    assert!(
        stderr(&o).contains("cannot read config file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_names_every_environment_variable() {
    let top = String::from_utf8(db(&["--help"]).stdout).unwrap();
    for var in [
        "DISTRO_DB_PASSWORD",
        "DISTRO_DB_USER ",
        "DISTRO_DB_USERS",
        "DISTRO_DB_CLUSTER_SECRET",
        "RUST_LOG",
        "--config FILE",
    ] {
        assert!(top.contains(var), "db --help lacks {var}:\n{top}");
    }
    for sub in ["repl", "local", "leave"] {
        let help = String::from_utf8(db(&[sub, "--help"]).stdout).unwrap();
        for var in ["DISTRO_DB_PASSWORD", "DISTRO_DB_USER"] {
            assert!(help.contains(var), "db {sub} --help lacks {var}:\n{help}");
        }
    }
    for sub in ["node", "slave", "master"] {
        let help = String::from_utf8(db(&[sub, "--help"]).stdout).unwrap();
        for text in [
            "--config <FILE>",
            "DISTRO_DB_PASSWORD",
            "DISTRO_DB_CLUSTER_SECRET",
            "RUST_LOG",
            "--log-format",
        ] {
            assert!(help.contains(text), "db {sub} --help lacks {text}:\n{help}");
        }
    }
}

#[test]
fn piped_repl_exits_non_zero_when_a_command_failed() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = node_with(
        &["--listen", &addr, "--seed", &addr, "--log-file", "-"],
        &[],
        &dir.path().join("stderr"),
    );
    let _guard = ShutdownOnDrop(vec![port]);
    wait_until(Duration::from_secs(20), "the node", || listening(port));
    let run = |input: &str| {
        let mut cmd = Command::new(db_bin());
        cmd.args(["repl", "--connect", &addr])
            .env_remove("DISTRO_DB_USER")
            .env_remove("DISTRO_DB_PASSWORD")
            .stderr(Stdio::piped());
        let mut repl = ReplProc::spawn(cmd);
        repl.send(input);
        let first = repl.line();
        repl.close_stdin();
        (first, repl.wait_exit(Duration::from_secs(10)))
    };
    let (answer, status) = run("PING");
    assert_eq!(answer, "PONG");
    assert!(status.success());
    let (answer, status) = run("SET k hello world");
    assert_eq!(
        answer,
        "(error) ERR syntax error (a value with spaces needs quotes: SET \"k\" \"hello world\")"
    );
    assert_eq!(status.code(), Some(1));
    let (answer, status) = run("HELP get");
    assert!(answer.trim_start().starts_with("GET <key>"), "{answer}");
    assert!(status.success());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn local_passes_node_flags_reaps_killed_nodes_and_counts_its_own_out() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_block(3);
    let ports: Vec<u16> = (base..base + 3).collect();
    let _guard = ShutdownOnDrop(ports.clone());
    let err = dir.path().join("stderr");
    let data = dir.path().join("data");
    let mut cmd = Command::new(db_bin());
    cmd.args(["local", "--base-port", &base.to_string(), "--data-dir"])
        .arg(&data)
        .args(["--", "--sibling-reads", "error"])
        .env("TMPDIR", dir.path())
        .env_remove("DISTRO_DB_USER")
        .env_remove("DISTRO_DB_PASSWORD")
        .stderr(std::fs::File::create(&err).unwrap());
    let mut repl = ReplProc::spawn(cmd);
    assert_eq!(repl.ask("SET a 1"), "OK");
    // The flag after -- reached every node; each has its own data directory.
    for p in &ports {
        let mut c = distro_db::client::Client::connect(&format!("127.0.0.1:{p}")).unwrap();
        let reply = c
            .call(&["CONFIG", "GET", "distro-db-sibling-reads"])
            .unwrap();
        assert_eq!(
            reply,
            distro_db::resp::Frame::Array(vec![
                common::bulk("distro-db-sibling-reads"),
                common::bulk("error")
            ])
        );
        assert!(data.join(format!("node-{p}")).is_dir());
    }
    // A node KILLed from the REPL is reaped at once, not left a zombie.
    let text = common::read(&err);
    let pid = text
        .lines()
        .find(|l| l.starts_with(&format!("node-{base} on ")))
        .and_then(|l| l.split("(pid ").nth(1))
        .and_then(|l| l.split(')').next())
        .expect("pid of the first node")
        .to_string();
    assert_eq!(repl.ask(&format!("KILL node-{base}")), "OK");
    wait_until(
        Duration::from_secs(20),
        "the killed node to be reaped",
        || !Path::new(&format!("/proc/{pid}")).exists(),
    );
    // KILL of the REPL's own node: it is counted out, and the hint names one that runs.
    assert_eq!(repl.ask(&format!("KILL node-{}", base + 2)), "OK");
    assert!(repl.wait_exit(Duration::from_secs(20)).success());
    let text = common::read(&err);
    assert!(
        text.contains("the cluster keeps running (1 of 3 nodes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("repl --connect 127.0.0.1:{}\n", base + 1)),
        "{text}"
    );
    let mut other = distro_db::client::Client::connect(&format!("127.0.0.1:{}", base + 1)).unwrap();
    let _ = other.call(&["SHUTDOWN"]);
}

#[test]
fn local_refuses_node_flags_it_sets_itself() {
    for (flags, want) in [
        (
            &["--", "--seed", "127.0.0.1:1"][..],
            "db local sets --seed itself",
        ),
        (
            &["--", "--data-dir", "/tmp/x"][..],
            "db local sets --data-dir itself (give it before the --)",
        ),
        (
            &["--", "--frobnicate"][..],
            "node flags after --: unexpected argument '--frobnicate'",
        ),
        (
            &["--", "--config", "x.toml"][..],
            "--config is not for db local's nodes",
        ),
    ] {
        let mut args = vec!["local", "--base-port", "1"];
        args.extend_from_slice(flags);
        let o = db(&args);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
    }
}

/// Runs `db` with a deployment file's arguments plus `--cluster-secret x
/// --listen 127.0.0.1:0`: port 0 is refused only after the command line and
/// the config file have parsed, so that error proves they did.
fn parses_up_to_the_port(args: &[String]) {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["--cluster-secret", "x", "--listen", "127.0.0.1:0"]);
    let o = db(&all);
    assert_eq!(o.status.code(), Some(1), "{all:?}: {}", stderr(&o));
    assert!(
        stderr(&o).contains("port 0 is not allowed"),
        "{all:?}: {}",
        stderr(&o)
    );
}

#[test]
fn the_deployment_files_use_flags_and_keys_that_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("docs/distro-db.example.toml");
    let compose_config = root.join("deploy/compose-node.toml");
    // systemd: ExecStart, with the example file as /etc/distro-db/node.toml.
    let unit = std::fs::read_to_string(root.join("deploy/distro-db.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/db "))
        .expect("ExecStart");
    let args: Vec<String> = exec
        .split_whitespace()
        .map(|a| a.replace("/etc/distro-db/node.toml", example.to_str().unwrap()))
        .collect();
    parses_up_to_the_port(&args);
    // compose: each service's command, with deploy/compose-node.toml.
    let compose = std::fs::read_to_string(root.join("deploy/compose.yaml")).unwrap();
    let commands: Vec<Vec<String>> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .map(|list| serde_json::from_str(list).expect("a JSON-style list"))
        .collect();
    assert_eq!(commands.len(), 3);
    for command in commands {
        let args: Vec<String> = command
            .iter()
            .map(|a| a.replace("/etc/distro-db/node.toml", compose_config.to_str().unwrap()))
            .collect();
        parses_up_to_the_port(&args);
    }
    // The Dockerfile's default command is the unit's.
    let docker = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains(r#"CMD ["node", "--config", "/etc/distro-db/node.toml"]"#));
}

#[test]
fn the_test_harness_refuses_commands_that_would_touch_the_reserved_ports() {
    let refused = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        std::panic::catch_unwind(move || {
            common::checked(Command::new(db_bin()).args(&args));
        })
        .is_err()
    };
    assert!(refused(&["slave", "20001"]));
    assert!(refused(&["master", "20001", "--log-file", "x"]));
    assert!(refused(&["node", "--listen", "127.0.0.1:20001"]));
    assert!(refused(&["local"]));
    assert!(refused(&["repl"]));
    assert!(refused(&["slave", "55553", "--seed", "127.0.0.1:55553"]));
    assert!(refused(&["slave", "20001", "--seed", "127.0.0.1:55560"]));
    assert!(!refused(&["slave", "20001", "--seed", "127.0.0.1:20001"]));
    assert!(!refused(&["node", "--listen", "127.0.0.1:0"]));
    assert!(!refused(&["local", "--base-port", "20001"]));
}

#[test]
fn db_bench_without_db_bench_beside_it_names_the_build_command() {
    // `db bench` runs the db-bench binary beside `db`, else on PATH: a copy
    // of `db` alone in a directory, with an empty PATH, has neither.
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("db");
    std::fs::copy(common::db_bin(), &lone).unwrap();
    let out = Command::new(&lone)
        .args(["bench", "--target", "127.0.0.1:1", "-n", "1"])
        .env("PATH", dir.path().join("nothing-here"))
        .stdin(Stdio::null())
        .output()
        .expect("db runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("db-bench"), "{err}");
    assert!(err.contains("cargo build --release"), "{err}");
}
