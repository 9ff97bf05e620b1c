//! Sloppy quorum and hinted handoff across real processes: with an owner
//! down, a write still reaches W through a stand-in that keeps a durable
//! hint, which survives the stand-in's own restart and reaches the owner
//! once it is back, with no read involved.

mod common;

use std::time::Duration;

use common::{Cluster, live_nodes, wait_until};
use distro_db::resp::Frame;

fn text(f: Frame) -> String {
    match f {
        Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("expected text, got {other:?}"),
    }
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
    assert!(text(c.cmd(stand_in, &["NODES"])).contains("(1 hints pending here)"));

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
