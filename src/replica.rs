//! The local replica: versioned objects in the node's [`Store`].
//!
//! Every read-modify-write of a key (a coordinated update, a merge from a
//! peer) holds that key's lock stripe, so two concurrent changes to one key on
//! one node never lose each other. Store calls are blocking and run on
//! tokio's blocking pool.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;
use tracing::{error, warn};

use crate::anti_entropy::Trees;
use crate::epoch::ActorCell;
use crate::object::{Object, UpdateError};
use crate::storage::{Store, StoreError};
use crate::vclock::{Actor, VClock};

/// Lock stripes: keys hash onto this many mutexes.
const STRIPES: usize = 256;

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
    /// A blocking task died.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The stored copy of the key does not decode.
    #[error("the local copy of this key is corrupt ({0}); it is repaired from other replicas")]
    Corrupt(String),
}

/// The node's local copy of the data.
pub struct Replica {
    store: Arc<dyn Store>,
    locks: KeyLocks,
    /// Anti-entropy trees, told of every change.
    trees: Arc<Trees>,
    /// This node's actor: a merge that finds one of its dots reused starts a
    /// new epoch.
    actor: Arc<ActorCell>,
    /// Dots found carrying two different values (see [`Object::merge_checked`]).
    conflicts: AtomicU64,
}

impl Replica {
    /// Wraps a store; every change is recorded in `trees`.
    pub fn new(store: Arc<dyn Store>, trees: Arc<Trees>, actor: Arc<ActorCell>) -> Replica {
        Replica {
            store,
            locks: KeyLocks::new(STRIPES),
            trees,
            actor,
            conflicts: AtomicU64::new(0),
        }
    }

    /// Dots found reused (two values under one dot) since start.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn load(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        Ok(load_object(&self.store, key).await?.map(|(_, o)| o))
    }

    async fn save(&self, key: &[u8], object: &Object) -> Result<(), ReplicaError> {
        let digest = save_object(&self.store, key, object).await?;
        self.trees.record_digest(key, digest);
        Ok(())
    }

    /// Reads the local copy of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.load(key).await
    }

    /// Merges `incoming` into the local copy; returns the result. An
    /// incoming copy that breaks the object rules, or a merge whose result
    /// would exceed the bounds, is refused (and logged): nothing is stored.
    pub async fn merge(&self, key: &[u8], incoming: &Object) -> Result<Object, ReplicaError> {
        if let Err(e) = incoming.validate() {
            warn!(key = %String::from_utf8_lossy(key), cause = %e, "refusing an invalid copy");
            return Err(e.into());
        }
        let _guard = self.locks.of(key).lock().await;
        let local = match self.load(key).await {
            // An incoming copy replaces an undecodable one: that is the repair.
            Err(ReplicaError::Corrupt(cause)) => {
                error!(key = %String::from_utf8_lossy(key), %cause, "replacing a corrupt local copy with a replica's copy");
                None
            }
            other => other?,
        };
        let merged = match &local {
            Some(l) => match l.merge_checked(incoming) {
                Ok(m) => {
                    self.note_conflicts(key, &m.new_conflicts);
                    m.object
                }
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(key), cause = %e, "refusing a merge beyond the object bounds");
                    return Err(e.into());
                }
            },
            None => incoming.clone(),
        };
        if local.as_ref() != Some(&merged) {
            self.save(key, &merged).await?;
        }
        Ok(merged)
    }

    /// Counts dots found reused, and starts a new epoch if one is this
    /// node's own.
    fn note_conflicts(&self, key: &[u8], dots: &[crate::vclock::Dot]) {
        if dots.is_empty() {
            return;
        }
        self.conflicts
            .fetch_add(dots.len() as u64, Ordering::Relaxed);
        for dot in dots {
            error!(key = %String::from_utf8_lossy(key), actor = %dot.actor, counter = dot.counter,
                   "one dot carries two different values (an actor reused it); both are kept as siblings");
            if self.actor.is_current(&dot.actor) {
                self.actor.rotate("this node's own dot was found reused");
            }
        }
    }

    /// Applies a write as `actor`. With no `context`, the write supersedes
    /// whatever the local copy has seen. Returns the new object and whether
    /// the key had a live value before.
    pub async fn update(
        &self,
        key: &[u8],
        context: Option<&VClock>,
        actor: &Actor,
        value: Option<Vec<u8>>,
    ) -> Result<(Object, bool), ReplicaError> {
        let _guard = self.locks.of(key).lock().await;
        let local = self.load(key).await?;
        let existed = local.as_ref().is_some_and(|o| !o.is_deleted());
        let own_context;
        let context = match context {
            Some(c) => c,
            None => {
                own_context = local.as_ref().map(|o| o.clock.clone()).unwrap_or_default();
                &own_context
            }
        };
        let object = Object::update(local.as_ref(), context, actor, value, now_ms())?;
        self.save(key, &object).await?;
        Ok((object, existed))
    }
}

