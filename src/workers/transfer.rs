//! Moving partitions when the layout changes (orders come from the layout
//! steward, [`crate::cluster::steward`]):
//!
//! - **Sync**: pull every partition this node owns in the new layout and
//!   did not own in the previous one from its previous owners. For each
//!   partition it asks every live previous owner for the `(key, digest)`
//!   list (`AaeKeys` over all buckets), fetches the keys whose copy differs
//!   from its own (`FetchMany`, a batch at a time), merges them in and waits
//!   for them to be durable. A partition counts as held once enough
//!   previous owners answered that every write they acknowledged is seen
//!   (all but W−1 of them); it is recorded in `DATA/transfer`, so a
//!   restarted node resumes where it stopped. Reads stay on the previous
//!   owners meanwhile, and writes reach both sets, so the new owner misses
//!   nothing. It reports the layout synced once every partition is held
//!   and no hint stored before the change began is left here.
//! - **Drop**: once the change is carried out everywhere, delete the
//!   partitions this node no longer owns, and start a new vector-clock
//!   epoch (should a partition come back here, this node must never make a
//!   dot it made before with an empty copy).
//!
//! Transfers are paced by `--transfer-mb-per-s` and report their progress
//! ([`TransferStats`]) in STATUS and RING.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_bytes::ByteBuf;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Next, Worker};
use crate::cluster::assign::Assignment;
use crate::cluster::layout::Layout;
use crate::cluster::steward::{Order, Shared, Stamp};
use crate::hints::Hints;
use crate::keyspace::{BUCKETS, PARTITIONS};
use crate::replica::Replica;
use crate::rpc::call::{KeyDigests, Objects};
use crate::rpc::message::MAX_FETCH_KEYS;
use crate::rpc::{Request, Transport, ask};

/// Name of the transfer progress file in the data directory.
pub const PROGRESS_FILE: &str = "transfer";
/// Keys fetched per request.
const FETCH_BATCH: usize = 256;
/// Pause before a partition that failed is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Progress of the transfers, for STATUS and RING.
#[derive(Debug, Default)]
pub struct TransferStats {
    /// The layout version being synced (0: none).
    pub version: AtomicU64,
    /// Partitions to pull for it.
    pub partitions: AtomicU64,
    /// Partitions held so far.
    pub done: AtomicU64,
    /// Keys received (since start).
    pub keys: AtomicU64,
    /// Bytes received (since start).
    pub bytes: AtomicU64,
    /// Keys dropped after changes were carried out (since start).
    pub dropped: AtomicU64,
    /// Partitions pulled (since start): the copies changes moved here.
    pub pulled: AtomicU64,
    /// Milliseconds spent pulling (since start), for the rate.
    pub busy_ms: AtomicU64,
}

impl TransferStats {
    /// One line: partitions held of those to pull, bytes, rate.
    pub fn line(&self) -> String {
        let version = self.version.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let ms = self.busy_ms.load(Ordering::Relaxed).max(1);
        let rate = bytes as f64 / 1e6 / (ms as f64 / 1e3);
        if version == 0 {
            format!(
                "idle; {} partitions, {} keys, {} bytes received, {} keys dropped since start",
                self.pulled.load(Ordering::Relaxed),
                self.keys.load(Ordering::Relaxed),
                bytes,
                self.dropped.load(Ordering::Relaxed)
            )
        } else {
            format!(
                "layout {version}: {} of {} partitions held, {} keys, {} bytes received ({rate:.1} MB/s)",
                self.done.load(Ordering::Relaxed),
                self.partitions.load(Ordering::Relaxed),
                self.keys.load(Ordering::Relaxed),
                bytes
            )
        }
    }
}

/// The transfer worker; see the module doc.
pub struct Transfer {
    me: Arc<str>,
    replica: Arc<Replica>,
    hints: Arc<Hints>,
    transport: Arc<dyn Transport>,
    orders: watch::Receiver<Order>,
    layouts: Arc<Shared>,
    w: usize,
    timeout: Duration,
    /// Bytes per second (0: unpaced).
    rate: u64,
    file: Option<PathBuf>,
    stats: Arc<TransferStats>,
    /// The layout being synced, its partitions to pull and those held.
    job: Option<Job>,
}

struct Job {
    layout: Arc<Layout>,
    stamp: Stamp,
    todo: Vec<usize>,
    done: BTreeSet<usize>,
    /// Hints held when the job began: all must be delivered first.
    hints_before: Vec<(String, Vec<u8>)>,
    reported: bool,
}

