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

use crate::anti_entropy::Trees;
use crate::config::Config;
use crate::fault::{Faults, FaultyTransport};
use crate::handoff::Hints;
use crate::membership::Membership;
use crate::replica::Replica;
use crate::rpc::{TcpTransport, Transport};
use crate::storage::{FsyncPolicy, LogOptions, LogStore, MemoryStore, Store};
use crate::vclock::Actor;

/// A running node's shared state.
pub struct Node {
    /// The configuration it started with (node id resolved).
    pub config: Config,
    /// The vector-clock actor for writes this node coordinates:
    /// `node-id/epoch`, where the epoch is new whenever the node starts
    /// without data (every start of an in-memory node).
    pub actor: Actor,
    /// Local data.
    pub replica: Replica,
    /// Copies kept for other nodes (hinted handoff).
    pub hints: Hints,
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
    let (store, epoch): (Arc<dyn Store>, u32) = match &config.data_dir {
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
            // With fsync other than `always`, a crash may have lost local
            // writes that other replicas hold: their dots must not be made
            // again, so an unclean stop also means a new epoch.
            let clean = take_clean_marker(&store_dir);
            let keep = status.keys > 0 && (clean || config.fsync == FsyncPolicy::Always);
            if !clean && status.keys > 0 && !keep {
                warn!(
                    "the last stop was not clean and --fsync is not always: starting a new vector-clock epoch"
                );
            }
            let epoch = resolve_epoch(&store_dir, keep)?;
            (Arc::new(store), epoch)
        }
        None => (Arc::new(MemoryStore::new()), rand::random()),
    };
    let hints_store: Arc<dyn Store> = match &config.data_dir {
        Some(dir) => Arc::new(open_log(&dir.join("hints"), config.fsync).await?),
        None => Arc::new(MemoryStore::new()),
    };
    let hints = Hints::open(hints_store).context("cannot load hints")?;
    let actor = format!("{}/{epoch:08x}", config.node_id);
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
        actor,
        replica: Replica::new(store, trees.clone()),
        trees,
        hints,
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
    if let Some(dir) = &node.config.data_dir {
        let store = node.replica.store().clone();
        let marker = dir.join("store").join(CLEAN_MARKER);
        let flushed = tokio::task::spawn_blocking(move || {
            store.flush()?;
            std::fs::write(&marker, b"clean stop\n")?;
            Ok::<_, anyhow::Error>(())
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            warn!("could not flush the store on stop; the next start takes a new epoch");
        }
    }
    node.stopped.cancel();
}

/// Written by a graceful stop after the store is flushed; removed at start.
const CLEAN_MARKER: &str = "CLEAN";

/// True when the last stop was graceful; removes the marker either way.
fn take_clean_marker(store_dir: &Path) -> bool {
    let marker = store_dir.join(CLEAN_MARKER);
    let clean = marker.exists();
    if clean && let Err(e) = std::fs::remove_file(&marker) {
        warn!(cause = %e, "cannot remove the clean-stop marker");
        return false;
    }
    clean
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

/// The vector-clock epoch of a store: kept while the store keeps its data,
/// new when the store is new or empty, so a node that lost its data never
/// reuses its old counters. Kept inside the store directory, so wiping the
/// store wipes the epoch with it.
fn resolve_epoch(store_dir: &Path, has_data: bool) -> anyhow::Result<u32> {
    let file = store_dir.join("EPOCH");
    if has_data
        && let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(epoch) = u32::from_str_radix(text.trim(), 16)
    {
        return Ok(epoch);
    }
    let epoch: u32 = rand::random();
    let tmp = store_dir.join("EPOCH.new");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{epoch:08x}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        std::fs::File::open(store_dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", file.display()))?;
    info!(
        epoch = format!("{epoch:08x}"),
        "new vector-clock epoch for this store"
    );
    Ok(epoch)
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
