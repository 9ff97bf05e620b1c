//! The consistent-hash ring with virtual nodes.
//!
//! The ring is a pure function of the member set: each member owns `vnodes`
//! tokens derived from its node id with a stable hash (xxh3), so every node
//! computes the same ring from the same membership without any agreement
//! protocol. A point's preference list is the first `n` distinct nodes met
//! walking clockwise from it; walking further gives the fallback nodes used
//! by a sloppy quorum. Requests do not walk the ring: the partition table
//! ([`crate::cluster::partition`]) walks it once per partition when
//! membership changes.

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64;

/// Default number of virtual nodes per member. With 1024 tokens, each of three
/// nodes owns 33.3% ± about 1% of the key space (the standard deviation of a
/// node's share shrinks with the square root of its token count).
pub const DEFAULT_VNODES: usize = 1024;

pub use crate::keyspace::key_hash;

/// The `i`-th token of `node`: a hash of the id and the index together.
/// (Seeding the hash with the index instead lets short ids such as `-` and
/// `--` collide on many tokens, which skews ownership.)
fn token(node: &str, i: usize) -> u64 {
    let mut buf = Vec::with_capacity(node.len() + 9);
    buf.extend_from_slice(node.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&(i as u64).to_le_bytes());
    xxh3_64(&buf)
}

/// A consistent-hash ring.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// Sorted `(token, index into nodes)`.
    tokens: Vec<(u64, u32)>,
    /// Member node ids, sorted.
    nodes: Vec<String>,
    vnodes: usize,
}

