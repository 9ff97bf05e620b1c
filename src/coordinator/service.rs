//! The peer service: answers the requests other nodes send. It works on
//! narrow handles (the local replica, the hints, the coordinator for
//! forwarded writes) and is the same whichever transport delivers the
//! request (TCP, or the in-memory one of the tests).

use std::sync::Arc;

use tracing::warn;

use async_trait::async_trait;

use crate::coordinator::{CoordError, Coordinator};
use crate::hints::Hints;
use crate::object::Object;
use crate::replica::{Replica, ReplicaError};
use crate::rpc::call::{Fingerprint, Inspection};
use crate::rpc::message::RemoteError;
use crate::rpc::{Handler, Request, Response};

/// What the service calls to stop this node (after answering).
pub type StopFn = Arc<dyn Fn() + Send + Sync>;

/// Answers peer requests. See the module doc.
pub struct PeerService {
    me: Arc<str>,
    n: usize,
    replica: Arc<Replica>,
    hints: Arc<Hints>,
    coordinator: Arc<Coordinator>,
    stop: StopFn,
    /// The layout steward's state (layout requests); `None` in tests that
    /// hand views in by hand.
    layouts: std::sync::OnceLock<Arc<crate::cluster::steward::Shared>>,
}

impl PeerService {
    /// A service for node `me` whose replication factor is `n`.
    pub fn new(
        me: Arc<str>,
        n: usize,
        replica: Arc<Replica>,
        hints: Arc<Hints>,
        coordinator: Arc<Coordinator>,
        stop: StopFn,
    ) -> PeerService {
        PeerService {
            me,
            n,
            replica,
            hints,
            coordinator,
            stop,
            layouts: std::sync::OnceLock::new(),
        }
    }

    /// Connects the layout steward (a node does, once gossip started).
    pub fn set_layouts(&self, layouts: Arc<crate::cluster::steward::Shared>) {
        let _ = self.layouts.set(layouts);
    }

