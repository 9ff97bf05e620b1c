//! The layout steward: how this node comes to follow the newest layout, and
//! how a layout change is carried out safely (docs/operations.md).
//!
//! Every node gossips a digest of the layout it follows (`layout`: version,
//! retired or not, hash) and, while a change is carried out, how far it got
//! (`l.ack`, `l.sync`, `l.read`, each naming the layout by version and
//! hash). Each gossip round the membership task calls [`Steward::round`],
//! which:
//!
//! 1. **adopts** a layout that supersedes its own ([`Layout::supersedes`]),
//!    fetched from the peer that announces it (`LayoutGet`), persisted
//!    before it is followed;
//! 2. **bootstraps** a new cluster: with no layout anywhere after a short
//!    wait, the live node with the lowest id makes version 1 of every live
//!    node it sees (so three nodes started together form one cluster, and
//!    no node acknowledges writes on its own before it has heard its seeds);
//! 3. **asks to join** when the layout does not list it as a member;
//! 4. as the **claimant** (the live member with the lowest id), makes the
//!    changes queued with it (`LayoutChange`) into one new version, once no
//!    change is being carried out and the queue has been quiet for a moment
//!    (so two nodes started together move data once);
//! 5. carries out a migrating layout in Garage's three steps, each waiting
//!    for every participant (the layout's members and leaving nodes):
//!    - **ack**: it routes writes to both owner sets, and no request begun
//!      under an older phase is still running;
//!    - **sync**: every participant acked, so no write can miss the new
//!      owners any more: the transfer worker pulls the partitions newly
//!      owned here from their previous owners and says when it holds them
//!      durably (and no hint stored before the ack is left);
//!    - **read**: every participant synced: reads switch to the new owners,
//!      and no read begun before the switch is still running;
//!    - **retire**: every participant reads from the new owners: the
//!      previous assignment is dropped, the transfer worker drops the
//!      partitions this node no longer owns, a leaving node stops.
//!
//! A participant that is down holds the change at its step; RING says who,
//! and REMOVE of a dead node releases it.
//!
//! A change an operator asks for (LEAVE, REMOVE) stays *pending* on the node
//! it was asked on until the layout shows it: each round that node re-sends
//! it to whoever is the claimant then, so a claimant that crashes with the
//! change in its queue, or stops being the claimant (a lower id came back),
//! loses nothing. A node holding queued changes that is no longer the
//! claimant hands them on too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cluster::assign::Assignment;
use crate::cluster::layout::{Change, ChangeError, Layout, NodeState};
use crate::cluster::{InFlight, Ring};
use crate::rpc::call::LayoutBytes;
use crate::rpc::{Request, Transport, ask};

/// Name of the layout file in the data directory.
pub const LAYOUT_FILE: &str = "layout";
/// Gossip key: the digest of the layout a node follows.
pub const KEY_LAYOUT: &str = "layout";
/// Gossip key: the migrating layout a node acked.
pub const KEY_ACK: &str = "l.ack";
/// Gossip key: the migrating layout a node synced.
pub const KEY_SYNC: &str = "l.sync";
/// Gossip key: the migrating layout a node reads from.
pub const KEY_READ: &str = "l.read";
/// Gossip key: a node's transfer progress (one line, for RING).
pub const KEY_TRANSFER: &str = "l.xfer";
/// Gossip key: the binding of a node's id to its data directory (16 hex
/// digits; absent for a node without one).
pub const KEY_BIND: &str = "bind";

/// A binding as gossip carries it.
pub fn binding_text(b: u64) -> String {
    format!("{b:016x}")
}

/// Parses a binding.
pub fn parse_binding(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// How long a node with no layout waits for one before a new cluster is
/// made (time for gossip to find the seeds).
pub const BOOTSTRAP_WAIT: Duration = Duration::from_secs(2);
/// How long the claimant's queue must be quiet before it makes a change.
pub const CHANGE_WINDOW: Duration = Duration::from_secs(1);
/// How often a node that is not a member asks to join.
const JOIN_RETRY: Duration = Duration::from_secs(2);

/// A layout named by version and hash (what the trackers say).
pub type Stamp = (u64, u64);

/// How a node's layout is announced: the order [`Layout::supersedes`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest {
    /// The version.
    pub version: u64,
    /// True once its change is carried out.
    pub retired: bool,
    /// The layout's hash.
    pub hash: u64,
}

