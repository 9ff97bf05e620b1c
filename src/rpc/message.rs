//! Messages between nodes. Keys and values travel as msgpack `bin`.

use serde::{Deserialize, Serialize};

use crate::object::Object;
use crate::vclock::VClock;

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with [`Response::Pong`].
    Ping,
    /// Read the replica's copy of a key.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Merge this copy into the replica's copy (replication, read repair).
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
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value; `None` deletes.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        /// The client's context; `None` means "what the actor has seen".
        context: Option<VClock>,
        /// Acknowledgements required.
        w: usize,
    },
    /// Stop this node's process (the REPL's KILL, and QUIT for each node).
    Shutdown,
    /// Anti-entropy: the partition roots of the tree shared with `peer`.
    AaeRoots {
        /// The asking node.
        peer: String,
    },
    /// Anti-entropy: the bucket hashes of one partition.
    AaeLeaves {
        /// The asking node.
        peer: String,
        /// Partition index.
        partition: u8,
    },
    /// Anti-entropy: `(key, digest)` of the keys in these buckets.
    AaeKeys {
        /// The asking node.
        peer: String,
        /// Partition index.
        partition: u8,
        /// Bucket indexes.
        buckets: Vec<u8>,
    },
}

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
    /// Done.
    Ack,
    /// Answer to [`Request::AaeRoots`] and [`Request::AaeLeaves`].
    Hashes(Vec<u64>),
    /// Answer to [`Request::AaeKeys`].
    KeyDigests(Vec<(serde_bytes::ByteBuf, u64)>),
    /// Answer to [`Request::Inspect`].
    Inspected {
        /// The node's own copy.
        own: Option<Object>,
        /// Hints it holds for the key, by owner.
        hints: Vec<(String, Object)>,
    },
    /// Answer to [`Request::Put`].
    Written {
        /// True when the key had a live value before this write.
        existed: bool,
    },
    /// The request failed; `unknown` is true when a write may still land.
    Error {
        /// Human-readable reason.
        message: String,
        /// True when the outcome of a write is unknown (missed quorum).
        unknown: bool,
    },
}
