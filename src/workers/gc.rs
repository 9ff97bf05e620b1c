//! Tombstone collection: a delete leaves a tombstone on every replica (so
//! that a stale copy cannot bring the value back); once it is old enough
//! and every node agrees, the tombstone itself is deleted, in two phases
//! (Garage's `gc.rs`, made stricter; docs/failures.md):
//!
//! - the partition's primary owner looks for keys whose every version is a
//!   tombstone older than the grace period (`--tombstone-grace-s`);
//! - only while the layout is settled (no partition moving) and every
//!   member is live (a node that is down may hold an older copy or a hint);
//! - **phase 1**: every other member is sent the tombstone (`GcPrepare`):
//!   owners merge it in; each answers ready only if its copy is exactly
//!   that tombstone (or, for a non-owner, absent) and it holds no hint for
//!   the key. One "not ready" or one failure and the key waits for a later
//!   round;
//! - **phase 2**: every member deletes the key if its copy is still that
//!   tombstone (`GcDelete`, compare-and-delete by digest), this node last.
//!   A write that arrived meanwhile changed the copy, so it is kept.
//!
//! So a replica that was down during the delete still has the tombstone
//! delivered (hint or anti-entropy) before anyone collects, and a hint for
//! the key, however late, is handed off first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{debug, info};

use super::{Next, Worker};
use crate::cluster::ClusterView;
use crate::hints::Hints;
use crate::keyspace::{PARTITIONS, digest};
use crate::object::Object;
use crate::replica::{Replica, load_object};
use crate::rpc::call::{GcDeleted, GcReady};
use crate::rpc::{Answer, Request, Transport, ask};

/// Keys looked at per round.
const SCAN_PER_ROUND: usize = 4096;
/// Tombstones collected per round at most.
const COLLECT_PER_ROUND: usize = 64;

/// Counters for STATUS.
#[derive(Debug, Default)]
pub struct GcStats {
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Tombstones collected (deleted on every member).
    pub collected: AtomicU64,
    /// Tombstones old enough that some member was not ready for.
    pub deferred: AtomicU64,
}

/// The tombstone collector; see the module doc.
pub struct Gc {
    me: Arc<str>,
    replica: Arc<Replica>,
    hints: Arc<Hints>,
    transport: Arc<dyn Transport>,
    view: watch::Receiver<Arc<ClusterView>>,
    grace_ms: u64,
    interval: Duration,
    timeout: Duration,
    next_partition: usize,
    stats: Arc<GcStats>,
    waiting: String,
}

