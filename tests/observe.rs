//! The metrics port (`--metrics`) of real node processes on loopback:
//! Prometheus counters rise with the operations done, `/ready` is false
//! before the node knows the ring and true after, and the status page,
//! rendered by headless Chromium, shows the members and a killed one as down.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use distro_db::resp::Frame;

/// `GET path` on `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&sock(addr), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// The metrics address node `i` reports in STATUS (it was started with
/// `--metrics 127.0.0.1:0`).
fn metrics_addr(c: &Cluster, i: usize) -> String {
    let reply = c.cmd(i, &["STATUS"]);
    let text = reply
        .text()
        .unwrap_or_else(|| panic!("STATUS is not text: {reply:?}"));
    text.lines()
        .find_map(|l| l.strip_prefix("metrics: http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics line in STATUS:\n{text}"))
        .to_string()
}

/// One scrape: every sample, keyed by its name and labels as written.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "not a complete OpenMetrics text");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("a sample line");
            (k.to_string(), v.parse::<f64>().expect("a number"))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Sum of every sample whose key starts with `prefix`.
fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn counters_rise_with_the_operations_done() {
    let mut c = Cluster::start_durable(3, &["--metrics", "127.0.0.1:0"]);
    let addrs: Vec<String> = (0..3).map(|i| metrics_addr(&c, i)).collect();
    let before: Vec<_> = addrs.iter().map(|a| scrape(a)).collect();
    let b0 = &before[0];
    assert_eq!(get(b0, "distro_db_ready"), 1.0);
    assert_eq!(get(b0, "distro_db_members{state=\"live\"}"), 3.0);
    assert_eq!(get(b0, "distro_db_members{state=\"down\"}"), 0.0);
    assert_eq!(
        get(b0, "distro_db_partitions_owned"),
        1024.0,
        "N=3 on 3 nodes"
    );

    // docs/operations.md lists every metric a node exports.
    let docs = read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"));
    let (_, text) = http_get(&addrs[0], "/metrics").unwrap();
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = family.split_once(' ').unwrap();
        let listed = if kind == "counter" {
            format!("`{name}_total`")
        } else {
            format!("`{name}`")
        };
        assert!(
            docs.contains(&listed),
            "{listed} is not in docs/operations.md"
        );
    }

    let mut client = c.client(0);
    for i in 0..20 {
        let k = format!("k{i}");
        assert_eq!(client.call(&["SET", &k, "v"]).unwrap(), Frame::ok());
    }
    for i in 0..15 {
        let k = format!("k{i}");
        assert_eq!(client.call(&["GET", &k]).unwrap(), bulk("v"));
    }
    // An error answered by a known command.
    assert!(matches!(
        client.call(&["INCR", "k0"]).unwrap(),
        Frame::Error(_)
    ));

    let after = scrape(&addrs[0]);
    let delta = |key: &str| get(&after, key) - get(b0, key);
    assert_eq!(
        delta("distro_db_requests_total{command=\"set\",outcome=\"ok\"}"),
        20.0
    );
    assert_eq!(
        delta("distro_db_requests_total{command=\"get\",outcome=\"ok\"}"),
        15.0
    );
    assert_eq!(
        delta("distro_db_requests_total{command=\"incr\",outcome=\"error\"}"),
        1.0
    );
    // INCR is a write (of a counter) that the replica refused: 21 writes.
    assert_eq!(
        delta("distro_db_coordinator_duration_seconds_count{op=\"write\"}"),
        21.0
    );
    assert_eq!(
        delta("distro_db_coordinator_duration_seconds_count{op=\"read\"}"),
        15.0
    );
    assert!(delta("distro_db_coordinator_duration_seconds_sum{op=\"write\"}") > 0.0);
    assert_eq!(
        get(
            &after,
            "distro_db_coordinator_duration_seconds_bucket{le=\"+Inf\",op=\"write\"}"
        ),
        get(
            &after,
            "distro_db_coordinator_duration_seconds_count{op=\"write\"}"
        ),
        "the +Inf bucket holds every observation"
    );
    wait_until(
        Duration::from_secs(10),
        "one client connection open",
        || get(&scrape(&addrs[0]), "distro_db_client_connections") == 1.0,
    );
    assert!(delta("distro_db_fsyncs_total{store=\"data\"}") >= 1.0);
    assert!(delta("distro_db_fsync_duration_seconds_count{store=\"data\"}") >= 1.0);
    assert!(delta("distro_db_group_commit_batch_size_count{store=\"data\"}") >= 1.0);
    // Each write was made by one actor, whichever node coordinated it.
    let acked: f64 = addrs
        .iter()
        .zip(&before)
        .map(|(a, b)| {
            get(&scrape(a), "distro_db_quorum_writes_total")
                - get(b, "distro_db_quorum_writes_total")
        })
        .sum();
    assert_eq!(acked, 20.0);
    // Every node holds every key (N=3), once replication past W is done.
    wait_until(
        Duration::from_secs(30),
        "every replica to hold 20 keys",
        || {
            addrs
                .iter()
                .all(|a| get(&scrape(a), "distro_db_storage_keys{store=\"data\"}") == 20.0)
        },
    );

    // A node down: W=3 cannot be met, the replica that missed the write
    // gets a hint, and the hint is delivered when it is back.
    c.nodes[2].sigkill();
    wait_until(Duration::from_secs(30), "node 0 to see node 2 down", || {
        get(&scrape(&addrs[0]), "distro_db_members{state=\"down\"}") == 1.0
    });
    let reply = client.call(&["SET", "late", "v", "W=3"]).unwrap();
    assert!(matches!(reply, Frame::Error(_)), "{reply:?}");
    let down = scrape(&addrs[0]);
    assert!(
        sum(&down, "distro_db_quorum_failures_total{op=\"write\"") >= 1.0,
        "a missed W counted: {:?}",
        down.iter()
            .filter(|(k, _)| k.contains("quorum_failures"))
            .collect::<Vec<_>>()
    );
    assert!(
        get(&down, "distro_db_ready") == 1.0,
        "a peer down leaves this node ready"
    );
    wait_until(Duration::from_secs(30), "a hint for node 2", || {
        get(&scrape(&addrs[0]), "distro_db_hints_pending") >= 1.0
    });
    let delivered = get(&scrape(&addrs[0]), "distro_db_hints_delivered_total");
    c.restart(2);
    wait_until(Duration::from_secs(60), "the hints to be delivered", || {
        let m = scrape(&addrs[0]);
        get(&m, "distro_db_hints_pending") == 0.0
            && get(&m, "distro_db_hints_delivered_total") > delivered
    });
}

