//! Multi-process: the peer door. Nodes of a cluster prove to each other that
//! they hold the cluster secret before any peer request is read; a node with
//! another secret is never listed and never joins; a raw peer connection
//! that skips the handshake is closed unanswered; a node without a secret
//! refuses a non-loopback address unless told `--insecure-peers`; a trickled
//! peer frame is cut off; and random or mutated bytes on the port, while
//! clients write, leave the node serving with nothing lost. A second process
//! started under a live node's id (another data directory) is never routed
//! to and stops; a new disk under the id of a dead node is taken in.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, bulk, db_bin, free_port, live_nodes, wait_until};
use distro_db::resp::Frame;
use distro_db::rpc::frame::{self, PREAMBLE};
use distro_db::rpc::{Request, Response};

fn secret_file(dir: &std::path::Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.display().to_string()
}

#[test]
fn a_node_with_another_secret_never_joins_and_raw_peer_requests_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let ours = secret_file(keys.path(), "ours", "correct horse battery staple");
    let c = Cluster::start_with(3, &["--cluster-secret-file", &ours]);
    assert_eq!(c.cmd(0, &["SET", "k", "v"]), Frame::ok());
    assert_eq!(c.cmd(2, &["GET", "k"]), bulk("v"));

    // A stranger: same cluster id, seeds and loopback, another secret.
    let theirs = secret_file(keys.path(), "theirs", "another secret");
    let port = free_port();
    let log = c.dir.path().join("stranger.log");
    let mut stranger = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--cluster-id", &c.cluster_id])
            .args(["--seed", &c.nodes[0].addr()])
            .args(["--cluster-secret-file", &theirs]),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .expect("db starts");
    let stranger_id = format!("node-{port}");
    // It runs, but for a while (several gossip rounds and join retries) no
    // member lists it, and the layout never takes it in.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        for i in 0..3 {
            let listed = match c.cmd(i, &["NODES"]).text() {
                Some(t) => t.contains(&stranger_id),
                None => panic!("NODES is text"),
            };
            assert!(!listed, "node {i} lists the stranger");
            let ring = c.cmd(i, &["RING"]).text().expect("RING is text");
            assert!(
                !ring.contains(&stranger_id),
                "the layout took the stranger in: {ring}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        matches!(stranger.try_wait(), Ok(None)),
        "the stranger still runs"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();

    // A raw peer connection that sends a request right after the preamble
    // (no handshake): the request is taken for the handshake, the tag is
    // wrong, and the connection closes without an answer. The node runs on.
    let mut s = TcpStream::connect(c.nodes[1].addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = PREAMBLE.to_vec();
    let shutdown = Request::Shutdown;
    for id in 1..=8 {
        frame::encode_into(&mut out, None, id, &shutdown).unwrap();
    }
    s.write_all(&out).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    // At most the server's nonce and proof; never a framed answer.
    assert!(got.len() <= 64, "got {} bytes", got.len());
    assert!(frame::decode::<Response>(&got).is_err());
    wait_until(Duration::from_secs(5), "the node to keep serving", || {
        c.client(1).call(&["GET", "k"]).ok() == Some(bulk("v"))
    });
    assert_eq!(live_nodes(&c.nodes[0].addr()).len(), 3);
    let text = c.nodes[1].log_text();
    assert!(
        text.contains("refusing a peer connection"),
        "the refusal is logged"
    );
}

#[test]
fn without_a_secret_a_node_serves_peers_on_loopback_only() {
    let port = free_port();
    let own = format!("127.0.0.1:{port}");
    let out = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &format!("0.0.0.0:{port}")])
            .args(["--advertise", &own, "--seed", &own]),
    )
    .stdin(Stdio::null())
    .output()
    .expect("db runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a cluster secret") && err.contains("--insecure-peers"),
        "{err}"
    );
    // An empty secret file is refused too, naming the problem.
    let dir = tempfile::tempdir().unwrap();
    let empty = secret_file(dir.path(), "empty", "");
    let out = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &own, "--seed", &own])
            .args(["--cluster-secret-file", &empty]),
    )
    .stdin(Stdio::null())
    .output()
    .expect("db runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn a_peer_frame_trickled_too_slowly_is_cut_off() {
    let keys = tempfile::tempdir().unwrap();
    let secret = "trickle secret";
    let file = secret_file(keys.path(), "s", secret);
    let c = Cluster::start_with(1, &["--cluster-secret-file", &file]);
    let key = distro_db::rpc::auth::PeerKey::derive(secret.as_bytes(), &c.cluster_id);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = c.nodes[0].addr();
    let closed_after = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&PREAMBLE).await.unwrap();
        distro_db::rpc::auth::client(&mut s, &key)
            .await
            .expect("authenticated");
        // A frame announced at 1,000 bytes, of which 10 come, then one
        // byte every 2 s: it is never finished.
        s.write_all(&1000u32.to_be_bytes()).await.unwrap();
        s.write_all(&[0u8; 10]).await.unwrap();
        let started = std::time::Instant::now();
        let mut byte = [0u8; 1];
        loop {
            assert!(started.elapsed() < Duration::from_secs(60), "never cut off");
            tokio::select! {
                r = s.read(&mut byte) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        return started.elapsed();
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    if s.write_all(&[0u8]).await.is_err() {
                        return started.elapsed();
                    }
                }
            }
        }
    });
    assert!(
        closed_after >= Duration::from_secs(8) && closed_after < Duration::from_secs(30),
        "closed after {closed_after:?}"
    );
    assert!(
        c.nodes[0]
            .log_text()
            .contains("a peer frame did not arrive in time")
    );
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn random_and_mutated_bytes_on_the_port_lose_nothing() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("DDB_NOISE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("noise seed {seed} (replay: DDB_NOISE_SEED={seed})");
    let keys = tempfile::tempdir().unwrap();
    let file = secret_file(keys.path(), "s", "noise secret");
    let c = Cluster::start_with(3, &["--cluster-secret-file", &file]);
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr()).collect();
    // A client writes unique keys the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (addrs[0].clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut client = distro_db::client::Client::connect(&addr).expect("connect");
            for i in 0..100_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let key = format!("noise:{i}");
                if client.call(&["SET", &key, "v"]).ok() == Some(Frame::ok()) {
                    acked.push(key);
                }
            }
            acked
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Its key is 6 bytes away from any `noise:N`, so no damage (at most 3
    // bytes) turns it into an overwrite of an acknowledged key ("noise:x"
    // once became "noise:4" and failed the test).
    let valid_cmd = Frame::command(["SET", "other:x", "y"]).to_bytes();
    for round in 0..300 {
        let addr = &addrs[rng.random_range(0..addrs.len())];
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut junk: Vec<u8> = match round % 4 {
            // Random bytes (a first byte of 0xD7 goes to the peer door).
            0 => (0..rng.random_range(1..2048))
                .map(|_| rng.random())
                .collect(),
            1 => {
                let mut b = PREAMBLE.to_vec();
                b.extend((0..rng.random_range(0..256)).map(|_| rng.random::<u8>()));
                b
            }
            // A valid command, damaged.
            _ => {
                let mut b = valid_cmd.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
                b
            }
        };
        if round % 7 == 0 {
            junk.truncate(rng.random_range(0..=junk.len()));
        }
        let _ = s.write_all(&junk);
        let _ = s.read(&mut [0u8; 256]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    for i in 0..3 {
        assert_eq!(
            c.cmd(i, &["PING"]),
            Frame::Simple("PONG".into()),
            "node {i} serves"
        );
    }
    assert_eq!(live_nodes(&addrs[0]).len(), 3);
    let mut client = c.client(2);
    for key in &acked {
        assert_eq!(
            client.call(&["GET", key, "R=2"]).unwrap(),
            bulk("v"),
            "{key} lost"
        );
    }
}

#[test]
fn a_second_process_under_a_live_nodes_id_is_refused_and_a_new_disk_is_not() {
    let mut c = Cluster::start_durable(3, &[]);
    let victim = c.nodes[1].id.clone();
    let real = c.nodes[1].addr();
    assert_eq!(c.cmd(0, &["SET", "before", "v", "W=3"]), Frame::ok());
    // A second process claims node 1's id: another data directory, the same
    // cluster id and seeds.
    let port = free_port();
    let log = c.dir.path().join("impostor.log");
    let mut impostor = Reaped(
        common::checked(
            Command::new(db_bin())
                .args(["node", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--node-id", &victim])
                .args(["--cluster-id", &c.cluster_id])
                .args(["--seed", &c.nodes[0].addr()])
                .args([
                    "--data-dir",
                    &c.dir.path().join("impostor").display().to_string(),
                ]),
        )
        .env("RUST_LOG", "info,chitchat=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("db starts"),
    );
    // While it runs, nothing is routed to it: writes that need every
    // owner reach the real node 1, and NODES shows node 1 where it is.
    let started = std::time::Instant::now();
    let mut exited = None;
    while started.elapsed() < Duration::from_secs(90) {
        if let Some(status) = impostor.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        for i in [0, 2] {
            let nodes = c.cmd(i, &["NODES"]).text().expect("NODES is text");
            assert!(
                !nodes.contains(&format!(":{port}")),
                "node {i} routes to the impostor: {nodes}"
            );
        }
        let key = format!("during-{}", started.elapsed().as_millis());
        assert_eq!(c.cmd(2, &["SET", &key, "v", "W=3"]), Frame::ok());
        assert_eq!(c.cmd(1, &["GET", &key, "R=1"]), bulk("v"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        exited.is_some(),
        "the second process under {victim}'s id still runs: {text}"
    );
    assert!(
        text.contains("with another data directory") && text.contains("stops"),
        "{text}"
    );
    assert!(
        c.nodes[1].log_text().contains("claims the id of node")
            || c.nodes[0].log_text().contains("claims the id of node"),
        "the real nodes log the impostor"
    );
    assert_eq!(c.cmd(1, &["GET", "before", "R=1"]), bulk("v"));
    assert_eq!(live_nodes(&real).len(), 3);

    // A new disk under a node's id, once its old process is gone, is
    // taken in: node 1 dies, its data directory is wiped, and it comes back.
    c.nodes[1].sigkill();
    std::fs::remove_dir_all(c.data_dir(c.nodes[1].port)).unwrap();
    c.restart(1);
    c.wait_converged();
    wait_until(
        Duration::from_secs(60),
        "writes to every owner again",
        || c.cmd(0, &["SET", "after", "v", "W=3"]) == Frame::ok(),
    );
    assert_eq!(c.cmd(1, &["GET", "after", "R=1"]), bulk("v"));
}

/// A child process killed and reaped when dropped (also when a test fails).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
