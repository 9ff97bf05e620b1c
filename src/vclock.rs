//! Vector clocks: one counter per actor, where an actor is a *server*
//! (node id plus the epoch of its data directory), never a client.
//!
//! A [`VClock`] summarises a set of events: it covers event `(a, n)` when its
//! counter for `a` is at least `n`. Clocks form a join-semilattice under
//! [`VClock::merge`] (pointwise maximum), which is commutative, associative and
//! idempotent; [`VClock::compare`] is the partial order that goes with it.
//!
//! Counters are bounded by [`MAX_COUNTER`] (2^62): a clock above it is
//! refused wherever one enters (client tokens, peer requests and answers,
//! stored records), and a write that would pass it is refused, so no
//! counter arithmetic can overflow (docs/consistency.md, "Bounded counters").

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The name of a writer: `node-id/epoch`.
pub type Actor = String;

/// Splits an actor `node-id/epoch` into the node id and the epoch (hex);
/// `None` for a name of another form (never pruned).
pub fn split_actor(actor: &str) -> Option<(&str, u64)> {
    let (node, epoch) = actor.rsplit_once('/')?;
    if node.is_empty() || epoch.is_empty() || epoch.len() > 16 {
        return None;
    }
    u64::from_str_radix(epoch, 16).ok().map(|e| (node, e))
}

/// Epochs of one node a clock always keeps (its most recent ones).
pub const EPOCHS_KEPT: usize = 3;
/// Most epochs of one node a clock keeps, however recently they retired.
pub const EPOCHS_MAX: usize = 8;

/// The largest counter a clock may hold: 2^62. One node writing one key a
/// million times a second reaches it in 146,000 years; a counter above it
/// can only come from a forged clock or a damaged record, and is refused
/// where it enters ([`VClock::out_of_bounds`]). The gap up to `u64::MAX`
/// means that even a counter at the bound can be incremented without
/// overflow; writes refuse to make one past it.
pub const MAX_COUNTER: u64 = 1 << 62;

/// One event: the `counter`-th event of `actor` (for a given key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who made the event.
    pub actor: Actor,
    /// Its sequence number for that actor; starts at 1.
    pub counter: u64,
}

/// How two clocks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Same events.
    Equal,
    /// The left clock saw strictly less: it happened before.
    Before,
    /// The left clock saw strictly more: it happened after.
    After,
    /// Each saw something the other did not.
    Concurrent,
}

/// A vector clock. Absent actors count as zero; zero entries are never stored,
/// so equal clocks have equal representations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VClock(BTreeMap<Actor, u64>);

impl VClock {
    /// The empty clock, to borrow where a clock may be absent.
    pub const EMPTY: &'static VClock = &VClock(BTreeMap::new());

