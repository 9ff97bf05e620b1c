//! Hints: copies this node holds for another node that was down or
//! unreachable when a write was made (sloppy quorum), until the delivery
//! worker ([`crate::workers::handoff`]) hands them to their owner.
//!
//! A stand-in stores each hinted copy in its own [`Store`] (a `LogStore` in
//! `DATA_DIR/hints` for durable nodes, so hints survive the stand-in's own
//! restart), under `owner-id-length | owner id | key`. Copies for one
//! (owner, key) merge, like replicas do. A hint is deleted only after its
//! owner acknowledged it, and only if it did not change meanwhile
//! (compare-and-delete, as garage's insert queue does). Like the replica,
//! everything here is synchronous and short; durability is waited for
//! separately.
//!
//! Hint storage is bounded ([`HintLimits`]): at most `per_node` hinted keys
//! for one owner (`--max-hints-per-node`) and `bytes` bytes of encoded
//! objects in total (`--max-hint-bytes`). The index keeps each hint's size,
//! so both figures are exact (read back from the store at open). At a cap,
//! [`Hints::add`] refuses at once with [`HintsFull`] (a merge into a hint
//! already held is refused only if it would grow past the byte cap); it
//! counts the refusal and logs a warning the first time a cap is reached,
//! again only after storage fell below it (and at most every 10 s). Nothing
//! waits for room: what a refused hint would have carried reaches its owner
//! through anti-entropy instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::object::Object;
use crate::replica::{KeyLocks, ReplicaError, load_object};
use crate::storage::{Durable, Lsn, Store};

/// Lock stripes for read-modify-write of hints.
const STRIPES: usize = 64;
/// Hints delivered per owner per round.
pub const BATCH: usize = 64;
/// Pause between delivery rounds.
pub const ROUND: Duration = Duration::from_millis(500);
/// Longest back-off after failed deliveries to one owner.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest time between two warnings about one cap (per owner).
const WARN_EVERY: Duration = Duration::from_secs(10);

fn hint_key(owner: &str, key: &[u8]) -> Vec<u8> {
    let owner = owner.as_bytes();
    let mut k = Vec::with_capacity(1 + owner.len() + key.len());
    k.push(owner.len().min(255) as u8);
    k.extend_from_slice(&owner[..owner.len().min(255)]);
    k.extend_from_slice(key);
    k
}

fn split_hint_key(k: &[u8]) -> Option<(String, Vec<u8>)> {
    let (&len, rest) = k.split_first()?;
    let owner = rest.get(..len as usize)?;
    let key = rest.get(len as usize..)?;
    Some((String::from_utf8(owner.to_vec()).ok()?, key.to_vec()))
}

pub use crate::config::{DEFAULT_MAX_HINT_BYTES, DEFAULT_MAX_HINTS_PER_NODE, HintLimits};
pub use crate::replica::{Cap, HintsFull};

/// Hints refused at a cap since the node started, per cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// Refused at [`HintLimits::per_node`].
    pub per_node: u64,
    /// Refused at [`HintLimits::bytes`].
    pub bytes: u64,
}

impl Refused {
    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.per_node + self.bytes
    }
}

/// Whether a cap is reached, and when it was last warned about.
#[derive(Default)]
struct CapState {
    reached: bool,
    warned: Option<Instant>,
}

impl CapState {
    /// Marks the cap reached; true when that deserves a warning (the cap
    /// was not reached before, and the last warning is old enough).
    fn reach(&mut self) -> bool {
        if std::mem::replace(&mut self.reached, true) {
            return false;
        }
        let now = Instant::now();
        if self.warned.is_some_and(|at| now < at + WARN_EVERY) {
            return false;
        }
        self.warned = Some(now);
        true
    }
}

