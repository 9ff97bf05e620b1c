//! The in-memory backend: one hash map per partition of the key space (with
//! hashbrown's seeded foldhash, several times cheaper than SipHash on short
//! keys), each behind its own mutex, with the value's digest kept beside it for the
//! content [`Summary`]. Loses everything when the process stops; used when a
//! node runs without a data directory, for hints of such a node, and in tests.
//! Every write is "durable" at once (there is no disk to wait for).

use std::sync::{Mutex, MutexGuard};

use hashbrown::HashMap;

use super::{Durable, Lsn, Store, StoreError, StoreStatus, Summary};
use crate::keyspace::{PARTITIONS, bucket_of, digest, partition_of};

type Shard = HashMap<Vec<u8>, (Vec<u8>, u64)>;

/// An in-memory [`Store`].
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    summary: Summary,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            shards: (0..PARTITIONS).map(|_| Mutex::default()).collect(),
            summary: Summary::new(),
        }
    }

    fn shard(&self, p: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every change is a single HashMap call plus a summary XOR), so
        // poisoning is ignored.
        self.shards[p].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .shard(partition_of(key))
            .get(key)
            .map(|(v, _)| v.clone()))
    }

    fn digest(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.shard(partition_of(key)).get(key).map(|(_, d)| *d))
    }

    fn append(&self, key: &[u8], value: &[u8]) -> Result<Lsn, StoreError> {
        let d = digest(value);
        let mut shard = self.shard(partition_of(key));
        let old = shard
            .insert(key.to_vec(), (value.to_vec(), d))
            .map(|(_, o)| o);
        self.summary.change(key, old, Some(d));
        Ok(0)
    }

    fn append_delete(&self, key: &[u8]) -> Result<Lsn, StoreError> {
        let mut shard = self.shard(partition_of(key));
        if let Some((_, old)) = shard.remove(key) {
            self.summary.change(key, Some(old), None);
        }
        Ok(0)
    }

    fn durable(&self, _lsn: Lsn) -> Durable {
        Durable::ready()
    }

    fn wait_durable(&self, _lsn: Lsn) -> Result<(), StoreError> {
        Ok(())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for p in 0..PARTITIONS {
            out.extend(self.shard(p).keys().cloned());
        }
        Ok(out)
    }

    fn summary(&self) -> &Summary {
        &self.summary
    }

    fn partition_digests(&self, p: usize, buckets: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let Some(shard) = self.shards.get(p) else {
            return Vec::new();
        };
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        shard
            .iter()
            .filter(|(k, _)| buckets.contains(&(bucket_of(k) as u8)))
            .map(|(k, (_, d))| (k.clone(), *d))
            .collect()
    }

    fn partition_keys(&self, p: usize) -> Vec<Vec<u8>> {
        self.shards
            .get(p)
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn partition_len(&self, p: usize) -> usize {
        self.shards
            .get(p)
            .map_or(0, |s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
    }

    fn status(&self) -> StoreStatus {
        let (mut keys, mut bytes) = (0u64, 0u64);
        for p in 0..PARTITIONS {
            let shard = self.shard(p);
            keys += shard.len() as u64;
            bytes += shard
                .iter()
                .map(|(k, (v, _))| (k.len() + v.len()) as u64)
                .sum::<u64>();
        }
        StoreStatus {
            backend: "memory".into(),
            keys,
            bytes,
            details: Vec::new(),
            ..StoreStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::partition_of;

    #[test]
    fn put_get_delete_and_summaries() {
        let s = MemoryStore::new();
        assert_eq!(s.get(b"k").unwrap(), None);
        s.put(b"k", b"v1").unwrap();
        s.put(b"k", b"v2").unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(s.keys().unwrap(), vec![b"k".to_vec()]);
        let p = partition_of(b"k");
        let all: Vec<u8> = (0..64).collect();
        assert_eq!(
            s.partition_digests(p, &all),
            vec![(b"k".to_vec(), digest(b"v2"))]
        );
        assert_ne!(s.summary().root(p), 0);
        s.delete(b"k").unwrap();
        assert_eq!(s.get(b"k").unwrap(), None);
        assert_eq!(s.status().keys, 0);
        assert_eq!(s.summary().root(p), 0);
    }
}
