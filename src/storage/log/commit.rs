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
    /// LSN the in-flight sync will cover (valid while `syncing`).
    in_flight: u64,
    /// Number of syncs completed; waiters for sync `b` sleep on `cv[b % 2]`.
    batch: u64,
    poisoned: bool,
}

/// Shared group-commit state.
///
/// Waiters covered by the in-flight sync sleep on one condvar; later waiters
/// sleep on the other. When a sync finishes, its leader wakes all of the
/// first group (they are durable) and only one of the second (it leads the
/// next sync, which covers the whole group), so no waiter is woken just to
/// go back to sleep.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    cv: [Condvar; 2],
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify_everyone(&self) {
        self.cv[0].notify_all();
        self.cv[1].notify_all();
    }

    /// Records that everything up to `lsn` is durable (e.g. after a rollover sync).
    pub fn mark_synced(&self, lsn: u64) {
        let mut st = self.lock();
        st.synced = st.synced.max(lsn);
        drop(st);
        self.notify_everyone();
    }

    /// Marks the store poisoned: every waiter and later writer fails.
    pub fn poison(&self) {
        self.lock().poisoned = true;
        self.notify_everyone();
    }

    /// True once a sync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
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
        let mut st = self.lock();
        loop {
            if st.poisoned {
                return Err(StoreError::Poisoned);
            }
            if st.synced >= lsn {
                return Ok(());
            }
            if st.syncing {
                // Covered by the sync in flight, or by the next one.
                let b = if lsn <= st.in_flight {
                    st.batch
                } else {
                    st.batch + 1
                };
                st = self.cv[(b % 2) as usize]
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let (target, what) = prepare();
            st.syncing = true;
            st.in_flight = target.max(lsn);
            drop(st);
            let res = sync(what);
            st = self.lock();
            st.syncing = false;
            let done = st.batch;
            st.batch += 1;
            match res {
                Ok(()) => st.synced = st.synced.max(st.in_flight),
                Err(e) => {
                    tracing::error!(error = %e, "fsync failed; the store is poisoned");
                    st.poisoned = true;
                    drop(st);
                    self.notify_everyone();
                    return Err(StoreError::Io(e));
                }
            }
            self.cv[(done % 2) as usize].notify_all();
            self.cv[((done + 1) % 2) as usize].notify_one();
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
                        gc.wait(
                            lsn,
                            || (appended.load(Ordering::SeqCst), ()),
                            |()| {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
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
        assert!(syncs.load(Ordering::SeqCst) <= 800);
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
