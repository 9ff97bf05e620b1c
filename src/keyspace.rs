//! The key space: how a key maps to its partition and bucket, and the
//! digests anti-entropy compares. Pure functions, shared by the ring (which
//! assigns partitions to nodes), the storage engine (which keeps its key
//! directory and content summaries per partition) and anti-entropy (which
//! compares those summaries).
//!
//! A key's **slot** is Redis Cluster's: CRC16 (XMODEM) of the key, or of its
//! hash tag (the text between the first `{` and the next `}` after it, if
//! non-empty), modulo [`SLOTS`] = 16384. So keys that share a hash tag share a
//! slot, as in Redis, and the slots cluster-mode clients ask about (`CLUSTER
//! SLOTS`) map exactly onto distro-db's partitions. There are [`PARTITIONS`]
//! = 1024 partitions of 16 consecutive slots each. A partition is the unit of
//! ownership (its preference list is computed once per membership change), of
//! anti-entropy (one summary each) and of the coming join/leave streaming.
//! 1024 keeps each partition small (about 1/1000 of the data) while a
//! per-partition table stays a few kilobytes. Inside a partition, the top
//! [`BUCKET_BITS`] bits of the key's xxh3 hash pick one of [`BUCKETS`] = 64
//! buckets, the leaves of the partition's summary.

use xxhash_rust::xxh3::xxh3_64;

/// Redis Cluster's hash slots.
pub const SLOTS: usize = 16384;
/// Bits of the slot that pick the partition.
pub const PARTITION_BITS: u32 = 10;
/// Number of partitions (fixed for the life of a cluster).
pub const PARTITIONS: usize = 1 << PARTITION_BITS;
/// Slots per partition.
pub const SLOTS_PER_PARTITION: usize = SLOTS / PARTITIONS;
/// Bits of the xxh3 hash that pick the bucket within a partition.
pub const BUCKET_BITS: u32 = 6;
/// Buckets per partition summary.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// A 64-bit hash of a key (buckets, lock stripes).
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that decides its slot: its hash tag if it has a
/// non-empty one (`{user1000}.following` → `user1000`), else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// Redis Cluster's hash slot of a key.
pub fn slot_of(key: &[u8]) -> usize {
    usize::from(crc16(hash_tag(key))) % SLOTS
}

/// The partition of a slot.
pub fn partition_of_slot(slot: usize) -> usize {
    slot / SLOTS_PER_PARTITION
}

/// The partition of a key.
pub fn partition_of(key: &[u8]) -> usize {
    partition_of_slot(slot_of(key))
}

/// The bucket (within its partition) of a key.
pub fn bucket_of(key: &[u8]) -> usize {
    (key_hash(key) >> (64 - BUCKET_BITS)) as usize
}

/// The point of the ring where partition `p`'s walk of the ring starts.
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
    fn slots_match_redis_cluster() {
        // Values from Redis's own documentation and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"hello"), 866);
        // Hash tags: the first {...} with something inside decides.
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(
            slot_of(b"{user1000}.followers"),
            slot_of(b"{user1000}.following")
        );
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }

    #[test]
    fn partitions_and_buckets_cover_the_key_space() {
        assert_eq!(partition_of_slot(0), 0);
        assert_eq!(partition_of_slot(SLOTS - 1), PARTITIONS - 1);
        let mut seen = vec![0usize; PARTITIONS];
        let mut buckets = [false; BUCKETS];
        for i in 0..100_000 {
            let k = format!("key:{i:012}");
            seen[partition_of(k.as_bytes())] += 1;
            buckets[bucket_of(k.as_bytes())] = true;
        }
        assert!(seen.iter().all(|n| *n > 30), "every partition gets keys");
        assert!(buckets.iter().all(|b| *b));
        assert_ne!(contribution(b"k", 1), contribution(b"k", 2));
        assert_ne!(contribution(b"k", 1), contribution(b"j", 1));
    }
}
