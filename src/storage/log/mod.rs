//! The durable log-structured backend ([`LogStore`]): append-only segment
//! files of CRC-checked records, an in-memory key directory, hint files,
//! crash recovery, group commit and background compaction.
//!
//! Submodules: [`record`] (byte format), [`segment`] (file naming and the
//! recovery scanner), [`keydir`] (key → location map), [`hint`] (hint files),
//! [`commit`] (group commit), [`vfs`] (the file-system seam every file
//! operation goes through, and the power-cut rules), [`fsutil`] (format
//! file), `recovery` (start-up), `compaction` (background maintenance) and
//! `snapshot` (point-in-time copies for backups, with pinned segments).
//! The format, recovery rules and fsync policies are described in
//! `docs/storage.md`.

pub mod commit;
mod compaction;
pub mod fsutil;
pub mod hint;
pub mod keydir;
pub mod record;
mod recovery;
pub mod segment;
#[cfg(test)]
pub(crate) mod simfs;
mod snapshot;
pub mod vfs;

pub use snapshot::Snapshot;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::commit::GroupCommit;
use self::keydir::{KeyDir, Location};
use self::vfs::{Fs, FsFile, RealFs};
use super::{Store, StoreError, StoreStatus};

/// When appended records are fsynced. See `docs/storage.md` for what each
/// policy can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A write is acknowledged only once it is on disk (group commit shares
    /// one `fdatasync` among concurrent writers). Loses nothing acknowledged.
    Always,
    /// A background thread fsyncs at this interval; a power loss or kernel
    /// crash can lose the writes acknowledged during the last interval.
    Interval(Duration),
    /// Never fsync (the kernel writes back when it likes, typically within
    /// ~30 s); a power loss can lose any write not yet written back. A crash
    /// of the process alone loses nothing under any policy.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Error parsing an [`FsyncPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy {0:?}: expected `always`, `interval:<ms>` (ms > 0) or `never`")]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFsyncPolicyError(s.to_string());
        match s.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => {
                let ms = other.strip_prefix("interval:").ok_or_else(err)?;
                let ms: u64 = ms.trim().parse().map_err(|_| err())?;
                if ms == 0 {
                    return Err(err());
                }
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Options for [`LogStore::open`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The active segment rolls over once a write would take it past this
    /// many bytes (1 KiB ..= 1 GiB).
    pub segment_size: u64,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// A closed segment is compacted when its live fraction (live bytes /
    /// size) falls below this (0.0 disables compaction).
    pub compaction_threshold: f64,
    /// How often the background thread looks for work (hints to write,
    /// segments to compact).
    pub compaction_interval: Duration,
    /// With `always`: under concurrent writes, syncs start at most this often
    /// (writes gather meanwhile; a lone writer never waits). See
    /// `docs/storage.md`.
    pub group_commit_window: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            fsync: FsyncPolicy::Always,
            compaction_threshold: 0.5,
            compaction_interval: Duration::from_secs(60),
            group_commit_window: Duration::from_millis(1),
        }
    }
}

/// One segment file.
pub(crate) struct Segment<F: Fs> {
    pub(crate) id: u64,
    pub(crate) file: F::File,
    /// Bytes of records in the segment (grows while the segment is active),
    /// including any still in the writer's buffer.
    pub(crate) size: AtomicU64,
    /// Bytes handed to the kernel: `size` minus what is still in the writer's
    /// buffer (see [`Writer::pending`]). Equal to `size` for closed segments.
    pub(crate) flushed: AtomicU64,
    /// Bytes of records that are superseded, deleted, or tombstones.
    pub(crate) dead: AtomicU64,
    /// True once a valid hint file exists for it.
    pub(crate) has_hint: AtomicBool,
    /// A read-only shared mapping of the file's first `map.len()` bytes
    /// (possibly beyond its current end, for a segment still growing), so a
    /// read costs no system call. Only bytes below `flushed` are ever read
    /// through it, and nothing shortens a segment below `flushed` while the
    /// store is open; `None` if mapping failed (reads fall back to `pread`).
    map: Option<memmap2::Mmap>,
}

