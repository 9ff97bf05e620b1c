//! The layout: which nodes form the cluster and which of them replicate each
//! partition, as a numbered version every node adopts (the highest wins).
//! Pure: building, changing, encoding and checking layouts.
//!
//! A layout holds every node the cluster has known, with its state
//! ([`NodeState`]), the explicit assignment of partitions to its members
//! ([`Assignment`], computed deterministically by
//! [`Assignment::rebalance`]) and, while a change is being carried out, the
//! assignment of the version before it: data moves from `previous` owners to
//! `current` ones, writes reach a quorum in both, reads use `previous` until
//! every new owner holds its partitions (see `docs/operations.md`).
//!
//! [`Layout::change`] makes version `v + 1` from version `v` and a batch of
//! [`Change`]s, so two nodes added together move data once. Only one change
//! is carried out at a time: a layout whose `previous` is still set cannot
//! be changed (the node that makes changes, the *claimant*, waits until the
//! previous one is retired everywhere).

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::assign::Assignment;
use crate::keyspace::PARTITIONS;
use crate::vclock::MAX_COUNTER;

/// A node's state in a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// In the assignment: it replicates partitions (while the layout that
    /// added it is being carried out, it is *joining*: receiving them).
    Member,
    /// Asked to leave: out of the assignment; it hands its partitions over
    /// and stops once the change is carried out.
    Leaving,
    /// Gone: it left, or an operator removed it. Never routed to; its id
    /// comes back only as a new node (see [`Layout::change`]).
    Removed,
}

impl NodeState {
    /// The word RING and NODES show.
    pub fn word(self) -> &'static str {
        match self {
            NodeState::Member => "member",
            NodeState::Leaving => "leaving",
            NodeState::Removed => "removed",
        }
    }
}

/// One node of a layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutNode {
    /// Its id.
    pub id: Arc<str>,
    /// Its TCP address (clients and peers; gossip on the same port).
    pub addr: SocketAddr,
    /// Its state.
    pub state: NodeState,
    /// The binding of its id to its data directory
    /// ([`crate::identity::binding`]): only a process that gossips it
    /// speaks for this node. `None`: unbound (a node without a data
    /// directory, or a layout from before bindings).
    #[serde(default)]
    pub binding: Option<u64>,
}

impl LayoutNode {
    /// A member at `addr` whose binding is `binding` (any, when `None`): a
    /// join with these makes no change.
    pub fn is_member_at(&self, addr: SocketAddr, binding: Option<u64>) -> bool {
        self.state == NodeState::Member
            && self.addr == addr
            && (binding.is_none() || self.binding == binding)
    }
}

/// One change an operator (or a starting node) asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add a node (or take back one that left or was removed, as new).
    Join {
        /// Its id.
        id: String,
        /// Its address.
        addr: SocketAddr,
        /// Its binding to its data directory (see [`LayoutNode::binding`]).
        #[serde(default)]
        binding: Option<u64>,
    },
    /// A member hands its partitions over and leaves.
    Leave {
        /// Its id.
        id: String,
    },
    /// A member that is dead for good is dropped; the others re-create its
    /// copies.
    Remove {
        /// Its id.
        id: String,
    },
}

impl Change {
    /// The node the change is about.
    pub fn node(&self) -> &str {
        match self {
            Change::Join { id, .. } | Change::Leave { id } | Change::Remove { id } => id,
        }
    }
}

/// Why a change cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The previous change is still being carried out.
    #[error("layout version {0} is still being carried out; changes wait until it is")]
    InProgress(u64),
    /// The change names a node that is not a member.
    #[error("{0} is not a member of the cluster")]
    NotAMember(String),
    /// The node is already a member.
    #[error("{0} is already a member")]
    AlreadyAMember(String),
    /// A process with another data directory asks to join under the id of
    /// a member that is live.
    #[error(
        "node {0} is live with another data directory: start this one with another --node-id \
         (or, if node {0} is to be replaced, stop it first)"
    )]
    BoundElsewhere(String),
    /// Fewer than N members would remain.
    #[error("that would leave {left} member(s), fewer than N={n}: add a node first")]
    TooFew {
        /// Members that would remain.
        left: usize,
        /// The replication factor.
        n: usize,
    },
    /// No change asked.
    #[error("nothing to change")]
    Empty,
    /// The version is at its bound ([`crate::vclock::MAX_COUNTER`]); never
    /// reached by real changes.
    #[error("the layout version {0} is at its bound")]
    VersionFull(u64),
}