    /// Answers one request (after checking every field of it).
    pub async fn answer(&self, req: Request) -> Response {
        if let Err(why) = req.validate(self.n) {
            warn!(cause = %why, "refusing an invalid peer request");
            return Response::Error(RemoteError::Invalid(why));
        }
        match req {
            Request::Ping => Response::Pong {
                node_id: self.me.to_string(),
            },
            Request::Get { key } => match self.coordinator.read_copy(&key) {
                Ok(o) => Response::Object(o),
                Err(e) => error(e),
            },
            Request::Digest { key } => self.digest(&key),
            Request::DigestMany { keys } => {
                use crate::rpc::message::DigestAnswer;
                Response::Digests(
                    keys.iter()
                        .map(|key| match self.coordinator.read_digest(key) {
                            Ok(Fingerprint::Digest(d)) => DigestAnswer::Digest(d),
                            Ok(Fingerprint::Copy(o)) => DigestAnswer::Object(o),
                            Err(e) => DigestAnswer::Error(remote(e)),
                        })
                        .collect(),
                )
            }
            Request::Replicate { key, object, hint } => match hint.as_deref() {
                Some(owner) if owner != &*self.me => match self.hints.add(owner, &key, &object) {
                    Ok(lsn) => match self.hints.durable(lsn).wait().await {
                        Ok(()) => Response::ack(),
                        Err(e) => error(e.into()),
                    },
                    Err(e) => error(e),
                },
                _ => match self.replica.merge(&key, &object) {
                    Ok(m) => match self.replica.durable(m.lsn).wait().await {
                        Ok(()) => Response::Ack {
                            conflicts: m.conflicts,
                        },
                        Err(e) => error(e.into()),
                    },
                    Err(e) => error(e),
                },
            },
            Request::ReplicateMany { copies } => {
                let mut last = 0;
                let mut merged = Vec::with_capacity(copies.len());
                for (key, object) in &copies {
                    merged.push(match self.replica.merge(key, object) {
                        Ok(m) => {
                            last = last.max(m.lsn);
                            Ok(m.conflicts)
                        }
                        Err(e) => Err(remote(e)),
                    });
                }
                // One sync covers every copy merged above.
                if let Err(e) = self.replica.durable(last).wait().await {
                    let failed = remote(e.into());
                    for m in merged.iter_mut().filter(|m| m.is_ok()) {
                        *m = Err(failed.clone());
                    }
                }
                Response::Merged(merged)
            }
            Request::Inspect { key } => match inspect(&self.replica, &self.hints, &key) {
                Ok(Inspection { own, hints }) => Response::Inspected { own, hints },
                Err(e) => error(e),
            },
            Request::Write {
                key,
                write,
                context,
                w,
            } => match self
                .coordinator
                .write_as_actor(&key, &write, context.as_ref(), w, None)
                .await
            {
                Ok(done) => Response::Written(done),
                Err(e) => Response::Error(e.into_remote()),
            },
            Request::Shutdown => {
                (self.stop)();
                Response::ack()
            }
            Request::ScanPartition { partition } => {
                match self
                    .replica
                    .off_runtime({
                        let now = self.replica.now_ms();
                        move |r| r.live_keys(usize::from(partition), now)
                    })
                    .await
                {
                    Ok(keys) => {
                        Response::Keys(keys.into_iter().map(serde_bytes::ByteBuf::from).collect())
                    }
                    Err(e) => error(e),
                }
            }
            Request::AaeRoots { partitions } => {
                let summary = self.replica.store().summary();
                Response::Hashes(
                    partitions
                        .iter()
                        .map(|p| summary.root(usize::from(*p)))
                        .collect(),
                )
            }
            Request::AaeBuckets { partition } => Response::Hashes(
                self.replica
                    .store()
                    .summary()
                    .buckets(usize::from(partition)),
            ),
            Request::LayoutGet => Response::Layout(serde_bytes::ByteBuf::from(
                self.layouts
                    .get()
                    .map(|l| l.layout_bytes())
                    .unwrap_or_default(),
            )),
            Request::LayoutChange { changes, force } => {
                let Some(layouts) = self.layouts.get() else {
                    return Response::Error(RemoteError::Invalid(
                        "this node keeps no layout".into(),
                    ));
                };
                if !force {
                    let view = self.coordinator.view();
                    if let Some(c) = changes.iter().find(|c| {
                        matches!(c, crate::cluster::layout::Change::Remove { .. })
                            && view.is_live(c.node())
                    }) {
                        return Response::Error(RemoteError::Invalid(format!(
                            "{} is live: REMOVE is for nodes that are dead for good (use LEAVE, \
                             or REMOVE {} FORCE if it must go anyway)",
                            c.node(),
                            c.node()
                        )));
                    }
                }
                match layouts.queue(changes) {
                    Ok(()) => Response::ack(),
                    Err(e) => Response::Error(RemoteError::Invalid(e)),
                }
            }
            Request::GcPrepare { key, object } => {
                let view = self.coordinator.view();
                let p = crate::keyspace::partition_of(&key);
                let owner = view
                    .index_of(&self.me)
                    .is_some_and(|i| view.current_owners(p).contains(&(i as u16)));
                if view.layout().migrating() {
                    return Response::GcReady(false);
                }
                let want = crate::keyspace::digest(&object.to_bytes());
                if owner {
                    match self.replica.merge(&key, &object) {
                        Ok(m) => {
                            if let Err(e) = self.replica.durable(m.lsn).wait().await {
                                return error(e.into());
                            }
                        }
                        Err(e) => return error(e),
                    }
                }
                let mine = match self.replica.stored_digest(&key) {
                    Ok(d) => d,
                    Err(e) => return error(e),
                };
                let copy_ok = if owner {
                    mine == Some(want)
                } else {
                    mine.is_none() || mine == Some(want)
                };
                Response::GcReady(copy_ok && self.hints.owners_of(&key).is_empty())
            }
            Request::GcDelete { key, digest } => {
                match self.replica.delete_if_digest(&key, digest) {
                    Ok((gone, lsn)) => match self.replica.durable(lsn).wait().await {
                        Ok(()) => Response::GcDeleted(gone),
                        Err(e) => error(e.into()),
                    },
                    Err(e) => error(e),
                }
            }
            Request::FetchMany { keys } => {
                let mut out = Vec::with_capacity(keys.len());
                for k in &keys {
                    match self.local_copy(k) {
                        Ok(o) => out.push(o),
                        Err(e) => return error(e),
                    }
                }
                Response::Objects(out)
            }
            Request::AaeKeys { partition, buckets } => Response::KeyDigests(
                self.replica
                    .store()
                    .partition_digests(usize::from(partition), &buckets)
                    .into_iter()
                    .map(|(k, d)| (serde_bytes::ByteBuf::from(k), d))
                    .collect(),
            ),
        }
    }

