//! The coordinator: quorum reads and writes over a key's preference list.
//!
//! Any node coordinates. A **read** asks every replica of the preference list
//! at once, answers as soon as R replies agree to a merged object, and keeps
//! collecting the late replies in the background to repair replicas that
//! returned an older or missing version (read repair).
//!
//! A **write** is applied first by its *actor*, a replica of the key: this
//! node when it is one, otherwise the first reachable replica, to which the
//! write is forwarded. The actor updates its local copy (making a new dot),
//! replicates the whole new object to the other replicas, and answers after
//! W acknowledgements (its own included). A write that misses W is reported
//! as *unknown*: it may have landed on some replicas and can surface later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::membership::View;
use crate::node::Node;
use crate::object::Object;
use crate::replica::ReplicaError;
use crate::rpc::{Request, Response, RpcError};
use crate::vclock::VClock;

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The request itself is wrong (too large, bad quorum, ...).
    #[error("{0}")]
    Invalid(String),
    /// Fewer than R replicas answered.
    #[error("read quorum not met: {got} of {needed} required replicas answered ({details})")]
    ReadQuorum {
        /// R.
        needed: usize,
        /// Replies received.
        got: usize,
        /// Per-replica reasons.
        details: String,
    },
    /// Fewer than W replicas acknowledged; the write may still surface.
    #[error(
        "write outcome unknown: {got} of {needed} required replicas acknowledged ({details}); the write may still be applied"
    )]
    WriteUnknown {
        /// W.
        needed: usize,
        /// Acknowledgements received.
        got: usize,
        /// Per-replica reasons.
        details: String,
    },
    /// The actor refused or failed the write before replicating it.
    #[error("write failed: {0}")]
    WriteFailed(String),
}

/// One replica of a key, as the coordinator sees it.
#[derive(Debug, Clone)]
struct Target {
    node: String,
    addr: SocketAddr,
    live: bool,
}

fn describe(errors: &[String]) -> String {
    if errors.is_empty() {
        "no replica failed yet".into()
    } else {
        errors.join("; ")
    }
}

impl Node {
    /// N for this view: the configured N, shrunk to the member count.
    pub fn effective_n(&self, view: &View) -> usize {
        self.config.n.min(view.members.len()).max(1)
    }

    /// Checks a quorum override (or takes the default) against N.
    fn quorum(
        &self,
        what: &str,
        requested: Option<usize>,
        default: usize,
        n: usize,
    ) -> Result<usize, CoordError> {
        match requested {
            Some(q) if q > n => Err(CoordError::Invalid(format!(
                "{what}={q} exceeds N={n} (the number of replicas of this key)"
            ))),
            Some(q) => Ok(q),
            None => Ok(default.min(n)),
        }
    }

    /// The preference list of `key`, with addresses and liveness.
    fn targets(&self, view: &View, key: &[u8]) -> Vec<Target> {
        let n = self.effective_n(view);
        view.ring
            .preference_list(key, n)
            .into_iter()
            .filter_map(|node| {
                Some(Target {
                    node: node.to_string(),
                    addr: view.addr(node)?,
                    live: view.is_live(node),
                })
            })
            .collect()
    }

    /// The preference list of `key` as `(node, addr, live)` (for `OWNERS`).
    pub fn owners(&self, key: &[u8]) -> Vec<(String, SocketAddr, bool)> {
        let view = self.membership.view();
        self.targets(&view, key)
            .into_iter()
            .map(|t| (t.node, t.addr, t.live))
            .collect()
    }

