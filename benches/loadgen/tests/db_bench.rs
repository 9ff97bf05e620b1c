//! The `db-bench` binary against real servers on loopback: a distro-db node
//! started in this process (plain and TLS-only), and Valkey (a primary and a
//! replica with `appendfsync always`) for `--wait-aof`. Each run is bounded
//! (`--duration`, and a timeout around the process).

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_db::config::Config;
use distro_db::node::Node;

const BENCH: &str = env!("CARGO_BIN_EXE_db-bench");

/// A port free for TCP and UDP, below the ephemeral range.
fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 20000 + (rand::random::<u16>() % 12000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port found");
}

/// Polls `cond` until it holds, for at most `within`.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Runs db-bench with `args` (plus `--quiet --warmup 0`), killed after 60 s.
fn bench(args: &[&str]) -> Output {
    let child = Command::new(BENCH)
        .args(args)
        .args(["--quiet", "--warmup", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("db-bench starts");
    output_within(child, Duration::from_secs(60))
}

fn output_within(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("db-bench still running after {within:?}");
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).expect("JSON")
}

/// One in-memory distro-db node (N=R=W=1) on its own runtime.
struct TestNode {
    rt: Option<tokio::runtime::Runtime>,
    node: Arc<Node>,
    addr: String,
}

impl TestNode {
    fn start(tls: Option<distro_db::tls::TlsConfig>, bench_tls: &[&str]) -> TestNode {
        let port = free_port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = Config::new(listen);
        config.n = 1;
        config.r = 1;
        config.w = 1;
        config.cluster_id = format!("db-bench-test-{port}");
        config.tls = tls;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let node = rt
            .block_on(distro_db::node::start(config))
            .expect("node starts");
        let addr = listen.to_string();
        // Ready when a SET goes through (the layout is settled).
        wait_until(Duration::from_secs(60), "the node to take writes", || {
            let mut args = vec!["--target", addr.as_str(), "-c", "1", "-n", "1"];
            args.extend_from_slice(&["--duration", "2"]);
            args.extend_from_slice(bench_tls);
            bench(&args).status.success()
        });
        TestNode {
            rt: Some(rt),
            node,
            addr,
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.block_on(distro_db::node::stop(&self.node));
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

#[test]
fn loads_a_node_and_reports_what_it_measured() {
    let node = TestNode::start(None, &[]);
    let dir = tempfile::tempdir().unwrap();
    let fill = dir.path().join("fill.json");
    let out = bench(&[
        "--target",
        &node.addr,
        "--workload",
        "fill",
        "-r",
        "200",
        "-c",
        "4",
        "-P",
        "8",
        "--duration",
        "30",
        "--json",
        fill.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&fill);
    assert_eq!(r["requests"], 200);
    assert_eq!(r["ok"], 200);
    assert_eq!(r["errors"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("throughput"));

    // Every key was written: no GET of the same keyspace finds nothing.
    let get = dir.path().join("get.json");
    let out = bench(&[
        "--target",
        &node.addr,
        "--workload",
        "get",
        "-r",
        "200",
        "-c",
        "3",
        "-n",
        "300",
        "--duration",
        "30",
        "--json",
        get.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&get);
    assert_eq!(r["requests"], 300);
    assert_eq!(r["nil"], 0);
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    // As a cluster client: the node's one-shard view names itself as the master.
    let cluster = dir.path().join("cluster.json");
    let out = bench(&[
        "--target",
        &node.addr,
        "--cluster",
        "--workload",
        "get",
        "-r",
        "200",
        "-c",
        "2",
        "-P",
        "4",
        "-n",
        "100",
        "--duration",
        "30",
        "--json",
        cluster.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&cluster);
    assert_eq!(
        r["params"]["cluster_masters"],
        serde_json::json!([node.addr])
    );
    assert_eq!(r["requests"], 100);
    assert_eq!(r["nil"], 0);

    // A server without WAITAOF: every request is an error reply, and a run
    // in which nothing succeeded fails.
    let out = bench(&[
        "--target",
        &node.addr,
        "--wait-aof",
        "1,1",
        "-c",
        "1",
        "-n",
        "5",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("errors       5")
            || String::from_utf8_lossy(&out.stdout).contains("first error"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn tls_targets_need_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = distro_db::local::tls::make(dir.path()).expect("certificates");
    let tls = distro_db::tls::TlsConfig {
        cert: certs.cert.clone(),
        key: certs.key.clone(),
        ca: certs.ca.clone(),
        client_auth: distro_db::tls::ClientAuth::None,
    };
    let ca = certs.ca.to_str().unwrap().to_string();
    let node = TestNode::start(Some(tls), &["--tls", "--tls-ca", &ca]);
    let out = bench(&[
        "--target",
        &node.addr,
        "--tls",
        "--tls-ca",
        &ca,
        "-c",
        "2",
        "-n",
        "200",
        "--duration",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --tls the node refuses the plain-text connection, and db-bench says which target.
    let out = bench(&[
        "--target",
        &node.addr,
        "-c",
        "1",
        "-n",
        "10",
        "--duration",
        "5",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&node.addr), "{stderr}");
}

/// A valkey-server process, stopped on drop.
struct Valkey(Child);

impl Drop for Valkey {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn valkey(port: u16, dir: &Path, extra: &[String]) -> Valkey {
    let child = Command::new("valkey-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valkey-server starts");
    Valkey(child)
}

/// `INFO replication` of the server at `port`, if it answers.
fn info_replication(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")
        .ok()?;
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn wait_aof_counts_a_set_once_a_replica_fsynced_it() {
    let found = Command::new("valkey-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "valkey-server is not installed (.ci/run installs it)"
        );
        eprintln!("skipped: valkey-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let _primary = valkey(p1, &dir.path().join("a"), &[]);
    let _replica = valkey(
        p2,
        &dir.path().join("b"),
        &["--replicaof".into(), "127.0.0.1".into(), p1.to_string()],
    );
    wait_until(Duration::from_secs(30), "the replica to connect", || {
        info_replication(p1).is_some_and(|i| i.contains("connected_slaves:1"))
            && info_replication(p2).is_some_and(|i| i.contains("master_link_status:up"))
    });
    let target = format!("127.0.0.1:{p1}");
    let report = dir.path().join("waitaof.json");
    let out = bench(&[
        "--target",
        &target,
        "--wait-aof",
        "1,1",
        "-c",
        "8",
        "-P",
        "2",
        "-n",
        "200",
        "--duration",
        "40",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&report);
    assert_eq!(r["requests"], 200, "{r}");
    assert_eq!(r["ok"], 200, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["params"]["wait_aof"]["replicas"], 1);
    // Every SET reached the replica too.
    let dbsize = |port: u16| {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    assert_eq!(dbsize(p2), dbsize(p1));

    // Asking for more replicas than there are: WAITAOF answers fewer, each
    // request is an error, and the run fails.
    let out = bench(&[
        "--target",
        &target,
        "--wait-aof",
        "1,2,20",
        "-c",
        "1",
        "-n",
        "3",
        "--duration",
        "20",
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("asked 1 and 2"), "{stdout}");
}
