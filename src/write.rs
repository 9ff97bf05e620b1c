//! What a client write does to a key: the actor's read-modify-write, as a
//! pure function of its local copy, the client's context and the time.
//!
//! Every write makes one new version (one new dot) that supersedes what the
//! context covers (what the actor has seen, without a context):
//! - [`Write::Set`]: a value, with an optional deadline (`EX`, `PX`,
//!   `EXAT`, `PXAT`, or `KEEPTTL` to keep the current one) and an optional
//!   condition (`NX`, `XX`), checked against the actor's own copy only: with
//!   concurrent writers elsewhere it is best-effort, not a lock.
//! - [`Write::Delete`]: a tombstone.
//! - [`Write::Expire`]: the current content again, with a new deadline
//!   (`EXPIRE` family) or none (`PERSIST`); a deadline already past deletes.
//! - [`Write::Incr`]: a counter (a PN-counter, see [`crate::object::Counter`]): the merge of
//!   every live counter version plus this actor's change, so increments made
//!   concurrently on both sides of a partition all count.
//!
//! The reply a client gets is described by [`Done`].

use serde::{Deserialize, Serialize};

use crate::object::{Object, Payload, UpdateError};
use crate::vclock::{Actor, VClock};

/// The deadline a `SET` gives its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// No deadline (a plain `SET` clears any).
    None,
    /// This wall-clock time, in milliseconds since the Unix epoch.
    At(u64),
    /// The current value's deadline (`KEEPTTL`).
    Keep,
}

/// A condition on whether the key exists (`NX`, `XX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Always write.
    Always,
    /// Only if the key holds no value (`NX`).
    Absent,
    /// Only if the key holds a value (`XX`).
    Present,
}

/// A condition on the current deadline (`EXPIRE ... NX|XX|GT|LT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireIf {
    /// Always.
    Always,
    /// Only if the key has no deadline.
    NoTtl,
    /// Only if the key has a deadline.
    HasTtl,
    /// Only if the new deadline is later (no deadline counts as infinite).
    Later,
    /// Only if the new deadline is earlier.
    Earlier,
}

/// A write a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// `SET`.
    Set {
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Its deadline.
        ttl: Ttl,
        /// When to write it.
        cond: Condition,
    },
    /// `DEL`, `UNLINK`.
    Delete,
    /// `EXPIRE` family (`deadline: None` is `PERSIST`).
    Expire {
        /// The new deadline, in wall-clock milliseconds.
        deadline: Option<u64>,
        /// When to apply it.
        cond: ExpireIf,
    },
    /// `INCR` family.
    Incr {
        /// The change.
        by: i64,
    },
}

impl Write {
    /// A plain `SET` (no deadline, no condition), or a delete.
    pub fn value(value: Option<Vec<u8>>) -> Write {
        match value {
            Some(value) => Write::Set {
                value,
                ttl: Ttl::None,
                cond: Condition::Always,
            },
            None => Write::Delete,
        }
    }

    /// Bytes of value carried (for size limits).
    pub fn value_len(&self) -> usize {
        match self {
            Write::Set { value, .. } => value.len(),
            _ => 0,
        }
    }
}

/// What a write did, as the client is told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// False when a condition kept the write from happening.
    pub applied: bool,
    /// True when the key held a value before.
    pub existed: bool,
    /// The value the key held before (the one a plain read would pick).
    #[serde(with = "serde_bytes")]
    pub before: Option<Vec<u8>>,
    /// For a counter: its value after the write.
    pub number: Option<i64>,
}

/// Why a write is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The object rules refused it (too many siblings, too large, ...).
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// `INCR` on a value that is not an integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// `INCR` past the 64-bit range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// A write that changes the current value in place (EXPIRE, PERSIST,
    /// GETEX, INCR) on a key holding concurrent values: which one would it
    /// keep? Refused rather than dropping the others.
    #[error(
        "the key holds {0} concurrent values; read them with VGET and write the resolved value back with SET ... CTX=<token> first"
    )]
    Conflict(usize),
}

/// What a write needs of the copy it changes: [`crate::object::Resolved`]
/// without the copies of every live value (it copies only the picked one,
/// which the client may be told).
#[derive(Default)]
struct Before {
    /// The value a plain read would answer.
    pick: Option<Vec<u8>>,
    /// How many live values the key holds.
    values: usize,
    /// The picked version's deadline.
    expires_ms: Option<u64>,
    /// True when the picked value is a counter's.
    is_counter: bool,
}