#[test]
fn ready_only_once_the_ring_is_known() {
    // A node alone waits a little for its seeds before it makes the ring
    // of itself: /health answers at once, /ready only after.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mport = free_port();
    let log = dir.path().join("node.log");
    let mut node = NodeProc {
        port,
        id: format!("node-{port}"),
        child: Command::new(db_bin())
            .args(["node", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--seed", &format!("127.0.0.1:{port}")])
            .args(["--cluster-id", &format!("ready-{}", rand::random::<u64>())])
            .args(["--metrics", &format!("127.0.0.1:{mport}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info,chitchat=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("db starts"),
        log,
    };
    let maddr = format!("127.0.0.1:{mport}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answers: Vec<(u16, String)> = Vec::new();
    loop {
        assert!(node.running(), "the node exited:\n{}", node.log_text());
        assert!(
            Instant::now() < deadline,
            "/ready never answered 200: {answers:?}"
        );
        if let Ok(a) = http_get(&maddr, "/ready") {
            let ok = a.0 == 200;
            answers.push(a);
            if ok {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (first, why) = &answers[0];
    assert_eq!(*first, 503, "ready before the ring was known: {answers:?}");
    assert!(why.starts_with("not ready: "), "{why}");
    assert!(
        answers[..answers.len() - 1]
            .iter()
            .all(|(s, b)| *s == 503
                && (b.contains("opening the stores") || b.contains("no layout yet"))),
        "{answers:?}"
    );
    assert_eq!(http_get(&maddr, "/health").unwrap(), (200, "ok\n".into()));
    let m = scrape(&maddr);
    assert_eq!(get(&m, "distro_db_ready"), 1.0);
    assert!(get(&m, "distro_db_layout_version") >= 1.0);
    let (status, body) = http_get(&maddr, "/nothing").unwrap();
    assert_eq!(status, 404, "{body}");
    // The page and its document.
    let (status, page) = http_get(&maddr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("/status.json"));
    let (status, doc) = http_get(&maddr, "/status.json").unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("JSON");
    assert_eq!(doc["ready"], true);
    assert_eq!(doc["members"][0]["id"], node.id.as_str());
    assert_eq!(doc["members"][0]["state"], "live");
    node.signal("TERM");
}

/// The page as headless Chromium renders it (after its script ran).
fn rendered(url: &str, profile: &std::path::Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_members_and_a_killed_one_down() {
    if !have("chromium", "--version") {
        return;
    }
    let mut c = Cluster::start_with(3, &["--metrics", "127.0.0.1:0"]);
    let url = format!("http://{}/", metrics_addr(&c, 0));
    let profile = tempfile::tempdir().unwrap();
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone()).collect();
    let row = |i: usize, state: &str| format!("data-node=\"{}\" data-state=\"{state}\"", ids[i]);
    let dom = rendered(&url, profile.path());
    for i in 0..3 {
        assert!(
            dom.contains(&row(i, "live")),
            "node {i} not shown live:\n{dom}"
        );
    }
    assert!(dom.contains("ring share"), "{dom}");
    assert!(
        dom.contains("33.3% (1024)"),
        "each node's share of the copies:\n{dom}"
    );
    c.nodes[2].sigkill();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dom = String::new();
    while Instant::now() < deadline {
        dom = rendered(&url, profile.path());
        if dom.contains(&row(2, "down")) {
            break;
        }
    }
    assert!(
        dom.contains(&row(2, "down")),
        "the killed node not shown down:\n{dom}"
    );
    assert!(
        dom.contains(&row(0, "live")) && dom.contains(&row(1, "live")),
        "{dom}"
    );
}
