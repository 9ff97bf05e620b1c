//! The checker: after every fault healed, waits until all replicas of every
//! key written hold the same version (`REPLICAS`, which does not repair),
//! then reads every key once more (`VGET R=3`, which shows every sibling) and decides, for each
//! acknowledged write, whether it survived; and scans node logs for panics
//! and corrupt records.
//!
//! The survival rule. Values are unique, and every write is a
//! read-modify-write whose context is the clock of the `VGET` before it, so
//! the write replaces exactly the siblings that read showed. A write `w`
//! *survives* if its value is among the final siblings of its key, or if some
//! write `b` (of any outcome) whose read showed `w`'s value survives: `b`
//! surviving proves it was applied, and being applied with a context that
//! covers `w`'s dot, it superseded `w` causally (the documented semantics of
//! `CTX=`). An acknowledged write that does not survive is **lost**. A
//! last-write-wins store that drops a concurrent sibling fails this check:
//! nothing that read the dropped value exists.
//!
//! The final siblings must also all be values some client sent (no phantom
//! values).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use distro_db::resp::Frame;

use super::conn::{bulk_text, call_once};
use super::history::{Op, Outcome};

/// Whether one `REPLICAS` report shows a converged key: as many owner lines
/// as `n`, all live, holding the same clock and siblings, and no stand-in
/// still holding a hint.
pub fn replicas_converged(report: &str, n: usize) -> bool {
    let mut owners = Vec::new();
    for line in report.lines() {
        if line.contains("(stand-in for ") {
            return false;
        }
        if let Some(rest) = line.split_once(" (owner ").map(|(_, r)| r) {
            let Some((state, what)) = rest.split_once(") ") else {
                return false;
            };
            if !state.ends_with(", live") {
                return false;
            }
            if !(what.starts_with("clock=") || what == "(none)") {
                return false;
            }
            owners.push(what);
        }
    }
    owners.len() == n && owners.windows(2).all(|w| w[0] == w[1])
}

/// How long replicas took to converge, and what was still missing on the
/// last poll before they did.
pub struct Converged {
    pub polls: usize,
    /// Keys still pending on the last unsuccessful poll, by reason.
    pub last_pending: String,
}

