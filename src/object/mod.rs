//! Versioned objects: what a replica stores under a key.
//!
//! An [`Object`] is a *dotted version vector set*: a causal context (a
//! [`VClock`] summarising every write the object has seen) and a list of
//! concurrent [`Sibling`]s, each tagged with the unique [`Dot`] of the write
//! that made it. This is the scheme of Riak 2.0 (`dvv_enabled`) and Garage K2V:
//! with server actors, interleaved writers cannot breed siblings without bound,
//! and no concurrent write is ever silently dropped.
//!
//! Two operations change objects:
//! - [`Object::update`] runs on the replica that coordinates a write (the
//!   *actor*): siblings the client's context covers are replaced by the new
//!   value; siblings it did not see stay as concurrent siblings.
//! - [`Object::merge`] joins two replicas' copies (replication, read repair,
//!   anti-entropy). It is commutative, associative and idempotent, so replicas
//!   converge whatever the order in which copies meet.
//!
//! Correctness needs one invariant: an actor makes a new dot only against a
//! local copy that holds every earlier dot of its own for that key. The node
//! guarantees it by making writes coordinate on a replica of the key and by
//! giving a node a new epoch (a new actor) whenever its data directory is new.

use serde::{Deserialize, Serialize};

mod codec;

use crate::vclock::{Actor, Dot, MAX_COUNTER, VClock};

/// Riak warns at 25 siblings; distro-db logs a warning from this count on.
pub const SIBLINGS_WARN: usize = 25;
/// Riak refuses writes at 100 siblings; so does distro-db: the client must
/// resolve the siblings (write with the context of a read) first.
pub const SIBLINGS_MAX: usize = 100;
/// No stored object ever holds more siblings than this, whatever path it
/// came by (a client write, replication, read repair, a hint, anti-entropy):
/// a merge whose result would exceed it is refused. Client writes stop at
/// [`SIBLINGS_MAX`], but replicas that took writes on both sides of a
/// partition can legitimately merge to a few times that; anything far beyond
/// is a bug or an attack (a peer once sent 40,000).
pub const SIBLINGS_HARD_MAX: usize = 512;
/// Most actors one clock may name. With server actors a clock names the
/// nodes (and epochs) that wrote the key; thousands means something is wrong.
pub const MAX_CLOCK_ACTORS: usize = 4096;
/// Longest actor name accepted (`node-id/epoch`, node ids are at most 64 bytes).
pub const MAX_ACTOR_LEN: usize = 128;

/// One concurrent version of a key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that made this version.
    pub dot: Dot,
    /// The value; `None` (with no counter) is a tombstone: a delete, or a
    /// version whose deadline passed.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Wall-clock milliseconds at the actor when written (informational, and
    /// the deterministic pick between siblings; never used to drop one).
    pub written_ms: u64,
    /// Wall-clock milliseconds past which this version is a tombstone
    /// (`SET ... EX`, `EXPIRE`). Travels with the version.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// A counter (`INCR` family): this version's value is the counter's.
    #[serde(default)]
    pub counter: Option<Counter>,
}

impl Sibling {
    /// The order siblings are kept in: by dot, then by payload, so that two
    /// versions that (wrongly) share a dot still have one deterministic order.
    fn order(&self, other: &Sibling) -> std::cmp::Ordering {
        self.dot
            .cmp(&other.dot)
            .then_with(|| self.value.cmp(&other.value))
            .then_with(|| self.expires_ms.cmp(&other.expires_ms))
            .then_with(|| self.counter.cmp(&other.counter))
    }

    /// True for a tombstone: no value and no counter.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none() && self.counter.is_none()
    }

    /// True when the version's deadline has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|d| d <= now_ms)
    }

    /// True when the version holds a value (or counter) at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }

    /// True when two versions are the same write: same dot and deadline, and
    /// the same payload, or one of them expired (and turned into a
    /// tombstone) where the other has not yet.
    fn same_write(&self, other: &Sibling) -> bool {
        self.dot == other.dot
            && self.expires_ms == other.expires_ms
            && ((self.value == other.value && self.counter == other.counter)
                || (self.expires_ms.is_some() && (self.is_tombstone() || other.is_tombstone())))
    }

    /// Bytes of value held.
    fn bytes(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len)
    }
}

/// A PN-counter: per actor, the increments and the decrements it made. Two
/// replicas' counters merge by taking each entry's maximum, so increments
/// made on both sides of a partition all count (a CRDT, as Riak's counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Counter(pub std::collections::BTreeMap<Actor, (u64, u64)>);

impl Counter {
    /// The counter's value: increments minus decrements.
    pub fn value(&self) -> i128 {
        self.0
            .values()
            .map(|(p, n)| i128::from(*p) - i128::from(*n))
            .sum()
    }

    /// Pointwise maximum, in place.
    pub fn merge(&mut self, other: &Counter) {
        for (actor, (p, n)) in &other.0 {
            let e = self.0.entry(actor.clone()).or_insert((0, 0));
            e.0 = e.0.max(*p);
            e.1 = e.1.max(*n);
        }
    }

    /// Adds `delta` as `actor`'s change.
    pub fn add(&mut self, actor: &Actor, delta: i128) -> Option<()> {
        let e = self.0.entry(actor.clone()).or_insert((0, 0));
        if delta >= 0 {
            e.0 = e.0.checked_add(u64::try_from(delta).ok()?)?;
        } else {
            e.1 = e.1.checked_add(u64::try_from(-delta).ok()?)?;
        }
        Some(())
    }
}

/// What a new version holds (see [`Object::update_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The value (`None`: a delete).
    pub value: Option<Vec<u8>>,
    /// The deadline, if any.
    pub expires_ms: Option<u64>,
    /// A counter instead of a value.
    pub counter: Option<Counter>,
}

