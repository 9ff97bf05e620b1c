//! Background workers: hint delivery ([`handoff`]), anti-entropy
//! ([`anti_entropy`]), expiry ([`expiry`]), tombstone collection ([`gc`])
//! and partition transfers after a layout change ([`transfer`]) share one [`Worker`] trait and one runner
//! ([`Workers`]), which tracks their tasks so that shutdown can cancel them
//! and wait for them to finish before the store is closed. (The storage
//! engine's own maintenance, hint files and compaction, runs on the store's
//! threads and stops when the store is closed.)
//!
//! A worker does one bounded unit of work per [`Worker::work`] call and says
//! whether more is waiting ([`Next::Busy`]) or when to come back
//! ([`Next::Idle`]). Cancellation happens between units, never inside one.

pub mod anti_entropy;
pub mod expiry;
pub mod gc;
pub mod handoff;
pub mod transfer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

/// What a worker wants after one unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// More work is waiting: run again at once.
    Busy,
    /// Nothing to do for this long.
    Idle(Duration),
    /// The worker is done for good.
    Done,
}

/// A background job. See the module doc.
#[async_trait]
pub trait Worker: Send + 'static {
    /// A short name for logs and STATUS.
    fn name(&self) -> &'static str;
    /// One bounded unit of work.
    async fn work(&mut self) -> Next;
    /// One line of status for STATUS.
    fn status(&self) -> String;
}

/// Runs workers on tracked tasks until cancelled.
#[derive(Clone, Default)]
pub struct Workers {
    tracker: TaskTracker,
    cancel: CancellationToken,
    statuses: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Workers {
        Workers::default()
    }

    /// Starts `worker` on its own task.
    pub fn spawn(&self, mut worker: impl Worker) {
        let cancel = self.cancel.clone();
        let statuses = self.statuses.clone();
        self.tracker.spawn(async move {
            let name = worker.name();
            debug!(worker = name, "worker started");
            loop {
                if cancel.is_cancelled() {
                    break;
                }
                let next = worker.work().await;
                statuses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, worker.status());
                match next {
                    Next::Busy => tokio::task::yield_now().await,
                    Next::Idle(d) => {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(d) => {}
                        }
                    }
                    Next::Done => break,
                }
            }
            debug!(worker = name, "worker stopped");
        });
    }

    /// Each worker's last status line, by name.
    pub fn statuses(&self) -> BTreeMap<&'static str, String> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tells every worker to stop after its current unit, and waits (at most
    /// `within`) until they have.
    pub async fn stop(&self, within: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_err()
        {
            info!("background workers did not stop in time; stopping without them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter {
        units: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        async fn work(&mut self) -> Next {
            // A unit of work that takes a while: shutdown waits for it.
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.units.fetch_add(1, Ordering::SeqCst);
            Next::Idle(Duration::from_millis(10))
        }
        fn status(&self) -> String {
            format!("{} units", self.units.load(Ordering::SeqCst))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_waits_for_the_unit_in_progress() {
        let units = Arc::new(AtomicUsize::new(0));
        let workers = Workers::new();
        workers.spawn(Counter {
            units: units.clone(),
        });
        tokio::time::sleep(Duration::from_millis(95)).await;
        let seen = units.load(Ordering::SeqCst);
        assert!(seen >= 2);
        workers.stop(Duration::from_secs(5)).await;
        // The unit that was running finished; none started after.
        let after = units.load(Ordering::SeqCst);
        assert!(after == seen || after == seen + 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(units.load(Ordering::SeqCst), after);
        assert_eq!(
            workers.statuses().get("counter"),
            Some(&format!("{after} units"))
        );
    }
}
