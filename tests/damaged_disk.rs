//! A damaged disk never makes a node reuse a dot, and no acknowledged write
//! is lost to one (issue: "a node that lost a record on disk must never
//! reuse a dot").
//!
//! Each test writes `a` then `b` (with the context of a read) through node V
//! to all three owners, damages V's copy of `b` on disk, restarts V, writes
//! `c` through V without a context, and checks that every owner ends up
//! holding `c` (the value, or a sibling of `b`), that V writes under a new epoch,
//! and that anti-entropy then stops repairing the key. The damage is a bit
//! flip inside the record, a torn tail (the file cut inside the record), or
//! a cut exactly at the record's start — after a kill -9 and after a clean
//! stop (whose marker then no longer matches the files). A last test
//! restores a backup, which no local check can tell from the real thing:
//! the reused dot shows as two siblings, and V starts a new epoch when it
//! sees its own dot reused.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cluster, wait_until};
use distro_db::resp::Frame;
use distro_db::storage::log::segment;

const KEY: &str = "damaged-key";

fn text(f: Frame) -> String {
    f.text()
        .unwrap_or_else(|| panic!("expected text, got {f:?}"))
}

fn status_line(c: &Cluster, i: usize, prefix: &str) -> String {
    text(c.cmd(i, &["STATUS"]))
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_default()
        .to_string()
}

