//! A node: builds every part from a [`Config`], wires them together, and
//! stops them in order. Nothing else sees every part.
//!
//! The parts and what each is handed:
//! - the [`Replica`] (local store + this node's actor) and the [`Hints`]
//!   (a store of their own);
//! - [`Membership`] (chitchat), which publishes [`crate::cluster::ClusterView`]
//!   snapshots;
//! - the peer [`Transport`] (multiplexed TCP, wrapped for fault injection);
//! - the [`Coordinator`] (view, transport, replica, hints, settings);
//! - the [`PeerService`] (replica, hints, coordinator) and the client
//!   [`Api`] (coordinator and report handles), both served on the TCP port
//!   by [`crate::server`];
//! - the background [`Workers`] (hint delivery, anti-entropy).
//!
//! Stopping is cooperative and ordered: announce `status=stopping` through
//! gossip so peers route around the node at once; stop accepting, let every
//! session answer the commands it is running (bounded) and close; let the workers finish their current unit and the
//! coordinator's background work (late answers, read repair, replication
//! past W) drain; stop gossip; close the stores (synced, writes refused) and
//! leave the clean-stop marker that lets the next start keep the epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{Api, NodeInfo};
use crate::cluster::Membership;
use crate::config::Config;
use crate::coordinator::service::{PeerService, StopFn};
use crate::coordinator::{CoordConfig, Coordinator};
use crate::epoch::ActorCell;
use crate::fault::{Faults, FaultyTransport};
use crate::hints::Hints;
use crate::replica::Replica;
use crate::rpc::{TcpTransport, Transport};
use crate::storage::{LogOptions, LogStore, MemoryStore, Store};
use crate::workers::Workers;
use crate::workers::anti_entropy::{AaeStats, AntiEntropy};
use crate::workers::handoff::Handoff;

/// Longest a stop waits for workers and background requests to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// A running node.
pub struct Node {
    /// The configuration it started with (node id resolved).
    pub config: Config,
    /// Quorum reads and writes.
    pub coordinator: Arc<Coordinator>,
    /// Membership and liveness.
    pub membership: Membership,
    /// Local data.
    pub replica: Arc<Replica>,
    /// Copies kept for other nodes.
    pub hints: Arc<Hints>,
    workers: Workers,
    /// Ends the listener and every session.
    sessions: CancellationToken,
    /// The connections' tasks (a stop waits for them to drain).
    connections: tokio_util::task::TaskTracker,
    /// Fires when something asks the node to stop (a command, a peer).
    stop_requested: CancellationToken,
    /// Fires once the stop sequence has finished.
    pub stopped: CancellationToken,
    /// Set by the first call to [`stop`].
    stopping: AtomicBool,
    /// What the metrics port serves from (with `--metrics`).
    pub observer: Option<Arc<crate::observe::Observer>>,
    /// Ends the metrics port (last, once the node has stopped).
    observe_stop: CancellationToken,
}

impl Node {
    /// This node's id.
    pub fn id(&self) -> &str {
        &self.config.node_id
    }

    /// Asks the node to stop (the stop runs on its own task).
    pub fn request_stop(&self) {
        self.stop_requested.cancel();
    }
}

