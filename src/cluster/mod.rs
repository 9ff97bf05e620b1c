//! The cluster as one node sees it: members, liveness, and which members
//! replicate which partition.
//!
//! - [`layout`]: the versioned layout (nodes, states, assignment) and its
//!   changes (pure).
//! - [`assign`]: the balanced assignment of partitions to members (pure).
//! - [`steward`]: adopting the newest layout, bootstrapping a cluster,
//!   making changes as the claimant, carrying a change out step by step.
//! - [`membership`]: chitchat gossip and liveness; runs the steward each
//!   round and publishes a new [`ClusterView`] when the layout, its phase
//!   or liveness change.
//! - [`ring`], [`partition`]: the vnode ring of earlier releases, used only
//!   to adopt the ownership of a data directory made before layouts.
//!
//! Everything that routes a request reads one `Arc<ClusterView>` snapshot
//! from a `watch` channel: membership and liveness never change under a
//! request's feet, and no lock is held while it runs.

pub mod assign;
pub mod layout;
pub mod membership;
pub mod partition;
pub mod ring;
pub mod steward;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::keyspace::{PARTITIONS, partition_of};

pub use layout::{Layout, NodeState};
pub use membership::Membership;
pub use partition::PartitionTable;
pub use ring::Ring;

/// One node a view routes to: a member of the layout, or one leaving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: Arc<str>,
    /// Its TCP address (clients and peers).
    pub addr: SocketAddr,
    /// Its state in the layout.
    pub state: NodeState,
}

/// Where each partition's requests go under one layout phase, computed once
/// per layout change (member indexes into [`ClusterView::members`]).
#[derive(Debug)]
struct Routes {
    /// Replicas per partition in the current assignment.
    n: usize,
    /// `PARTITIONS * n` current owners.
    current: Vec<u16>,
    /// Previous owners per partition while a change is carried out (nodes
    /// removed meanwhile left out).
    previous: Option<Vec<Vec<u16>>>,
    /// Per partition, its current owners and then up to [`STAND_INS`]
    /// other members, in the order stand-ins are taken (a hash order of
    /// the partition and the id): `PARTITIONS * walk_len` indexes.
    walks: Vec<u16>,
    /// Entries per partition in `walks`: `min(members, n + STAND_INS)`.
    walk_len: usize,
}

/// How many members beyond a partition's owners may stand in for them
/// (hinted handoff) or replace a replica that fails during a request. A
/// partition whose owners are down and whose next 16 members are all down
/// too gets no stand-in: its writes fail unless a quorum of owners answers.
/// Without the bound every view held every member for every partition
/// (200 KB at 100 nodes) and every request built a spare list as long as
/// the cluster.
pub const STAND_INS: usize = 16;

/// Requests begun under one layout phase and not finished yet: the layout
/// steward waits for them to drain before it tells the cluster that this
/// node no longer acts on an older phase.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// Requests still running.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Held by a request while it runs under a view (see [`ClusterView::begin`]).
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A snapshot of the cluster: the layout, which nodes are live, and where
/// each partition's reads and writes go. While a layout change is carried
/// out, writes go to the partition's previous and current owners (a quorum
/// in each), and reads to the previous owners until every new owner holds
/// its partitions, then to the current ones.
#[derive(Debug, Clone)]
pub struct ClusterView {
    members: Vec<Member>,
    live: Vec<bool>,
    layout: Arc<Layout>,
    routes: Arc<Routes>,
    reads_current: bool,
    inflight: Arc<InFlight>,
}

impl ClusterView {
    /// A view of a first layout of `members` (any order), with `live`
    /// naming the live ones and `n` the configured replication factor
    /// (tests and benchmarks; nodes build theirs from the layout).
    pub fn new<'a>(
        members: impl IntoIterator<Item = (&'a str, SocketAddr)>,
        live: impl Fn(&str) -> bool,
        n: usize,
    ) -> ClusterView {
        let nodes: Vec<(String, SocketAddr)> = members
            .into_iter()
            .map(|(id, a)| (id.to_string(), a))
            .collect();
        ClusterView::from_layout(Arc::new(Layout::bootstrap(&nodes, n)), live, true)
    }