    /// The empty clock (no events).
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter for `actor` (0 when absent).
    pub fn get(&self, actor: &str) -> u64 {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Number of actors with a non-zero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the clock has seen no event.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The clock of exactly these entries (as decoding builds it: no
    /// bound checked, see [`VClock::out_of_bounds`]).
    pub(crate) fn from_map(entries: BTreeMap<Actor, u64>) -> VClock {
        VClock(entries)
    }

    /// Iterates `(actor, counter)` in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(a, c)| (a.as_str(), *c))
    }

    /// The first entry whose counter is above [`MAX_COUNTER`], if any: a
    /// clock that has one is refused wherever it comes from.
    pub fn out_of_bounds(&self) -> Option<(&str, u64)> {
        self.iter().find(|&(_, c)| c > MAX_COUNTER)
    }

    /// Records event `dot` (raises the actor's counter to at least `dot.counter`).
    pub fn add(&mut self, dot: &Dot) {
        if dot.counter == 0 {
            return;
        }
        // Looked up before inserting: `entry` would copy the actor's name
        // even when it is there (every write of a key's usual actor).
        match self.0.get_mut(&dot.actor) {
            Some(c) => *c = (*c).max(dot.counter),
            None => {
                self.0.insert(dot.actor.clone(), dot.counter);
            }
        }
    }

    /// True when the clock covers `dot`.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Pointwise maximum, in place.
    pub fn merge(&mut self, other: &VClock) {
        for (actor, &counter) in &other.0 {
            match self.0.get_mut(actor) {
                Some(c) => *c = (*c).max(counter),
                None => {
                    self.0.insert(actor.clone(), counter);
                }
            }
        }
    }

    /// Pointwise maximum of two clocks.
    pub fn merged(&self, other: &VClock) -> VClock {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// True when every counter of `self` is <= the one in `other`.
    pub fn descends_from(&self, other: &VClock) -> bool {
        other.0.iter().all(|(a, &c)| self.get(a) >= c)
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VClock) -> Causality {
        match (self.descends_from(other), other.descends_from(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Drops entries of *retired* actors. An epoch of a node retired when
    /// the node started a later one; a clock keeps, of each node, its
    /// [`EPOCHS_KEPT`] most recent epochs, and older ones up to
    /// [`EPOCHS_MAX`] in all while they retired less than the grace period
    /// ago, that is, while the next epoch in the clock started after
    /// `retired_before_ms` (epochs are start times in milliseconds, see
    /// [`crate::epoch::next_epoch`]). Entries for which `pinned` is true are
    /// kept whatever they are; names not of the form `node/epoch` are never
    /// dropped. Returns how many entries were dropped.
    ///
    /// Dropping an entry only makes the clock cover less, so a prune never
    /// makes a merge drop a version it would have kept: the cost is that a
    /// stale copy of a version the dropped entry had superseded can come back
    /// as a sibling (docs/storage.md, "Bounded clocks").
    pub fn prune(&mut self, pinned: impl Fn(&str) -> bool, retired_before_ms: u64) -> usize {
        // Cheap exit for the common case (at most EPOCHS_KEPT epochs per
        // node), without allocating: a node's entries are adjacent.
        let mut run: Option<(&str, usize)> = None;
        let mut needed = false;
        for (n, _) in self.0.keys().filter_map(|a| split_actor(a)) {
            let count = match run {
                Some((p, c)) if p == n => c + 1,
                _ => 1,
            };
            if count > EPOCHS_KEPT {
                needed = true;
                break;
            }
            run = Some((n, count));
        }
        if !needed {
            return 0;
        }
        let mut nodes: Vec<(&str, u64, &str)> = self
            .0
            .keys()
            .filter_map(|a| split_actor(a).map(|(n, e)| (n, e, a.as_str())))
            .collect();
        // Group by node, most recent epoch first.
        nodes.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        let mut drop: Vec<String> = Vec::new();
        let mut i = 0;
        while i < nodes.len() {
            let node = nodes[i].0;
            let mut kept = 0;
            // The start of the next more recent epoch: when this one retired
            // at the latest.
            let mut next_start = u64::MAX;
            while i < nodes.len() && nodes[i].0 == node {
                let (_, epoch, actor) = nodes[i];
                let recent = next_start > retired_before_ms;
                if pinned(actor) || kept < EPOCHS_KEPT || (recent && kept < EPOCHS_MAX) {
                    kept += 1;
                } else {
                    drop.push(actor.to_string());
                }
                next_start = epoch;
                i += 1;
            }
        }
        for a in &drop {
            self.0.remove(a);
        }
        drop.len()
    }

    /// The partial order as a `PartialOrd`-style answer (`None` = concurrent).
    pub fn partial_cmp(&self, other: &VClock) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Equal => Some(Ordering::Equal),
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Concurrent => None,
        }
    }
}

impl FromIterator<(Actor, u64)> for VClock {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut clock = VClock::new();
        for (actor, counter) in iter {
            clock.add(&Dot { actor, counter });
        }
        clock
    }
}

impl std::fmt::Display for VClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (a, c)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}:{c}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock() -> impl Strategy<Value = VClock> {
        proptest::collection::btree_map("[abcd]", 0u64..5, 0..4)
            .prop_map(|m| m.into_iter().collect::<VClock>())
    }

    #[test]
    fn basics() {
        let a: VClock = [("x".to_string(), 2)].into_iter().collect();
        let b: VClock = [("x".to_string(), 1), ("y".to_string(), 1)]
            .into_iter()
            .collect();
        assert_eq!(a.compare(&b), Causality::Concurrent);
        let m = a.merged(&b);
        assert_eq!(m.get("x"), 2);
        assert_eq!(m.get("y"), 1);
        assert_eq!(m.compare(&a), Causality::After);
        assert_eq!(a.compare(&m), Causality::Before);
        assert!(m.covers(&Dot {
            actor: "y".into(),
            counter: 1
        }));
        assert!(!m.covers(&Dot {
            actor: "z".into(),
            counter: 1
        }));
        assert_eq!(m.to_string(), "{x:2, y:1}");
        // Zero counters are not stored, so equality is structural.
        let z: VClock = [("q".to_string(), 0)].into_iter().collect();
        assert_eq!(z, VClock::new());
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in clock(), b in clock()) {
            prop_assert_eq!(a.merged(&b), b.merged(&a));
        }

        #[test]
        fn merge_is_associative(a in clock(), b in clock(), c in clock()) {
            prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        }

        #[test]
        fn merge_is_idempotent(a in clock(), b in clock()) {
            prop_assert_eq!(a.merged(&a), a.clone());
            let ab = a.merged(&b);
            prop_assert_eq!(ab.merged(&b), ab);
        }

        #[test]
        fn merge_is_least_upper_bound(a in clock(), b in clock(), c in clock()) {
            let ab = a.merged(&b);
            prop_assert!(ab.descends_from(&a) && ab.descends_from(&b));
            if c.descends_from(&a) && c.descends_from(&b) {
                prop_assert!(c.descends_from(&ab));
            }
        }

        #[test]
        fn compare_is_a_partial_order(a in clock(), b in clock(), c in clock()) {
            // Reflexive.
            prop_assert_eq!(a.compare(&a), Causality::Equal);
            // Antisymmetric.
            if a.descends_from(&b) && b.descends_from(&a) {
                prop_assert_eq!(&a, &b);
            }
            // Transitive.
            if a.descends_from(&b) && b.descends_from(&c) {
                prop_assert!(a.descends_from(&c));
            }
            // Compare is consistent in both directions.
            let flipped = match b.compare(&a) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                other => other,
            };
            prop_assert_eq!(a.compare(&b), flipped);
        }
    }
}