impl Digest {
    /// The digest of `l`.
    pub fn of(l: &Layout) -> Digest {
        Digest {
            version: l.version,
            retired: !l.migrating(),
            hash: l.hash(),
        }
    }

    /// The gossip form: `version:r|m:hash`.
    pub fn text(&self) -> String {
        format!(
            "{}:{}:{:016x}",
            self.version,
            if self.retired { "r" } else { "m" },
            self.hash
        )
    }

    /// Parses the gossip form.
    pub fn parse(s: &str) -> Option<Digest> {
        let mut it = s.split(':');
        let version = it.next()?.parse().ok()?;
        let retired = match it.next()? {
            "r" => true,
            "m" => false,
            _ => return None,
        };
        let hash = u64::from_str_radix(it.next()?, 16).ok()?;
        Some(Digest {
            version,
            retired,
            hash,
        })
    }
}

/// The gossip form of a stamp.
pub fn stamp_text(s: Stamp) -> String {
    format!("{}:{:016x}", s.0, s.1)
}

/// Parses a stamp.
pub fn parse_stamp(s: &str) -> Option<Stamp> {
    let (v, h) = s.split_once(':')?;
    Some((v.parse().ok()?, u64::from_str_radix(h, 16).ok()?))
}

/// What one node says in gossip, as this node last heard it.
#[derive(Debug, Clone, Default)]
pub struct Said {
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// True when the failure detector hears it.
    pub live: bool,
    /// Its layout.
    pub layout: Option<Digest>,
    /// How far it carried out the migrating layout.
    pub ack: Option<Stamp>,
    /// See [`KEY_SYNC`].
    pub sync: Option<Stamp>,
    /// See [`KEY_READ`].
    pub read: Option<Stamp>,
    /// See [`KEY_TRANSFER`].
    pub transfer: Option<String>,
    /// See [`KEY_BIND`].
    pub binding: Option<u64>,
}

/// What the transfer worker is asked to do.
#[derive(Debug, Clone)]
pub enum Order {
    /// Nothing.
    Idle,
    /// Pull the partitions newly owned here in this migrating layout.
    Sync(Arc<Layout>),
    /// Drop the partitions owned in `previous` and no longer in `layout`.
    Drop {
        /// The assignment before the change.
        previous: Assignment,
        /// The layout now followed.
        layout: Arc<Layout>,
    },
}

/// The steward's state other parts read and feed (the peer service, the
/// API, the transfer worker).
pub struct Shared {
    me: Arc<str>,
    layout: Mutex<Option<Arc<Layout>>>,
    queue: Mutex<Queue>,
    synced: Mutex<Option<Stamp>>,
    /// Who this node is waiting for, and at which step (for RING).
    waiting: Mutex<String>,
    /// Changes asked on this node (and whether forced) that no layout shows
    /// yet: re-sent to the claimant until one does.
    pending: Mutex<Vec<(Change, bool)>>,
    /// This node's transfer progress, and every node's as gossip says.
    transfers: Mutex<(String, BTreeMap<String, String>)>,
    /// The bindings of the nodes live as of the last round.
    live: Mutex<BTreeMap<String, Option<u64>>>,
}

#[derive(Default)]
struct Queue {
    changes: Vec<Change>,
    last: Option<Instant>,
}

