//! The vector-clock actor of this node (`node-id/epoch`), and the rule that
//! decides whether a restarted node may keep its epoch.
//!
//! An actor must never make the same dot twice: a second write under a dot
//! that other replicas already hold would be taken for the first one. A node
//! may therefore keep its epoch only when it can vouch that its store still
//! holds every record it ever wrote. It can after a graceful stop that left a
//! *clean marker* (`store/CLEAN`) naming the epoch and every segment with
//! its size, when recovery then finds exactly those files at exactly those
//! sizes and skipped or truncated nothing. In every other case (a crash, a
//! kill -9, a power loss, a damaged or missing file, a log cut short even at
//! a record boundary, a store restored by `db restore`, which leaves
//! `store/RESTORED`) it starts a new epoch. See docs/storage.md ("Epochs").
//!
//! Defence in depth: if a merge ever finds one of this node's own dots
//! carrying two different values, the node starts a new epoch at once
//! ([`ActorCell::rotate`]), so a reuse that slipped past the rule stops there.
//!
//! Epochs are ordered: a new one is the wall clock in milliseconds, or one
//! above the last epoch when that is higher, so a node's later epochs sort
//! above its earlier ones. That order is what lets a clock keep only a
//! node's most recent epochs ([`Retirement`], docs/storage.md, "Bounded
//! clocks"); this module also owns what a replica needs to prune: its own
//! current actor (never pruned) and the grace period.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::{error, info, warn};

use crate::storage::{Manifest, RecoveryReport};
use crate::vclock::Actor;

/// Name of the clean-stop marker in the store directory.
pub const CLEAN_MARKER: &str = "CLEAN";
/// Name of the epoch file in the store directory.
pub const EPOCH_FILE: &str = "EPOCH";

/// The node's current actor; a new epoch replaces it.
#[derive(Debug)]
pub struct ActorCell {
    node_id: String,
    current: RwLock<(u64, Arc<str>)>,
    /// Where the epoch is persisted (durable nodes).
    store_dir: Option<PathBuf>,
    /// How long after it retired an epoch's clock entries are kept beyond
    /// the most recent ones (the tombstone grace period).
    grace_ms: std::sync::atomic::AtomicU64,
}

/// The grace period a new [`ActorCell`] starts with (the default
/// `--tombstone-grace-s`).
pub const DEFAULT_GRACE_MS: u64 = 86_400_000;

impl ActorCell {
    /// The actor `node_id/epoch`, persisted in `store_dir` when given.
    pub fn new(node_id: &str, epoch: u64, store_dir: Option<PathBuf>) -> ActorCell {
        ActorCell {
            node_id: node_id.to_string(),
            current: RwLock::new((epoch, actor_name(node_id, epoch).into())),
            store_dir,
            grace_ms: std::sync::atomic::AtomicU64::new(DEFAULT_GRACE_MS),
        }
    }

    /// The actor writes are made under now.
    pub fn get(&self) -> Actor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .to_string()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// True when `actor` is this node's current actor.
    pub fn is_current(&self, actor: &str) -> bool {
        &*self.current.read().unwrap_or_else(|e| e.into_inner()).1 == actor
    }

    /// Starts a new epoch as a matter of course (this node dropped data it
    /// might own again later); logged at info level.
    pub fn renew(&self, why: &str) {
        self.change(why, false);
    }

    /// Starts a new epoch now (this node's dot was found reused). The new
    /// epoch is persisted before it is used.
    pub fn rotate(&self, why: &str) {
        self.change(why, true);
    }

