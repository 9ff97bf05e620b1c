//! An in-memory network of peer services, for deterministic tests of the
//! whole request path in one process: the coordinator, the peer service, the
//! replica and the hints are the real ones; only the sockets are replaced.
//! Every request and answer goes through the wire encoding (so what cannot
//! cross the wire fails here too). Links can be cut (a call across a cut
//! gets no answer and times out), nodes taken down (connection refused) or
//! slowed. Time is tokio's, so tests run under `tokio::time::pause`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use super::frame;
use super::transport::{Handler, RpcError, Transport};
use super::{Request, Response};

/// The shared network.
#[derive(Default)]
pub struct MemoryNetwork {
    services: RwLock<HashMap<SocketAddr, Arc<dyn Handler>>>,
    cut: RwLock<HashSet<(SocketAddr, SocketAddr)>>,
    delay: RwLock<HashMap<SocketAddr, Duration>>,
    calls: std::sync::atomic::AtomicU64,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Arc<MemoryNetwork> {
        Arc::new(MemoryNetwork::default())
    }

    /// Makes `service` reachable at `addr` (again, after [`Self::down`]).
    pub fn register(&self, addr: SocketAddr, service: Arc<dyn Handler>) {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, service);
    }

    /// Takes the node at `addr` down: calls to it are refused.
    pub fn down(&self, addr: SocketAddr) {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }

    /// Cuts the link between `a` and `b` both ways: calls get no answer.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut cut = self.cut.write().unwrap_or_else(|e| e.into_inner());
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Delays every call to `addr` by `d`.
    pub fn slow(&self, addr: SocketAddr, d: Duration) {
        self.delay
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, d);
    }

    /// Removes every cut and delay.
    pub fn heal(&self) {
        self.cut.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.delay
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The transport of the node at `from`.
    pub fn transport(self: &Arc<Self>, from: SocketAddr) -> MemoryTransport {
        MemoryTransport {
            net: self.clone(),
            from,
        }
    }
}

/// One node's view of a [`MemoryNetwork`].
pub struct MemoryTransport {
    net: Arc<MemoryNetwork>,
    from: SocketAddr,
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> Result<T, RpcError> {
    let bytes = frame::encode(None, 0, v)?;
    Ok(frame::decode::<T>(&bytes)?.0.body)
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn call(
        &self,
        to: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        self.net
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = round_trip(req)?;
        let cut = self
            .net
            .cut
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(self.from, to));
        if cut {
            tokio::time::sleep(timeout).await;
            return Err(RpcError::Timeout(timeout));
        }
        let delay = self
            .net
            .delay
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .copied();
        let service = self
            .net
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned();
        let Some(service) = service else {
            return Err(RpcError::Connect(
                std::io::ErrorKind::ConnectionRefused.into(),
            ));
        };
        let answer = async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            service.handle(req).await
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(resp) => round_trip(&resp),
            Err(_) => Err(RpcError::Timeout(timeout)),
        }
    }
}