/// Which hints exist: by owner (for delivery, with each hint's encoded
/// size) and by key (for reads), and the room they take.
#[derive(Default)]
struct Index {
    by_owner: BTreeMap<String, BTreeMap<Vec<u8>, u64>>,
    by_key: HashMap<Vec<u8>, BTreeSet<String>>,
    /// Sum of the sizes in `by_owner`.
    bytes: u64,
    /// New keys being appended (admitted, not yet in `by_owner`), per owner.
    reserved_keys: HashMap<String, usize>,
    /// Growth in bytes of the hints being appended.
    reserved_bytes: u64,
    /// The per-owner cap, for owners that reached it.
    per_node_cap: HashMap<String, CapState>,
    /// The byte cap.
    bytes_cap: CapState,
}

/// Room taken by a hint being appended, given back once it is.
struct Reservation {
    new_key: bool,
    growth: u64,
}

/// The hints a node holds for others.
pub struct Hints {
    store: Arc<dyn Store>,
    index: Mutex<Index>,
    /// Number of (owner, key) hints held (read without the lock on the hot path).
    count: AtomicUsize,
    /// Mirror of the index's byte total (read without the lock).
    bytes: AtomicU64,
    limits: HintLimits,
    refused_per_node: AtomicU64,
    refused_bytes: AtomicU64,
    /// Hints removed after their owner (or, for an owner that left, the
    /// key's owners) acknowledged them.
    delivered: AtomicU64,
    locks: KeyLocks,
    /// owner -> (failures in a row, next attempt).
    backoff: Mutex<BTreeMap<String, (u32, Instant)>>,
}

impl Hints {
    /// Opens the hints kept in `store`, with the default [`HintLimits`].
    pub fn open(store: Arc<dyn Store>) -> Result<Hints, ReplicaError> {
        Hints::open_with_limits(store, HintLimits::default())
    }