    /// Sets the grace period (`--tombstone-grace-s`): a retired epoch's
    /// clock entries outlive it at least this long, up to
    /// [`crate::vclock::EPOCHS_MAX`] epochs of a node.
    pub fn set_grace(&self, grace: std::time::Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.grace_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// What this node knows about retired actors, for [`crate::object::Object::prune`].
    pub fn retirement(&self) -> Retirement {
        Retirement {
            own: self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
            grace_ms: self.grace_ms.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn change(&self, why: &str, alarm: bool) {
        let epoch = next_epoch(Some(self.epoch()));
        if let Some(dir) = &self.store_dir
            && let Err(e) = write_epoch(dir, epoch)
        {
            error!(cause = %e, "cannot persist a new epoch; keeping the old one");
            return;
        }
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if alarm {
            error!(old = %cur.1, new = %actor_name(&self.node_id, epoch), %why,
                   "starting a new vector-clock epoch");
        } else {
            info!(old = %cur.1, new = %actor_name(&self.node_id, epoch), %why,
                  "starting a new vector-clock epoch");
        }
        *cur = (epoch, actor_name(&self.node_id, epoch).into());
    }
}

/// What a replica needs to prune a clock: its own current actor (never
/// pruned: it counts this node's next dot) and the grace period.
#[derive(Debug, Clone)]
pub struct Retirement {
    /// This node's current actor.
    pub own: Arc<str>,
    /// Retired epochs are kept (up to [`crate::vclock::EPOCHS_MAX`]) until
    /// they retired this long ago.
    pub grace_ms: u64,
}

fn actor_name(node_id: &str, epoch: u64) -> String {
    format!("{node_id}/{epoch:08x}")
}

/// The epoch after `last`: the wall clock in milliseconds, or one above
/// `last` if that is not lower. Epochs of one node therefore increase
/// (unless the clock went back *and* the epoch file was lost), and two
/// starts never share one.
pub fn next_epoch(last: Option<u64>) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    match last {
        Some(l) => now.max(l.saturating_add(1)),
        None => now,
    }
}

/// Decides the epoch of a durable store at start: the kept one, with `None`,
/// or a new one, with the reason it could not be kept. Consumes the clean
/// marker (it is removed, durably, before anything is written).
pub fn resolve(store_dir: &Path, report: &RecoveryReport) -> anyhow::Result<(u64, Option<String>)> {
    let marker_path = store_dir.join(CLEAN_MARKER);
    let marker = std::fs::read_to_string(&marker_path).ok();
    if marker.is_some() {
        crate::durable::remove(&marker_path)?;
    }
    let stored = read_epoch(&store_dir.join(EPOCH_FILE));
    // A store restored from a backup is an old state: always a new epoch.
    // The marker stays until the store has caught up with its peers
    // (`replica::CatchUp`), so each start before that takes one more, which
    // is always safe.
    let restored_path = store_dir.join(crate::backup::RESTORED_MARKER);
    if let Ok(text) = std::fs::read_to_string(&restored_path) {
        let epoch = next_epoch(stored);
        write_epoch(store_dir, epoch)?;
        let why = text.trim().to_string();
        warn!(epoch = format!("{epoch:08x}"), reason = %why, "starting a new vector-clock epoch");
        return Ok((epoch, Some(why)));
    }
    let fresh = marker.is_none()
        && stored.is_none()
        && report.manifest.segments.iter().all(|(_, size)| *size == 0);
    if fresh {
        let epoch = next_epoch(stored);
        write_epoch(store_dir, epoch)?;
        info!(
            epoch = format!("{epoch:08x}"),
            "new data directory: first vector-clock epoch"
        );
        return Ok((epoch, Some("a new data directory".into())));
    }
    match may_keep(marker.as_deref(), stored, report) {
        Ok(epoch) => {
            info!(
                epoch = format!("{epoch:08x}"),
                "clean restart: keeping the vector-clock epoch"
            );
            Ok((epoch, None))
        }
        Err(why) => {
            let epoch = next_epoch(stored);
            write_epoch(store_dir, epoch)?;
            warn!(epoch = format!("{epoch:08x}"), reason = %why, "starting a new vector-clock epoch");
            Ok((epoch, Some(why)))
        }
    }
}

/// The rule, as a pure function: the epoch may be kept only when the clean
/// marker names the stored epoch and exactly the files recovery found, and
/// recovery dropped nothing. `Err` says why not.
pub fn may_keep(
    marker: Option<&str>,
    stored_epoch: Option<u64>,
    report: &RecoveryReport,
) -> Result<u64, String> {
    let Some(marker) = marker else {
        return Err(
            "the last stop was not clean (a crash, kill -9 or power loss): writes this node \
             made may be missing from its log"
                .into(),
        );
    };
    let Some(stored) = stored_epoch else {
        return Err("the store has no epoch file".into());
    };
    let marked = marker
        .lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .and_then(|e| u64::from_str_radix(e.trim(), 16).ok());
    if marked != Some(stored) {
        return Err("the clean-stop marker names another epoch".into());
    }
    if report.corrupt_records > 0 {
        return Err(format!(
            "recovery skipped {} corrupt record(s)",
            report.corrupt_records
        ));
    }
    if report.torn_bytes > 0 {
        return Err(format!(
            "recovery truncated a torn tail of {} bytes",
            report.torn_bytes
        ));
    }
    let recorded = Manifest::parse(marker).ok_or("the clean-stop marker is unreadable")?;
    if let Some(diff) = recorded.difference(&report.manifest) {
        return Err(format!("the log is not as the clean stop left it: {diff}"));
    }
    Ok(stored)
}

/// Writes the clean-stop marker (after the store was closed).
pub fn write_clean_marker(
    store_dir: &Path,
    epoch: u64,
    manifest: &Manifest,
) -> std::io::Result<()> {
    let text = format!("clean stop\nepoch {epoch:08x}\n{}", manifest.to_text());
    write_durably(&store_dir.join(CLEAN_MARKER), &text)
}

/// Reads the epoch file: `None` when it is missing or damaged. A damaged
/// file (empty, cut short, not 8 or 16 hex digits and a newline) is never
/// used: the node cannot vouch for its epoch and starts a new one, which is
/// always safe, and says which file it could not read.
fn read_epoch(path: &Path) -> Option<u64> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            error!(file = %path.display(), cause = %e, "cannot read the epoch file; starting a new epoch");
            return None;
        }
    };
    let parsed = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .filter(|t| t.len() == 8 || t.len() == 16)
        .and_then(|t| u64::from_str_radix(t, 16).ok());
    if parsed.is_none() {
        error!(file = %path.display(), bytes = text.len(),
               "the epoch file is damaged (expected 8 hex digits and a newline); starting a new epoch");
    }
    parsed
}