impl Shared {
    /// The layout this node follows.
    pub fn layout(&self) -> Option<Arc<Layout>> {
        self.layout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The encoded layout (empty when there is none yet).
    pub fn layout_bytes(&self) -> Vec<u8> {
        self.layout().map(|l| l.to_bytes()).unwrap_or_default()
    }

    /// Queues changes with this node as the claimant; checked against the
    /// layout now, so a mistake is refused at once.
    pub fn queue(&self, changes: Vec<Change>) -> Result<(), String> {
        let Some(layout) = self.layout() else {
            return Err("this node has no layout yet (the cluster is forming)".into());
        };
        // A process with another data directory may not take the id of a
        // node that is live: only one whose bound process is gone may be
        // replaced (a wiped or new disk).
        for c in &changes {
            if let Change::Join {
                id,
                binding: Some(b),
                ..
            } = c
                && let Some(bound) = layout.binding(id)
                && bound != *b
                && self
                    .live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                    .is_some_and(|live| *live == Some(bound))
            {
                warn!(node = %id, "refusing a second process that claims the id of a live node");
                return Err(ChangeError::BoundElsewhere(id.clone()).to_string());
            }
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // A queue can hold a change another claimant made meanwhile (this
        // node was the claimant, lost it, and got it back): it would make
        // every later change look invalid ("already a member").
        q.changes.retain(|c| !shows(&layout, c));
        let mut all = q.changes.clone();
        for c in changes {
            if !all.contains(&c) {
                all.retain(|x| x.node() != c.node());
                all.push(c);
            }
        }
        // The queue must make a valid change now, or once the change under
        // way is carried out.
        match layout.change(&all) {
            Ok(_) | Err(ChangeError::Empty) => {}
            Err(ChangeError::InProgress(_)) => match layout.retired().change(&all) {
                Ok(_) | Err(ChangeError::Empty) => {}
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
        }
        if q.changes != all {
            q.changes = all;
            q.last = Some(Instant::now());
        }
        Ok(())
    }

    /// Remembers changes asked on this node (already accepted by the
    /// claimant or queued here): they are re-sent to the claimant each
    /// round until the layout shows them.
    pub fn remember(&self, changes: &[Change], force: bool) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            if !p.iter().any(|(x, _)| x == c) {
                p.push((c.clone(), force));
            }
        }
    }

    /// Changes asked on this node that no layout shows yet.
    pub fn pending(&self) -> Vec<Change> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// The changes waiting for the claimant.
    pub fn queued(&self) -> Vec<Change> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .clone()
    }

    /// The transfer worker holds every partition this layout gives this
    /// node, durably.
    pub fn report_synced(&self, stamp: Stamp) {
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = Some(stamp);
    }

    /// The transfer worker's progress line (gossiped for RING).
    pub fn report_progress(&self, line: String) {
        self.transfers.lock().unwrap_or_else(|e| e.into_inner()).0 = line;
    }

    /// Every node's transfer progress as last heard (this node's included).
    pub fn transfers(&self) -> BTreeMap<String, String> {
        let t = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = t.1.clone();
        if !t.0.is_empty() {
            all.insert(self.me.to_string(), t.0.clone());
        }
        all
    }

