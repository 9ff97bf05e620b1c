//! Active anti-entropy: replicas compare the content summaries of the
//! partitions they share (see [`crate::storage::Summary`]) so keys nobody
//! reads still converge, and a node whose data directory was wiped is
//! refilled.
//!
//! Each round the worker takes the next live peer, asks for the roots of
//! every partition both of them replicate, then the buckets of differing
//! partitions, then the `(key, digest)` lists of differing buckets, and
//! syncs only the keys that differ: both sides end with the merge of both
//! copies. Summaries are kept exact by the stores as they write, so there is
//! no tree to rebuild and no copy of the key set. A round is bounded
//! ([`MAX_PARTITIONS_PER_ROUND`], [`MAX_KEYS_PER_ROUND`]) and starts at a
//! random partition, so keys that stay different cannot starve the rest.
//! A wrong summary only costs a useless comparison: every sync is a merge.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Next, Worker};
use crate::cluster::ClusterView;
use crate::keyspace::{BUCKETS, PARTITIONS};
use crate::object::Object;
use crate::replica::Replica;
use crate::rpc::call::{Acked, Hashes, Inspection, KeyDigests};
use crate::rpc::{Answer, Request, Transport, ask};

/// Partitions whose buckets are compared in one round with one peer.
const MAX_PARTITIONS_PER_ROUND: usize = 64;
/// Keys synced in one round with one peer (bandwidth bound).
const MAX_KEYS_PER_ROUND: usize = 2000;

/// Counters shown by STATUS.
#[derive(Debug, Default)]
pub struct AaeStats {
    /// Exchanges completed.
    pub rounds: AtomicU64,
    /// Key digests compared.
    pub keys_compared: AtomicU64,
    /// Keys synced.
    pub keys_repaired: AtomicU64,
}

/// The anti-entropy worker.
pub struct AntiEntropy {
    me: Arc<str>,
    replica: Arc<Replica>,
    transport: Arc<dyn Transport>,
    view: watch::Receiver<Arc<ClusterView>>,
    interval: Duration,
    timeout: Duration,
    turn: usize,
    stats: Arc<AaeStats>,
}

impl AntiEntropy {
    /// A worker for node `me`, one exchange every `interval`.
    pub fn new(
        me: Arc<str>,
        replica: Arc<Replica>,
        transport: Arc<dyn Transport>,
        view: watch::Receiver<Arc<ClusterView>>,
        interval: Duration,
        timeout: Duration,
        stats: Arc<AaeStats>,
    ) -> AntiEntropy {
        AntiEntropy {
            me,
            replica,
            transport,
            view,
            interval,
            timeout,
            turn: 0,
            stats,
        }
    }

