//! Explicit partition assignment: for each of the [`PARTITIONS`] partitions,
//! the members that hold its replicas, in preference order (the first is the
//! partition's primary). Pure and deterministic: no I/O, no randomness but
//! hashes of the inputs.
//!
//! The ring ([`crate::cluster::ring`]) derives ownership from node ids alone,
//! so a membership change moves whatever the hashes say. An [`Assignment`] is
//! instead an explicit table (Garage's layout, Riak's claim) computed by one
//! function, [`Assignment::rebalance`], from the previous assignment and the
//! new member set: every node computes the same table from the same inputs,
//! and a change moves as few replicas, and as few primaries, as balance
//! allows. [`Assignment::from_ring`] reads today's ring as a previous
//! assignment, so an existing cluster can adopt a balanced table moving
//! little.
//!
//! The algorithm, with members sorted by id (input order never matters) and
//! every tie broken by a hash of the member id and the partition:
//!
//! 1. **Shares.** With `w = min(n, M)` replicas per partition, every member
//!    may hold `⌊P·w/M⌋` replicas and `P·w mod M` of them one more;
//!    primaries likewise from `P`. Members above that are cut down to it,
//!    the "one more" going to those already holding the most (so movement
//!    is minimal); below it, whoever gets there first takes a "one more".
//! 2. **Keep.** Every placement of the previous table whose member remains
//!    stays in its slot; a departed member leaves a hole in its slot.
//! 3. **Drop.** A member above its share drops the excess: first primaries
//!    it leads beyond its primary share, then non-primary slots, in the
//!    partitions easiest to refill (most members below their share not yet
//!    in them, fewest holes) and preferably in partitions led by a member
//!    that must give up one (whoever fills the hole can take the lead).
//! 4. **Fill.** Partitions with most holes first, each hole takes the
//!    member not yet in the partition that is furthest below its share. A
//!    partition whose primary is gone is booked for a member with primary
//!    room (one of its own, or the one chosen for its hole). A hole no
//!    member can fill gets one by an augmenting path (move a member from
//!    another partition into it, refill that slot, ...) found by a 0-1 BFS
//!    that prefers moving placements made in this rebalance over kept ones.
//! 5. **Primaries.** A partition keeps its previous primary while that
//!    member remains in it and within its primary share; every other one
//!    takes the member of its replica set furthest below its primary share
//!    (augmenting paths again when none is: fewest previous primaries
//!    displaced, then fewest unchanged partitions reordered), and that
//!    member swaps into the first slot.
//!
//! So a partition whose members are unchanged keeps its order, and a
//! newcomer takes the slot (and the position) of the replica it replaces.
//! [`Assignment::initial`] starts from rendezvous hashing (each partition's
//! `w` members of highest `hash(id, partition)`), which is balanced within
//! a few percent, and rebalances from it. The greedy passes cost O(P·w·M);
//! augmenting paths, O(P·w·M) each, are needed for a handful of slots
//! (initial: about 20 ms for 100 members in a debug build); see
//! `docs/architecture.md` ("Partition assignment") for the bounds and
//! measured figures. Members have equal weight; weights would only change
//! the shares of step 1.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::cluster::partition::PartitionTable;
use crate::cluster::ring::Ring;
use crate::keyspace::PARTITIONS;

/// The most members an assignment holds: indexes are `u16`, and one value is
/// reserved. Members beyond it (in id order) are ignored.
pub const MAX_MEMBERS: usize = u16::MAX as usize;

/// An empty slot while an assignment is being built.
const HOLE: u16 = u16::MAX;
/// "No member" / "no slot" in the augmenting-path searches.
const NONE: usize = usize::MAX;

/// An explicit assignment: for each partition, `n` distinct member indexes
/// (into [`Assignment::members`]) in preference order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Member node ids, sorted and distinct.
    members: Vec<Arc<str>>,
    /// Replicas per partition: the requested N shrunk to the member count.
    n: usize,
    /// `PARTITIONS * n` member indexes, partition by partition.
    table: Vec<u16>,
}

/// How much one assignment differs from another (or must, at least).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Replica placements `(partition, node id)` in the new assignment and
    /// not in the old one: the copies a change has to transfer.
    pub placements: usize,
    /// Partitions whose primary (first owner) is another node.
    pub primaries: usize,
}

impl Assignment {
    /// The balanced assignment of `members` (any order, duplicates ignored)
    /// with `n` replicas per partition, computed from nothing.
    pub fn initial<S: AsRef<str>>(members: &[S], n: usize) -> Assignment {
        Assignment::rendezvous(members, n).rebalance(members, n)
    }

    /// Rendezvous (highest random weight) hashing: each partition's owners
    /// are the `n` members with the highest `mix(xxh3(id), partition)`, in
    /// that order. Balanced only statistically (about ±√(P·n/M) replicas
    /// per member): [`initial`](Assignment::initial) rebalances from it,
    /// which touches a few percent of the slots instead of filling all of
    /// them one by one.
    fn rendezvous<S: AsRef<str>>(members: &[S], n: usize) -> Assignment {
        let members = normalize(members);
        let n = width(n, members.len());
        let hash: Vec<u64> = members.iter().map(|id| xxh3_64(id.as_bytes())).collect();
        let mut table = Vec::with_capacity(PARTITIONS * n);
        let mut top: Vec<(u64, u16)> = Vec::with_capacity(n + 1);
        for p in 0..PARTITIONS {
            top.clear();
            for (i, &h) in hash.iter().enumerate() {
                let weight = mix(h, p);
                if top.len() == n && top[n - 1].0 >= weight {
                    continue;
                }
                let at = top.partition_point(|&(t, _)| t >= weight);
                top.insert(at, (weight, i as u16));
                top.truncate(n);
            }
            table.extend(top.iter().map(|&(_, i)| i));
        }
        Assignment { members, n, table }
    }

