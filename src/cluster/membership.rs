//! Membership and liveness, on top of chitchat gossip.
//!
//! Two different things are tracked (DESIGN: "membership and liveness are
//! different things"):
//! - **membership** is the layout ([`crate::cluster::layout`]): which nodes
//!   form the cluster and which replicate each partition. It changes only
//!   by a layout change (a node joining, LEAVE, REMOVE), carried out by the
//!   [`Steward`] this task runs each round; a node that is merely down stays
//!   a member, so a temporary failure moves no data.
//! - **live**: members chitchat's phi-accrual detector currently hears from
//!   and that do not announce `status=stopping`. Coordinators use it to
//!   order and skip replicas.
//!
//! Each node publishes `addr` (its TCP address), `status`, and the layout
//! keys of the steward in its gossip state. A restart is a new chitchat
//! generation under the same node id; incarnations are grouped by node id,
//! the highest generation winning. The view ([`ClusterView`]) is rebuilt
//! when the layout or its phase changes, and re-flagged when liveness does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cluster::ClusterView;
use crate::cluster::layout::Layout;
use crate::cluster::steward::{self, Digest, Said, Shared, Steward, parse_stamp};
use crate::config::Config;
use crate::fault::{Faults, GossipTransport};

/// Gossip key holding a node's TCP address.
const KEY_ADDR: &str = "addr";
/// Gossip key holding a node's status (`serving` or `stopping`).
const KEY_STATUS: &str = "status";

/// The membership service of one node.
pub struct Membership {
    handle: Arc<ChitchatHandle>,
    view: watch::Receiver<Arc<ClusterView>>,
    self_id: String,
    layouts: Arc<Shared>,
}

/// What the refresh task keeps between rounds: the live set, the layout
/// phase the current view was built from, and what each incarnation says,
/// parsed (kept until its key-values change).
struct Known {
    live: BTreeSet<String>,
    route: (Arc<Layout>, bool),
    parsed: HashMap<ChitchatId, Parsed>,
    /// The incarnations chitchat's failure detector held live last round.
    live_ids: Vec<ChitchatId>,
    /// What every node says (the newest incarnation of each), as of the
    /// last change; this node's own entry is always live.
    said: BTreeMap<String, Said>,
    /// This process's incarnation.
    me: ChitchatId,
    /// The layout whose bindings `said` was read with.
    bound_by: Option<Arc<Layout>>,
    /// Incarnations already logged as claiming an id bound elsewhere.
    warned: HashSet<ChitchatId>,
    /// Another process under this node's id that holds the layout's
    /// binding, and since when it has been live.
    rival_since: Option<(ChitchatId, std::time::Instant)>,
}

/// Why the membership task stops the node.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// A LEAVE was carried out.
    Left,
    /// Another process, live and bound to the layout's binding, is this
    /// node: this one is the second process under its id.
    Impostor(String),
}

/// One incarnation's gossip state, parsed: valid while its versions are
/// `(max_version, last_gc_version)`.
struct Parsed {
    versions: (u64, u64),
    said: Said,
    stopping: bool,
}

impl Parsed {
    fn of(id: &ChitchatId, state: &chitchat::NodeState) -> Parsed {
        let addr = state
            .get(KEY_ADDR)
            .and_then(|a| a.parse().ok())
            .or(Some(id.gossip_advertise_addr));
        Parsed {
            versions: (state.max_version(), state.last_gc_version()),
            said: Said {
                addr,
                live: false,
                layout: state.get(steward::KEY_LAYOUT).and_then(Digest::parse),
                ack: state.get(steward::KEY_ACK).and_then(parse_stamp),
                sync: state.get(steward::KEY_SYNC).and_then(parse_stamp),
                read: state.get(steward::KEY_READ).and_then(parse_stamp),
                transfer: state.get(steward::KEY_TRANSFER).map(str::to_string),
                binding: state
                    .get(steward::KEY_BIND)
                    .and_then(steward::parse_binding),
            },
            stopping: state.get(KEY_STATUS) == Some("stopping"),
        }
    }
}

impl Known {
    fn view(&self) -> ClusterView {
        ClusterView::from_layout(
            self.route.0.clone(),
            |id| self.live.contains(id),
            self.route.1,
        )
    }
}

/// What the node gives the membership task besides its configuration.
pub struct Parts {
    /// The layout steward (made with the node's transport).
    pub steward: Steward,
    /// Called once when this node has left the cluster (LEAVE carried out).
    pub on_left: Arc<dyn Fn() + Send + Sync>,
}