impl<F: Fs> Segment<F> {
    /// A segment over `file`, mapped for reads up to `map_len` bytes (at
    /// least its size; more for a segment that will grow).
    pub(crate) fn new(
        id: u64,
        file: F::File,
        size: u64,
        dead: u64,
        has_hint: bool,
        map_len: u64,
    ) -> Self {
        let map_len = map_len.max(size);
        // Only bytes below `flushed` are read through the mapping (see
        // `FsFile::map` for why that is sound).
        let map = if map_len > 0 { file.map(map_len) } else { None };
        Self {
            id,
            map,
            file,
            size: AtomicU64::new(size),
            flushed: AtomicU64::new(size),
            dead: AtomicU64::new(dead),
            has_hint: AtomicBool::new(has_hint),
        }
    }
}

pub(crate) struct Writer<F: Fs> {
    pub(crate) active: Arc<Segment<F>>,
    /// Bytes appended since open (the log sequence number of the last write).
    pub(crate) lsn: u64,
    /// With `fsync always`: records appended to the active segment that are
    /// not yet written to its file. Nobody is told such a record is durable
    /// before the syncer has written the buffer and fsynced it, so appends
    /// cost no system call of their own: one `pwrite` + one `fdatasync` cover
    /// every write of a group commit. Under the other policies a record is
    /// written at once (a crash of the process alone must lose nothing).
    /// The buffer starts at the active segment's `flushed` offset (both
    /// change only under the writer lock).
    pub(crate) pending: Vec<u8>,
    /// Segments closed by a roll and not yet fsynced, with the LSN at their
    /// close (not under `never`). The syncer (or the interval thread) syncs
    /// them before the active segment; with `always`, no record of a later
    /// segment reaches its file before they are synced (see `flush_pending`).
    pub(crate) closed: Vec<(Arc<Segment<F>>, u64)>,
    /// With `fsync always`: the active segment's file length, zero-filled
    /// ahead of its records (see [`PREALLOCATE`]); `u64::MAX` after a
    /// zero-fill failed (no more tries in this segment).
    pub(crate) alloc: u64,
}

/// With `fsync always`, the active segment's file is extended with zeros
/// this far ahead of its records, once per this many bytes of records, and
/// records then overwrite the zeros. An `fdatasync` after a write that
/// grows a file must also write the inode (the new size); one after a write
/// within it writes the data alone: on ext4 one disk write instead of two
/// (118 -> 80 us per append + fdatasync here, 35 -> 24 us of CPU; see
/// docs/storage.md). Recovery reads a run of zeros at the end of a segment
/// as its end ([`segment::scan`]).
pub(crate) const PREALLOCATE: u64 = 1 << 20;

/// Past this many buffered bytes an append writes the buffer itself rather
/// than wait for the syncer (bounds the buffer's memory).
const MAX_PENDING: usize = 256 << 10;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Records appended since open.
    pub(crate) appends: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) corrupt_at_recovery: AtomicU64,
    pub(crate) torn_bytes_at_recovery: AtomicU64,
}

pub(crate) struct Inner<F: Fs> {
    /// The file system every file operation goes through.
    pub(crate) fs: F,
    pub(crate) dir: PathBuf,
    pub(crate) opts: LogOptions,
    pub(crate) keydir: KeyDir,
    /// Content summary, kept exact by every append (under the writer lock).
    pub(crate) summary: super::Summary,
    pub(crate) segments: RwLock<BTreeMap<u64, Arc<Segment<F>>>>,
    pub(crate) writer: Mutex<Writer<F>>,
    pub(crate) commit: GroupCommit,
    /// Wakes this store's async writers after each sync, from inside their runtime.
    relay: super::relay::SyncRelay,
    pub(crate) stats: Stats,
    /// Background threads stop when this becomes true.
    pub(crate) stop: Mutex<bool>,
    pub(crate) wake: Condvar,
    /// Set when the maintenance thread should run without waiting.
    pub(crate) kick: AtomicBool,
    /// Serialises maintenance (hint writing, compaction).
    pub(crate) maint: Mutex<()>,
    /// Segments a backup is copying (id → number of snapshots holding it):
    /// compaction leaves them alone.
    pub(crate) pins: Mutex<std::collections::HashMap<u64, usize>>,
    /// What recovery found at open.
    pub(crate) recovered: super::RecoveryReport,
    /// Set by [`LogStore::close`]: writes are refused from then on.
    pub(crate) closed: AtomicBool,
    /// The next segment, created (and its directory entry fsynced) ahead of
    /// time by the maintenance thread so that a roll makes no system call
    /// that waits for the disk. Its id is `next_major(active_id)`.
    pub(crate) spare: Mutex<Option<(u64, F::File)>>,
    /// Id of the active segment (changes only in a roll, under the writer
    /// and `spare` locks).
    pub(crate) active_id: AtomicU64,
    pub(crate) _lock: F::Lock,
}