impl Ring {
    /// Builds the ring of `members`, each with `vnodes` tokens.
    pub fn new<I, S>(members: I, vnodes: usize) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = members
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let vnodes = vnodes.max(1);
        let mut tokens = Vec::with_capacity(nodes.len() * vnodes);
        for (idx, node) in nodes.iter().enumerate() {
            for i in 0..vnodes {
                tokens.push((token(node, i), idx as u32));
            }
        }
        // Ties (astronomically rare) are broken by node id order, so every
        // node still builds the same ring.
        tokens.sort_unstable();
        Ring {
            tokens,
            nodes,
            vnodes,
        }
    }

    /// The member node ids, sorted.
    pub fn members(&self) -> &[String] {
        &self.nodes
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual nodes per member.
    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// Every member, in the order met walking clockwise from `key`'s point:
    /// the first `n` are its preference list, the rest its fallbacks.
    pub fn walk(&self, key: &[u8]) -> Vec<&str> {
        self.walk_first(key, self.nodes.len())
    }

    /// The first `n` distinct nodes for `key` (fewer if the ring is smaller).
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<&str> {
        self.walk_first(key, n)
    }

    /// The first `limit` distinct nodes met walking clockwise from `key`;
    /// stops as soon as it has them (this is on every request's path).
    fn walk_first(&self, key: &[u8], limit: usize) -> Vec<&str> {
        let limit = limit.min(self.nodes.len());
        let mut out: Vec<&str> = Vec::with_capacity(limit);
        if self.tokens.is_empty() || limit == 0 {
            return out;
        }
        let mut seen = vec![false; self.nodes.len()];
        let h = key_hash(key);
        let start = self.tokens.partition_point(|&(t, _)| t < h);
        for i in 0..self.tokens.len() {
            let (_, idx) = self.tokens[(start + i) % self.tokens.len()];
            let idx = idx as usize;
            if !seen[idx] {
                seen[idx] = true;
                out.push(&self.nodes[idx]);
                if out.len() == limit {
                    break;
                }
            }
        }
        out
    }

    /// Every member's index (into [`Ring::members`]) in the order met
    /// walking clockwise from `point`.
    pub fn walk_indexes(&self, point: u64) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        if self.tokens.is_empty() {
            return out;
        }
        let mut seen = vec![false; self.nodes.len()];
        let start = self.tokens.partition_point(|&(t, _)| t < point);
        for i in 0..self.tokens.len() {
            let (_, idx) = self.tokens[(start + i) % self.tokens.len()];
            let idx = idx as usize;
            if !seen[idx] {
                seen[idx] = true;
                out.push(idx);
                if out.len() == self.nodes.len() {
                    break;
                }
            }
        }
        out
    }

    /// Fraction of the hash space for which each member is the first owner.
    pub fn ownership(&self) -> BTreeMap<&str, f64> {
        let mut out: BTreeMap<&str, f64> = self.nodes.iter().map(|n| (n.as_str(), 0.0)).collect();
        let len = self.tokens.len();
        for i in 0..len {
            let (t, idx) = self.tokens[i];
            // A token owns the arc from the previous token (exclusive) to itself.
            let prev = if i == 0 {
                self.tokens[len - 1].0
            } else {
                self.tokens[i - 1].0
            };
            let arc = t.wrapping_sub(prev);
            let arc = if len == 1 { u64::MAX } else { arc };
            *out.entry(self.nodes[idx as usize].as_str()).or_insert(0.0) +=
                arc as f64 / u64::MAX as f64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{}", 55551 + i)).collect()
    }

    #[test]
    fn preference_list_is_distinct_and_sized() {
        let ring = Ring::new(names(5), DEFAULT_VNODES);
        for k in 0..500 {
            let key = format!("key-{k}");
            let pl = ring.preference_list(key.as_bytes(), 3);
            assert_eq!(pl.len(), 3);
            let set: BTreeSet<_> = pl.iter().collect();
            assert_eq!(set.len(), 3);
            assert_eq!(ring.walk(key.as_bytes()).len(), 5);
            assert_eq!(&ring.walk(key.as_bytes())[..3], &pl[..]);
        }
        let small = Ring::new(names(2), 16);
        assert_eq!(small.preference_list(b"k", 3).len(), 2);
        assert!(
            Ring::new(Vec::<String>::new(), 16)
                .preference_list(b"k", 3)
                .is_empty()
        );
    }

    #[test]
    fn ring_is_a_pure_function_of_members() {
        let a = Ring::new(["c", "a", "b"], 64);
        let b = Ring::new(["a", "b", "c", "a"], 64);
        for k in 0..200 {
            let key = format!("{k}");
            assert_eq!(
                a.preference_list(key.as_bytes(), 3),
                b.preference_list(key.as_bytes(), 3)
            );
        }
    }

    #[test]
    fn ownership_sums_to_one() {
        let ring = Ring::new(names(4), 32);
        let total: f64 = ring.ownership().values().sum();
        assert!((total - 1.0).abs() < 1e-6);
        let one = Ring::new(["solo"], 1);
        assert!((one.ownership()["solo"] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn default_local_cluster_is_balanced() {
        let ring = Ring::new(names(3), DEFAULT_VNODES);
        for (node, share) in ring.ownership() {
            assert!((share - 1.0 / 3.0).abs() < 0.05, "{node} owns {share}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn three_nodes_each_own_a_third(ids in proptest::collection::btree_set("[a-z0-9-]{1,16}", 3)) {
            let ring = Ring::new(&ids, DEFAULT_VNODES);
            for (node, share) in ring.ownership() {
                prop_assert!((share - 1.0 / 3.0).abs() < 0.05, "{} owns {}", node, share);
            }
        }

        #[test]
        fn adding_a_node_moves_about_a_quarter_and_only_to_it(
            ids in proptest::collection::btree_set("[a-z0-9-]{1,16}", 4)
        ) {
            let ids: Vec<String> = ids.into_iter().collect();
            let old = Ring::new(&ids[..3], DEFAULT_VNODES);
            let new = Ring::new(&ids, DEFAULT_VNODES);
            let newcomer = ids[3].as_str();
            let keys = 4000;
            let mut moved = 0;
            for k in 0..keys {
                let key = format!("key-{k}");
                let before = old.preference_list(key.as_bytes(), 1)[0];
                let after = new.preference_list(key.as_bytes(), 1)[0];
                if before != after {
                    moved += 1;
                    prop_assert_eq!(after, newcomer, "key moved between old nodes");
                }
                // For N = 3 preference lists, the newcomer replaces at most one old owner.
                let b3: BTreeSet<&str> = old.preference_list(key.as_bytes(), 3).into_iter().collect();
                let a3: BTreeSet<&str> = new.preference_list(key.as_bytes(), 3).into_iter().collect();
                prop_assert!(a3.difference(&b3).all(|n| *n == newcomer));
                prop_assert!(b3.difference(&a3).count() <= 1);
            }
            let frac = moved as f64 / keys as f64;
            prop_assert!((frac - 0.25).abs() < 0.05, "moved {}", frac);
        }
    }
}