impl Membership {
    /// Starts gossip for the node described by `config`, and the task that
    /// keeps the [`View`] current until `shutdown` fires.
    pub async fn start(
        config: &Config,
        faults: Arc<Faults>,
        shutdown: CancellationToken,
        parts: Parts,
    ) -> anyhow::Result<Membership> {
        let Parts {
            mut steward,
            on_left,
        } = parts;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let chitchat_id = ChitchatId::new(config.node_id.clone(), generation, config.advertise);
        let me = chitchat_id.clone();
        let gossip = config.gossip_interval;
        let cc_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.peer_key().gossip_cluster_id(&config.cluster_id),
            gossip_interval: gossip,
            listen_addr: config.listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                initial_interval: gossip,
                // We keep our own member set, so chitchat may forget dead
                // incarnations (each restart leaves one) after an hour.
                dead_node_grace_period: Duration::from_secs(3600),
                // chitchat keeps this many heartbeat intervals per known
                // incarnation as an f64 array allocated in full up front:
                // its default of 1,000 is 8 KB for every peer (800 KB at
                // 100 nodes). Phi only needs their mean; 100 intervals
                // span 10-50 s of heartbeats, enough to smooth it.
                sampling_window_size: 100,
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // V0 sends the digest (every known incarnation, in every SYN
            // and SYN-ACK) uncompressed: V1 zstd-compresses it with a fresh
            // context, two or three times per message (sizing, then
            // sending), which was a fifth of an idle node's CPU at 100 nodes. ~50 bytes an incarnation keeps
            // ~1,200 of them within a datagram (dead ones leave the digest
            // after half of `dead_node_grace_period`). chitchat 0.13 reads
            // both versions, so nodes of either kind gossip together.
            protocol_version: ProtocolVersion::V0,
        };
        let kvs = vec![
            (KEY_ADDR.to_string(), config.advertise.to_string()),
            (KEY_STATUS.to_string(), "serving".to_string()),
        ];
        let handle = spawn_chitchat(cc_config, kvs, &GossipTransport::new(faults))
            .await
            .map_err(|e| anyhow::anyhow!("cannot start gossip on udp {}: {e:#}", config.listen))?;
        let handle = Arc::new(handle);
        let seeds: Vec<SocketAddr> = config
            .seeds
            .iter()
            .filter_map(|s| s.parse().ok())
            .filter(|a| *a != config.advertise)
            .collect();

        let route = steward
            .initial_route()
            .unwrap_or_else(|| (Arc::new(Layout::empty(config.n)), true));
        let mut known = Known {
            live: BTreeSet::from([config.node_id.clone()]),
            route,
            parsed: HashMap::new(),
            live_ids: Vec::new(),
            said: BTreeMap::new(),
            me,
            bound_by: None,
            warned: HashSet::new(),
            rival_since: None,
        };
        let (tx, view) = watch::channel(Arc::new(known.view()));
        let membership = Membership {
            handle,
            view,
            self_id: config.node_id.clone(),
            layouts: steward.shared().clone(),
        };
        let handle = membership.handle.clone();
        let chitchat = handle.chitchat();
        let self_id = config.node_id.clone();
        tokio::spawn(async move {
            let mut watcher = chitchat.lock().await.live_nodes_watcher();
            let mut round: u64 = 0;
            let mut gone = false;
            loop {
                let stop = refresh(&chitchat, &tx, &mut known, &self_id, &mut steward).await;
                if let Some(stop) = stop
                    && !gone
                {
                    gone = true;
                    match stop {
                        Stop::Left => info!("this node has left the cluster: stopping"),
                        Stop::Impostor(at) => error!(node = %self_id, live_at = %at,
                               "node {self_id} is live at {at} with another data directory, and the \
                                cluster's layout is bound to that one: this process is a second one \
                                under its id, and stops. Start it with another --node-id (or stop the \
                                other one first to replace it)"),
                    }
                    on_left();
                }
                // chitchat contacts one random seed per round; while this node
                // is alone, greet every seed each round so a small cluster
                // forms in one or two rounds, and every 25 rounds afterwards
                // so a cluster split at start-up finds itself again.
                let alone = known.live.len() <= 1;
                if alone || round % 25 == 0 {
                    for seed in &seeds {
                        let _ = handle.gossip(*seed);
                    }
                }
                round += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = watcher.changed() => {}
                    _ = tokio::time::sleep(gossip) => {}
                }
            }
        });
        Ok(membership)
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// A receiver of every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// This node's id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// The layout steward's shared state (layout, queued changes).
    pub fn layouts(&self) -> &Arc<Shared> {
        &self.layouts
    }

    /// Announces that this node is stopping, so peers stop routing to it
    /// before its failure detector would notice.
    pub async fn announce_stopping(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_STATUS, "stopping"))
            .await;
    }

    /// Stops gossip (the gossip task ends and frees its port shortly after).
    pub fn stop(&self) {
        if let Err(e) = self.handle.initiate_shutdown() {
            warn!(cause = %e, "gossip did not stop cleanly");
        }
    }
}