/// A durable, log-structured [`Store`] in one directory. Open it with
/// [`LogStore::open`]; the directory stays locked until the store is dropped.
/// Dropping stops the background threads and fsyncs the active segment.
/// Generic over the file system ([`vfs::Fs`]); [`RealFs`] unless a test
/// simulates power cuts.
pub struct LogStore<F: Fs = RealFs> {
    inner: Arc<Inner<F>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<F: Fs> fmt::Debug for LogStore<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.inner.dir)
            .field("opts", &self.inner.opts)
            .finish()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl<F: Fs> Inner<F> {
    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer<F>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<Segment<F>>> {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segs.values().cloned().collect()
    }

    pub(crate) fn segment(&self, id: u64) -> Option<Arc<Segment<F>>> {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segs.get(&id).cloned()
    }

    pub(crate) fn add_dead(&self, seg: u64, bytes: u32) {
        if let Some(s) = self.segment(seg) {
            s.dead.fetch_add(u64::from(bytes), Ordering::Relaxed);
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the buffered records of the active segment to its file.
    /// Called with the writer lock held. A failed write poisons the store:
    /// the records are in the key directory but not in the file.
    fn flush_pending(&self, w: &mut Writer<F>) -> std::io::Result<()> {
        if w.pending.is_empty() {
            return Ok(());
        }
        // Records of the active segment reach its file only once every
        // closed segment is synced, so a power cut leaves a torn tail in the
        // newest non-empty segment only. The syncer syncs closed segments
        // first (`prepare_sync`), so only a snapshot, or an append past
        // `MAX_PENDING` right after a roll, gets here with some.
        if !w.closed.is_empty() {
            self.sync_closed(w)?;
        }
        let at = w.active.flushed.load(Ordering::Acquire);
        let end = at + w.pending.len() as u64;
        if end > w.alloc {
            self.preallocate(w, end);
        }
        if let Err(e) = w.active.file.write_all_at(&w.pending, at) {
            let _ = w.active.file.set_len(at);
            self.commit.poison();
            return Err(e);
        }
        w.active
            .flushed
            .store(at + w.pending.len() as u64, Ordering::Release);
        w.pending.clear();
        if w.pending.capacity() > MAX_PENDING {
            w.pending.shrink_to(MAX_PENDING);
        }
        Ok(())
    }

    /// Zero-fills the active segment's file from `end` (where the records
    /// about to be written end) up to [`PREALLOCATE`] bytes further, within
    /// the segment size (writer lock held). The next sync makes the new
    /// length durable once; the records that follow overwrite zeros, so
    /// their syncs write no inode. A failure is not an error: the records
    /// are still written (growing the file, as without preallocation).
    fn preallocate(&self, w: &mut Writer<F>, end: u64) {
        let target = (end + PREALLOCATE).min(self.opts.segment_size);
        if target <= end {
            return;
        }
        let zeros = vec![0u8; (target - end) as usize];
        match w.active.file.write_all_at(&zeros, end) {
            Ok(()) => w.alloc = target,
            Err(e) => {
                tracing::warn!(segment = w.active.id, error = %e,
                    "cannot zero-fill the log ahead of its records; appending without it");
                w.alloc = u64::MAX;
            }
        }
    }

    /// At a stop, after the last sync: cuts the zeros filled ahead of the
    /// active segment's records, so a stopped store's files end at their
    /// last record. Recovery reads such zeros as the end too, so a failure
    /// here loses nothing (it is logged).
    fn cut_zero_fill(&self) {
        let mut w = self.writer();
        let size = w.active.size.load(Ordering::Acquire);
        if !w.pending.is_empty() || !w.active.file.size().is_ok_and(|len| len > size) {
            return;
        }
        match w
            .active
            .file
            .set_len(size)
            .and_then(|()| w.active.file.sync_data())
        {
            Ok(()) => w.alloc = size,
            Err(e) => tracing::warn!(segment = w.active.id, error = %e,
                "cannot cut the zero-filled end of the log at a stop"),
        }
    }

    /// Fsyncs the closed, unsynced segments (writer lock held).
    fn sync_closed(&self, w: &mut Writer<F>) -> std::io::Result<()> {
        for (seg, lsn) in std::mem::take(&mut w.closed) {
            if let Err(e) = seg.file.sync_data() {
                self.commit.poison();
                return Err(e);
            }
            self.commit.mark_synced(lsn);
        }
        Ok(())
    }

    /// What the next sync covers: the segments closed since the last sync
    /// if there are any (with the LSN at the last close), else the active
    /// segment with its buffered records written out (with the LSN appended
    /// so far). The third value is true in the second case.
    fn prepare_sync(&self) -> (u64, std::io::Result<Vec<Arc<Segment<F>>>>, bool) {
        let mut w = self.writer();
        if let Some(&(_, lsn)) = w.closed.last() {
            let segs = w.closed.drain(..).map(|(s, _)| s).collect();
            return (lsn, Ok(segs), false);
        }
        let flushed = self.flush_pending(&mut w);
        (w.lsn, flushed.map(|()| vec![w.active.clone()]), true)
    }

    /// Writes out the buffered records without syncing (the syncer does
    /// this when it has been idle a while, so a record nobody waits for
    /// reaches the kernel soon).
    fn flush_idle(&self) {
        let mut w = self.writer();
        if let Err(e) = self.flush_pending(&mut w) {
            tracing::error!(error = %e, "writing buffered records failed; the store is poisoned");
        }
    }

    /// Blocks until `lsn` is durable under the policy.
    fn wait_durable(&self, lsn: u64) -> Result<(), StoreError> {
        match self.opts.fsync {
            FsyncPolicy::Always if lsn > 0 => self.commit.wait(lsn),
            _ if self.commit.is_poisoned() => Err(StoreError::Poisoned),
            _ => Ok(()),
        }
    }

    /// What an async writer waits for before a write at `lsn` is durable.
    fn durable(&self, lsn: u64) -> super::Durable {
        match self.opts.fsync {
            FsyncPolicy::Always if lsn > 0 => {
                self.commit.request(lsn);
                let local = self.relay.receiver(|| self.commit.subscribe());
                super::Durable::relayed(local, self.commit.subscribe(), lsn)
            }
            _ => super::Durable::ready(),
        }
    }

    /// Fsyncs the closed segments and then the active one; returns the LSN
    /// that is now durable.
    pub(crate) fn sync_active(&self) -> std::io::Result<u64> {
        // Writers may roll meanwhile; each round syncs what was closed, and
        // every round's LSN is durable when it returns.
        let mut synced = 0;
        for _ in 0..64 {
            let (lsn, segs, active) = self.prepare_sync();
            for seg in segs? {
                seg.file.sync_data()?;
            }
            synced = lsn;
            if active {
                break;
            }
        }
        Ok(synced)
    }

    /// Creates the next segment ahead of a roll, if it does not exist yet
    /// (the maintenance thread calls this; it takes no writer lock).
    pub(crate) fn prepare_spare(&self) -> std::io::Result<()> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_some() || self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let id = segment::next_major(self.active_id.load(Ordering::Acquire));
        let file = crate::durable::create_new_in(&self.fs, &segment::seg_path(&self.dir, id))?;
        *spare = Some((id, file));
        Ok(())
    }

    /// Closes the active segment and starts the next one. Called with the
    /// writer lock held, on the writer's thread (often an async runtime
    /// worker), so it makes no system call that waits for the disk when the
    /// spare segment is ready: the closed segment is fsynced later by the
    /// syncer (or the interval thread), before any record of the new one
    /// reaches its file and before any write in either is acknowledged.
    fn roll(&self, w: &mut Writer<F>) -> Result<(), StoreError> {
        self.flush_pending(w)?;
        let id = segment::next_major(w.active.id);
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let file = match spare.take() {
            Some((sid, file)) if sid == id => file,
            _ => {
                tracing::debug!(segment = id, "no spare segment ready; creating it now");
                crate::durable::create_new_in(&self.fs, &segment::seg_path(&self.dir, id))?
            }
        };
        let seg = Arc::new(Segment::new(id, file, 0, 0, false, self.opts.segment_size));
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, seg.clone());
        let old = std::mem::replace(&mut w.active, seg);
        w.alloc = 0;
        self.active_id.store(id, Ordering::Release);
        drop(spare);
        if self.opts.fsync != FsyncPolicy::Never {
            w.closed.push((old.clone(), w.lsn));
        }
        tracing::debug!(closed = old.id, opened = id, "segment rolled over");
        self.kick.store(true, Ordering::Release);
        self.wake.notify_all();
        Ok(())
    }

    /// Appends one record and updates the key directory and the content
    /// summary; returns its LSN.
    fn append(&self, key: &[u8], value: &[u8], flags: u8) -> Result<u64, StoreError> {
        let tomb = flags & record::FLAG_TOMBSTONE != 0;
        let mut rec = Vec::new();
        record::encode(&mut rec, now_micros(), flags, key, value);
        let digest = if tomb {
            0
        } else {
            crate::keyspace::digest(value)
        };
        let len = rec.len() as u64;
        let mut w = self.writer();
        if self.commit.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if tomb && self.keydir.get(key).is_none() {
            return Ok(0);
        }
        let size = w.active.size.load(Ordering::Acquire);
        if size > 0 && size + len > self.opts.segment_size {
            self.roll(&mut w)?;
        }
        let seg = w.active.clone();
        let off = seg.size.load(Ordering::Acquire);
        if self.opts.fsync == FsyncPolicy::Always {
            // Buffered: the syncer writes it out before the fsync that
            // makes it durable.
            if w.pending.len() + rec.len() > MAX_PENDING {
                self.flush_pending(&mut w)?;
            }
            debug_assert_eq!(
                seg.flushed.load(Ordering::Acquire) + w.pending.len() as u64,
                off
            );
            w.pending.extend_from_slice(&rec);
        } else {
            if let Err(e) = seg.file.write_all_at(&rec, off) {
                // Cut off any partial record so the next append starts clean.
                if seg.file.set_len(off).is_err() {
                    self.commit.poison();
                }
                return Err(e.into());
            }
            seg.flushed.store(off + len, Ordering::Release);
        }
        seg.size.store(off + len, Ordering::Release);
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        w.lsn += len;
        let lsn = w.lsn;
        let loc = Location {
            seg: seg.id,
            offset: off as u32,
            len: len as u32,
            digest,
        };
        let old = if tomb {
            seg.dead.fetch_add(len, Ordering::Relaxed);
            self.keydir.remove(key)
        } else {
            self.keydir.insert(key, loc)
        };
        self.summary
            .change(key, old.map(|o| o.digest), (!tomb).then_some(digest));
        if let Some(o) = old {
            self.add_dead(o.seg, o.len);
        }
        drop(w);
        Ok(lsn)
    }

    fn write(&self, key: &[u8], value: &[u8], flags: u8) -> Result<u64, StoreError> {
        if key.len() > record::MAX_KEY_LEN {
            return Err(StoreError::TooLarge {
                what: "key",
                len: key.len(),
                limit: record::MAX_KEY_LEN,
            });
        }
        if value.len() > record::MAX_VALUE_LEN {
            return Err(StoreError::TooLarge {
                what: "value",
                len: value.len(),
                limit: record::MAX_VALUE_LEN,
            });
        }
        self.append(key, value, flags)
    }

    /// The bytes of the record at `loc` in `seg`: from the file, or from
    /// the writer's buffer while the record has not been written out yet.
    fn read_record(&self, seg: &Segment<F>, loc: Location) -> std::io::Result<Vec<u8>> {
        let (off, len) = (u64::from(loc.offset), loc.len as usize);
        let end = off + len as u64;
        let mut flushed = seg.flushed.load(Ordering::Acquire);
        if end > flushed {
            let w = self.writer();
            // `flushed` moves and the buffer empties together, under the
            // writer lock: a record not in the buffer now is in the file.
            flushed = seg.flushed.load(Ordering::Acquire);
            if w.active.id == seg.id && off >= flushed {
                let start = (off - flushed) as usize;
                if let Some(bytes) = w.pending.get(start..start + len) {
                    return Ok(bytes.to_vec());
                }
            }
        }
        // Through the mapping only below `flushed` (see `Segment::map`).
        if let Some(map) = &seg.map
            && end <= flushed
            && let Some(bytes) = map.get(off as usize..end as usize)
        {
            return Ok(bytes.to_vec());
        }
        let mut buf = vec![0u8; len];
        seg.file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Compaction may move the record and drop its old segment between the
        // two look-ups below; the key directory then already points at the
        // new copy, so a retry finds it.
        for _ in 0..100 {
            let Some(loc) = self.keydir.get(key) else {
                return Ok(None);
            };
            let Some(seg) = self.segment(loc.seg) else {
                std::thread::yield_now();
                continue;
            };
            let mut buf = self.read_record(&seg, loc)?;
            let corrupt = |reason: String| StoreError::Corrupt {
                file: segment::seg_path(&self.dir, loc.seg).display().to_string(),
                offset: u64::from(loc.offset),
                reason,
            };
            let (rec, _) = record::decode(&buf).map_err(|e| corrupt(e.to_string()))?;
            if rec.key != key || rec.is_tombstone() {
                return Err(corrupt("key directory points at another record".into()));
            }
            let start = record::HEADER_LEN + key.len();
            buf.drain(..start);
            return Ok(Some(buf));
        }
        Err(StoreError::Corrupt {
            file: self.dir.display().to_string(),
            offset: 0,
            reason: "key directory points at a missing segment".into(),
        })
    }
}

