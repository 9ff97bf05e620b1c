//! Sloppy quorum and hinted handoff across real processes: with an owner
//! down, a write still reaches W through a stand-in that keeps a durable
//! hint, which survives the stand-in's own restart and reaches the owner
//! once it is back, with no read involved. Hint storage is capped: past
//! `--max-hints-per-node` new hints are refused and counted, writes are
//! still acknowledged, and anti-entropy brings the owner the rest.

mod common;

use std::time::Duration;

use common::{Cluster, live_nodes, wait_until};
use distro_db::resp::Frame;

fn text(f: Frame) -> String {
    f.text()
        .unwrap_or_else(|| panic!("expected text, got {f:?}"))
}

/// Owner node ids of `key`, in preference order.
fn owners(c: &Cluster, key: &str) -> Vec<String> {
    text(c.cmd(0, &["OWNERS", key]))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

fn index_of(c: &Cluster, id: &str) -> usize {
    c.nodes.iter().position(|n| n.id == id).expect("node id")
}

#[test]
fn a_stand_in_keeps_a_durable_hint_and_hands_it_off() {
    let mut c = Cluster::start_durable(4, &[]);
    let key = "handoff-key";
    let own = owners(&c, key);
    assert_eq!(own.len(), 3);
    let spare = c
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .find(|id| !own.contains(id))
        .unwrap();
    let (coord, victim) = (index_of(&c, &own[0]), index_of(&c, &own[1]));
    let stand_in = index_of(&c, &spare);
    assert_eq!(c.cmd(coord, &["SET", key, "before", "W=3"]), Frame::ok());

    c.nodes[victim].sigkill();
    let (ca, sa, vid) = (
        c.nodes[coord].addr(),
        c.nodes[stand_in].addr(),
        own[1].clone(),
    );
    wait_until(
        Duration::from_secs(20),
        "the owner to be marked down",
        || !live_nodes(&ca).contains(&vid) && !live_nodes(&sa).contains(&vid),
    );
    // W=3 with one owner down: the stand-in's hinted copy counts.
    assert_eq!(c.cmd(coord, &["SET", key, "during", "W=3"]), Frame::ok());
    let report = text(c.cmd(coord, &["REPLICAS", key]));
    assert!(
        report.contains(&format!("{spare} (stand-in for {vid})")),
        "{report}"
    );
    assert!(text(c.cmd(stand_in, &["NODES"])).contains("(1 hint pending here)"));

    // The hint is durable: it survives the stand-in's own crash.
    c.nodes[stand_in].sigkill();
    c.restart(stand_in);
    assert!(text(c.cmd(stand_in, &["STATUS"])).contains(&format!("hints pending: 1 ({vid}=1)")));

    // The owner comes back; the hint is delivered and deleted, no read needed.
    c.restart(victim);
    wait_until(Duration::from_secs(30), "the hint to be handed off", || {
        text(c.cmd(stand_in, &["STATUS"])).contains("hints pending: 0")
    });
    let report = text(c.cmd(coord, &["REPLICAS", key]));
    let victim_line = report
        .lines()
        .find(|l| l.starts_with(&format!("{vid} (owner")))
        .unwrap();
    assert!(victim_line.contains("\"during\""), "{report}");
    assert!(!report.contains("stand-in"), "{report}");
}

#[test]
fn replicas_shows_each_owner_copy() {
    let c = Cluster::start(3);
    assert_eq!(c.cmd(0, &["SET", "k", "v", "W=3"]), Frame::ok());
    let report = text(c.cmd(1, &["REPLICAS", "k"]));
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 3, "{report}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.contains(&format!("(owner {}, live)", i + 1)), "{l}");
        assert!(l.contains("\"v\""), "{l}");
    }
    // The same version everywhere: identical clocks.
    let clocks: Vec<&str> = lines
        .iter()
        .map(|l| l.split("clock=").nth(1).unwrap())
        .collect();
    assert!(clocks.windows(2).all(|w| w[0] == w[1]), "{report}");
    assert!(text(c.cmd(1, &["REPLICAS", "missing"])).contains("(none)"));
}

#[test]
fn anti_entropy_refills_a_wiped_node_with_no_reads_and_no_hints() {
    let mut c = Cluster::start_durable(3, &["--aae-interval-ms", "300"]);
    for i in 0..60 {
        assert_eq!(
            c.cmd(i % 3, &["SET", &format!("ae-{i}"), &format!("v{i}"), "W=3"]),
            Frame::ok()
        );
    }
    // Wipe node 2's data directory while it is down: no write happens
    // meanwhile, so no hint exists, and nobody reads afterwards.
    c.nodes[2].sigkill();
    let dir = c.data_dir(c.nodes[2].port);
    std::fs::remove_dir_all(&dir).expect("wipe");
    c.restart(2);
    c.wait_converged();
    wait_until(
        Duration::from_secs(60),
        "anti-entropy to refill the wiped node",
        || text(c.cmd(2, &["STATUS"])).contains("(60 keys,"),
    );
    let status = text(c.cmd(2, &["STATUS"]));
    assert!(status.contains("hints pending: 0"), "{status}");
    // Every replica holds the same version of every key.
    for i in (0..60).step_by(7) {
        let report = text(c.cmd(0, &["REPLICAS", &format!("ae-{i}")]));
        let clocks: Vec<&str> = report
            .lines()
            .map(|l| l.split("clock=").nth(1).unwrap_or(""))
            .collect();
        assert_eq!(clocks.len(), 3, "{report}");
        assert!(clocks.windows(2).all(|w| w[0] == w[1]), "{report}");
    }
}

