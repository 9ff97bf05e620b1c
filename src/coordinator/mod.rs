//! The coordinator: quorum reads and writes over a partition's replicas.
//!
//! Any node coordinates. It works on narrow handles only: a membership view
//! (a `watch` of [`ClusterView`] snapshots), the peer [`Transport`], the
//! local [`Replica`], the [`Hints`] it keeps for others, and its settings.
//!
//! - [`quorum`]: the pure tracker every path counts answers with.
//! - [`driver`]: the one loop that drives a request's calls under the
//!   tracker (reads, writes, scans and hint delivery all use it).
//! - [`plan`]: the sloppy-quorum plan of a partition (pure).
//! - [`repair`]: read repair.
//! - [`service`]: the peer service, which answers what other nodes ask this
//!   one (reads and copies of its replica, forwarded writes, scans,
//!   anti-entropy summaries).
//!
//! A **read** asks R replicas (this node first, when it is one), one more
//! for each that fails, and every remaining one if R have not answered
//! within the hedge delay; a configurable share of reads (10% by default)
//! asks every replica at once. It answers with the merge of R copies, and
//! sends that merge back to the replicas whose copy lacked part of it (read
//! repair), late answers included.
//!
//! A **write** is applied first by its *actor*, a replica of the key: this
//! node when it is one, otherwise the first reachable replica, to which the
//! write is forwarded. The actor updates its local copy (making a new dot),
//! then replicates the new object to the rest of the plan *while* its own
//! sync runs, and answers after W acknowledgements (its own durable copy
//! included). A replica that fails is replaced by a spare stand-in while
//! time remains; every owner the write did not reach gets a hint. A write
//! that misses W is reported as *unknown*: it may have landed on some
//! replicas and can surface later.

pub mod batch;
pub mod driver;
pub mod plan;
pub mod quorum;
pub mod repair;
pub mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::cluster::ClusterView;
use crate::config::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::hints::Hints;
use crate::keyspace::partition_of;
use crate::object::Object;
use crate::observe::histogram::Histogram;
use crate::random::Random;
use crate::replica::{Replica, ReplicaError};
use crate::rpc::call::{Acked, Fingerprint, Keys, Stored};
use crate::rpc::message::{NodeFailure, QuorumFailure, Reason, RemoteError};
use crate::rpc::{CallError, Request, Shared, Transport, ask, ask_shared};
use crate::vclock::{Dot, VClock};
use crate::write::{Done, Write};

use driver::{Call, Spec, drive};
use plan::{Plan, Target};
use quorum::{State, Strategy, Tracker};

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// The request itself is wrong (too large, bad quorum, ...).
    #[error("{0}")]
    Invalid(String),
    /// Fewer than R replicas answered.
    #[error("read quorum not met: {0}")]
    ReadQuorum(QuorumFailure),
    /// Fewer than W replicas acknowledged; the write may still surface.
    #[error("write outcome unknown: {0}; the write may still be applied")]
    WriteUnknown(QuorumFailure),
    /// The actor refused or failed the write before replicating it.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The node cannot serve requests yet (no layout).
    #[error("{0}")]
    Unavailable(String),
}

/// The coordinator's settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordConfig {
    /// Default read quorum.
    pub r: usize,
    /// Default write quorum.
    pub w: usize,
    /// Time a request waits for replicas.
    pub timeout: Duration,
    /// A read that has not heard from R replicas after this asks the rest.
    pub hedge_after: Duration,
    /// Share of reads sent to every replica at once (for read repair).
    pub read_repair_chance: f64,
}

impl From<&crate::config::Config> for CoordConfig {
    fn from(c: &crate::config::Config) -> CoordConfig {
        CoordConfig {
            r: c.r,
            w: c.w,
            timeout: c.request_timeout,
            hedge_after: c.read_hedge,
            read_repair_chance: c.read_repair_chance,
        }
    }
}

/// This node's copy for a digest read (`None`: it has none) and the digest
/// of its stored encoding that peers' answers must equal (`None`: no copy).
type Fingerprinted = (Option<Object>, Option<u64>);

/// Counters shown by STATUS and INFO.
#[derive(Debug, Default)]
pub struct Stats {
    /// Quorum reads served.
    pub reads: AtomicU64,
    /// Quorum writes acknowledged.
    pub writes: AtomicU64,
    /// Reads that failed their quorum.
    pub read_failures: AtomicU64,
    /// Writes whose outcome was unknown or that failed.
    pub write_failures: AtomicU64,
    /// Replica copies sent by read repair.
    pub read_repairs: AtomicU64,
    /// Digest reads answered from this node's copy and the others' digests.
    pub digest_reads: AtomicU64,
    /// Digest reads whose digests disagreed (or could not be compared),
    /// so that the read was made again with full copies.
    pub digest_mismatches: AtomicU64,
    /// Writes coordinated by a stand-in (no owner reachable).
    pub stand_in_writes: AtomicU64,
    /// Time of every quorum read this node coordinated, failed ones too.
    pub read_latency: Histogram,
    /// Time of every write this node coordinated (forwarded ones
    /// included), failed ones too.
    pub write_latency: Histogram,
    /// Reads (`[0]`) and writes (`[1]`) that missed their quorum, by the
    /// most common reason among the replicas that failed
    /// ([`FAILURE_REASONS`]).
    quorum_failures: [[AtomicU64; FAILURE_REASONS.len()]; 2],
}