impl Transfer {
    /// A transfer worker for node `me`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: Arc<str>,
        replica: Arc<Replica>,
        hints: Arc<Hints>,
        transport: Arc<dyn Transport>,
        orders: watch::Receiver<Order>,
        layouts: Arc<Shared>,
        w: usize,
        timeout: Duration,
        mb_per_s: u64,
        data_dir: Option<PathBuf>,
        stats: Arc<TransferStats>,
    ) -> Transfer {
        Transfer {
            me,
            replica,
            hints,
            transport,
            orders,
            layouts,
            w,
            timeout,
            rate: mb_per_s.saturating_mul(1 << 20),
            file: data_dir.map(|d| d.join(PROGRESS_FILE)),
            stats,
            job: None,
        }
    }

    fn start_job(&mut self, layout: Arc<Layout>) {
        let stamp = (layout.version, layout.hash());
        let Some(prev) = &layout.previous else { return };
        let todo: Vec<usize> = (0..PARTITIONS)
            .filter(|&p| owns(&layout.current, &self.me, p) && !owns(prev, &self.me, p))
            .collect();
        let done = self.load_progress(stamp);
        self.stats.version.store(stamp.0, Ordering::Relaxed);
        self.stats
            .partitions
            .store(todo.len() as u64, Ordering::Relaxed);
        self.stats.done.store(
            todo.iter().filter(|p| done.contains(p)).count() as u64,
            Ordering::Relaxed,
        );
        info!(
            version = stamp.0,
            partitions = todo.len(),
            resumed = done.len(),
            "pulling the partitions the new layout gives this node"
        );
        self.job = Some(Job {
            layout,
            stamp,
            todo,
            done,
            hints_before: self.hints.held(),
            reported: false,
        });
    }

    fn load_progress(&self, stamp: Stamp) -> BTreeSet<usize> {
        let Some(f) = &self.file else {
            return BTreeSet::new();
        };
        let Ok(text) = std::fs::read_to_string(f) else {
            return BTreeSet::new();
        };
        let mut lines = text.lines();
        if lines.next() != Some(&crate::cluster::steward::stamp_text(stamp))
            || !text.ends_with('\n')
        {
            return BTreeSet::new();
        }
        lines
            .flat_map(|l| l.split_whitespace())
            .filter_map(|p| p.parse().ok())
            .filter(|&p: &usize| p < PARTITIONS)
            .collect()
    }

    fn save_progress(&self, job: &Job) {
        let Some(f) = &self.file else { return };
        let parts: Vec<String> = job.done.iter().map(usize::to_string).collect();
        let text = format!(
            "{}\n{}\n",
            crate::cluster::steward::stamp_text(job.stamp),
            parts.join(" ")
        );
        if let Err(e) = crate::durable::write_atomic(f, text.as_bytes()) {
            warn!(cause = %e, "cannot record transfer progress (a restart pulls again)");
        }
    }

    /// Pulls partition `p` from its previous owners; true once held.
    async fn pull(&self, layout: &Layout, p: usize) -> bool {
        let Some(prev) = &layout.previous else {
            return true;
        };
        let sources: Vec<(Arc<str>, std::net::SocketAddr)> = prev
            .owners(p)
            .iter()
            .map(|&i| prev.members()[usize::from(i)].clone())
            .filter(|id| **id != *self.me)
            .filter_map(|id| layout.node(&id).map(|n| (id.clone(), n.addr)))
            .collect();
        // Every write the previous owners acknowledged reached W of them:
        // all but W-1 must answer for none to be missed.
        let needed = prev
            .owners(p)
            .len()
            .saturating_sub(self.w.saturating_sub(1))
            .max(1);
        let needed = needed.min(sources.len().max(1));
        let mut answered = 0;
        for (id, addr) in &sources {
            match self.pull_from(p, *addr).await {
                Ok(()) => answered += 1,
                Err(e) => {
                    warn!(partition = p, from = %id, cause = %e, "cannot pull a partition yet")
                }
            }
        }
        answered >= needed || sources.is_empty()
    }

    async fn pull_from(&self, p: usize, addr: std::net::SocketAddr) -> Result<(), String> {
        let started = std::time::Instant::now();
        let all: Vec<u8> = (0..BUCKETS as u8).collect();
        let req = Request::AaeKeys {
            partition: p as u16,
            buckets: all.clone(),
        };
        let KeyDigests(theirs) = ask::<KeyDigests>(&*self.transport, addr, &req, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let ours: HashMap<Vec<u8>, u64> = self
            .replica
            .store()
            .partition_digests(p, &all)
            .into_iter()
            .collect();
        let wanted: Vec<Vec<u8>> = theirs
            .into_iter()
            .filter(|(k, d)| ours.get(k) != Some(d))
            .map(|(k, _)| k)
            .collect();
        let mut last_lsn = 0;
        for batch in wanted.chunks(FETCH_BATCH.min(MAX_FETCH_KEYS)) {
            let req = Request::FetchMany {
                keys: batch.iter().cloned().map(ByteBuf::from).collect(),
            };
            let Objects(objects) = ask::<Objects>(&*self.transport, addr, &req, self.timeout)
                .await
                .map_err(|e| e.to_string())?;
            if objects.len() != batch.len() {
                return Err("the answer has another number of copies than keys asked".into());
            }
            let mut bytes = 0u64;
            for (key, object) in batch.iter().zip(objects) {
                let Some(object) = object else { continue };
                bytes +=
                    (key.len() + object.values().iter().map(|v| v.len()).sum::<usize>()) as u64;
                let m = self
                    .replica
                    .merge(key, &object)
                    .map_err(|e| e.to_string())?;
                last_lsn = last_lsn.max(m.lsn);
            }
            self.stats
                .keys
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
            if self.rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(bytes as f64 / self.rate as f64)).await;
            }
        }
        // Held only once durable.
        self.replica
            .durable(last_lsn)
            .wait()
            .await
            .map_err(|e| e.to_string())?;
        self.stats
            .busy_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn drop_partitions(&self, previous: &Assignment, layout: &Layout) {
        let gone: Vec<usize> = (0..PARTITIONS)
            .filter(|&p| owns(previous, &self.me, p) && !owns(&layout.current, &self.me, p))
            .collect();
        if gone.is_empty() {
            return;
        }
        let (mut keys, mut lsn) = (0, 0);
        for p in &gone {
            match self.replica.drop_partition(*p) {
                Ok((n, l)) => {
                    keys += n;
                    lsn = lsn.max(l);
                }
                Err(e) => {
                    warn!(partition = p, cause = %e, "cannot drop a partition no longer owned")
                }
            }
        }
        let _ = self.replica.durable(lsn).wait().await;
        self.stats.dropped.fetch_add(keys as u64, Ordering::Relaxed);
        info!(
            partitions = gone.len(),
            keys, "dropped the partitions this node no longer owns"
        );
        self.replica
            .actor()
            .renew("this node dropped partitions it no longer owns");
    }
}