/// Polls `REPLICAS` through `addr` until every key converged, at most
/// `bound`. Returns what the polls saw, or the reports of keys that had not
/// converged when the bound passed.
pub fn wait_replicas_converged(
    addr: &str,
    keys: &[String],
    n: usize,
    bound: Duration,
) -> Result<Converged, Vec<(String, String)>> {
    let start = Instant::now();
    let mut last_pending = "none".to_string();
    let mut polls = 0;
    loop {
        polls += 1;
        let mut pending = Vec::new();
        for key in keys {
            match bulk_text(call_once(addr, &["REPLICAS", key])) {
                Ok(report) if replicas_converged(&report, n) => {}
                Ok(report) => pending.push((key.clone(), report)),
                Err(e) => pending.push((key.clone(), format!("REPLICAS failed: {e}"))),
            }
        }
        if pending.is_empty() {
            return Ok(Converged {
                polls,
                last_pending,
            });
        }
        if start.elapsed() > bound {
            return Err(pending);
        }
        let hinted = pending
            .iter()
            .filter(|(_, r)| r.contains("(stand-in for "))
            .count();
        last_pending = format!(
            "{} keys ({} with a hint not yet handed off, {} with differing owner copies only)",
            pending.len(),
            hinted,
            pending.len() - hinted
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The final siblings of every key: `VGET k R=3` through node `i % nodes`.
pub fn final_values(
    addrs: &[String],
    keys: &[String],
) -> Result<HashMap<String, BTreeSet<String>>, String> {
    let mut out = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let addr = &addrs[i % addrs.len()];
        let values = match call_once(addr, &["VGET", key, "R=3"]) {
            // The context, then one entry per sibling.
            Ok(Frame::Array(items)) if !items.is_empty() => items
                .into_iter()
                .skip(1)
                .map(|f| match f {
                    Frame::Bulk(v) => String::from_utf8_lossy(&v).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect(),
            Ok(other) => return Err(format!("VGET {key} R=3 via {addr}: {other:?}")),
            Err(e) => return Err(format!("VGET {key} R=3 via {addr}: {e}")),
        };
        out.insert(key.clone(), values);
    }
    Ok(out)
}

/// What the checker found about the writes.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Read-modify-write operations recorded.
    pub ops: usize,
    /// Writes sent (operations whose read half succeeded).
    pub writes: usize,
    /// Writes answered `+OK`.
    pub acknowledged: usize,
    /// Writes whose outcome was unknown.
    pub unknown: usize,
    /// Operations that failed (read failed, or the write was refused).
    pub failed: usize,
    /// Operations left out of availability (their coordinator was faulty).
    pub excluded: usize,
    /// Acknowledged writes present among the final siblings.
    pub present: usize,
    /// Acknowledged writes superseded by a surviving write that read them.
    pub superseded: usize,
    /// Unknown-outcome writes that turned out applied (survived).
    pub unknown_applied: usize,
    /// Reads that showed concurrent siblings (more than one value).
    pub sibling_reads: usize,
    /// Acknowledged writes neither present nor superseded.
    pub lost: Vec<Op>,
    /// Final sibling values no client ever sent: (key, value).
    pub phantoms: Vec<(String, String)>,
    /// Acknowledged / counted operations.
    pub availability: f64,
}

/// Applies the survival rule (module docs) to `ops` given the final siblings.
pub fn check_writes(ops: &[Op], finals: &HashMap<String, BTreeSet<String>>) -> Verdict {
    let mut v = Verdict {
        ops: ops.len(),
        ..Verdict::default()
    };
    // Every value sent, with its key and what its write's read showed.
    let mut written: HashMap<&str, (&str, &[String])> = HashMap::new();
    for op in ops {
        if let Some(value) = op.value.as_deref() {
            written.insert(value, (op.key.as_str(), op.seen.as_slice()));
        }
    }
    // Survivors: the final siblings, then, walking back along reads, every
    // value a survivor's write had read (a worklist, no recursion: chains
    // are as long as the number of writes to one key).
    let mut survivors: HashSet<&str> = HashSet::new();
    let mut work: Vec<&str> = Vec::new();
    for (key, values) in finals {
        for value in values {
            if written.get(value.as_str()).is_some_and(|(k, _)| k == key) {
                survivors.insert(value);
                work.push(value);
            } else {
                v.phantoms.push((key.clone(), value.clone()));
            }
        }
    }
    v.phantoms.sort();
    while let Some(value) = work.pop() {
        let Some((_, seen)) = written.get(value) else {
            continue;
        };
        for s in seen.iter() {
            if survivors.insert(s.as_str()) {
                work.push(s.as_str());
            }
        }
    }
    let mut counted = 0usize;
    let mut ok_counted = 0usize;
    for op in ops {
        match &op.outcome {
            Outcome::Ok => v.acknowledged += 1,
            Outcome::Unknown(_) => v.unknown += 1,
            Outcome::Fail(_) => v.failed += 1,
        }
        v.sibling_reads += usize::from(op.seen.len() > 1);
        if op.coord_faulty {
            v.excluded += 1;
        } else {
            counted += 1;
            ok_counted += usize::from(op.acknowledged());
        }
        let Some(value) = op.value.as_deref() else {
            continue;
        };
        v.writes += 1;
        let present = finals.get(&op.key).is_some_and(|f| f.contains(value));
        let survives = survivors.contains(value);
        match (&op.outcome, present, survives) {
            (Outcome::Ok, true, _) => v.present += 1,
            (Outcome::Ok, false, true) => v.superseded += 1,
            (Outcome::Ok, false, false) => v.lost.push(op.clone()),
            (Outcome::Unknown(_), _, true) => v.unknown_applied += 1,
            _ => {}
        }
    }
    v.availability = if counted == 0 {
        1.0
    } else {
        ok_counted as f64 / counted as f64
    };
    v
}

/// Lines of `log` that show a panic or a corrupt record (ANSI colours
/// removed). Recovery's summary field `corrupt_records=0` is not one.
pub fn log_problems(log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| {
            l.contains("panicked")
                || l.split_whitespace()
                    .any(|w| w.to_lowercase().contains("corrupt") && w != "corrupt_records=0")
        })
        .collect()
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The most frequent reasons of failed and unknown operations, with counts
/// (digits blanked, so that ports and counts do not split a reason).
pub fn top_reasons(ops: &[Op], limit: usize) -> Vec<(usize, String)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for op in ops {
        let (kind, why) = match &op.outcome {
            Outcome::Ok => continue,
            Outcome::Fail(w) => ("fail", w),
            Outcome::Unknown(w) => ("unknown", w),
        };
        let short: String = why
            .chars()
            .take(110)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *counts.entry(format!("{kind}: {short}")).or_default() += 1;
    }
    let mut v: Vec<(usize, String)> = counts.into_iter().map(|(k, n)| (n, k)).collect();
    v.sort_by(|a, b| b.cmp(a));
    v.truncate(limit);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, seq: u64, key: &str, value: &str, seen: &[&str], outcome: Outcome) -> Op {
        Op {
            client,
            seq,
            key: key.into(),
            coord: 0,
            value: Some(value.into()),
            seen: seen.iter().map(|s| s.to_string()).collect(),
            outcome,
            coord_faulty: false,
            invoke_ms: seq,
            complete_ms: seq,
        }
    }

    fn finals(pairs: &[(&str, &[&str])]) -> HashMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_chain_of_reads_accounts_for_overwritten_values() {
        let ops = vec![
            op(0, 1, "k", "a", &[], Outcome::Ok),
            op(1, 2, "k", "b", &["a"], Outcome::Unknown("timeout".into())),
            op(0, 3, "k", "c", &["b"], Outcome::Ok),
        ];
        let v = check_writes(&ops, &finals(&[("k", &["c"])]));
        assert!(v.lost.is_empty(), "{:?}", v.lost);
        assert_eq!((v.present, v.superseded, v.unknown_applied), (1, 1, 1));
        assert!(v.phantoms.is_empty());
    }

    #[test]
    fn a_dropped_concurrent_write_is_lost_as_under_last_write_wins() {
        // a and b were both written on an empty key, concurrently; the store
        // kept only b (as last-write-wins would): a is lost.
        let ops = vec![
            op(0, 1, "k", "a", &[], Outcome::Ok),
            op(1, 2, "k", "b", &[], Outcome::Ok),
        ];
        let v = check_writes(&ops, &finals(&[("k", &["b"])]));
        assert_eq!(v.lost.len(), 1);
        assert_eq!(v.lost[0].value.as_deref(), Some("a"));
    }

    #[test]
    fn a_reader_that_was_never_applied_does_not_supersede() {
        let ops = vec![
            op(0, 1, "k", "a", &[], Outcome::Ok),
            op(1, 2, "k", "b", &["a"], Outcome::Unknown("timeout".into())),
        ];
        let v = check_writes(&ops, &finals(&[("k", &[])]));
        assert_eq!(v.lost.len(), 1);
        let v = check_writes(&ops, &finals(&[("k", &["zz"])]));
        assert_eq!(v.phantoms, vec![("k".to_string(), "zz".to_string())]);
    }

    #[test]
    fn log_lines_with_panics_or_corrupt_records_are_found() {
        let log = "\u{1b}[32m INFO\u{1b}[0m storage recovered corrupt_records=0 torn_bytes=0\n\
                   WARN skipping corrupt record (other replicas and repair cover it)\n\
                   INFO storage recovered corrupt_records=2\n\
                   thread 'tokio' panicked at src/x.rs:1:1\n";
        let found = log_problems(log);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("WARN skipping corrupt"));
    }

    #[test]
    fn replicas_reports_are_compared_per_owner() {
        let same = "node-1 (owner 1, live) clock={a:1} siblings=[a:1=\"v\"]\n\
                    node-2 (owner 2, live) clock={a:1} siblings=[a:1=\"v\"]\n\
                    node-3 (owner 3, live) clock={a:1} siblings=[a:1=\"v\"]\n";
        assert!(replicas_converged(same, 3));
        let hinted = format!("{same}node-4 (stand-in for node-3) clock={{a:1}} siblings=[]\n");
        assert!(!replicas_converged(&hinted, 3));
        let differ = same.replacen("clock={a:1} siblings=[a:1=\"v\"]\n", "(none)\n", 1);
        assert!(!replicas_converged(&differ, 3));
        let down = same.replacen("live", "down", 1);
        assert!(!replicas_converged(&down, 3));
    }
}
