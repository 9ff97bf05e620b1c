//! Group commit: writers append under the writer lock and get a log sequence
//! number (LSN, bytes appended since open). A writer that needs durability
//! then calls [`GroupCommit::wait`]: if nobody is syncing, it becomes the
//! leader, fsyncs once for every write appended so far, and wakes everyone
//! whose LSN that covered; otherwise it sleeps until a leader covers it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

use crate::storage::StoreError;

/// A parked writer waiting for its LSN to become durable.
#[derive(Debug)]
struct Waiter {
    lsn: u64,
    thread: Thread,
    woken: Arc<AtomicBool>,
}

impl Waiter {
    fn wake(self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

#[derive(Debug, Default)]
struct State {
    syncing: bool,
    waiters: Vec<Waiter>,
}

/// Shared group-commit state.
///
/// Waiters park (no shared condvar, so a finished sync does not make every
/// waiter fight for a mutex). When a sync finishes, its leader unparks each
/// waiter it covered, plus exactly one uncovered waiter to lead the next
/// sync, which will cover all the others.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    synced: AtomicU64,
    poisoned: AtomicBool,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes covered waiters (all of them if poisoned) and, if `elect`, one
    /// uncovered waiter to lead the next sync.
    fn wake(&self, st: &mut State, elect: bool) {
        let synced = self.synced.load(Ordering::Acquire);
        let poisoned = self.poisoned.load(Ordering::Acquire);
        let mut elected = !elect;
        let mut keep = Vec::new();
        for w in st.waiters.drain(..) {
            if poisoned || w.lsn <= synced {
                w.wake();
            } else if !elected {
                elected = true;
                w.wake();
            } else {
                keep.push(w);
            }
        }
        st.waiters = keep;
    }

    /// Records that everything up to `lsn` is durable (e.g. after a rollover sync).
    pub fn mark_synced(&self, lsn: u64) {
        self.synced.fetch_max(lsn, Ordering::AcqRel);
        let mut st = self.lock();
        let elect = !st.syncing;
        self.wake(&mut st, elect);
    }

    /// Marks the store poisoned: every waiter and later writer fails.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        let mut st = self.lock();
        self.wake(&mut st, false);
    }

    /// True once a sync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Returns once `lsn` is durable. The leader calls `prepare` (under the
    /// group-commit lock) for the LSN appended so far and what to sync, then
    /// `sync` on it without the lock. At most one sync runs at a time.
    pub fn wait<T>(
        &self,
        lsn: u64,
        prepare: impl Fn() -> (u64, T),
        sync: impl Fn(T) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        loop {
            if self.is_poisoned() {
                return Err(StoreError::Poisoned);
            }
            if self.synced.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            let mut st = self.lock();
            if self.is_poisoned() || self.synced.load(Ordering::Acquire) >= lsn {
                continue;
            }
            if st.syncing {
                let woken = Arc::new(AtomicBool::new(false));
                st.waiters.push(Waiter {
                    lsn,
                    thread: std::thread::current(),
                    woken: woken.clone(),
                });
                drop(st);
                while !woken.load(Ordering::Acquire) {
                    std::thread::park();
                }
                continue;
            }
            let (target, what) = prepare();
            st.syncing = true;
            drop(st);
            let res = sync(what);
            match &res {
                Ok(()) => {
                    self.synced.fetch_max(target.max(lsn), Ordering::AcqRel);
                }
                Err(e) => {
                    tracing::error!(error = %e, "fsync failed; the store is poisoned");
                    self.poisoned.store(true, Ordering::Release);
                }
            }
            let mut st = self.lock();
            st.syncing = false;
            self.wake(&mut st, true);
            drop(st);
            return res.map_err(StoreError::Io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_waiters_share_syncs() {
        // 16 writers x 50 writes. Each sync takes 1 ms (a slow disk), during
        // which the other writers append and queue up: the next sync must
        // cover them all. Without sharing there would be one sync per write
        // (800); with it, about one per round of the 16 writers (~50-100).
        // Fewer than a quarter of the writes is a wide margin either way,
        // even on a loaded machine where a writer is late for a round or two.
        const THREADS: u64 = 16;
        const PER_THREAD: u64 = 50;
        let writes = THREADS * PER_THREAD;
        let gc = Arc::new(GroupCommit::default());
        let appended = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (gc, appended, syncs) = (gc.clone(), appended.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..PER_THREAD {
                        let lsn = appended.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait(
                            lsn,
                            || (appended.load(Ordering::SeqCst), ()),
                            |()| {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                Ok(())
                            },
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs >= 1);
        assert!(
            syncs * 4 < writes,
            "{syncs} syncs for {writes} writes: concurrent waiters did not share syncs"
        );
        // Every write was covered by a sync.
        assert_eq!(gc.synced.load(Ordering::SeqCst), writes);
    }

    #[test]
    fn failed_sync_poisons() {
        let gc = GroupCommit::default();
        assert!(matches!(
            gc.wait(1, || (1, ()), |()| Err(std::io::Error::other("eio"))),
            Err(StoreError::Io(_))
        ));
        assert!(matches!(
            gc.wait(1, || (1, ()), |()| Ok(())),
            Err(StoreError::Poisoned)
        ));
        assert!(gc.is_poisoned());
    }
}
