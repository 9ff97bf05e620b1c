//! The cluster as one node sees it: members, liveness, and which members
//! replicate which partition.
//!
//! - [`ring`]: vnode tokens derived from node ids (pure).
//! - [`partition`]: the partition table, each partition's walk of the ring,
//!   computed once per membership change (pure).
//! - [`membership`]: chitchat gossip; keeps the sticky member set and the
//!   live set, and publishes a new [`ClusterView`] whenever either changes.
//!
//! Everything that routes a request reads one `Arc<ClusterView>` snapshot
//! from a `watch` channel: membership and liveness never change under a
//! request's feet, and no lock is held while it runs.

pub mod membership;
pub mod partition;
pub mod ring;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::keyspace::partition_of;

pub use membership::Membership;
pub use partition::PartitionTable;
pub use ring::Ring;

/// One ring member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: Arc<str>,
    /// Its TCP address (clients and peers).
    pub addr: SocketAddr,
}

/// A snapshot of the cluster: members (sorted by id), which are live, the
/// partition table, and the effective replication factor.
#[derive(Debug, Clone)]
pub struct ClusterView {
    members: Vec<Member>,
    live: Vec<bool>,
    table: Arc<PartitionTable>,
    n: usize,
}

impl ClusterView {
    /// A view of `members` (any order), with `live` naming the live ones and
    /// `n` the configured replication factor (shrunk to the member count).
    pub fn new<'a>(
        members: impl IntoIterator<Item = (&'a str, SocketAddr)>,
        live: impl Fn(&str) -> bool,
        n: usize,
        vnodes: usize,
    ) -> ClusterView {
        let mut members: Vec<Member> = members
            .into_iter()
            .map(|(id, addr)| Member {
                id: id.into(),
                addr,
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        let ring = Ring::new(members.iter().map(|m| &*m.id), vnodes);
        let table = Arc::new(PartitionTable::new(&ring));
        let live = members.iter().map(|m| live(&m.id)).collect();
        ClusterView {
            n: n.min(members.len()).max(1),
            members,
            live,
            table,
        }
    }

    /// The same members and table with another live set (no recomputation).
    pub fn with_live(&self, live: impl Fn(&str) -> bool) -> ClusterView {
        ClusterView {
            live: self.members.iter().map(|m| live(&m.id)).collect(),
            ..self.clone()
        }
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// The index of member `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.members.binary_search_by(|m| (*m.id).cmp(id)).ok()
    }

    /// The address of member `id`.
    pub fn addr(&self, id: &str) -> Option<SocketAddr> {
        self.index_of(id).map(|i| self.members[i].addr)
    }

    /// True when member `i` is live.
    pub fn is_live_at(&self, i: usize) -> bool {
        self.live.get(i).copied().unwrap_or(false)
    }

    /// True when member `id` is live.
    pub fn is_live(&self, id: &str) -> bool {
        self.index_of(id).is_some_and(|i| self.is_live_at(i))
    }

    /// Number of live members.
    pub fn live_count(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    /// The effective replication factor: the configured N, shrunk to the
    /// member count.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The partition table.
    pub fn table(&self) -> &Arc<PartitionTable> {
        &self.table
    }

    /// Every member for partition `p`, in preference order (indexes).
    pub fn walk(&self, p: usize) -> &[u16] {
        self.table.walk(p)
    }

    /// The first N members of partition `p` (indexes).
    pub fn owners_of_partition(&self, p: usize) -> &[u16] {
        let walk = self.walk(p);
        &walk[..self.n.min(walk.len())]
    }

    /// The preference list of `key` (indexes).
    pub fn owners(&self, key: &[u8]) -> &[u16] {
        self.owners_of_partition(partition_of(key))
    }

    /// True when member `i` is an owner of partition `p`.
    pub fn owns(&self, i: usize, p: usize) -> bool {
        self.owners_of_partition(p).contains(&(i as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn views_look_up_members_and_owners() {
        let v = ClusterView::new(
            [("c", addr(3)), ("a", addr(1)), ("b", addr(2))],
            |id| id != "b",
            3,
            64,
        );
        assert_eq!(
            v.members().iter().map(|m| &*m.id).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(v.addr("b"), Some(addr(2)));
        assert!(!v.is_live("b") && v.is_live("a") && !v.is_live("zz"));
        assert_eq!(v.live_count(), 2);
        assert_eq!(v.owners(b"k").len(), 3);
        let all = v.with_live(|_| true);
        assert_eq!(all.live_count(), 3);
        assert!(Arc::ptr_eq(all.table(), v.table()));
        // N shrinks to the member count.
        let small = ClusterView::new([("a", addr(1))], |_| true, 3, 64);
        assert_eq!(small.n(), 1);
        assert_eq!(small.owners(b"k"), &[0]);
    }
}
