//! The TCP port of a node: one port for both protocols, and the admission
//! rules that keep any one client or peer from starving the node.
//!
//! Each accepted connection must send its first byte within the first-byte
//! timeout; that byte tells the protocols apart: the peer preamble (`0xD7`,
//! see [`crate::rpc::frame`]) starts a peer connection
//! ([`crate::rpc::tcp::serve`]), anything else a client session
//! ([`crate::api::session`]). Clients and peers draw on separate connection
//! slots ([`crate::limits`]), so clients can never take the peers' share;
//! a client over the limit is told so. Accepting never waits for a slot.
//!
//! With a certificate ([`crate::tls`]) the port speaks TLS only: the TLS
//! handshake comes first, and the first byte is read inside TLS; a peer
//! preamble is then accepted only on a connection whose handshake made it a
//! peer's (the peer ALPN and a certificate of the cluster's CA).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::Api;
use crate::api::resp::Frame;
use crate::fault::Faults;
use crate::limits::{ByteBudget, ServerLimits, Slots};
use crate::rpc::frame::PREAMBLE;
use crate::tls::{NodeTls, Stream};

/// Time allowed to write the "max clients" refusal.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the port serves, and its limits.
#[derive(Clone)]
pub struct Port {
    /// Client commands.
    pub api: Arc<Api>,
    /// Peer requests, behind the peer handshake.
    pub peers: Arc<crate::rpc::tcp::PeerDoor>,
    /// Fault-injection rules (for incoming peer requests).
    pub faults: Arc<Faults>,
    /// Connection and memory limits.
    pub limits: ServerLimits,
    /// The connection slots (made from `limits`; shared with the metrics).
    pub slots: Slots,
    /// The request-memory budget (made from `limits`; shared with the metrics).
    pub budget: ByteBudget,
    /// Stops every session.
    pub shutdown: CancellationToken,
    /// TLS (none: plain text).
    pub tls: Option<Arc<NodeTls>>,
    /// Every connection's task, so a stop can wait for sessions to drain.
    pub tasks: tokio_util::task::TaskTracker,
}

/// Accepts connections until `port.shutdown` fires.
pub async fn serve(port: Port, listener: TcpListener) {
    let (slots, budget) = (port.slots.clone(), port.budget.clone());
    info!(
        max_clients = port.limits.max_clients,
        peer_connections = port.limits.peer_connections,
        request_bytes = port.limits.request_bytes,
        "accepting connections"
    );
    loop {
        let accepted = tokio::select! {
            _ = port.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(pending) = Slots::take(&slots.pending) else {
                    debug!(%peer, "too many connections waiting for their first byte; closing");
                    continue;
                };
                let (port, slots, budget) = (port.clone(), slots.clone(), budget.clone());
                port.tasks.clone().spawn(async move {
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = connection(port, stream, slots, budget, pending).await {
                        debug!(%peer, cause = %e, "connection closed");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                warn!(cause = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!("listener stopped");
}

async fn connection(
    port: Port,
    tcp: TcpStream,
    slots: Slots,
    budget: ByteBudget,
    pending: OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut stream = match &port.tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let accepted = tokio::select! {
                _ = port.shutdown.cancelled() => return Ok(()),
                s = tls.accept(tcp) => s,
            };
            match accepted {
                Some(s) => s,
                None => return Ok(()),
            }
        }
    };
    let first = tokio::select! {
        _ = port.shutdown.cancelled() => return Ok(()),
        r = stream.first_byte(port.limits.first_byte_timeout) => r?,
    };
    drop(pending);
    let Some(first) = first else {
        return Ok(());
    };
    if first == PREAMBLE[0] {
        if port.tls.is_some() && !stream.is_tls_peer() {
            debug!(
                "a peer preamble on a client's TLS connection (peers offer the peer ALPN and a certificate); closing"
            );
            return Ok(());
        }
        let Some(_slot) = Slots::take(&slots.peers) else {
            warn!("too many peer connections; closing one");
            return Ok(());
        };
        return crate::rpc::tcp::serve(stream, &port.peers, budget, port.faults, port.shutdown)
            .await;
    }
    let Some(_slot) = Slots::take(&slots.clients) else {
        let reply = Frame::err("max number of clients reached");
        let _ = crate::tls::send(&mut stream, &reply.to_bytes(), IO_TIMEOUT).await;
        return Ok(());
    };
    crate::api::session::serve(port.api, stream, first, budget, port.shutdown).await
}