    /// The answer to a digest read of `key`.
    fn digest(&self, key: &[u8]) -> Response {
        match self.coordinator.read_digest(key) {
            Ok(Fingerprint::Digest(d)) => Response::Digest(d),
            Ok(Fingerprint::Copy(o)) => Response::Object(o),
            Err(e) => error(e),
        }
    }

    /// This node's copy of `key`: its own replica merged with any hint it
    /// holds for the key (a stand-in answers reads with what it keeps).
    fn local_copy(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.coordinator.local_copy(key)
    }
}

#[async_trait]
impl Handler for PeerService {
    async fn handle(&self, req: Request) -> Response {
        self.answer(req).await
    }

    /// Replica writes read together: each is merged as it comes, and all
    /// wait for one log sync (the one that covers the last of them) instead
    /// of one wait each. Anything else in the batch (a copy to keep as a
    /// hint) is answered on its own meanwhile.
    async fn handle_batch(&self, reqs: Vec<Request>) -> Vec<Response> {
        use futures::FutureExt;
        let mut merged = Vec::new();
        let mut last = 0;
        let answers: Vec<_> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, req)| {
                // A valid copy for this node's own replica is merged here.
                let own = matches!(&req, Request::Replicate { hint, .. }
                    if hint.as_deref().is_none_or(|h| h == &*self.me))
                    && req.validate(self.n).is_ok();
                match req {
                    Request::Replicate { key, object, .. } if own => {
                        let answer = match self.replica.merge(&key, &object) {
                            Ok(m) => {
                                last = last.max(m.lsn);
                                merged.push(i);
                                Response::Ack {
                                    conflicts: m.conflicts,
                                }
                            }
                            Err(e) => error(e),
                        };
                        futures::future::ready(answer).left_future()
                    }
                    // Anything else (a copy to keep as a hint, an invalid one)
                    // is answered on its own meanwhile.
                    other => self.answer(other).right_future(),
                }
            })
            .collect();
        let (mut answers, synced) = tokio::join!(
            futures::future::join_all(answers),
            self.replica.durable(last).wait()
        );
        if let Err(e) = synced {
            let failed = error(e.into());
            for i in merged {
                answers[i] = failed.clone();
            }
        }
        answers
    }
}

/// What this node stores for `key`: its own copy and the hints it holds
/// for it (the answer to an Inspect, and the local part of REPLICAS).
pub fn inspect(replica: &Replica, hints: &Hints, key: &[u8]) -> Result<Inspection, ReplicaError> {
    let own = replica.get(key)?;
    let mut held = Vec::new();
    for owner in hints.owners_of(key) {
        if let Some(o) = hints.for_owner(&owner, key)? {
            held.push((owner, o));
        }
    }
    Ok(Inspection { own, hints: held })
}

fn error(e: ReplicaError) -> Response {
    Response::Error(remote(e))
}

/// A store error as it crosses the wire.
fn remote(e: ReplicaError) -> RemoteError {
    match e {
        ReplicaError::Refused(r) => RemoteError::Invalid(r.to_string()),
        ReplicaError::Update(u) => RemoteError::WriteFailed(u.to_string()),
        ReplicaError::Write(w) => RemoteError::Invalid(w.to_string()),
        ReplicaError::HintsFull(f) => RemoteError::HintsFull(f.to_string()),
        other => RemoteError::Store(other.to_string()),
    }
}

impl CoordError {
    /// The error as it crosses the wire.
    pub fn into_remote(self) -> RemoteError {
        match self {
            CoordError::Invalid(m) => RemoteError::Invalid(m),
            CoordError::ReadQuorum(q) => RemoteError::ReadQuorum(q),
            CoordError::WriteUnknown(q) => RemoteError::WriteUnknown(q),
            CoordError::WriteFailed(m) => RemoteError::WriteFailed(m),
            CoordError::Unavailable(m) => RemoteError::WriteFailed(m),
        }
    }
}
