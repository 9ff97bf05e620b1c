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

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::Api;
use crate::api::resp::Frame;
use crate::fault::Faults;
use crate::limits::{ByteBudget, ServerLimits, Slots};
use crate::rpc::frame::PREAMBLE;

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
    /// Stops every session.
    pub shutdown: CancellationToken,
}

/// Accepts connections until `port.shutdown` fires.
pub async fn serve(port: Port, listener: TcpListener) {
    let slots = Slots::new(&port.limits);
    let budget = ByteBudget::new(port.limits.request_bytes);
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
                tokio::spawn(async move {
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
    mut stream: TcpStream,
    slots: Slots,
    budget: ByteBudget,
    pending: OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    let n = tokio::select! {
        _ = port.shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(port.limits.first_byte_timeout, stream.read(&mut first)) => {
            r.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no first byte"))??
        }
    };
    drop(pending);
    if n == 0 {
        return Ok(());
    }
    if first[0] == PREAMBLE[0] {
        let Some(_slot) = Slots::take(&slots.peers) else {
            warn!("too many peer connections; closing one");
            return Ok(());
        };
        return crate::rpc::tcp::serve(stream, &port.peers, budget, port.faults, port.shutdown)
            .await;
    }
    let Some(_slot) = Slots::take(&slots.clients) else {
        let reply = Frame::err("max number of clients reached");
        let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
        return Ok(());
    };
    crate::api::session::serve(port.api, stream, first[0], budget, port.shutdown).await
}
