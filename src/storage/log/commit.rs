//! Group commit: writers append under the writer lock and get a log
//! sequence number (LSN, bytes appended since open); none of them fsyncs.
//! One *syncer* thread does: whenever some LSN beyond the synced one has
//! been asked for, it takes the LSN appended so far, fsyncs once, and
//! publishes the new synced LSN. Every write that arrived while a sync ran
//! is covered by the next one, across every connection and peer, and no
//! writer ever waits on a thread hand-off of its own.
//!
//! Async writers wait on a `watch` channel ([`GroupCommit::subscribe`]);
//! blocking callers (tools, benchmarks, tests) on a condition variable
//! ([`GroupCommit::wait`]). A failed fsync poisons the store: every waiter
//! and every later writer fails, because the kernel may have dropped the
//! dirty pages that failed to sync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::observe::histogram::{BATCH_BOUNDS, Histogram};
use crate::storage::{Lsn, StoreError, SyncState};

/// How long the syncer waits for a request before it calls its `idle`
/// callback.
const IDLE_FLUSH: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct State {
    /// Highest LSN someone asked to be synced.
    requested: Lsn,
    /// True while the syncer sleeps waiting for a request.
    syncer_waiting: bool,
    /// The syncer exits once nothing more is requested.
    stop: bool,
    /// Requests made since the syncer last took the sync point.
    requests_since_sync: u64,
    /// Threads blocked in [`GroupCommit::wait`] (a sync wakes them only
    /// when there are some: a wake is a system call even with no waiter).
    blocked: usize,
}

