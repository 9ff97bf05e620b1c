//! TLS end to end: real nodes started with certificates made here (rcgen),
//! on loopback. A TLS cluster answers through every node (so its peers talk
//! over TLS), refuses plain text, and serves redis-cli, redis-py and the
//! node's own tools; client certificates are checked when required, a
//! node whose certificate another CA signed cannot join, and bad files stop
//! a node at start with an error naming them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, bulk, free_port, free_ports, have, python_with_redis, wait_until};
use distro_db::client::Client;
use distro_db::resp::Frame;
use distro_db::tls::{ClientArgs, ClientTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A throwaway certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, as a PEM file.
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for localhost and 127.0.0.1, good for a server and a
    /// client: its (cert, key) files.
    fn leaf(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A client configuration trusting `ca`, presenting `cert` if given.
fn client_tls(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> ClientTls {
    ClientArgs {
        tls: true,
        tls_ca: Some(ca.to_path_buf()),
        tls_cert: cert.map(|c| c.0.clone()),
        tls_key: cert.map(|c| c.1.clone()),
    }
    .load()
    .expect("client TLS settings")
    .expect("TLS on")
}

/// One command over TLS (`None`: no connection or no answer).
fn call(addr: &str, tls: &ClientTls, args: &[&str]) -> Option<Frame> {
    Client::connect_via(addr, Duration::from_secs(10), Some(tls))
        .ok()?
        .call(args)
        .ok()
}

/// The first line of a text reply (RING's, NODES's), or "".
fn text(f: Option<Frame>) -> String {
    match f.as_ref().and_then(Frame::text) {
        Some(t) => t,
        None => format!("{f:?}"),
    }
}

/// True when RING's answer lists `id` in the layout (not only among the
/// nodes gossip knows, as its transfer lines do).
fn in_layout(ring: &str, id: &str) -> bool {
    ring.lines().any(|l| l.starts_with(&format!("{id} ")))
}

/// Starts `n` nodes with TLS (a certificate each from `ca`, plus `extra`
/// flags), and waits until each sees every other live and the layout settled.
fn tls_cluster(n: usize, dir: tempfile::TempDir, ca: &Ca, extra: &[&str]) -> Cluster {
    let ports = free_ports(n);
    let mut cluster = Cluster {
        nodes: Vec::new(),
        cluster_id: format!("test-{}", rand::random::<u64>()),
        dir,
        extra: Vec::new(),
        durable: false,
        auth: None,
    };
    for &port in &ports {
        let (cert, key) = ca.leaf(cluster.dir.path(), &format!("node-{port}"));
        cluster.extra = [
            "--tls-cert",
            &s(&cert),
            "--tls-key",
            &s(&key),
            "--tls-ca",
            &s(&ca.pem),
        ]
        .iter()
        .chain(extra)
        .map(|x| x.to_string())
        .collect();
        let node = cluster.spawn_node(port, &ports);
        cluster.nodes.push(node);
    }
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    let node_cert = ca.leaf(cluster.dir.path(), "probe");
    let tls = client_tls(&ca.pem, Some(&node_cert));
    for n in &cluster.nodes {
        wait_until(
            Duration::from_secs(60),
            "the TLS cluster to converge",
            || {
                let nodes = text(call(&n.addr(), &tls, &["NODES"]));
                let live = ids.iter().all(|id| {
                    nodes
                        .lines()
                        .any(|l| l.starts_with(&format!("{id} ")) && l.contains(" live"))
                });
                live && text(call(&n.addr(), &tls, &["RING"]))
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains("settled"))
            },
        );
    }
    cluster
}

/// Every node takes a write the others then read: the replicas behind each
/// were reached over TLS.
fn writes_go_through_every_node(c: &Cluster, tls: &ClientTls) {
    let n = c.nodes.len();
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("v{i}");
        assert_eq!(
            call(&c.nodes[i].addr(), tls, &["SET", &key, &value]),
            Some(Frame::ok()),
            "SET through node {i}"
        );
        for j in 0..n {
            assert_eq!(
                call(&c.nodes[j].addr(), tls, &["GET", &key, "R=3"]),
                Some(bulk(&value)),
                "GET {key} through node {j}"
            );
        }
    }
}

#[test]
fn a_tls_cluster_serves_through_every_node_and_refuses_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster-ca");
    let c = tls_cluster(3, dir, &ca, &[]);
    let tls = client_tls(&ca.pem, None);
    writes_go_through_every_node(&c, &tls);

    // Plain text is told and cut, never served.
    let addr = c.nodes[0].addr();
    let mut plain = Client::connect_via(&addr, Duration::from_secs(10), None).expect("tcp");
    match plain.call(&["GET", "k0"]) {
        Ok(Frame::Error(e)) => assert!(e.contains("TLS connections only"), "{e}"),
        other => panic!("a plain-text client was answered {other:?}"),
    }
    assert!(plain.call(&["PING"]).is_err(), "the connection is closed");
    wait_until(Duration::from_secs(10), "the refusal to be logged", || {
        c.nodes[0].log_text().contains("TLS connection refused")
    });

    // redis-cli --tls.
    if have("redis-cli", "--version") {
        let port = c.nodes[1].port.to_string();
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args([
                    "--tls",
                    "--cacert",
                    &s(&ca.pem),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                ])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(cli(&["PING"]), "PONG");
        assert_eq!(cli(&["SET", "cli", "over tls"]), "OK");
        assert_eq!(cli(&["GET", "cli"]), "over tls");
        assert_eq!(cli(&["GET", "k2"]), "v2");
    }

    // redis-py with ssl=True.
    if let Some((python, path)) = python_with_redis() {
        let script = r#"
import os, redis
r = redis.Redis(host="127.0.0.1", port=int(os.environ["DDB_PORT"]), ssl=True,
                ssl_ca_certs=os.environ["DDB_CA"], socket_timeout=10)
assert r.ping() is True
assert r.set("py:tls", "v") is True
assert r.get("py:tls") == b"v"
assert r.get("k1") == b"v1"
print("redis-py over TLS: ok")
"#;
        let mut cmd = Command::new(python);
        cmd.args(["-c", script])
            .env("DDB_PORT", c.nodes[2].port.to_string())
            .env("DDB_CA", &ca.pem)
            .stdin(Stdio::null());
        if let Some(p) = path {
            cmd.env("PYTHONPATH", p);
        }
        let out = cmd.output().expect("python runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "redis-py over TLS failed: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("redis-py over TLS: ok"));
        assert_eq!(call(&addr, &tls, &["GET", "py:tls"]), Some(bulk("v")));
    }

    // The node's own REPL (db-bench's --tls: benches/loadgen/tests/db_bench.rs).
    let out = Command::new(common::db_bin())
        .args(["repl", "--connect", &addr, "--tls-ca", &s(&ca.pem)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"GET k1\nSET repl yes\n")?;
            child.wait_with_output()
        })
        .expect("db repl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "db repl: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("v1"), "{stdout}");
    assert_eq!(call(&addr, &tls, &["GET", "repl"]), Some(bulk("yes")));
}

