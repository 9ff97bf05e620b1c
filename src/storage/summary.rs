//! Content summaries: for each partition of the key space, [`BUCKETS`]
//! 64-bit hashes, each the XOR of `contribution(key, digest)` over the keys
//! stored in that bucket (see [`crate::keyspace`]). A store keeps its
//! summary exact as it writes (XOR out the old digest, XOR in the new), so
//! anti-entropy compares two replicas' partitions without reading a value
//! and without any copy of the key set. Updates are lock-free
//! (`fetch_xor`); the store serialises the changes of one key.
//!
//! A partition's buckets are allocated on its first change: an empty store
//! holds a 16 KiB table of empty slots, not 512 KiB of zeros. (The zeros
//! were resident or not depending on whether the allocator handed out fresh
//! pages: after more start-up work they were not, and every idle in-memory
//! node carried both stores' 512 KiB; docs/operations.md, "Scale".)

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64;

use crate::keyspace::{BUCKETS, PARTITIONS, bucket_of, contribution, partition_of};

/// One partition's bucket hashes.
type Buckets = [AtomicU64; BUCKETS];

/// Per-partition bucket hashes of a store's contents.
pub struct Summary {
    /// Indexed by partition; empty until the partition's first change.
    partitions: Box<[OnceLock<Box<Buckets>>]>,
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
            partitions: (0..PARTITIONS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records that `key` went from `old` to `new` (digests; `None` = absent).
    pub fn change(&self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        let delta =
            old.map_or(0, |d| contribution(key, d)) ^ new.map_or(0, |d| contribution(key, d));
        if delta == 0 {
            return;
        }
        let buckets = self.partitions[partition_of(key)]
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        buckets[bucket_of(key)].fetch_xor(delta, Ordering::Relaxed);
    }

    /// The bucket hashes of partition `p`.
    pub fn buckets(&self, p: usize) -> Vec<u64> {
        match self.partition(p) {
            Some(b) => b.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            None => vec![0; BUCKETS],
        }
    }

    /// The root of partition `p`: 0 when it is empty, else a hash of its buckets.
    pub fn root(&self, p: usize) -> u64 {
        match self.partition(p) {
            Some(_) => root_of(&self.buckets(p)),
            None => 0,
        }
    }

    /// How many partitions have had a change (and hold their buckets).
    #[cfg(test)]
    fn allocated_partitions(&self) -> usize {
        self.partitions.iter().filter(|p| p.get().is_some()).count()
    }

    /// Partition `p`'s buckets (the last partition's for `p` out of range),
    /// if it ever changed.
    fn partition(&self, p: usize) -> Option<&Buckets> {
        self.partitions[p.min(PARTITIONS - 1)].get().map(|b| &**b)
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

    #[test]
    fn buckets_are_allocated_per_partition_on_first_change() {
        let s = Summary::new();
        assert_eq!(s.allocated_partitions(), 0);
        let p = partition_of(b"k");
        assert_eq!(s.root(p), 0);
        assert_eq!(s.buckets(p), vec![0; BUCKETS]);
        // Reads and no-op changes allocate nothing.
        s.change(b"k", Some(digest(b"v")), Some(digest(b"v")));
        s.change(b"k", None, None);
        assert_eq!(s.allocated_partitions(), 0);
        s.change(b"k", None, Some(digest(b"v")));
        assert_eq!(s.allocated_partitions(), 1);
        assert_ne!(s.root(p), 0);
        assert_eq!(
            s.buckets(p).iter().filter(|b| **b != 0).count(),
            1,
            "one bucket holds the key"
        );
        // Removing the key empties the partition again (its buckets stay).
        s.change(b"k", Some(digest(b"v")), None);
        assert_eq!(s.root(p), 0);
        assert_eq!(s.allocated_partitions(), 1);
        // Out-of-range partitions read as the last one, as before.
        assert_eq!(s.root(PARTITIONS + 5), s.root(PARTITIONS - 1));
    }
}
