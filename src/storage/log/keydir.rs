//! The key directory: maps every live key to the location of its newest
//! record (segment id, offset, length) and the digest of its value. Kept
//! compact: keys live in one byte arena per shard, and the hash table holds
//! 28-byte slots pointing into it, so there is no per-key heap allocation.
//! There is one shard per partition of the key space
//! ([`crate::keyspace::PARTITIONS`]), each behind its own `RwLock`, so readers
//! and writers rarely meet and the keys of one partition can be listed
//! without visiting the others.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::keyspace::{PARTITIONS, partition_of};

const SHARDS: usize = PARTITIONS;

/// Where the newest record of a key lives, and the digest of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Segment id.
    pub seg: u64,
    /// Byte offset of the record in the segment.
    pub offset: u32,
    /// Encoded length of the whole record.
    pub len: u32,
    /// [`crate::keyspace::digest`] of the value (for the content summary).
    pub digest: u64,
}

/// One table slot; `[u32; 2]` keeps the alignment at 4 so a slot is 28 bytes.
#[derive(Clone, Copy)]
struct Slot {
    key_off: u32,
    seg: [u32; 2],
    offset: u32,
    len: u32,
    digest: [u32; 2],
}

fn join(v: [u32; 2]) -> u64 {
    u64::from(v[0]) | (u64::from(v[1]) << 32)
}