/// A version of the layout; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Its number: every node adopts the highest it hears of.
    pub version: u64,
    /// The configured replication factor.
    pub n: usize,
    /// Every node the cluster has known, sorted by id.
    pub nodes: Vec<LayoutNode>,
    /// Partition → owners, over the members.
    pub current: Assignment,
    /// The assignment of `version - 1` while this version is being carried
    /// out; `None` once it is retired (or for the first version).
    pub previous: Option<Assignment>,
}

/// The encoded form of a layout (what is persisted and sent).
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u64,
    n: usize,
    nodes: Vec<LayoutNode>,
    current: WireAssignment,
    previous: Option<WireAssignment>,
}

#[derive(Serialize, Deserialize)]
struct WireAssignment {
    members: Vec<String>,
    n: usize,
    table: Vec<u16>,
}

impl WireAssignment {
    fn of(a: &Assignment) -> WireAssignment {
        WireAssignment {
            members: a.members().iter().map(|m| m.to_string()).collect(),
            n: a.n(),
            table: (0..PARTITIONS).flat_map(|p| a.owners(p).to_vec()).collect(),
        }
    }

    fn into_assignment(self) -> Result<Assignment, String> {
        Assignment::from_parts(self.members, self.n, self.table)
    }
}

impl Layout {
    /// Version 1: `nodes` (any order) are the members.
    pub fn bootstrap(nodes: &[(String, SocketAddr)], n: usize) -> Layout {
        let mut nodes: Vec<LayoutNode> = nodes
            .iter()
            .map(|(id, addr)| LayoutNode {
                id: id.as_str().into(),
                addr: *addr,
                state: NodeState::Member,
                binding: None,
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        let ids: Vec<&str> = nodes.iter().map(|n| &*n.id).collect();
        Layout {
            version: 1,
            n,
            current: Assignment::initial(&ids, n),
            nodes,
            previous: None,
        }
    }

    /// This layout with each node's binding as `of` says (the first
    /// layout: bindings as gossip carried them).
    pub fn with_bindings(mut self, of: impl Fn(&str) -> Option<u64>) -> Layout {
        for n in &mut self.nodes {
            n.binding = of(&n.id);
        }
        self
    }

    /// The binding node `id` is held to, unless it is removed.
    pub fn binding(&self, id: &str) -> Option<u64> {
        self.node(id)
            .filter(|n| n.state != NodeState::Removed)
            .and_then(|n| n.binding)
    }

    /// Version 0: no layout yet (the cluster is forming); no members.
    pub fn empty(n: usize) -> Layout {
        Layout {
            version: 0,
            n,
            nodes: Vec::new(),
            current: Assignment::default(),
            previous: None,
        }
    }

    /// The node `id`.
    pub fn node(&self, id: &str) -> Option<&LayoutNode> {
        self.nodes
            .binary_search_by(|n| (*n.id).cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The state of node `id` (`None`: never part of this cluster).
    pub fn state(&self, id: &str) -> Option<NodeState> {
        self.node(id).map(|n| n.state)
    }

    /// The ids of the members (nodes in the assignment).
    pub fn members(&self) -> impl Iterator<Item = &LayoutNode> {
        self.nodes.iter().filter(|n| n.state == NodeState::Member)
    }

    /// True while the change that made this version is carried out.
    pub fn migrating(&self) -> bool {
        self.previous.is_some()
    }

    /// Version `version + 1`: this layout with `changes` applied and the
    /// partitions reassigned, moving as little as balance allows.
    pub fn change(&self, changes: &[Change]) -> Result<Layout, ChangeError> {
        if changes.is_empty() {
            return Err(ChangeError::Empty);
        }
        if self.version >= MAX_COUNTER {
            return Err(ChangeError::VersionFull(self.version));
        }
        // While a change is carried out only removals may be made: a dead
        // participant would hold it forever. The new version moves data
        // from the same previous assignment to a current one without them.
        let removals_only = changes.iter().all(|c| matches!(c, Change::Remove { .. }));
        if self.migrating() && !removals_only {
            return Err(ChangeError::InProgress(self.version));
        }
        let mut nodes = self.nodes.clone();
        for c in changes {
            let at = nodes.binary_search_by(|n| (*n.id).cmp(c.node()));
            match (c, at) {
                (Change::Join { id, addr, binding }, Ok(i)) => {
                    // A member at a new address (or with a new data
                    // directory) only moves its address (binding): whether
                    // the old one is live is for the claimant to check.
                    if nodes[i].is_member_at(*addr, *binding) {
                        return Err(ChangeError::AlreadyAMember(id.clone()));
                    }
                    nodes[i].state = NodeState::Member;
                    nodes[i].addr = *addr;
                    nodes[i].binding = *binding;
                }
                (Change::Join { id, addr, binding }, Err(i)) => nodes.insert(
                    i,
                    LayoutNode {
                        id: id.as_str().into(),
                        addr: *addr,
                        state: NodeState::Member,
                        binding: *binding,
                    },
                ),
                (Change::Leave { id }, Ok(i)) if nodes[i].state == NodeState::Member => {
                    nodes[i].state = NodeState::Leaving;
                }
                (Change::Remove { id }, Ok(i)) if nodes[i].state != NodeState::Removed => {
                    nodes[i].state = NodeState::Removed;
                }
                (Change::Leave { id } | Change::Remove { id }, _) => {
                    return Err(ChangeError::NotAMember(id.clone()));
                }
            }
        }
        // A node that left in an earlier version is gone for good now.
        for n in &mut nodes {
            if n.state == NodeState::Leaving && self.state(&n.id) == Some(NodeState::Leaving) {
                n.state = NodeState::Removed;
            }
        }
        let members: Vec<&str> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Member)
            .map(|n| &*n.id)
            .collect();
        if members.len() < self.n && members.len() < self.members().count() {
            return Err(ChangeError::TooFew {
                left: members.len(),
                n: self.n,
            });
        }
        let previous = match &self.previous {
            Some(p) => p.clone(),
            None => self.current.clone(),
        };
        Ok(Layout {
            version: self.version + 1,
            n: self.n,
            current: self.current.rebalance(&members, self.n),
            previous: Some(previous),
            nodes,
        })
    }

    /// This layout once its change is carried out everywhere: the same
    /// version without `previous`, and nodes that were leaving removed.
    pub fn retired(&self) -> Layout {
        let mut l = self.clone();
        l.previous = None;
        for n in &mut l.nodes {
            if n.state == NodeState::Leaving {
                n.state = NodeState::Removed;
            }
        }
        l
    }

    /// Encodes the layout (msgpack).
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            version: self.version,
            n: self.n,
            nodes: self.nodes.clone(),
            current: WireAssignment::of(&self.current),
            previous: self.previous.as_ref().map(WireAssignment::of),
        };
        rmp_serde::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes and checks a layout: every assignment member must be a node
    /// of the layout, members in the current assignment must be exactly the
    /// `Member` nodes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Layout, String> {
        let wire: Wire =
            rmp_serde::from_slice(bytes).map_err(|e| format!("undecodable layout: {e}"))?;
        if wire.version == 0 || wire.n == 0 {
            return Err("a layout has a version and N of at least 1".into());
        }
        if wire.version > MAX_COUNTER {
            return Err(format!(
                "layout version {} is above the bound ({MAX_COUNTER})",
                wire.version
            ));
        }
        let mut sorted = wire.nodes.clone();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        sorted.dedup_by(|a, b| a.id == b.id);
        if sorted != wire.nodes {
            return Err("layout nodes are not sorted and distinct".into());
        }
        if let Some(bad) = wire
            .nodes
            .iter()
            .find(|n| !crate::identity::valid_id(&n.id))
        {
            return Err(format!("invalid node id {:?} in a layout", bad.id));
        }
        let current = wire.current.into_assignment()?;
        let previous = wire
            .previous
            .map(WireAssignment::into_assignment)
            .transpose()?;
        let layout = Layout {
            version: wire.version,
            n: wire.n,
            nodes: wire.nodes,
            current,
            previous,
        };
        let members: Vec<&str> = layout.members().map(|n| &*n.id).collect();
        let assigned: Vec<&str> = layout.current.members().iter().map(|m| &**m).collect();
        if members != assigned {
            return Err("the assignment's members are not the layout's members".into());
        }
        for a in layout.previous.iter() {
            if let Some(m) = a.members().iter().find(|m| layout.node(m).is_none()) {
                return Err(format!(
                    "the previous assignment names {m}, unknown to the layout"
                ));
            }
        }
        Ok(layout)
    }

    /// A short fingerprint of the whole layout (to tell two layouts with
    /// the same version apart).
    pub fn hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.to_bytes())
    }

    /// Whether `self` should replace `other`: a higher version; the same
    /// version retired (its change carried out everywhere); or the same
    /// version with a higher hash (two claimants changed the layout at
    /// once: every node settles on the same one).
    pub fn supersedes(&self, other: &Layout) -> bool {
        self.order() > other.order()
    }

    fn order(&self) -> (u64, bool, u64) {
        (self.version, !self.migrating(), self.hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn nodes(k: u16) -> Vec<(String, SocketAddr)> {
        (0..k).map(|i| (format!("n{i}"), addr(7000 + i))).collect()
    }

    #[test]
    fn a_join_moves_partitions_to_the_newcomer_and_keeps_the_previous_owners() {
        let v1 = Layout::bootstrap(&nodes(3), 3);
        assert_eq!(v1.version, 1);
        assert!(!v1.migrating());
        let v2 = v1
            .change(&[Change::Join {
                id: "n3".into(),
                addr: addr(7003),
                binding: None,
            }])
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.previous.as_ref(), Some(&v1.current));
        assert_eq!(v2.members().count(), 4);
        // A second change waits for the first to be carried out...
        assert_eq!(
            v2.change(&[Change::Leave { id: "n0".into() }]),
            Err(ChangeError::InProgress(2))
        );
        // ...except a removal, which moves data from the same previous
        // owners, so a dead participant cannot hold a change forever.
        let v3x = v2.change(&[Change::Remove { id: "n1".into() }]).unwrap();
        assert_eq!(v3x.version, 3);
        assert_eq!(v3x.previous.as_ref(), Some(&v1.current));
        assert_eq!(v3x.state("n1"), Some(NodeState::Removed));
        assert_eq!(v3x.members().count(), 3);
        let v2r = v2.retired();
        assert!(!v2r.migrating());
        assert!(v2r.supersedes(&v2) && !v2.supersedes(&v2r));
        let v3 = v2r.change(&[Change::Leave { id: "n0".into() }]).unwrap();
        assert_eq!(v3.state("n0"), Some(NodeState::Leaving));
        assert!(!v3.current.members().iter().any(|m| &**m == "n0"));
        // Retiring it removes the leaver for good.
        assert_eq!(v3.retired().state("n0"), Some(NodeState::Removed));
    }

    #[test]
    fn mistakes_are_refused() {
        let v1 = Layout::bootstrap(&nodes(3), 3);
        assert_eq!(
            v1.change(&[Change::Join {
                id: "n1".into(),
                addr: addr(7001),
                binding: None,
            }]),
            Err(ChangeError::AlreadyAMember("n1".into()))
        );
        assert_eq!(
            v1.change(&[Change::Remove { id: "zz".into() }]),
            Err(ChangeError::NotAMember("zz".into()))
        );
        assert_eq!(
            v1.change(&[Change::Leave { id: "n1".into() }]),
            Err(ChangeError::TooFew { left: 2, n: 3 })
        );
        assert_eq!(v1.change(&[]), Err(ChangeError::Empty));
        // A removed node may come back, as a member again.
        let v4 = Layout::bootstrap(&nodes(4), 3);
        let v5 = v4
            .change(&[Change::Remove { id: "n3".into() }])
            .unwrap()
            .retired();
        assert_eq!(v5.state("n3"), Some(NodeState::Removed));
        let v6 = v5
            .change(&[Change::Join {
                id: "n3".into(),
                addr: addr(9),
                binding: None,
            }])
            .unwrap();
        assert_eq!(v6.state("n3"), Some(NodeState::Member));
        assert_eq!(v6.node("n3").unwrap().addr, addr(9));
        // A member restarted at another address: only its address changes.
        let v7 = v6
            .retired()
            .change(&[Change::Join {
                id: "n0".into(),
                addr: addr(10),
                binding: None,
            }])
            .unwrap();
        assert_eq!(v7.node("n0").unwrap().addr, addr(10));
        assert_eq!(v7.current, v6.current);
    }

    #[test]
    fn layouts_round_trip_and_damage_is_refused() {
        let v2 = Layout::bootstrap(&nodes(3), 3)
            .change(&[Change::Join {
                id: "n3".into(),
                addr: addr(7003),
                binding: None,
            }])
            .unwrap();
        let bytes = v2.to_bytes();
        assert_eq!(Layout::from_bytes(&bytes).unwrap(), v2);
        assert!(Layout::from_bytes(&bytes[..bytes.len() / 2]).is_err());
        assert!(Layout::from_bytes(b"junk").is_err());
    }

    #[test]
    fn versions_past_the_bound_are_refused_and_never_made() {
        let join = [Change::Join {
            id: "n3".into(),
            addr: addr(7003),
            binding: None,
        }];
        let mut at = Layout::bootstrap(&nodes(3), 3);
        at.version = MAX_COUNTER;
        assert_eq!(Layout::from_bytes(&at.to_bytes()).unwrap(), at);
        assert_eq!(at.change(&join), Err(ChangeError::VersionFull(MAX_COUNTER)));
        for v in [MAX_COUNTER + 1, u64::MAX] {
            let mut past = at.clone();
            past.version = v;
            let err = Layout::from_bytes(&past.to_bytes()).unwrap_err();
            assert!(err.contains("above the bound"), "{err}");
            assert!(past.change(&join).is_err());
        }
    }

    #[test]
    fn concurrent_versions_settle_on_one() {
        let v1 = Layout::bootstrap(&nodes(3), 3);
        let a = v1
            .change(&[Change::Join {
                id: "x".into(),
                addr: addr(1),
                binding: None,
            }])
            .unwrap();
        let b = v1
            .change(&[Change::Join {
                id: "y".into(),
                addr: addr(2),
                binding: None,
            }])
            .unwrap();
        assert!(a.supersedes(&b) != b.supersedes(&a));
        assert!(a.supersedes(&v1) && b.supersedes(&v1));
        assert!(!a.supersedes(&a));
    }

    #[test]
    fn bindings_are_kept_moved_and_read_from_layouts_made_before_them() {
        let v1 = Layout::bootstrap(&nodes(3), 3).with_bindings(|id| (id != "n2").then_some(7));
        assert_eq!(v1.binding("n0"), Some(7));
        assert_eq!(v1.binding("n2"), None);
        // The same process again: nothing to change.
        let same = Change::Join {
            id: "n0".into(),
            addr: v1.node("n0").unwrap().addr,
            binding: Some(7),
        };
        assert_eq!(
            v1.change(std::slice::from_ref(&same)),
            Err(ChangeError::AlreadyAMember("n0".into()))
        );
        // A new disk under the same id moves the binding (the claimant has
        // checked the old one is not live).
        let v2 = v1
            .change(&[Change::Join {
                id: "n0".into(),
                addr: v1.node("n0").unwrap().addr,
                binding: Some(8),
            }])
            .unwrap();
        assert_eq!(v2.binding("n0"), Some(8));
        assert_eq!(v2.current, v1.current, "a new disk moves no partition");
        assert_eq!(Layout::from_bytes(&v2.to_bytes()).unwrap(), v2);
        // A layout file written before bindings existed still reads.
        #[derive(Serialize)]
        struct OldNode {
            id: Arc<str>,
            addr: SocketAddr,
            state: NodeState,
        }
        #[derive(Serialize)]
        struct OldWire {
            version: u64,
            n: usize,
            nodes: Vec<OldNode>,
            current: WireAssignment,
            previous: Option<WireAssignment>,
        }
        let old = OldWire {
            version: v1.version,
            n: v1.n,
            nodes: v1
                .nodes
                .iter()
                .map(|n| OldNode {
                    id: n.id.clone(),
                    addr: n.addr,
                    state: n.state,
                })
                .collect(),
            current: WireAssignment::of(&v1.current),
            previous: None,
        };
        let read = Layout::from_bytes(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(read.current, v1.current);
        assert!(read.nodes.iter().all(|n| n.binding.is_none()));
    }
}