impl Gc {
    /// A collector for node `me`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: Arc<str>,
        replica: Arc<Replica>,
        hints: Arc<Hints>,
        transport: Arc<dyn Transport>,
        view: watch::Receiver<Arc<ClusterView>>,
        grace: Duration,
        timeout: Duration,
        stats: Arc<GcStats>,
    ) -> Gc {
        Gc {
            me,
            replica,
            hints,
            transport,
            view,
            grace_ms: grace.as_millis() as u64,
            // Look a few times per grace period, between 1 s and a minute.
            interval: (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            timeout,
            next_partition: 0,
            stats,
            waiting: String::new(),
        }
    }

    /// When every version of `o` became a tombstone (its newest write or
    /// deadline), or `None` if one still holds a value.
    fn tombstoned_at(o: &Object) -> Option<u64> {
        if !o.is_deleted() {
            return None;
        }
        o.siblings
            .iter()
            .map(|s| s.written_ms.max(s.expires_ms.unwrap_or(0)))
            .max()
    }

    /// Up to [`COLLECT_PER_ROUND`] keys of the partitions this node leads
    /// whose tombstone passed the grace period.
    fn candidates(&mut self, view: &ClusterView, me: usize) -> Vec<(Vec<u8>, Object, Vec<u8>)> {
        let now = self.replica.now_ms();
        let mut out = Vec::new();
        let mut scanned = 0;
        for _ in 0..PARTITIONS {
            let p = self.next_partition;
            self.next_partition = (self.next_partition + 1) % PARTITIONS;
            if view.current_owners(p).first() != Some(&(me as u16)) {
                continue;
            }
            for key in self.replica.store().partition_keys(p) {
                scanned += 1;
                if let Ok(Some((bytes, o))) = load_object(&**self.replica.store(), &key)
                    && Self::tombstoned_at(&o).is_some_and(|t| t + self.grace_ms <= now)
                {
                    out.push((key, o, bytes));
                    if out.len() >= COLLECT_PER_ROUND {
                        return out;
                    }
                }
            }
            if scanned >= SCAN_PER_ROUND {
                break;
            }
        }
        out
    }

    /// Sends `req` to every address at once; true when every one answers
    /// and `yes` holds for every answer.
    async fn all_say<A: Answer>(
        &self,
        to: &[std::net::SocketAddr],
        req: &Request,
        yes: impl Fn(A) -> bool,
    ) -> bool {
        let asks = to
            .iter()
            .map(|a| ask::<A>(&*self.transport, *a, req, self.timeout));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|r| r.is_ok_and(&yes))
    }

    /// Both phases for one key; true once it is gone everywhere.
    async fn collect(&self, view: &ClusterView, key: &[u8], object: &Object, bytes: &[u8]) -> bool {
        let d = digest(bytes);
        if !self.hints.owners_of(key).is_empty() {
            return false;
        }
        let others: Vec<std::net::SocketAddr> = view
            .members()
            .iter()
            .filter(|m| *m.id != *self.me)
            .map(|m| m.addr)
            .collect();
        let prepare = Request::GcPrepare {
            key: key.to_vec(),
            object: object.clone(),
        };
        if !self.all_say(&others, &prepare, |GcReady(ok)| ok).await {
            return false;
        }
        let delete = Request::GcDelete {
            key: key.to_vec(),
            digest: d,
        };
        if !self.all_say(&others, &delete, |GcDeleted(gone)| gone).await {
            return false;
        }
        match self.replica.delete_if_digest(key, d) {
            Ok((true, lsn)) => self.replica.durable(lsn).wait().await.is_ok(),
            _ => false,
        }
    }
}

#[async_trait]
impl Worker for Gc {
    fn name(&self) -> &'static str {
        "tombstone-gc"
    }

    async fn work(&mut self) -> Next {
        let view = self.view.borrow().clone();
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        if view.layout().version == 0 || view.layout().migrating() {
            self.waiting = "waiting for the layout to settle".into();
            return Next::Idle(self.interval);
        }
        if let Some(down) = view
            .members()
            .iter()
            .enumerate()
            .find(|(i, _)| !view.is_live_at(*i))
        {
            self.waiting = format!("waiting: {} is down", down.1.id);
            return Next::Idle(self.interval);
        }
        self.waiting.clear();
        let Some(me) = view.index_of(&self.me) else {
            return Next::Idle(self.interval);
        };
        let mut by_outcome: BTreeMap<bool, u64> = BTreeMap::new();
        for (key, object, bytes) in self.candidates(&view, me) {
            let done = self.collect(&view, &key, &object, &bytes).await;
            *by_outcome.entry(done).or_default() += 1;
            if !done {
                debug!(key = %String::from_utf8_lossy(&key), "tombstone not collected yet");
            }
        }
        let collected = by_outcome.get(&true).copied().unwrap_or(0);
        self.stats.collected.fetch_add(collected, Ordering::Relaxed);
        self.stats.deferred.fetch_add(
            by_outcome.get(&false).copied().unwrap_or(0),
            Ordering::Relaxed,
        );
        if collected > 0 {
            info!(collected, "tombstones collected");
        }
        Next::Idle(self.interval)
    }

    fn status(&self) -> String {
        format!(
            "{} rounds, {} tombstones collected, {} deferred{}{}",
            self.stats.rounds.load(Ordering::Relaxed),
            self.stats.collected.load(Ordering::Relaxed),
            self.stats.deferred.load(Ordering::Relaxed),
            if self.waiting.is_empty() { "" } else { "; " },
            self.waiting
        )
    }
}
