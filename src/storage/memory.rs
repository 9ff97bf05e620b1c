//! The in-memory backend: a `HashMap` behind a mutex. Loses everything when
//! the process stops; used when a node runs without a data directory and in tests.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Store, StoreError, StoreStatus};

/// An in-memory [`Store`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every operation is a single HashMap call), so poisoning is ignored.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.map().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.map().remove(key);
        Ok(())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.map().keys().cloned().collect())
    }

    fn status(&self) -> StoreStatus {
        let map = self.map();
        StoreStatus {
            backend: "memory".into(),
            keys: map.len() as u64,
            bytes: map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            details: Vec::new(),
            ..StoreStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete() {
        let s = MemoryStore::new();
        assert_eq!(s.get(b"k").unwrap(), None);
        s.put(b"k", b"v1").unwrap();
        s.put(b"k", b"v2").unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(s.keys().unwrap(), vec![b"k".to_vec()]);
        s.delete(b"k").unwrap();
        assert_eq!(s.get(b"k").unwrap(), None);
        assert_eq!(s.status().keys, 0);
    }
}