#[test]
fn read_repair_alone_refills_what_is_read() {
    // Every read asks every replica, so each read repairs the wiped node.
    let mut c = Cluster::start_durable(3, &["--aae-interval-ms", "0", "--read-repair-chance", "1"]);
    for i in 0..20 {
        assert_eq!(
            c.cmd(0, &["SET", &format!("rr-{i}"), "v", "W=3"]),
            Frame::ok()
        );
    }
    c.nodes[2].sigkill();
    std::fs::remove_dir_all(c.data_dir(c.nodes[2].port)).expect("wipe");
    c.restart(2);
    c.wait_converged();
    assert!(text(c.cmd(2, &["STATUS"])).contains("(0 keys,"));
    // Reading half the keys repairs exactly those on the wiped node.
    for i in 0..10 {
        assert_eq!(c.cmd(1, &["GET", &format!("rr-{i}")]), common::bulk("v"));
    }
    wait_until(
        Duration::from_secs(20),
        "read repair of the keys read",
        || text(c.cmd(2, &["STATUS"])).contains("(10 keys,"),
    );
    let status = text(c.cmd(2, &["STATUS"]));
    assert!(status.contains("0 keys repaired"), "{status}");
}

/// The number after `prefix` on the STATUS line that starts with it.
fn figure(status: &str, prefix: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {status}"));
    let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no figure in `{line}`"))
}

/// Hints `status` says are pending for `owner` (0 when none).
fn pending_for(status: &str, owner: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("hints pending: "))
        .expect("hints pending line");
    line.split_once(&format!("{owner}="))
        .map_or(0, |(_, rest)| figure(rest, ""))
}

/// Sends SIGCONT to a stopped node when dropped, so that a failing
/// assertion never leaves a process stopped.
struct Resume<'a>(&'a common::NodeProc);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

#[test]
fn hint_storage_is_capped_per_node_and_writes_still_succeed() {
    const KEYS: u64 = 50;
    const CAP: u64 = 5;
    let c = Cluster::start_with(
        3,
        &["--max-hints-per-node", "5", "--aae-interval-ms", "200"],
    );
    let stopped = c.nodes[2].id.clone();
    let status = |i: usize| text(c.cmd(i, &["STATUS"]));
    c.nodes[2].signal("STOP");
    let resume = Resume(&c.nodes[2]);
    // N=3 on 3 nodes: every node owns every key, so node 0 is the actor of
    // each write and node 1 the other live owner; node 2 misses them all.
    for i in 0..KEYS {
        assert_eq!(
            c.cmd(0, &["SET", &format!("cap-{i}"), &format!("v{i}"), "W=2"]),
            Frame::ok(),
            "write {i} must reach W=2 through the two live owners"
        );
    }
    // Once node 2's answers time out, node 0 keeps a hint for each missed
    // write: 5 are kept, the rest refused at the cap.
    wait_until(
        Duration::from_secs(60),
        "a hint kept or refused for every write node 2 missed",
        || {
            let s = status(0);
            pending_for(&s, &stopped) + figure(&s, "hints refused: ") >= KEYS
        },
    );
    let s = status(0);
    assert_eq!(pending_for(&s, &stopped), CAP, "{s}");
    assert_eq!(figure(&s, "hints refused: "), KEYS - CAP, "{s}");
    assert!(
        s.contains(&format!(
            "hints refused: {} ({} at --max-hints-per-node 5, 0 at --max-hint-bytes 1073741824)",
            KEYS - CAP,
            KEYS - CAP
        )),
        "{s}"
    );
    assert!(s.contains(", 0 failed or unknown writes"), "{s}");
    let info = text(c.cmd(0, &["INFO", "cluster"]));
    assert!(
        info.contains(&format!("distro_db_hints_refused:{}\r\n", KEYS - CAP)),
        "{info}"
    );
    // One warning for the whole episode, naming the owner and the flag.
    let log = c.nodes[0].log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hint storage full"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&stopped), "{}", warnings[0]);
    assert!(
        warnings[0].contains("--max-hints-per-node"),
        "{}",
        warnings[0]
    );

    // Node 2 comes back: it gets its 5 hints, and anti-entropy the rest.
    drop(resume);
    let (a0, a2) = (c.nodes[0].addr(), c.nodes[2].addr());
    wait_until(Duration::from_secs(60), "node 2 to be live again", || {
        live_nodes(&a0).contains(&stopped) && live_nodes(&a2).len() == 3
    });
    wait_until(
        Duration::from_secs(90),
        "the hints to be handed off",
        || status(0).contains("hints pending: 0\n"),
    );
    wait_until(
        Duration::from_secs(90),
        "anti-entropy to bring node 2 every key",
        || status(2).contains(&format!("({KEYS} keys,")),
    );
    for i in 0..KEYS {
        assert_eq!(
            c.cmd(1, &["GET", &format!("cap-{i}"), "R=3"]),
            common::bulk(&format!("v{i}"))
        );
    }
    // Nothing was refused after the cap cleared.
    assert_eq!(figure(&status(0), "hints refused: "), KEYS - CAP);
}
