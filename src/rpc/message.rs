//! Messages between nodes. Keys and values travel as msgpack `bin`.

use serde::{Deserialize, Serialize};

use crate::config::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::object::Object;
use crate::vclock::VClock;

/// Longest node id a peer may name (the same bound `Config::validate` sets).
pub const MAX_NODE_ID_LEN: usize = 64;

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
        let node_ok = |id: &str, what: &str| {
            if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
                Err(format!("{what} must be 1 to {MAX_NODE_ID_LEN} bytes"))
            } else {
                Ok(())
            }
        };
        match self {
            Request::Ping | Request::Shutdown => Ok(()),
            Request::Get { key } | Request::Inspect { key } => key_ok(key),
            Request::Replicate { key, object, hint } => {
                key_ok(key)?;
                if let Some(owner) = hint {
                    node_ok(owner, "hint owner")?;
                }
                object.validate().map_err(|e| e.to_string())
            }
            Request::Put {
                key,
                value,
                context,
                w,
            } => {
                key_ok(key)?;
                if let Some(v) = value
                    && v.len() > MAX_VALUE_LEN
                {
                    return Err(format!(
                        "value too large: {} bytes (the limit is {MAX_VALUE_LEN})",
                        v.len()
                    ));
                }
                if *w == 0 || *w > n {
                    return Err(format!("W={w} is outside 1..={n}"));
                }
                if let Some(c) = context
                    && c.len() > crate::object::MAX_CLOCK_ACTORS
                {
                    return Err("context names too many actors".into());
                }
                Ok(())
            }
            Request::AaeRoots { peer } | Request::AaeLeaves { peer, .. } => node_ok(peer, "peer"),
            Request::AaeKeys { peer, buckets, .. } => {
                node_ok(peer, "peer")?;
                if buckets.len() > crate::anti_entropy::BUCKETS
                    || buckets
                        .iter()
                        .any(|b| *b as usize >= crate::anti_entropy::BUCKETS)
                {
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
        let put = |w| Request::Put {
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
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
            peer: "p".into(),
            partition: 0,
            buckets: vec![200],
        };
        assert!(buckets.validate(3).is_err());
        let empty_hint = Request::Replicate {
            key: b"k".to_vec(),
            object: Object::default(),
            hint: Some(String::new()),
        };
        assert!(empty_hint.validate(3).is_err());
    }
}
