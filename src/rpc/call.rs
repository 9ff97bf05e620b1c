//! Typed peer calls: each request is paired with the answer it expects, and
//! the one place that turns a [`Response`] into that answer is here.
//!
//! [`ask`] sends a request and decodes the answer as the type the caller
//! names (`ask::<Stored>`, `ask::<Acked>`, ...). A `Response::Error` becomes
//! [`CallError::Remote`] with the typed error intact (a forwarded write
//! needs to tell "unknown" from "invalid"); any other variant than the one
//! expected is [`CallError::BadAnswer`]. Callers never match on `Response`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_bytes::ByteBuf;

use super::message::{Reason, RemoteError};
use super::transport::{RpcError, Shared, Transport};
use super::{Request, Response};
use crate::object::Object;
use crate::vclock::Dot;
use crate::write::Done;

/// Why a typed call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The transport failed (never sent, timed out, connection lost...).
    #[error("{0}")]
    Rpc(#[from] RpcError),
    /// The peer answered with an error.
    #[error("{0}")]
    Remote(RemoteError),
    /// The peer answered something this request does not expect.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

impl CallError {
    /// True when the request certainly never reached the peer.
    pub fn never_sent(&self) -> bool {
        matches!(self, CallError::Rpc(e) if e.never_sent())
    }

    /// The quorum reason this failure stands for.
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Rpc(e) => e.reason(),
            CallError::Remote(e) => Reason::Remote(e.to_string()),
            CallError::BadAnswer(m) => Reason::BadAnswer(m.clone()),
        }
    }
}

/// An answer type: what one kind of request expects back.
pub trait Answer: Sized {
    /// Decodes the answer; `Err` carries a description of what came instead.
    fn decode(r: Response) -> Result<Self, String>;
}

/// Sends `req` to `to` and decodes the answer as `A`.
pub async fn ask<A: Answer>(
    transport: &dyn Transport,
    to: SocketAddr,
    req: &Request,
    timeout: Duration,
) -> Result<A, CallError> {
    answer(transport.call(to, req, timeout).await?)
}

/// A response as the answer `A`, or why it is not one.
fn answer<A: Answer>(r: Response) -> Result<A, CallError> {
    match r {
        Response::Error(e) => Err(CallError::Remote(e)),
        r => A::decode(r).map_err(CallError::BadAnswer),
    }
}

/// [`ask`] with a request several calls share (encoded once for them all).
pub async fn ask_shared<A: Answer>(
    transport: &dyn Transport,
    to: SocketAddr,
    req: &Shared,
    timeout: Duration,
) -> Result<A, CallError> {
    answer(transport.call_shared(to, req, timeout).await?)
}

fn unexpected(r: &Response) -> String {
    let text = format!("{r:?}");
    text.chars().take(200).collect()
}

/// Answer to [`Request::Get`]: a replica's copy, checked before use.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored(pub Option<Object>);

impl Answer for Stored {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Object(Some(o)) => match o.validate() {
                Ok(()) => Ok(Stored(Some(o))),
                Err(e) => Err(format!("invalid copy: {e}")),
            },
            Response::Object(None) => Ok(Stored(None)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::Digest`]: the digest of a replica's copy, or (when
/// it holds hints for the key) the merged copy itself, checked before use.
#[derive(Debug, Clone, PartialEq)]
pub enum Fingerprint {
    /// The digest of the stored copy's encoding; `None`: no copy.
    Digest(Option<u64>),
    /// The copy, as [`Request::Get`] answers it.
    Copy(Option<Object>),
}

impl Answer for Fingerprint {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Digest(d) => Ok(Fingerprint::Digest(d)),
            r @ Response::Object(_) => Stored::decode(r).map(|Stored(o)| Fingerprint::Copy(o)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::Replicate`] and [`Request::Shutdown`]: done, with
/// the dots a merge found carrying two different values.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    /// Dots newly found reused.
    pub conflicts: Vec<Dot>,
}

impl Answer for Acked {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Ack { conflicts } => Ok(Acked { conflicts }),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::DigestMany`]: one answer per key, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Digests(pub Vec<super::message::DigestAnswer>);

impl Answer for Digests {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Digests(d) => Ok(Digests(d)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::ReplicateMany`]: each copy's outcome, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged(pub Vec<Result<Vec<Dot>, RemoteError>>);

impl Answer for Merged {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Merged(m) => Ok(Merged(m)),
            other => Err(unexpected(&other)),
        }
    }
}

impl Answer for Done {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Written(done) => Ok(done),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::ScanPartition`].
#[derive(Debug, Clone, PartialEq)]
pub struct Keys(pub Vec<Vec<u8>>);

impl Answer for Keys {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Keys(keys) => Ok(Keys(keys.into_iter().map(ByteBuf::into_vec).collect())),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::AaeRoots`] and [`Request::AaeBuckets`].
#[derive(Debug, Clone, PartialEq)]
pub struct Hashes(pub Vec<u64>);

impl Answer for Hashes {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Hashes(h) => Ok(Hashes(h)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::AaeKeys`]: `(key, digest)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDigests(pub Vec<(Vec<u8>, u64)>);

impl Answer for KeyDigests {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::KeyDigests(d) => Ok(KeyDigests(
                d.into_iter().map(|(k, h)| (k.into_vec(), h)).collect(),
            )),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::Inspect`]: a node's own copy and its hints, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The node's own copy.
    pub own: Option<Object>,
    /// Hints it holds for the key, by owner.
    pub hints: Vec<(String, Object)>,
}

impl Answer for Inspection {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Inspected { own, hints } => {
                for o in own.iter().chain(hints.iter().map(|(_, o)| o)) {
                    o.validate().map_err(|e| format!("invalid copy: {e}"))?;
                }
                Ok(Inspection { own, hints })
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::GcPrepare`]: ready for phase 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcReady(pub bool);

impl Answer for GcReady {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::GcReady(b) => Ok(GcReady(b)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::GcDelete`]: the key is gone there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcDeleted(pub bool);

impl Answer for GcDeleted {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::GcDeleted(b) => Ok(GcDeleted(b)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::LayoutGet`]: the encoded layout, empty if none.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutBytes(pub Vec<u8>);

impl Answer for LayoutBytes {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Layout(b) => Ok(LayoutBytes(b.into_vec())),
            other => Err(unexpected(&other)),
        }
    }
}

/// Answer to [`Request::FetchMany`]: each key's copy, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects(pub Vec<Option<Object>>);

impl Answer for Objects {
    fn decode(r: Response) -> Result<Self, String> {
        match r {
            Response::Objects(objects) => {
                for o in objects.iter().flatten() {
                    o.validate().map_err(|e| format!("invalid copy: {e}"))?;
                }
                Ok(Objects(objects))
            }
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_their_own_variant_only() {
        assert_eq!(
            Acked::decode(Response::ack()).unwrap(),
            Acked {
                conflicts: Vec::new()
            }
        );
        assert_eq!(
            Stored::decode(Response::Object(None)).unwrap(),
            Stored(None)
        );
        let err = Stored::decode(Response::ack()).unwrap_err();
        assert!(err.contains("Ack"), "{err}");
        assert!(Keys::decode(Response::Hashes(vec![1])).is_err());
        assert_eq!(
            Hashes::decode(Response::Hashes(vec![1])).unwrap(),
            Hashes(vec![1])
        );
        let remote = CallError::Remote(RemoteError::Invalid("no".into()));
        assert!(!remote.never_sent());
        assert!(matches!(remote.reason(), Reason::Remote(_)));
        assert!(CallError::Rpc(RpcError::Dropped).never_sent());
    }
}