/// Starts a node: opens its stores (durable under `data_dir` when the
/// configuration has one, in memory otherwise), binds its TCP port, starts
/// gossip, the server and the workers. Returns once it accepts connections.
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
    // The metrics port first: /health answers and /ready says why not
    // while the stores are recovered.
    let observe_stop = CancellationToken::new();
    let observer = match config.metrics {
        Some(addr) => {
            let observer = Arc::new(crate::observe::Observer::new(&config.node_id));
            let bound = crate::observe::start(addr, observer.clone(), observe_stop.clone()).await?;
            info!(url = %format!("http://{bound}/"), "serving metrics, health, readiness and the status page");
            config.metrics = Some(bound);
            Some(observer)
        }
        None => None,
    };
    // A start that fails from here on closes the metrics port again.
    let observe_guard = observe_stop.clone().drop_guard();
    // Before anything opens: a bad certificate or key file stops the start.
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::NodeTls::load)
        .transpose()?
        .map(Arc::new);
    // Set when the store was prepared by `db restore` (an old state).
    let mut restored: Option<PathBuf> = None;
    let (store, epoch, store_dir): (Arc<dyn Store>, u64, Option<PathBuf>) = match &config.data_dir {
        Some(dir) => {
            crate::durable::create_dir_all(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
            let store_dir = dir.join("store");
            let started = std::time::Instant::now();
            // Opening locks the directory: a second process stops here.
            let store = open_log(&store_dir, &config).await?;
            let status = store.status();
            info!(keys = status.keys, segments = status.segments, elapsed = ?started.elapsed(), "store opened");
            let report = store.recovery().unwrap_or_default();
            let has_data = report.manifest.segments.iter().any(|(_, size)| *size > 0);
            config.node_id = crate::identity::resolve(
                dir,
                &store_dir,
                &config.node_id,
                config.node_id_given,
                has_data,
            )?;
            let marker = store_dir.join(crate::backup::RESTORED_MARKER);
            restored = marker.exists().then_some(marker);
            let (epoch, _) = crate::epoch::resolve(&store_dir, &report)
                .context("cannot decide the vector-clock epoch")?;
            (Arc::new(store), epoch, Some(store_dir))
        }
        None => (
            Arc::new(MemoryStore::new()),
            crate::epoch::next_epoch(None),
            None,
        ),
    };
    let hints_store: Arc<dyn Store> = match &config.data_dir {
        Some(dir) => Arc::new(open_log(&dir.join("hints"), &config).await?),
        None => Arc::new(MemoryStore::new()),
    };
    // The node id's binding to this data directory (none without one).
    let binding = match &store_dir {
        Some(dir) => Some(
            config
                .peer_key()
                .binding(&config.node_id, &crate::identity::binding_nonce(dir)?),
        ),
        None => None,
    };
    let actor = Arc::new(ActorCell::new(&config.node_id, epoch, store_dir));
    actor.set_grace(config.tombstone_grace);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on tcp {}", config.listen))?;
    let sessions = CancellationToken::new();
    let faults = Faults::new(config.fault_injection);
    let tcp: Arc<dyn Transport> = Arc::new(
        TcpTransport::new(config.advertise, config.peer_key())
            .with_tls(tls.as_ref().map(|t| t.dial().clone())),
    );
    let transport: Arc<dyn Transport> = if config.fault_injection {
        warn!("fault injection is enabled: FAULT commands can cut this node off");
        Arc::new(FaultyTransport::new(tcp, faults.clone()))
    } else {
        tcp
    };
    let legacy = match &config.data_dir {
        Some(dir) => crate::cluster::membership::load_members(&dir.join("members"))?,
        None => Default::default(),
    };
    let (steward, orders) = crate::cluster::steward::Steward::new(
        &config.node_id,
        config.advertise,
        config.n,
        config
            .data_dir
            .as_ref()
            .map(|d| d.join(crate::cluster::steward::LAYOUT_FILE)),
        legacy,
        transport.clone(),
        config.request_timeout.min(Duration::from_secs(1)),
    )?;
    let steward = steward.with_binding(binding);
    let stop_requested = CancellationToken::new();
    let stop_fn: StopFn = {
        let t = stop_requested.clone();
        Arc::new(move || t.cancel())
    };
    let membership = Membership::start(
        &config,
        faults.clone(),
        sessions.clone(),
        crate::cluster::membership::Parts {
            steward,
            on_left: stop_fn.clone(),
        },
    )
    .await?;
    let me: Arc<str> = config.node_id.as_str().into();
    let Core {
        replica,
        hints,
        coordinator,
        service: peers,
    } = Core::build(CoreConfig {
        me: me.clone(),
        n: config.n,
        store,
        hints_store,
        hint_limits: config.hint_limits,
        actor,
        clock: crate::clock::system(),
        transport: transport.clone(),
        view: membership.subscribe(),
        coordinator: CoordConfig::from(&config),
        rng: crate::random::Random::new(config.rng_seed),
        stop: stop_fn.clone(),
    })?;
    peers.set_layouts(membership.layouts().clone());
    if let Some(marker) = restored {
        // Its copies are old: no read is answered from them before
        // anti-entropy compared them with a peer's.
        replica.catch_up().start(Some(marker));
        info!(
            "restored from a backup: answering no read until anti-entropy has compared each partition with a peer"
        );
    }
    let workers = Workers::new();
    let transfers = Arc::new(crate::workers::transfer::TransferStats::default());
    workers.spawn(crate::workers::transfer::Transfer::new(
        me.clone(),
        replica.clone(),
        hints.clone(),
        transport.clone(),
        orders,
        membership.layouts().clone(),
        config.w,
        config.request_timeout,
        config.transfer_mb_per_s,
        config.data_dir.clone(),
        transfers.clone(),
    ));
    let aae = Arc::new(AaeStats::default());
    workers.spawn(Handoff::new(
        hints.clone(),
        transport.clone(),
        membership.subscribe(),
        config.request_timeout,
    ));
    workers.spawn(AntiEntropy::new(
        me.clone(),
        replica.clone(),
        transport.clone(),
        membership.subscribe(),
        config.aae_interval,
        config.request_timeout,
        aae.clone(),
    ));
    workers.spawn(crate::workers::expiry::Expiry::new(replica.clone()));
    let gc = Arc::new(crate::workers::gc::GcStats::default());
    workers.spawn(crate::workers::gc::Gc::new(
        me.clone(),
        replica.clone(),
        hints.clone(),
        transport.clone(),
        membership.subscribe(),
        config.tombstone_grace,
        config.request_timeout,
        gc.clone(),
    ));
    let api = Arc::new(Api {
        coordinator: coordinator.clone(),
        replica: replica.clone(),
        hints: hints.clone(),
        faults: faults.clone(),
        aae,
        workers: workers.clone(),
        info: NodeInfo {
            config: config.clone(),
        },
        stop: stop_fn,
        clients: crate::api::clients::Clients::new(),
        stats: Arc::new(crate::api::ApiStats::default()),
        started: std::time::Instant::now(),
        layouts: membership.layouts().clone(),
        context_key: config.context_key(),
        acl: Arc::new(
            crate::acl::Acl::new(config.password.as_ref(), &config.users)
                .map_err(anyhow::Error::msg)?,
        ),
        backups: Arc::new(crate::backup::Backups::default()),
    });
    let connections = tokio_util::task::TaskTracker::new();
    let slots = crate::limits::Slots::new(&config.limits);
    let budget = crate::limits::ByteBudget::new(config.limits.request_bytes);
    if let Some(observer) = &observer {
        observer.attach(crate::observe::Sources {
            api: api.clone(),
            transfers,
            gc,
            slots: slots.clone(),
            budget: budget.clone(),
        });
    }
    let port = crate::server::Port {
        api,
        peers: Arc::new(crate::rpc::tcp::PeerDoor {
            service: peers,
            key: config.peer_key(),
        }),
        faults,
        limits: config.limits,
        slots,
        budget,
        shutdown: sessions.clone(),
        tls,
        tasks: connections.clone(),
    };
    tokio::spawn(crate::server::serve(port, listener));
    let node = Arc::new(Node {
        config,
        coordinator,
        membership,
        replica,
        hints,
        workers,
        sessions,
        connections,
        stop_requested: stop_requested.clone(),
        stopped: CancellationToken::new(),
        stopping: AtomicBool::new(false),
        observer,
        observe_stop,
    });
    observe_guard.disarm();
    info!(node = %node.id(), actor = %node.replica.actor().get(), addr = %node.config.advertise,
          seeds = node.config.seeds.len(), "node started");
    // A stop asked for by a command or a peer runs here.
    let stopper = node.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stopper.stop_requested.cancelled() => {
                info!("stop requested");
                stop(&stopper).await;
            }
            _ = stopper.stopped.cancelled() => {}
        }
    });
    Ok(node)
}

