//! The observability port of a node (`--metrics ADDR`): one small HTTP
//! listener, apart from the data port, that serves
//!
//! - `/metrics`: Prometheus/OpenMetrics text ([`metrics`]);
//! - `/health`: 200 while the process serves;
//! - `/ready`: 200 once the node's storage is open, it knows the ring and
//!   is a member of it; 503 with the reason otherwise ([`Observer::readiness`]);
//! - `/`: the status page (HTML and JS from the binary, no external asset),
//!   which polls `/status.json` ([`status`]).
//!
//! The listener starts before the node opens its stores, so `/health`
//! answers and `/ready` says "starting" while a large log is recovered.
//! Everything it shows is read at request time from the counters the node
//! keeps anyway (relaxed atomics); the request path pays only for the
//! counters added for it: requests by command and outcome
//! ([`requests`]), the coordinator's latency histograms and the group
//! commit's fsync histograms ([`histogram`]).
//!
//! - [`http`]: the bounded HTTP/1.1 responder (GET and HEAD only).

pub mod histogram;
pub mod http;
pub mod metrics;
pub mod requests;
pub mod status;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::limits::{ByteBudget, Slots};
use crate::workers::gc::GcStats;
use crate::workers::transfer::TransferStats;

/// What the port reads, once the node is built.
pub struct Sources {
    /// Every handle the client API has (coordinator, replica, hints, ...).
    pub api: Arc<Api>,
    /// Partition transfers.
    pub transfers: Arc<TransferStats>,
    /// Tombstone collection.
    pub gc: Arc<GcStats>,
    /// The data port's connection slots.
    pub slots: Slots,
    /// The data port's request-memory budget.
    pub budget: ByteBudget,
}

/// The state the observability port serves from.
pub struct Observer {
    /// The node's id (known before its parts are).
    node_id: String,
    /// When the process started serving this port.
    started: Instant,
    /// Set once the node's parts are built (its stores are open).
    sources: OnceLock<Sources>,
    /// Set when the node begins to stop.
    stopping: AtomicBool,
}

impl Observer {
    /// An observer for node `node_id`, whose parts are not built yet.
    pub fn new(node_id: &str) -> Observer {
        Observer {
            node_id: node_id.to_string(),
            started: Instant::now(),
            sources: OnceLock::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Hands over the node's parts (once; a second call is ignored).
    pub fn attach(&self, sources: Sources) {
        let _ = self.sources.set(sources);
    }

    /// Says the node is stopping (it is no longer ready).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The node's parts, once built.
    pub fn sources(&self) -> Option<&Sources> {
        self.sources.get()
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Seconds since the port started.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `Ok` when the node should get traffic: its stores are open and
    /// writable, it follows a layout (the ring is known), it is a member of
    /// that layout, and it is not stopping. Otherwise the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("stopping".into());
        }
        let Some(s) = self.sources() else {
            return Err("starting: opening the stores (recovery may take a while)".into());
        };
        if s.api.replica.store().status().poisoned() {
            return Err("the store failed a sync and refuses writes".into());
        }
        let view = s.api.coordinator.view();
        let layout = view.layout();
        if layout.version == 0 {
            return Err("no layout yet: the cluster is forming (the ring is not known)".into());
        }
        let me = s.api.coordinator.me();
        if !layout.current.members().iter().any(|m| m == me) {
            return Err(format!(
                "not a member of layout version {} yet (joining)",
                layout.version
            ));
        }
        Ok(())
    }
}

/// Binds `addr` and serves the observability port on it until `shutdown`;
/// returns the bound address (port 0 picks a free one).
pub async fn start(
    addr: SocketAddr,
    observer: Arc<Observer>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for --metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let handler: http::Handler = Arc::new(move |req: &http::Request| route(&observer, req));
    tokio::spawn(http::serve(listener, handler, shutdown));
    Ok(bound)
}

/// The port's pages.
fn route(observer: &Observer, req: &http::Request) -> http::Response {
    match req.path.as_str() {
        "/metrics" => http::Response::new(200, metrics::CONTENT_TYPE, metrics::render(observer)),
        "/health" => http::Response::text(200, "ok\n"),
        "/ready" => match observer.readiness() {
            Ok(()) => http::Response::text(200, "ready\n"),
            Err(why) => http::Response::text(503, format!("not ready: {why}\n")),
        },
        "/status.json" => {
            http::Response::new(200, "application/json", status::json(observer).to_string())
        }
        "/" | "/index.html" => {
            http::Response::new(200, "text/html; charset=utf-8", status::PAGE.to_string())
        }
        _ => http::Response::text(
            404,
            "not found: this port serves /, /metrics, /health, /ready and /status.json\n",
        ),
    }
}
