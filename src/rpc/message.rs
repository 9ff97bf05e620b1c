//! Messages between nodes, and the typed errors that cross the wire. Keys
//! and values travel as msgpack `bin`.

use serde::{Deserialize, Serialize};

use crate::config::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::keyspace::{BUCKETS, PARTITIONS};
use crate::object::Object;
use crate::vclock::{Dot, VClock};
use crate::write::{Done, Write};

/// Longest node id a peer may name (the same bound `Config::validate` sets).
pub const MAX_NODE_ID_LEN: usize = 64;

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with [`Response::Pong`].
    Ping,
    /// Read the replica's copy of a key (merged with any hint held for it).
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Merge this copy into the replica's copy (replication, read repair,
    /// hint delivery, anti-entropy).
    Replicate {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The copy to merge in.
        object: Object,
        /// Set when the receiver stands in for this owner (sloppy quorum):
        /// it keeps the copy as a hint and hands it off later.
        hint: Option<String>,
    },
    /// Show what this node stores for a key: its own copy and any hints.
    Inspect {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Coordinate a write as its actor: sent by a node that is not a replica
    /// of the key to one that is.
    Write {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What to write.
        write: Write,
        /// The client's context; `None` means "what the actor has seen".
        context: Option<VClock>,
        /// Acknowledgements required.
        w: usize,
    },
    /// Stop this node's process (the REPL's KILL, and QUIT for each node).
    Shutdown,
    /// The keys of a partition that hold a value (`SCAN`, `KEYS`).
    ScanPartition {
        /// Partition index.
        partition: u16,
    },
    /// Anti-entropy: the root of each of these partitions' summaries.
    AaeRoots {
        /// Partition indexes.
        partitions: Vec<u16>,
    },
    /// Anti-entropy: the bucket hashes of one partition.
    AaeBuckets {
        /// Partition index.
        partition: u16,
    },
    /// Anti-entropy: `(key, digest)` of the keys in these buckets.
    AaeKeys {
        /// Partition index.
        partition: u16,
        /// Bucket indexes.
        buckets: Vec<u8>,
    },
    /// The layout this node follows (answered with [`Response::Layout`]).
    LayoutGet,
    /// Layout changes for the claimant to make (join, leave, remove).
    LayoutChange {
        /// The changes, made together in one new version.
        changes: Vec<crate::cluster::layout::Change>,
        /// Make them even where a safety check would refuse (REMOVE of a
        /// node that looks live).
        force: bool,
    },
    /// The replica copies of these keys (a transfer of a partition to a
    /// new owner); answered with [`Response::Objects`].
    FetchMany {
        /// The keys, at most [`MAX_FETCH_KEYS`].
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// Tombstone collection, phase 1: an owner merges this tombstone in; every
    /// node answers whether it holds exactly it and no hint for the key
    /// ([`Response::GcReady`]).
    GcPrepare {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The tombstone to be collected.
        object: Object,
    },
    /// Tombstone collection, phase 2: delete the key here if its copy is
    /// still the tombstone with this digest ([`Response::GcDeleted`]).
    GcDelete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The digest of the tombstone's encoding.
        digest: u64,
    },
    /// A digest read: the digest of the replica's stored copy of a key
    /// ([`Response::Digest`]), or the copy itself ([`Response::Object`])
    /// when hints held for the key make the answer a merge.
    Digest {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Merge these copies into the replica, in order (the copies of the
    /// writes one coordinator made in the same turn, sent to each replica
    /// as one frame); answered with [`Response::Merged`], one result per
    /// copy, after one log sync that covers them all.
    ReplicateMany {
        /// `(key, copy)` pairs, at most [`MAX_REPLICATE_COPIES`].
        copies: Vec<(serde_bytes::ByteBuf, Object)>,
    },
    /// Digest reads of these keys (the digest reads one coordinator made of
    /// this replica in the same turn); answered with [`Response::Digests`],
    /// each key's answer as [`Request::Digest`] would give it.
    DigestMany {
        /// The keys, at most [`MAX_FETCH_KEYS`].
        keys: Vec<serde_bytes::ByteBuf>,
    },
}

impl Request {
    /// Whether a peer's server may hand this request to
    /// [`crate::rpc::Handler::handle_batch`] with others of its kind read at
    /// the same time: replica writes, whose answers all wait for the same
    /// log sync anyway.
    pub fn batchable(&self) -> bool {
        matches!(self, Request::Replicate { .. })
    }

    /// About how many bytes the request's encoding takes, so that its frame
    /// buffer is allocated once instead of growing field by field (a
    /// replicated write grew it about eight times).
    pub fn encoded_size_hint(&self) -> usize {
        const ENVELOPE: usize = 96;
        ENVELOPE
            + match self {
                Request::Get { key } | Request::Digest { key } | Request::Inspect { key } => {
                    key.len()
                }
                Request::Replicate { key, object, hint } => {
                    key.len() + object.encoded_size_hint() + hint.as_ref().map_or(0, String::len)
                }
                Request::Write { key, write, .. } => key.len() + write.value_len() + 64,
                Request::DigestMany { keys } => keys.iter().map(|k| k.len() + 4).sum(),
                Request::ReplicateMany { copies } => copies
                    .iter()
                    .map(|(key, object)| key.len() + object.encoded_size_hint() + 8)
                    .sum(),
                _ => 64,
            }
    }
}

/// Keys one [`Request::FetchMany`] may ask for.
pub const MAX_FETCH_KEYS: usize = 1024;
/// Changes one [`Request::LayoutChange`] may carry.
pub const MAX_CHANGES: usize = 256;
/// Copies one [`Request::ReplicateMany`] may carry.
pub const MAX_REPLICATE_COPIES: usize = 1024;

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The answering node's id.
        node_id: String,
    },
    /// Answer to [`Request::Get`].
    Object(Option<Object>),
    /// Done. For a [`Request::Replicate`], the dots the merge found carrying
    /// two different values (the sender checks whether one is its own).
    Ack {
        /// Dots newly found reused.
        conflicts: Vec<Dot>,
    },
    /// Answer to [`Request::AaeRoots`] and [`Request::AaeBuckets`].
    Hashes(Vec<u64>),
    /// Answer to [`Request::AaeKeys`].
    KeyDigests(Vec<(serde_bytes::ByteBuf, u64)>),
    /// Answer to [`Request::ScanPartition`].
    Keys(Vec<serde_bytes::ByteBuf>),
    /// Answer to [`Request::Inspect`].
    Inspected {
        /// The node's own copy.
        own: Option<Object>,
        /// Hints it holds for the key, by owner.
        hints: Vec<(String, Object)>,
    },
    /// Answer to [`Request::Write`].
    Written(Done),
    /// Answer to [`Request::LayoutGet`]: the encoded layout (empty when
    /// this node has none yet).
    Layout(serde_bytes::ByteBuf),
    /// Answer to [`Request::FetchMany`]: each key's copy, in order.
    Objects(Vec<Option<Object>>),
    /// Answer to [`Request::GcPrepare`].
    GcReady(bool),
    /// Answer to [`Request::GcDelete`]: the key is gone here.
    GcDeleted(bool),
    /// The request failed.
    Error(RemoteError),
    /// Answer to [`Request::Digest`]: [`crate::keyspace::digest`] of the
    /// stored copy's encoding (`None`: no copy).
    Digest(Option<u64>),
    /// Answer to [`Request::ReplicateMany`]: for each copy, in order, the
    /// dots its merge found reused (as in [`Response::Ack`]), or why it was
    /// not stored.
    Merged(Vec<Result<Vec<Dot>, RemoteError>>),
    /// Answer to [`Request::DigestMany`]: one answer per key, in order.
    Digests(Vec<DigestAnswer>),
}

