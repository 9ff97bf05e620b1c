//! The local replica: versioned objects in the node's [`Store`].
//!
//! Every read-modify-write of a key (a coordinated update, a merge from a
//! peer) holds that key's lock stripe, so two concurrent changes to one key
//! on one node never lose each other. Everything here is synchronous and
//! short: a key-directory look-up, a read from the page cache, a merge, an
//! append. Nothing waits for a sync while holding a lock: a change returns
//! its LSN, and the caller waits for [`Replica::durable`] afterwards, so one
//! group commit covers every change that arrived meanwhile.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{error, warn};

use crate::clock::SharedClock;
use crate::epoch::ActorCell;
use crate::keyspace::{PARTITIONS, partition_of};
use crate::object::{Object, UpdateError};
use crate::storage::{Durable, Lsn, Store, StoreError};
use crate::vclock::{Dot, VClock};
use crate::write::{Done, Write};

/// Lock stripes: keys hash onto this many mutexes.
const STRIPES: usize = 1024;

/// Why a local operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An incoming copy, or the merge with it, breaks the object bounds.
    #[error("refused: {0}")]
    Refused(#[from] crate::object::ObjectError),
    /// The update was refused.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// The write was refused (not an integer, overflow, ...).
    #[error(transparent)]
    Write(#[from] crate::write::WriteError),
    /// A hint was refused: hint storage is at a cap (nothing was stored).
    #[error(transparent)]
    HintsFull(#[from] HintsFull),
    /// The stored copy of the key does not decode.
    #[error("the local copy of this key is corrupt ({0}); it is repaired from other replicas")]
    Corrupt(String),
    /// A read of a partition this store, restored from a backup, has not
    /// yet compared with its peers ([`CatchUp`]): other replicas answer.
    #[error("restored from a backup and not yet compared with its peers (anti-entropy)")]
    Behind,
}

/// Which cap refused a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    /// Hinted keys held for one owner ([`HintLimits::per_node`]).
    PerNode,
    /// Bytes held in total ([`HintLimits::bytes`]).
    Bytes,
}

impl Cap {
    /// The node flag that sets this cap.
    pub fn flag(self) -> &'static str {
        match self {
            Cap::PerNode => "--max-hints-per-node",
            Cap::Bytes => "--max-hint-bytes",
        }
    }
}

/// A hint refused because hint storage is at a cap; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct HintsFull {
    /// The owner the hint was for.
    pub owner: String,
    /// The cap that refused it.
    pub cap: Cap,
    /// Hints held for that owner.
    pub hints: usize,
    /// Bytes of hints held in total.
    pub bytes: u64,
    /// The cap's value.
    pub limit: u64,
}

impl HintsFull {
    fn describe(&self) -> String {
        match self.cap {
            Cap::PerNode => format!(
                "hint storage full for {}: {} hints held ({} {})",
                self.owner,
                self.hints,
                self.cap.flag(),
                self.limit
            ),
            Cap::Bytes => format!(
                "hint storage full for {}: {} bytes of hints held in total ({} {})",
                self.owner,
                self.bytes,
                self.cap.flag(),
                self.limit
            ),
        }
    }
}

/// A write made by this node's actor.
#[derive(Debug)]
pub struct Written {
    /// The object now stored.
    pub object: Object,
    /// True when the key had a live value before.
    pub existed: bool,
    /// Where it was appended (wait for [`Replica::durable`] of it).
    pub lsn: Lsn,
}

/// A copy merged in.
#[derive(Debug)]
pub struct MergeOutcome {
    /// The object now stored.
    pub object: Object,
    /// Where it was appended (0 when nothing changed).
    pub lsn: Lsn,
    /// Dots the merge found carrying two values (see [`Object::merge_checked`]).
    pub conflicts: Vec<Dot>,
}