/// Lock stripes: each key hashes onto one mutex, held across a
/// read-modify-write of that key.
pub struct KeyLocks(Vec<Mutex<()>>);

impl KeyLocks {
    /// `n` stripes.
    pub fn new(n: usize) -> KeyLocks {
        KeyLocks((0..n.max(1)).map(|_| Mutex::new(())).collect())
    }

    /// The stripe of `key`.
    pub fn of(&self, key: &[u8]) -> &Mutex<()> {
        &self.0[crate::ring::key_hash(key) as usize % self.0.len()]
    }
}

/// Reads and decodes the object stored under `key`, with its bytes. A
/// record that fails its checksum or does not decode is
/// [`ReplicaError::Corrupt`]: never served, never taken for a new key
/// (whose dots would be reused), replaceable by another replica's copy.
pub async fn load_object(
    store: &Arc<dyn Store>,
    key: &[u8],
) -> Result<Option<(Vec<u8>, Object)>, ReplicaError> {
    let (store, k) = (store.clone(), key.to_vec());
    let bytes = match tokio::task::spawn_blocking(move || store.get(&k))
        .await
        .map_err(|e| ReplicaError::Task(e.to_string()))?
    {
        Ok(b) => b,
        Err(StoreError::Corrupt { reason, .. }) => return Err(ReplicaError::Corrupt(reason)),
        Err(e) => return Err(e.into()),
    };
    match bytes {
        None => Ok(None),
        Some(b) => match Object::from_bytes(&b) {
            Ok(o) => Ok(Some((b, o))),
            Err(e) => Err(ReplicaError::Corrupt(e.to_string())),
        },
    }
}

/// Encodes and stores `object` under `key`; returns the anti-entropy digest
/// of the stored bytes.
pub async fn save_object(
    store: &Arc<dyn Store>,
    key: &[u8],
    object: &Object,
) -> Result<u64, ReplicaError> {
    let (store, k) = (store.clone(), key.to_vec());
    let bytes = object.to_bytes();
    let digest = crate::anti_entropy::digest(&bytes);
    tokio::task::spawn_blocking(move || store.put(&k, &bytes))
        .await
        .map_err(|e| ReplicaError::Task(e.to_string()))??;
    Ok(digest)
}

/// Wall-clock milliseconds since the Unix epoch (informational timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[tokio::test]
    async fn concurrent_updates_on_one_key_are_all_kept() {
        let replica = Arc::new(Replica::new(
            Arc::new(MemoryStore::new()),
            Arc::new(Trees::new("a")),
            Arc::new(ActorCell::new("a", 1, None)),
        ));
        let actor: Actor = "a/1".into();
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let r = replica.clone();
            let a = actor.clone();
            tasks.push(tokio::spawn(async move {
                r.update(
                    b"k",
                    Some(&VClock::new()),
                    &a,
                    Some(i.to_be_bytes().to_vec()),
                )
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let o = replica.get(b"k").await.unwrap().unwrap();
        // All writes had an empty context: all are concurrent siblings.
        assert_eq!(o.siblings.len(), 50);
        // A write without context supersedes everything seen locally.
        let (o, existed) = replica
            .update(b"k", None, &actor, Some(b"x".to_vec()))
            .await
            .unwrap();
        assert!(existed);
        assert_eq!(o.values(), vec![b"x".as_slice()]);
    }
}