/// The reasons a quorum failure is counted under (metrics labels): those
/// of [`Reason`], and `timeout` for a quorum that ran out of time with no
/// replica failing.
pub const FAILURE_REASONS: [&str; 9] = [
    "timeout",
    "unreachable",
    "dropped",
    "remote_error",
    "bad_answer",
    "overloaded",
    "store",
    "no_answer",
    "stand_in_empty",
];

fn reason_index(r: &Reason) -> usize {
    match r {
        Reason::Timeout => 0,
        Reason::Unreachable(_) => 1,
        Reason::Dropped => 2,
        Reason::Remote(_) => 3,
        Reason::BadAnswer(_) => 4,
        Reason::Overloaded => 5,
        Reason::Store(_) => 6,
        Reason::NoAnswer => 7,
        Reason::StandInEmpty => 8,
    }
}

/// The reason a failed quorum is counted under: the most common one among
/// its failed replicas (the first of equals), `timeout` when none failed.
pub fn failure_reason(q: &QuorumFailure) -> &'static str {
    let mut counts = [0usize; FAILURE_REASONS.len()];
    for f in &q.failures {
        counts[reason_index(&f.reason)] += 1;
    }
    let mut best = 0;
    for f in &q.failures {
        let i = reason_index(&f.reason);
        if counts[i] > counts[best] {
            best = i;
        }
    }
    FAILURE_REASONS[best]
}

impl Stats {
    fn quorum_failed(&self, write: bool, q: &QuorumFailure) {
        let reason = failure_reason(q);
        let i = FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.quorum_failures[usize::from(write)][i].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed quorums so far: `(op, reason, count)` for every pair counted
    /// at least once, `op` being `read` or `write`.
    pub fn quorum_failures(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (op, row) in ["read", "write"].into_iter().zip(&self.quorum_failures) {
            for (reason, n) in FAILURE_REASONS.iter().zip(row) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((op, *reason, n));
                }
            }
        }
        out
    }
}

/// Quorum reads and writes; see the module doc.
pub struct Coordinator {
    me: Arc<str>,
    view: watch::Receiver<Arc<ClusterView>>,
    transport: Arc<dyn Transport>,
    replica: Arc<Replica>,
    hints: Arc<Hints>,
    config: CoordConfig,
    /// Work that outlives a request (late answers, read repair, replication
    /// past W); shutdown waits for it before the store is closed.
    tasks: TaskTracker,
    stats: Stats,
    rng: Random,
    /// Copies of writes waiting to be sent to their replicas together.
    batch: batch::Batch,
    /// Digest reads waiting to be sent to their replicas together.
    digests: batch::Digests,
}