    /// Today's ring-derived owners (the first `n` of each partition's walk)
    /// as an assignment. Not balanced: it is a previous assignment to
    /// [`rebalance`](Assignment::rebalance) from, so that a cluster adopting
    /// explicit assignments moves little. Empty beyond [`MAX_MEMBERS`].
    pub fn from_ring(ring: &Ring, n: usize) -> Assignment {
        let members: Vec<Arc<str>> = ring
            .members()
            .iter()
            .map(|m| Arc::from(m.as_str()))
            .collect();
        let n = width(n, members.len());
        if n == 0 || members.len() > MAX_MEMBERS {
            return Assignment::default();
        }
        let walks = PartitionTable::new(ring);
        let mut table = Vec::with_capacity(PARTITIONS * n);
        for p in 0..PARTITIONS {
            table.extend(walks.walk(p).iter().take(n));
        }
        Assignment { members, n, table }
    }

    /// The balanced assignment of `members` (any order, duplicates ignored)
    /// with `n` replicas per partition that keeps as much of `self` as
    /// possible. `n` is shrunk to the member count, and is at least 1; no
    /// members gives the empty assignment.
    pub fn rebalance<S: AsRef<str>>(&self, members: &[S], n: usize) -> Assignment {
        let members = normalize(members);
        let n = width(n, members.len());
        if n == 0 {
            return Assignment::default();
        }
        let mut b = Builder::new(self, members, n);
        b.drop_excess();
        b.fill();
        b.finish()
    }

    /// The fewest changes any balanced assignment of `members` with `n`
    /// replicas can make from `old`: for replicas, the placements members
    /// must gain to reach their shares (an added node's fair share, a
    /// removed node's replicas); for primaries, likewise. Operators see it
    /// beside [`changes_from`](Assignment::changes_from).
    pub fn minimum_changes<S: AsRef<str>>(old: &Assignment, members: &[S], n: usize) -> Changes {
        let members = normalize(members);
        let m = members.len();
        let w = width(n, m);
        if w == 0 {
            return Changes::default();
        }
        let remap = old.remap(&members);
        let mut held = vec![0; m];
        let mut led = vec![0; m];
        for p in 0..PARTITIONS {
            for (k, &o) in old.owners(p).iter().enumerate() {
                if let Some(&i) = remap.get(usize::from(o))
                    && i != HOLE
                {
                    held[usize::from(i)] += 1;
                    if k == 0 {
                        led[usize::from(i)] += 1;
                    }
                }
            }
        }
        let shortfall = |total: usize, have: &[usize]| -> usize {
            // The extra units go to the members holding most: those need none.
            let limits = limits(total, have, |_| 0);
            limits
                .iter()
                .zip(have)
                .map(|(l, h)| l.saturating_sub(*h))
                .sum()
        };
        Changes {
            placements: shortfall(PARTITIONS * w, &held),
            primaries: shortfall(PARTITIONS, &led),
        }
    }

    /// The changes from `old` to `self`.
    pub fn changes_from(&self, old: &Assignment) -> Changes {
        let to_old = self.remap(&old.members);
        let mut changes = Changes::default();
        for p in 0..PARTITIONS {
            let before = old.owners(p);
            let was = |i: u16| {
                let o = to_old[usize::from(i)];
                o != HOLE && before.contains(&o)
            };
            let now = self.owners(p);
            changes.placements += now.iter().filter(|&&i| !was(i)).count();
            let same_primary = match (now.first(), before.first()) {
                (Some(&i), Some(&o)) => to_old[usize::from(i)] == o,
                (None, None) => true,
                _ => false,
            };
            changes.primaries += usize::from(!same_primary);
        }
        changes
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Arc<str>] {
        &self.members
    }

    /// Replicas per partition (the requested N shrunk to the member count).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The owners of partition `p` (member indexes), in preference order;
    /// empty for an empty assignment or `p >= PARTITIONS`.
    pub fn owners(&self, p: usize) -> &[u16] {
        self.table.get(p * self.n..(p + 1) * self.n).unwrap_or(&[])
    }

    /// How many partitions each member holds a replica of.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members.len()];
        for &i in &self.table {
            counts[usize::from(i)] += 1;
        }
        counts
    }

    /// How many partitions each member is the primary (first owner) of.
    pub fn primary_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members.len()];
        for p in 0..PARTITIONS {
            if let Some(&i) = self.owners(p).first() {
                counts[usize::from(i)] += 1;
            }
        }
        counts
    }

    /// For each of `self`'s members, its index in `members`, or [`HOLE`].
    fn remap(&self, members: &[Arc<str>]) -> Vec<u16> {
        self.members
            .iter()
            .map(|id| match members.binary_search(id) {
                Ok(i) => i as u16,
                Err(_) => HOLE,
            })
            .collect()
    }
}

impl Assignment {
    /// An assignment read back from its parts (a layout received from a
    /// peer or the disk), checked: members sorted, distinct and valid ids,
    /// `n` in `1..=members`, and `PARTITIONS * n` indexes, each in range and
    /// distinct within its partition.
    pub fn from_parts(
        members: Vec<String>,
        n: usize,
        table: Vec<u16>,
    ) -> Result<Assignment, String> {
        if members.is_empty() && n == 0 && table.is_empty() {
            return Ok(Assignment::default());
        }
        if members.len() > MAX_MEMBERS || n == 0 || n > members.len() {
            return Err(format!(
                "an assignment of {} members cannot have {n} replicas per partition",
                members.len()
            ));
        }
        if members.windows(2).any(|w| w[0] >= w[1]) {
            return Err("assignment members are not sorted and distinct".into());
        }
        if table.len() != PARTITIONS * n {
            return Err(format!(
                "an assignment table has {} entries, not {}",
                table.len(),
                PARTITIONS * n
            ));
        }
        for owners in table.chunks(n) {
            for (i, &o) in owners.iter().enumerate() {
                if usize::from(o) >= members.len() || owners[..i].contains(&o) {
                    return Err("an assignment table entry is out of range or repeated".into());
                }
            }
        }
        Ok(Assignment {
            members: members.into_iter().map(|m| Arc::from(m.as_str())).collect(),
            n,
            table,
        })
    }
}