/// What a key holds at some time: the live versions, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every live value; counter versions merged into one value.
    pub values: Vec<Vec<u8>>,
    /// The value a plain read answers: the most recently written live
    /// version (then the highest dot), so concurrent versions give every
    /// reader the same answer while they stay stored.
    pub pick: Option<Vec<u8>>,
    /// The deadline of the picked version.
    pub expires_ms: Option<u64>,
    /// True when the picked value is a counter's.
    pub is_counter: bool,
}

impl Resolved {
    /// True when more than one value is live.
    pub fn conflicted(&self) -> bool {
        self.values.len() > 1
    }
}

/// A key's versioned state on one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Every write this object has seen (including overwritten ones).
    pub clock: VClock,
    /// The surviving, pairwise concurrent versions, sorted by dot (then value).
    pub siblings: Vec<Sibling>,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The write would leave more than [`SIBLINGS_MAX`] siblings.
    #[error(
        "key has {0} siblings (the limit is {SIBLINGS_MAX}); read it with VGET and write with its CTX to resolve them"
    )]
    TooManySiblings(usize),
    /// The new version's counter would pass [`MAX_COUNTER`]: unreachable
    /// by honest writes (2^62 of them by one node), refused so that no
    /// clock past the bound is ever made.
    #[error("the key's vector clock reached its bound ({MAX_COUNTER} writes by one node)")]
    ClockFull,
    /// The siblings' values together would exceed the object size limit.
    #[error(
        "the key's siblings would hold {0} bytes (the limit is {limit}); resolve them with VGET and CTX first",
        limit = crate::config::MAX_OBJECT_VALUE_BYTES
    )]
    TooLarge(usize),
}

/// Why an object (received from a peer, or the result of a merge) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// More siblings than any stored object may hold.
    #[error("object has {0} siblings (the limit for a stored object is {SIBLINGS_HARD_MAX})")]
    TooManySiblings(usize),
    /// The sibling values together exceed the object size limit.
    #[error(
        "object holds {0} bytes of values (the limit is {limit})",
        limit = crate::config::MAX_OBJECT_VALUE_BYTES
    )]
    TooLarge(usize),
    /// One value exceeds the value size limit.
    #[error(
        "object has a value of {0} bytes (the limit is {limit})",
        limit = crate::config::MAX_VALUE_LEN
    )]
    ValueTooLarge(usize),
    /// The clock names too many actors.
    #[error("object clock names {0} actors (the limit is {MAX_CLOCK_ACTORS})")]
    ClockTooLarge(usize),
    /// An actor name is empty or too long.
    #[error("object names an actor of {0} bytes (1 to {MAX_ACTOR_LEN} allowed)")]
    BadActor(usize),
    /// A clock counter is above [`MAX_COUNTER`]: a forged clock or a
    /// damaged record.
    #[error("clock counter {0} is above the bound ({MAX_COUNTER})")]
    CounterTooLarge(u64),
    /// Siblings out of order or repeated.
    #[error("object siblings are not sorted and distinct")]
    Unsorted,
    /// A sibling's dot is not covered by the object's clock, or is zero.
    #[error("object has a sibling whose dot its clock does not cover")]
    DotNotCovered,
}

/// The result of [`Object::merge_checked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The merged object.
    pub object: Object,
    /// Dots that carry two different values in the result but did not in
    /// `self`: evidence that some actor made the same dot twice (it lost a
    /// record and kept its epoch). Both values are kept.
    pub new_conflicts: Vec<Dot>,
}

impl Object {
    /// Applies a write made by `actor` whose client had seen `context`,
    /// with a plain value (`None` deletes); see [`Object::update_with`].
    pub fn update(
        local: Option<&Object>,
        context: &VClock,
        actor: &Actor,
        value: Option<Vec<u8>>,
        written_ms: u64,
    ) -> Result<Object, UpdateError> {
        let payload = Payload {
            value,
            ..Payload::default()
        };
        Object::update_with(local, context, actor, payload, written_ms)
    }

    /// Applies a write made by `actor` whose client had seen `context`.
    ///
    /// `local` is the actor's own copy. Siblings covered by `context` are
    /// superseded; the others stay. The new sibling's counter is above
    /// anything the actor or the context knows for this actor.
    pub fn update_with(
        local: Option<&Object>,
        context: &VClock,
        actor: &Actor,
        payload: Payload,
        written_ms: u64,
    ) -> Result<Object, UpdateError> {
        let empty = Object::default();
        let local = local.unwrap_or(&empty);
        // Both clocks are within MAX_COUNTER (checked where they entered),
        // so this cannot overflow; saturating all the same.
        let counter = local
            .clock
            .get(actor)
            .max(context.get(actor))
            .saturating_add(1);
        if counter > MAX_COUNTER {
            return Err(UpdateError::ClockFull);
        }
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        let mut siblings: Vec<Sibling> = local
            .siblings
            .iter()
            .filter(|s| !context.covers(&s.dot))
            .cloned()
            .collect();
        if siblings.len() + 1 > SIBLINGS_MAX {
            return Err(UpdateError::TooManySiblings(siblings.len() + 1));
        }
        let bytes: usize = siblings.iter().map(Sibling::bytes).sum::<usize>()
            + payload.value.as_ref().map_or(0, Vec::len);
        if bytes > crate::config::MAX_OBJECT_VALUE_BYTES {
            return Err(UpdateError::TooLarge(bytes));
        }
        let mut clock = local.clock.merged(context);
        clock.add(&dot);
        siblings.push(Sibling {
            dot,
            value: payload.value,
            written_ms,
            expires_ms: payload.expires_ms,
            counter: payload.counter,
        });
        siblings.sort_by(Sibling::order);
        Ok(Object { clock, siblings })
    }

