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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Which hints exist: by owner (for delivery) and by key (for reads).
#[derive(Default)]
struct Index {
    by_owner: BTreeMap<String, BTreeSet<Vec<u8>>>,
    by_key: HashMap<Vec<u8>, BTreeSet<String>>,
}

/// The hints a node holds for others.
pub struct Hints {
    store: Arc<dyn Store>,
    index: Mutex<Index>,
    /// Number of (owner, key) hints held (read without the lock on the hot path).
    count: AtomicUsize,
    locks: KeyLocks,
    /// owner -> (failures in a row, next attempt).
    backoff: Mutex<BTreeMap<String, (u32, Instant)>>,
}

impl Hints {
    /// Opens the hints kept in `store`.
    pub fn open(store: Arc<dyn Store>) -> Result<Hints, ReplicaError> {
        let hints = Hints {
            store: store.clone(),
            index: Mutex::default(),
            count: AtomicUsize::new(0),
            locks: KeyLocks::new(STRIPES),
            backoff: Mutex::new(BTreeMap::new()),
        };
        for k in store.keys()? {
            match split_hint_key(&k) {
                Some((owner, key)) => hints.remember(&owner, &key),
                None => warn!("skipping a malformed hint key"),
            }
        }
        let pending = hints.pending();
        if !pending.is_empty() {
            info!(
                hints = hints.count.load(Ordering::Relaxed),
                owners = pending.len(),
                "pending hints loaded"
            );
        }
        Ok(hints)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, owner: &str, key: &[u8]) {
        let mut index = self.index();
        if index
            .by_owner
            .entry(owner.to_string())
            .or_default()
            .insert(key.to_vec())
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        index
            .by_key
            .entry(key.to_vec())
            .or_default()
            .insert(owner.to_string());
    }

    fn forget(&self, owner: &str, key: &[u8]) {
        let mut index = self.index();
        if let Some(keys) = index.by_owner.get_mut(owner) {
            if keys.remove(key) {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            if keys.is_empty() {
                index.by_owner.remove(owner);
            }
        }
        if let Some(owners) = index.by_key.get_mut(key) {
            owners.remove(owner);
            if owners.is_empty() {
                index.by_key.remove(key);
            }
        }
    }

    /// True when no hint is held (checked without a lock).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Stores (merges) a copy of `key` meant for `owner`; returns the LSN to
    /// wait for ([`Hints::durable`]).
    pub fn add(&self, owner: &str, key: &[u8], object: &Object) -> Result<Lsn, ReplicaError> {
        object.validate()?;
        let hk = hint_key(owner, key);
        let _g = self.locks.of(&hk);
        let merged = match load_object(&*self.store, &hk) {
            Ok(Some((_, old))) => old.merge_checked(object)?.object,
            Ok(None) | Err(ReplicaError::Corrupt(_)) => object.clone(),
            Err(e) => return Err(e),
        };
        let lsn = self.store.append(&hk, &merged.to_bytes())?;
        self.remember(owner, key);
        Ok(lsn)
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
            .map(|k| k.iter().take(BATCH).cloned().collect())
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
        Ok(true)
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
            .flat_map(|(o, keys)| keys.iter().map(move |k| (o.clone(), k.clone())))
            .collect()
    }

    /// True while a hint for `owner` on `key` is held.
    pub fn holds(&self, owner: &str, key: &[u8]) -> bool {
        self.index()
            .by_owner
            .get(owner)
            .is_some_and(|keys| keys.contains(key))
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
}