    /// The view of `layout`, with `live` naming the live nodes. While the
    /// layout is being carried out, `reads_current` says whether reads
    /// have switched to the new owners yet.
    pub fn from_layout(
        layout: Arc<Layout>,
        live: impl Fn(&str) -> bool,
        reads_current: bool,
    ) -> ClusterView {
        let members: Vec<Member> = layout
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Removed)
            .map(|n| Member {
                id: n.id.clone(),
                addr: n.addr,
                state: n.state,
            })
            .collect();
        let index = |id: &str| members.binary_search_by(|m| (*m.id).cmp(id)).ok();
        let map = |a: &assign::Assignment, p: usize| -> Vec<u16> {
            a.owners(p)
                .iter()
                .filter_map(|&i| index(&a.members()[usize::from(i)]))
                .map(|i| i as u16)
                .collect()
        };
        let cur = &layout.current;
        let n = cur.n();
        let mut current = Vec::with_capacity(PARTITIONS * n);
        for p in 0..PARTITIONS {
            let owners = map(cur, p);
            debug_assert_eq!(owners.len(), n);
            current.extend(owners);
        }
        let previous = layout
            .previous
            .as_ref()
            .map(|a| (0..PARTITIONS).map(|p| map(a, p)).collect::<Vec<_>>());
        let walk_len = members.len().min(n + STAND_INS);
        let mut walks = Vec::with_capacity(PARTITIONS * walk_len);
        let mut rest: Vec<(u64, u16)> = Vec::with_capacity(members.len());
        for p in 0..PARTITIONS {
            let owners = &current[p * n..(p + 1) * n];
            rest.clear();
            rest.extend(
                (0..members.len() as u16)
                    .filter(|i| !owners.contains(i))
                    .map(|i| (fallback_rank(p, &members[usize::from(i)].id), i)),
            );
            let keep = walk_len.saturating_sub(owners.len()).min(rest.len());
            if keep < rest.len() {
                rest.select_nth_unstable(keep);
                rest.truncate(keep);
            }
            rest.sort_unstable();
            walks.extend_from_slice(owners);
            walks.extend(rest.iter().map(|&(_, i)| i));
        }
        let live = members.iter().map(|m| live(&m.id)).collect();
        ClusterView {
            members,
            live,
            routes: Arc::new(Routes {
                n,
                current,
                previous,
                walks,
                walk_len,
            }),
            reads_current: reads_current || layout.previous.is_none(),
            layout,
            inflight: Arc::new(InFlight::default()),
        }
    }

    /// The same layout and phase with another live set (no recomputation;
    /// requests in flight are still counted together).
    pub fn with_live(&self, live: impl Fn(&str) -> bool) -> ClusterView {
        ClusterView {
            live: self.members.iter().map(|m| live(&m.id)).collect(),
            ..self.clone()
        }
    }

    /// The layout this view routes by.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// True while a layout change is carried out and reads still go to the
    /// previous owners.
    pub fn reads_previous(&self) -> bool {
        !self.reads_current
    }

    /// Counts a request as running under this view until the guard drops.
    pub fn begin(&self) -> InFlightGuard {
        self.inflight.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.inflight.clone())
    }

    /// The requests running under this view's layout phase.
    pub fn inflight(&self) -> &Arc<InFlight> {
        &self.inflight
    }

    /// The nodes requests may go to (members and leaving nodes), sorted by id.
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
        self.routes.n.max(1)
    }

    /// The current owners of partition `p` (indexes).
    pub fn current_owners(&self, p: usize) -> &[u16] {
        let n = self.routes.n;
        self.routes.current.get(p * n..(p + 1) * n).unwrap_or(&[])
    }

    /// The previous owners of partition `p` while a change is carried out.
    pub fn previous_owners(&self, p: usize) -> Option<&[u16]> {
        self.routes
            .previous
            .as_ref()
            .and_then(|prev| prev.get(p))
            .map(Vec::as_slice)
    }

    /// The owners reads of partition `p` go to (indexes, preference order).
    pub fn owners_of_partition(&self, p: usize) -> &[u16] {
        match self.previous_owners(p) {
            Some(prev) if !self.reads_current && !prev.is_empty() => prev,
            _ => self.current_owners(p),
        }
    }

    /// The owner sets a write of partition `p` must reach a quorum in: the
    /// current owners and, while a change is carried out and they differ,
    /// the previous ones.
    pub fn write_sets(&self, p: usize) -> Vec<&[u16]> {
        let cur = self.current_owners(p);
        match self.previous_owners(p) {
            Some(prev) if self.moving(p) => vec![cur, prev],
            _ => vec![cur],
        }
    }

    /// Whether a write of partition `p` must reach W in two owner sets (a
    /// layout change moves it): [`Self::write_sets`] without allocating.
    pub fn moving(&self, p: usize) -> bool {
        self.previous_owners(p)
            .is_some_and(|prev| !prev.is_empty() && !same_set(prev, self.current_owners(p)))
    }

    /// The members of partition `p` a request may use: the current owners,
    /// then up to [`STAND_INS`] others in the order stand-ins are taken.
    pub fn walk(&self, p: usize) -> &[u16] {
        let w = self.routes.walk_len;
        self.routes.walks.get(p * w..(p + 1) * w).unwrap_or(&[])
    }

    /// The read owners of `key` (indexes).
    pub fn owners(&self, key: &[u8]) -> &[u16] {
        self.owners_of_partition(partition_of(key))
    }

    /// True when member `i` replicates partition `p` (in any set a write
    /// of it reaches).
    pub fn owns(&self, i: usize, p: usize) -> bool {
        let i = i as u16;
        self.current_owners(p).contains(&i)
            || self.previous_owners(p).is_some_and(|o| o.contains(&i))
    }
}