/// One round: reads chitchat's state, runs the layout steward, publishes
/// what it says, and rebuilds or re-flags the view. Returns true when this
/// node has left the cluster.
async fn refresh(
    chitchat: &Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    tx: &watch::Sender<Arc<ClusterView>>,
    known: &mut Known,
    self_id: &str,
    steward: &mut Steward,
) -> Option<Stop> {
    // Collect under the chitchat lock, then release it before anything else.
    // Most rounds nothing changed (no key-value, the same live incarnations):
    // the last round's reading is used again.
    let layout = steward.shared().layout();
    let own = steward.binding();
    let fresh: Option<BTreeSet<String>> = {
        let cc = chitchat.lock().await;
        let states = cc.node_states();
        let mut changed = false;
        // Parse only what changed since the last round.
        known.parsed.retain(|id, _| {
            let keep = states.contains_key(id);
            changed |= !keep;
            keep
        });
        for (id, state) in states {
            let versions = (state.max_version(), state.last_gc_version());
            match known.parsed.get_mut(id) {
                Some(p) if p.versions == versions => {}
                Some(p) => {
                    *p = Parsed::of(id, state);
                    changed = true;
                }
                None => {
                    known.parsed.insert(id.clone(), Parsed::of(id, state));
                    changed = true;
                }
            }
        }
        if !cc.live_nodes().eq(known.live_ids.iter()) {
            known.live_ids = cc.live_nodes().cloned().collect();
            changed = true;
        }
        // Bindings come from the layout: a new one may change who speaks
        // for a node.
        if !matches!((&known.bound_by, &layout), (Some(a), Some(b)) if Arc::ptr_eq(a, b)) {
            known.bound_by = layout.clone();
            changed = true;
        }
        changed.then(|| {
            let bound = |id: &str| layout.as_ref().and_then(|l| l.binding(id));
            // node id -> (generation, what it says, stopping): the newest
            // incarnation of each node that may speak for it. When the
            // layout binds a node to a data directory, only incarnations
            // gossiping that binding may; this node speaks for itself.
            let mut newest: BTreeMap<&str, (u64, &Parsed)> = BTreeMap::new();
            for (id, p) in states
                .keys()
                .filter_map(|id| Some((id, known.parsed.get(id)?)))
            {
                let claims_me = *id.node_id == *self_id && *id != known.me;
                let bound_elsewhere = bound(&id.node_id).is_some_and(|b| p.said.binding != Some(b));
                if claims_me || bound_elsewhere {
                    if (bound_elsewhere || p.said.binding != own)
                        && known.live_ids.contains(id)
                        && known.warned.insert(id.clone())
                    {
                        warn!(node = %id.node_id, at = %id.gossip_advertise_addr,
                              "a process claims the id of node {} with another data directory \
                               (or secret); ignoring it", id.node_id);
                    }
                    continue;
                }
                let entry = newest
                    .entry(id.node_id.as_ref())
                    .or_insert((id.generation_id, p));
                if id.generation_id >= entry.0 {
                    *entry = (id.generation_id, p);
                }
            }
            let mut live = BTreeSet::new();
            for id in &known.live_ids {
                // Only the newest incarnation of a node speaks for it.
                if let Some((generation, p)) = newest.get(id.node_id.as_ref())
                    && *generation == id.generation_id
                    && !p.stopping
                {
                    live.insert(id.node_id.to_string());
                }
            }
            live.insert(self_id.to_string());
            known.said = newest
                .into_iter()
                .map(|(id, (_, p))| {
                    let mut s = p.said.clone();
                    s.live = live.contains(id);
                    (id.to_string(), s)
                })
                .collect();
            live
        })
    };
    let current = tx.borrow().inflight().clone();
    let round = steward.round(&known.said, &current).await;
    if !round.publish.is_empty() {
        let cc = chitchat.clone();
        let publish = round.publish;
        let mut cc = cc.lock().await;
        let state = cc.self_node_state();
        for (k, v) in publish {
            if state.get(k) != Some(v.as_str()) {
                state.set(k, v);
            }
        }
    }
    if let Some(live) = fresh.as_ref() {
        for node in known.live.difference(live) {
            info!(node = %node, "node is down");
        }
        for node in live.difference(&known.live) {
            if node != self_id {
                info!(node = %node, "node is live");
            }
        }
    }
    let live_changed = fresh.is_some();
    if let Some(live) = fresh {
        known.live = live;
    }
    match round.route {
        Some(route) => {
            known.route = route;
            tx.send_replace(Arc::new(known.view()));
        }
        // Nothing this round read changed: the view is the last one's.
        None if !live_changed => {}
        None => {
            let current = tx.borrow().clone();
            let same = current
                .members()
                .iter()
                .enumerate()
                .all(|(i, m)| current.is_live_at(i) == known.live.contains(&*m.id));
            if !same {
                tx.send_replace(Arc::new(current.with_live(|id| known.live.contains(id))));
            }
        }
    }
    if round.left {
        return Some(Stop::Left);
    }
    impostor(known, self_id, own, layout.as_deref())
}