fn split(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

impl Slot {
    fn loc(&self) -> Location {
        Location {
            seg: join(self.seg),
            offset: self.offset,
            len: self.len,
            digest: join(self.digest),
        }
    }
    fn set(&mut self, l: Location) {
        self.seg = split(l.seg);
        self.offset = l.offset;
        self.len = l.len;
        self.digest = split(l.digest);
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    /// Keys, each as a 2-byte little-endian length then the bytes.
    arena: Vec<u8>,
    /// Arena bytes belonging to removed keys.
    garbage: usize,
}

fn arena_key(arena: &[u8], off: u32) -> &[u8] {
    let o = off as usize;
    let len = u16::from_le_bytes([arena[o], arena[o + 1]]) as usize;
    &arena[o + 2..o + 2 + len]
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        let arena = &self.arena;
        self.table
            .find(hash, |s| arena_key(arena, s.key_off) == key)
    }

    /// Rebuilds the arena without the garbage (amortised O(1) per removal).
    fn compact_arena(&mut self) {
        let mut fresh = Vec::with_capacity(self.arena.len() - self.garbage);
        for slot in self.table.iter_mut() {
            let k = arena_key(&self.arena, slot.key_off);
            slot.key_off = fresh.len() as u32;
            fresh.extend_from_slice(&(k.len() as u16).to_le_bytes());
            fresh.extend_from_slice(k);
        }
        self.arena = fresh;
        self.garbage = 0;
    }
}

/// A sharded, compact map from key to [`Location`].
pub struct KeyDir {
    seed: u64,
    shards: Vec<RwLock<Shard>>,
}

impl Default for KeyDir {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyDir {
    /// An empty directory with a random hash seed.
    pub fn new() -> Self {
        Self {
            seed: rand::random(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.seed)
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        partition_of(key)
    }

    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        // Every mutation below leaves the shard consistent before it can panic
        // (only allocation can fail), so a poisoned lock is still usable.
        self.shards[i].read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i].write().unwrap_or_else(|e| e.into_inner())
    }

    /// Location of `key`'s newest record.
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        let h = self.hash(key);
        self.read(self.shard_of(key)).find(h, key).map(Slot::loc)
    }

    /// Points `key` at `loc`; returns the location it replaced.
    pub fn insert(&self, key: &[u8], loc: Location) -> Option<Location> {
        let h = self.hash(key);
        let mut guard = self.write(self.shard_of(key));
        let shard = &mut *guard;
        let arena = &shard.arena;
        if let Some(slot) = shard
            .table
            .find_mut(h, |s| arena_key(arena, s.key_off) == key)
        {
            let old = slot.loc();
            slot.set(loc);
            return Some(old);
        }
        let key_off = shard.arena.len() as u32;
        shard
            .arena
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        shard.arena.extend_from_slice(key);
        let mut slot = Slot {
            key_off,
            seg: [0; 2],
            offset: 0,
            len: 0,
            digest: [0; 2],
        };
        slot.set(loc);
        let seed = self.seed;
        let arena = &shard.arena;
        shard.table.insert_unique(h, slot, |s| {
            xxh3_64_with_seed(arena_key(arena, s.key_off), seed)
        });
        None
    }

    /// Removes `key`; returns its location.
    pub fn remove(&self, key: &[u8]) -> Option<Location> {
        let h = self.hash(key);
        let mut guard = self.write(self.shard_of(key));
        let shard = &mut *guard;
        let arena = &shard.arena;
        let entry = shard
            .table
            .find_entry(h, |s| arena_key(arena, s.key_off) == key)
            .ok()?;
        let loc = entry.get().loc();
        entry.remove();
        shard.garbage += 2 + key.len();
        if shard.garbage > 4096 && shard.garbage * 2 > shard.arena.len() {
            shard.compact_arena();
        }
        Some(loc)
    }

    /// Moves `key` from `from` to `to` only if it still points at `from`
    /// (compaction uses this so a concurrent write always wins).
    pub fn replace_if(&self, key: &[u8], from: Location, to: Location) -> bool {
        let h = self.hash(key);
        let mut guard = self.write(self.shard_of(key));
        let shard = &mut *guard;
        let arena = &shard.arena;
        match shard
            .table
            .find_mut(h, |s| arena_key(arena, s.key_off) == key)
        {
            Some(slot) if slot.loc() == from => {
                slot.set(to);
                true
            }
            _ => false,
        }
    }

    /// Number of keys of partition `p`.
    pub fn len_in(&self, p: usize) -> usize {
        if p >= SHARDS {
            return 0;
        }
        self.read(p).table.len()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.read(i).table.len()).sum()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every key and its location, shard by shard (each shard
    /// is read-locked while it is visited, so `f` must not write the directory).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Location)) {
        for i in 0..SHARDS {
            self.for_each_in(i, &mut f);
        }
    }

    /// Calls `f` with every key of partition `p` and its location (the
    /// shard is read-locked meanwhile).
    pub fn for_each_in(&self, p: usize, mut f: impl FnMut(&[u8], Location)) {
        if p >= SHARDS {
            return;
        }
        let shard = self.read(p);
        for slot in shard.table.iter() {
            f(arena_key(&shard.arena, slot.key_off), slot.loc());
        }
    }

    /// Heap bytes held by the directory (table capacity and arenas).
    pub fn heap_bytes(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let s = self.read(i);
                s.table.capacity() * (std::mem::size_of::<Slot>() + 1) + s.arena.capacity()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn loc(seg: u64, offset: u32) -> Location {
        Location {
            seg,
            offset,
            len: 7,
            digest: u64::from(offset) * 3,
        }
    }

    #[test]
    fn slot_is_28_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 28);
    }

    #[test]
    fn behaves_like_a_hashmap() {
        let kd = KeyDir::new();
        let mut model = HashMap::new();
        for i in 0..20_000u32 {
            let key = format!("key-{}", i % 3000).into_bytes();
            let l = loc(u64::from(i) << 33, i);
            if i % 7 == 3 {
                assert_eq!(kd.remove(&key), model.remove(&key));
            } else {
                assert_eq!(kd.insert(&key, l), model.insert(key.clone(), l));
            }
        }
        assert_eq!(kd.len(), model.len());
        for (k, l) in &model {
            assert_eq!(kd.get(k), Some(*l));
        }
        let mut n = 0;
        kd.for_each(|k, l| {
            assert_eq!(model.get(k), Some(&l));
            n += 1;
        });
        assert_eq!(n, model.len());
        let k = b"key-1".to_vec();
        let cur = kd.get(&k).unwrap();
        assert!(!kd.replace_if(&k, loc(1, 1), loc(2, 2)));
        assert!(kd.replace_if(&k, cur, loc(2, 2)));
        assert_eq!(kd.get(&k), Some(loc(2, 2)));
    }
}