    /// What the current change is waiting for ("" when none).
    pub fn waiting(&self) -> String {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What one round decided, for the membership task to carry out.
#[derive(Debug, Default)]
pub struct Round {
    /// Gossip keys to set.
    pub publish: Vec<(&'static str, String)>,
    /// A new layout phase to route by: the layout and whether reads use
    /// its current owners.
    pub route: Option<(Arc<Layout>, bool)>,
    /// This node has left the cluster (a LEAVE was carried out): stop.
    pub left: bool,
}

/// See the module doc.
pub struct Steward {
    me: Arc<str>,
    addr: SocketAddr,
    n: usize,
    file: Option<PathBuf>,
    /// Members of the ring-era member list (a data directory from before
    /// layouts): the first layout keeps their ring ownership.
    legacy: BTreeMap<String, SocketAddr>,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    timeout: Duration,
    started: Instant,
    orders: watch::Sender<Order>,
    /// The phase this node routes by, for the current layout.
    reads_current: bool,
    /// Requests begun under older phases, to wait for.
    older: Vec<Arc<InFlight>>,
    acked: Option<Stamp>,
    synced: Option<Stamp>,
    read: Option<Stamp>,
    sync_ordered: Option<Stamp>,
    last_join: Option<Instant>,
    /// When pending changes were last re-sent to the claimant.
    last_chase: Option<Instant>,
    /// This process has been a member (or leaving) of the layout.
    been_member: bool,
    /// This node's binding to its data directory (gossiped, and carried by
    /// its join).
    binding: Option<u64>,
    /// The digest of the layout followed, computed once per layout: its
    /// hash encodes the whole layout (1024 × N owners), and a round needs
    /// it several times, every gossip interval.
    digest: Option<(Arc<Layout>, Digest)>,
}

impl Steward {
    /// A steward for node `me` at `addr`, persisting its layout in `file`
    /// (loaded now: a damaged file is refused). `legacy` is the member list
    /// of a data directory from before layouts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: &str,
        addr: SocketAddr,
        n: usize,
        file: Option<PathBuf>,
        legacy: BTreeMap<String, SocketAddr>,
        transport: Arc<dyn Transport>,
        timeout: Duration,
    ) -> anyhow::Result<(Steward, watch::Receiver<Order>)> {
        let layout = match &file {
            Some(f) => load(f)?,
            None => None,
        };
        let (orders, rx) = watch::channel(Order::Idle);
        let shared = Arc::new(Shared {
            me: me.into(),
            layout: Mutex::new(layout.map(Arc::new)),
            queue: Mutex::default(),
            synced: Mutex::new(None),
            waiting: Mutex::new(String::new()),
            pending: Mutex::default(),
            transfers: Mutex::default(),
            live: Mutex::default(),
        });
        Ok((
            Steward {
                me: me.into(),
                addr,
                n,
                file,
                legacy,
                shared,
                transport,
                timeout,
                started: Instant::now(),
                orders,
                reads_current: false,
                older: Vec::new(),
                acked: None,
                synced: None,
                read: None,
                sync_ordered: None,
                last_join: None,
                last_chase: None,
                been_member: false,
                binding: None,
                digest: None,
            },
            rx,
        ))
    }

    /// The digest of `l` (remembered for the last layout asked about).
    fn digest(&mut self, l: &Arc<Layout>) -> Digest {
        match &self.digest {
            Some((known, d)) if Arc::ptr_eq(known, l) => *d,
            _ => {
                let d = Digest::of(l);
                self.digest = Some((l.clone(), d));
                d
            }
        }
    }

    /// This node's id is bound to its data directory by `binding`
    /// ([`crate::identity::binding`]).
    pub fn with_binding(mut self, binding: Option<u64>) -> Steward {
        self.binding = binding;
        self
    }

    /// This node's binding to its data directory.
    pub fn binding(&self) -> Option<u64> {
        self.binding
    }

    /// The handle other parts use.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The phase to route by at start (the layout loaded from disk).
    pub fn initial_route(&mut self) -> Option<(Arc<Layout>, bool)> {
        let l = self.shared.layout()?;
        // A restart mid-change carries it out again from the first step.
        self.reads_current = !l.migrating();
        Some((l, self.reads_current))
    }

    /// One round; see the module doc. `said` is every node gossip knows of
    /// (this one included), `current` the requests of the view routed by
    /// now.
    pub async fn round(&mut self, said: &BTreeMap<String, Said>, current: &Arc<InFlight>) -> Round {
        let mut out = Round::default();
        {
            let mut t = self
                .shared
                .transfers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            t.1 = said
                .iter()
                .filter(|(id, _)| **id != *self.me)
                .filter_map(|(id, s)| s.transfer.clone().map(|l| (id.clone(), l)))
                .collect();
            if !t.0.is_empty() {
                out.publish.push((KEY_TRANSFER, t.0.clone()));
            }
        }
        if let Some(b) = self.binding {
            out.publish.push((KEY_BIND, binding_text(b)));
        }
        *self.shared.live.lock().unwrap_or_else(|e| e.into_inner()) = said
            .iter()
            .filter(|(id, s)| s.live && **id != *self.me)
            .map(|(id, s)| (id.clone(), s.binding))
            .collect();
        self.adopt(said, current, &mut out).await;
        if self.shared.layout().is_none() {
            self.bootstrap(said, current, &mut out);
        }
        let Some(layout) = self.shared.layout() else {
            return out;
        };
        out.publish.push((KEY_LAYOUT, self.digest(&layout).text()));
        match layout.state(&self.me) {
            Some(NodeState::Member)
                if layout.node(&self.me).is_some_and(|n| {
                    n.addr != self.addr || (self.binding.is_some() && n.binding != self.binding)
                }) =>
            {
                // Restarted at another address, or with a new data
                // directory (a wiped disk) while the old one is gone: the
                // layout must follow.
                self.been_member = true;
                self.ask_to_join(&layout, said).await;
            }
            Some(NodeState::Member) | Some(NodeState::Leaving) => self.been_member = true,
            // It left (or was removed) while running: stop. Started again,
            // it asks to join as a new node.
            Some(NodeState::Removed) if self.been_member => {
                out.left = true;
                return out;
            }
            _ => self.ask_to_join(&layout, said).await,
        }
        self.chase(&layout, said).await;
        if self.is_claimant(&layout, said) {
            self.make_changes(&layout, current, &mut out);
        }
        if let Some(layout) = self.shared.layout()
            && layout.migrating()
        {
            self.carry_out(&layout, said, current, &mut out);
        }
        out
    }

    /// Follows `l` from now on: persists it, then routes by it.
    fn follow(&mut self, l: Layout, current: &Arc<InFlight>, out: &mut Round) {
        if let Some(f) = &self.file
            && let Err(e) = crate::durable::write_atomic(f, &l.to_bytes())
        {
            error!(cause = %e, file = %f.display(), "cannot persist the layout; not following it");
            return;
        }
        let old = self.shared.layout();
        let old_hash = old.as_ref().map(|o| self.digest(o).hash);
        let l = Arc::new(l);
        let new = Digest::of(&l);
        self.digest = Some((l.clone(), new));
        let retiring = old.as_ref().is_some_and(|o| {
            o.version == l.version && o.migrating() && !l.migrating() && o.retired() == *l
        });
        info!(
            version = l.version,
            migrating = l.migrating(),
            members = l.members().count(),
            "following layout version {}",
            l.version
        );
        *self.shared.layout.lock().unwrap_or_else(|e| e.into_inner()) = Some(l.clone());
        if retiring && let Some(prev) = old.as_ref().and_then(|o| o.previous.clone()) {
            let _ = self.orders.send(Order::Drop {
                previous: prev,
                layout: l.clone(),
            });
        } else if !l.migrating() {
            let _ = self.orders.send(Order::Idle);
        }
        self.older.push(current.clone());
        self.reads_current = !l.migrating();
        if old
            .as_ref()
            .is_none_or(|o| o.version != l.version || old_hash != Some(new.hash))
        {
            self.acked = None;
            self.synced = None;
            self.read = None;
            self.sync_ordered = None;
        }
        out.route = Some((l, self.reads_current));
    }

    async fn adopt(
        &mut self,
        said: &BTreeMap<String, Said>,
        current: &Arc<InFlight>,
        out: &mut Round,
    ) {
        let mine = self.shared.layout().map(|l| self.digest(&l));
        let best = said
            .iter()
            .filter(|(id, s)| s.live && **id != *self.me && s.layout.is_some() && s.addr.is_some())
            .filter(|(_, s)| mine.is_none_or(|m| s.layout > Some(m)))
            .max_by_key(|(_, s)| s.layout);
        let Some((from, s)) = best else { return };
        let Some(addr) = s.addr else { return };
        let bytes =
            match ask::<LayoutBytes>(&*self.transport, addr, &Request::LayoutGet, self.timeout)
                .await
            {
                Ok(LayoutBytes(b)) if !b.is_empty() => b,
                Ok(_) => return,
                Err(e) => {
                    warn!(from = %from, cause = %e, "cannot fetch the newer layout");
                    return;
                }
            };
        let theirs = match Layout::from_bytes(&bytes) {
            Ok(l) => l,
            Err(e) => {
                warn!(from = %from, cause = %e, "refusing a damaged layout");
                return;
            }
        };
        if let Some(m) = self.shared.layout()
            && !theirs.supersedes(&m)
        {
            return;
        }
        self.follow(theirs, current, out);
    }

    fn bootstrap(
        &mut self,
        said: &BTreeMap<String, Said>,
        current: &Arc<InFlight>,
        out: &mut Round,
    ) {
        if self.started.elapsed() < BOOTSTRAP_WAIT {
            return;
        }
        // Nobody live has a layout (or it would have been adopted): the
        // lowest live id makes the first one, of every live node.
        let live: Vec<(String, SocketAddr)> = said
            .iter()
            .filter(|(_, s)| s.live)
            .filter_map(|(id, s)| s.addr.map(|a| (id.clone(), a)))
            .chain(std::iter::once((self.me.to_string(), self.addr)))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        if said.iter().any(|(_, s)| s.live && s.layout.is_some()) {
            return;
        }
        if live.first().is_some_and(|(id, _)| *id != *self.me) {
            return;
        }
        let layout = if self.legacy.len() > 1 {
            // A data directory from before layouts: keep the ring's owners
            // of the member list everyone used, so nothing has to move.
            // Nodes not in that list join afterwards, as changes.
            let mut nodes: BTreeMap<String, SocketAddr> = self.legacy.clone();
            for (id, a) in &live {
                if let Some(addr) = nodes.get_mut(id) {
                    *addr = *a;
                }
            }
            let ids: Vec<&str> = self.legacy.keys().map(String::as_str).collect();
            let ring = Ring::new(&ids, crate::cluster::ring::DEFAULT_VNODES);
            let mut l = Layout::bootstrap(&nodes.into_iter().collect::<Vec<_>>(), self.n);
            l.current = Assignment::from_ring(&ring, self.n);
            l
        } else {
            Layout::bootstrap(&live, self.n)
        };
        let layout = layout.with_bindings(|id| {
            if id == &*self.me {
                self.binding
            } else {
                said.get(id).and_then(|s| s.binding)
            }
        });
        info!(
            members = layout.members().count(),
            "no layout anywhere: making the first one"
        );
        self.follow(layout, current, out);
    }

    async fn ask_to_join(&mut self, layout: &Layout, said: &BTreeMap<String, Said>) {
        if self.last_join.is_some_and(|t| t.elapsed() < JOIN_RETRY) {
            return;
        }
        self.last_join = Some(Instant::now());
        let Some((claimant, addr)) = claimant(layout, said) else {
            return;
        };
        let change = Change::Join {
            binding: self.binding,
            id: self.me.to_string(),
            addr: self.addr,
        };
        if claimant == *self.me {
            // This node is the claimant (restarted at a new address).
            if let Err(e) = self.shared.queue(vec![change]) {
                warn!(cause = %e, "cannot queue this node's own join");
            }
            return;
        }
        let req = Request::LayoutChange {
            changes: vec![change],
            force: false,
        };
        match ask::<crate::rpc::call::Acked>(&*self.transport, addr, &req, self.timeout).await {
            Ok(_) => info!(claimant = %claimant, "asked to join the cluster"),
            Err(e) => warn!(claimant = %claimant, cause = %e, "cannot ask to join yet"),
        }
    }

    /// Drops pending changes the layout shows; re-sends the others (and
    /// a queue this node holds without being the claimant) to the claimant.
    async fn chase(&mut self, layout: &Layout, said: &BTreeMap<String, Said>) {
        let pending: Vec<(Change, bool)> = {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            p.retain(|(c, _)| !shows(layout, c));
            p.clone()
        };
        let Some((claimant, addr)) = claimant(layout, said) else {
            return;
        };
        if claimant == *self.me {
            let queued = self.shared.queued();
            // Re-check against the layout only what is not queued already
            // (queue() computes a layout change), not every round.
            for (c, _) in pending.into_iter().filter(|(c, _)| !queued.contains(c)) {
                if let Err(e) = self.shared.queue(vec![c.clone()]) {
                    warn!(change = ?c, cause = %e, "dropping a pending layout change that no longer applies");
                    self.forget(&c);
                }
            }
            return;
        }
        let stranded = std::mem::take(
            &mut self
                .shared
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .changes,
        );
        if !stranded.is_empty() {
            info!(claimant = %claimant, changes = ?stranded, "handing queued layout changes to the claimant");
            self.shared.remember(&stranded, false);
        }
        if pending.is_empty() && stranded.is_empty() {
            return;
        }
        if self.last_chase.is_some_and(|t| t.elapsed() < JOIN_RETRY) {
            return;
        }
        self.last_chase = Some(Instant::now());
        let resend = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (c, force) in resend {
            let req = Request::LayoutChange {
                changes: vec![c.clone()],
                force,
            };
            match ask::<crate::rpc::call::Acked>(&*self.transport, addr, &req, self.timeout).await {
                Ok(_) => {}
                Err(crate::rpc::call::CallError::Remote(e)) => {
                    warn!(change = ?c, claimant = %claimant, cause = %e,
                          "the claimant refuses a pending layout change; dropping it");
                    self.forget(&c);
                }
                Err(e) => {
                    warn!(change = ?c, claimant = %claimant, cause = %e, "cannot reach the claimant yet");
                }
            }
        }
    }

    fn forget(&self, change: &Change) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, _)| c != change);
    }

    fn is_claimant(&self, layout: &Layout, said: &BTreeMap<String, Said>) -> bool {
        claimant(layout, said).is_some_and(|(id, _)| *id == *self.me)
    }

    fn make_changes(&mut self, layout: &Layout, current: &Arc<InFlight>, out: &mut Round) {
        let changes: Vec<Change> = {
            let q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.changes.is_empty() || q.last.is_some_and(|t| t.elapsed() < CHANGE_WINDOW) {
                return;
            }
            // During a change only removals go ahead (see Layout::change).
            q.changes
                .iter()
                .filter(|c| !layout.migrating() || matches!(c, Change::Remove { .. }))
                .cloned()
                .collect()
        };
        if changes.is_empty() {
            return;
        }
        match layout.change(&changes) {
            Ok(next) => {
                info!(version = next.version, changes = ?changes, "making a layout change");
                self.shared
                    .queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .changes
                    .retain(|c| !changes.contains(c));
                self.follow(next, current, out);
            }
            Err(e) => {
                // Drop only what no longer applies on its own (made
                // meanwhile, or refused by this layout), keeping the rest.
                let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                q.changes.retain(|c| {
                    !shows(layout, c)
                        && matches!(
                            layout.change(std::slice::from_ref(c)),
                            Ok(_) | Err(ChangeError::InProgress(_))
                        )
                });
                warn!(cause = %e, kept = ?q.changes, "dropped layout changes that no longer apply");
            }
        }
    }

    fn carry_out(
        &mut self,
        layout: &Arc<Layout>,
        said: &BTreeMap<String, Said>,
        current: &Arc<InFlight>,
        out: &mut Round,
    ) {
        let stamp = (layout.version, self.digest(layout).hash);
        self.older.retain(|f| f.count() > 0);
        let participants: Vec<&str> = layout
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Removed)
            .map(|n| &*n.id)
            .collect();
        let said_of = |id: &str, f: fn(&Said) -> Option<Stamp>| -> bool {
            if id == &*self.me {
                return true;
            }
            said.get(id).and_then(f) == Some(stamp)
        };
        let missing = |f: fn(&Said) -> Option<Stamp>| -> Vec<&str> {
            participants
                .iter()
                .copied()
                .filter(|id| !said_of(id, f))
                .collect()
        };
        // Ack: no request of an older phase is still running here.
        if self.acked != Some(stamp) {
            if self.older.is_empty() {
                self.acked = Some(stamp);
            } else {
                self.set_waiting(format!(
                    "ack: {} older request(s) still running here",
                    self.older.iter().map(|f| f.count()).sum::<usize>()
                ));
            }
        }
        if let Some(a) = self.acked {
            out.publish.push((KEY_ACK, stamp_text(a)));
        }
        if self.acked != Some(stamp) {
            return;
        }
        let not_acked = missing(|s| s.ack);
        if !not_acked.is_empty() {
            self.set_waiting(format!("ack from {}", not_acked.join(", ")));
            return;
        }
        // Sync: pull what is new here.
        if self.sync_ordered != Some(stamp) {
            self.sync_ordered = Some(stamp);
            let _ = self.orders.send(Order::Sync(layout.clone()));
        }
        if self.synced != Some(stamp) {
            if *self.shared.synced.lock().unwrap_or_else(|e| e.into_inner()) == Some(stamp) {
                self.synced = Some(stamp);
                info!(
                    version = stamp.0,
                    "holding every partition of the new layout"
                );
            } else {
                self.set_waiting("sync: this node is pulling its new partitions".into());
                return;
            }
        }
        out.publish.push((KEY_SYNC, stamp_text(stamp)));
        let not_synced = missing(|s| s.sync);
        if !not_synced.is_empty() {
            self.set_waiting(format!("sync of {}", not_synced.join(", ")));
            return;
        }
        // Read: switch reads to the new owners, then wait for older reads.
        if !self.reads_current {
            self.reads_current = true;
            self.older.push(current.clone());
            out.route = Some((layout.clone(), true));
            info!(version = stamp.0, "reads now go to the new owners");
            return;
        }
        if self.read != Some(stamp) {
            if self.older.is_empty() {
                self.read = Some(stamp);
            } else {
                self.set_waiting("read: older reads still running here".into());
                return;
            }
        }
        out.publish.push((KEY_READ, stamp_text(stamp)));
        let not_read = missing(|s| s.read);
        if !not_read.is_empty() {
            self.set_waiting(format!("read switch of {}", not_read.join(", ")));
            return;
        }
        // Retire: everyone reads from the new owners.
        self.set_waiting(String::new());
        info!(
            version = stamp.0,
            "layout change carried out everywhere; retiring the previous owners"
        );
        self.follow(layout.retired(), current, out);
    }

    fn set_waiting(&self, what: String) {
        *self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = what;
    }
}

