//! Multi-process durability: nodes with data directories survive SIGKILL of
//! every node with every acknowledged write, keep their identity, refuse a
//! second process on their directory, and start from a torn log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Cluster, bulk, db_bin};
use distro_db::resp::Frame;

fn status_line(c: &Cluster, i: usize, prefix: &str) -> String {
    let text = c.cmd(i, &["STATUS"]).text().expect("STATUS");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sigkill_every_node_then_restart_keeps_every_acknowledged_write() {
    let mut c = Cluster::start_durable(3, &[]);
    let actors: Vec<String> = (0..3).map(|i| status_line(&c, i, "actor:")).collect();
    let mut acked = Vec::new();
    for i in 0..150 {
        if c.cmd(i % 3, &["SET", &format!("key-{i}"), &format!("value-{i}")]) == Frame::ok() {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 150);
    assert_eq!(c.cmd(1, &["DEL", "key-7"]), Frame::Integer(1));
    for n in &mut c.nodes {
        n.sigkill();
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_converged();
    for &i in &acked {
        let expected = if i == 7 {
            Frame::Null
        } else {
            bulk(&format!("value-{i}"))
        };
        assert_eq!(
            c.cmd(i % 3, &["GET", &format!("key-{i}")]),
            expected,
            "key-{i}"
        );
    }
    // Same data directory: same node id, but after a kill -9 a node cannot
    // vouch for the end of its log, so it writes under a new epoch.
    for (i, actor) in actors.iter().enumerate() {
        let now = status_line(&c, i, "actor:");
        assert_ne!(&now, actor);
        let id = |a: &str| a.split('/').next().unwrap_or_default().to_string();
        assert_eq!(id(&now), id(actor));
    }
}

#[test]
fn a_second_process_on_a_data_directory_is_refused() {
    let c = Cluster::start_durable(1, &[]);
    let dir = c.data_dir(c.nodes[0].port);
    let err_file = c.dir.path().join("second.err");
    let own = format!("127.0.0.1:{}", common::free_port());
    let child = common::checked(
        Command::new(db_bin())
            .args(["node", "--listen", &own, "--seed", &own])
            .arg("--data-dir")
            .arg(&dir),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&err_file).unwrap())
    .spawn()
    .expect("db runs");
    // Killed when the test ends, whatever happens.
    let mut second = common::NodeProc {
        port: 0,
        id: "second".into(),
        child,
        log: err_file.clone(),
    };
    let mut status = None;
    common::wait_until(
        Duration::from_secs(20),
        "the second process to exit",
        || {
            status = second.child.try_wait().ok().flatten();
            status.is_some()
        },
    );
    assert!(!status.unwrap().success());
    let err = common::read(&err_file);
    assert!(err.contains("locked"), "{err}");
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
}

/// The newest segment with records (an empty newer one is the spare the
/// store creates ahead of a roll).
fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("store"))
        .expect("store dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[test]
fn a_node_whose_active_segment_was_cut_short_starts_and_serves() {
    let mut c = Cluster::start_durable(3, &[]);
    for i in 0..40 {
        assert_eq!(
            c.cmd(i % 3, &["SET", &format!("k{i}"), &format!("v{i}")]),
            Frame::ok()
        );
    }
    c.nodes[0].sigkill();
    let seg = newest_segment(&c.data_dir(c.nodes[0].port));
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len > 10);
    // Cut the last record in half, as a crash mid-write would.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    c.restart(0);
    c.wait_converged();
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
    for i in 0..40 {
        assert_eq!(
            c.cmd(0, &["GET", &format!("k{i}")]),
            bulk(&format!("v{i}")),
            "k{i}"
        );
    }
    // The node reported what recovery found.
    common::wait_until(
        Duration::from_secs(5),
        "a recovery report in the log",
        || c.nodes[0].log_text().contains("torn"),
    );
    assert_eq!(c.cmd(0, &["SET", "after", "restart"]), Frame::ok());
    assert_eq!(c.cmd(1, &["GET", "after"]), bulk("restart"));
}

#[test]
fn epoch_survives_a_clean_stop_but_not_a_crash_without_fsync() {
    let mut c = Cluster::start_durable(1, &["--fsync", "never"]);
    assert_eq!(c.cmd(0, &["SET", "k", "v"]), Frame::ok());
    let first = status_line(&c, 0, "actor:");
    // A graceful stop flushes the store: the epoch (and the data) stay.
    assert_eq!(c.cmd(0, &["SHUTDOWN"]), Frame::ok());
    common::wait_until(Duration::from_secs(10), "the node to stop", || {
        !c.nodes[0].running()
    });
    c.restart(0);
    assert_eq!(status_line(&c, 0, "actor:"), first);
    assert_eq!(c.cmd(0, &["GET", "k"]), bulk("v"));
    // A crash under --fsync never may have lost writes others hold: new epoch.
    c.nodes[0].sigkill();
    c.restart(0);
    assert_ne!(status_line(&c, 0, "actor:"), first);
}

/// The clock of `key` as a read through node `i` with R=3 returns it.
fn clock_of(c: &Cluster, i: usize, key: &str) -> (distro_db::vclock::VClock, Vec<Frame>) {
    let Frame::Array(items) = c.cmd(i, &["VGET", key, "R=3"]) else {
        panic!("VGET {key}")
    };
    let Some(Frame::Bulk(token)) = items.first() else {
        panic!("VGET {key}: no context in {items:?}")
    };
    let token = String::from_utf8_lossy(token).to_string();
    // The test cluster has no secret: its context key comes from its id.
    let clock = distro_db::token::ContextKey::derive(b"", &c.cluster_id)
        .verify(key.as_bytes(), &distro_db::token::Token::new(&token))
        .expect("a valid token");
    (clock, items[1..].to_vec())
}

#[test]
fn fifty_unclean_restarts_keep_the_clock_bounded() {
    // Each kill -9 gives the node a new epoch, a new actor, and the node
    // then writes the key: without pruning the clock would name 3 + 50
    // actors. Each write carries the context of a read of every copy and
    // waits for all three, so no copy is ever stale: pruning must not make
    // any sibling appear.
    let mut c = Cluster::start_durable(3, &[]);
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone()).collect();
    let mut actors = std::collections::BTreeSet::new();
    for i in 0..3 {
        actors.insert(status_line(&c, i, "actor:"));
    }
    let mut last = String::new();
    for round in 0..50 {
        let i = round % 3;
        c.nodes[i].sigkill();
        c.restart(i);
        let actor = status_line(&c, i, "actor:");
        assert!(
            actors.insert(actor.clone()),
            "round {round}: {actor} reused"
        );
        let addr = c.nodes[i].addr();
        common::wait_until(
            Duration::from_secs(30),
            "the restarted node to see every node",
            || {
                let live = common::live_nodes(&addr);
                ids.iter().all(|id| live.contains(id))
            },
        );
        let value = format!("v{round}");
        common::wait_until(
            Duration::from_secs(30),
            "a write through the restarted node",
            || {
                let mut client = c.client(i);
                let ctx = match client.call(&["VGET", "k", "R=3"]) {
                    Ok(Frame::Array(items)) => match items.first() {
                        Some(Frame::Bulk(t)) => String::from_utf8_lossy(t).to_string(),
                        _ => return false,
                    },
                    _ => return false,
                };
                let ctx = format!("CTX={ctx}");
                client.call(&["SET", "k", &value, "W=3", &ctx]).ok() == Some(Frame::ok())
            },
        );
        last = value;
    }
    let (clock, values) = clock_of(&c, 0, "k");
    let bound = 3 * distro_db::vclock::EPOCHS_MAX;
    assert!(
        clock.len() <= bound,
        "the clock names {} actors after 50 restarts (bound {bound}): {clock}",
        clock.len()
    );
    // Every node's current actor is there, and the last write is the one
    // value.
    for i in 0..3 {
        let line = status_line(&c, i, "actor:");
        let actor = line.trim_start_matches("actor:").trim();
        assert!(clock.get(actor) > 0, "{actor} missing from {clock}");
    }
    assert_eq!(values, vec![bulk(&last)]);
    let pruned: u64 = (0..3)
        .map(|i| {
            status_line(&c, i, "clock entries pruned:")
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(pruned > 0, "STATUS counts the entries pruned");
}