/// One key's answer in a [`Response::Digests`]: what [`Request::Digest`]
/// answers for it (a flat type, so an answer cannot nest answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DigestAnswer {
    /// As [`Response::Digest`].
    Digest(Option<u64>),
    /// As [`Response::Object`].
    Object(Option<Object>),
    /// As [`Response::Error`].
    Error(RemoteError),
}

impl Response {
    /// A plain acknowledgement.
    pub fn ack() -> Response {
        Response::Ack {
            conflicts: Vec::new(),
        }
    }
}

/// Why one replica did not contribute to a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// No answer within the request's time.
    Timeout,
    /// The connection could not be opened or broke.
    Unreachable(String),
    /// The traffic was dropped on purpose (fault injection).
    Dropped,
    /// The node answered with an error.
    Remote(String),
    /// The node answered something that is not a valid answer.
    BadAnswer(String),
    /// Too many requests already in flight to that node.
    Overloaded,
    /// The local store failed.
    Store(String),
    /// Still unanswered when the quorum could no longer be met.
    NoAnswer,
    /// A stand-in holds no copy and no hint of the key: it knows nothing
    /// of it, so its "none" is not a vote in a read quorum.
    StandInEmpty,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Timeout => f.write_str("timed out"),
            Reason::Unreachable(e) => write!(f, "unreachable ({e})"),
            Reason::Dropped => f.write_str("dropped by fault injection"),
            Reason::Remote(e) => write!(f, "answered: {e}"),
            Reason::BadAnswer(e) => write!(f, "bad answer: {e}"),
            Reason::Overloaded => f.write_str("too many requests in flight"),
            Reason::Store(e) => write!(f, "local store failed: {e}"),
            Reason::NoAnswer => f.write_str("no answer yet when the quorum could no longer be met"),
            Reason::StandInEmpty => f.write_str("a stand-in with no copy of the key (not a vote)"),
        }
    }
}

