//! The key space: how a key hashes, and the fixed partitions and buckets
//! the hash space is cut into. Pure functions, shared by the ring (which
//! assigns partitions to nodes), the storage engine (which keeps its key
//! directory and content summaries per partition) and anti-entropy (which
//! compares those summaries).
//!
//! There are [`PARTITIONS`] = 1024 partitions: the top [`PARTITION_BITS`]
//! bits of a key's 64-bit xxh3 hash. A partition is the unit of ownership
//! (its preference list is computed once per membership change), of
//! anti-entropy (one Merkle summary each) and of the coming join/leave
//! streaming. 1024 keeps each partition small (about 1/1000 of the data)
//! while a per-partition table stays a few kilobytes. Inside a partition,
//! the next [`BUCKET_BITS`] bits pick one of [`BUCKETS`] = 64 buckets, the
//! leaves of the partition's summary.

use xxhash_rust::xxh3::xxh3_64;

/// Bits of the hash that pick the partition.
pub const PARTITION_BITS: u32 = 10;
/// Number of partitions (fixed for the life of a cluster).
pub const PARTITIONS: usize = 1 << PARTITION_BITS;
/// Bits of the hash, after the partition's, that pick the bucket.
pub const BUCKET_BITS: u32 = 6;
/// Buckets per partition summary.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// The point of the hash space a key hashes to.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The partition of a hash.
pub fn partition_of_hash(hash: u64) -> usize {
    (hash >> (64 - PARTITION_BITS)) as usize
}

/// The partition of a key.
pub fn partition_of(key: &[u8]) -> usize {
    partition_of_hash(key_hash(key))
}

/// The bucket (within its partition) of a hash.
pub fn bucket_of_hash(hash: u64) -> usize {
    ((hash >> (64 - PARTITION_BITS - BUCKET_BITS)) as usize) & (BUCKETS - 1)
}

/// The bucket (within its partition) of a key.
pub fn bucket_of(key: &[u8]) -> usize {
    bucket_of_hash(key_hash(key))
}

/// The first point of the hash space in partition `p`.
pub fn partition_start(p: usize) -> u64 {
    (p as u64) << (64 - PARTITION_BITS)
}

/// The digest of a stored value (what anti-entropy compares).
pub fn digest(value: &[u8]) -> u64 {
    xxh3_64(value)
}

/// What one key with this digest adds (by XOR) to its bucket's hash.
pub fn contribution(key: &[u8], digest: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_buckets_cover_the_hash_space() {
        assert_eq!(partition_of_hash(0), 0);
        assert_eq!(partition_of_hash(u64::MAX), PARTITIONS - 1);
        assert_eq!(bucket_of_hash(u64::MAX), BUCKETS - 1);
        for p in [0, 1, 500, PARTITIONS - 1] {
            assert_eq!(partition_of_hash(partition_start(p)), p);
            assert_eq!(bucket_of_hash(partition_start(p)), 0);
        }
        // Keys spread over every partition.
        let mut seen = vec![false; PARTITIONS];
        for i in 0..20_000 {
            seen[partition_of(format!("key:{i}").as_bytes())] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_ne!(contribution(b"k", 1), contribution(b"k", 2));
        assert_ne!(contribution(b"k", 1), contribution(b"j", 1));
    }
}
