//! Active expiry: turns versions whose deadline passed into tombstones on
//! this node's copy, so expired keys stop taking space and anti-entropy
//! sees the same object everywhere. Reads never need it (a read hides
//! expired versions at once); it is housekeeping.
//!
//! Each replica expires its own copy: the deadline travels with the version,
//! so every replica makes the same tombstone without talking to the others.
//! The replica's [`Deadlines`](crate::replica::Deadlines) index says which
//! keys are due; after a start (or if the index overflowed) the worker first
//! walks the store one partition per unit to rebuild it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use super::{Next, Worker};
use crate::keyspace::PARTITIONS;
use crate::replica::Replica;

/// Keys expired per unit of work.
const BATCH: usize = 256;
/// The longest the worker sleeps, so new deadlines are noticed.
const MAX_IDLE: Duration = Duration::from_millis(250);

/// The expiry worker.
pub struct Expiry {
    replica: Arc<Replica>,
    /// The next partition of a full scan, if one is under way.
    scanning: Option<usize>,
    expired: u64,
    scans: u64,
}

impl Expiry {
    /// A worker expiring `replica`'s keys.
    pub fn new(replica: Arc<Replica>) -> Expiry {
        Expiry {
            replica,
            scanning: None,
            expired: 0,
            scans: 0,
        }
    }
}

#[async_trait]
impl Worker for Expiry {
    fn name(&self) -> &'static str {
        "expiry"
    }

    async fn work(&mut self) -> Next {
        let deadlines = self.replica.deadlines();
        if self.scanning.is_none() && deadlines.take_full_scan() {
            self.scanning = Some(0);
        }
        if let Some(p) = self.scanning {
            // It reads every object of the partition: off the runtime's threads.
            match self
                .replica
                .off_runtime(move |r| r.index_partition(p))
                .await
            {
                Ok(n) => self.expired += n as u64,
                Err(e) => warn!(partition = p, cause = %e, "expiry scan failed; moving on"),
            }
            self.scanning = (p + 1 < PARTITIONS).then_some(p + 1);
            if self.scanning.is_none() {
                self.scans += 1;
            }
            return Next::Busy;
        }
        let now = self.replica.now_ms();
        let due = deadlines.due(now, BATCH);
        let full = due.len() == BATCH;
        for key in due {
            match self.replica.expire_now(&key) {
                Ok(changed) => self.expired += u64::from(changed),
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(&key), cause = %e, "could not expire a key")
                }
            }
        }
        if full {
            return Next::Busy;
        }
        let wait = deadlines
            .next()
            .map_or(MAX_IDLE, |at| Duration::from_millis(at.saturating_sub(now)))
            .clamp(Duration::from_millis(1), MAX_IDLE);
        Next::Idle(wait)
    }

    fn status(&self) -> String {
        format!(
            "expired {} keys, {} deadlines indexed, {} full scans{}",
            self.expired,
            self.replica.deadlines().len(),
            self.scans,
            if self.scanning.is_some() {
                " (scanning)"
            } else {
                ""
            }
        )
    }
}