impl LogStore<RealFs> {
    /// Opens (creating if needed) the store in `dir`: takes the directory
    /// lock, checks the format version, recovers the key directory from hint
    /// files or segment scans, truncates a torn tail of the last segment and
    /// starts the background threads. Fails with [`StoreError::Locked`] if
    /// another process (or another `LogStore`) has the directory open, and
    /// with [`StoreError::UnsupportedFormat`] for an unknown format.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogStore, StoreError> {
        Self::open_in(RealFs, dir, opts)
    }
}

impl<F: Fs> LogStore<F> {
    /// [`LogStore::open`] on the file system `fs`.
    pub fn open_in(fs: F, dir: &Path, opts: LogOptions) -> Result<LogStore<F>, StoreError> {
        Self::open_with(fs, dir, opts, true)
    }

    /// Opens the store; without `maintenance` no background thread writes
    /// hints or compacts (a test then calls [`LogStore::compact_now`], so
    /// the order of file operations depends on the test alone).
    pub(crate) fn open_with(
        fs: F,
        dir: &Path,
        opts: LogOptions,
        maintenance: bool,
    ) -> Result<LogStore<F>, StoreError> {
        if !(1024..=(1 << 30)).contains(&opts.segment_size) {
            return Err(StoreError::InvalidConfig(format!(
                "segment size {} is outside 1 KiB ..= 1 GiB",
                opts.segment_size
            )));
        }
        if !(0.0..=1.0).contains(&opts.compaction_threshold) {
            return Err(StoreError::InvalidConfig(format!(
                "compaction threshold {} is outside 0.0 ..= 1.0",
                opts.compaction_threshold
            )));
        }
        let inner = Arc::new(recovery::open(fs, dir, opts)?);
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(StoreError::Io)
        };
        if maintenance {
            let inner = inner.clone();
            threads.push(spawn(
                "store-maint",
                Box::new(move || compaction::maintenance_loop(&inner)),
            )?);
        }
        match inner.opts.fsync {
            FsyncPolicy::Interval(every) => {
                let inner = inner.clone();
                threads.push(spawn(
                    "store-fsync",
                    Box::new(move || interval_sync_loop(&inner, every)),
                )?);
            }
            FsyncPolicy::Always => {
                let inner = inner.clone();
                threads.push(spawn(
                    "store-sync",
                    Box::new(move || {
                        inner.commit.run_syncer(
                            inner.opts.group_commit_window,
                            || {
                                let (lsn, segs, _) = inner.prepare_sync();
                                (lsn, segs)
                            },
                            |segs| segs?.iter().try_for_each(|s| s.file.sync_data()),
                            || inner.flush_idle(),
                        )
                    }),
                )?);
            }
            FsyncPolicy::Never => {}
        }
        Ok(LogStore {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// Stops the background threads (waiting for them).
    fn stop_threads(&self) {
        *self.inner.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.wake.notify_all();
        self.inner.commit.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a storage background thread panicked");
            }
        }
    }

