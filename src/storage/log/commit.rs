//! Group commit: writers append under the writer lock and get a log sequence
//! number (LSN, bytes appended since open). A writer that needs durability
//! then calls [`GroupCommit::wait`]: if nobody is syncing, it becomes the
//! leader, fsyncs once for every write appended so far, and wakes everyone
//! whose LSN that covered; otherwise it sleeps until a leader covers it.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::storage::StoreError;

#[derive(Debug, Default)]
struct State {
    synced: u64,
    syncing: bool,
    poisoned: bool,
}

/// Shared group-commit state.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    cv: Condvar,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that everything up to `lsn` is durable (e.g. after a rollover sync).
    pub fn mark_synced(&self, lsn: u64) {
        let mut st = self.lock();
        st.synced = st.synced.max(lsn);
        drop(st);
        self.cv.notify_all();
    }

    /// Marks the store poisoned: every waiter and later writer fails.
    pub fn poison(&self) {
        self.lock().poisoned = true;
        self.cv.notify_all();
    }

    /// True once a sync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// Returns once `lsn` is durable. `sync` fsyncs the log and returns the
    /// LSN it covered; it is called by at most one thread at a time.
    pub fn wait(
        &self,
        lsn: u64,
        sync: impl Fn() -> std::io::Result<u64>,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if st.poisoned {
                return Err(StoreError::Poisoned);
            }
            if st.synced >= lsn {
                return Ok(());
            }
            if st.syncing {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            drop(st);
            let res = sync();
            st = self.lock();
            st.syncing = false;
            match res {
                Ok(covered) => st.synced = st.synced.max(covered),
                Err(e) => {
                    tracing::error!(error = %e, "fsync failed; the store is poisoned");
                    st.poisoned = true;
                    self.cv.notify_all();
                    return Err(StoreError::Io(e));
                }
            }
            self.cv.notify_all();
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
        let gc = Arc::new(GroupCommit::default());
        let appended = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (gc, appended, syncs) = (gc.clone(), appended.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let lsn = appended.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait(lsn, || {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            Ok(appended.load(Ordering::SeqCst))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) <= 800);
    }

    #[test]
    fn failed_sync_poisons() {
        let gc = GroupCommit::default();
        assert!(matches!(
            gc.wait(1, || Err(std::io::Error::other("eio"))),
            Err(StoreError::Io(_))
        ));
        assert!(matches!(gc.wait(1, || Ok(1)), Err(StoreError::Poisoned)));
        assert!(gc.is_poisoned());
    }
}