/// Sorted, distinct member ids, at most [`MAX_MEMBERS`].
fn normalize<S: AsRef<str>>(members: &[S]) -> Vec<Arc<str>> {
    let mut ids: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(MAX_MEMBERS);
    ids.into_iter().map(Arc::from).collect()
}

/// Replicas per partition: `n` (at least 1) shrunk to the member count.
fn width(n: usize, members: usize) -> usize {
    n.max(1).min(members)
}

/// A well-mixed 64-bit hash of `h` and `p` (the splitmix64 finalizer, a
/// bijection, so distinct members never tie for the same partition).
fn mix(h: u64, p: usize) -> u64 {
    let mut z = h ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per-member upper limits for `total` units: `⌊total/M⌋`, plus one for the
/// `total mod M` members holding most (`have`), ties by `tie` (higher
/// first), then by index.
fn limits(total: usize, have: &[usize], tie: impl Fn(usize) -> u64) -> Vec<usize> {
    let m = have.len();
    let (base, rem) = (total / m, total % m);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by_key(|&i| (Reverse((have[i], tie(i))), i));
    let mut limits = vec![base; m];
    for &i in &order[..rem] {
        limits[i] += 1;
    }
    limits
}

/// Floor/ceil shares handed out as the table fills: every member may reach
/// `base`, and `spare` more members may reach `base + 1` (whichever get
/// there first, which leaves the fill more room than fixed targets).
#[derive(Debug, Clone, Copy)]
struct Shares {
    base: usize,
    spare: usize,
}

impl Shares {
    /// The shares of `total` over `counts.len()` members, given counts that
    /// are already within `base + 1`.
    fn new(total: usize, counts: &[usize]) -> Shares {
        let (base, rem) = (total / counts.len(), total % counts.len());
        let full = counts.iter().filter(|&&c| c > base).count();
        Shares {
            base,
            spare: rem.saturating_sub(full),
        }
    }

    /// How much a member holding `count` may still take, as a priority:
    /// 0 when nothing, 1 for a last unit above `base`, more below `base`.
    fn room(&self, count: usize) -> usize {
        if count < self.base {
            self.base + 1 - count
        } else {
            usize::from(count == self.base && self.spare > 0)
        }
    }

    /// Records that a member holding `count` took one more.
    fn take(&mut self, count: usize) {
        if count == self.base {
            self.spare = self.spare.saturating_sub(1);
        }
    }

    /// Records that a member gave one up and now holds `count`.
    fn give(&mut self, count: usize) {
        if count == self.base {
            self.spare += 1;
        }
    }
}

/// The state of one rebalance.
struct Builder {
    members: Vec<Arc<str>>,
    /// xxh3 of each member id (tie-breaks).
    hash: Vec<u64>,
    /// Replicas per partition.
    w: usize,
    /// `PARTITIONS * w` slots, [`HOLE`] when empty.
    rows: Vec<u16>,
    /// Whether a slot still holds its placement from the previous table.
    kept: Vec<bool>,
    /// Each partition's previous primary (new index), or [`HOLE`].
    old_primary: Vec<u16>,
    /// Replicas per member.
    count: Vec<usize>,
    /// Upper limits on replicas (drops) and on kept primaries.
    limit: Vec<usize>,
    primary_limit: Vec<usize>,
}

impl Builder {
    /// Step 2: the previous table's placements of remaining members, in
    /// their slots, and the limits of step 1.
    fn new(old: &Assignment, members: Vec<Arc<str>>, w: usize) -> Builder {
        let m = members.len();
        let hash: Vec<u64> = members.iter().map(|id| xxh3_64(id.as_bytes())).collect();
        let remap = old.remap(&members);
        let mut rows = Vec::with_capacity(PARTITIONS * w);
        let mut old_primary = vec![HOLE; PARTITIONS];
        let mut row: Vec<u16> = Vec::with_capacity(old.n.max(w));
        for (p, primary) in old_primary.iter_mut().enumerate() {
            row.clear();
            row.extend(
                old.owners(p)
                    .iter()
                    .map(|&o| remap.get(usize::from(o)).copied().unwrap_or(HOLE)),
            );
            *primary = row.first().copied().unwrap_or(HOLE);
            // Fewer replicas than before: drop holes from the end first,
            // then the last members.
            while row.len() > w {
                match row.iter().rposition(|&i| i == HOLE) {
                    Some(k) => {
                        row.remove(k);
                    }
                    None => {
                        row.pop();
                    }
                }
            }
            row.resize(w, HOLE);
            rows.extend_from_slice(&row);
        }
        let kept = rows.iter().map(|&i| i != HOLE).collect();
        let mut count = vec![0; m];
        for &i in rows.iter().filter(|&&i| i != HOLE) {
            count[usize::from(i)] += 1;
        }
        let mut led = vec![0; m];
        for &i in old_primary.iter().filter(|&&i| i != HOLE) {
            led[usize::from(i)] += 1;
        }
        let limit = limits(PARTITIONS * w, &count, |i| hash[i]);
        let primary_limit = if w == 1 {
            // The only replica is the primary: one share for both.
            limit.clone()
        } else {
            limits(PARTITIONS, &led, |i| hash[i])
        };
        Builder {
            members,
            hash,
            w,
            rows,
            kept,
            old_primary,
            count,
            limit,
            primary_limit,
        }
    }

    fn row(&self, p: usize) -> &[u16] {
        &self.rows[p * self.w..(p + 1) * self.w]
    }

    fn holes(&self, p: usize) -> usize {
        self.row(p).iter().filter(|&&i| i == HOLE).count()
    }

    /// Whether partition `p` holds a placement made in this rebalance.
    fn changed(&self, p: usize) -> bool {
        self.kept[p * self.w..(p + 1) * self.w].contains(&false)
    }

    /// Whether slot `s` holds its partition's previous primary, first.
    fn leads(&self, s: usize) -> bool {
        s % self.w == 0 && self.rows[s] != HOLE && self.old_primary[s / self.w] == self.rows[s]
    }

    /// The slots each member holds.
    fn slots_of(&self) -> Vec<Vec<usize>> {
        let mut slots = vec![Vec::new(); self.members.len()];
        for (s, &i) in self.rows.iter().enumerate() {
            if i != HOLE {
                slots[usize::from(i)].push(s);
            }
        }
        slots
    }

    /// Step 3: every member down to its limit.
    fn drop_excess(&mut self) {
        let (w, m) = (self.w, self.members.len());
        // How many members could fill one more hole of each partition: the
        // members below their limit not in it, less its holes.
        let wanting: Vec<bool> = (0..m).map(|i| self.count[i] < self.limit[i]).collect();
        let outside = wanting.iter().filter(|&&x| x).count() as i64;
        let mut room: Vec<i64> = (0..PARTITIONS)
            .map(|p| {
                let inside = self
                    .row(p)
                    .iter()
                    .filter(|&&i| i != HOLE && wanting[usize::from(i)]);
                outside - inside.count() as i64 - self.holes(p) as i64
            })
            .collect();
        // How many of the partitions it leads each member must give up.
        let mut slots_of = self.slots_of();
        let mut lead_excess: Vec<usize> = (0..m)
            .map(|i| {
                let leading = slots_of[i].iter().filter(|&&s| self.leads(s)).count();
                leading.saturating_sub(self.primary_limit[i])
            })
            .collect();
        // First the primaries a member gives up anyway, in the partitions
        // easiest to refill; then its other slots, in partitions easiest to
        // refill and preferably led by a member that must give up one (the
        // newcomer can take over there); its own first slots last.
        for pass in 0..2 {
            for i in 0..m {
                let excess = self.count[i].saturating_sub(self.limit[i]);
                let h = self.hash[i];
                let mut chosen: Vec<usize> = Vec::new();
                if pass == 0 {
                    let drops = excess.min(lead_excess[i]);
                    lead_excess[i] -= drops;
                    let mut leads: Vec<usize> = slots_of[i]
                        .iter()
                        .copied()
                        .filter(|&s| self.leads(s))
                        .collect();
                    leads.sort_by_cached_key(|&s| (Reverse(room[s / w]), mix(h, s / w)));
                    chosen.extend(leads.into_iter().take(drops));
                } else if excess > 0 {
                    let leader = |s: usize| {
                        let first = (s / w) * w;
                        let j = usize::from(self.rows[first]);
                        (s != first && self.leads(first)).then_some(j)
                    };
                    let mut rest = slots_of[i].clone();
                    rest.sort_by_cached_key(|&s| {
                        let helps = leader(s).is_some_and(|j| lead_excess[j] > 0);
                        (s % w == 0, Reverse(room[s / w]), !helps, mix(h, s / w))
                    });
                    for s in rest.into_iter().take(excess) {
                        if let Some(j) = leader(s) {
                            lead_excess[j] = lead_excess[j].saturating_sub(1);
                        }
                        chosen.push(s);
                    }
                }
                for &s in &chosen {
                    self.rows[s] = HOLE;
                    self.kept[s] = false;
                    room[s / w] -= 1;
                    self.count[i] -= 1;
                }
                slots_of[i].retain(|s| !chosen.contains(s));
            }
        }
    }

    /// Step 4: every hole filled, within the shares.
    fn fill(&mut self) {
        let w = self.w;
        let mut shares = Shares::new(PARTITIONS * w, &self.count);
        let mut wanting: Vec<usize> = (0..self.members.len())
            .filter(|&i| shares.room(self.count[i]) > 0)
            .collect();
        // Partitions whose previous primary is gone (free) will pick a new
        // one among their members. The fill keeps a forecast of primary
        // counts: a free partition is booked for a member of its row with
        // primary room if it has one, else its hole goes preferably to a
        // member with primary room, booked for it; holes elsewhere go
        // preferably to members with little primary room.
        let m = self.members.len();
        let mut leads = vec![0usize; m];
        let mut free = vec![false; PARTITIONS];
        for (p, free) in free.iter_mut().enumerate() {
            let o = self.old_primary[p];
            if o != HOLE && self.row(p).contains(&o) {
                leads[usize::from(o)] += 1;
            } else {
                *free = true;
            }
        }
        for (lead, limit) in leads.iter_mut().zip(&self.primary_limit) {
            *lead = (*lead).min(*limit);
        }
        let mut primary_shares = Shares::new(PARTITIONS, &leads);
        // Partitions with most holes first (fewest candidates each), then
        // free ones.
        let mut order: Vec<usize> = (0..PARTITIONS).filter(|&p| self.holes(p) > 0).collect();
        order.sort_by_key(|&p| (Reverse((self.holes(p), free[p])), p));
        let mut in_row = vec![false; m];
        let mut stuck = Vec::new();
        for p in order {
            let mut unbooked = free[p];
            if unbooked {
                let best = self
                    .row(p)
                    .iter()
                    .filter(|&&i| i != HOLE)
                    .map(|&i| usize::from(i))
                    .map(|i| ((primary_shares.room(leads[i]), mix(self.hash[i], p)), i))
                    .filter(|&((room, _), _)| room > 0)
                    .max();
                if let Some((_, i)) = best {
                    primary_shares.take(leads[i]);
                    leads[i] += 1;
                    unbooked = false;
                }
            }
            for &i in self.row(p).iter().filter(|&&i| i != HOLE) {
                in_row[usize::from(i)] = true;
            }
            for s in p * w..(p + 1) * w {
                if self.rows[s] != HOLE {
                    continue;
                }
                // A plain loop and packed keys: this is the hot loop of an
                // initial assignment (and it is run in debug builds).
                let (mut best_key, mut best) = (0u128, NONE);
                for &i in &wanting {
                    let room = shares.room(self.count[i]);
                    if room == 0 || in_row[i] {
                        continue;
                    }
                    let lead_room = primary_shares.room(leads[i]).min(KEY_MAX);
                    let key = if unbooked {
                        pack(lead_room > 0, room, lead_room, 0)
                    } else {
                        pack(true, room, KEY_MAX - lead_room, 0)
                    };
                    // The tie-break only where it can matter.
                    if key | u128::from(u64::MAX) < best_key {
                        continue;
                    }
                    let key = key | u128::from(mix(self.hash[i], p));
                    if key > best_key {
                        (best_key, best) = (key, i);
                    }
                }
                if best == NONE {
                    stuck.push(s);
                    continue;
                }
                let i = best;
                let spare = shares.spare;
                shares.take(self.count[i]);
                self.count[i] += 1;
                self.rows[s] = i as u16;
                in_row[i] = true;
                if unbooked && primary_shares.room(leads[i]) > 0 {
                    primary_shares.take(leads[i]);
                    leads[i] += 1;
                    unbooked = false;
                }
                // Members without room leave the candidates for good (the
                // spare only shrinks).
                if shares.room(self.count[i]) == 0 || (spare > 0 && shares.spare == 0) {
                    wanting.retain(|&j| shares.room(self.count[j]) > 0);
                }
            }
            for &i in self.row(p).iter().filter(|&&i| i != HOLE) {
                in_row[usize::from(i)] = false;
            }
        }
        while !stuck.is_empty() {
            let before = stuck.len();
            stuck.retain(|&s| !self.augment_fill(s, &mut shares));
            if stuck.len() == before {
                // No path (cannot happen while a balanced table exists, i.e.
                // `M <= P`): exceed a share rather than leave a hole.
                for s in std::mem::take(&mut stuck) {
                    self.overflow_fill(s);
                }
            }
        }
    }

    /// Fills hole `s0` by an augmenting path ending at a member with room:
    /// `x1` (not in the hole's partition) moves into it from a slot of
    /// partition `q1`, `x2` (not in `q1`) takes that slot, ... A 0-1 BFS
    /// over members; moving a kept placement costs 1, a new one 0.
    fn augment_fill(&mut self, s0: usize, shares: &mut Shares) -> bool {
        let (w, m) = (self.w, self.members.len());
        let p0 = s0 / w;
        let slots_of = self.slots_of();
        let mut dist = vec![u32::MAX; m];
        // The slot a member would move into, and the member it displaces there.
        let mut into = vec![NONE; m];
        let mut prev = vec![NONE; m];
        let mut queue = VecDeque::new();
        for i in 0..m {
            if !self.row(p0).contains(&(i as u16)) {
                dist[i] = 0;
                into[i] = s0;
                queue.push_back((0, i));
            }
        }
        while let Some((d, x)) = queue.pop_front() {
            if d > dist[x] {
                continue;
            }
            if shares.room(self.count[x]) > 0 {
                shares.take(self.count[x]);
                self.count[x] += 1;
                let mut cur = x;
                while cur != NONE {
                    self.rows[into[cur]] = cur as u16;
                    self.kept[into[cur]] = false;
                    cur = prev[cur];
                }
                return true;
            }
            for &s in &slots_of[x] {
                let q = s / w;
                if q == p0 || on_path(&into, &prev, x, |t| t / w == q) {
                    continue;
                }
                let cost = d + u32::from(self.kept[s]);
                for z in 0..m {
                    if cost < dist[z] && !self.row(q).contains(&(z as u16)) {
                        dist[z] = cost;
                        into[z] = s;
                        prev[z] = x;
                        if self.kept[s] {
                            queue.push_back((cost, z));
                        } else {
                            queue.push_front((cost, z));
                        }
                    }
                }
            }
        }
        false
    }

    /// Fills hole `s` with the member not in its partition that holds least
    /// relative to its limit.
    fn overflow_fill(&mut self, s: usize) {
        let p = s / self.w;
        let best = (0..self.members.len())
            .filter(|&i| !self.row(p).contains(&(i as u16)))
            .min_by_key(|&i| {
                (
                    self.count[i] as i64 - self.limit[i] as i64,
                    mix(self.hash[i], p),
                )
            });
        if let Some(i) = best {
            self.count[i] += 1;
            self.rows[s] = i as u16;
        }
    }

    /// Step 5, then the table: each partition's primary in its first slot.
    fn finish(mut self) -> Assignment {
        let w = self.w;
        debug_assert!(!self.rows.contains(&HOLE));
        if w > 1 {
            let primary = self.choose_primaries();
            for (p, &i) in primary.iter().enumerate() {
                if let Some(k) = self.row(p).iter().position(|&j| j == i) {
                    self.rows.swap(p * w, p * w + k);
                }
            }
        }
        Assignment {
            members: self.members,
            n: w,
            table: self.rows,
        }
    }

    /// Each partition's primary: its previous one where that member remains
    /// in it and within its primary limit (keeping unchanged partitions
    /// first), otherwise the member of its row with most room.
    fn choose_primaries(&self) -> Vec<u16> {
        let (w, m) = (self.w, self.members.len());
        let mut leading: Vec<Vec<usize>> = vec![Vec::new(); m];
        for p in 0..PARTITIONS {
            let o = self.old_primary[p];
            if o != HOLE && self.row(p).contains(&o) {
                leading[usize::from(o)].push(p);
            }
        }
        for (i, ps) in leading.iter_mut().enumerate() {
            if ps.len() > self.primary_limit[i] {
                let h = self.hash[i];
                ps.sort_by_key(|&p| (self.changed(p), self.rows[p * w] != i as u16, mix(h, p)));
                ps.truncate(self.primary_limit[i]);
                ps.sort_unstable();
            }
        }
        let mut primary = vec![HOLE; PARTITIONS];
        for (i, ps) in leading.iter().enumerate() {
            for &p in ps {
                primary[p] = i as u16;
            }
        }
        let count: Vec<usize> = leading.iter().map(Vec::len).collect();
        let mut leads = Leads {
            shares: Shares::new(PARTITIONS, &count),
            primary,
            count,
            led: leading,
        };
        // Partitions with fewest members that may lead first.
        let mut free: Vec<usize> = (0..PARTITIONS)
            .filter(|&p| leads.primary[p] == HOLE)
            .collect();
        free.sort_by_cached_key(|&p| {
            let may = self
                .row(p)
                .iter()
                .filter(|&&i| leads.room(usize::from(i)) > 0);
            (may.count(), p)
        });
        let mut stuck = Vec::new();
        for p in free {
            let best = self
                .row(p)
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let i = usize::from(i);
                    ((leads.room(i), k == 0, mix(self.hash[i], p)), i)
                })
                .filter(|&((room, _, _), _)| room > 0)
                .max();
            match best {
                Some((_, i)) => leads.set(p, i),
                None => stuck.push(p),
            }
        }
        while !stuck.is_empty() {
            let before = stuck.len();
            stuck.retain(|&p| !self.augment_primary(p, &mut leads));
            if stuck.len() == before {
                // No path (degenerate rows): exceed a share.
                for p in std::mem::take(&mut stuck) {
                    let best = self
                        .row(p)
                        .iter()
                        .map(|&i| usize::from(i))
                        .min_by_key(|&i| (leads.count[i], mix(self.hash[i], p)));
                    if let Some(i) = best {
                        leads.set(p, i);
                    }
                }
            }
        }
        leads.primary
    }

    /// Gives partition `p0` a primary by an augmenting path: a member of its
    /// row leads it instead of a partition `q1` it leads, another member of
    /// `q1` leads that instead, ... ending at a member with room. The
    /// cheapest path first: fewest partitions taken from their previous
    /// primary, then fewest of those with unchanged members (which would be
    /// reordered).
    fn augment_primary(&self, p0: usize, leads: &mut Leads) -> bool {
        let m = self.members.len();
        let mut dist = vec![(u32::MAX, u32::MAX); m];
        let mut into = vec![NONE; m];
        let mut prev = vec![NONE; m];
        let mut heap = BinaryHeap::new();
        for &i in self.row(p0) {
            let i = usize::from(i);
            dist[i] = (0, 0);
            into[i] = p0;
            heap.push(Reverse(((0, 0), i)));
        }
        while let Some(Reverse((d, x))) = heap.pop() {
            if d > dist[x] {
                continue;
            }
            if leads.room(x) > 0 {
                let mut cur = x;
                while cur != NONE {
                    leads.set(into[cur], cur);
                    cur = prev[cur];
                }
                return true;
            }
            for &q in &leads.led[x] {
                if q == p0 || on_path(&into, &prev, x, |t| t == q) {
                    continue;
                }
                let taken = self.old_primary[q] == x as u16;
                let cost = (
                    d.0 + u32::from(taken),
                    d.1 + u32::from(taken && !self.changed(q)),
                );
                for &z in self.row(q) {
                    let z = usize::from(z);
                    if z != x && cost < dist[z] {
                        dist[z] = cost;
                        into[z] = q;
                        prev[z] = x;
                        heap.push(Reverse((cost, z)));
                    }
                }
            }
        }
        false
    }
}

