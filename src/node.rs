//! A node: builds every part from a [`Config`], runs it, and stops it.
//!
//! A node owns its local [`Replica`], its [`Membership`], the peer
//! [`Transport`] and the TCP listener (see [`crate::server`]). Stopping is
//! cooperative: one [`CancellationToken`] tells every loop to end; the node
//! then announces `status=stopping` through gossip so peers route around it
//! at once, and stops gossip.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::anti_entropy::Trees;
use crate::config::Config;
use crate::epoch::ActorCell;
use crate::fault::{Faults, FaultyTransport};
use crate::handoff::Hints;
use crate::membership::Membership;
use crate::replica::Replica;
use crate::rpc::{TcpTransport, Transport};
use crate::storage::{FsyncPolicy, LogOptions, LogStore, MemoryStore, Store};

/// A running node's shared state.
pub struct Node {
    /// The configuration it started with (node id resolved).
    pub config: Config,
    /// The vector-clock actor for writes this node coordinates:
    /// `node-id/epoch`, where the epoch is new whenever the node cannot vouch
    /// that its store holds every write it made (see [`crate::epoch`]).
    pub actor: Arc<ActorCell>,
    /// Local data.
    pub replica: Replica,
    /// Copies kept for other nodes (hinted handoff).
    pub hints: Hints,
    /// The store behind [`Hints`] (closed at stop).
    hints_store: Arc<dyn Store>,
    /// Anti-entropy trees (shared with the replica, which updates them).
    pub trees: Arc<Trees>,
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

/// Starts a node: opens its store (durable in `data_dir/store` when the
/// configuration has a data directory, in memory otherwise), binds its TCP
/// port, starts gossip and the server. Returns once it accepts connections.
pub async fn start(mut config: Config) -> anyhow::Result<Arc<Node>> {
    for w in config.validate().map_err(anyhow::Error::msg)? {
        warn!("{w}");
    }
    let (limits, fd_warning) =
        crate::limits::fit_to_fds(config.limits, crate::limits::raise_fd_limit());
    if let Some(w) = fd_warning {
        warn!("{w}");
    }
    config.limits = limits;
    let (store, epoch, store_dir): (Arc<dyn Store>, u32, Option<PathBuf>) = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
            let store_dir = dir.join("store");
            let started = std::time::Instant::now();
            // Opening locks the directory: a second process stops here.
            let store = open_log(&store_dir, config.fsync).await?;
            let status = store.status();
            info!(keys = status.keys, segments = status.segments, elapsed = ?started.elapsed(), "store opened");
            config.node_id = resolve_node_id(dir, &config.node_id)?;
            let report = store.recovery().unwrap_or_default();
            let (epoch, _) = crate::epoch::resolve(&store_dir, &report)
                .context("cannot decide the vector-clock epoch")?;
            (Arc::new(store), epoch, Some(store_dir))
        }
        None => (Arc::new(MemoryStore::new()), rand::random(), None),
    };
    let hints_store: Arc<dyn Store> = match &config.data_dir {
        Some(dir) => Arc::new(open_log(&dir.join("hints"), config.fsync).await?),
        None => Arc::new(MemoryStore::new()),
    };
    let hints = Hints::open(hints_store.clone()).context("cannot load hints")?;
    let actor = Arc::new(ActorCell::new(&config.node_id, epoch, store_dir));
    let trees = Arc::new(Trees::new(&config.node_id));
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
        replica: Replica::new(store, trees.clone(), actor.clone()),
        actor,
        trees,
        hints,
        hints_store,
        membership,
        transport,
        faults,
        shutdown,
        stopped: CancellationToken::new(),
        stopping: AtomicBool::new(false),
        config,
    });
    info!(node = %node.id(), actor = %node.actor.get(), addr = %node.config.advertise,
          seeds = node.config.seeds.len(), "node started");
    tokio::spawn(crate::server::serve(node.clone(), listener));
    tokio::spawn(crate::handoff::deliver_forever(node.clone()));
    tokio::spawn(crate::anti_entropy::run_forever(node.clone()));
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
    // Close both stores (background work stops, everything is synced,
    // writes are refused from now on), then leave the clean-stop marker
    // that lets the next start keep this epoch.
    let (store, hints) = (node.replica.store().clone(), node.hints_store.clone());
    let store_dir = node.config.data_dir.as_ref().map(|d| d.join("store"));
    let epoch = node.actor.epoch();
    let closed = tokio::task::spawn_blocking(move || {
        if let Err(e) = hints.close() {
            warn!(cause = %e, "could not close the hint store");
        }
        let manifest = store.close()?;
        if let (Some(dir), Some(manifest)) = (store_dir, manifest) {
            crate::epoch::write_clean_marker(&dir, epoch, &manifest)?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(cause = %e, "could not close the store cleanly; the next start takes a new epoch")
        }
        Err(e) => {
            warn!(cause = %e, "could not close the store cleanly; the next start takes a new epoch")
        }
    }
    node.stopped.cancel();
}

/// Opens (and locks) a log-structured store in `dir`.
async fn open_log(dir: &Path, fsync: FsyncPolicy) -> anyhow::Result<LogStore> {
    let opts = LogOptions {
        fsync,
        ..LogOptions::default()
    };
    let open_dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || LogStore::open(&open_dir, opts))
        .await
        .context("storage task failed")?
        .with_context(|| format!("cannot open the store in {}", dir.display()))
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
