//! Where a request goes: the sloppy-quorum plan of a partition, from a
//! cluster view. Pure.
//!
//! The plan's slots are the partition's first N owners, except that each
//! owner the failure detector marks down is replaced by the next live node
//! of the partition's walk, which keeps the copy as a hint for that owner
//! (Dynamo section 4.6). The live nodes further along the walk are spares:
//! they stand in for a replica that fails during the request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::ClusterView;

/// One replica of a request, as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Member index in the view.
    pub idx: usize,
    /// Node id.
    pub node: Arc<str>,
    /// Its address.
    pub addr: SocketAddr,
    /// Live when the plan was made.
    pub live: bool,
    /// For a stand-in: the owner whose copy it keeps as a hint.
    pub hint: Option<Arc<str>>,
}

/// The slots and spares of one request.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Where the request goes (N targets, fewer with fewer members).
    pub slots: Vec<Target>,
    /// Live nodes that can stand in for a slot that fails, in walk order.
    pub spares: VecDeque<Target>,
}

fn target(view: &ClusterView, idx: usize, hint: Option<Arc<str>>) -> Target {
    let m = view.member(idx);
    Target {
        idx,
        node: m.id.clone(),
        addr: m.addr,
        live: view.is_live_at(idx),
        hint,
    }
}

/// The owners of partition `p` as targets, in preference order.
pub fn owners(view: &ClusterView, p: usize) -> Vec<Target> {
    view.owners_of_partition(p)
        .iter()
        .map(|&i| target(view, usize::from(i), None))
        .collect()
}

/// The sloppy-quorum plan of a read of partition `p`: its read owners.
pub fn plan(view: &ClusterView, p: usize) -> Plan {
    sloppy(view, p, view.owners_of_partition(p).to_vec())
}

/// The sloppy-quorum plan of a write of partition `p`: every owner of every
/// set the write must reach (the current owners, and the previous ones
/// while a layout change is carried out), in that order.
pub fn write_plan(view: &ClusterView, p: usize) -> Plan {
    let mut owners: Vec<u16> = Vec::with_capacity(view.n() * 2);
    for set in view.write_sets(p) {
        for &o in set {
            if !owners.contains(&o) {
                owners.push(o);
            }
        }
    }
    sloppy(view, p, owners)
}

/// `owners` with each one the failure detector marks down replaced by the
/// next live node of the partition's walk (which keeps a hint for it); the
/// live nodes left over are spares.
fn sloppy(view: &ClusterView, p: usize, owners: Vec<u16>) -> Plan {
    let mut spares: VecDeque<Target> = view
        .walk(p)
        .iter()
        .filter(|i| !owners.contains(i))
        .map(|&i| usize::from(i))
        .filter(|&i| view.is_live_at(i))
        .map(|i| target(view, i, None))
        .collect();
    let mut slots = Vec::with_capacity(owners.len());
    for o in owners {
        let o = usize::from(o);
        if view.is_live_at(o) {
            slots.push(target(view, o, None));
        } else if let Some(mut stand_in) = spares.pop_front() {
            stand_in.hint = Some(view.member(o).id.clone());
            slots.push(stand_in);
        } else {
            // No one to stand in: try the owner anyway (the detector may be wrong).
            slots.push(target(view, o, None));
        }
    }
    Plan { slots, spares }
}

/// The owner sets of a write of partition `p`, as node ids (for a tracker
/// that needs a quorum in each).
pub fn write_sets(view: &ClusterView, p: usize) -> Vec<Vec<Arc<str>>> {
    view.write_sets(p)
        .into_iter()
        .map(|set| {
            set.iter()
                .map(|&i| view.member(usize::from(i)).id.clone())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::PARTITIONS;

    fn view(n: usize, down: &[&str]) -> ClusterView {
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        ClusterView::new(
            names.iter().enumerate().map(|(i, id)| {
                (
                    id.as_str(),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                )
            }),
            |id| !down.contains(&id),
            n,
        )
    }

    #[test]
    fn healthy_plans_are_the_owners() {
        let v = view(3, &[]);
        for p in (0..PARTITIONS).step_by(37) {
            let plan = plan(&v, p);
            assert_eq!(plan.slots, owners(&v, p));
            assert_eq!(plan.spares.len(), 2);
        }
    }

    #[test]
    fn a_large_clusters_plans_stay_short() {
        let names: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
        let all = ClusterView::new(
            names
                .iter()
                .map(|id| (id.as_str(), SocketAddr::from(([127, 0, 0, 1], 1000)))),
            |_| true,
            3,
        );
        for p in (0..PARTITIONS).step_by(13) {
            let plan = plan(&all, p);
            assert_eq!(plan.slots, owners(&all, p));
            assert_eq!(plan.spares.len(), crate::cluster::STAND_INS);
            // Every owner down: each gets a live stand-in with its hint.
            let own: Vec<Arc<str>> = plan.slots.iter().map(|t| t.node.clone()).collect();
            let down = all.with_live(|id| !own.iter().any(|o| &**o == id));
            let plan = super::plan(&down, p);
            for (slot, owner) in plan.slots.iter().zip(&own) {
                assert!(slot.live && slot.node != *owner);
                assert_eq!(slot.hint.as_ref(), Some(owner));
            }
            assert_eq!(plan.spares.len(), crate::cluster::STAND_INS - 3);
        }
    }

    #[test]
    fn down_owners_get_live_stand_ins_with_hints() {
        let v = view(3, &["n1", "n3"]);
        for p in (0..PARTITIONS).step_by(11) {
            let plan = plan(&v, p);
            let own = owners(&v, p);
            assert_eq!(plan.slots.len(), 3);
            for (slot, owner) in plan.slots.iter().zip(&own) {
                if owner.live {
                    assert_eq!(slot, owner);
                } else {
                    assert!(slot.live, "a down owner is replaced by a live node");
                    assert_eq!(slot.hint.as_deref(), Some(&*owner.node));
                    assert!(!own.iter().any(|o| o.node == slot.node));
                }
            }
            // Distinct nodes in slots.
            let mut ids: Vec<_> = plan.slots.iter().map(|t| t.node.clone()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 3);
        }
        // With everyone else down there is no stand-in: owners are tried anyway.
        let lonely = view(3, &["n0", "n1", "n2", "n3"]);
        for p in 0..8 {
            assert_eq!(plan(&lonely, p).slots.len(), 3);
        }
    }
}