fn write_epoch(store_dir: &Path, epoch: u64) -> std::io::Result<()> {
    write_durably(&store_dir.join(EPOCH_FILE), &format!("{epoch:016x}\n"))
}

fn write_durably(path: &Path, text: &str) -> std::io::Result<()> {
    crate::durable::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(segments: &[(u64, u64)]) -> RecoveryReport {
        RecoveryReport {
            corrupt_records: 0,
            torn_bytes: 0,
            manifest: Manifest {
                segments: segments.to_vec(),
            },
        }
    }

    fn marker(epoch: u64, segments: &[(u64, u64)]) -> String {
        format!(
            "clean stop\nepoch {epoch:08x}\n{}",
            Manifest {
                segments: segments.to_vec()
            }
            .to_text()
        )
    }

    #[test]
    fn only_an_exact_clean_restart_keeps_the_epoch() {
        let segs = [(1 << 20, 4000), (2 << 20, 1234)];
        let m = marker(7, &segs);
        assert_eq!(may_keep(Some(&m), Some(7), &report(&segs)), Ok(7));
        // No marker: a crash.
        assert!(may_keep(None, Some(7), &report(&segs)).is_err());
        // The marker names another epoch.
        assert!(may_keep(Some(&m), Some(8), &report(&segs)).is_err());
        assert!(may_keep(Some(&m), None, &report(&segs)).is_err());
        // Cut at a record boundary: the last segment is shorter.
        let cut = [(1 << 20, 4000), (2 << 20, 1200)];
        let why = may_keep(Some(&m), Some(7), &report(&cut)).unwrap_err();
        assert!(why.contains("1200"), "{why}");
        // A missing segment.
        assert!(may_keep(Some(&m), Some(7), &report(&segs[1..])).is_err());
        // An unknown segment with data.
        let extra = [(1 << 20, 4000), (2 << 20, 1234), (3 << 20, 10)];
        assert!(may_keep(Some(&m), Some(7), &report(&extra)).is_err());
        // A new, empty active segment made at open is fine.
        let fresh = [(1 << 20, 4000), (2 << 20, 1234), (3 << 20, 0)];
        assert_eq!(may_keep(Some(&m), Some(7), &report(&fresh)), Ok(7));
        // Anything recovery dropped.
        let mut damaged = report(&segs);
        damaged.corrupt_records = 1;
        assert!(may_keep(Some(&m), Some(7), &damaged).is_err());
        let mut torn = report(&segs);
        torn.torn_bytes = 12;
        assert!(may_keep(Some(&m), Some(7), &torn).is_err());
    }

    #[test]
    fn resolve_consumes_the_marker_and_persists_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let segs = [(1 << 20, 10)];
        write_epoch(dir.path(), 5).unwrap();
        write_clean_marker(
            dir.path(),
            5,
            &Manifest {
                segments: segs.to_vec(),
            },
        )
        .unwrap();
        assert_eq!(resolve(dir.path(), &report(&segs)).unwrap(), (5, None));
        assert!(!dir.path().join(CLEAN_MARKER).exists());
        // The marker was consumed: the next start is unclean.
        let (epoch, why) = resolve(dir.path(), &report(&segs)).unwrap();
        assert!(why.is_some());
        let stored = std::fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap();
        assert_eq!(u64::from_str_radix(stored.trim(), 16).unwrap(), epoch);
    }

    #[test]
    fn a_damaged_epoch_file_is_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EPOCH_FILE);
        for bad in [&b""[..], b"0000", b"0000000", b"zzzzzzzz\n", b"00000005"] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(read_epoch(&path), None, "{bad:?}");
        }
        std::fs::write(&path, b"00000005\n").unwrap();
        assert_eq!(read_epoch(&path), Some(5));
        // A clean marker with a damaged epoch file: a new epoch, not epoch 5.
        let segs = [(1 << 20, 10)];
        write_clean_marker(
            dir.path(),
            5,
            &Manifest {
                segments: segs.to_vec(),
            },
        )
        .unwrap();
        std::fs::write(&path, b"0000000").unwrap();
        let (epoch, why) = resolve(dir.path(), &report(&segs)).unwrap();
        assert!(why.is_some());
        assert_ne!(epoch, 5);
        assert_eq!(read_epoch(&path), Some(epoch));
    }

    #[test]
    fn epochs_increase_and_are_written_in_full() {
        let now = next_epoch(None);
        assert!(now > 1_700_000_000_000, "the wall clock in milliseconds");
        // A stored epoch ahead of the clock (many restarts in a millisecond,
        // or a clock set back) still gives a higher one.
        assert_eq!(next_epoch(Some(u64::MAX - 1)), u64::MAX);
        assert_eq!(next_epoch(Some(now + 1000)), now + 1001);
        assert!(next_epoch(Some(5)) >= now);
        let dir = tempfile::tempdir().unwrap();
        write_epoch(dir.path(), now).unwrap();
        let text = std::fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap();
        assert_eq!(text.len(), 17, "{text:?}");
        assert_eq!(read_epoch(&dir.path().join(EPOCH_FILE)), Some(now));
    }

    #[test]
    fn rotation_changes_the_actor_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let cell = ActorCell::new("n1", 1, Some(dir.path().to_path_buf()));
        assert_eq!(cell.get(), "n1/00000001");
        assert!(cell.is_current("n1/00000001"));
        cell.rotate("test");
        assert_ne!(cell.get(), "n1/00000001");
        let stored = std::fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap();
        assert_eq!(
            u64::from_str_radix(stored.trim(), 16).unwrap(),
            cell.epoch()
        );
    }
}