    /// Opens the hints kept in `store`, capped by `limits`. Reads every hint
    /// once, for its size. Hints already held past a cap (a lower cap than
    /// the last run's) are kept and delivered; new ones wait for room.
    pub fn open_with_limits(
        store: Arc<dyn Store>,
        limits: HintLimits,
    ) -> Result<Hints, ReplicaError> {
        let hints = Hints {
            store: store.clone(),
            index: Mutex::default(),
            count: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            limits,
            refused_per_node: AtomicU64::new(0),
            refused_bytes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            locks: KeyLocks::new(STRIPES),
            backoff: Mutex::new(BTreeMap::new()),
        };
        for k in store.keys()? {
            match split_hint_key(&k) {
                Some((owner, key)) => {
                    // An unreadable hint is kept at size 0: delivery drops it.
                    let size = store.get(&k).ok().flatten().map_or(0, |v| v.len() as u64);
                    hints.remember(&mut hints.index(), &owner, &key, size);
                }
                None => warn!("skipping a malformed hint key"),
            }
        }
        let pending = hints.pending();
        if !pending.is_empty() {
            info!(
                hints = hints.count.load(Ordering::Relaxed),
                bytes = hints.bytes(),
                owners = pending.len(),
                "pending hints loaded"
            );
        }
        Ok(hints)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the store holds a hint of `size` bytes for (owner, key).
    fn remember(&self, index: &mut Index, owner: &str, key: &[u8], size: u64) {
        let old = index
            .by_owner
            .entry(owner.to_string())
            .or_default()
            .insert(key.to_vec(), size);
        match old {
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            Some(old) if old > size => index.bytes_cap.reached = false,
            Some(_) => {}
        }
        index.bytes = index.bytes - old.unwrap_or(0) + size;
        self.bytes.store(index.bytes, Ordering::Relaxed);
        index
            .by_key
            .entry(key.to_vec())
            .or_default()
            .insert(owner.to_string());
    }

    fn forget(&self, owner: &str, key: &[u8]) {
        let mut index = self.index();
        if let Some(keys) = index.by_owner.get_mut(owner) {
            let removed = keys.remove(key);
            let (left, empty) = (keys.len(), keys.is_empty());
            if empty {
                index.by_owner.remove(owner);
            }
            if let Some(size) = removed {
                self.count.fetch_sub(1, Ordering::Relaxed);
                index.bytes -= size;
                self.bytes.store(index.bytes, Ordering::Relaxed);
                index.bytes_cap.reached = false;
                if empty {
                    index.per_node_cap.remove(owner);
                } else if left < self.limits.per_node
                    && let Some(cap) = index.per_node_cap.get_mut(owner)
                {
                    cap.reached = false;
                }
            }
        }
        if let Some(owners) = index.by_key.get_mut(key) {
            owners.remove(owner);
            if owners.is_empty() {
                index.by_key.remove(key);
            }
        }
    }

    /// Makes room for a hint of `size` bytes for (owner, key), or refuses
    /// (counted, and warned about when a cap is newly reached).
    fn admit(&self, owner: &str, key: &[u8], size: u64) -> Result<Reservation, HintsFull> {
        let mut index = self.index();
        let (held, old) = index
            .by_owner
            .get(owner)
            .map_or((0, None), |keys| (keys.len(), keys.get(key).copied()));
        let new_key = old.is_none();
        let growth = size.saturating_sub(old.unwrap_or(0));
        let reserved = index.reserved_keys.get(owner).copied().unwrap_or(0);
        let cap = if new_key && held + reserved >= self.limits.per_node {
            Cap::PerNode
        } else if growth > 0 && index.bytes + index.reserved_bytes + growth > self.limits.bytes {
            Cap::Bytes
        } else {
            if new_key {
                *index.reserved_keys.entry(owner.to_string()).or_default() += 1;
            }
            index.reserved_bytes += growth;
            return Ok(Reservation { new_key, growth });
        };
        let full = HintsFull {
            owner: owner.to_string(),
            cap,
            hints: held,
            bytes: index.bytes,
            limit: match cap {
                Cap::PerNode => self.limits.per_node as u64,
                Cap::Bytes => self.limits.bytes,
            },
        };
        let warn_now = match cap {
            Cap::PerNode => {
                self.refused_per_node.fetch_add(1, Ordering::Relaxed);
                index
                    .per_node_cap
                    .entry(owner.to_string())
                    .or_default()
                    .reach()
            }
            Cap::Bytes => {
                self.refused_bytes.fetch_add(1, Ordering::Relaxed);
                index.bytes_cap.reach()
            }
        };
        drop(index);
        if warn_now {
            let whose = match cap {
                Cap::PerNode => "this owner's new hints",
                Cap::Bytes => "new hints for every owner",
            };
            warn!(
                owner,
                hints = full.hints,
                bytes = full.bytes,
                flag = cap.flag(),
                limit = full.limit,
                "hint storage full: {whose} are refused (STATUS counts them) until deliveries make room; anti-entropy brings the owners what they carry"
            );
        }
        Err(full)
    }

    /// Gives back a reservation; records the hint when it was stored.
    fn settle(&self, owner: &str, key: &[u8], size: u64, r: Reservation, stored: bool) {
        let mut index = self.index();
        if r.new_key
            && let Some(n) = index.reserved_keys.get_mut(owner)
        {
            *n -= 1;
            if *n == 0 {
                index.reserved_keys.remove(owner);
            }
        }
        index.reserved_bytes -= r.growth;
        if stored {
            self.remember(&mut index, owner, key, size);
        }
    }

    /// True when no hint is held (checked without a lock).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Bytes of hints held (their encoded objects), whatever their owner.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The caps this node's hint storage keeps to.
    pub fn limits(&self) -> HintLimits {
        self.limits
    }

    /// Hints refused at a cap since the node started.
    pub fn refused(&self) -> Refused {
        Refused {
            per_node: self.refused_per_node.load(Ordering::Relaxed),
            bytes: self.refused_bytes.load(Ordering::Relaxed),
        }
    }

    /// Stores (merges) a copy of `key` meant for `owner`; returns the LSN to
    /// wait for ([`Hints::durable`]). Refuses with
    /// [`ReplicaError::HintsFull`], storing nothing, when the hint would
    /// pass a cap ([`HintLimits`]); never waits for room.
    pub fn add(&self, owner: &str, key: &[u8], object: &Object) -> Result<Lsn, ReplicaError> {
        object.validate()?;
        let hk = hint_key(owner, key);
        let _g = self.locks.of(&hk);
        let merged = match load_object(&*self.store, &hk) {
            Ok(Some((_, old))) => old.merge_checked(object)?.object,
            Ok(None) | Err(ReplicaError::Corrupt(_)) => object.clone(),
            Err(e) => return Err(e),
        };
        let bytes = merged.to_bytes();
        let size = bytes.len() as u64;
        let reservation = self.admit(owner, key, size)?;
        let appended = self.store.append(&hk, &bytes);
        self.settle(owner, key, size, reservation, appended.is_ok());
        Ok(appended?)
    }
    /// What to wait for before a hint stored at `lsn` is durable.
    pub fn durable(&self, lsn: Lsn) -> Durable {
        self.store.durable(lsn)
    }

    /// The merge of every hint held for `key`, whatever its owner.
    pub fn for_key(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut out: Option<Object> = None;
        for owner in self.owners_of(key) {
            if let Some((_, o)) = load_object(&*self.store, &hint_key(&owner, key))? {
                out = Object::merge_opt(out.as_ref(), Some(&o));
            }
        }
        Ok(out)
    }

    /// The hint held for `owner` on `key`.
    pub fn for_owner(&self, owner: &str, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        Ok(load_object(&*self.store, &hint_key(owner, key))?.map(|(_, o)| o))
    }

    /// The owners this node holds hints for `key` for.
    pub fn owners_of(&self, key: &[u8]) -> Vec<String> {
        if self.is_empty() {
            return Vec::new();
        }
        self.index()
            .by_key
            .get(key)
            .map(|o| o.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Pending hints per owner.
    pub fn pending(&self) -> BTreeMap<String, usize> {
        self.index()
            .by_owner
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(o, keys)| (o.clone(), keys.len()))
            .collect()
    }

    /// Up to [`BATCH`] hints for `owner`: `(key, bytes as read, object)`.
    pub fn batch(&self, owner: &str) -> Vec<(Vec<u8>, Vec<u8>, Object)> {
        let keys: Vec<Vec<u8>> = self
            .index()
            .by_owner
            .get(owner)
            .map(|k| k.keys().take(BATCH).cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match load_object(&*self.store, &hint_key(owner, &key)) {
                Ok(Some((bytes, obj))) => out.push((key, bytes, obj)),
                Ok(None) => self.forget(owner, &key),
                // An unreadable hint would block the ones behind it: drop it
                // (anti-entropy repairs the owner's copy instead).
                Err(e) => {
                    warn!(owner, cause = %e, "dropping a hint that cannot be read");
                    let _ = self.store.append_delete(&hint_key(owner, &key));
                    self.forget(owner, &key);
                }
            }
        }
        out
    }

    /// Deletes a delivered hint, unless it changed since it was read.
    pub fn remove_if_unchanged(
        &self,
        owner: &str,
        key: &[u8],
        seen: &[u8],
    ) -> Result<bool, ReplicaError> {
        let hk = hint_key(owner, key);
        let _g = self.locks.of(&hk);
        if self.store.get(&hk)?.as_deref() != Some(seen) {
            return Ok(false);
        }
        self.store.append_delete(&hk)?;
        self.forget(owner, key);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Hints delivered (acknowledged, then removed) since the node started.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// True when deliveries to `owner` are not backing off.
    pub fn ready(&self, owner: &str) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .is_none_or(|(_, next)| Instant::now() >= *next)
    }

    /// Records the outcome of a delivery round to `owner` (failures back off
    /// exponentially, up to 30 s).
    pub fn record(&self, owner: &str, ok: bool) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            b.remove(owner);
        } else {
            let fails = b.get(owner).map_or(0, |(f, _)| *f) + 1;
            let wait = (ROUND * 2u32.saturating_pow(fails.min(10))).min(MAX_BACKOFF);
            b.insert(owner.to_string(), (fails, Instant::now() + wait));
        }
    }