#[test]
fn client_certificates_are_checked_and_a_node_of_another_ca_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster-ca");
    let c = tls_cluster(3, dir, &ca, &["--tls-client-auth", "required"]);
    let d = c.dir.path();
    let good = ca.leaf(d, "app");
    let tls = client_tls(&ca.pem, Some(&good));
    writes_go_through_every_node(&c, &tls);

    // No certificate, or one another CA signed: refused (the handshake
    // fails, or the first reply never comes).
    let other = Ca::new(d, "other-ca");
    let stranger = other.leaf(d, "stranger");
    let addr = c.nodes[0].addr();
    for (what, cert) in [("no certificate", None), ("another CA's", Some(&stranger))] {
        let t = client_tls(&ca.pem, cert);
        let answer = Client::connect_via(&addr, Duration::from_secs(10), Some(&t))
            .and_then(|mut cl| cl.call(&["GET", "k0"]));
        assert!(
            answer.is_err(),
            "a client with {what} was answered {answer:?}"
        );
    }
    if have("redis-cli", "--version") {
        let out = Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &s(&ca.pem),
                "--cert",
                &s(&good.0),
                "--key",
                &s(&good.1),
            ])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &c.nodes[1].port.to_string(),
                "GET",
                "k1",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
    }

    // A node with the cluster's id (and secret: none, on loopback) but a
    // certificate of another CA: it trusts both CAs, the cluster only its
    // own. It never joins, and serves nothing of the cluster's.
    let port = free_port();
    let (cert, key) = other.leaf(d, "rogue");
    let both = d.join("both-cas.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&ca.pem).unwrap() + &std::fs::read_to_string(&other.pem).unwrap(),
    )
    .unwrap();
    let mut ports: Vec<u16> = c.nodes.iter().map(|n| n.port).collect();
    ports.push(port);
    let mut rogue_cluster = Cluster {
        nodes: Vec::new(),
        cluster_id: c.cluster_id.clone(),
        dir: tempfile::tempdir().unwrap(),
        extra: [
            "--tls-cert",
            &s(&cert),
            "--tls-key",
            &s(&key),
            "--tls-ca",
            &s(&both),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect(),
        durable: false,
        auth: None,
    };
    let rogue = rogue_cluster.spawn_node(port, &ports);
    let rogue_id = format!("node-{port}");
    wait_until(
        Duration::from_secs(60),
        "the rogue node to be refused (or to join)",
        || {
            let log = rogue.log_text();
            log.contains("cannot open a TLS connection to a peer")
                || log.contains("cannot open a peer connection")
                || in_layout(&text(call(&addr, &tls, &["RING"])), &rogue_id)
        },
    );
    rogue_cluster.nodes.push(rogue);
    let ring = text(call(&addr, &tls, &["RING"]));
    assert!(!in_layout(&ring, &rogue_id), "the rogue joined: {ring}");
    let rogue_tls = client_tls(&both, Some(&stranger));
    let raddr = format!("127.0.0.1:{port}");
    let got = call(&raddr, &rogue_tls, &["GET", "k0"]);
    assert!(
        !matches!(got, Some(Frame::Bulk(_))),
        "the rogue read the cluster's data: {got:?}"
    );
    // The cluster still answers, and still without it.
    writes_go_through_every_node(&c, &tls);
    let ring = text(call(&addr, &tls, &["RING"]));
    assert!(!in_layout(&ring, &rogue_id), "the rogue joined: {ring}");
}