fn same_set(a: &[u16], b: &[u16]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The order in which members stand in for a partition's owners: a hash of
/// the partition and the id, so stand-in load spreads evenly.
fn fallback_rank(p: usize, id: &str) -> u64 {
    let mut buf = Vec::with_capacity(id.len() + 8);
    buf.extend_from_slice(&(p as u64).to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
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
        // N shrinks to the member count.
        let small = ClusterView::new([("a", addr(1))], |_| true, 3);
        assert_eq!(small.n(), 1);
        assert_eq!(small.owners(b"k"), &[0]);
    }

    #[test]
    fn walks_hold_the_owners_then_a_bounded_spread_of_stand_ins() {
        // Small clusters: every member, owners first.
        let ids: Vec<String> = (0..5).map(|i| format!("n{i:02}")).collect();
        let v = ClusterView::new(ids.iter().map(|id| (id.as_str(), addr(1))), |_| true, 3);
        for p in 0..PARTITIONS {
            let w = v.walk(p);
            assert_eq!(w.len(), 5);
            assert_eq!(&w[..3], v.owners_of_partition(p));
            let mut sorted = w.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
        }
        // 100 members: N + STAND_INS distinct entries per partition, the
        // same first stand-ins as the full hash order, and every member a
        // stand-in of some partitions (the load of hints spreads).
        let ids: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
        let v = ClusterView::new(ids.iter().map(|id| (id.as_str(), addr(1))), |_| true, 3);
        let mut stand_in_of = vec![0usize; 100];
        for p in 0..PARTITIONS {
            let w = v.walk(p);
            assert_eq!(w.len(), 3 + STAND_INS, "partition {p}");
            assert_eq!(&w[..3], v.owners_of_partition(p));
            let mut distinct = w.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), w.len(), "partition {p}");
            let mut full: Vec<(u64, u16)> = (0..100u16)
                .filter(|i| !w[..3].contains(i))
                .map(|i| (fallback_rank(p, &ids[usize::from(i)]), i))
                .collect();
            full.sort_unstable();
            let expected: Vec<u16> = full.iter().take(STAND_INS).map(|&(_, i)| i).collect();
            assert_eq!(&w[3..], &expected[..], "partition {p}");
            stand_in_of[usize::from(w[3])] += 1;
        }
        assert!(stand_in_of.iter().all(|&c| c > 0), "{stand_in_of:?}");
    }
}