    /// Every (owner, key) hint held now (a snapshot, to wait for).
    pub fn held(&self) -> Vec<(String, Vec<u8>)> {
        if self.is_empty() {
            return Vec::new();
        }
        self.index()
            .by_owner
            .iter()
            .flat_map(|(o, keys)| keys.keys().map(move |k| (o.clone(), k.clone())))
            .collect()
    }

    /// True while a hint for `owner` on `key` is held.
    pub fn holds(&self, owner: &str, key: &[u8]) -> bool {
        self.index()
            .by_owner
            .get(owner)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use crate::vclock::VClock;

    #[test]
    fn hint_keys_round_trip() {
        let k = hint_key("node-1", b"some\0key");
        assert_eq!(
            split_hint_key(&k),
            Some(("node-1".to_string(), b"some\0key".to_vec()))
        );
        assert_eq!(split_hint_key(&[9, b'a']), None);
        assert_eq!(split_hint_key(&[]), None);
    }

    #[test]
    fn add_merge_and_compare_and_delete() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let hints = Hints::open(store.clone()).unwrap();
        let a = Object::update(
            None,
            &VClock::new(),
            &"a/1".to_string(),
            Some(b"1".to_vec()),
            0,
        )
        .unwrap();
        let b = Object::update(
            None,
            &VClock::new(),
            &"b/1".to_string(),
            Some(b"2".to_vec()),
            0,
        )
        .unwrap();
        hints.add("owner", b"k", &a).unwrap();
        hints.add("owner", b"k", &b).unwrap();
        assert_eq!(hints.owners_of(b"k"), vec!["owner".to_string()]);
        assert_eq!(hints.pending().get("owner"), Some(&1));
        assert_eq!(hints.for_key(b"k").unwrap().unwrap().siblings.len(), 2);
        let batch = hints.batch("owner");
        assert_eq!(batch.len(), 1);
        let (key, bytes, _) = &batch[0];
        // A hint that changed after it was read is kept.
        hints
            .add(
                "owner",
                b"k",
                &Object::update(None, &VClock::new(), &"c/1".to_string(), None, 0).unwrap(),
            )
            .unwrap();
        assert!(!hints.remove_if_unchanged("owner", key, bytes).unwrap());
        let batch = hints.batch("owner");
        let (key, bytes, _) = &batch[0];
        assert!(hints.remove_if_unchanged("owner", key, bytes).unwrap());
        assert!(hints.pending().is_empty());
        assert!(hints.is_empty());
        assert!(hints.owners_of(b"k").is_empty());
        // Reopening finds nothing left; a fresh hint survives a reopen.
        hints.add("other", b"z", &a).unwrap();
        let reopened = Hints::open(store).unwrap();
        assert_eq!(reopened.pending().get("other"), Some(&1));
    }