/// One replica that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFailure {
    /// The node id.
    pub node: String,
    /// Why.
    pub reason: Reason,
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.node, self.reason)
    }
}

/// A quorum that was not met: how many were needed, how many answered, and
/// why each of the others did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumFailure {
    /// R or W.
    pub needed: usize,
    /// Successful answers.
    pub got: usize,
    /// The replicas that failed.
    pub failures: Vec<NodeFailure>,
}

impl std::fmt::Display for QuorumFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} required replicas answered",
            self.got, self.needed
        )?;
        if self.failures.is_empty() {
            f.write_str(" (no replica failed before the time ran out)")
        } else {
            let parts: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
            write!(f, " ({})", parts.join("; "))
        }
    }
}

/// An error a node answers with, typed so that the caller can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The request was malformed or out of bounds; it was not applied.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The write was refused before anything was stored.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// Fewer than W acknowledged: the write may still surface.
    #[error("write outcome unknown: {0}; the write may still be applied")]
    WriteUnknown(QuorumFailure),
    /// Fewer than R answered.
    #[error("read quorum not met: {0}")]
    ReadQuorum(QuorumFailure),
    /// The local store failed.
    #[error("storage error: {0}")]
    Store(String),
    /// A stand-in refused to keep a hint: its hint storage is at a cap
    /// (`--max-hints-per-node`, `--max-hint-bytes`); nothing was stored.
    #[error("{0}")]
    HintsFull(String),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
}

