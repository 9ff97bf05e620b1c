//! Hinted handoff: copies a node holds for another node that was down or
//! unreachable when a write was made, and their delivery once it is back.
//!
//! A stand-in stores each hinted copy in its own [`Store`] (a `LogStore` in
//! `DATA_DIR/hints` for durable nodes, so hints survive the stand-in's own
//! restart), under `owner-id-length | owner id | key`. Copies for one
//! (owner, key) merge, like replicas do. A delivery task sends every hint to
//! its owner when the owner is live, and deletes the hint only after the owner
//! acknowledged it and only if it did not change meanwhile (compare-and-delete,
//! as garage's insert queue does). Failed deliveries back off per owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::object::Object;
use crate::replica::{KeyLocks, ReplicaError, load_object, save_object};
use crate::storage::Store;

/// Lock stripes for read-modify-write of hints.
const STRIPES: usize = 64;
/// Hints delivered per owner per round.
const BATCH: usize = 64;
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

/// The hints a node holds for others.
pub struct Hints {
    store: Arc<dyn Store>,
    /// owner -> keys with a pending hint.
    index: Mutex<BTreeMap<String, BTreeSet<Vec<u8>>>>,
    locks: KeyLocks,
    /// owner -> (failures in a row, next attempt).
    backoff: Mutex<BTreeMap<String, (u32, Instant)>>,
}

impl Hints {
    /// Opens the hints kept in `store`.
    pub fn open(store: Arc<dyn Store>) -> Result<Hints, ReplicaError> {
        let mut index: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for k in store.keys()? {
            match split_hint_key(&k) {
                Some((owner, key)) => {
                    index.entry(owner).or_default().insert(key);
                }
                None => warn!("skipping a malformed hint key"),
            }
        }
        let count: usize = index.values().map(BTreeSet::len).sum();
        if count > 0 {
            info!(hints = count, owners = index.len(), "pending hints loaded");
        }
        Ok(Hints {
            store,
            index: Mutex::new(index),
            locks: KeyLocks::new(STRIPES),
            backoff: Mutex::new(BTreeMap::new()),
        })
    }

    async fn load(&self, hk: &[u8]) -> Result<Option<(Vec<u8>, Object)>, ReplicaError> {
        load_object(&self.store, hk).await
    }

    /// Stores (merges) a copy of `key` meant for `owner`.
    pub async fn add(&self, owner: &str, key: &[u8], object: &Object) -> Result<(), ReplicaError> {
        object.validate()?;
        let hk = hint_key(owner, key);
        let _g = self.locks.of(&hk).lock().await;
        let merged = match self.load(&hk).await {
            Ok(Some((_, old))) => old.merge_checked(object)?.object,
            Ok(None) | Err(ReplicaError::Corrupt(_)) => object.clone(),
            Err(e) => return Err(e),
        };
        save_object(&self.store, &hk, &merged).await?;
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(owner.to_string())
            .or_default()
            .insert(key.to_vec());
        Ok(())
    }