    /// A one-sibling object written by `actor` holding `value`.
    fn obj(actor: &str, value: &[u8]) -> Object {
        Object::update(
            None,
            &VClock::new(),
            &actor.to_string(),
            Some(value.to_vec()),
            0,
        )
        .unwrap()
    }

    /// What the store really holds: the sum of its hints' sizes.
    fn stored_bytes(store: &Arc<dyn Store>) -> u64 {
        store
            .keys()
            .unwrap()
            .iter()
            .map(|k| store.get(k).unwrap().unwrap().len() as u64)
            .sum()
    }

    fn full(e: ReplicaError) -> HintsFull {
        match e {
            ReplicaError::HintsFull(f) => f,
            other => panic!("expected a full hint storage, got {other}"),
        }
    }

    #[test]
    fn the_per_owner_cap_refuses_new_keys_but_not_merges() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let limits = HintLimits {
            per_node: 3,
            bytes: u64::MAX,
        };
        let hints = Hints::open_with_limits(store.clone(), limits).unwrap();
        for k in [b"k1", b"k2", b"k3"] {
            hints.add("node-x", k, &obj("a/1", b"v")).unwrap();
        }
        let e = full(hints.add("node-x", b"k4", &obj("a/1", b"v")).unwrap_err());
        assert_eq!(e.cap, Cap::PerNode);
        assert_eq!(
            e.to_string(),
            "hint storage full for node-x: 3 hints held (--max-hints-per-node 3)"
        );
        // The error names the cap however it travels (as a ReplicaError too).
        assert_eq!(
            ReplicaError::HintsFull(e.clone()).to_string(),
            e.to_string()
        );
        assert_eq!(hints.for_owner("node-x", b"k4").unwrap(), None);
        // A merge into a hint already held does not grow the count.
        hints.add("node-x", b"k1", &obj("b/1", b"w")).unwrap();
        assert_eq!(
            hints
                .for_owner("node-x", b"k1")
                .unwrap()
                .unwrap()
                .siblings
                .len(),
            2
        );
        // The cap is per owner.
        hints.add("node-y", b"k4", &obj("a/1", b"v")).unwrap();
        assert_eq!(hints.pending().get("node-x"), Some(&3));
        assert_eq!(hints.pending().get("node-y"), Some(&1));
        assert_eq!(
            hints.refused(),
            Refused {
                per_node: 1,
                bytes: 0
            }
        );
        // A delivered hint makes room for one more.
        let (key, bytes, _) = hints.batch("node-x").remove(0);
        assert!(hints.remove_if_unchanged("node-x", &key, &bytes).unwrap());
        hints.add("node-x", b"k4", &obj("a/1", b"v")).unwrap();
        assert!(hints.add("node-x", b"k5", &obj("a/1", b"v")).is_err());
        assert_eq!(hints.refused().total(), 2);
        assert_eq!(hints.bytes(), stored_bytes(&store));
    }

    #[test]
    fn the_byte_cap_counts_every_owner_and_what_a_merge_adds() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let one = obj("a/1", &[7; 100]).to_bytes().len() as u64;
        let limits = HintLimits {
            per_node: usize::MAX,
            bytes: 2 * one + 10,
        };
        let hints = Hints::open_with_limits(store.clone(), limits).unwrap();
        hints.add("node-x", b"k1", &obj("a/1", &[7; 100])).unwrap();
        hints.add("node-y", b"k2", &obj("a/1", &[7; 100])).unwrap();
        assert_eq!(hints.bytes(), 2 * one);
        let e = full(
            hints
                .add("node-z", b"k3", &obj("a/1", &[7; 100]))
                .unwrap_err(),
        );
        assert_eq!(e.cap, Cap::Bytes);
        assert_eq!(
            e.to_string(),
            format!(
                "hint storage full for node-z: {} bytes of hints held in total (--max-hint-bytes {})",
                2 * one,
                2 * one + 10
            )
        );
        // A merge that adds a sibling grows the hint past the cap: refused,
        // and the hint held is left as it was.
        let e = full(
            hints
                .add("node-x", b"k1", &obj("b/1", &[8; 100]))
                .unwrap_err(),
        );
        assert_eq!(e.cap, Cap::Bytes);
        assert_eq!(
            hints
                .for_owner("node-x", b"k1")
                .unwrap()
                .unwrap()
                .siblings
                .len(),
            1
        );
        // A merge that adds nothing (the same copy again) is allowed at the cap.
        hints.add("node-x", b"k1", &obj("a/1", &[7; 100])).unwrap();
        assert_eq!(
            hints.refused(),
            Refused {
                per_node: 0,
                bytes: 2
            }
        );
        assert_eq!(hints.bytes(), stored_bytes(&store));
        // Delivering one hint frees its bytes.
        let (key, bytes, _) = hints.batch("node-y").remove(0);
        assert!(hints.remove_if_unchanged("node-y", &key, &bytes).unwrap());
        assert_eq!(hints.bytes(), one);
        hints.add("node-z", b"k3", &obj("a/1", &[7; 100])).unwrap();
        assert_eq!(hints.bytes(), stored_bytes(&store));
    }

    #[test]
    fn sizes_stay_exact_across_merge_remove_and_reopen() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let hints = Hints::open(store.clone()).unwrap();
        assert_eq!(hints.limits(), HintLimits::default());
        hints.add("node-x", b"a", &obj("a/1", b"short")).unwrap();
        hints.add("node-x", b"b", &obj("a/1", &[1; 300])).unwrap();
        hints.add("node-y", b"a", &obj("a/1", b"short")).unwrap();
        assert_eq!(hints.bytes(), stored_bytes(&store));
        // A merge replaces the hint's old size with the merged one.
        let before = hints.bytes();
        hints.add("node-x", b"a", &obj("b/1", &[2; 50])).unwrap();
        assert!(hints.bytes() > before + 50);
        assert_eq!(hints.bytes(), stored_bytes(&store));
        // A hint that changed since it was read stays, with its new size.
        let batch = hints.batch("node-x");
        hints.add("node-x", b"b", &obj("c/1", b"x")).unwrap();
        for (key, bytes, _) in &batch {
            let removed = hints.remove_if_unchanged("node-x", key, bytes).unwrap();
            assert_eq!(removed, key.as_slice() == b"a");
        }
        assert_eq!(hints.pending().get("node-x"), Some(&1));
        assert_eq!(hints.bytes(), stored_bytes(&store));
        // Reopening reads the same figures back from the store.
        let reopened = Hints::open(store.clone()).unwrap();
        assert_eq!(reopened.bytes(), hints.bytes());
        assert_eq!(reopened.pending(), hints.pending());
        // And keeps them exact from there.
        let (key, bytes, _) = reopened.batch("node-y").remove(0);
        assert!(
            reopened
                .remove_if_unchanged("node-y", &key, &bytes)
                .unwrap()
        );
        assert_eq!(reopened.bytes(), stored_bytes(&store));
        assert_eq!(reopened.pending().len(), 1);
        // A reopen with a lower cap keeps what it holds and refuses more.
        let tight = HintLimits {
            per_node: 1,
            bytes: 1,
        };
        let capped = Hints::open_with_limits(store.clone(), tight).unwrap();
        assert_eq!(capped.pending().get("node-x"), Some(&1));
        let e = full(capped.add("node-x", b"new", &obj("a/1", b"v")).unwrap_err());
        assert_eq!(e.cap, Cap::PerNode);
        let e = full(capped.add("node-y", b"new", &obj("a/1", b"v")).unwrap_err());
        assert_eq!(e.cap, Cap::Bytes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cap_is_warned_about_once_until_it_clears_and_at_most_every_10s() {
        let mut cap = CapState::default();
        assert!(cap.reach(), "the first time");
        assert!(!cap.reach(), "still at the cap");
        cap.reached = false;
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!cap.reach(), "reached again within 10 s");
        assert!(!cap.reach());
        cap.reached = false;
        tokio::time::advance(WARN_EVERY).await;
        assert!(cap.reach(), "reached again later");
        // The state follows the hints: a delivered hint clears the cap.
        let hints = Hints::open_with_limits(
            Arc::new(MemoryStore::new()),
            HintLimits {
                per_node: 1,
                bytes: u64::MAX,
            },
        )
        .unwrap();
        hints.add("n", b"a", &obj("a/1", b"v")).unwrap();
        assert!(hints.add("n", b"b", &obj("a/1", b"v")).is_err());
        assert!(hints.index().per_node_cap["n"].reached);
        hints.add("n2", b"a", &obj("a/1", b"v")).unwrap();
        let (key, bytes, _) = hints.batch("n").remove(0);
        hints.add("n", b"c", &obj("a/1", b"v")).unwrap_err();
        assert!(hints.remove_if_unchanged("n", &key, &bytes).unwrap());
        assert!(!hints.index().per_node_cap.contains_key("n"));
    }
}