impl Request {
    /// Checks every field as strictly as the client path does: key and
    /// value sizes, quorum bounds (`n` is this node's replication factor),
    /// node ids, anti-entropy indexes, and every object carried (its
    /// siblings, clock and sizes). A request that fails is answered with an
    /// error and never applied.
    pub fn validate(&self, n: usize) -> Result<(), String> {
        let key_ok = |key: &[u8]| {
            if key.len() > MAX_KEY_LEN {
                Err(format!(
                    "key too large: {} bytes (the limit is {MAX_KEY_LEN})",
                    key.len()
                ))
            } else {
                Ok(())
            }
        };
        let partition_ok = |p: u16| {
            if usize::from(p) >= PARTITIONS {
                Err(format!("partition {p} is out of range"))
            } else {
                Ok(())
            }
        };
        match self {
            Request::Ping | Request::Shutdown | Request::LayoutGet => Ok(()),
            Request::LayoutChange { changes, .. } => {
                if changes.is_empty() || changes.len() > MAX_CHANGES {
                    return Err(format!("1 to {MAX_CHANGES} layout changes at once"));
                }
                match changes
                    .iter()
                    .find(|c| !crate::identity::valid_id(c.node()))
                {
                    Some(c) => Err(format!("invalid node id {:?}", c.node())),
                    None => Ok(()),
                }
            }
            Request::GcPrepare { key, object } => {
                key_ok(key)?;
                object.validate().map_err(|e| e.to_string())?;
                if !object.is_deleted() {
                    return Err("only a tombstone can be collected".into());
                }
                Ok(())
            }
            Request::GcDelete { key, .. } => key_ok(key),
            Request::FetchMany { keys } | Request::DigestMany { keys } => {
                if keys.len() > MAX_FETCH_KEYS {
                    return Err(format!("at most {MAX_FETCH_KEYS} keys per fetch"));
                }
                keys.iter().try_for_each(|k| key_ok(k))
            }
            Request::Get { key } | Request::Inspect { key } | Request::Digest { key } => {
                key_ok(key)
            }
            Request::Replicate { key, object, hint } => {
                key_ok(key)?;
                if let Some(owner) = hint
                    && (owner.is_empty() || owner.len() > MAX_NODE_ID_LEN)
                {
                    return Err(format!("hint owner must be 1 to {MAX_NODE_ID_LEN} bytes"));
                }
                object.validate().map_err(|e| e.to_string())
            }
            Request::ReplicateMany { copies } => {
                if copies.is_empty() || copies.len() > MAX_REPLICATE_COPIES {
                    return Err(format!("1 to {MAX_REPLICATE_COPIES} copies at once"));
                }
                copies.iter().try_for_each(|(key, object)| {
                    key_ok(key)?;
                    object.validate().map_err(|e| e.to_string())
                })
            }
            Request::Write {
                key,
                write,
                context,
                w,
            } => {
                key_ok(key)?;
                if write.value_len() > MAX_VALUE_LEN {
                    return Err(format!(
                        "value too large: {} bytes (the limit is {MAX_VALUE_LEN})",
                        write.value_len()
                    ));
                }
                if *w == 0 || *w > n {
                    return Err(format!("W={w} is outside 1..={n}"));
                }
                match context.as_ref().map(crate::object::validate_clock) {
                    Some(Err(e)) => Err(format!("context: {e}")),
                    _ => Ok(()),
                }
            }
            Request::AaeRoots { partitions } => {
                if partitions.len() > PARTITIONS {
                    return Err("too many partitions".into());
                }
                partitions.iter().try_for_each(|p| partition_ok(*p))
            }
            Request::AaeBuckets { partition } | Request::ScanPartition { partition } => {
                partition_ok(*partition)
            }
            Request::AaeKeys { partition, buckets } => {
                partition_ok(*partition)?;
                if buckets.len() > BUCKETS || buckets.iter().any(|b| usize::from(*b) >= BUCKETS) {
                    return Err("bucket index out of range".into());
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_requests_are_validated_like_client_requests() {
        let put = |w| Request::Write {
            key: b"k".to_vec(),
            write: Write::value(Some(b"v".to_vec())),
            context: None,
            w,
        };
        assert!(put(2).validate(3).is_ok());
        assert!(put(0).validate(3).unwrap_err().contains("W=0"));
        assert!(put(4).validate(3).is_err());
        let big_key = Request::Get {
            key: vec![0; MAX_KEY_LEN + 1],
        };
        assert!(big_key.validate(3).unwrap_err().contains("key too large"));
        let mut object = Object::update(None, &VClock::new(), &"a/1".into(), Some(vec![1]), 0)
            .expect("one sibling");
        object.clock = VClock::new();
        let bad = Request::Replicate {
            key: b"k".to_vec(),
            object,
            hint: None,
        };
        assert!(bad.validate(3).is_err());
        let buckets = Request::AaeKeys {
            partition: 0,
            buckets: vec![200],
        };
        assert!(buckets.validate(3).is_err());
        assert!(Request::AaeBuckets { partition: 5000 }.validate(3).is_err());
        let empty_hint = Request::Replicate {
            key: b"k".to_vec(),
            object: Object::default(),
            hint: Some(String::new()),
        };
        assert!(empty_hint.validate(3).is_err());
        let copy = |key: Vec<u8>| {
            let object = Object::update(None, &VClock::new(), &"a/1".into(), Some(vec![1]), 0)
                .expect("one sibling");
            (serde_bytes::ByteBuf::from(key), object)
        };
        let many = |copies| Request::ReplicateMany { copies };
        assert!(many(vec![copy(b"k".to_vec()); 3]).validate(3).is_ok());
        assert!(many(Vec::new()).validate(3).is_err(), "no copy");
        let too_many = many(vec![copy(b"k".to_vec()); MAX_REPLICATE_COPIES + 1]);
        assert!(too_many.validate(3).is_err());
        let big = many(vec![copy(b"k".to_vec()), copy(vec![0; MAX_KEY_LEN + 1])]);
        assert!(big.validate(3).unwrap_err().contains("key too large"));
        let mut bad_copy = copy(b"k".to_vec());
        bad_copy.1.clock = VClock::new();
        assert!(
            many(vec![copy(b"k".to_vec()), bad_copy])
                .validate(3)
                .is_err()
        );
    }

    #[test]
    fn forged_clocks_in_peer_requests_are_refused() {
        use crate::vclock::{Dot, MAX_COUNTER};
        let forged: VClock = [("a/1".to_string(), u64::MAX)].into_iter().collect();
        let write = Request::Write {
            key: b"k".to_vec(),
            write: Write::value(Some(b"v".to_vec())),
            context: Some(forged.clone()),
            w: 1,
        };
        assert!(write.validate(3).unwrap_err().contains("above the bound"));
        // A replicated copy whose clock (and dot) sit past the bound.
        let mut object = Object::update(None, &VClock::new(), &"a/1".into(), Some(vec![1]), 0)
            .expect("one sibling");
        object.clock.merge(&forged);
        object.siblings[0].dot = Dot {
            actor: "a/1".into(),
            counter: u64::MAX,
        };
        let replicate = Request::Replicate {
            key: b"k".to_vec(),
            object: object.clone(),
            hint: None,
        };
        assert!(
            replicate
                .validate(3)
                .unwrap_err()
                .contains("above the bound")
        );
        let mut tombstone = Object::update(None, &VClock::new(), &"a/1".into(), None, 0).unwrap();
        tombstone.clock.add(&Dot {
            actor: "b/1".into(),
            counter: MAX_COUNTER + 1,
        });
        let gc = Request::GcPrepare {
            key: b"k".to_vec(),
            object: tombstone,
        };
        assert!(gc.validate(3).is_err());
        // At the bound is still a clock.
        let at: VClock = [("a/1".to_string(), MAX_COUNTER)].into_iter().collect();
        let write = Request::Write {
            key: b"k".to_vec(),
            write: Write::value(Some(b"v".to_vec())),
            context: Some(at),
            w: 1,
        };
        assert!(write.validate(3).is_ok());
    }

    #[test]
    fn quorum_failures_say_who_and_why() {
        let f = QuorumFailure {
            needed: 2,
            got: 1,
            failures: vec![NodeFailure {
                node: "n2".into(),
                reason: Reason::Timeout,
            }],
        };
        let e = RemoteError::WriteUnknown(f);
        assert_eq!(
            e.to_string(),
            "write outcome unknown: 1 of 2 required replicas answered (n2: timed out); the write may still be applied"
        );
        let bytes = rmp_serde::to_vec(&e).unwrap();
        assert_eq!(rmp_serde::from_slice::<RemoteError>(&bytes).unwrap(), e);
    }

    #[test]
    fn a_full_hint_storage_crosses_the_wire_typed() {
        let e = RemoteError::HintsFull(
            "hint storage full for n2: 5 hints held (--max-hints-per-node 5)".into(),
        );
        let bytes = rmp_serde::to_vec(&Response::Error(e.clone())).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Response>(&bytes).unwrap(),
            Response::Error(e.clone())
        );
        assert_eq!(
            e.to_string(),
            "hint storage full for n2: 5 hints held (--max-hints-per-node 5)"
        );
    }
}
