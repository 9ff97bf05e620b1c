//! Hint delivery: sends the hints this node holds to their owners once the
//! owners are live, a batch at a time, and deletes each hint only after its
//! owner acknowledged it, and only if it did not change meanwhile. Failed
//! deliveries back off per owner (see [`Hints::record`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::{debug, info};

use super::{Next, Worker};
use crate::cluster::ClusterView;
use crate::coordinator::driver::{Call, Peer, Spec, drive};
use crate::coordinator::quorum::Strategy;
use crate::hints::{BATCH, Hints, ROUND};
use crate::rpc::call::Acked;
use crate::rpc::{Request, Transport, ask};

/// The hint-delivery worker.
pub struct Handoff {
    hints: Arc<Hints>,
    transport: Arc<dyn Transport>,
    view: watch::Receiver<Arc<ClusterView>>,
    timeout: Duration,
    delivered: u64,
}

impl Handoff {
    /// A worker delivering `hints` over `transport`.
    pub fn new(
        hints: Arc<Hints>,
        transport: Arc<dyn Transport>,
        view: watch::Receiver<Arc<ClusterView>>,
        timeout: Duration,
    ) -> Handoff {
        Handoff {
            hints,
            transport,
            view,
            timeout,
            delivered: 0,
        }
    }

    /// Delivers one batch to `owner` at `addr`; returns how many hints were
    /// delivered and whether every one of them was.
    async fn deliver(&self, owner: &str, addr: std::net::SocketAddr) -> (usize, bool) {
        let owner: Arc<str> = owner.into();
        let batch: Vec<Delivery> = self
            .hints
            .batch(&owner)
            .into_iter()
            .map(|(key, bytes, object)| Delivery {
                owner: owner.clone(),
                key,
                bytes,
                object,
            })
            .collect();
        let spec = Spec {
            needed: batch.len(),
            sets: None,
            strategy: Strategy::All,
            deadline: tokio::time::Instant::now() + self.timeout,
            hedge_after: None,
        };
        let call = |d: Delivery| -> Call<'_, Delivery, ()> {
            async move {
                let req = Request::Replicate {
                    key: d.key.clone(),
                    object: d.object.clone(),
                    hint: None,
                };
                let r = ask::<Acked>(&*self.transport, addr, &req, self.timeout)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.reason());
                (d, r)
            }
            .boxed()
        };
        let mut out = drive(batch, spec, call, |_| None).await;
        // Every acknowledged hint counts, also those answered after a failure.
        out.finish().await;
        let mut delivered = 0;
        for (d, ()) in &out.replies {
            if let Ok(true) = self.hints.remove_if_unchanged(&owner, &d.key, &d.bytes) {
                delivered += 1;
            }
        }
        let ok = out.met();
        if !ok {
            debug!(owner = %owner, report = %out.tracker.report(), "hint delivery failed; backing off");
        }
        (delivered, ok)
    }
}

/// True when `owner` left the cluster or was removed: its hints go to the
/// keys' current owners instead.
fn gone(view: &ClusterView, owner: &str) -> bool {
    let layout = view.layout();
    layout.version > 0
        && matches!(
            layout.state(owner),
            None | Some(crate::cluster::NodeState::Removed)
        )
}

impl Handoff {
    /// Hands one batch of the hints held for `owner`, which left, to the
    /// current owners of each key (a majority of the live ones must
    /// acknowledge); returns how many were handed over and whether all were.
    async fn redirect(&self, view: &ClusterView, owner: &str) -> (usize, bool) {
        let mut done = 0;
        let batch = self.hints.batch(owner);
        let all = batch.len();
        for (key, bytes, object) in batch {
            let p = crate::keyspace::partition_of(&key);
            let owners: Vec<std::net::SocketAddr> = view
                .current_owners(p)
                .iter()
                .map(|&i| usize::from(i))
                .filter(|&i| view.is_live_at(i))
                .map(|i| view.member(i).addr)
                .collect();
            let req = Request::Replicate {
                key: key.clone(),
                object,
                hint: None,
            };
            let asks = owners
                .iter()
                .map(|addr| ask::<Acked>(&*self.transport, *addr, &req, self.timeout));
            let acked = futures::future::join_all(asks)
                .await
                .iter()
                .filter(|r| r.is_ok())
                .count();
            if acked > 0
                && acked > owners.len() / 2
                && let Ok(true) = self.hints.remove_if_unchanged(owner, &key, &bytes)
            {
                done += 1;
            }
        }
        (done, done == all)
    }
}

/// One hint on its way to its owner.
struct Delivery {
    owner: Arc<str>,
    key: Vec<u8>,
    /// The hint as read, for the compare-and-delete after delivery.
    bytes: Vec<u8>,
    object: crate::object::Object,
}

impl Peer for Delivery {
    fn node(&self) -> &str {
        &self.owner
    }
}

#[async_trait]
impl Worker for Handoff {
    fn name(&self) -> &'static str {
        "handoff"
    }

    async fn work(&mut self) -> Next {
        if self.hints.is_empty() {
            return Next::Idle(ROUND);
        }
        let view = self.view.borrow().clone();
        let mut more = false;
        for owner in self.hints.pending().into_keys() {
            if gone(&view, &owner) {
                let (redirected, ok) = self.redirect(&view, &owner).await;
                if redirected > 0 {
                    self.delivered += redirected as u64;
                    info!(owner = %owner, redirected, "hints for a node that left handed to the keys' owners");
                }
                more |= ok && redirected == BATCH;
                continue;
            }
            if !view.is_live(&owner) || !self.hints.ready(&owner) {
                continue;
            }
            let Some(addr) = view.addr(&owner) else {
                continue;
            };
            let (delivered, ok) = self.deliver(&owner, addr).await;
            self.hints.record(&owner, ok);
            if delivered > 0 {
                self.delivered += delivered as u64;
                info!(owner = %owner, delivered, "hints delivered");
            }
            more |= ok && delivered == BATCH;
        }
        if more { Next::Busy } else { Next::Idle(ROUND) }
    }

    fn status(&self) -> String {
        format!("{} delivered", crate::text::count(self.delivered, "hint"))
    }
}
