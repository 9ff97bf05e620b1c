//! Hint delivery: sends the hints this node holds to their owners once the
//! owners are live, a batch at a time, and deletes each hint only after its
//! owner acknowledged it, and only if it did not change meanwhile. Failed
//! deliveries back off per owner (see [`Hints::record`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tracing::{debug, info};

use super::{Next, Worker};
use crate::cluster::ClusterView;
use crate::coordinator::quorum::{State, Strategy, Tracker};
use crate::hints::{BATCH, Hints, ROUND};
use crate::rpc::message::Reason;
use crate::rpc::{Request, Response, Transport};

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
        let batch = self.hints.batch(owner);
        let mut tracker = Tracker::new(batch.len(), batch.len(), Strategy::All);
        tracker.to_send();
        let mut running: FuturesUnordered<_> = batch
            .into_iter()
            .map(|(key, bytes, object)| async move {
                let req = Request::Replicate {
                    key: key.clone(),
                    object,
                    hint: None,
                };
                let answer = self.transport.call(addr, &req, self.timeout).await;
                (key, bytes, answer)
            })
            .collect();
        let mut delivered = 0;
        while let Some((key, bytes, answer)) = running.next().await {
            match answer {
                Ok(Response::Ack { .. }) => {
                    tracker.success();
                    if let Ok(true) = self.hints.remove_if_unchanged(owner, &key, &bytes) {
                        delivered += 1;
                    }
                }
                Ok(Response::Error(e)) => tracker.failure(owner, Reason::Remote(e.to_string())),
                Ok(other) => tracker.failure(owner, Reason::BadAnswer(format!("{other:?}"))),
                Err(e) => tracker.failure(owner, e.reason()),
            }
        }
        let ok = tracker.state() == State::Met;
        if !ok {
            debug!(owner, report = %tracker.report(), "hint delivery failed; backing off");
        }
        (delivered, ok)
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
        format!("{} hints delivered", self.delivered)
    }
}