    /// The segments as they stand now.
    fn manifest(&self) -> super::Manifest {
        let mut segments: Vec<(u64, u64)> = self
            .inner
            .segments_snapshot()
            .iter()
            .map(|s| (s.id, s.size.load(Ordering::Acquire)))
            .collect();
        segments.sort_unstable();
        super::Manifest { segments }
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Calls `f` with every live key (a consistent view per internal shard,
    /// not across shards). Does not allocate per key; use it to walk a large
    /// store, e.g. to replay hinted handoffs.
    pub fn for_each_key(&self, mut f: impl FnMut(&[u8])) {
        self.inner.keydir.for_each(|k, _| f(k));
    }

    /// Runs one compaction pass now (normally the background thread does
    /// this every `compaction_interval`). Returns the bytes reclaimed.
    pub fn compact_now(&self) -> Result<u64, StoreError> {
        let _guard = self.inner.maint.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.prepare_spare()?;
        compaction::write_missing_hints(&self.inner)?;
        compaction::compact(&self.inner)
    }

    /// Fsyncs everything written so far, whatever the policy.
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.inner.commit.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        match self.inner.sync_active() {
            Ok(lsn) => {
                self.inner.commit.mark_synced(lsn);
                Ok(())
            }
            Err(e) => {
                self.inner.commit.poison();
                Err(e.into())
            }
        }
    }

    /// Heap bytes held by the key directory (for the memory benchmark).
    pub fn keydir_heap_bytes(&self) -> usize {
        self.inner.keydir.heap_bytes()
    }
}

fn interval_sync_loop<F: Fs>(inner: &Inner<F>, every: Duration) {
    let mut stop = inner.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        stop = inner
            .wake
            .wait_timeout(stop, every)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *stop {
            return;
        }
        drop(stop);
        if let Err(e) = inner.sync_active().map(|lsn| inner.commit.mark_synced(lsn)) {
            tracing::error!(error = %e, "interval fsync failed; the store is poisoned");
            inner.commit.poison();
        }
        stop = inner.stop.lock().unwrap_or_else(|e| e.into_inner());
    }
}