/// Shared group-commit state. See the module doc.
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    /// Wakes the syncer.
    wake_syncer: Condvar,
    /// Wakes blocking waiters after each sync.
    done: Condvar,
    synced: AtomicU64,
    poisoned: AtomicBool,
    tx: watch::Sender<SyncState>,
    /// Syncs made by the syncer (for STATUS: appends per sync).
    syncs: AtomicU64,
    /// How long each of the syncer's fsyncs took.
    pub(crate) sync_latency: Histogram,
    /// Requests each of the syncer's fsyncs served (writers that waited
    /// for it): the group commit's batch size.
    pub(crate) batch: Histogram,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::default(),
            wake_syncer: Condvar::new(),
            done: Condvar::new(),
            synced: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            tx: watch::Sender::new(SyncState::default()),
            syncs: AtomicU64::new(0),
            sync_latency: Histogram::latency(),
            batch: Histogram::new(BATCH_BOUNDS),
        }
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of the synced LSN (and the poison flag).
    pub fn subscribe(&self) -> watch::Receiver<SyncState> {
        self.tx.subscribe()
    }

    /// The LSN known to be on disk.
    pub fn synced(&self) -> Lsn {
        self.synced.load(Ordering::Acquire)
    }

    /// Syncs the syncer made.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// True once a sync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Asks for everything up to `lsn` to be synced; returns at once.
    pub fn request(&self, lsn: Lsn) {
        if self.synced() >= lsn || self.is_poisoned() {
            return;
        }
        let mut st = self.lock();
        st.requests_since_sync += 1;
        if lsn > st.requested {
            st.requested = lsn;
            // One wake-up per sleep of the syncer, made after the lock is
            // released so that the syncer does not wake only to block on it.
            if std::mem::take(&mut st.syncer_waiting) {
                drop(st);
                self.wake_syncer.notify_one();
            }
        }
    }

    /// Blocks until `lsn` is synced (asking for it first).
    pub fn wait(&self, lsn: Lsn) -> Result<(), StoreError> {
        loop {
            if self.is_poisoned() {
                return Err(StoreError::Poisoned);
            }
            if self.synced() >= lsn {
                return Ok(());
            }
            let mut st = self.lock();
            if self.is_poisoned() || self.synced() >= lsn {
                continue;
            }
            st.requests_since_sync += 1;
            if lsn > st.requested {
                st.requested = lsn;
                if std::mem::take(&mut st.syncer_waiting) {
                    self.wake_syncer.notify_one();
                }
            }
            if st.stop {
                return Err(StoreError::Closed);
            }
            st.blocked += 1;
            let mut st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
            st.blocked -= 1;
        }
    }

    /// Records that everything up to `lsn` is durable (a sync made outside
    /// the syncer: a rollover, the interval thread, a flush).
    pub fn mark_synced(&self, lsn: Lsn) {
        let before = self.synced.fetch_max(lsn, Ordering::AcqRel);
        if lsn > before {
            self.publish();
        }
    }

    /// Marks the store poisoned: every waiter and later writer fails.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        self.publish();
    }

    /// Tells waiters what changed.
    fn publish(&self) {
        self.tx.send_replace(SyncState {
            synced: self.synced(),
            poisoned: self.is_poisoned(),
        });
        let st = self.lock();
        if st.blocked > 0 {
            self.done.notify_all();
        }
    }

    /// Makes the syncer exit once every request so far is served.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        self.wake_syncer.notify_all();
        self.done.notify_all();
    }

    /// The syncer thread's body: until [`GroupCommit::stop`], waits for a
    /// request, then calls `prepare` for the LSN appended so far and what to
    /// sync, and `sync` on it, covering every request made meanwhile. When
    /// the previous sync served more than one request, it first lets writes
    /// gather until `window` after that sync began. After [`IDLE_FLUSH`]
    /// without a request it calls `idle` (the log store writes out records
    /// nobody waits for).
    pub fn run_syncer<T>(
        &self,
        window: Duration,
        prepare: impl Fn() -> (Lsn, T),
        sync: impl Fn(T) -> std::io::Result<()>,
        idle: impl Fn(),
    ) {
        let mut last = Instant::now();
        let mut crowded = false;
        loop {
            // Under concurrent load, let writes gather for up to `window`
            // since the last sync began: each fsync costs the same whatever
            // it covers, so fewer, fuller syncs leave the CPU to requests.
            // A lone writer (the last sync covered one request) never waits.
            let since = last.elapsed();
            if crowded && since < window {
                std::thread::sleep(window - since);
            }
            {
                let mut st = self.lock();
                loop {
                    if self.is_poisoned() {
                        return;
                    }
                    if st.requested > self.synced() {
                        crowded = st.requests_since_sync > 1;
                        self.batch.observe(st.requests_since_sync as f64);
                        st.requests_since_sync = 0;
                        break;
                    }
                    if st.stop {
                        return;
                    }
                    st.syncer_waiting = true;
                    let (guard, waited) = self
                        .wake_syncer
                        .wait_timeout(st, IDLE_FLUSH)
                        .unwrap_or_else(|e| e.into_inner());
                    st = guard;
                    st.syncer_waiting = false;
                    if waited.timed_out() {
                        drop(st);
                        idle();
                        st = self.lock();
                    }
                }
            }
            last = Instant::now();
            let (target, what) = prepare();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            let began = Instant::now();
            let synced = sync(what);
            self.sync_latency.observe_duration(began.elapsed());
            match synced {
                Ok(()) => self.mark_synced(target),
                Err(e) => {
                    tracing::error!(error = %e, "fsync failed; the store is poisoned");
                    self.poison();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A group commit with its syncer thread over a fake log: `appended` is
    /// the LSN written so far, each sync takes `sync_time` and is counted.
    fn harness(
        sync_time: Duration,
    ) -> (
        Arc<GroupCommit>,
        Arc<AtomicU64>,
        Arc<AtomicU64>,
        std::thread::JoinHandle<()>,
    ) {
        let gc = Arc::new(GroupCommit::default());
        let appended = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let syncer = {
            let (gc, appended, syncs) = (gc.clone(), appended.clone(), syncs.clone());
            std::thread::spawn(move || {
                gc.run_syncer(
                    Duration::ZERO,
                    || (appended.load(Ordering::SeqCst), ()),
                    |()| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(sync_time);
                        Ok(())
                    },
                    || {},
                )
            })
        };
        (gc, appended, syncs, syncer)
    }

    #[test]
    fn concurrent_waiters_share_syncs() {
        // 16 writers x 50 writes with a 2 ms sync: without sharing there
        // would be 800 syncs. While one sync runs every other writer appends
        // and waits, so each sync covers many writes.
        let (gc, appended, syncs, syncer) = harness(Duration::from_millis(2));
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let (gc, appended) = (gc.clone(), appended.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let lsn = appended.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait(lsn).unwrap();
                        assert!(gc.synced() >= lsn);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!(n <= 400, "{n} syncs for 800 writes: not shared");
        assert!(n >= 50, "{n} syncs: each writer's last write needs one");
        gc.stop();
        syncer.join().unwrap();
    }

    #[tokio::test]
    async fn async_waiters_are_woken_by_the_syncer() {
        let (gc, appended, syncs, syncer) = harness(Duration::from_millis(1));
        let mut waits = Vec::new();
        for _ in 0..100 {
            let lsn = appended.fetch_add(1, Ordering::SeqCst) + 1;
            gc.request(lsn);
            waits.push(crate::storage::Durable::after(gc.subscribe(), lsn).wait());
        }
        for w in waits {
            w.await.unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) < 100);
        gc.stop();
        syncer.join().unwrap();
    }

    #[test]
    fn failed_sync_poisons() {
        let gc = Arc::new(GroupCommit::default());
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || {
                gc.run_syncer(
                    Duration::ZERO,
                    || (1, ()),
                    |()| Err(std::io::Error::other("eio")),
                    || {},
                )
            })
        };
        assert!(matches!(gc.wait(1), Err(StoreError::Poisoned)));
        assert!(gc.is_poisoned());
        assert!(matches!(gc.wait(2), Err(StoreError::Poisoned)));
        syncer.join().unwrap();
    }
}