/// The node's local copy of the data.
pub struct Replica {
    /// Wall-clock time for deadlines and write timestamps.
    clock: SharedClock,
    store: Arc<dyn Store>,
    locks: KeyLocks,
    /// This node's actor: writes are made under it, and a merge that finds
    /// one of its dots reused starts a new epoch.
    actor: Arc<ActorCell>,
    /// Dots found carrying two different values.
    conflicts: AtomicU64,
    /// Clock entries of retired actors dropped.
    pruned: AtomicU64,
    /// Keys with a version that will expire, by deadline.
    deadlines: Deadlines,
    /// Keys whose versions expired here and were stored as tombstones.
    expired: AtomicU64,
    /// Keys holding a live value, per partition (tombstones stay in the
    /// store, so the store's own count includes deleted keys). Kept by every
    /// write and rebuilt by the expiry worker's scan after a start.
    live: Vec<AtomicI64>,
    /// After a restore: the partitions whose copies are not yet compared
    /// with a peer's, whose reads this replica must not answer.
    catch_up: CatchUp,
}

/// The read gate of a store restored from a backup (an old state): until
/// anti-entropy has compared a partition with a peer's copy (and repaired
/// the differences), this replica answers no read of it, so neither its
/// own coordinator nor a peer takes its old copies for current; the other
/// replicas answer instead. Writes and repairs are taken as usual.
#[derive(Debug)]
pub struct CatchUp {
    /// The marker `db restore` left; removed once caught up, so the gate
    /// survives a restart until then.
    marker: std::sync::Mutex<Option<std::path::PathBuf>>,
    active: std::sync::atomic::AtomicBool,
    done: Vec<std::sync::atomic::AtomicBool>,
    left: std::sync::atomic::AtomicUsize,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp {
            marker: std::sync::Mutex::new(None),
            active: std::sync::atomic::AtomicBool::new(false),
            done: (0..PARTITIONS)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            left: std::sync::atomic::AtomicUsize::new(PARTITIONS),
        }
    }
}

impl CatchUp {
    /// Closes every partition to reads until [`CatchUp::caught_up`]; the
    /// `marker` file is removed once every partition caught up.
    pub fn start(&self, marker: Option<std::path::PathBuf>) {
        *self.marker.lock().unwrap_or_else(|e| e.into_inner()) = marker;
        self.active.store(true, Ordering::Release);
    }

    /// Opens the gate for good: removes the marker.
    fn finish(&self) {
        self.active.store(false, Ordering::Release);
        let marker = self.marker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(path) = marker
            && let Err(e) = crate::durable::remove(&path)
        {
            tracing::warn!(file = %path.display(), cause = %e, "cannot remove the restore marker; the next start takes a new epoch again");
        }
    }

    /// True while reads of partition `p` must go to other replicas.
    pub fn behind(&self, p: usize) -> bool {
        self.active.load(Ordering::Acquire)
            && !self.done.get(p).is_none_or(|d| d.load(Ordering::Acquire))
    }

    /// Partition `p` now holds what a peer holds (or has no peer to ask).
    pub fn caught_up(&self, p: usize) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Some(d) = self.done.get(p)
            && !d.swap(true, Ordering::AcqRel)
        {
            let left = self.left.fetch_sub(1, Ordering::AcqRel) - 1;
            if left == 0 {
                tracing::info!(
                    "the restored store has caught up with its peers: it answers reads again"
                );
                self.finish();
            }
        }
    }

    /// Opens every partition (anti-entropy is off: nothing would catch up).
    pub fn give_up(&self) {
        if self.active.load(Ordering::Acquire) {
            tracing::warn!(
                "anti-entropy is off: the restored store answers reads with its old copies"
            );
            self.finish();
        }
    }

    /// Partitions still closed to reads (0 when not restored).
    pub fn behind_count(&self) -> usize {
        if self.active.load(Ordering::Acquire) {
            self.left.load(Ordering::Acquire)
        } else {
            0
        }
    }
}

/// Keys holding a version with a deadline, ordered by the earliest one, so
/// the expiry worker finds what is due without reading every key. Bounded:
/// past [`DEADLINES_MAX`] entries new ones are dropped and the index asks
/// for a full scan of the store instead (as at start).
pub struct Deadlines {
    set: Mutex<BTreeSet<(u64, Vec<u8>)>>,
    full_scan: AtomicBool,
}

/// Entries the deadline index holds before it falls back to full scans.
pub const DEADLINES_MAX: usize = 1_000_000;