    /// Turns every version whose deadline passed at `now_ms` into a
    /// tombstone (keeping its dot and deadline, so it merges as the same
    /// write); returns true if anything changed. Expiry only ever goes one
    /// way, so a merge keeps the expired form.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        for s in &mut self.siblings {
            if s.is_expired(now_ms) && !s.is_tombstone() {
                s.value = None;
                s.counter = None;
                changed = true;
            }
        }
        if changed {
            self.siblings.sort_by(Sibling::order);
        }
        changed
    }

    /// What the key holds at `now_ms`.
    pub fn resolve(&self, now_ms: u64) -> Resolved {
        let live: Vec<&Sibling> = self.siblings.iter().filter(|s| s.is_live(now_ms)).collect();
        let mut counters: Option<(Counter, &Sibling)> = None;
        let mut values: Vec<(&Sibling, Vec<u8>)> = Vec::new();
        for s in &live {
            match (&s.counter, &s.value) {
                (Some(c), _) => match &mut counters {
                    Some((acc, newest)) => {
                        acc.merge(c);
                        if (s.written_ms, &s.dot) > (newest.written_ms, &newest.dot) {
                            *newest = s;
                        }
                    }
                    None => counters = Some((c.clone(), s)),
                },
                (None, Some(v)) => values.push((s, v.clone())),
                (None, None) => {}
            }
        }
        if let Some((c, newest)) = counters {
            values.push((newest, c.value().to_string().into_bytes()));
        }
        let picked = values
            .iter()
            .max_by(|(a, _), (b, _)| (a.written_ms, &a.dot).cmp(&(b.written_ms, &b.dot)));
        let (pick, expires_ms, is_counter) = match picked {
            Some((s, v)) => (Some(v.clone()), s.expires_ms, s.counter.is_some()),
            None => (None, None, false),
        };
        Resolved {
            values: values.into_iter().map(|(_, v)| v).collect(),
            pick,
            expires_ms,
            is_counter,
        }
    }

    /// Where the version a plain read picks is, and how many live values
    /// there are, as [`Object::resolve`] finds them but copying nothing.
    /// `None` when a live version is a counter: those merge into one value
    /// made on the spot, which only `resolve` makes.
    pub fn pick_index(&self, now_ms: u64) -> Option<(Option<usize>, usize)> {
        let mut pick: Option<usize> = None;
        let mut live = 0;
        for (i, s) in self.siblings.iter().enumerate() {
            if !s.is_live(now_ms) {
                continue;
            }
            if s.counter.is_some() {
                return None;
            }
            live += 1;
            // `>=`: of equal versions the last, as `resolve`'s `max_by`.
            let later = |p: usize| {
                let p = &self.siblings[p];
                (s.written_ms, &s.dot) >= (p.written_ms, &p.dot)
            };
            if pick.is_none_or(later) {
                pick = Some(i);
            }
        }
        Some((pick, live))
    }

    /// What a plain read answers: the picked value, moved out of the
    /// object instead of copied, and how many live values the key holds
    /// (the same as `resolve`'s `pick` and `values.len()`).
    pub fn into_pick(mut self, now_ms: u64) -> (Option<Vec<u8>>, usize) {
        match self.pick_index(now_ms) {
            Some((pick, live)) => (pick.and_then(|i| self.siblings.swap_remove(i).value), live),
            None => {
                let r = self.resolve(now_ms);
                (r.pick, r.values.len())
            }
        }
    }

    /// The merged counter of every live counter version (empty if none).
    pub fn counter_at(&self, now_ms: u64) -> Option<Counter> {
        let mut out: Option<Counter> = None;
        for s in self.siblings.iter().filter(|s| s.is_live(now_ms)) {
            if let Some(c) = &s.counter {
                out.get_or_insert_with(Counter::default).merge(c);
            }
        }
        out
    }

    /// Joins two copies of the same key, in O(n + m) over their (sorted)
    /// siblings.
    ///
    /// A sibling survives when the other copy holds its dot too, or has not
    /// seen its dot at all; a sibling whose dot the other copy has seen and
    /// dropped was superseded there. When both copies hold a dot with
    /// *different* values (an actor made the same dot twice, see
    /// [`Merged::new_conflicts`]), every value is kept: equal dots are never
    /// taken for one write unless their values are equal too.
    pub fn merge(&self, other: &Object) -> Object {
        let (a, b) = (&self.siblings, &other.siblings);
        let mut out: Vec<Sibling> = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next_dot: &Dot = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => (&x.dot).min(&y.dot),
                (Some(x), None) => &x.dot,
                (None, Some(y)) => &y.dot,
                (None, None) => break,
            };
            let run_a = run_len(&a[i..], next_dot);
            let run_b = run_len(&b[j..], next_dot);
            let (sa, sb) = (&a[i..i + run_a], &b[j..j + run_b]);
            i += run_a;
            j += run_b;
            if sb.is_empty() {
                if !other.clock.covers(next_dot) {
                    out.extend_from_slice(sa);
                }
            } else if sa.is_empty() {
                if !self.clock.covers(next_dot) {
                    out.extend_from_slice(sb);
                }
            } else {
                union_run(sa, sb, &mut out);
            }
        }
        Object {
            clock: self.clock.merged(&other.clock),
            siblings: out,
        }
    }

    /// Drops retired actors from the clock ([`VClock::prune`]): never
    /// `own` (the replica's current actor, which counts its next dot) nor
    /// an actor whose dot a sibling carries. Returns the entries dropped.
    pub fn prune(&mut self, own: &str, retired_before_ms: u64) -> usize {
        let siblings = &self.siblings;
        self.clock.prune(
            |a| a == own || siblings.iter().any(|s| s.dot.actor == a),
            retired_before_ms,
        )
    }

    /// [`Object::merge`], refusing a result beyond the stored-object bounds
    /// and reporting dots that newly carry two values.
    pub fn merge_checked(&self, other: &Object) -> Result<Merged, ObjectError> {
        let object = self.merge(other);
        object.check_bounds()?;
        let new_conflicts = if other.siblings.is_empty() {
            Vec::new()
        } else {
            let before: std::collections::BTreeSet<&Dot> = self.conflicted_dots().collect();
            object
                .conflicted_dots()
                .filter(|d| !before.contains(d))
                .cloned()
                .collect()
        };
        Ok(Merged {
            object,
            new_conflicts,
        })
    }

    /// Dots that carry more than one value (each named once).
    pub fn conflicted_dots(&self) -> impl Iterator<Item = &Dot> {
        self.siblings
            .windows(2)
            .filter(|w| w[0].dot == w[1].dot)
            .map(|w| &w[0].dot)
            .scan(None::<&Dot>, |last, d| {
                let fresh = *last != Some(d);
                *last = Some(d);
                Some(fresh.then_some(d))
            })
            .flatten()
    }

    /// Checks everything a stored object must satisfy: siblings sorted and
    /// distinct, each covered by the clock, and the size bounds. Every object
    /// that arrives from the network is checked before it is merged or stored.
    pub fn validate(&self) -> Result<(), ObjectError> {
        self.check_bounds()?;
        validate_clock(&self.clock)?;
        for w in self.siblings.windows(2) {
            if w[0].order(&w[1]) != std::cmp::Ordering::Less {
                return Err(ObjectError::Unsorted);
            }
        }
        if self
            .siblings
            .iter()
            .any(|s| s.dot.counter == 0 || !self.clock.covers(&s.dot))
        {
            return Err(ObjectError::DotNotCovered);
        }
        for c in self.siblings.iter().filter_map(|s| s.counter.as_ref()) {
            if c.0.len() > MAX_CLOCK_ACTORS {
                return Err(ObjectError::ClockTooLarge(c.0.len()));
            }
            if let Some(a) = c.0.keys().find(|a| a.is_empty() || a.len() > MAX_ACTOR_LEN) {
                return Err(ObjectError::BadActor(a.len()));
            }
        }
        Ok(())
    }

    /// The clock's counter bound alone (cheap: what a record read from
    /// storage is checked against, see [`crate::replica::load_object`]).
    pub fn check_counters(&self) -> Result<(), ObjectError> {
        match self.clock.out_of_bounds() {
            Some((_, c)) => Err(ObjectError::CounterTooLarge(c)),
            None => Ok(()),
        }
    }

    /// The size bounds alone (cheap; what a merge result is checked against).
    fn check_bounds(&self) -> Result<(), ObjectError> {
        if self.siblings.len() > SIBLINGS_HARD_MAX {
            return Err(ObjectError::TooManySiblings(self.siblings.len()));
        }
        let mut total = 0usize;
        for s in &self.siblings {
            let len = s.value.as_ref().map_or(0, Vec::len);
            if len > crate::config::MAX_VALUE_LEN {
                return Err(ObjectError::ValueTooLarge(len));
            }
            total += len;
        }
        if total > crate::config::MAX_OBJECT_VALUE_BYTES {
            return Err(ObjectError::TooLarge(total));
        }
        Ok(())
    }

    /// Merges an optional copy into an optional copy.
    pub fn merge_opt(a: Option<&Object>, b: Option<&Object>) -> Option<Object> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        }
    }

    /// The plain values (tombstones and counters left out), in dot order,
    /// whatever their deadlines (see [`Object::resolve`] for a read).
    pub fn values(&self) -> Vec<&[u8]> {
        self.siblings
            .iter()
            .filter_map(|s| s.value.as_deref())
            .collect()
    }

    /// True when every surviving version is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(Sibling::is_tombstone)
    }

    /// True when no version is live at `now_ms`.
    pub fn is_deleted_at(&self, now_ms: u64) -> bool {
        !self.siblings.iter().any(|s| s.is_live(now_ms))
    }

    /// True when `self` has seen everything `other` has (so `other` adds
    /// nothing): merging `other` in would leave `self` unchanged.
    pub fn supersedes(&self, other: &Object) -> bool {
        &self.merge(other) == self
    }

    /// Encodes for storage or the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings, integers and byte vectors
        // into a Vec cannot fail. Sized up front: growing it field by field
        // took several reallocations per stored write.
        // Written by hand, the same bytes as the derived `Serialize` through
        // rmp_serde (src/object/codec.rs).
        let mut out = Vec::with_capacity(self.encoded_size_hint());
        codec::encode(self, &mut out);
        out
    }

    /// Decodes bytes written by [`Object::to_bytes`] (or by the derived
    /// `Serialize` in any form rmp_serde reads: an older build's record).
    pub fn from_bytes(bytes: &[u8]) -> Result<Object, rmp_serde::decode::Error> {
        match codec::decode(bytes) {
            Some(object) => Ok(object),
            None => rmp_serde::from_slice(bytes),
        }
    }

    /// About how many bytes [`Object::to_bytes`] gives (values, plus a
    /// dot and a timestamp per sibling and an actor and counter per clock
    /// entry), for sizing encode buffers.
    pub fn encoded_size_hint(&self) -> usize {
        32 + self.value_bytes() + 48 * self.siblings.len() + 24 * self.clock.len()
    }

    /// Bytes of values held (for size limits).
    pub fn value_bytes(&self) -> usize {
        self.siblings.iter().map(Sibling::bytes).sum()
    }
}