impl Coordinator {
    /// A coordinator for node `me`.
    pub fn new(
        me: Arc<str>,
        view: watch::Receiver<Arc<ClusterView>>,
        transport: Arc<dyn Transport>,
        replica: Arc<Replica>,
        hints: Arc<Hints>,
        config: CoordConfig,
        rng: Random,
    ) -> Coordinator {
        Coordinator {
            me,
            view,
            transport,
            replica,
            hints,
            config,
            tasks: TaskTracker::new(),
            stats: Stats::default(),
            rng,
            batch: batch::Batch::default(),
            digests: batch::Digests::default(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &Arc<str> {
        &self.me
    }

    /// The current cluster view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// The peer transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The settings.
    pub fn config(&self) -> &CoordConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The background work of past requests (for shutdown to drain).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Checks a quorum override (or takes the default) against N.
    fn quorum(
        what: &str,
        requested: Option<usize>,
        default: usize,
        n: usize,
    ) -> Result<usize, CoordError> {
        match requested {
            Some(0) => Err(CoordError::Invalid(format!("{what} must be at least 1"))),
            Some(q) if q > n => Err(CoordError::Invalid(format!(
                "{what}={q} exceeds N={n} (the number of replicas of this key)"
            ))),
            Some(q) => Ok(q),
            None => Ok(default.clamp(1, n.max(1))),
        }
    }

    /// This node's copy of `key`: its own replica merged with any hint it
    /// holds for the key (a stand-in answers reads with what it keeps).
    pub fn local_copy(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        let own = self.replica.get(key)?;
        if self.hints.is_empty() {
            return Ok(own);
        }
        let hinted = self.hints.for_key(key)?;
        Ok(Object::merge_opt(own.as_ref(), hinted.as_ref()))
    }

    /// This replica's answer to a read of `key`, its own or a peer's: its
    /// copy, unless the store was restored from a backup and has not caught
    /// up on the key's partition yet.
    pub fn read_copy(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.readable(key)?;
        self.local_copy(key)
    }

    /// Refuses reads of a partition a restored store has not caught up on.
    fn readable(&self, key: &[u8]) -> Result<(), ReplicaError> {
        if self.replica.catch_up().behind(partition_of(key)) {
            return Err(ReplicaError::Behind);
        }
        Ok(())
    }

    /// True when this node keeps hints for `key`: its answer to a read is
    /// then a merge, whose digest no other replica's can match.
    fn holds_hints_for(&self, key: &[u8]) -> bool {
        !self.hints.owners_of(key).is_empty()
    }

    /// This replica's answer to a peer's digest read of `key`: the digest
    /// of its stored copy, or the copy itself when it holds hints for the
    /// key.
    pub fn read_digest(&self, key: &[u8]) -> Result<Fingerprint, ReplicaError> {
        self.readable(key)?;
        if self.holds_hints_for(key) {
            return self.local_copy(key).map(Fingerprint::Copy);
        }
        Ok(Fingerprint::Digest(self.replica.stored_digest(key)?))
    }

    /// This node's copy for a digest read it coordinates, with the digest
    /// its peers' answers must equal; `None` when hints make the copy a
    /// merge, which no peer's digest can match.
    fn read_copy_fingerprinted(&self, key: &[u8]) -> Result<Option<Fingerprinted>, ReplicaError> {
        self.readable(key)?;
        if self.holds_hints_for(key) {
            return Ok(None);
        }
        Ok(Some(match self.replica.get_with_digest(key)? {
            Some((digest, o)) => (Some(o), Some(digest)),
            None => (None, None),
        }))
    }

    /// A peer's answer to a digest read: the digest of its copy (or the
    /// copy, when it holds hints for the key).
    fn digest_one(
        self: &Arc<Self>,
        t: Target,
        req: Arc<Request>,
    ) -> Call<'static, Target, Fingerprint> {
        let me = self.clone();
        async move {
            let Request::Digest { key } = &*req else {
                return (t, Err(Reason::BadAnswer("not a digest read".into())));
            };
            let r = me.ask_digest(t.addr, key).await;
            // As in `read_one`: a stand-in's "none" is not a vote.
            let r = match r {
                Ok(Fingerprint::Digest(None) | Fingerprint::Copy(None)) if t.hint.is_some() => {
                    Err(Reason::StandInEmpty)
                }
                r => r,
            };
            (t, r)
        }
        .boxed()
    }

    /// A quorum read of `key` that reads the full copy from this node only
    /// (`targets[0]`, the first live owner) and asks the others for a
    /// digest (Cassandra's digest read): one object read, decoded and
    /// merged instead of R. `Some` with the answer when R - 1 peers
    /// answered and every digest equals this node's copy's; `None` when
    /// they disagree, the quorum was not met or this node's copy cannot be
    /// compared (it is merged with hints), and the caller reads full copies
    /// (which merges them and repairs the stale ones).
    async fn digest_read(
        self: &Arc<Self>,
        key: &[u8],
        targets: &[Target],
        r: usize,
    ) -> Option<Option<Object>> {
        // This node's copy first: no message, no future, and no peer is
        // asked when it cannot be compared anyway.
        let (object, mine) = self.read_copy_fingerprinted(key).ok()??;
        let others = targets.iter().skip(1).cloned();
        let req = Arc::new(Request::Digest { key: key.to_vec() });
        let spec = Spec {
            needed: r - 1,
            sets: None,
            strategy: Strategy::Quorum,
            deadline: tokio::time::Instant::now() + self.config.timeout,
            hedge_after: Some(self.config.hedge_after),
        };
        let out = drive(others, spec, |t| self.digest_one(t, req.clone()), |_| None).await;
        if !out.met() {
            return None;
        }
        let agree = out
            .replies
            .iter()
            .all(|(_, f)| matches!(f, Fingerprint::Digest(d) if *d == mine));
        agree.then_some(object)
    }

    /// One replica's copy, for a read.
    fn read_one(
        self: &Arc<Self>,
        t: Target,
        req: Arc<Request>,
    ) -> Call<'static, Target, Option<Object>> {
        let me = self.clone();
        async move {
            let r = if t.node == me.me {
                let Request::Get { key } = &*req else {
                    return (t, Err(Reason::BadAnswer("not a read".into())));
                };
                me.read_copy(key).map_err(|e| Reason::Store(e.to_string()))
            } else {
                ask::<Stored>(&*me.transport, t.addr, &req, me.config.timeout)
                    .await
                    .map(|Stored(o)| o)
                    .map_err(|e| e.reason())
            };
            // A stand-in that holds nothing for the key knows nothing of
            // it: counting its "none" would let two such answers (or one
            // and an owner that missed the write) make a quorum that
            // answers "no such key" for an acknowledged write. It counts
            // as a failure, so the read asks further or fails for want of
            // a quorum.
            let r = match r {
                Ok(None) if t.hint.is_some() => Err(Reason::StandInEmpty),
                r => r,
            };
            (t, r)
        }
        .boxed()
    }

    /// Quorum read. `Ok(None)` when no replica has the key.
    pub async fn get(
        self: &Arc<Self>,
        key: &[u8],
        r: Option<usize>,
    ) -> Result<Option<Object>, CoordError> {
        let started = std::time::Instant::now();
        let out = self.quorum_read(key, r).await;
        self.stats.read_latency.observe_duration(started.elapsed());
        out
    }

    async fn quorum_read(
        self: &Arc<Self>,
        key: &[u8],
        r: Option<usize>,
    ) -> Result<Option<Object>, CoordError> {
        check_key(key)?;
        let view = self.view();
        forming(&view)?;
        let _running = view.begin();
        let mut targets = plan::plan(&view, partition_of(key)).slots;
        // Live owners first, this node first among them (no message), in
        // preference order; stand-ins only after every live owner: a
        // stand-in that holds no hint for the key answers "none", and two
        // such answers must not make a quorum while an owner that holds
        // the write is reachable.
        targets.sort_by_key(|t| (!t.live, t.hint.is_some(), t.node != self.me));
        let r = Self::quorum("R", r, self.config.r, targets.len())?;
        // Most reads ask R replicas; some ask every one, so that read repair
        // also reaches the replicas a quorum read would not ask.
        let strategy = if self.rng.chance(self.config.read_repair_chance) {
            Strategy::All
        } else {
            Strategy::Quorum
        };
        // A quorum read this node is the first live owner of fetches its
        // own copy and only digests from the others; a disagreement falls
        // through to the full read below, which merges and repairs.
        if strategy == Strategy::Quorum
            && r >= 2
            && targets
                .first()
                .is_some_and(|t| t.node == self.me && t.live && t.hint.is_none())
        {
            match self.digest_read(key, &targets, r).await {
                Some(object) => {
                    self.stats.reads.fetch_add(1, Ordering::Relaxed);
                    self.stats.digest_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(object);
                }
                None => {
                    self.stats.digest_mismatches.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let req = Arc::new(Request::Get { key: key.to_vec() });
        let spec = Spec {
            needed: r,
            sets: None,
            strategy,
            deadline: tokio::time::Instant::now() + self.config.timeout,
            hedge_after: Some(self.config.hedge_after),
        };
        let out = drive(targets, spec, |t| self.read_one(t, req.clone()), |_| None).await;
        if !out.met() {
            self.stats.read_failures.fetch_add(1, Ordering::Relaxed);
            let failure = unmet(&out.tracker);
            self.stats.quorum_failed(false, &failure);
            return Err(CoordError::ReadQuorum(failure));
        }
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let merged = repair::merge_replies(&out.replies);
        // Late answers and repairs go on in the background.
        if !out.running.is_empty() || repair::needs_repair(&out.replies, merged.as_ref()) {
            let (me, key) = (self.clone(), key.to_vec());
            let mut out = out;
            self.tasks.spawn(async move {
                out.finish().await;
                repair::read_repair(&me, &key, out.replies).await;
            });
        }
        Ok(merged)
    }

    /// Stores a copy locally: in the replica, or as a hint for `hint`.
    /// Returns the dots the merge found reused.
    pub async fn local_merge(
        &self,
        key: &[u8],
        object: &Object,
        hint: Option<&str>,
    ) -> Result<Vec<Dot>, ReplicaError> {
        match hint {
            Some(owner) if owner != &*self.me => {
                let lsn = self.hints.add(owner, key, object)?;
                self.hints.durable(lsn).wait().await?;
                Ok(Vec::new())
            }
            _ => {
                let m = self.replica.merge(key, object)?;
                self.replica.durable(m.lsn).wait().await?;
                Ok(m.conflicts)
            }
        }
    }

    /// Sends a copy to one replica (or stores it here).
    fn replicate_to_target(
        self: &Arc<Self>,
        t: Target,
        req: Arc<Shared>,
    ) -> Call<'static, Target, ()> {
        let me = self.clone();
        async move {
            let r = if t.node == me.me {
                let Request::Replicate { key, object, hint } = req.request() else {
                    return (t, Err(Reason::BadAnswer("not a copy".into())));
                };
                me.local_merge(key, object, hint.as_deref())
                    .await
                    .map(|_| ())
                    .map_err(|e| Reason::Store(e.to_string()))
            } else {
                match ask_shared::<Acked>(&*me.transport, t.addr, &req, me.config.timeout).await {
                    Ok(acked) => {
                        me.replica.note_conflicts_seen_by_peer(&acked.conflicts);
                        Ok(())
                    }
                    Err(e) => Err(e.reason()),
                }
            };
            if let Err(e) = &r {
                debug!(node = %t.node, cause = %e, "replication failed");
            }
            (t, r)
        }
        .boxed()
    }

    /// A copy of `object` for target `t` (with its hint, if it stands in).
    fn copy_for(shared: &Arc<Shared>, t: &Target) -> Arc<Shared> {
        match (&t.hint, shared.request()) {
            (Some(owner), Request::Replicate { key, object, .. }) => {
                Arc::new(Shared::new(Request::Replicate {
                    key: key.clone(),
                    object: object.clone(),
                    hint: Some(owner.to_string()),
                }))
            }
            _ => shared.clone(),
        }
    }

    /// Sends a copy of `object` to one target (or stores it here) and
    /// waits for its answer (read repair).
    pub(crate) async fn replicate_to(
        &self,
        t: &Target,
        key: &[u8],
        object: &Object,
    ) -> Result<(), String> {
        if t.node == self.me {
            return self
                .local_merge(key, object, t.hint.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        let req = Request::Replicate {
            key: key.to_vec(),
            object: object.clone(),
            hint: t.hint.as_ref().map(|h| h.to_string()),
        };
        ask::<Acked>(&*self.transport, t.addr, &req, self.config.timeout)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A plain quorum write (`value = None` deletes). Returns whether the
    /// key had a live value at the actor before the write.
    pub async fn put(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<VClock>,
        w: Option<usize>,
    ) -> Result<bool, CoordError> {
        self.write(key, Write::value(value), context, w)
            .await
            .map(|d| d.existed)
    }

    /// Quorum write (see [`crate::write`]): made by an actor replica of the
    /// key (this node, or the first reachable replica it forwards to; with
    /// none reachable, this node as a stand-in), acknowledged after W copies.
    pub async fn write(
        self: &Arc<Self>,
        key: &[u8],
        write: Write,
        context: Option<VClock>,
        w: Option<usize>,
    ) -> Result<Done, CoordError> {
        let started = std::time::Instant::now();
        let out = self.quorum_write(key, write, context, w).await;
        self.stats.write_latency.observe_duration(started.elapsed());
        out
    }

    async fn quorum_write(
        self: &Arc<Self>,
        key: &[u8],
        write: Write,
        context: Option<VClock>,
        w: Option<usize>,
    ) -> Result<Done, CoordError> {
        check_key(key)?;
        if write.value_len() > MAX_VALUE_LEN {
            return Err(CoordError::Invalid(format!(
                "value too large: {} bytes (the limit is {MAX_VALUE_LEN})",
                write.value_len()
            )));
        }
        let view = self.view();
        forming(&view)?;
        let _running = view.begin();
        let mut owners = plan::owners(&view, partition_of(key));
        let w = Self::quorum("W", w, self.config.w, owners.len())?;
        if owners.iter().any(|t| t.node == self.me) {
            match self
                .write_as_actor(key, &write, context.as_ref(), w, None)
                .await
            {
                // The local step failed before anything was replicated: let
                // another replica act for this write.
                Err(CoordError::WriteFailed(cause)) if owners.len() > 1 => {
                    warn!(cause = %cause, "cannot act for this write locally; forwarding it");
                    owners.retain(|t| t.node != self.me);
                }
                other => return other,
            }
        }
        // Forward to a replica: live ones first, in preference order.
        owners.sort_by_key(|t| !t.live);
        let req = Request::Write {
            key: key.to_vec(),
            write: write.clone(),
            context: context.clone(),
            w,
        };
        let mut failures = Vec::new();
        for t in &owners {
            // The actor waits up to one timeout for its replicas: allow for it.
            let timeout = self.config.timeout * 2;
            let failure = |reason| NodeFailure {
                node: t.node.to_string(),
                reason,
            };
            match ask::<Done>(&*self.transport, t.addr, &req, timeout).await {
                Ok(done) => return Ok(done),
                Err(CallError::Remote(RemoteError::WriteUnknown(q))) => {
                    return Err(CoordError::WriteUnknown(q));
                }
                Err(CallError::Remote(RemoteError::Invalid(m))) => {
                    return Err(CoordError::Invalid(m));
                }
                Err(CallError::Remote(e)) => return Err(CoordError::WriteFailed(e.to_string())),
                Err(e @ CallError::BadAnswer(_)) => failures.push(failure(e.reason())),
                // Never sent: safe to try the next replica.
                Err(e) if e.never_sent() => failures.push(failure(e.reason())),
                Err(e) => {
                    failures.push(failure(e.reason()));
                    return Err(CoordError::WriteUnknown(QuorumFailure {
                        needed: w,
                        got: 0,
                        failures,
                    }));
                }
            }
        }
        // No owner of the key can be reached: stay writable (sloppy quorum).
        // This node makes the write itself, keeping it as a hint for the
        // first owner, and hands copies to live stand-ins for the others.
        let Some(owner) = owners.first().map(|t| t.node.clone()) else {
            return Err(CoordError::WriteFailed("the ring is empty".into()));
        };
        warn!(owner = %owner, "no owner reachable; writing as a stand-in");
        self.stats.stand_in_writes.fetch_add(1, Ordering::Relaxed);
        self.write_as_actor(key, &write, context.as_ref(), w, Some(owner))
            .await
    }

    /// Applies a write locally as its actor, then replicates it to the rest
    /// of the key's sloppy-quorum plan while the local sync runs, replacing
    /// a replica that fails with the next live stand-in while time remains.
    /// A write whose condition failed (`NX`, `XX`, ...) is answered at once,
    /// with nothing replicated.
    ///
    /// With `stand_in_for`, this node is not an owner of the key: it makes
    /// the write under a single-use actor (its hinted copy will be handed
    /// off and deleted, so it cannot promise to remember its own dots) and
    /// keeps it as a hint for that owner.
    pub async fn write_as_actor(
        self: &Arc<Self>,
        key: &[u8],
        write: &Write,
        context: Option<&VClock>,
        w: usize,
        stand_in_for: Option<Arc<str>>,
    ) -> Result<Done, CoordError> {
        let refuse = |e: ReplicaError| match e {
            ReplicaError::Update(u) => CoordError::Invalid(u.to_string()),
            ReplicaError::Write(u) => CoordError::Invalid(u.to_string()),
            other => CoordError::WriteFailed(format!("{other}")),
        };
        // `lsn`: where this node's own replica appended the write.
        let (object, done, lsn) = match &stand_in_for {
            None => {
                let (written, done) = self.replica.apply(key, context, write).map_err(refuse)?;
                let Some(written) = written else {
                    return Ok(done);
                };
                (written.object, done, Some(written.lsn))
            }
            Some(_) => {
                let local = self.local_copy(key).map_err(refuse)?;
                let actor = format!("{}~{:08x}", self.replica.actor().get(), self.rng.next_u32());
                let (object, done) = crate::write::apply(
                    local.as_ref(),
                    context,
                    &actor,
                    write,
                    self.replica.now_ms(),
                )
                .map_err(|u| CoordError::Invalid(u.to_string()))?;
                let Some(object) = object else {
                    return Ok(done);
                };
                (object, done, None)
            }
        };
        let view = self.view();
        let running = view.begin();
        let p = partition_of(key);
        let Plan { slots, mut spares } = plan::write_plan(&view, p);
        spares.retain(|t| t.node != self.me);
        let others: Vec<Target> = slots
            .into_iter()
            .filter(|t| t.node != self.me && Some(&t.node) != stand_in_for.as_ref())
            .collect();
        // While a layout change is carried out, W in each owner set.
        let moving = view.moving(p);
        if let Some(lsn) = lsn
            && batch::fits(&others, moving, w, write.value_len())
        {
            let made = batch::Made {
                key: key.to_vec(),
                object,
                lsn,
                done,
                w,
                others,
                spares,
                running,
            };
            return self.write_batched(made).await;
        }
        let sets = moving.then(|| plan::write_sets(&view, p));
        let local_durable = match (&stand_in_for, lsn) {
            (Some(owner), _) => {
                let lsn = self.hints.add(owner, key, &object).map_err(refuse)?;
                self.hints.durable(lsn)
            }
            (None, lsn) => self.replica.durable(lsn.unwrap_or(0)),
        };
        // This node's durable copy is one of the W acknowledgements.
        let here = Target {
            idx: usize::MAX,
            node: self.me.clone(),
            addr: view
                .addr(&self.me)
                .unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            live: true,
            hint: stand_in_for.clone(),
        };
        let deadline =
            tokio::time::Instant::now() + self.config.timeout + Duration::from_millis(100);
        let replicated = self
            .replicate_written(
                key,
                object,
                Some((here, local_durable)),
                others,
                spares,
                sets,
                w,
                deadline,
            )
            .await;
        drop(running);
        self.write_outcome(done, replicated)
    }

    /// Counts a replicated write's outcome and turns it into its answer.
    fn write_outcome(&self, done: Done, r: Result<(), QuorumFailure>) -> Result<Done, CoordError> {
        match r {
            Ok(()) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                Ok(done)
            }
            Err(failure) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.quorum_failed(true, &failure);
                Err(CoordError::WriteUnknown(failure))
            }
        }
    }

    /// Replicates `object`, a write already made here, to `others` (and
    /// waits for this node's own copy, `here`, when given) until `needed`
    /// of them acknowledged it, replacing a replica that fails with the
    /// next of `spares` (which keeps a hint for it) while time remains.
    /// Replication past `needed` goes on in the background; every owner it
    /// does not reach gets a hint kept here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn replicate_written(
        self: &Arc<Self>,
        key: &[u8],
        object: Object,
        here: Option<(Target, crate::storage::Durable)>,
        others: Vec<Target>,
        mut spares: std::collections::VecDeque<Target>,
        sets: Option<Vec<Vec<Arc<str>>>>,
        needed: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), QuorumFailure> {
        // Encoded once, by the first call, for every replica.
        let shared = Arc::new(Shared::new(Request::Replicate {
            key: key.to_vec(),
            object,
            hint: None,
        }));
        let (here, mut local) = match here {
            Some((t, durable)) => (Some(t), Some(durable)),
            None => (None, None),
        };
        let call = |t: Target| -> Call<'static, Target, ()> {
            if t.idx == usize::MAX {
                let durable = local.take();
                return async move {
                    let r = match durable {
                        Some(d) => d.wait().await.map_err(|e| Reason::Store(e.to_string())),
                        None => Err(Reason::BadAnswer("local copy waited twice".into())),
                    };
                    (t, r)
                }
                .boxed();
            }
            let req = Self::copy_for(&shared, &t);
            self.replicate_to_target(t, req)
        };
        // A stand-in takes a failed replica's place, with a hint.
        let replace = |t: &Target| {
            if t.idx == usize::MAX {
                return None;
            }
            let mut stand_in = spares.pop_front()?;
            stand_in.hint = Some(t.hint.clone().unwrap_or(t.node.clone()));
            Some(stand_in)
        };
        let spec = Spec {
            needed,
            sets,
            strategy: Strategy::All,
            deadline,
            hedge_after: None,
        };
        let out = drive(here.into_iter().chain(others), spec, call, replace).await;
        let met = out.met();
        let tracker = out.tracker.clone();
        // Replication past W goes on in the background, bounded by its
        // timeout; every owner it does not reach gets a hint kept here, so
        // handoff (not only anti-entropy) brings it the write.
        if !out.running.is_empty() || !out.unplaced.is_empty() {
            let (me, key) = (self.clone(), key.to_vec());
            let shared = shared.clone();
            let mut out = out;
            self.tasks.spawn(async move {
                let owner = |t: &Target| t.hint.clone().unwrap_or(t.node.clone());
                let mut missed: Vec<Arc<str>> = out.unplaced.iter().map(owner).collect();
                // Each call is bounded by its own timeout.
                while let Some((t, result)) = out.running.next().await {
                    if result.is_err() {
                        missed.push(owner(&t));
                    }
                }
                let Request::Replicate { object, .. } = shared.request() else {
                    return;
                };
                me.keep_hints(&key, object, missed);
            });
        }
        if met { Ok(()) } else { Err(unmet(&tracker)) }
    }

    /// Keeps a hint here, for each of `owners` but this node, of a write
    /// that did not reach it, so handoff brings it the write.
    pub(crate) fn keep_hints(&self, key: &[u8], object: &Object, owners: Vec<Arc<str>>) {
        for owner in owners.into_iter().filter(|o| *o != self.me) {
            match self.hints.add(&owner, key, object) {
                // Counted and logged (rate-limited) by the hints.
                Ok(_) | Err(ReplicaError::HintsFull(_)) => {}
                Err(e) => {
                    warn!(owner = %owner, cause = %e, "cannot keep a hint for a replica that missed a write")
                }
            }
        }
    }
}

impl Coordinator {
    /// Merges `object`, a copy with its clock (from `db load`), into the
    /// key's replicas: it goes to every slot of the key's write plan (a
    /// stand-in keeps it as a hint for an owner that is down) and is
    /// acknowledged once W replicas merged it. Each replica merges by
    /// clock, as for read repair: versions the object's clock covers give
    /// way to it, versions it does not cover (newer writes, later deletes)
    /// stay, and concurrent ones become siblings.
    pub async fn merge_in(
        self: &Arc<Self>,
        key: &[u8],
        object: &Object,
        w: Option<usize>,
    ) -> Result<(), CoordError> {
        check_key(key)?;
        let view = self.view();
        forming(&view)?;
        let _running = view.begin();
        let slots = plan::write_plan(&view, partition_of(key)).slots;
        let w = Self::quorum("W", w, self.config.w, slots.len())?;
        let results = futures::future::join_all(
            slots
                .iter()
                .map(|t| async move { (t, self.replicate_to(t, key, object).await) }),
        )
        .await;
        let mut failures = Vec::new();
        let mut got = 0;
        for (t, r) in results {
            match r {
                Ok(()) => got += 1,
                Err(e) => failures.push(NodeFailure {
                    node: t.node.to_string(),
                    reason: Reason::Remote(e),
                }),
            }
        }
        if got >= w {
            Ok(())
        } else {
            Err(CoordError::WriteUnknown(QuorumFailure {
                needed: w,
                got,
                failures,
            }))
        }
    }

    /// The keys of partition `p` that hold a value, as the union of what up
    /// to R of its live owners hold (this node first), so a key one owner
    /// has not received yet still shows. Fails only when no owner answers.
    pub async fn scan_partition(self: &Arc<Self>, p: usize) -> Result<Vec<Vec<u8>>, CoordError> {
        let view = self.view();
        let mut owners = plan::owners(&view, p);
        owners.sort_by_key(|t| (t.node != self.me, !t.live));
        let asked = self.config.r.clamp(1, owners.len().max(1));
        owners.truncate(asked);
        let req = Arc::new(Request::ScanPartition {
            partition: u16::try_from(p).unwrap_or(u16::MAX),
        });
        let call = |t: Target| -> Call<'static, Target, Vec<Vec<u8>>> {
            let (me, req) = (self.clone(), req.clone());
            async move {
                let r = if t.node == me.me {
                    let now = me.replica.now_ms();
                    me.replica
                        .off_runtime(move |r| r.live_keys(p, now))
                        .await
                        .map_err(|e| Reason::Store(e.to_string()))
                } else {
                    ask::<Keys>(&*me.transport, t.addr, &req, me.config.timeout)
                        .await
                        .map(|Keys(k)| k)
                        .map_err(|e| e.reason())
                };
                (t, r)
            }
            .boxed()
        };
        let spec = Spec {
            needed: 1,
            sets: None,
            strategy: Strategy::All,
            deadline: tokio::time::Instant::now() + self.config.timeout,
            hedge_after: None,
        };
        // One answer is enough to go on; the union of every answer that
        // comes in time is what is returned.
        let mut out = drive(owners, spec, call, |_| None).await;
        out.finish().await;
        if out.tracker.successes() == 0 {
            return Err(CoordError::ReadQuorum(out.tracker.report()));
        }
        let keys: std::collections::BTreeSet<Vec<u8>> =
            out.replies.into_iter().flat_map(|(_, k)| k).collect();
        Ok(keys.into_iter().collect())
    }

    /// An estimate of the keys the cluster holds: the keys with a live value
    /// this node stores for the partitions it owns, scaled to all
    /// partitions (exact when every node owns every partition, as with 3
    /// nodes and N=3, once this node caught up with its peers).
    pub fn dbsize_estimate(&self) -> u64 {
        let view = self.view();
        let Some(me) = view.index_of(&self.me) else {
            return 0;
        };
        let (mut owned, mut keys) = (0u64, 0u64);
        for p in 0..crate::keyspace::PARTITIONS {
            if view.owns(me, p) {
                owned += 1;
                keys += self.replica.live_count(p);
            }
        }
        if owned == 0 {
            return 0;
        }
        keys * crate::keyspace::PARTITIONS as u64 / owned
    }
}

/// The report of a quorum that was not met: the failures, and the replicas
/// still unanswered (timed out if the time ran out, else given up on once
/// the quorum could no longer be met).
fn unmet(tracker: &Tracker) -> QuorumFailure {
    let mut report = tracker.report();
    if tracker.outstanding() > 0 {
        let reason = if tracker.state() == State::Failed {
            Reason::NoAnswer
        } else {
            Reason::Timeout
        };
        report.failures.push(NodeFailure {
            node: format!("{} replica(s)", tracker.outstanding()),
            reason,
        });
    }
    report
}

/// Refuses requests while this node follows no layout yet.
fn forming(view: &ClusterView) -> Result<(), CoordError> {
    if view.layout().version == 0 {
        return Err(CoordError::Unavailable(
            "the cluster is forming: this node has no layout yet (it appears within a few \
             seconds of the nodes finding each other; see RING)"
                .into(),
        ));
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), CoordError> {
    if key.len() > MAX_KEY_LEN {
        return Err(CoordError::Invalid(format!(
            "key too large: {} bytes (the limit is {MAX_KEY_LEN})",
            key.len()
        )));
    }
    Ok(())
}