impl Deadlines {
    fn new() -> Deadlines {
        Deadlines {
            set: Mutex::new(BTreeSet::new()),
            // What the store held before this start is not indexed yet.
            full_scan: AtomicBool::new(true),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<(u64, Vec<u8>)>> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes `key` under the earliest deadline of its live versions.
    fn track(&self, key: &[u8], object: &Object, now_ms: u64) {
        let Some(at) = object
            .siblings
            .iter()
            .filter(|s| s.is_live(now_ms))
            .filter_map(|s| s.expires_ms)
            .min()
        else {
            return;
        };
        let mut set = self.lock();
        if set.len() >= DEADLINES_MAX {
            self.full_scan.store(true, Ordering::Relaxed);
            return;
        }
        set.insert((at, key.to_vec()));
    }

    /// Takes up to `max` keys whose deadline is at or before `now_ms`.
    pub fn due(&self, now_ms: u64, max: usize) -> Vec<Vec<u8>> {
        let mut set = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            match set.first() {
                Some((at, _)) if *at <= now_ms => {
                    if let Some((_, key)) = set.pop_first() {
                        out.push(key);
                    }
                }
                _ => break,
            }
        }
        out
    }

    /// The earliest deadline indexed.
    pub fn next(&self) -> Option<u64> {
        self.lock().first().map(|(at, _)| *at)
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True (once) when the store must be scanned to find deadlines.
    pub fn take_full_scan(&self) -> bool {
        self.full_scan.swap(false, Ordering::Relaxed)
    }
}

impl Replica {
    /// Wraps a store; writes are made as `actor`.
    pub fn new(store: Arc<dyn Store>, actor: Arc<ActorCell>) -> Replica {
        Replica::with_clock(store, actor, crate::clock::system())
    }

    /// A replica whose wall-clock time (deadlines, write timestamps) comes
    /// from `clock`.
    pub fn with_clock(store: Arc<dyn Store>, actor: Arc<ActorCell>, clock: SharedClock) -> Replica {
        Replica {
            clock,
            store,
            locks: KeyLocks::new(STRIPES),
            actor,
            conflicts: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            deadlines: Deadlines::new(),
            expired: AtomicU64::new(0),
            live: (0..PARTITIONS).map(|_| AtomicI64::new(0)).collect(),
            catch_up: CatchUp::default(),
        }
    }

    /// The read gate of a restored store.
    pub fn catch_up(&self) -> &CatchUp {
        &self.catch_up
    }

    /// Wall-clock milliseconds, from this replica's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The clock (shared with the node's other parts).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Keys of partition `p` holding a live value here (exact once the
    /// start-up scan passed `p`; before, only what changed since start).
    pub fn live_count(&self, p: usize) -> u64 {
        self.live
            .get(p)
            .map_or(0, |n| n.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Counts a key turning live or deleted. A key counts as live while a
    /// version of it is not a tombstone: one whose deadline passed counts
    /// until it is stored as a tombstone (which every write and the expiry
    /// worker do), so each key is counted in and out exactly once.
    fn count_live(&self, key: &[u8], before: Option<&Object>, after: &Object) {
        let counted = |o: &Object| o.siblings.iter().any(|s| !s.is_tombstone());
        let was = before.is_some_and(counted);
        let is = counted(after);
        if was != is {
            self.live[partition_of(key)].fetch_add(if is { 1 } else { -1 }, Ordering::Relaxed);
        }
    }

    /// The index of keys with deadlines.
    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Keys expired here since start.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Indexes the deadlines of every key in partition `p` (the full scan
    /// the index asks for at start), expiring what is due on the way;
    /// returns how many keys were expired.
    pub fn index_partition(&self, p: usize) -> Result<usize, ReplicaError> {
        let (mut n, mut live) = (0, 0);
        for key in self.store.partition_keys(p) {
            let now = self.now_ms();
            match load_object(&*self.store, &key) {
                Ok(Some((_, o)))
                    if o.siblings
                        .iter()
                        .any(|s| s.is_expired(now) && !s.is_tombstone()) =>
                {
                    n += usize::from(self.expire_now(&key)?);
                }
                Ok(Some((_, o))) => {
                    live += i64::from(o.siblings.iter().any(|s| !s.is_tombstone()));
                    self.deadlines.track(&key, &o, now);
                }
                Ok(None) | Err(ReplicaError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Writes during the scan may make this off by a few: an estimate.
        self.live[p].store(live, Ordering::Relaxed);
        Ok(n)
    }

    /// Deletes `key` physically if its stored copy is still the encoding
    /// whose digest is `digest` (tombstone collection, phase 2); a key
    /// already gone counts as deleted. Returns whether it is gone, and the
    /// LSN to wait for.
    pub fn delete_if_digest(&self, key: &[u8], digest: u64) -> Result<(bool, Lsn), ReplicaError> {
        let _guard = self.locks.of(key);
        match self.store.get(key)? {
            None => Ok((true, 0)),
            Some(bytes) if crate::keyspace::digest(&bytes) == digest => {
                Ok((true, self.store.append_delete(key)?))
            }
            Some(_) => Ok((false, 0)),
        }
    }

    /// The digest of `key`'s stored copy (`None`: no copy).
    pub fn stored_digest(&self, key: &[u8]) -> Result<Option<u64>, ReplicaError> {
        Ok(self.store.digest(key)?)
    }

    /// Drops this node's copy of every key of partition `p` (it no longer
    /// replicates it: a layout change moved it, and its new owners hold it
    /// durably). Physical deletes, not tombstones; returns how many keys
    /// and the LSN to wait for.
    pub fn drop_partition(&self, p: usize) -> Result<(usize, Lsn), ReplicaError> {
        let (mut n, mut lsn) = (0, 0);
        for key in self.store.partition_keys(p) {
            let _guard = self.locks.of(&key);
            lsn = lsn.max(self.store.append_delete(&key)?);
            n += 1;
        }
        self.live[p].store(0, Ordering::Relaxed);
        Ok((n, lsn))
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This node's actor.
    pub fn actor(&self) -> &Arc<ActorCell> {
        &self.actor
    }

    /// Dots found reused (two values under one dot) since start.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Clock entries of retired actors dropped so far.
    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// What to wait for before a change at `lsn` is durable.
    pub fn durable(&self, lsn: Lsn) -> Durable {
        self.store.durable(lsn)
    }

    /// Reads the local copy of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        load_object(&*self.store, key).map(|o| o.map(|(_, o)| o))
    }

    /// Reads the local copy of `key` with the digest of its stored bytes
    /// (what [`Replica::stored_digest`] answers for it).
    pub fn get_with_digest(&self, key: &[u8]) -> Result<Option<(u64, Object)>, ReplicaError> {
        load_object(&*self.store, key)
            .map(|o| o.map(|(bytes, o)| (crate::keyspace::digest(&bytes), o)))
    }

    /// Merges `incoming` into the local copy. An incoming copy that breaks
    /// the object rules, or a merge whose result would exceed the bounds, is
    /// refused (and logged): nothing is stored.
    pub fn merge(&self, key: &[u8], incoming: &Object) -> Result<MergeOutcome, ReplicaError> {
        if let Err(e) = incoming.validate() {
            warn!(key = %String::from_utf8_lossy(key), cause = %e, "refusing an invalid copy");
            return Err(e.into());
        }
        let _guard = self.locks.of(key);
        let local = match load_object(&*self.store, key) {
            // An incoming copy replaces an undecodable one: that is the repair.
            Err(ReplicaError::Corrupt(cause)) => {
                error!(key = %String::from_utf8_lossy(key), %cause, "replacing a corrupt local copy with a replica's copy");
                None
            }
            other => other?.map(|(_, o)| o),
        };
        let (mut merged, conflicts) = match &local {
            Some(l) => match l.merge_checked(incoming) {
                Ok(m) => (m.object, m.new_conflicts),
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(key), cause = %e, "refusing a merge beyond the object bounds");
                    return Err(e.into());
                }
            },
            None => (incoming.clone(), Vec::new()),
        };
        // Versions whose deadline passed are stored as tombstones.
        merged.expire(self.now_ms());
        self.prune(&mut merged);
        self.note_conflicts(key, &conflicts);
        let lsn = if local.as_ref() != Some(&merged) {
            let lsn = self.store.append(key, &merged.to_bytes())?;
            let now = self.now_ms();
            self.count_live(key, local.as_ref(), &merged);
            self.deadlines.track(key, &merged, now);
            lsn
        } else {
            0
        };
        Ok(MergeOutcome {
            object: merged,
            lsn,
            conflicts,
        })
    }

    /// Drops retired actors from a clock about to be stored (see
    /// [`Object::prune`]); counted in `clock_entries_pruned`.
    fn prune(&self, object: &mut Object) {
        let r = self.actor.retirement();
        let before = self.now_ms().saturating_sub(r.grace_ms);
        let dropped = object.prune(&r.own, before);
        if dropped > 0 {
            self.pruned.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// Counts dots found reused, and starts a new epoch if one is this
    /// node's own.
    fn note_conflicts(&self, key: &[u8], dots: &[Dot]) {
        if dots.is_empty() {
            return;
        }
        self.conflicts
            .fetch_add(dots.len() as u64, Ordering::Relaxed);
        for dot in dots {
            error!(key = %String::from_utf8_lossy(key), actor = %dot.actor, counter = dot.counter,
                   "one dot carries two different values (an actor reused it); both are kept as siblings");
        }
        self.note_conflicts_seen_by_peer(dots);
    }

    /// A peer's merge found these dots reused: if one is this node's own,
    /// start a new epoch.
    pub fn note_conflicts_seen_by_peer(&self, dots: &[Dot]) {
        if dots.iter().any(|d| self.actor.is_current(&d.actor)) {
            self.actor.rotate("this node's own dot was found reused");
        }
    }

    /// Runs `f` on this replica on tokio's blocking pool: for work that
    /// reads every object of a partition (SCAN, KEYS and the peer request
    /// behind them, the expiry index's start-up scan), which must not stall
    /// the runtime's threads.
    pub async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Replica) -> Result<T, ReplicaError> + Send + 'static,
    ) -> Result<T, ReplicaError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .unwrap_or_else(|e| {
                Err(ReplicaError::Store(StoreError::Io(std::io::Error::other(
                    e,
                ))))
            })
    }

    /// The keys of partition `p` that hold a value at `now_ms`.
    pub fn live_keys(&self, p: usize, now_ms: u64) -> Result<Vec<Vec<u8>>, ReplicaError> {
        let mut out = Vec::new();
        for key in self.store.partition_keys(p) {
            match load_object(&*self.store, &key) {
                Ok(Some((_, o))) if !o.is_deleted_at(now_ms) => out.push(key),
                Ok(_) | Err(ReplicaError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Stores the versions of `key` whose deadline passed as tombstones;
    /// returns true when something changed.
    pub fn expire_now(&self, key: &[u8]) -> Result<bool, ReplicaError> {
        let _guard = self.locks.of(key);
        let Some((_, before)) = load_object(&*self.store, key)? else {
            return Ok(false);
        };
        let mut object = before.clone();
        let now = self.now_ms();
        if !object.expire(now) {
            self.deadlines.track(key, &object, now);
            return Ok(false);
        }
        self.store.append(key, &object.to_bytes())?;
        self.expired.fetch_add(1, Ordering::Relaxed);
        self.count_live(key, Some(&before), &object);
        self.deadlines.track(key, &object, now);
        Ok(true)
    }

    /// Applies a client write as this node's actor (see [`crate::write`]).
    /// With no `context`, the write supersedes whatever the local copy has
    /// seen. Returns what was stored (nothing when a condition kept the
    /// write from happening) and what the client is told.
    pub fn apply(
        &self,
        key: &[u8],
        context: Option<&VClock>,
        write: &Write,
    ) -> Result<(Option<Written>, Done), ReplicaError> {
        let _guard = self.locks.of(key);
        let local = load_object(&*self.store, key)?.map(|(_, o)| o);
        let actor = self.actor.get();
        let now = self.now_ms();
        let (object, done) = crate::write::apply(local.as_ref(), context, &actor, write, now)?;
        let Some(mut object) = object else {
            return Ok((None, done));
        };
        object.expire(now);
        self.prune(&mut object);
        let lsn = self.store.append(key, &object.to_bytes())?;
        self.count_live(key, local.as_ref(), &object);
        self.deadlines.track(key, &object, now);
        let written = Written {
            object,
            existed: done.existed,
            lsn,
        };
        Ok((Some(written), done))
    }

    /// Applies a plain write (`None` deletes) as this node's actor.
    pub fn update(
        &self,
        key: &[u8],
        context: Option<&VClock>,
        value: Option<Vec<u8>>,
    ) -> Result<Written, ReplicaError> {
        let (written, _) = self.apply(key, context, &Write::value(value))?;
        written.ok_or_else(|| ReplicaError::Corrupt("a plain write was not applied".into()))
    }
}

/// Lock stripes: each key hashes onto one mutex, held across a
/// read-modify-write of that key (never across an await).
pub struct KeyLocks(Vec<Mutex<()>>);

impl KeyLocks {
    /// `n` stripes.
    pub fn new(n: usize) -> KeyLocks {
        KeyLocks((0..n.max(1)).map(|_| Mutex::new(())).collect())
    }

    /// Locks the stripe of `key`.
    pub fn of(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let i = (crate::keyspace::key_hash(key) as usize) % self.0.len();
        // The guarded data is `()`: a panic elsewhere cannot corrupt it.
        self.0[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads and decodes the object stored under `key`, with its bytes. A
/// record that fails its checksum, does not decode, or holds a clock
/// counter past [`crate::vclock::MAX_COUNTER`] (logged) is
/// [`ReplicaError::Corrupt`]: never served, never taken for a new key
/// (whose dots would be reused), replaceable by another replica's copy.
pub fn load_object(
    store: &dyn Store,
    key: &[u8],
) -> Result<Option<(Vec<u8>, Object)>, ReplicaError> {
    let bytes = match store.get(key) {
        Ok(b) => b,
        Err(StoreError::Corrupt { reason, .. }) => return Err(ReplicaError::Corrupt(reason)),
        Err(e) => return Err(e.into()),
    };
    match bytes {
        None => Ok(None),
        Some(b) => match Object::from_bytes(&b) {
            Ok(o) => match o.check_counters() {
                Ok(()) => Ok(Some((b, o))),
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(key), cause = %e, "refusing a stored record");
                    Err(ReplicaError::Corrupt(e.to_string()))
                }
            },
            Err(e) => Err(ReplicaError::Corrupt(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn a_restored_store_answers_no_read_until_every_partition_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("RESTORED");
        std::fs::write(&marker, b"restored\n").unwrap();
        let gate = CatchUp::default();
        assert!(!gate.behind(3), "open unless started");
        gate.start(Some(marker.clone()));
        assert!(gate.behind(3) && gate.behind(0));
        assert_eq!(gate.behind_count(), PARTITIONS);
        gate.caught_up(3);
        gate.caught_up(3);
        assert!(!gate.behind(3) && gate.behind(4));
        assert_eq!(gate.behind_count(), PARTITIONS - 1);
        for p in 0..PARTITIONS - 1 {
            gate.caught_up(p);
        }
        assert!(gate.behind(PARTITIONS - 1) && marker.exists());
        gate.caught_up(PARTITIONS - 1);
        assert!(!gate.behind(PARTITIONS - 1) && gate.behind_count() == 0);
        assert!(!marker.exists(), "the marker outlived the catch-up");
    }

    #[test]
    fn deadlines_are_indexed_expired_and_counted_out_once() {
        let replica = Replica::new(
            Arc::new(MemoryStore::new()),
            Arc::new(ActorCell::new("a", 1, None)),
        );
        let p = partition_of(b"k");
        let now = replica.now_ms();
        let set = |value: &str, ttl: crate::write::Ttl| crate::write::Write::Set {
            value: value.as_bytes().to_vec(),
            ttl,
            cond: crate::write::Condition::Always,
        };
        replica
            .apply(b"k", None, &set("v", crate::write::Ttl::At(now + 50)))
            .unwrap();
        replica.update(b"other", None, Some(b"x".to_vec())).unwrap();
        assert_eq!(
            replica.live_count(p),
            1 + u64::from(partition_of(b"other") == p)
        );
        assert_eq!(replica.deadlines().len(), 1);
        // Nothing is due yet.
        assert!(replica.deadlines().due(now, 10).is_empty());
        let due = replica.deadlines().due(now + 50, 10);
        assert_eq!(due, vec![b"k".to_vec()]);
        // Not expired until the deadline really passed.
        while replica.now_ms() < now + 50 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(replica.expire_now(b"k").unwrap());
        assert!(!replica.expire_now(b"k").unwrap(), "expired once only");
        assert_eq!(replica.expired(), 1);
        assert!(
            replica
                .get(b"k")
                .unwrap()
                .unwrap()
                .is_deleted_at(replica.now_ms())
        );
        assert_eq!(
            replica.live_count(p),
            u64::from(partition_of(b"other") == p)
        );
        // A rescan finds the same counts.
        replica.index_partition(p).unwrap();
        assert_eq!(
            replica.live_count(p),
            u64::from(partition_of(b"other") == p)
        );
    }

    #[test]
    fn concurrent_updates_on_one_key_are_all_kept() {
        let replica = Arc::new(Replica::new(
            Arc::new(MemoryStore::new()),
            Arc::new(ActorCell::new("a", 1, None)),
        ));
        let threads: Vec<_> = (0..50u32)
            .map(|i| {
                let r = replica.clone();
                std::thread::spawn(move || {
                    r.update(b"k", Some(&VClock::new()), Some(i.to_be_bytes().to_vec()))
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let o = replica.get(b"k").unwrap().unwrap();
        // All writes had an empty context: all are concurrent siblings.
        assert_eq!(o.siblings.len(), 50);
        // A write without context supersedes everything seen locally.
        let w = replica.update(b"k", None, Some(b"x".to_vec())).unwrap();
        assert!(w.existed);
        assert_eq!(w.object.values(), vec![b"x".as_slice()]);
    }

    #[test]
    fn merges_refuse_invalid_copies_and_report_reused_dots() {
        let replica = Replica::new(
            Arc::new(MemoryStore::new()),
            Arc::new(ActorCell::new("me", 1, None)),
        );
        let mut bad =
            Object::update(None, &VClock::new(), &"x/1".into(), Some(vec![1]), 0).unwrap();
        bad.clock = VClock::new();
        assert!(matches!(
            replica.merge(b"k", &bad),
            Err(ReplicaError::Refused(_))
        ));
        // This node's actor wrote "b" as me/00000001:1; a copy arrives with
        // another value under the same dot: both are kept, and the node
        // moves to a new epoch.
        let mine = replica
            .update(b"k", None, Some(b"b".to_vec()))
            .unwrap()
            .object;
        let dot = mine.siblings[0].dot.clone();
        let mut other = mine.clone();
        other.siblings[0].value = Some(b"c".to_vec());
        let before = replica.actor().get();
        let m = replica.merge(b"k", &other).unwrap();
        assert_eq!(m.conflicts, vec![dot]);
        assert_eq!(m.object.values().len(), 2);
        assert_eq!(replica.conflicts(), 1);
        assert_ne!(replica.actor().get(), before);
    }

    #[test]
    fn a_stored_clock_past_the_bound_is_refused_and_repaired() {
        let store = Arc::new(MemoryStore::new());
        let replica = Replica::new(store.clone(), Arc::new(ActorCell::new("me", 1, None)));
        let good = replica
            .update(b"k", None, Some(b"v".to_vec()))
            .unwrap()
            .object;
        // A record written before the bound existed (or damaged on disk)
        // whose clock sits at u64::MAX.
        let mut poisoned = good.clone();
        poisoned.clock.add(&Dot {
            actor: replica.actor().get(),
            counter: u64::MAX,
        });
        store.append(b"k", &poisoned.to_bytes()).unwrap();
        // Never served, never written over (no panic, no wrap-around).
        assert!(matches!(replica.get(b"k"), Err(ReplicaError::Corrupt(_))));
        assert!(matches!(
            replica.update(b"k", None, Some(b"w".to_vec())),
            Err(ReplicaError::Corrupt(_))
        ));
        // Another replica's copy replaces it, and the key takes writes again.
        replica.merge(b"k", &good).unwrap();
        assert_eq!(replica.get(b"k").unwrap(), Some(good));
        let w = replica.update(b"k", None, Some(b"w".to_vec())).unwrap();
        assert_eq!(w.object.values(), vec![b"w".as_slice()]);
    }
}