    /// The merge of every hint held for `key`, whatever its owner.
    pub async fn for_key(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        let owners: Vec<String> = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, keys)| keys.contains(key))
            .map(|(o, _)| o.clone())
            .collect();
        let mut out: Option<Object> = None;
        for owner in owners {
            if let Some((_, o)) = self.load(&hint_key(&owner, key)).await? {
                out = Object::merge_opt(out.as_ref(), Some(&o));
            }
        }
        Ok(out)
    }

    /// The hint held for `owner` on `key`.
    pub async fn for_owner(&self, owner: &str, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        Ok(self.load(&hint_key(owner, key)).await?.map(|(_, o)| o))
    }

    /// The owners this node holds hints for `key` for.
    pub fn owners_of(&self, key: &[u8]) -> Vec<String> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, keys)| keys.contains(key))
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Pending hints per owner.
    pub fn pending(&self) -> BTreeMap<String, usize> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(o, keys)| (o.clone(), keys.len()))
            .collect()
    }

    /// Up to [`BATCH`] hints for `owner`: `(key, bytes as read, object)`.
    async fn batch(&self, owner: &str) -> Vec<(Vec<u8>, Vec<u8>, Object)> {
        let keys: Vec<Vec<u8>> = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .map(|k| k.iter().take(BATCH).cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.load(&hint_key(owner, &key)).await {
                Ok(Some((bytes, obj))) => out.push((key, bytes, obj)),
                Ok(None) => self.forget(owner, &key),
                // An unreadable hint would block the ones behind it: drop it
                // (anti-entropy repairs the owner's copy instead).
                Err(e) => {
                    warn!(owner, cause = %e, "dropping a hint that cannot be read");
                    let (store, hk) = (self.store.clone(), hint_key(owner, &key));
                    let _ = tokio::task::spawn_blocking(move || store.delete(&hk)).await;
                    self.forget(owner, &key);
                }
            }
        }
        out
    }

    fn forget(&self, owner: &str, key: &[u8]) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(keys) = index.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                index.remove(owner);
            }
        }
    }

    /// Deletes a delivered hint, unless it changed since it was read.
    async fn remove_if_unchanged(
        &self,
        owner: &str,
        key: &[u8],
        seen: &[u8],
    ) -> Result<bool, ReplicaError> {
        let hk = hint_key(owner, key);
        let _g = self.locks.of(&hk).lock().await;
        let store = self.store.clone();
        let seen = seen.to_vec();
        let removed =
            tokio::task::spawn_blocking(move || -> Result<bool, crate::storage::StoreError> {
                if store.get(&hk)?.as_deref() == Some(seen.as_slice()) {
                    store.delete(&hk)?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            })
            .await
            .map_err(|e| ReplicaError::Task(e.to_string()))??;
        if removed {
            self.forget(owner, key);
        }
        Ok(removed)
    }

    fn ready(&self, owner: &str) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .is_none_or(|(_, next)| Instant::now() >= *next)
    }

    fn record(&self, owner: &str, ok: bool) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            b.remove(owner);
        } else {
            let fails = b.get(owner).map_or(0, |(f, _)| *f) + 1;
            let wait = (ROUND * 2u32.saturating_pow(fails.min(10))).min(MAX_BACKOFF);
            b.insert(owner.to_string(), (fails, Instant::now() + wait));
        }
    }
}

/// Delivers hints to their owners until the node stops.
pub async fn deliver_forever(node: Arc<crate::node::Node>) {
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(ROUND) => {}
        }
        let view = node.membership.view();
        for owner in node.hints.pending().into_keys() {
            if !view.is_live(&owner) || !node.hints.ready(&owner) {
                continue;
            }
            let Some(addr) = view.addr(&owner) else {
                continue;
            };
            let batch = node.hints.batch(&owner).await;
            let mut ok = true;
            let mut delivered = 0;
            for (key, bytes, object) in batch {
                let req = crate::rpc::Request::Replicate {
                    key: key.clone(),
                    object,
                    hint: None,
                };
                match node
                    .transport
                    .call(addr, req, node.config.request_timeout)
                    .await
                {
                    Ok(crate::rpc::Response::Ack) => {
                        if let Ok(true) = node.hints.remove_if_unchanged(&owner, &key, &bytes).await
                        {
                            delivered += 1;
                        }
                    }
                    other => {
                        debug!(owner = %owner, answer = ?other.err(), "hint delivery failed; backing off");
                        ok = false;
                        break;
                    }
                }
            }
            node.hints.record(&owner, ok);
            if delivered > 0 {
                info!(owner = %owner, delivered, "hints delivered");
            }
        }
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

    #[tokio::test]
    async fn add_merge_and_compare_and_delete() {
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
        hints.add("owner", b"k", &a).await.unwrap();
        hints.add("owner", b"k", &b).await.unwrap();
        assert_eq!(hints.pending().get("owner"), Some(&1));
        assert_eq!(
            hints.for_key(b"k").await.unwrap().unwrap().siblings.len(),
            2
        );
        let batch = hints.batch("owner").await;
        assert_eq!(batch.len(), 1);
        let (key, bytes, _) = &batch[0];
        // A hint that changed after it was read is kept.
        hints
            .add(
                "owner",
                b"k",
                &Object::update(None, &VClock::new(), &"c/1".to_string(), None, 0).unwrap(),
            )
            .await
            .unwrap();
        assert!(
            !hints
                .remove_if_unchanged("owner", key, bytes)
                .await
                .unwrap()
        );
        let batch = hints.batch("owner").await;
        let (key, bytes, _) = &batch[0];
        assert!(
            hints
                .remove_if_unchanged("owner", key, bytes)
                .await
                .unwrap()
        );
        assert!(hints.pending().is_empty());
        // Reopening finds nothing left; a fresh hint survives a reopen.
        hints.add("other", b"z", &a).await.unwrap();
        let reopened = Hints::open(store).unwrap();
        assert_eq!(reopened.pending().get("other"), Some(&1));
    }
}