    /// Quorum read. `Ok(None)` when no replica has the key.
    pub async fn get(
        self: &Arc<Self>,
        key: &[u8],
        r: Option<usize>,
    ) -> Result<Option<Object>, CoordError> {
        check_key(key)?;
        let view = self.membership.view();
        let targets = self.targets(&view, key);
        let r = self.quorum("R", r, self.config.r, targets.len())?;
        let timeout = self.config.request_timeout;
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for t in &targets {
            let (node, tx, t) = (self.clone(), tx.clone(), t.clone());
            let key = key.to_vec();
            tokio::spawn(async move {
                let result = node.read_replica(&t, key, timeout).await;
                let _ = tx.send((t, result)).await;
            });
        }
        drop(tx);
        let mut replies: Vec<(Target, Option<Object>)> = Vec::new();
        let mut errors = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(100);
        while replies.len() < r {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((t, Ok(obj)))) => replies.push((t, obj)),
                Ok(Some((t, Err(e)))) => errors.push(format!("{}: {e}", t.node)),
                Ok(None) | Err(_) => break,
            }
        }
        if replies.len() < r {
            return Err(CoordError::ReadQuorum {
                needed: r,
                got: replies.len(),
                details: describe(&errors),
            });
        }
        let merged = replies.iter().fold(None, |acc: Option<Object>, (_, o)| {
            Object::merge_opt(acc.as_ref(), o.as_ref())
        });
        // Late replies and repairs continue in the background.
        let node = self.clone();
        let key = key.to_vec();
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((t, Ok(obj)))) => replies.push((t, obj)),
                    Ok(Some((_, Err(_)))) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            node.read_repair(&key, replies).await;
        });
        Ok(merged)
    }

    async fn read_replica(
        &self,
        t: &Target,
        key: Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<Object>, String> {
        if t.node == self.id() {
            return self.replica.get(&key).await.map_err(|e| e.to_string());
        }
        match self
            .transport
            .call(t.addr, Request::Get { key }, timeout)
            .await
        {
            Ok(Response::Object(o)) => Ok(o),
            Ok(Response::Error { message, .. }) => Err(message),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends the merge of every reply to the replicas whose copy lacks part of it.
    async fn read_repair(&self, key: &[u8], replies: Vec<(Target, Option<Object>)>) {
        let Some(merged) = replies.iter().fold(None, |acc: Option<Object>, (_, o)| {
            Object::merge_opt(acc.as_ref(), o.as_ref())
        }) else {
            return;
        };
        for (t, obj) in replies {
            if obj.as_ref().is_some_and(|o| o.supersedes(&merged)) {
                continue;
            }
            debug!(key = %String::from_utf8_lossy(key), node = %t.node, "read repair");
            if let Err(e) = self.replicate_to(&t, key, &merged).await {
                warn!(key = %String::from_utf8_lossy(key), node = %t.node, cause = %e, "read repair failed");
            }
        }
    }

    async fn replicate_to(&self, t: &Target, key: &[u8], object: &Object) -> Result<(), String> {
        if t.node == self.id() {
            return self
                .replica
                .merge(key, object)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        let req = Request::Replicate {
            key: key.to_vec(),
            object: object.clone(),
        };
        match self
            .transport
            .call(t.addr, req, self.config.request_timeout)
            .await
        {
            Ok(Response::Ack) => Ok(()),
            Ok(Response::Error { message, .. }) => Err(message),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Quorum write (`value = None` deletes). Returns whether the key had a
    /// live value at the actor before the write.
    pub async fn put(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<VClock>,
        w: Option<usize>,
    ) -> Result<bool, CoordError> {
        check_key(key)?;
        if let Some(v) = &value
            && v.len() > MAX_VALUE_LEN
        {
            return Err(CoordError::Invalid(format!(
                "value too large: {} bytes (the limit is {MAX_VALUE_LEN})",
                v.len()
            )));
        }
        let view = self.membership.view();
        let mut targets = self.targets(&view, key);
        let w = self.quorum("W", w, self.config.w, targets.len())?;
        if targets.iter().any(|t| t.node == self.id()) {
            match self
                .put_as_actor(key, value.clone(), context.as_ref(), w)
                .await
            {
                // The local step failed before anything was replicated: let
                // another replica act for this write.
                Err(CoordError::WriteFailed(cause)) if targets.len() > 1 => {
                    warn!(cause = %cause, "cannot act for this write locally; forwarding it");
                    targets.retain(|t| t.node != self.id());
                }
                other => return other,
            }
        }
        // Forward to a replica: live ones first, in preference order.
        targets.sort_by_key(|t| !t.live);
        let mut errors = Vec::new();
        for t in &targets {
            let req = Request::Put {
                key: key.to_vec(),
                value: value.clone(),
                context: context.clone(),
                w,
            };
            // The actor waits up to one timeout for its replicas: allow for it.
            let timeout = self.config.request_timeout * 2;
            match self.transport.call(t.addr, req, timeout).await {
                Ok(Response::Written { existed }) => return Ok(existed),
                Ok(Response::Error {
                    message,
                    unknown: true,
                }) => {
                    return Err(CoordError::WriteUnknown {
                        needed: w,
                        got: 0,
                        details: format!("{}: {message}", t.node),
                    });
                }
                Ok(Response::Error {
                    message,
                    unknown: false,
                }) => return Err(CoordError::WriteFailed(message)),
                Ok(other) => errors.push(format!("{}: unexpected answer {other:?}", t.node)),
                // Never sent: safe to try the next replica.
                Err(e) if e.never_sent() => errors.push(format!("{}: {e}", t.node)),
                Err(e) => {
                    errors.push(format!("{}: {e}", t.node));
                    return Err(CoordError::WriteUnknown {
                        needed: w,
                        got: 0,
                        details: describe(&errors),
                    });
                }
            }
        }
        Err(CoordError::WriteFailed(format!(
            "no replica of the key could be reached ({})",
            describe(&errors)
        )))
    }

    /// Applies a write locally as its actor, then replicates it.
    pub async fn put_as_actor(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<&VClock>,
        w: usize,
    ) -> Result<bool, CoordError> {
        let (object, existed) = self
            .replica
            .update(key, context, &self.actor, value)
            .await
            .map_err(|e| match e {
                ReplicaError::Update(u) => CoordError::Invalid(u.to_string()),
                other => CoordError::WriteFailed(format!("{}: {other}", self.id())),
            })?;
        let view = self.membership.view();
        let others: Vec<Target> = self
            .targets(&view, key)
            .into_iter()
            .filter(|t| t.node != self.id())
            .collect();
        let mut acks = 1;
        let mut errors = Vec::new();
        if acks < w {
            let (tx, mut rx) = mpsc::channel(others.len().max(1));
            for t in others {
                let (node, tx, object) = (self.clone(), tx.clone(), object.clone());
                let key = key.to_vec();
                tokio::spawn(async move {
                    let r = node.replicate_to(&t, &key, &object).await;
                    let _ = tx.send((t.node, r)).await;
                });
            }
            drop(tx);
            let deadline = tokio::time::Instant::now()
                + self.config.request_timeout
                + Duration::from_millis(100);
            while acks < w {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((_, Ok(())))) => acks += 1,
                    Ok(Some((node, Err(e)))) => errors.push(format!("{node}: {e}")),
                    Ok(None) | Err(_) => break,
                }
            }
        } else {
            // W reached by the local write alone: replicate in the background.
            for t in others {
                let (node, object) = (self.clone(), object.clone());
                let key = key.to_vec();
                tokio::spawn(async move {
                    if let Err(e) = node.replicate_to(&t, &key, &object).await {
                        warn!(node = %t.node, cause = %e, "background replication failed");
                    }
                });
            }
        }
        if acks < w {
            return Err(CoordError::WriteUnknown {
                needed: w,
                got: acks,
                details: describe(&errors),
            });
        }
        Ok(existed)
    }

    /// Answers a request from a peer.
    pub async fn handle_peer(self: &Arc<Self>, req: Request) -> Response {
        let err = |e: ReplicaError| Response::Error {
            message: e.to_string(),
            unknown: false,
        };
        match req {
            Request::Ping => Response::Pong {
                node_id: self.id().to_string(),
            },
            Request::Get { key } => match self.replica.get(&key).await {
                Ok(o) => Response::Object(o),
                Err(e) => err(e),
            },
            Request::Replicate { key, object } => match self.replica.merge(&key, &object).await {
                Ok(_) => Response::Ack,
                Err(e) => err(e),
            },
            Request::Put {
                key,
                value,
                context,
                w,
            } => match self.put_as_actor(&key, value, context.as_ref(), w).await {
                Ok(existed) => Response::Written { existed },
                Err(e @ CoordError::WriteUnknown { .. }) => Response::Error {
                    message: e.to_string(),
                    unknown: true,
                },
                Err(e) => Response::Error {
                    message: e.to_string(),
                    unknown: false,
                },
            },
            // The server stops the node after sending the answer.
            Request::Shutdown => Response::Ack,
        }
    }

    /// Asks `node` to stop its process.
    pub async fn kill(&self, node: &str) -> Result<(), CoordError> {
        let view = self.membership.view();
        let addr = view
            .addr(node)
            .ok_or_else(|| CoordError::Invalid(format!("unknown node '{node}' (see NODES)")))?;
        match self
            .transport
            .call(addr, Request::Shutdown, self.config.request_timeout)
            .await
        {
            Ok(Response::Ack) => Ok(()),
            Ok(other) => Err(CoordError::Invalid(format!("{node} answered {other:?}"))),
            Err(e) => Err(CoordError::Invalid(format!("cannot reach {node}: {e}"))),
        }
    }

    /// Asks every other member to stop; returns how many acknowledged, of how many.
    pub async fn stop_others(&self) -> (usize, usize) {
        let view = self.membership.view();
        let mut tasks = Vec::new();
        for (node, addr) in view.members.iter().filter(|(n, _)| n.as_str() != self.id()) {
            let transport = self.transport.clone();
            let (node, addr) = (node.clone(), *addr);
            let timeout = self.config.request_timeout;
            tasks.push(tokio::spawn(async move {
                let r: Result<Response, RpcError> =
                    transport.call(addr, Request::Shutdown, timeout).await;
                if let Err(e) = &r {
                    debug!(node = %node, cause = %e, "not stopped (already down?)");
                }
                matches!(r, Ok(Response::Ack))
            }));
        }
        let total = tasks.len();
        let mut stopped = 0;
        for t in tasks {
            if t.await.unwrap_or(false) {
                stopped += 1;
            }
        }
        (stopped, total)
    }
}

fn check_key(key: &[u8]) -> Result<(), CoordError> {
    if key.len() > MAX_KEY_LEN {
        return Err(CoordError::Invalid(format!(
            "key too large: {} bytes (the limit is {MAX_KEY_LEN})",
            key.len()
        )));
    }
    Ok(())
}
