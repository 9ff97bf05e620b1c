//! Membership and liveness, on top of chitchat gossip.
//!
//! Two different things are tracked (DESIGN: "membership and liveness are
//! different things"):
//! - **members**: every node that has joined and not been removed. chitchat
//!   forgets dead nodes, so this set is ours: a node seen once stays a member
//!   (and, with a data directory, is persisted) even while it is down, so a
//!   temporary failure moves no data. The ring is built from members only.
//! - **live**: members chitchat's phi-accrual detector currently hears from and
//!   that do not announce `status=stopping`. Coordinators use it to order and
//!   skip replicas.
//!
//! Each node publishes `addr` (its TCP address) and `status` in its gossip
//! state. A restart is a new chitchat generation under the same node id;
//! incarnations are grouped by node id, the highest generation winning.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::ClusterView;
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
}

/// What the refresh task keeps between rounds: the sticky member set and the
/// live set the current view was built from.
struct Known {
    members: BTreeMap<String, SocketAddr>,
    live: BTreeSet<String>,
    n: usize,
    vnodes: usize,
}

impl Known {
    fn view(&self) -> ClusterView {
        ClusterView::new(
            self.members.iter().map(|(id, a)| (id.as_str(), *a)),
            |id| self.live.contains(id),
            self.n,
            self.vnodes,
        )
    }
}

impl Membership {
    /// Starts gossip for the node described by `config`, and the task that
    /// keeps the [`View`] current until `shutdown` fires.
    pub async fn start(
        config: &Config,
        faults: Arc<Faults>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Membership> {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let chitchat_id = ChitchatId::new(config.node_id.clone(), generation, config.advertise);
        let gossip = config.gossip_interval;
        let cc_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: gossip,
            listen_addr: config.listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                initial_interval: gossip,
                // We keep our own member set, so chitchat may forget dead
                // incarnations (each restart leaves one) after an hour.
                dead_node_grace_period: Duration::from_secs(3600),
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
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

        let members_file = config.data_dir.as_ref().map(|d| d.join("members"));
        let mut members = match &members_file {
            Some(f) => load_members(f)?,
            None => BTreeMap::new(),
        };
        members.insert(config.node_id.clone(), config.advertise);
        let mut known = Known {
            members,
            live: BTreeSet::from([config.node_id.clone()]),
            n: config.n,
            vnodes: config.vnodes,
        };
        let (tx, view) = watch::channel(Arc::new(known.view()));
        let membership = Membership {
            handle,
            view,
            self_id: config.node_id.clone(),
        };
        let handle = membership.handle.clone();
        let chitchat = handle.chitchat();
        let self_id = config.node_id.clone();
        tokio::spawn(async move {
            let mut watcher = chitchat.lock().await.live_nodes_watcher();
            let mut round: u64 = 0;
            loop {
                refresh(&chitchat, &tx, &mut known, &self_id, members_file.as_ref()).await;
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

/// Rebuilds the view from chitchat's state and publishes it if it changed.
async fn refresh(
    chitchat: &Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    tx: &watch::Sender<Arc<ClusterView>>,
    known: &mut Known,
    self_id: &str,
    members_file: Option<&PathBuf>,
) {
    // Collect under the chitchat lock, then release it before anything else.
    let (seen, live_ids) = {
        let cc = chitchat.lock().await;
        // node id -> (generation, addr, stopping)
        let mut seen: Seen = BTreeMap::new();
        for (id, state) in cc.node_states() {
            let addr = state
                .get(KEY_ADDR)
                .and_then(|a| a.parse().ok())
                .or(Some(id.gossip_advertise_addr));
            let stopping = state.get(KEY_STATUS) == Some("stopping");
            let entry =
                seen.entry(id.node_id.to_string())
                    .or_insert((id.generation_id, addr, stopping));
            if id.generation_id >= entry.0 {
                *entry = (id.generation_id, addr, stopping);
            }
        }
        let live_ids: Vec<ChitchatId> = cc.live_nodes().cloned().collect();
        (seen, live_ids)
    };
    let mut live = BTreeSet::new();
    for id in &live_ids {
        // Only the newest incarnation of a node speaks for it.
        if let Some((generation, _, stopping)) = seen.get(id.node_id.as_ref())
            && *generation == id.generation_id
            && !*stopping
        {
            live.insert(id.node_id.to_string());
        }
    }
    live.insert(self_id.to_string());
    let members_changed = apply(known, &seen, live, self_id);
    match members_changed {
        Some(members) => {
            tx.send_replace(Arc::new(known.view()));
            if let Some(file) = members_file {
                // Write the file without holding a runtime thread.
                let file = file.clone();
                let _ = tokio::task::spawn_blocking(move || save_members(&file, &members)).await;
            }
        }
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
}

/// Node id -> (generation, address, stopping), as gossip shows them.
type Seen = BTreeMap<String, (u64, Option<SocketAddr>, bool)>;

/// Updates what is known; returns the member list when it changed.
fn apply(
    known: &mut Known,
    seen: &Seen,
    live: BTreeSet<String>,
    self_id: &str,
) -> Option<BTreeMap<String, SocketAddr>> {
    let mut changed_members = false;
    for (node, (_, addr, _)) in seen {
        if let Some(addr) = addr
            && known.members.get(node) != Some(addr)
        {
            if !known.members.contains_key(node) {
                info!(node = %node, %addr, "node joined the ring");
            }
            known.members.insert(node.clone(), *addr);
            changed_members = true;
        }
    }
    for node in known.live.difference(&live) {
        info!(node = %node, "node is down");
    }
    for node in live.difference(&known.live) {
        if node != self_id {
            info!(node = %node, "node is live");
        }
    }
    known.live = live;
    changed_members.then(|| known.members.clone())
}

/// Reads the persisted member list (`id addr` per line). A missing file is
/// an empty list; a damaged one (empty, cut short, a line that does not
/// parse) is refused, naming the file and the line, never half-used.
fn load_members(file: &PathBuf) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
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

/// Writes the member list atomically and durably.
fn save_members(file: &Path, members: &BTreeMap<String, SocketAddr>) {
    let text: String = members
        .iter()
        .map(|(id, a)| format!("{id} {a}\n"))
        .collect();
    if let Err(e) = crate::durable::write_atomic(file, text.as_bytes()) {
        warn!(cause = %e, file = %file.display(), "cannot persist the member list");
    }
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
        save_members(&file, &members);
        assert_eq!(load_members(&file).unwrap(), members);
    }
}