impl<F: Fs> Drop for LogStore<F> {
    fn drop(&mut self) {
        self.stop_threads();
        if !self.inner.commit.is_poisoned() {
            if let Err(e) = self.inner.sync_active() {
                tracing::error!(error = %e, "final fsync failed");
            } else {
                self.inner.cut_zero_fill();
            }
        }
    }
}

impl<F: Fs> Store for LogStore<F> {
    fn flush(&self) -> Result<(), StoreError> {
        self.sync()
    }

    fn recovery(&self) -> Option<super::RecoveryReport> {
        Some(self.inner.recovered.clone())
    }

    fn backup_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.snapshot().map(Some)
    }

    fn close(&self) -> Result<Option<super::Manifest>, StoreError> {
        self.stop_threads();
        {
            // Under the writer lock: no append is half done once this is set.
            let _w = self.inner.writer();
            self.inner.closed.store(true, Ordering::Release);
        }
        self.sync()?;
        self.inner.cut_zero_fill();
        Ok(Some(self.manifest()))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn digest(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        // The key directory keeps each live value's digest: no record read.
        Ok(self.inner.keydir.get(key).map(|loc| loc.digest))
    }

    fn append(&self, key: &[u8], value: &[u8]) -> Result<super::Lsn, StoreError> {
        self.inner.write(key, value, 0)
    }

    fn append_delete(&self, key: &[u8]) -> Result<super::Lsn, StoreError> {
        self.inner.write(key, &[], record::FLAG_TOMBSTONE)
    }

    fn durable(&self, lsn: super::Lsn) -> super::Durable {
        self.inner.durable(lsn)
    }

    fn wait_durable(&self, lsn: super::Lsn) -> Result<(), StoreError> {
        self.inner.wait_durable(lsn)
    }

    fn summary(&self) -> &super::Summary {
        &self.inner.summary
    }

    fn partition_keys(&self, p: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.inner
            .keydir
            .for_each_in(p, |k, _| out.push(k.to_vec()));
        out
    }

    fn partition_len(&self, p: usize) -> usize {
        self.inner.keydir.len_in(p)
    }

    fn partition_digests(&self, p: usize, buckets: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        self.inner.keydir.for_each_in(p, |k, loc| {
            let b = crate::keyspace::bucket_of(k) as u8;
            if buckets.contains(&b) {
                out.push((k.to_vec(), loc.digest));
            }
        });
        out
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::with_capacity(self.inner.keydir.len());
        self.for_each_key(|k| out.push(k.to_vec()));
        Ok(out)
    }

    fn sync_histograms(&self) -> Option<super::SyncHistograms> {
        Some(super::SyncHistograms {
            fsync_seconds: self.inner.commit.sync_latency.snapshot(),
            batch: self.inner.commit.batch.snapshot(),
        })
    }

    fn status(&self) -> StoreStatus {
        let segs = self.inner.segments_snapshot();
        let bytes: u64 = segs.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
        let dead: u64 = segs.iter().map(|s| s.dead.load(Ordering::Relaxed)).sum();
        let st = &self.inner.stats;
        let reclaimed = st.reclaimed.load(Ordering::Relaxed);
        let corrupt = st.corrupt_at_recovery.load(Ordering::Relaxed);
        let details = vec![
            ("dir".into(), self.inner.dir.display().to_string()),
            ("fsync".into(), self.inner.opts.fsync.to_string()),
            ("segments".into(), segs.len().to_string()),
            ("dead_bytes".into(), dead.to_string()),
            ("reclaimed_bytes".into(), reclaimed.to_string()),
            (
                "compactions".into(),
                st.compactions.load(Ordering::Relaxed).to_string(),
            ),
            (
                "appends".into(),
                st.appends.load(Ordering::Relaxed).to_string(),
            ),
            ("syncs".into(), self.inner.commit.syncs().to_string()),
            ("corrupt_records_skipped".into(), corrupt.to_string()),
            (
                "torn_tail_bytes_truncated".into(),
                st.torn_bytes_at_recovery
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "poisoned".into(),
                self.inner.commit.is_poisoned().to_string(),
            ),
        ];
        StoreStatus {
            backend: "log".into(),
            keys: self.inner.keydir.len() as u64,
            bytes,
            segments: segs.len() as u64,
            dead_bytes: dead,
            reclaimed_bytes: reclaimed,
            corrupt_records: corrupt,
            details,
        }
    }
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