/// The parts of a node that do not touch a socket or gossip: its replica,
/// hints, coordinator and peer service, wired the same way by [`start`]
/// and by in-process tests (which hand it memory stores, the in-memory
/// transport and views they make themselves).
pub struct Core {
    /// Local data.
    pub replica: Arc<Replica>,
    /// Copies kept for other nodes.
    pub hints: Arc<Hints>,
    /// Quorum reads and writes.
    pub coordinator: Arc<Coordinator>,
    /// Answers peers.
    pub service: Arc<PeerService>,
}

/// What [`Core::build`] needs.
pub struct CoreConfig {
    /// This node's id.
    pub me: Arc<str>,
    /// Configured replicas per key.
    pub n: usize,
    /// The replica's store.
    pub store: Arc<dyn Store>,
    /// The hints' store.
    pub hints_store: Arc<dyn Store>,
    /// Bounds on the hints held.
    pub hint_limits: crate::hints::HintLimits,
    /// This node's vector-clock actor.
    pub actor: Arc<ActorCell>,
    /// Wall-clock time.
    pub clock: crate::clock::SharedClock,
    /// Outgoing peer calls.
    pub transport: Arc<dyn Transport>,
    /// Cluster views, as membership publishes them.
    pub view: tokio::sync::watch::Receiver<Arc<crate::cluster::ClusterView>>,
    /// The coordinator's settings.
    pub coordinator: CoordConfig,
    /// Random choices.
    pub rng: crate::random::Random,
    /// What a peer's Shutdown request calls.
    pub stop: StopFn,
}

