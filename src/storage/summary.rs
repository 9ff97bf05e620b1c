//! Content summaries: for each partition of the key space, [`BUCKETS`]
//! 64-bit hashes, each the XOR of `contribution(key, digest)` over the keys
//! stored in that bucket (see [`crate::keyspace`]). A store keeps its
//! summary exact as it writes (XOR out the old digest, XOR in the new), so
//! anti-entropy compares two replicas' partitions without reading a value
//! and without any copy of the key set. Updates are lock-free
//! (`fetch_xor`); the store serialises the changes of one key.

use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64;

use crate::keyspace::{BUCKETS, PARTITIONS, bucket_of, contribution, partition_of};

/// Per-partition bucket hashes of a store's contents.
pub struct Summary {
    buckets: Box<[AtomicU64]>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary::new()
    }
}

impl std::fmt::Debug for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Summary").finish_non_exhaustive()
    }
}

impl Summary {
    /// The summary of an empty store.
    pub fn new() -> Summary {
        Summary {
            buckets: (0..PARTITIONS * BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Records that `key` went from `old` to `new` (digests; `None` = absent).
    pub fn change(&self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        let delta =
            old.map_or(0, |d| contribution(key, d)) ^ new.map_or(0, |d| contribution(key, d));
        let slot = partition_of(key) * BUCKETS + bucket_of(key);
        self.buckets[slot].fetch_xor(delta, Ordering::Relaxed);
    }

    /// The bucket hashes of partition `p`.
    pub fn buckets(&self, p: usize) -> Vec<u64> {
        let p = p.min(PARTITIONS - 1);
        self.buckets[p * BUCKETS..(p + 1) * BUCKETS]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The root of partition `p`: 0 when it is empty, else a hash of its buckets.
    pub fn root(&self, p: usize) -> u64 {
        root_of(&self.buckets(p))
    }

    /// Every partition's root.
    pub fn roots(&self) -> Vec<u64> {
        (0..PARTITIONS).map(|p| self.root(p)).collect()
    }
}

/// The root of a partition from its buckets.
pub fn root_of(buckets: &[u64]) -> u64 {
    if buckets.iter().all(|b| *b == 0) {
        return 0;
    }
    let mut buf = Vec::with_capacity(buckets.len() * 8);
    for b in buckets {
        buf.extend_from_slice(&b.to_le_bytes());
    }
    xxh3_64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{digest, partition_of};

    #[test]
    fn summaries_depend_on_contents_not_on_history() {
        let (a, b) = (Summary::new(), Summary::new());
        let put = |s: &Summary, k: &str, old: Option<&str>, new: Option<&str>| {
            s.change(
                k.as_bytes(),
                old.map(|v| digest(v.as_bytes())),
                new.map(|v| digest(v.as_bytes())),
            )
        };
        for i in 0..200 {
            put(&a, &format!("k{i}"), None, Some("v"));
        }
        put(&a, "k7", Some("v"), Some("w"));
        put(&a, "k9", Some("v"), None);
        for i in (0..200).rev() {
            let v = if i == 7 { "w" } else { "v" };
            if i != 9 {
                put(&b, &format!("k{i}"), None, Some(v));
            }
        }
        assert_eq!(a.roots(), b.roots());
        put(&b, "k3", Some("v"), Some("x"));
        let differ: Vec<usize> = (0..PARTITIONS)
            .filter(|&p| a.root(p) != b.root(p))
            .collect();
        assert_eq!(differ, vec![partition_of(b"k3")]);
        assert_eq!(root_of(&[0; BUCKETS]), 0);
    }
}