/// The newest segment with records (an empty newer one is the spare the
/// store creates ahead of a roll).
fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("store"))
        .expect("store dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// `(offset, length)` of the last record of `key` in a segment file.
fn last_record_of(seg: &Path, key: &[u8]) -> (u64, u64) {
    let bytes = std::fs::read(seg).expect("segment");
    let mut found = None;
    segment::scan(&bytes, |off, len, rec| {
        if rec.key == key {
            found = Some((off, u64::from(len)));
        }
    })
    .expect("scan");
    found.expect("the key has a record in the newest segment")
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One bit flipped inside the record: recovery skips it.
    BitFlip,
    /// The file cut inside the record: a torn tail, truncated.
    TornTail,
    /// The file cut exactly at the record's start: nothing looks wrong.
    CutAtBoundary,
}

fn damage(seg: &Path, key: &[u8], how: Damage) {
    let (off, len) = last_record_of(seg, key);
    // The record of `b` is the last one: only the zeros the store fills
    // ahead of its records follow it.
    let bytes = std::fs::read(seg).unwrap();
    assert!(
        bytes[(off + len) as usize..].iter().all(|&b| b == 0),
        "the record of `b` is the last one"
    );
    match how {
        Damage::BitFlip => {
            let mut bytes = std::fs::read(seg).unwrap();
            let at = (off + len - 3) as usize;
            bytes[at] ^= 0x10;
            std::fs::write(seg, bytes).unwrap();
        }
        Damage::TornTail => {
            let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            f.set_len(off + len / 2).unwrap();
        }
        Damage::CutAtBoundary => {
            let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            f.set_len(off).unwrap();
        }
    }
}

/// The context token of a `VGET`.
fn context(c: &Cluster, i: usize) -> String {
    match c.cmd(i, &["VGET", KEY]) {
        Frame::Array(items) => match items.first() {
            Some(Frame::Bulk(t)) => String::from_utf8_lossy(t).into_owned(),
            other => panic!("no context: {other:?}"),
        },
        other => panic!("VGET answered {other:?}"),
    }
}

/// Every owner's copy of the key, one line each (from `REPLICAS`).
fn replica_lines(c: &Cluster, i: usize) -> Vec<String> {
    text(c.cmd(i, &["REPLICAS", KEY]))
        .lines()
        .filter(|l| l.contains("(owner"))
        .map(str::to_string)
        .collect()
}

fn holds_all(lines: &[String], values: &[&str]) -> bool {
    lines.len() == 3
        && lines
            .iter()
            .all(|l| values.iter().all(|v| l.contains(&format!("=\"{v}\""))))
}

/// Waits (bounded) until every owner's copy holds each of `values`.
fn wait_every_owner_holds(c: &Cluster, values: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lines = replica_lines(c, 1);
        if holds_all(&lines, values) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "owners do not all hold {values:?}:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One figure of node `i`'s anti-entropy line in STATUS ("exchanges",
/// "keys repaired").
fn ae_figure(c: &Cluster, i: usize, what: &str) -> u64 {
    status_line(c, i, "anti-entropy:")
        .split(',')
        .find(|p| p.trim_end().ends_with(what))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn run(how: Damage, clean_stop: bool) {
    // Short anti-entropy rounds, so the test also sees it settle.
    let mut c = Cluster::start_durable(3, &["--aae-interval-ms", "300"]);
    let v = 0;
    assert_eq!(c.cmd(v, &["SET", KEY, "a", "W=3"]), Frame::ok());
    let ctx = format!("CTX={}", context(&c, v));
    assert_eq!(c.cmd(v, &["SET", KEY, "b", "W=3", &ctx]), Frame::ok());
    let actor_before = status_line(&c, v, "actor:");

    if clean_stop {
        c.nodes[v].signal("TERM");
        wait_until(Duration::from_secs(15), "V to stop", || {
            !c.nodes[v].running()
        });
    } else {
        c.nodes[v].sigkill();
    }
    damage(
        &newest_segment(&c.data_dir(c.nodes[v].port)),
        KEY.as_bytes(),
        how,
    );
    c.restart(v);
    c.wait_converged();

    let actor_after = status_line(&c, v, "actor:");
    assert_ne!(actor_after, actor_before, "{how:?}: V kept its epoch");
    assert!(
        c.nodes[v]
            .log_text()
            .contains("starting a new vector-clock epoch"),
        "{how:?}: the log says why a new epoch was taken"
    );
    // A plain write through V: acknowledged by every owner.
    assert_eq!(c.cmd(v, &["SET", KEY, "c", "W=3"]), Frame::ok());
    // Every owner holds c, as the value or as a sibling of b (b survives
    // unless anti-entropy gave V its copy back before the write, which then
    // superseded what V had seen, as a plain SET does).
    let _ = c.cmd(v, &["GET", KEY, "R=3"]);
    wait_every_owner_holds(&c, &["c"]);
    for i in 0..3 {
        let has_c = c.siblings(i, KEY, 3).contains(&Frame::Bulk(b"c".to_vec()));
        assert!(has_c, "{how:?}: node {i} does not read c");
    }
    // Anti-entropy settles: a few more exchanges repair nothing more.
    let ex = ae_figure(&c, 1, "exchanges");
    wait_until(Duration::from_secs(20), "three more exchanges", || {
        ae_figure(&c, 1, "exchanges") >= ex + 3
    });
    let settled = ae_figure(&c, 1, "keys repaired");
    wait_until(Duration::from_secs(20), "three more exchanges", || {
        ae_figure(&c, 1, "exchanges") >= ex + 6
    });
    assert_eq!(
        ae_figure(&c, 1, "keys repaired"),
        settled,
        "{how:?}: anti-entropy keeps repairing the key"
    );
}

#[test]
fn bit_flip_after_kill() {
    run(Damage::BitFlip, false);
}

#[test]
fn torn_tail_after_kill() {
    run(Damage::TornTail, false);
}

#[test]
fn cut_at_record_boundary_after_kill() {
    run(Damage::CutAtBoundary, false);
}

#[test]
fn bit_flip_after_clean_stop() {
    run(Damage::BitFlip, true);
}

#[test]
fn cut_at_record_boundary_after_clean_stop() {
    run(Damage::CutAtBoundary, true);
}

#[test]
fn clean_stop_without_damage_keeps_the_epoch() {
    let mut c = Cluster::start_durable(1, &[]);
    assert_eq!(c.cmd(0, &["SET", KEY, "a"]), Frame::ok());
    let before = status_line(&c, 0, "actor:");
    c.nodes[0].signal("TERM");
    wait_until(Duration::from_secs(15), "the node to stop", || {
        !c.nodes[0].running()
    });
    c.restart(0);
    assert_eq!(status_line(&c, 0, "actor:"), before);
    assert_eq!(c.cmd(0, &["GET", KEY]), common::bulk("a"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_restored_backup_reuses_a_dot_and_both_values_are_kept() {
    let mut c = Cluster::start_durable(3, &["--aae-interval-ms", "0"]);
    let v = 0;
    assert_eq!(c.cmd(v, &["SET", KEY, "a", "W=3"]), Frame::ok());
    let stop = |c: &mut Cluster| {
        c.nodes[v].signal("TERM");
        wait_until(Duration::from_secs(15), "V to stop", || {
            !c.nodes[v].running()
        });
    };
    // A backup of V taken while it was cleanly stopped.
    stop(&mut c);
    let data = c.data_dir(c.nodes[v].port);
    let backup = c.dir.path().join("backup");
    copy_dir(&data, &backup);
    c.restart(v);
    c.wait_converged();
    let ctx = format!("CTX={}", context(&c, v));
    assert_eq!(c.cmd(v, &["SET", KEY, "b", "W=3", &ctx]), Frame::ok());
    // Restore the backup: its marker matches its own files, so V keeps the
    // epoch and makes the dot of `b` again for `c`.
    stop(&mut c);
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    c.restart(v);
    c.wait_converged();
    let actor = status_line(&c, v, "actor:");
    assert_eq!(c.cmd(v, &["SET", KEY, "c", "W=3"]), Frame::ok());
    // The other owners saw one dot with two values: both are kept.
    let _ = c.cmd(1, &["GET", KEY, "R=3"]);
    wait_every_owner_holds(&c, &["b", "c"]);
    let conflicts: u64 = (0..3)
        .map(|i| {
            status_line(&c, i, "dot conflicts:")
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(conflicts >= 1, "the conflict is counted in STATUS");
    // V saw its own dot reused and moved to a new epoch.
    wait_until(Duration::from_secs(10), "V to start a new epoch", || {
        status_line(&c, v, "actor:") != actor
    });
}