/// True when `me` replicates partition `p` in assignment `a`.
fn owns(a: &Assignment, me: &str, p: usize) -> bool {
    a.owners(p)
        .iter()
        .any(|&i| *a.members()[usize::from(i)] == *me)
}

#[async_trait]
impl Worker for Transfer {
    fn name(&self) -> &'static str {
        "transfer"
    }

    async fn work(&mut self) -> Next {
        if self.orders.has_changed().unwrap_or(false) {
            let order = self.orders.borrow_and_update().clone();
            match order {
                Order::Idle => {
                    self.job = None;
                    self.stats.version.store(0, Ordering::Relaxed);
                }
                Order::Sync(layout) => self.start_job(layout),
                Order::Drop { previous, layout } => {
                    self.job = None;
                    self.stats.version.store(0, Ordering::Relaxed);
                    self.drop_partitions(&previous, &layout).await;
                    if let Some(f) = &self.file {
                        let _ = crate::durable::remove(f);
                    }
                }
            }
        }
        self.layouts.report_progress(self.stats.line());
        let Some(job) = self.job.as_ref() else {
            return Next::Idle(Duration::from_millis(200));
        };
        let layout = job.layout.clone();
        let next = job.todo.iter().copied().find(|p| !job.done.contains(p));
        if let Some(p) = next {
            if self.pull(&layout, p).await {
                if let Some(job) = self.job.as_mut() {
                    job.done.insert(p);
                }
                self.stats.done.fetch_add(1, Ordering::Relaxed);
                self.stats.pulled.fetch_add(1, Ordering::Relaxed);
                if let Some(job) = self.job.as_ref() {
                    self.save_progress(job);
                }
                return Next::Busy;
            }
            return Next::Idle(RETRY);
        }
        let Some(job) = self.job.as_mut() else {
            return Next::Idle(Duration::from_millis(200));
        };
        // Every partition held: wait for older hints to be handed off.
        job.hints_before.retain(|(o, k)| self.hints.holds(o, k));
        if !job.hints_before.is_empty() {
            return Next::Idle(Duration::from_millis(200));
        }
        if !job.reported {
            job.reported = true;
            self.layouts.report_synced(job.stamp);
        }
        Next::Idle(Duration::from_millis(200))
    }

    fn status(&self) -> String {
        self.stats.line()
    }
}
