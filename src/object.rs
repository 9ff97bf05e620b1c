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

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::vclock::{Actor, Dot, VClock};

/// Riak warns at 25 siblings; distro-db logs a warning from this count on.
pub const SIBLINGS_WARN: usize = 25;
/// Riak refuses writes at 100 siblings; so does distro-db: the client must
/// resolve the siblings (write with the context of a read) first.
pub const SIBLINGS_MAX: usize = 100;

/// One concurrent version of a key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that made this version.
    pub dot: Dot,
    /// The value; `None` is a tombstone (a delete).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Wall-clock milliseconds at the actor when written (informational only;
    /// never used to decide which version wins).
    pub written_ms: u64,
}

/// A key's versioned state on one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Every write this object has seen (including overwritten ones).
    pub clock: VClock,
    /// The surviving, pairwise concurrent versions, sorted by dot.
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
    /// The context's counter for this actor is at its maximum (a forged token).
    #[error("the context token is not one this cluster issued")]
    BadContext,
    /// The siblings' values together would exceed the object size limit.
    #[error(
        "the key's siblings would hold {0} bytes (the limit is {limit}); resolve them with VGET and CTX first",
        limit = crate::config::MAX_OBJECT_VALUE_BYTES
    )]
    TooLarge(usize),
}

impl Object {
    /// Applies a write made by `actor` whose client had seen `context`.
    ///
    /// `local` is the actor's own copy. Siblings covered by `context` are
    /// superseded; the others stay. The new sibling's counter is above
    /// anything the actor or the context knows for this actor.
    pub fn update(
        local: Option<&Object>,
        context: &VClock,
        actor: &Actor,
        value: Option<Vec<u8>>,
        written_ms: u64,
    ) -> Result<Object, UpdateError> {
        let empty = Object::default();
        let local = local.unwrap_or(&empty);
        let counter = local
            .clock
            .get(actor)
            .max(context.get(actor))
            .checked_add(1)
            .ok_or(UpdateError::BadContext)?;
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
        let bytes: usize = siblings
            .iter()
            .map(|s| s.value.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            + value.as_ref().map_or(0, Vec::len);
        if bytes > crate::config::MAX_OBJECT_VALUE_BYTES {
            return Err(UpdateError::TooLarge(bytes));
        }
        let mut clock = local.clock.merged(context);
        clock.add(&dot);
        siblings.push(Sibling {
            dot,
            value,
            written_ms,
        });
        siblings.sort_by(|a, b| a.dot.cmp(&b.dot));
        Ok(Object { clock, siblings })
    }

    /// Joins two copies of the same key.
    ///
    /// A sibling survives when the other copy holds it too, or has not seen
    /// its dot at all; a sibling the other copy has seen and dropped was
    /// superseded there.
    pub fn merge(&self, other: &Object) -> Object {
        let mut siblings: Vec<Sibling> = Vec::new();
        for s in &self.siblings {
            if other.has_dot(&s.dot) || !other.clock.covers(&s.dot) {
                siblings.push(s.clone());
            }
        }
        for s in &other.siblings {
            if !self.has_dot(&s.dot) && !self.clock.covers(&s.dot) {
                siblings.push(s.clone());
            }
        }
        siblings.sort_by(|a, b| a.dot.cmp(&b.dot));
        siblings.dedup_by(|a, b| a.dot == b.dot);
        Object {
            clock: self.clock.merged(&other.clock),
            siblings,
        }
    }

    /// Merges an optional copy into an optional copy.
    pub fn merge_opt(a: Option<&Object>, b: Option<&Object>) -> Option<Object> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        }
    }

    fn has_dot(&self, dot: &Dot) -> bool {
        self.siblings.iter().any(|s| &s.dot == dot)
    }

    /// The live values (tombstones left out), in dot order.
    pub fn values(&self) -> Vec<&[u8]> {
        self.siblings
            .iter()
            .filter_map(|s| s.value.as_deref())
            .collect()
    }

    /// True when every surviving version is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(|s| s.value.is_none())
    }

    /// True when `self` has seen everything `other` has (so `other` adds
    /// nothing): merging `other` in would leave `self` unchanged.
    pub fn supersedes(&self, other: &Object) -> bool {
        &self.merge(other) == self
    }

    /// Encodes for storage or the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings, integers and byte vectors
        // into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Decodes bytes written by [`Object::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Object, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    /// Bytes of values held (for size limits).
    pub fn value_bytes(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| s.value.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// A 32-bit tag of the key a context token was read from, so a token
/// pasted onto another key is refused instead of covering that key's writes.
fn key_tag(key: &[u8]) -> u32 {
    (crate::ring::key_hash(key) >> 32) as u32
}

/// Encodes the causal context of `key` as the opaque token clients pass
/// back (`CTX=`): base64url of msgpack `(key tag, clock)`.
pub fn encode_context(key: &[u8], clock: &VClock) -> String {
    let bytes = rmp_serde::to_vec(&(key_tag(key), clock)).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a context token for `key`; a clear error for anything that is
/// not a token, or is a token of another key.
pub fn decode_context(key: &[u8], token: &str) -> Result<VClock, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| "invalid context token (not base64url)".to_string())?;
    let (tag, clock): (u32, VClock) =
        rmp_serde::from_slice(&bytes).map_err(|_| "invalid context token".to_string())?;
    if tag != key_tag(key) {
        return Err(
            "context token belongs to another key (use the CTX of a VGET of this key)".into(),
        );
    }
    Ok(clock)
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
    fn tombstones_and_tokens() {
        let o1 = write(None, &VClock::new(), "a", "v");
        let del = Object::update(Some(&o1), &o1.clock, &actor("a"), None, 0).unwrap();
        assert!(del.is_deleted());
        assert!(del.values().is_empty());
        let token = encode_context(b"k", &del.clock);
        assert_eq!(decode_context(b"k", &token).unwrap(), del.clock);
        assert!(
            decode_context(b"other", &token)
                .unwrap_err()
                .contains("another key")
        );
        assert!(decode_context(b"k", "not a token!").is_err());
        assert!(decode_context(b"k", "AAAA").is_err());
        // A forged counter at its maximum is refused, not wrapped around.
        let forged: VClock = [(actor("a"), u64::MAX)].into_iter().collect();
        let err = Object::update(Some(&o1), &forged, &actor("a"), None, 0);
        assert_eq!(err, Err(UpdateError::BadContext));
        let bytes = del.to_bytes();
        assert_eq!(Object::from_bytes(&bytes).unwrap(), del);
        assert!(Object::from_bytes(&[0xc1, 0xff]).is_err());
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
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            (0usize..3, proptest::option::of(0usize..3))
                .prop_map(|(replica, ctx_from)| Op::Write { replica, ctx_from }),
            (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
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
            }
        }
        (replicas, writes)
    }

    proptest! {
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
    }
}
