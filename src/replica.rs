//! The local replica: versioned objects in the node's [`Store`].
//!
//! Every read-modify-write of a key (a coordinated update, a merge from a
//! peer) holds that key's lock stripe, so two concurrent changes to one key on
//! one node never lose each other. Store calls are blocking and run on
//! tokio's blocking pool.

use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::error;

use crate::anti_entropy::Trees;
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
    stripes: Vec<Mutex<()>>,
    /// Anti-entropy trees, told of every change.
    trees: Arc<Trees>,
}

impl Replica {
    /// Wraps a store; every change is recorded in `trees`.
    pub fn new(store: Arc<dyn Store>, trees: Arc<Trees>) -> Replica {
        Replica {
            store,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            trees,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<()> {
        let h = crate::ring::key_hash(key) as usize;
        &self.stripes[h % STRIPES]
    }

    async fn load(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        let store = self.store.clone();
        let k = key.to_vec();
        let bytes = match tokio::task::spawn_blocking(move || store.get(&k))
            .await
            .map_err(|e| ReplicaError::Task(e.to_string()))?
        {
            Ok(b) => b,
            // A record that fails its checksum is as good as missing data:
            // never served, and replaceable by a replica's copy.
            Err(StoreError::Corrupt { reason, .. }) => return Err(ReplicaError::Corrupt(reason)),
            Err(e) => return Err(e.into()),
        };
        match bytes.map(|b| Object::from_bytes(&b)) {
            None => Ok(None),
            Some(Ok(o)) => Ok(Some(o)),
            // Never serve an undecodable object, and never write over it as
            // if the key were new: its dots would be reused.
            Some(Err(e)) => Err(ReplicaError::Corrupt(e.to_string())),
        }
    }

    async fn save(&self, key: &[u8], object: &Object) -> Result<(), ReplicaError> {
        let store = self.store.clone();
        let k = key.to_vec();
        let bytes = object.to_bytes();
        let digest = crate::anti_entropy::digest(&bytes);
        tokio::task::spawn_blocking(move || store.put(&k, &bytes))
            .await
            .map_err(|e| ReplicaError::Task(e.to_string()))??;
        self.trees.record_digest(key, digest);
        Ok(())
    }

    /// Reads the local copy of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.load(key).await
    }

    /// Merges `incoming` into the local copy; returns the result.
    pub async fn merge(&self, key: &[u8], incoming: &Object) -> Result<Object, ReplicaError> {
        let _guard = self.stripe(key).lock().await;
        let local = match self.load(key).await {
            // An incoming copy replaces an undecodable one: that is the repair.
            Err(ReplicaError::Corrupt(cause)) => {
                error!(key = %String::from_utf8_lossy(key), %cause, "replacing a corrupt local copy with a replica's copy");
                None
            }
            other => other?,
        };
        let merged = match &local {
            Some(l) => l.merge(incoming),
            None => incoming.clone(),
        };
        if local.as_ref() != Some(&merged) {
            self.save(key, &merged).await?;
        }
        Ok(merged)
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
        let _guard = self.stripe(key).lock().await;
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
