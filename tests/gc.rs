//! Tombstone collection with real processes: a delete's tombstone is
//! collected from every replica once it passed the grace period, never
//! while a replica that missed the delete is down or a hint for the key is
//! waiting, and the deleted value does not come back afterwards (hint
//! delivery, anti-entropy and read repair all ran).

mod common;

use std::time::Duration;

use common::{Cluster, wait_until};
use distro_db::resp::Frame;

fn text(c: &Cluster, i: usize, cmd: &[&str]) -> String {
    let reply = c.cmd(i, cmd);
    reply.text().unwrap_or_else(|| panic!("{cmd:?}: {reply:?}"))
}

/// A figure of a STATUS line starting with `prefix` (its first number).
fn figure(c: &Cluster, i: usize, prefix: &str) -> u64 {
    text(c, i, &["STATUS"])
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// True when no owner (and no stand-in) holds anything for `key`.
fn gone_everywhere(c: &Cluster, via: usize, key: &str) -> bool {
    let report = text(c, via, &["REPLICAS", key]);
    report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .all(|l| l.contains("(owner ") && l.ends_with("(none)"))
}

/// True when `node`'s own copy of `key` (REPLICAS through `via`) is there.
fn holds(c: &Cluster, via: usize, key: &str, node: &str) -> bool {
    text(c, via, &["REPLICAS", key])
        .lines()
        .any(|l| l.starts_with(&format!("{node} (owner ")) && l.contains("clock="))
}

/// Waits until every running node ran `rounds` more rounds of `what`.
fn wait_rounds(c: &mut Cluster, nodes: &[usize], prefix: &str, rounds: u64, what: &str) {
    let start: Vec<u64> = nodes.iter().map(|&i| figure(c, i, prefix)).collect();
    wait_until(Duration::from_secs(60), what, || {
        nodes
            .iter()
            .zip(&start)
            .all(|(&i, s)| figure(c, i, prefix) >= s + rounds)
    });
}

#[test]
fn a_tombstone_is_collected_only_when_every_replica_holds_it_and_never_comes_back() {
    let mut c = Cluster::start_with(3, &["--tombstone-grace-s", "1", "--aae-interval-ms", "200"]);
    // A plain delete: collected everywhere after the grace period.
    assert_eq!(c.cmd(0, &["SET", "a", "1", "W=3"]), Frame::ok());
    assert_eq!(c.cmd(1, &["DEL", "a"]), Frame::Integer(1));
    assert!(
        !gone_everywhere(&c, 0, "a"),
        "the tombstone is kept at first"
    );
    wait_until(
        Duration::from_secs(60),
        "the tombstone of a to be collected",
        || gone_everywhere(&c, 0, "a"),
    );
    assert_eq!(c.cmd(2, &["GET", "a", "R=3"]), Frame::Null);

    // A replica misses the delete: while it is down nothing is collected.
    assert_eq!(c.cmd(0, &["SET", "b", "old", "W=3"]), Frame::ok());
    c.nodes[2].signal("STOP");
    let stopped = c.nodes[2].id.clone();
    wait_until(Duration::from_secs(30), "node 2 to be seen down", || {
        (0..2).all(|i| !common::live_nodes(&c.nodes[i].addr()).contains(&stopped))
    });
    assert_eq!(c.cmd(0, &["DEL", "b"]), Frame::Integer(1));
    // Several rounds of the collector on the live nodes, well past the grace.
    wait_rounds(
        &mut c,
        &[0, 1],
        "worker.tombstone-gc: ",
        3,
        "three collector rounds",
    );
    let report = text(&c, 0, &["REPLICAS", "b"]);
    for i in 0..2 {
        let id = c.nodes[i].id.clone();
        assert!(
            holds(&c, 0, "b", &id),
            "collected while a replica was down: {report}"
        );
    }
    let status = text(&c, 0, &["STATUS"]);
    assert!(status.contains("is down"), "{status}");
    // It comes back: the tombstone reaches it (hint), then everyone
    // collects, and the old value never returns.
    c.nodes[2].signal("CONT");
    wait_until(
        Duration::from_secs(60),
        "the tombstone of b to be collected",
        || gone_everywhere(&c, 1, "b"),
    );
    let aae = |c: &Cluster, i: usize| -> u64 {
        text(c, i, &["STATUS"])
            .lines()
            .find_map(|l| l.strip_prefix("anti-entropy: every 200 ms, "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let before: Vec<u64> = (0..3).map(|i| aae(&c, i)).collect();
    wait_until(
        Duration::from_secs(60),
        "five anti-entropy exchanges on every node",
        || (0..3).all(|i| aae(&c, i) >= before[i] + 5),
    );
    for i in 0..3 {
        assert_eq!(c.cmd(i, &["GET", "b", "R=3"]), Frame::Null, "node {i}");
    }
    assert!(
        gone_everywhere(&c, 2, "b"),
        "{}",
        text(&c, 2, &["REPLICAS", "b"])
    );
}