/// True when `layout` shows `change` made (or overtaken: a node asked to
/// leave that was removed meanwhile).
fn shows(layout: &Layout, change: &Change) -> bool {
    match change {
        Change::Join { id, addr, binding } => layout
            .node(id)
            .is_some_and(|n| n.is_member_at(*addr, *binding)),
        Change::Leave { id } => matches!(
            layout.state(id),
            Some(NodeState::Leaving) | Some(NodeState::Removed) | None
        ),
        Change::Remove { id } => matches!(layout.state(id), Some(NodeState::Removed) | None),
    }
}

/// The claimant of `layout`: its live member with the lowest id, at the
/// address it gossips (which a restart may have moved from the layout's).
fn claimant(layout: &Layout, said: &BTreeMap<String, Said>) -> Option<(String, SocketAddr)> {
    layout.members().find_map(|m| {
        let s = said.get(&*m.id).filter(|s| s.live)?;
        Some((m.id.to_string(), s.addr.unwrap_or(m.addr)))
    })
}

/// Reads the layout file: `None` when there is none; a damaged one is
/// refused, naming the file.
fn load(file: &PathBuf) -> anyhow::Result<Option<Layout>> {
    match std::fs::read(file) {
        Ok(b) => Layout::from_bytes(&b).map(Some).map_err(|why| {
            anyhow::anyhow!(
                "the layout file {} is damaged ({why}): move it away and the node fetches \
                 the layout from its peers",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_stamps_round_trip_and_order() {
        let d = Digest {
            version: 7,
            retired: false,
            hash: 0xabc,
        };
        assert_eq!(Digest::parse(&d.text()), Some(d));
        assert_eq!(Digest::parse("7:x:1"), None);
        let r = Digest { retired: true, ..d };
        assert!(r > d);
        assert!(
            Digest {
                version: 8,
                retired: false,
                hash: 0
            } > r
        );
        assert_eq!(parse_stamp(&stamp_text((3, 99))), Some((3, 99)));
        assert_eq!(parse_stamp("3"), None);
    }

    #[test]
    fn a_change_made_meanwhile_does_not_block_the_queue() {
        let nodes: Vec<(String, SocketAddr)> = (0..4)
            .map(|i| (format!("n{i}"), SocketAddr::from(([10, 0, 0, i + 1], 7000))))
            .collect();
        let layout = Layout::bootstrap(&nodes, 3);
        let shared = Shared {
            me: "n0".into(),
            layout: Mutex::new(Some(Arc::new(layout))),
            queue: Mutex::default(),
            synced: Mutex::default(),
            waiting: Mutex::default(),
            pending: Mutex::default(),
            transfers: Mutex::default(),
            live: Mutex::default(),
        };
        // This node queued n3's join, lost the claim, and another claimant
        // made it: n3 is a member now, and the stale join is still here.
        let join = Change::Join {
            id: "n3".into(),
            addr: nodes[3].1,
            binding: None,
        };
        shared.queue.lock().unwrap().changes.push(join);
        let leave = Change::Leave { id: "n1".into() };
        shared.queue(vec![leave.clone()]).unwrap();
        assert_eq!(shared.queued(), vec![leave]);
        // A change that is wrong on its own is still refused.
        assert!(
            shared
                .queue(vec![Change::Leave { id: "n9".into() }])
                .is_err()
        );
    }
}