/// Primaries while they are chosen.
struct Leads {
    /// Each partition's primary, or [`HOLE`].
    primary: Vec<u16>,
    /// Partitions each member leads: their number, and which.
    count: Vec<usize>,
    led: Vec<Vec<usize>>,
    shares: Shares,
}

impl Leads {
    /// How many more partitions member `i` may lead (a priority).
    fn room(&self, i: usize) -> usize {
        self.shares.room(self.count[i])
    }

    /// Member `i` leads partition `p` (instead of its primary so far).
    fn set(&mut self, p: usize, i: usize) {
        let old = usize::from(self.primary[p]);
        if let Some(led) = self.led.get_mut(old) {
            led.retain(|&q| q != p);
            self.count[old] -= 1;
            self.shares.give(self.count[old]);
        }
        self.shares.take(self.count[i]);
        self.count[i] += 1;
        self.primary[p] = i as u16;
        self.led[i].push(p);
    }
}

/// The largest priority [`pack`] keeps apart.
const KEY_MAX: usize = (1 << 24) - 1;

/// A sort key as one integer, compared as the tuple `(flag, a, b, tie)`
/// (`a` and `b` at most [`KEY_MAX`]).
fn pack(flag: bool, a: usize, b: usize, tie: u64) -> u128 {
    let a = a.min(KEY_MAX) as u128;
    let b = b.min(KEY_MAX) as u128;
    (u128::from(flag) << 112) | (a << 88) | (b << 64) | u128::from(tie)
}

