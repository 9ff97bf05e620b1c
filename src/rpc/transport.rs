//! The transport seam for outgoing peer calls, and its TCP implementation.
//!
//! Everything a node sends to a peer goes through [`Transport::call`], so a
//! fault-injecting or simulated transport can wrap or replace the TCP one
//! without touching the coordinator. [`TcpTransport`] keeps a small pool of
//! idle connections per peer, bounds every call by a timeout (connect, write
//! and read together) and drops a connection whose call failed or timed out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, FrameError, PREAMBLE};
use super::{Request, Response};

/// Idle connections kept per peer.
const MAX_IDLE_PER_PEER: usize = 16;
/// An idle connection older than this is dropped rather than reused, well
/// before the server's idle timeout could close it under us.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

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
    /// The peer sent bytes that are not a valid frame.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The traffic was dropped on purpose (fault injection).
    #[error("dropped by fault injection")]
    Dropped,
}

impl RpcError {
    /// True when the request certainly never reached the peer.
    pub fn never_sent(&self) -> bool {
        matches!(self, RpcError::Connect(_) | RpcError::Dropped)
    }
}

/// Sends requests to peers.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` to the node at `to` and waits at most `timeout` for its answer.
    async fn call(
        &self,
        to: SocketAddr,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, RpcError>;
}

/// Peer RPC over TCP with pooled connections.
#[derive(Debug, Default)]
pub struct TcpTransport {
    idle: Mutex<HashMap<SocketAddr, Vec<(Instant, TcpStream)>>>,
    next_id: AtomicU64,
    /// This node's advertised address, sent with every request.
    from: Option<SocketAddr>,
}

impl TcpTransport {
    /// A transport for the node at `from`, with an empty pool.
    pub fn new(from: SocketAddr) -> Self {
        TcpTransport {
            from: Some(from),
            ..Self::default()
        }
    }

    fn checkout(&self, to: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(&to)?;
        while let Some((at, stream)) = conns.pop() {
            if at.elapsed() < MAX_IDLE_AGE && still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn checkin(&self, to: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(to).or_default();
        if conns.len() < MAX_IDLE_PER_PEER {
            conns.push((Instant::now(), stream));
        }
    }

    async fn call_inner(&self, to: SocketAddr, req: Request) -> Result<Response, RpcError> {
        let mut stream = match self.checkout(to) {
            Some(s) => s,
            None => {
                let mut s = TcpStream::connect(to).await.map_err(RpcError::Connect)?;
                s.set_nodelay(true)?;
                s.write_all(&PREAMBLE).await?;
                s
            }
        };
        let reusable = !matches!(req, Request::Shutdown);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(self.from, id, &req)?;
        stream.write_all(&bytes).await?;
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await?;
        let len = frame::frame_len(&head)?;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        let env = frame::decode_payload::<Response>(&payload)?;
        if env.id != id {
            return Err(RpcError::Frame(FrameError::Malformed(format!(
                "response id {} does not match request id {id}",
                env.id
            ))));
        }
        // A node that was asked to stop closes its connections.
        if reusable {
            self.checkin(to, stream);
        }
        Ok(env.body)
    }
}

/// True when an idle pooled connection has not been closed by its peer (a
/// restarted or stopped node): reading it would block rather than see EOF.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[async_trait]
impl Transport for TcpTransport {
    async fn call(
        &self,
        to: SocketAddr,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        match tokio::time::timeout(timeout, self.call_inner(to, req)).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout(timeout)),
        }
    }
}
