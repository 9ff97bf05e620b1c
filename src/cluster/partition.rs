//! The partition table: for each of the [`PARTITIONS`] fixed partitions,
//! every member in the order a walk of the ring meets them from the
//! partition's first point. The first N are the partition's preference list,
//! the rest its fallbacks (sloppy-quorum stand-ins, in order). Computed once
//! per membership change, so a request finds its replicas with one index,
//! not a ring walk. Pure.

use crate::cluster::ring::Ring;
use crate::keyspace::{PARTITIONS, partition_start};

/// Member indexes (into the sorted member list) per partition, in walk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    members: usize,
    walks: Vec<u16>,
}

impl PartitionTable {
    /// The table of `ring` (whose members are sorted, as the view's are).
    pub fn new(ring: &Ring) -> PartitionTable {
        let members = ring.len();
        let mut walks = Vec::with_capacity(PARTITIONS * members);
        for p in 0..PARTITIONS {
            walks.extend(
                ring.walk_indexes(partition_start(p))
                    .into_iter()
                    .map(|i| i as u16),
            );
        }
        PartitionTable { members, walks }
    }

    /// Number of members the table was built for.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Every member of partition `p`, in preference order.
    pub fn walk(&self, p: usize) -> &[u16] {
        let m = self.members;
        self.walks.get(p * m..(p + 1) * m).unwrap_or(&[])
    }

    /// How many partitions each member is the first owner of.
    pub fn first_owner_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members];
        for p in 0..PARTITIONS {
            if let Some(&first) = self.walk(p).first() {
                counts[first as usize] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{}", 55551 + i)).collect()
    }

    #[test]
    fn every_partition_walks_every_member_once() {
        let ring = Ring::new(names(5), 64);
        let t = PartitionTable::new(&ring);
        for p in 0..PARTITIONS {
            let walk = t.walk(p);
            assert_eq!(walk.len(), 5);
            assert_eq!(walk.iter().collect::<BTreeSet<_>>().len(), 5);
        }
        assert!(
            PartitionTable::new(&Ring::new(Vec::<String>::new(), 8))
                .walk(3)
                .is_empty()
        );
    }

    #[test]
    fn partitions_are_balanced_and_stable() {
        let t3 = PartitionTable::new(&Ring::new(names(3), crate::cluster::ring::DEFAULT_VNODES));
        for c in t3.first_owner_counts() {
            let share = c as f64 / PARTITIONS as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.06, "share {share}");
        }
        // A fourth node takes partitions only from others, about a quarter.
        let t4 = PartitionTable::new(&Ring::new(names(4), crate::cluster::ring::DEFAULT_VNODES));
        let mut moved = 0;
        for p in 0..PARTITIONS {
            let before = names(3)[t3.walk(p)[0] as usize].clone();
            let after = names(4)[t4.walk(p)[0] as usize].clone();
            if before != after {
                moved += 1;
                assert_eq!(after, names(4)[3]);
            }
        }
        let frac = moved as f64 / PARTITIONS as f64;
        assert!((frac - 0.25).abs() < 0.07, "moved {frac}");
    }
}