#[test]
fn bad_tls_files_stop_the_node_with_an_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let other = Ca::new(d, "other");
    let (cert, key) = ca.leaf(d, "n");
    let (_, other_key) = ca.leaf(d, "m");
    let (foreign_cert, foreign_key) = other.leaf(d, "f");
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let missing = d.join("missing.pem");
    let start = |cert: &Path, key: &Path, ca: &Path| {
        let port = free_port();
        let own = format!("127.0.0.1:{port}");
        let out = common::checked(
            Command::new(common::db_bin()).args(["node", "--listen", &own, "--seed", &own]),
        )
        .args([
            "--tls-cert",
            &s(cert),
            "--tls-key",
            &s(key),
            "--tls-ca",
            &s(ca),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("db runs");
        assert!(!out.status.success(), "the node started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = start(&missing, &key, &ca.pem);
    assert!(e.contains("missing.pem"), "{e}");
    let e = start(&cert, &garbage, &ca.pem);
    assert!(
        e.contains("garbage.pem") && e.contains("private key"),
        "{e}"
    );
    let e = start(&cert, &key, &garbage);
    assert!(e.contains("garbage.pem"), "{e}");
    let e = start(&cert, &other_key, &ca.pem);
    assert!(e.contains("m.key") && e.contains("n.crt"), "{e}");
    let e = start(&foreign_cert, &foreign_key, &ca.pem);
    assert!(e.contains("does not chain to the CA"), "{e}");
    // --tls-cert alone is refused by the flags.
    let out = Command::new(common::db_bin())
        .args(["node", "--listen", "127.0.0.1:1", "--seed", "127.0.0.1:1"])
        .args(["--tls-cert", &s(&cert)])
        .stdin(Stdio::null())
        .output()
        .expect("db runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

/// Runs `cmd` to completion within 30 s (killed past that): its standard
/// output, trimmed.
fn bounded_output(mut cmd: Command) -> String {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let out = common::output_within(child, Duration::from_secs(30));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Stops, if still running, the TLS nodes on `ports` with SHUTDOWN over
/// TLS when dropped (the CA file `.1` exists once `db local` made it).
struct TlsShutdownOnDrop(Vec<u16>, PathBuf);

impl Drop for TlsShutdownOnDrop {
    fn drop(&mut self) {
        let Ok(Some(tls)) = (ClientArgs {
            tls: true,
            tls_ca: Some(self.1.clone()),
            tls_cert: None,
            tls_key: None,
        })
        .load() else {
            return;
        };
        for &p in &self.0 {
            let _ = call(&format!("127.0.0.1:{p}"), &tls, &["SHUTDOWN"]);
        }
    }
}

#[test]
fn db_local_tls_serves_over_tls_only_and_says_how_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_block(2);
    let ports = [base, base + 1];
    let ca = dir
        .path()
        .join(format!("distro-db-local-{base}-tls"))
        .join("ca.pem");
    let err = dir.path().join("stderr");
    let mut cmd = Command::new(common::db_bin());
    cmd.args(["local", "--tls", "--nodes", "2", "--base-port"])
        .arg(base.to_string())
        .env("TMPDIR", dir.path())
        .env_remove("DISTRO_DB_USER")
        .env_remove("DISTRO_DB_PASSWORD")
        .stderr(std::fs::File::create(&err).unwrap());
    let mut repl = common::ReplProc::spawn(cmd);
    let _guard = TlsShutdownOnDrop(ports.to_vec(), ca.clone());
    // The REPL talks TLS to its node, which replicates to the other over TLS.
    assert_eq!(repl.ask("SET greeting \"over tls\""), "OK");
    assert_eq!(repl.ask("GET greeting"), "\"over tls\"");
    let tls = client_tls(&ca, None);
    for p in ports {
        let addr = format!("127.0.0.1:{p}");
        assert_eq!(
            call(&addr, &tls, &["GET", "greeting"]),
            Some(bulk("over tls"))
        );
        // A plain-text client is refused, and nothing it sent runs.
        let mut plain = Client::connect_via(&addr, Duration::from_secs(10), None).expect("tcp");
        match plain.call(&["SET", "greeting", "plain"]) {
            Ok(Frame::Error(e)) => assert!(e.contains("TLS connections only"), "{e}"),
            other => panic!("a plain-text client was answered {other:?}"),
        }
    }
    assert_eq!(
        call(&format!("127.0.0.1:{base}"), &tls, &["GET", "greeting"]),
        Some(bulk("over tls"))
    );

    // db local printed the redis-cli line; it works as printed.
    // The line of db local's standard error that starts with `prefix`.
    let printed = |prefix: &str| {
        let text = common::read(&err);
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{text}"))
    };
    let line = printed("redis-cli: ");
    assert_eq!(
        line,
        format!("redis-cli --tls --cacert {} -p {base}", ca.display())
    );
    if have("redis-cli", "--version") {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut cli = Command::new(words[0]);
        cli.args(&words[1..]).args(["GET", "greeting"]);
        assert_eq!(bounded_output(cli), "over tls");
    }

    // EXIT leaves the cluster running and says how to reconnect, over TLS.
    repl.send("EXIT");
    assert!(repl.wait_exit(Duration::from_secs(10)).success());
    let reconnect = printed("reconnect: ");
    assert!(
        reconnect.ends_with(&format!(
            "repl --connect 127.0.0.1:{} --tls-ca {}",
            base + 1,
            ca.display()
        )),
        "{reconnect}"
    );
    let mut cmd = Command::new(common::db_bin());
    cmd.args(["repl", "--connect", &format!("127.0.0.1:{}", base + 1)])
        .arg("--tls-ca")
        .arg(&ca);
    let mut again = common::ReplProc::spawn(cmd);
    assert_eq!(again.ask("GET greeting"), "\"over tls\"");
    assert!(again.ask("QUIT").starts_with("OK"));
    again.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(20), "both nodes to stop", || {
        ports.iter().all(|&p| !common::listening(p))
    });
}