/// How many siblings at the front of `s` carry `dot`.
fn run_len(s: &[Sibling], dot: &Dot) -> usize {
    s.iter().take_while(|x| &x.dot == dot).count()
}

/// Appends the union of two runs of one dot: versions that are the same
/// write (see [`Sibling::same_write`]) once, with the later `written_ms`
/// and the expired form if either expired (so the merge stays commutative),
/// every other version as it is. Runs are short (longer than one only when
/// an actor reused a dot), so the pairing is quadratic in the run only.
fn union_run(a: &[Sibling], b: &[Sibling], out: &mut Vec<Sibling>) {
    let start = out.len();
    let mut taken = vec![false; b.len()];
    for x in a {
        let mut merged = x.clone();
        for (j, y) in b.iter().enumerate() {
            if !taken[j] && x.same_write(y) {
                taken[j] = true;
                merged.written_ms = x.written_ms.max(y.written_ms);
                if y.is_tombstone() {
                    merged.value = None;
                    merged.counter = None;
                }
                break;
            }
        }
        out.push(merged);
    }
    for (j, y) in b.iter().enumerate() {
        if !taken[j] {
            out.push(y.clone());
        }
    }
    out[start..].sort_by(Sibling::order);
}

/// Checks a clock as one that entered from outside (a peer, a file, a
/// client token): at most [`MAX_CLOCK_ACTORS`] actors, each named with 1
/// to [`MAX_ACTOR_LEN`] bytes, and every counter within [`MAX_COUNTER`].
pub fn validate_clock(clock: &VClock) -> Result<(), ObjectError> {
    if clock.len() > MAX_CLOCK_ACTORS {
        return Err(ObjectError::ClockTooLarge(clock.len()));
    }
    if let Some((a, _)) = clock
        .iter()
        .find(|(a, _)| a.is_empty() || a.len() > MAX_ACTOR_LEN)
    {
        return Err(ObjectError::BadActor(a.len()));
    }
    match clock.out_of_bounds() {
        Some((_, c)) => Err(ObjectError::CounterTooLarge(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn actor(s: &str) -> Actor {
        s.to_string()
    }

    fn write(local: Option<&Object>, ctx: &VClock, a: &str, v: &str) -> Object {
        Object::update(local, ctx, &actor(a), Some(v.as_bytes().to_vec()), 0).unwrap()
    }

    #[test]
    fn write_with_context_supersedes_and_without_keeps_siblings() {
        let o1 = write(None, &VClock::new(), "a", "one");
        // A write that saw o1 replaces it.
        let o2 = write(Some(&o1), &o1.clock, "a", "two");
        assert_eq!(o2.values(), vec![b"two".as_slice()]);
        // A write that saw nothing (empty context) is concurrent with o2.
        let o3 = write(Some(&o2), &VClock::new(), "a", "three");
        assert_eq!(o3.values(), vec![b"two".as_slice(), b"three".as_slice()]);
        // A write with the context of both resolves them.
        let o4 = write(Some(&o3), &o3.clock, "a", "resolved");
        assert_eq!(o4.values(), vec![b"resolved".as_slice()]);
    }

    #[test]
    fn two_actors_same_context_give_two_siblings_then_resolve() {
        let base = write(None, &VClock::new(), "a", "base");
        let ctx = base.clock.clone();
        let on_a = write(Some(&base), &ctx, "a", "from-a");
        let on_b = write(Some(&base), &ctx, "b", "from-b");
        let merged = on_a.merge(&on_b);
        assert_eq!(merged.siblings.len(), 2);
        assert_eq!(merged, on_b.merge(&on_a));
        let resolved = write(Some(&merged), &merged.clock, "b", "final");
        let everywhere = merged.merge(&resolved);
        assert_eq!(everywhere.values(), vec![b"final".as_slice()]);
        assert!(everywhere.supersedes(&on_a));
    }

    #[test]
    fn tombstones_and_encoding() {
        let o1 = write(None, &VClock::new(), "a", "v");
        let del = Object::update(Some(&o1), &o1.clock, &actor("a"), None, 0).unwrap();
        assert!(del.is_deleted());
        assert!(del.values().is_empty());
        let bytes = del.to_bytes();
        assert_eq!(Object::from_bytes(&bytes).unwrap(), del);
        assert!(Object::from_bytes(&[0xc1, 0xff]).is_err());
    }

    #[test]
    fn counters_past_the_bound_are_refused_and_never_made() {
        let o1 = write(None, &VClock::new(), "a", "v");
        // A context at or past the bound: the write is refused, nothing
        // wraps around or panics, whatever the counter.
        for c in [MAX_COUNTER, MAX_COUNTER + 1, u64::MAX - 1, u64::MAX] {
            let ctx: VClock = [(actor("a"), c)].into_iter().collect();
            let err = Object::update(Some(&o1), &ctx, &actor("a"), None, 0);
            assert_eq!(err, Err(UpdateError::ClockFull), "{c}");
            let local = Object {
                clock: ctx.clone(),
                siblings: Vec::new(),
            };
            let err = Object::update(Some(&local), &VClock::new(), &actor("a"), None, 0);
            assert_eq!(err, Err(UpdateError::ClockFull), "{c}");
        }
        // One below the bound: the write makes a counter at the bound, which
        // is still valid everywhere.
        let ctx: VClock = [(actor("a"), MAX_COUNTER - 1)].into_iter().collect();
        let at = Object::update(Some(&o1), &ctx, &actor("a"), None, 0).unwrap();
        assert_eq!(at.clock.get("a"), MAX_COUNTER);
        assert!(at.validate().is_ok() && at.check_counters().is_ok());
        // A clock past the bound (from a peer or a file) is refused.
        let mut past = o1.clone();
        past.clock.add(&Dot {
            actor: actor("b"),
            counter: MAX_COUNTER + 1,
        });
        let want = Err(ObjectError::CounterTooLarge(MAX_COUNTER + 1));
        assert_eq!(past.validate(), want);
        assert_eq!(past.check_counters(), want);
        assert_eq!(validate_clock(&past.clock), want);
        assert_eq!(validate_clock(&at.clock), Ok(()));
    }

    #[test]
    fn sibling_cap_refuses_write() {
        let mut o: Option<Object> = None;
        for i in 0..SIBLINGS_MAX {
            o = Some(write(o.as_ref(), &VClock::new(), "a", &i.to_string()));
        }
        let full = o.unwrap();
        assert_eq!(full.siblings.len(), SIBLINGS_MAX);
        let err = Object::update(Some(&full), &VClock::new(), &actor("a"), None, 0);
        assert!(matches!(err, Err(UpdateError::TooManySiblings(_))));
        // Writing with the full context still works and collapses them.
        assert!(Object::update(Some(&full), &full.clock, &actor("a"), None, 0).is_ok());
    }

    /// A random history: replicas write (each replica is its own actor, with
    /// a context taken from some replica's copy or empty) and sync pairwise.
    #[derive(Debug, Clone)]
    enum Op {
        Write {
            replica: usize,
            ctx_from: Option<usize>,
        },
        Sync {
            from: usize,
            to: usize,
        },
        /// The replica loses its copy but keeps its actor (a damaged disk
        /// without a new epoch): its next write reuses a dot.
        Forget {
            replica: usize,
        },
        /// The replica restarts with a new epoch (a new actor) and keeps its
        /// copy; only the pruning histories ([`live`]) use it.
        Restart {
            replica: usize,
        },
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            (0usize..3, proptest::option::of(0usize..3))
                .prop_map(|(replica, ctx_from)| Op::Write { replica, ctx_from }),
            (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
        ];
        proptest::collection::vec(op, 0..40)
    }

    fn ops_with_forgetting() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0usize..3, proptest::option::of(0usize..3))
                .prop_map(|(replica, ctx_from)| Op::Write { replica, ctx_from }),
            4 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
            1 => (0usize..3).prop_map(|replica| Op::Forget { replica }),
        ];
        proptest::collection::vec(op, 0..40)
    }

    /// Runs the history; returns the replicas and, per write, its dot and the
    /// context it was written with.
    fn run(ops: &[Op]) -> (Vec<Option<Object>>, Vec<(Dot, VClock)>) {
        let mut replicas: Vec<Option<Object>> = vec![None, None, None];
        let mut writes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { replica, ctx_from } => {
                    let ctx = ctx_from
                        .and_then(|r| replicas[r].as_ref().map(|o| o.clock.clone()))
                        .unwrap_or_default();
                    let name = format!("r{replica}");
                    let o = write(replicas[replica].as_ref(), &ctx, &name, &i.to_string());
                    let dot = o
                        .siblings
                        .iter()
                        .map(|s| s.dot.clone())
                        .max_by_key(|d| if d.actor == name { d.counter } else { 0 });
                    writes.push((dot.unwrap(), ctx));
                    replicas[replica] = Some(o);
                }
                Op::Sync { from, to } => {
                    replicas[to] =
                        Object::merge_opt(replicas[to].as_ref(), replicas[from].as_ref());
                }
                // Only a copy that another replica fully holds is lost (the
                // writes were acknowledged by more than their actor).
                Op::Forget { replica } => {
                    let held_elsewhere = (0..3).any(|o| {
                        o != replica
                            && match (&replicas[o], &replicas[replica]) {
                                (Some(other), Some(mine)) => other.supersedes(mine),
                                (_, None) => true,
                                (None, Some(_)) => false,
                            }
                    });
                    if held_elsewhere {
                        replicas[replica] = None;
                    }
                }
                // Epochs do not matter without pruning.
                Op::Restart { .. } => {}
            }
        }
        (replicas, writes)
    }

    fn merge_all(r: &[Option<Object>]) -> Option<Object> {
        r.iter().fold(None, |acc: Option<Object>, o| {
            Object::merge_opt(acc.as_ref(), o.as_ref())
        })
    }

    #[test]
    fn a_reused_dot_with_another_value_is_kept_as_a_sibling() {
        // V wrote "b" as V:2 and replicated it; V lost that record, kept its
        // epoch, and wrote "c" as V:2 again.
        let a = write(None, &VClock::new(), "V", "a");
        let b = write(Some(&a), &a.clock, "V", "b");
        let c = write(Some(&a), &a.clock, "V", "c");
        assert_eq!(b.siblings[0].dot, c.siblings[0].dot);
        let bc = b.merge(&c);
        assert_eq!(bc.values(), vec![b"b".as_slice(), b"c".as_slice()]);
        assert_eq!(bc, c.merge(&b));
        let merged = b.merge_checked(&c).unwrap();
        assert_eq!(merged.new_conflicts, vec![b.siblings[0].dot.clone()]);
        // Merging again reports nothing new, and converges.
        let again = merged.object.merge_checked(&b).unwrap();
        assert!(again.new_conflicts.is_empty());
        assert_eq!(again.object, merged.object);
        assert_eq!(merged.object.conflicted_dots().count(), 1);
        assert!(merged.object.validate().is_ok());
        // A write with the context of the merged read resolves both.
        let resolved = write(Some(&bc), &bc.clock, "W", "d");
        assert_eq!(bc.merge(&resolved).values(), vec![b"d".as_slice()]);
    }

    #[test]
    fn merge_is_linear_and_bounded() {
        let actor = |i: usize| format!("a{i:05}");
        let big = |from: usize, n: usize| {
            let mut o = Object::default();
            for i in from..from + n {
                let dot = Dot {
                    actor: actor(i),
                    counter: 1,
                };
                o.clock.add(&dot);
                o.siblings.push(Sibling {
                    dot,
                    value: Some(vec![1]),
                    written_ms: 0,
                    expires_ms: None,
                    counter: None,
                });
            }
            o
        };
        // 40,000 siblings: refused by validation, and merging is fast anyway.
        let huge = big(0, 40_000);
        assert_eq!(huge.validate(), Err(ObjectError::TooManySiblings(40_000)));
        let started = std::time::Instant::now();
        let m = huge.merge(&big(20_000, 40_000));
        assert_eq!(m.siblings.len(), 60_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(matches!(
            huge.merge_checked(&Object::default()),
            Err(ObjectError::TooManySiblings(_))
        ));
        let ok = big(0, SIBLINGS_HARD_MAX / 2);
        assert!(
            ok.merge_checked(&big(100_000, SIBLINGS_HARD_MAX / 2))
                .is_ok()
        );
        assert!(ok.merge_checked(&big(100_000, SIBLINGS_HARD_MAX)).is_err());
    }

    #[test]
    fn validation_refuses_malformed_objects() {
        let o = write(None, &VClock::new(), "a", "v");
        assert!(o.validate().is_ok());
        let mut uncovered = o.clone();
        uncovered.clock = VClock::new();
        assert_eq!(uncovered.validate(), Err(ObjectError::DotNotCovered));
        let mut dup = o.clone();
        dup.siblings.push(dup.siblings[0].clone());
        assert_eq!(dup.validate(), Err(ObjectError::Unsorted));
        let mut long = o.clone();
        long.clock.add(&Dot {
            actor: "x".repeat(MAX_ACTOR_LEN + 1),
            counter: 1,
        });
        assert_eq!(
            long.validate(),
            Err(ObjectError::BadActor(MAX_ACTOR_LEN + 1))
        );
        let mut fat = o;
        fat.siblings[0].value = Some(vec![0; crate::config::MAX_VALUE_LEN + 1]);
        assert!(matches!(fat.validate(), Err(ObjectError::ValueTooLarge(_))));
    }

    fn lives() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0usize..3, proptest::option::of(0usize..3))
                .prop_map(|(replica, ctx_from)| Op::Write { replica, ctx_from }),
            3 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
            2 => (0usize..3).prop_map(|replica| Op::Restart { replica }),
        ];
        proptest::collection::vec(op, 0..80)
    }

    /// Each replica's copy, each replica's current actor, each write's dot
    /// and context.
    type History = (Vec<Option<Object>>, Vec<String>, Vec<(Dot, VClock)>);

    /// Runs a history with restarts and pruning; returns each replica's copy
    /// and current actor, and each write's dot and context.
    fn live(ops: &[Op]) -> History {
        let mut replicas: Vec<Option<Object>> = vec![None, None, None];
        let mut epochs = [1u64, 1, 1];
        let actor = |r: usize, e: u64| format!("r{r}/{e:08x}");
        let mut writes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { replica, ctx_from } => {
                    let ctx = ctx_from
                        .and_then(|r| replicas[r].as_ref().map(|o| o.clock.clone()))
                        .unwrap_or_default();
                    let me = actor(replica, epochs[replica]);
                    let mut o = write(replicas[replica].as_ref(), &ctx, &me, &i.to_string());
                    let dot = o
                        .siblings
                        .iter()
                        .filter(|s| s.dot.actor == me)
                        .map(|s| s.dot.clone())
                        .max()
                        .unwrap();
                    o.prune(&me, u64::MAX);
                    writes.push((dot, ctx));
                    replicas[replica] = Some(o);
                }
                Op::Sync { from, to } => {
                    let mut m = Object::merge_opt(replicas[to].as_ref(), replicas[from].as_ref());
                    if let Some(m) = &mut m {
                        m.prune(&actor(to, epochs[to]), u64::MAX);
                    }
                    replicas[to] = m;
                }
                Op::Restart { replica } => epochs[replica] += 1,
                Op::Forget { .. } => unreachable!("not generated here"),
            }
        }
        let actors = (0..3).map(|r| actor(r, epochs[r])).collect();
        (replicas, actors, writes)
    }

    #[test]
    fn prune_keeps_recent_and_pinned_epochs_and_foreign_names() {
        let named = |pairs: &[(&str, u64)]| -> VClock {
            pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()
        };
        // Epochs are start times (hex): a/10 retired at 0x20, a/20 at 0x30, ...
        let mut c = named(&[
            ("a/10", 5),
            ("a/20", 3),
            ("a/30", 1),
            ("a/40", 2),
            ("a/50", 1),
            ("b/07", 1),
            ("plain", 4),
        ]);
        // Everything retired long ago: the three most recent stay, and the
        // pinned a/10; a/20 goes; a name not node/epoch stays.
        let mut all_old = c.clone();
        assert_eq!(all_old.prune(|a| a == "a/10", u64::MAX), 1);
        assert_eq!(
            all_old.to_string(),
            "{a/10:5, a/30:1, a/40:2, a/50:1, b/07:1, plain:4}"
        );
        // Cut-off 0x35 (epochs are hex): a/30 and a/40 are kept
        // (three most recent), a/20 retired at 0x30 goes, ...
        let mut recent = c.clone();
        assert_eq!(recent.prune(|_| false, 0x35), 2);
        assert_eq!(
            recent.to_string(),
            "{a/30:1, a/40:2, a/50:1, b/07:1, plain:4}"
        );
        // ... and with the cut-off before every retirement, nothing goes.
        assert_eq!(c.prune(|_| false, 5), 0);
        // Never more than EPOCHS_MAX per node, however recent.
        let mut many: VClock = (1..=20u64).map(|e| (format!("n/{e:x}"), 1)).collect();
        assert_eq!(many.prune(|_| false, 0), 20 - crate::vclock::EPOCHS_MAX);
        assert_eq!(many.len(), crate::vclock::EPOCHS_MAX);
        assert!(many.get("n/14") > 0 && many.get("n/1") == 0);
        // The common case: nothing to do.
        assert_eq!(
            many.prune(|_| false, u64::MAX),
            crate::vclock::EPOCHS_MAX - 3
        );
        assert_eq!(many.prune(|_| false, u64::MAX), 0);
    }

    proptest! {
        #[test]
        fn merge_laws_and_no_loss_survive_reused_dots(ops in ops_with_forgetting()) {
            let (r, writes) = run(&ops);
            let (a, b, c) = (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default(), r[2].clone().unwrap_or_default());
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
            for o in [&a, &b, &c] {
                prop_assert!(o.validate().is_ok());
            }
            if let Some(all) = merge_all(&r) {
                // A write whose dot was reused is still there unless some
                // write's context covered that dot.
                for (dot, _) in &writes {
                    let present = all.siblings.iter().any(|s| &s.dot == dot);
                    let superseded = writes.iter().any(|(_, ctx)| ctx.covers(dot));
                    prop_assert!(present || superseded, "write {:?} lost", dot);
                }
            }
        }

        #[test]
        fn pruned_clocks_stay_bounded_lose_nothing_and_converge(ops in lives()) {
            let (mut r, actors, writes) = live(&ops);
                        for o in r.iter().flatten() {
                prop_assert!(o.validate().is_ok());
                // Per node: its three most recent epochs, plus epochs whose
                // dot a sibling carries.
                for node in ["r0", "r1", "r2"] {
                    let entries = o.clock.iter().filter(|(a, _)| a.starts_with(&format!("{node}/"))).count();
                    let pinned = o.siblings.iter().filter(|s| s.dot.actor.starts_with(&format!("{node}/"))).count();
                    prop_assert!(entries <= crate::vclock::EPOCHS_KEPT + pinned, "{}", o.clock);
                }
            }
            // Pruning never loses a write: each is present or was seen.
            if let Some(all) = merge_all(&r) {
                for (dot, _) in &writes {
                    let present = all.siblings.iter().any(|s| &s.dot == dot);
                    let superseded = writes.iter().any(|(_, ctx)| ctx.covers(dot));
                    prop_assert!(present || superseded, "write {:?} lost", dot);
                }
            }
            // A full exchange (twice round) makes every replica equal.
            for _ in 0..2 {
                for to in 0..3 {
                    for from in 0..3 {
                        let mut m = Object::merge_opt(r[to].as_ref(), r[from].as_ref());
                        if let Some(m) = &mut m {
                            m.prune(&actors[to], u64::MAX);
                        }
                        r[to] = m;
                    }
                }
            }
            prop_assert_eq!(&r[0], &r[1]);
            prop_assert_eq!(&r[1], &r[2]);
        }

        #[test]
        fn object_merge_laws(ops in ops()) {
            let (r, _) = run(&ops);
            let (a, b, c) = (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default(), r[2].clone().unwrap_or_default());
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
            prop_assert!(a.merge(&b).supersedes(&a));
        }

        #[test]
        fn no_write_is_lost_without_being_seen(ops in ops()) {
            let (r, writes) = run(&ops);
            let all = r.iter().fold(None, |acc: Option<Object>, o| Object::merge_opt(acc.as_ref(), o.as_ref()));
            if let Some(all) = all {
                for (dot, _) in &writes {
                    let present = all.siblings.iter().any(|s| &s.dot == dot);
                    // Absent only if some write's context covered it (a client saw it).
                    let superseded = writes.iter().any(|(_, ctx)| ctx.covers(dot));
                    prop_assert!(present || superseded, "write {:?} lost", dot);
                }
                // Surviving siblings are pairwise concurrent: no write's
                // context covers another survivor.
                for s in &all.siblings {
                    let covered_by_survivor = all.siblings.iter().any(|t| {
                        t.dot != s.dot && writes.iter().any(|(d, ctx)| d == &t.dot && ctx.covers(&s.dot))
                    });
                    prop_assert!(!covered_by_survivor);
                }
            }
        }

        /// The read path's pick, made without copies, is `resolve`'s:
        /// ties of time and dot, tombstones, expired versions, counters.
        #[test]
        fn a_plain_reads_pick_is_resolves(
            siblings in prop::collection::vec(
                (0u8..3, 1u64..4, prop::option::of(prop::collection::vec(any::<u8>(), 0..3)),
                 0u64..4, prop::option::of(0u64..8), 0u8..6),
                0..6),
            now in 0u64..8,
        ) {
            let siblings: Vec<Sibling> = siblings
                .into_iter()
                .map(|(a, n, value, written_ms, expires_ms, kind)| Sibling {
                    dot: Dot { actor: format!("n{a}"), counter: n },
                    value: if kind == 0 { None } else { value },
                    written_ms,
                    expires_ms,
                    // One in six a counter.
                    counter: (kind == 5).then(|| Counter([(format!("n{a}"), (n, 0))].into())),
                })
                .collect();
            let o = Object { clock: VClock::default(), siblings };
            let r = o.resolve(now);
            if let Some((i, live)) = o.pick_index(now) {
                prop_assert_eq!(live, r.values.len());
                prop_assert_eq!(i.and_then(|i| o.siblings[i].value.clone()), r.pick.clone());
                prop_assert_eq!(i.and_then(|i| o.siblings[i].expires_ms), r.expires_ms);
            } else {
                prop_assert!(r.is_counter || o.siblings.iter().any(|s| s.counter.is_some()));
            }
            prop_assert_eq!(o.into_pick(now), (r.pick, r.values.len()));
        }
    }
}