/// Whether the augmenting path that ends at member `x` already moves a
/// member into a target matching `hit` (a path changes each partition once).
fn on_path(into: &[usize], prev: &[usize], x: usize, hit: impl Fn(usize) -> bool) -> bool {
    let mut cur = x;
    while cur != NONE {
        if hit(into[cur]) {
            return true;
        }
        cur = prev[cur];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    const P: usize = PARTITIONS;

    fn names(m: usize) -> Vec<String> {
        (0..m).map(|i| format!("node-{i}")).collect()
    }

    /// Every invariant of a table for `members` with `n` requested.
    fn check_valid(a: &Assignment, members: &[String], n: usize) {
        let ids: BTreeSet<&str> = members.iter().map(String::as_str).collect();
        assert_eq!(
            a.members().iter().map(|m| &**m).collect::<Vec<_>>(),
            ids.iter().copied().collect::<Vec<_>>()
        );
        let w = if ids.is_empty() {
            0
        } else {
            n.max(1).min(ids.len())
        };
        assert_eq!(a.n(), w);
        for p in 0..P {
            let owners = a.owners(p);
            assert_eq!(owners.len(), w, "partition {p}");
            let distinct: BTreeSet<u16> = owners.iter().copied().collect();
            assert_eq!(distinct.len(), w, "partition {p} repeats a member");
            assert!(owners.iter().all(|&i| usize::from(i) < ids.len()));
        }
    }

    /// Worst relative deviation of `counts` from `total / M`, and whether
    /// every count is the floor or ceil of it.
    fn balance(counts: &[usize], total: usize) -> (f64, bool) {
        let m = counts.len();
        let mean = total as f64 / m as f64;
        let worst = counts
            .iter()
            .map(|&c| (c as f64 - mean).abs() / mean)
            .fold(0.0, f64::max);
        let exact = counts
            .iter()
            .all(|&c| c == total / m || c == total.div_ceil(m));
        (worst, exact)
    }

    fn check_balanced(a: &Assignment) {
        let w = a.n();
        let (_, exact) = balance(&a.counts(), P * w);
        assert!(exact, "replicas {:?}", a.counts());
        let (_, exact) = balance(&a.primary_counts(), P);
        assert!(exact, "primaries {:?}", a.primary_counts());
    }

    /// `changes` is within 1.2 times `min` (exactly 0 when `min` is).
    fn within(changes: usize, min: usize) -> bool {
        changes * 5 <= min * 6
    }

    /// Partitions whose member set is unchanged but whose order changed.
    fn reordered(new: &Assignment, old: &Assignment) -> usize {
        (0..P)
            .filter(|&p| {
                let ids = |a: &Assignment| -> Vec<Arc<str>> {
                    a.owners(p)
                        .iter()
                        .map(|&i| a.members()[usize::from(i)].clone())
                        .collect()
                };
                let (a, b) = (ids(new), ids(old));
                let sa: BTreeSet<_> = a.iter().collect();
                let sb: BTreeSet<_> = b.iter().collect();
                sa == sb && a != b
            })
            .count()
    }

    /// One rebalance step checked against every requirement; returns
    /// (changes, minimum, reordered partitions).
    fn step(
        old: &Assignment,
        members: &[String],
        n: usize,
    ) -> (Assignment, Changes, Changes, usize) {
        let new = old.rebalance(members, n);
        check_valid(&new, members, n);
        check_balanced(&new);
        let changes = new.changes_from(old);
        let min = Assignment::minimum_changes(old, members, n);
        assert!(changes.placements >= min.placements && changes.primaries >= min.primaries);
        (new.clone(), changes, min, reordered(&new, old))
    }

    #[test]
    fn zero_members_give_an_empty_table() {
        let none: [&str; 0] = [];
        let a = Assignment::initial(&none, 3);
        assert_eq!(a, Assignment::default());
        assert_eq!(a.n(), 0);
        assert!(a.owners(0).is_empty() && a.owners(P + 5).is_empty());
        assert!(a.counts().is_empty() && a.primary_counts().is_empty());
        assert_eq!(
            Assignment::minimum_changes(&a, &none, 3),
            Changes::default()
        );
        // From and to nothing.
        let three = Assignment::initial(&["a", "b", "c"], 3);
        assert_eq!(three.rebalance(&none, 3), Assignment::default());
        assert_eq!(three.changes_from(&a).placements, 3 * P);
        assert_eq!(
            a.changes_from(&three),
            Changes {
                placements: 0,
                primaries: P
            }
        );
        // A rebalance from nothing is balanced too (initial starts from
        // rendezvous hashing instead, which is faster).
        let abc: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let from_nothing = a.rebalance(&abc, 3);
        check_valid(&from_nothing, &abc, 3);
        check_balanced(&from_nothing);
    }

    #[test]
    fn duplicate_ids_are_deduplicated_and_order_does_not_matter() {
        let a = Assignment::initial(&["b", "a", "c", "a", "b"], 3);
        let b = Assignment::initial(&["a", "b", "c"], 3);
        assert_eq!(a, b);
        assert_eq!(a.members().len(), 3);
        check_valid(&a, &["a".into(), "b".into(), "c".into()], 3);
    }

    #[test]
    fn n_larger_than_the_member_count_gives_every_member() {
        for m in 1..=3 {
            let members = names(m);
            let a = Assignment::initial(&members, 5);
            check_valid(&a, &members, 5);
            check_balanced(&a);
            assert_eq!(a.n(), m);
            assert_eq!(a.counts(), vec![P; m]);
        }
        // n = 0 still keeps one replica.
        let a = Assignment::initial(&names(4), 0);
        assert_eq!(a.n(), 1);
        check_balanced(&a);
        // Growing past n, then shrinking below it again.
        let one = Assignment::initial(&names(1), 3);
        let (two, c, min, _) = step(&one, &names(2), 3);
        assert_eq!((c.placements, min.placements), (P, P));
        assert_eq!(two.counts(), vec![P, P]);
        let (three, ..) = step(&two, &names(3), 3);
        let (back, c, min, _) = step(&three, &names(2), 3);
        assert_eq!(back.counts(), vec![P, P]);
        assert_eq!((c.placements, min.placements), (0, 0));
    }

    #[test]
    fn initial_is_balanced_from_3_to_64_members() {
        for m in 1..=64 {
            for n in [1, 2, 3, 5] {
                let members = names(m);
                let a = Assignment::initial(&members, n);
                check_valid(&a, &members, n);
                check_balanced(&a);
            }
        }
    }

    #[test]
    fn a_replaced_member_is_replaced_slot_for_slot() {
        // With shares that divide exactly, replacing one node changes only
        // its slots, each to the newcomer in the same position.
        for m in [4, 8, 16, 32, 64] {
            let mut members = names(m);
            let old = Assignment::initial(&members, 3);
            let gone = members.remove(m / 2);
            members.push("newcomer".into());
            let (new, c, min, reordered) = step(&old, &members, 3);
            assert_eq!(c, min, "{m} members");
            assert_eq!(reordered, 0);
            let x = new
                .members()
                .iter()
                .position(|id| &**id == "newcomer")
                .unwrap();
            for p in 0..P {
                let before: Vec<&str> = old
                    .owners(p)
                    .iter()
                    .map(|&i| &*old.members()[usize::from(i)])
                    .collect();
                let after: Vec<&str> = new
                    .owners(p)
                    .iter()
                    .map(|&i| &*new.members()[usize::from(i)])
                    .collect();
                let expected: Vec<&str> = before
                    .iter()
                    .map(|&id| if id == gone { &*new.members()[x] } else { id })
                    .collect();
                assert_eq!(after, expected);
            }
        }
    }

    #[test]
    fn the_ring_is_adopted_with_little_movement() {
        let members = names(5);
        let ring = Ring::new(&members, crate::cluster::ring::DEFAULT_VNODES);
        let old = Assignment::from_ring(&ring, 3);
        check_valid(&old, &members, 3);
        let (_, c, min, _) = step(&old, &members, 3);
        eprintln!("adopting a 5-node ring: {c:?}, minimum {min:?}");
        assert!(within(c.placements, min.placements), "{c:?} {min:?}");
        // The ring is within a few percent of balance already.
        assert!(c.placements < 3 * P / 10, "{c:?}");
    }

    #[test]
    fn rebalance_is_fast() {
        let members = names(100);
        let t = Instant::now();
        let a = Assignment::initial(&members, 3);
        let initial = t.elapsed();
        let mut more = members.clone();
        more.push("node-new".into());
        let t = Instant::now();
        let b = a.rebalance(&more, 3);
        let add = t.elapsed();
        let t = Instant::now();
        let c = a.rebalance(&members[1..], 3);
        let remove = t.elapsed();
        eprintln!("100 members: initial {initial:?}, +1 {add:?}, -1 {remove:?}");
        check_balanced(&b);
        check_balanced(&c);
        // Generous: a shared 2-core machine in a debug build.
        let bound = Duration::from_millis(500);
        assert!(initial < bound && add < bound && remove < bound);
    }

    /// The figures in docs/architecture.md ("Partition assignment"):
    /// `cargo test --lib cluster::assign::tests::figures -- --nocapture`.
    #[test]
    fn figures() {
        #[derive(Default)]
        struct Stats {
            worst: f64,
            worst_primaries: f64,
            primaries: usize,
            min_primaries: usize,
            reordered: usize,
        }
        let (mut worst_share, mut worst_primary_share) = (0.0f64, 0.0f64);
        let mut stats: [Stats; 3] = Default::default();
        for m in 3..=64 {
            let members = names(m);
            let a = Assignment::initial(&members, 3);
            worst_share = worst_share.max(balance(&a.counts(), 3 * P).0);
            worst_primary_share = worst_primary_share.max(balance(&a.primary_counts(), P).0);
            let mut plus1 = members.clone();
            plus1.push("extra-1".into());
            let mut plus2 = plus1.clone();
            plus2.push("extra-2".into());
            let mut minus1 = members.clone();
            minus1.remove(m / 3);
            for (k, next) in [plus1, minus1, plus2].iter().enumerate() {
                let (_, c, min, reordered) = step(&a, next, 3);
                assert!(
                    within(c.placements, min.placements),
                    "M={m} change {k}: {c:?} {min:?}"
                );
                assert!(
                    within(c.primaries, min.primaries),
                    "M={m} change {k}: {c:?} {min:?}"
                );
                let s = &mut stats[k];
                s.worst = s.worst.max(c.placements as f64 / min.placements as f64);
                s.worst_primaries = s
                    .worst_primaries
                    .max(c.primaries as f64 / min.primaries as f64);
                s.primaries += c.primaries;
                s.min_primaries += min.primaries;
                s.reordered += reordered;
            }
        }
        assert!(worst_share <= 0.10 && worst_primary_share <= 0.10);
        eprintln!(
            "M=3..64, n=3: worst replica share deviation {:.2}%, primary {:.2}%",
            worst_share * 100.0,
            worst_primary_share * 100.0
        );
        for (name, s) in ["+1", "-1", "+2"].iter().zip(stats) {
            eprintln!(
                "{name}: worst moved/minimum {:.3}; primaries changed/minimum worst {:.3}, \
                 total {}/{}; unchanged partitions reordered {} (all summed over M)",
                s.worst, s.worst_primaries, s.primaries, s.min_primaries, s.reordered
            );
        }
    }

    fn members_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-z0-9-]{1,12}", 3..=64)
            .prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn every_partition_has_distinct_owners(
            a in proptest::collection::vec("[a-z]{1,3}", 0..12),
            b in proptest::collection::vec("[a-z]{1,3}", 0..12),
            n in 0usize..6,
        ) {
            let first = Assignment::initial(&a, n);
            check_valid(&first, &a, n);
            let second = first.rebalance(&b, n);
            check_valid(&second, &b, n);
            let third = second.rebalance(&a, n + 1);
            check_valid(&third, &a, n + 1);
        }

        #[test]
        fn results_do_not_depend_on_input_order(mut members in members_strategy(), seed: u64) {
            let a = Assignment::initial(&members, 3);
            let gone = members.remove(seed as usize % members.len());
            let b = a.rebalance(&members, 3);
            // Shuffle (deterministically), duplicate: the same tables.
            let by = seed as usize % members.len();
            members.rotate_left(by);
            members.reverse();
            members.push(members[0].clone());
            prop_assert_eq!(&b, &a.rebalance(&members, 3));
            members.push(gone);
            prop_assert_eq!(&a, &Assignment::initial(&members, 3));
        }

        #[test]
        fn sequences_of_changes_stay_balanced_and_move_little(
            mut members in members_strategy(),
            ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..6),
        ) {
            let mut a = Assignment::initial(&members, 3);
            check_balanced(&a);
            for (k, (add, pick)) in ops.into_iter().enumerate() {
                if (add && members.len() < 64) || members.len() <= 3 {
                    members.push(format!("added-{k}-{pick}"));
                } else {
                    members.remove(usize::from(pick) % members.len());
                }
                let (next, c, min, reordered) = step(&a, &members, 3);
                prop_assert!(within(c.placements, min.placements), "{:?} {:?}", c, min);
                prop_assert!(within(c.primaries, min.primaries), "{:?} {:?}", c, min);
                // Measured 0 over 1400 random steps; a reorder happens only
                // when no augmenting path avoids an unchanged partition.
                prop_assert!(reordered <= 10, "{} partitions reordered", reordered);
                a = next;
            }
        }

        #[test]
        fn adding_two_nodes_at_once_moves_data_once(members in members_strategy()) {
            let members: Vec<String> = members.into_iter().take(62).collect();
            let a = Assignment::initial(&members, 3);
            let mut more = members.clone();
            more.extend(["joiner-a".to_string(), "joiner-b".to_string()]);
            let (_, c, min, _) = step(&a, &more, 3);
            prop_assert!(within(c.placements, min.placements), "{:?} {:?}", c, min);
            prop_assert!(within(c.primaries, min.primaries), "{:?} {:?}", c, min);
        }
    }
}