impl Before {
    fn of(local: Option<&Object>, now_ms: u64) -> Before {
        let Some(o) = local else {
            return Before::default();
        };
        match o.pick_index(now_ms) {
            Some((pick, values)) => {
                let s = pick.map(|i| &o.siblings[i]);
                Before {
                    pick: s.and_then(|s| s.value.clone()),
                    values,
                    expires_ms: s.and_then(|s| s.expires_ms),
                    is_counter: false,
                }
            }
            None => {
                let r = o.resolve(now_ms);
                Before {
                    values: r.values.len(),
                    pick: r.pick,
                    expires_ms: r.expires_ms,
                    is_counter: r.is_counter,
                }
            }
        }
    }
}

/// Applies `write` as `actor` to its local copy `local`, at `now_ms`.
/// Returns the new object to store (`None` when nothing is written) and
/// what the client is told.
pub fn apply(
    local: Option<&Object>,
    context: Option<&VClock>,
    actor: &Actor,
    write: &Write,
    now_ms: u64,
) -> Result<(Option<Object>, Done), WriteError> {
    let mut before = Before::of(local, now_ms);
    let existed = before.pick.is_some();
    // Writes that change the current value in place cannot pick one of
    // several concurrent values without dropping the others.
    if matches!(write, Write::Expire { .. } | Write::Incr { .. }) && before.values > 1 {
        return Err(WriteError::Conflict(before.values));
    }
    let mut done = Done {
        applied: true,
        existed,
        // Moved, not copied: below, `done.before` is the picked value.
        before: before.pick.take(),
        number: None,
    };
    // A write without a context supersedes everything this copy holds.
    let context = context.unwrap_or_else(|| local.map_or(VClock::EMPTY, |o| &o.clock));
    let payload = match write {
        Write::Set { value, ttl, cond } => {
            let skip = match cond {
                Condition::Always => false,
                Condition::Absent => existed,
                Condition::Present => !existed,
            };
            if skip {
                done.applied = false;
                return Ok((None, done));
            }
            let expires_ms = match ttl {
                Ttl::None => None,
                Ttl::At(at) => Some(*at),
                Ttl::Keep => before.expires_ms,
            };
            Payload {
                value: Some(value.clone()),
                expires_ms,
                counter: None,
            }
        }
        Write::Delete => Payload::default(),
        Write::Expire { deadline, cond } => {
            if !existed {
                done.applied = false;
                return Ok((None, done));
            }
            let current = before.expires_ms;
            let later = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(x), Some(y)) => x > y,
                (None, Some(_)) => true,
                _ => false,
            };
            let ok = match cond {
                ExpireIf::Always => true,
                ExpireIf::NoTtl => current.is_none(),
                ExpireIf::HasTtl => current.is_some(),
                ExpireIf::Later => later(*deadline, current),
                ExpireIf::Earlier => later(current, *deadline),
            };
            // PERSIST on a key without a deadline changes nothing.
            if !ok || (deadline.is_none() && current.is_none()) {
                done.applied = false;
                return Ok((None, done));
            }
            match deadline {
                // A deadline already past deletes the key, as in Redis.
                Some(d) if *d <= now_ms => Payload::default(),
                _ => {
                    let counter = if before.is_counter {
                        local.and_then(|o| o.counter_at(now_ms))
                    } else {
                        None
                    };
                    Payload {
                        value: if counter.is_some() {
                            None
                        } else {
                            done.before.clone()
                        },
                        expires_ms: *deadline,
                        counter,
                    }
                }
            }
        }
        Write::Incr { by } => {
            let mut counter = local.and_then(|o| o.counter_at(now_ms)).unwrap_or_default();
            if counter.0.is_empty()
                && let Some(v) = &done.before
            {
                // A string holding an integer becomes a counter starting there.
                let start: i64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or(WriteError::NotAnInteger)?;
                counter
                    .add(actor, i128::from(start))
                    .ok_or(WriteError::Overflow)?;
            } else if !counter.0.is_empty() && !before.is_counter {
                // A plain value was written after the counter's last change:
                // it is what INCR applies to.
                let v = done.before.as_deref().unwrap_or_default();
                let start: i64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or(WriteError::NotAnInteger)?;
                let current = counter.value();
                counter
                    .add(actor, i128::from(start) - current)
                    .ok_or(WriteError::Overflow)?;
            }
            counter
                .add(actor, i128::from(*by))
                .ok_or(WriteError::Overflow)?;
            let value = i64::try_from(counter.value()).map_err(|_| WriteError::Overflow)?;
            done.number = Some(value);
            Payload {
                value: None,
                expires_ms: before.expires_ms,
                counter: Some(counter),
            }
        }
    };
    let object = Object::update_with(local, context, actor, payload, now_ms)?;
    Ok((Some(object), done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(v: &str) -> Write {
        Write::value(Some(v.as_bytes().to_vec()))
    }

    fn run(local: Option<&Object>, w: &Write, actor: &str, now: u64) -> (Option<Object>, Done) {
        apply(local, None, &actor.to_string(), w, now).unwrap()
    }

    #[test]
    fn set_conditions_and_get() {
        let (o, d) = run(None, &set("a"), "x", 10);
        let o = o.unwrap();
        assert!(d.applied && !d.existed);
        let nx = Write::Set {
            value: b"b".to_vec(),
            ttl: Ttl::None,
            cond: Condition::Absent,
        };
        let (none, d) = run(Some(&o), &nx, "x", 11);
        assert!(none.is_none() && !d.applied && d.before.as_deref() == Some(b"a".as_slice()));
        let xx = Write::Set {
            value: b"b".to_vec(),
            ttl: Ttl::None,
            cond: Condition::Present,
        };
        let (o2, d) = run(Some(&o), &xx, "x", 12);
        assert!(d.applied);
        assert_eq!(
            o2.unwrap().resolve(12).pick.as_deref(),
            Some(b"b".as_slice())
        );
        let (none, _) = run(None, &xx, "x", 12);
        assert!(none.is_none());
    }

    #[test]
    fn in_place_changes_of_a_key_with_siblings_are_refused_not_lossy() {
        let (a, _) = run(None, &set("apple"), "x", 1);
        let (b, _) = run(None, &set("pear"), "y", 2);
        let both = a.unwrap().merge(&b.unwrap());
        assert_eq!(both.resolve(3).values.len(), 2);
        for w in [
            Write::Expire {
                deadline: Some(100),
                cond: ExpireIf::Always,
            },
            Write::Expire {
                deadline: None,
                cond: ExpireIf::Always,
            },
            Write::Incr { by: 1 },
        ] {
            let e = apply(Some(&both), None, &"x".to_string(), &w, 3).unwrap_err();
            assert_eq!(e, WriteError::Conflict(2), "{w:?}");
        }
        // A plain SET still resolves them.
        let (o, _) = run(Some(&both), &set("salad"), "x", 4);
        assert_eq!(o.unwrap().resolve(4).values, vec![b"salad".to_vec()]);
    }

    #[test]
    fn deadlines_expire_keep_and_persist() {
        let w = Write::Set {
            value: b"v".to_vec(),
            ttl: Ttl::At(1000),
            cond: Condition::Always,
        };
        let (o, _) = run(None, &w, "x", 0);
        let o = o.unwrap();
        assert_eq!(o.resolve(999).pick.as_deref(), Some(b"v".as_slice()));
        assert_eq!(o.resolve(999).expires_ms, Some(1000));
        assert_eq!(o.resolve(1000).pick, None);
        // KEEPTTL keeps the deadline; a plain SET clears it.
        let keep = Write::Set {
            value: b"w".to_vec(),
            ttl: Ttl::Keep,
            cond: Condition::Always,
        };
        let (k, _) = run(Some(&o), &keep, "x", 10);
        assert_eq!(k.as_ref().unwrap().resolve(10).expires_ms, Some(1000));
        let (plain, _) = run(Some(&o), &set("z"), "x", 10);
        assert_eq!(
            plain.unwrap().resolve(5000).pick.as_deref(),
            Some(b"z".as_slice())
        );
        // PERSIST removes it; EXPIRE in the past deletes; EXPIRE on nothing does nothing.
        let persist = Write::Expire {
            deadline: None,
            cond: ExpireIf::Always,
        };
        let (p, d) = run(Some(&o), &persist, "x", 10);
        assert!(d.applied);
        assert_eq!(
            p.unwrap().resolve(5000).pick.as_deref(),
            Some(b"v".as_slice())
        );
        let past = Write::Expire {
            deadline: Some(5),
            cond: ExpireIf::Always,
        };
        let (gone, _) = run(Some(&o), &past, "x", 10);
        assert!(gone.unwrap().is_deleted_at(10));
        let (none, d) = run(None, &past, "x", 10);
        assert!(none.is_none() && !d.applied);
        // GT on a key without deadline: infinite is later than anything.
        let gt = Write::Expire {
            deadline: Some(50_000),
            cond: ExpireIf::Later,
        };
        let (_, d) = run(Some(&o), &gt, "x", 10);
        assert!(d.applied);
        let (p2, _) = run(Some(&o), &persist, "x", 10);
        let (_, d) = run(p2.as_ref(), &gt, "x", 10);
        assert!(!d.applied);
    }

    #[test]
    fn expired_and_live_copies_of_one_write_merge_to_the_expired_one() {
        let w = Write::Set {
            value: b"v".to_vec(),
            ttl: Ttl::At(100),
            cond: Condition::Always,
        };
        let (o, _) = run(None, &w, "x", 0);
        let live = o.unwrap();
        let mut expired = live.clone();
        assert!(expired.expire(150));
        assert!(!expired.clone().expire(150));
        assert_eq!(live.merge(&expired), expired);
        assert_eq!(expired.merge(&live), expired);
        assert!(live.merge(&expired).conflicted_dots().next().is_none());
    }

    #[test]
    fn counters_count_every_increment_even_concurrent_ones() {
        let (a, d) = run(None, &Write::Incr { by: 5 }, "x", 0);
        assert_eq!(d.number, Some(5));
        let a = a.unwrap();
        // Two sides of a partition increment from the same copy.
        let (left, _) = run(Some(&a), &Write::Incr { by: 1 }, "x", 1);
        let (right, d) = run(Some(&a), &Write::Incr { by: 10 }, "y", 1);
        assert_eq!(d.number, Some(15));
        let both = left.unwrap().merge(&right.unwrap());
        assert_eq!(both.resolve(2).pick.as_deref(), Some(b"16".as_slice()));
        assert!(!both.resolve(2).conflicted(), "counter versions merge");
        // The next increment covers both.
        let (next, d) = run(Some(&both), &Write::Incr { by: -20 }, "y", 3);
        assert_eq!(d.number, Some(-4));
        assert_eq!(next.unwrap().siblings.len(), 1);
        // INCR on a string holding an integer, and on one that does not.
        let (s, _) = run(None, &set("41"), "x", 0);
        let (_, d) = run(s.as_ref(), &Write::Incr { by: 1 }, "x", 1);
        assert_eq!(d.number, Some(42));
        let (t, _) = run(None, &set("forty"), "x", 0);
        assert_eq!(
            apply(t.as_ref(), None, &"x".into(), &Write::Incr { by: 1 }, 1),
            Err(WriteError::NotAnInteger)
        );
        let (big, _) = run(None, &set(&i64::MAX.to_string()), "x", 0);
        assert_eq!(
            apply(big.as_ref(), None, &"x".into(), &Write::Incr { by: 1 }, 1),
            Err(WriteError::Overflow)
        );
        // SET on a counter replaces it; INCR then starts from the value set.
        let (c, _) = run(Some(&both), &set("100"), "x", 5);
        let (_, d) = run(c.as_ref(), &Write::Incr { by: 1 }, "x", 6);
        assert_eq!(d.number, Some(101));
    }

    proptest! {
        /// Three replicas increment concurrently and sync at random: once all
        /// copies meet, the counter is the sum of every increment.
        #[test]
        fn concurrent_increments_all_count(
            ops in proptest::collection::vec((0usize..3, -50i64..50, proptest::option::of(0usize..3)), 1..40)
        ) {
            let mut replicas: Vec<Option<Object>> = vec![None, None, None];
            let mut total: i64 = 0;
            for (i, (r, by, sync_from)) in ops.into_iter().enumerate() {
                if let Some(from) = sync_from {
                    replicas[r] = Object::merge_opt(replicas[r].as_ref(), replicas[from].as_ref());
                }
                let (o, _) = apply(replicas[r].as_ref(), None, &format!("r{r}"), &Write::Incr { by }, i as u64).unwrap();
                replicas[r] = o;
                total += by;
            }
            let all = replicas.iter().fold(None, |acc: Option<Object>, o| Object::merge_opt(acc.as_ref(), o.as_ref())).unwrap();
            prop_assert_eq!(all.resolve(u64::MAX - 1).pick, Some(total.to_string().into_bytes()));
        }
    }
}
