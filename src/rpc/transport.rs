//! The transport seam: every request a node sends to a peer goes through
//! [`Transport::call`], and every request it receives goes to a
//! [`Handler`], so the TCP implementation ([`super::tcp`]), the
//! in-memory one used by deterministic tests ([`super::memory`]) and the
//! fault-injecting wrapper ([`crate::fault::FaultyTransport`]) are
//! interchangeable without touching the coordinator.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::frame::{Encoded, FrameError};
use super::message::Reason;
use super::{Request, Response};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The connection could not be opened: the request was never sent.
    #[error("connection refused or unreachable: {0}")]
    Connect(std::io::Error),
    /// No complete answer within the call's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed mid-call.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame, or the request could
    /// not be encoded.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The traffic was dropped on purpose (fault injection).
    #[error("dropped by fault injection")]
    Dropped,
    /// Too many requests already in flight to that peer (back-pressure).
    #[error("too many requests in flight to that peer")]
    Overloaded,
}

impl RpcError {
    /// True when the request certainly never reached the peer.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            RpcError::Connect(_) | RpcError::Dropped | RpcError::Overloaded
        )
    }

    /// The quorum reason this error stands for.
    pub fn reason(&self) -> Reason {
        match self {
            RpcError::Timeout(_) => Reason::Timeout,
            RpcError::Dropped => Reason::Dropped,
            RpcError::Overloaded => Reason::Overloaded,
            RpcError::Connect(e) | RpcError::Io(e) => Reason::Unreachable(e.to_string()),
            RpcError::Frame(e) => Reason::BadAnswer(e.to_string()),
        }
    }
}

/// Answers the requests peers send: what a transport's server side hands
/// each incoming request to ([`crate::coordinator::service::PeerService`]
/// in a node). Keeps `rpc` a transport only: it knows messages, not what
/// they do.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    async fn handle(&self, req: Request) -> Response;

    /// Answers requests that arrived together (replica writes a connection
    /// read at once: [`Request::batchable`]), in their order. The default
    /// answers each on its own, all at once; a handler that can share work
    /// among them (one wait for the log sync that covers them all) should.
    async fn handle_batch(&self, reqs: Vec<Request>) -> Vec<Response> {
        futures::future::join_all(reqs.into_iter().map(|r| self.handle(r))).await
    }
}

/// Sends requests to peers.
/// A request sent alike to several peers (a write's copy to each replica),
/// encoded at most once for all of them: encoding a copy was ~5% of a
/// coordinator's instructions per write, paid once per replica.
#[derive(Debug)]
pub struct Shared {
    request: Request,
    /// `None` when it does not encode: each call then reports why.
    /// Shared with the connections' write queues until written.
    encoded: std::sync::OnceLock<Option<std::sync::Arc<Encoded>>>,
}

impl Shared {
    /// `request`, not encoded yet.
    pub fn new(request: Request) -> Shared {
        Shared {
            request,
            encoded: std::sync::OnceLock::new(),
        }
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Its encoding, made by the first call that asks.
    pub fn encoded(&self) -> Option<&std::sync::Arc<Encoded>> {
        self.encoded
            .get_or_init(|| {
                Encoded::new(&self.request, self.request.encoded_size_hint())
                    .ok()
                    .map(std::sync::Arc::new)
            })
            .as_ref()
    }
}

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` to the node at `to` and waits at most `timeout` for its
    /// answer. The request is encoded before the first await, so callers can
    /// share one request among many calls.
    async fn call(
        &self,
        to: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RpcError>;

    /// [`Transport::call`] with a request several calls share: a transport
    /// that encodes requests encodes it once for all of them.
    async fn call_shared(
        &self,
        to: SocketAddr,
        req: &Shared,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        self.call(to, req.request(), timeout).await
    }

    /// True when the last attempt to connect to `to` failed, recently (the
    /// failure detector may not have noticed yet). Used to keep a node that
    /// is certainly unreachable out of the slot map clients fail over with.
    fn unreachable(&self, _to: SocketAddr) -> bool {
        false
    }
}