impl Core {
    /// Wires the parts (loading the hints held in `hints_store`).
    pub fn build(c: CoreConfig) -> anyhow::Result<Core> {
        let hints = Arc::new(
            Hints::open_with_limits(c.hints_store, c.hint_limits).context("cannot load hints")?,
        );
        let replica = Arc::new(Replica::with_clock(c.store, c.actor, c.clock));
        let coordinator = Arc::new(Coordinator::new(
            c.me.clone(),
            c.view,
            c.transport,
            replica.clone(),
            hints.clone(),
            c.coordinator,
            c.rng,
        ));
        let service = Arc::new(PeerService::new(
            c.me,
            c.n,
            replica.clone(),
            hints.clone(),
            coordinator.clone(),
            c.stop,
        ));
        Ok(Core {
            replica,
            hints,
            coordinator,
            service,
        })
    }
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

/// Stops a node in order (see the module doc). A second call waits for the
/// first to finish.
pub async fn stop(node: &Node) {
    if node.stopping.swap(true, Ordering::SeqCst) {
        node.stopped.cancelled().await;
        return;
    }
    info!(node = %node.id(), "stopping");
    if let Some(o) = &node.observer {
        o.set_stopping();
    }
    node.membership.announce_stopping().await;
    // One gossip round carries the news to a few peers; don't wait longer.
    tokio::time::sleep(node.config.gossip_interval).await;
    node.sessions.cancel();
    // Sessions answer the commands they are running (each bounded by
    // SHUTDOWN_DRAIN), then close.
    node.connections.close();
    let drain = crate::api::session::SHUTDOWN_DRAIN + Duration::from_millis(500);
    if tokio::time::timeout(drain, node.connections.wait())
        .await
        .is_err()
    {
        warn!("some connections did not close in time; stopping without them");
    }
    node.workers.stop(DRAIN).await;
    let tasks = node.coordinator.tasks();
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        warn!("background requests did not finish in time; stopping without them");
    }
    node.membership.stop();
    // Close both stores (background work stops, everything is synced,
    // writes are refused from now on), then leave the clean-stop marker
    // that lets the next start keep this epoch.
    let (store, hints) = (node.replica.store().clone(), node.hints.store().clone());
    let store_dir = node.config.data_dir.as_ref().map(|d| d.join("store"));
    let epoch = node.replica.actor().epoch();
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
    node.observe_stop.cancel();
    node.stopped.cancel();
}

/// Opens (and locks) a log-structured store in `dir`.
async fn open_log(dir: &Path, config: &Config) -> anyhow::Result<LogStore> {
    let opts = LogOptions {
        fsync: config.fsync,
        group_commit_window: config.group_commit_window,
        segment_size: config.segment_size,
        compaction_interval: config.compaction_interval,
        ..LogOptions::default()
    };
    let open_dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || LogStore::open(&open_dir, opts))
        .await
        .context("storage task failed")?
        .with_context(|| format!("cannot open the store in {}", dir.display()))
}