    async fn ask<A: Answer>(&self, addr: std::net::SocketAddr, req: Request) -> Result<A, String> {
        ask::<A>(&*self.transport, addr, &req, self.timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// One exchange with `peer`; returns the number of keys synced.
    async fn exchange(&self, view: &ClusterView, peer: usize) -> Result<usize, String> {
        let addr = view.member(peer).addr;
        let Some(me) = view.index_of(&self.me) else {
            return Ok(0);
        };
        let shared: Vec<u16> = (0..PARTITIONS)
            .filter(|&p| view.owns(me, p) && view.owns(peer, p))
            .map(|p| p as u16)
            .collect();
        let catch_up = self.replica.catch_up();
        if shared.is_empty() {
            return Ok(0);
        }
        let Hashes(theirs) = self
            .ask(
                addr,
                Request::AaeRoots {
                    partitions: shared.clone(),
                },
            )
            .await?;
        let summary = self.replica.store().summary();
        // Equal roots: this partition holds what the peer holds.
        for (i, p) in shared.iter().enumerate() {
            if theirs.get(i) == Some(&summary.root(usize::from(*p))) {
                catch_up.caught_up(usize::from(*p));
            }
        }
        let start = rand::random::<u32>() as usize % shared.len();
        let differing: Vec<u16> = (0..shared.len())
            .map(|i| (start + i) % shared.len())
            .filter(|&i| theirs.get(i) != Some(&summary.root(usize::from(shared[i]))))
            .map(|i| shared[i])
            .take(MAX_PARTITIONS_PER_ROUND)
            .collect();
        let mut to_sync: BTreeSet<Vec<u8>> = BTreeSet::new();
        // The partitions whose differing keys are all in `to_sync`.
        let mut compared: Vec<u16> = Vec::new();
        for p in differing {
            let Hashes(their_buckets) =
                self.ask(addr, Request::AaeBuckets { partition: p }).await?;
            let ours = summary.buckets(usize::from(p));
            let buckets: Vec<u8> = (0..BUCKETS)
                .filter(|&b| their_buckets.get(b) != ours.get(b))
                .map(|b| b as u8)
                .collect();
            if buckets.is_empty() {
                compared.push(p);
                continue;
            }
            let req = Request::AaeKeys {
                partition: p,
                buckets: buckets.clone(),
            };
            let KeyDigests(their_keys) = self.ask(addr, req).await?;
            let their_keys: HashMap<Vec<u8>, u64> = their_keys.into_iter().collect();
            let our_keys: HashMap<Vec<u8>, u64> = self
                .replica
                .store()
                .partition_digests(usize::from(p), &buckets)
                .into_iter()
                .collect();
            self.stats.keys_compared.fetch_add(
                (their_keys.len() + our_keys.len()) as u64,
                Ordering::Relaxed,
            );
            for (k, d) in &their_keys {
                if our_keys.get(k) != Some(d) {
                    to_sync.insert(k.clone());
                }
            }
            for k in our_keys.keys() {
                if !their_keys.contains_key(k) {
                    to_sync.insert(k.clone());
                }
            }
            if to_sync.len() > MAX_KEYS_PER_ROUND {
                break;
            }
            compared.push(p);
        }
        let all = to_sync.len() <= MAX_KEYS_PER_ROUND;
        let mut synced = 0;
        for key in to_sync.into_iter().take(MAX_KEYS_PER_ROUND) {
            self.sync_key(addr, &key).await?;
            synced += 1;
        }
        // Every differing key of these partitions is now merged both ways.
        if all {
            for p in compared {
                catch_up.caught_up(usize::from(p));
            }
        }
        self.stats
            .keys_repaired
            .fetch_add(synced as u64, Ordering::Relaxed);
        Ok(synced)
    }

    /// Leaves both this node and the peer with the merge of their copies of `key`.
    async fn sync_key(&self, addr: std::net::SocketAddr, key: &[u8]) -> Result<(), String> {
        // The peer's replica copy, without the hints it may hold: that is
        // what its summary describes.
        let Inspection { own: theirs, .. } = self
            .ask(addr, Request::Inspect { key: key.to_vec() })
            .await?;
        if let Some(o) = &theirs {
            o.validate()
                .map_err(|e| format!("the peer holds an invalid copy: {e}"))?;
        }
        let ours = self.replica.get(key).map_err(|e| e.to_string())?;
        let Some(merged) = Object::merge_opt(ours.as_ref(), theirs.as_ref()) else {
            return Ok(());
        };
        if ours.as_ref() != Some(&merged) {
            let m = self
                .replica
                .merge(key, &merged)
                .map_err(|e| e.to_string())?;
            self.replica
                .durable(m.lsn)
                .wait()
                .await
                .map_err(|e| e.to_string())?;
        }
        if theirs.as_ref() != Some(&merged) {
            let req = Request::Replicate {
                key: key.to_vec(),
                object: merged,
                hint: None,
            };
            let Acked { .. } = self.ask(addr, req).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Worker for AntiEntropy {
    fn name(&self) -> &'static str {
        "anti-entropy"
    }

    async fn work(&mut self) -> Next {
        if self.interval.is_zero() {
            info!("active anti-entropy is off");
            self.replica.catch_up().give_up();
            return Next::Done;
        }
        let view = self.view.borrow().clone();
        let peers: Vec<usize> = (0..view.members().len())
            .filter(|&i| view.member(i).id != self.me && view.is_live_at(i))
            .collect();
        // A restored store catches up from peers; a partition no other
        // member owns (live or not) has no one to catch up from. One whose
        // other owners are all down stays closed: its old copies are not
        // current.
        let catch_up = self.replica.catch_up();
        if catch_up.behind_count() > 0
            && let Some(me) = view.index_of(&self.me)
        {
            let others: Vec<usize> = (0..view.members().len()).filter(|&i| i != me).collect();
            for p in 0..PARTITIONS {
                if !view.owns(me, p) || !others.iter().any(|&i| view.owns(i, p)) {
                    catch_up.caught_up(p);
                }
            }
        }
        if peers.is_empty() {
            return Next::Idle(self.interval);
        }
        let peer = peers[self.turn % peers.len()];
        self.turn = self.turn.wrapping_add(1);
        let name = view.member(peer).id.clone();
        match self.exchange(&view, peer).await {
            Ok(synced) => {
                self.stats.rounds.fetch_add(1, Ordering::Relaxed);
                if synced > 0 {
                    info!(peer = %name, keys = synced, "anti-entropy repaired keys");
                }
            }
            Err(e) => {
                if e.contains("invalid") {
                    warn!(peer = %name, cause = %e, "anti-entropy exchange failed");
                } else {
                    debug!(peer = %name, cause = %e, "anti-entropy exchange failed");
                }
            }
        }
        Next::Idle(self.interval)
    }

    fn status(&self) -> String {
        format!(
            "{} exchanges, {} key digests compared, {} keys repaired",
            self.stats.rounds.load(Ordering::Relaxed),
            self.stats.keys_compared.load(Ordering::Relaxed),
            self.stats.keys_repaired.load(Ordering::Relaxed)
        )
    }
}