/// How long another process under this node's id, gossiping the binding
/// the layout holds, must stay live before this one takes itself for the
/// second process and stops: longer than the failure detector needs to
/// notice a process that died, so a node restarted on a new disk right
/// after the old process died does not stop for a ghost.
const RIVAL_LIVE_FOR: Duration = Duration::from_secs(15);

/// `Some` when another live process under this node's id is the one the
/// layout binds it to (and this one is not): the other's address.
fn impostor(
    known: &mut Known,
    self_id: &str,
    own: Option<u64>,
    layout: Option<&Layout>,
) -> Option<Stop> {
    let bound = layout.and_then(|l| l.binding(self_id));
    let rival = if bound.is_none() || bound == own {
        None
    } else {
        known.live_ids.iter().find(|id| {
            *id.node_id == *self_id
                && **id != known.me
                && known
                    .parsed
                    .get(*id)
                    .is_some_and(|p| p.said.binding == bound)
        })
    };
    let Some(rival) = rival else {
        known.rival_since = None;
        return None;
    };
    match &known.rival_since {
        Some((id, since)) if id == rival => (since.elapsed() >= RIVAL_LIVE_FOR)
            .then(|| Stop::Impostor(rival.gossip_advertise_addr.to_string())),
        _ => {
            known.rival_since = Some((rival.clone(), std::time::Instant::now()));
            None
        }
    }
}

/// Reads the member list of a data directory from before layouts (`id
/// addr` per line), which the first layout keeps the ring ownership of. A
/// missing file is an empty list; a damaged one (empty, cut short, a line that does not
/// parse) is refused, naming the file and the line, never half-used.
pub fn load_members(file: &PathBuf) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => anyhow::bail!("cannot read the member list {}: {e}", file.display()),
    };
    parse_members(&bytes).map_err(|why| {
        anyhow::anyhow!(
            "the member list {} is damaged: {why}. Move it away to have the node \
             relearn the members from gossip (members that are down meanwhile stay \
             unknown until they return)",
            file.display()
        )
    })
}

/// Parses the member list file; `Err` says what is wrong with it.
fn parse_members(bytes: &[u8]) -> Result<BTreeMap<String, SocketAddr>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if !text.ends_with('\n') {
        return Err("its last line is cut short".into());
    }
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let parsed = l.split_once(' ').and_then(|(id, addr)| {
                let addr: SocketAddr = addr.parse().ok()?;
                crate::identity::valid_id(id).then(|| (id.to_string(), addr))
            });
            parsed.ok_or_else(|| format!("line {} is not `node-id address`: {l:?}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn a_damaged_member_list_is_refused() {
        let good = b"node-1 127.0.0.1:7001\nnode-2 127.0.0.1:7002\n";
        assert_eq!(parse_members(good).unwrap().len(), 2);
        for (bad, why) in [
            (&b""[..], "empty"),
            (b"node-1 127.0.0.1:7001\nnode-2 127.0", "cut short"),
            (b"node-1 127.0.0.1:7001\nnode-2\n", "line 2"),
            (b"node-1 nowhere\n", "line 1"),
        ] {
            let err = parse_members(bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("members");
        assert!(load_members(&file).unwrap().is_empty());
        std::fs::write(&file, b"node-1 127.0").unwrap();
        let err = load_members(&file).unwrap_err().to_string();
        assert!(err.contains("members is damaged"), "{err}");
        let members = parse_members(good).unwrap();
        std::fs::write(&file, good).unwrap();
        assert_eq!(load_members(&file).unwrap(), members);
    }
}
