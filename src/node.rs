//! A node: builds every part from a [`Config`], runs it, and stops it.
//!
//! A node owns its local [`Replica`], its [`Membership`], the peer
//! [`Transport`] and the TCP listener (see [`crate::server`]). Stopping is
//! cooperative: one [`CancellationToken`] tells every loop to end; the node
//! then announces `status=stopping` through gossip so peers route around it
//! at once, and stops gossip.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::fault::{Faults, FaultyTransport};
use crate::membership::Membership;
use crate::replica::Replica;
use crate::rpc::{TcpTransport, Transport};
use crate::storage::{MemoryStore, Store};
use crate::vclock::Actor;

/// A running node's shared state.
pub struct Node {
    /// The configuration it started with (node id resolved).
    pub config: Config,
    /// The vector-clock actor for writes this node coordinates:
    /// `node-id/epoch`, where the epoch is new for every new data directory.
    pub actor: Actor,
    /// Local data.
    pub replica: Replica,
    /// Membership and liveness.
    pub membership: Membership,
    /// Outgoing peer calls.
    pub transport: Arc<dyn Transport>,
    /// Fault-injection rules (inactive unless `--fault-injection`).
    pub faults: Arc<Faults>,
    /// Fires when the node must stop: every loop ends.
    pub shutdown: CancellationToken,
    /// Fires once the stop sequence has finished.
    pub stopped: CancellationToken,
    /// Set by the first call to [`stop`].
    stopping: AtomicBool,
}

impl Node {
    /// This node's id.
    pub fn id(&self) -> &str {
        &self.config.node_id
    }
}

/// Starts a node with an in-memory store: binds its TCP port, starts gossip
/// and the server. Returns once it accepts connections.
pub async fn start(config: Config) -> anyhow::Result<Arc<Node>> {
    start_with_store(config, Arc::new(MemoryStore::new())).await
}

/// Starts a node over the given store.
pub async fn start_with_store(
    mut config: Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<Arc<Node>> {
    for w in config.validate().map_err(anyhow::Error::msg)? {
        warn!("{w}");
    }
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        config.node_id = resolve_node_id(dir, &config.node_id)?;
    }
    let epoch: u32 = rand::random();
    let actor = format!("{}/{epoch:08x}", config.node_id);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on tcp {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let faults = Faults::new(config.fault_injection);
    let membership = Membership::start(&config, faults.clone(), shutdown.clone()).await?;
    let tcp: Arc<dyn Transport> = Arc::new(TcpTransport::new(config.advertise));
    let transport: Arc<dyn Transport> = if config.fault_injection {
        warn!("fault injection is enabled: FAULT commands can cut this node off");
        Arc::new(FaultyTransport::new(tcp, faults.clone()))
    } else {
        tcp
    };
    let node = Arc::new(Node {
        actor,
        replica: Replica::new(store),
        membership,
        transport,
        faults,
        shutdown,
        stopped: CancellationToken::new(),
        stopping: AtomicBool::new(false),
        config,
    });
    info!(node = %node.id(), actor = %node.actor, addr = %node.config.advertise,
          seeds = node.config.seeds.len(), "node started");
    tokio::spawn(crate::server::serve(node.clone(), listener));
    Ok(node)
}

/// Waits until the node is told to stop (by a command, SIGINT or SIGTERM),
/// then stops it.
pub async fn run_until_stopped(node: Arc<Node>) {
    let signal = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    tokio::select! {
        _ = node.stopped.cancelled() => {}
        _ = signal => {
            info!("signal received");
            stop(&node).await;
        }
    }
}

/// Stops a node: tells peers it is stopping, then ends its loops and gossip.
pub async fn stop(node: &Node) {
    if node.stopping.swap(true, Ordering::SeqCst) {
        node.stopped.cancelled().await;
        return;
    }
    info!(node = %node.id(), "stopping");
    node.membership.announce_stopping().await;
    // One gossip round carries the news to a few peers; don't wait longer.
    tokio::time::sleep(node.config.gossip_interval).await;
    node.shutdown.cancel();
    node.membership.stop();
    node.stopped.cancel();
}

/// A data directory remembers the node id it was created for, so a restart
/// keeps its id even if started on another address (the stored id wins).
fn resolve_node_id(dir: &Path, configured: &str) -> anyhow::Result<String> {
    let file = dir.join("node-id");
    match std::fs::read_to_string(&file) {
        Ok(stored) => {
            let stored = stored.trim().to_string();
            if stored != configured {
                info!(stored = %stored, configured = %configured,
                      "data directory belongs to {stored}; keeping that node id");
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&file, format!("{configured}\n"))
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(configured.to_string())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}
