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
    /// For a stand-in (sloppy quorum): the owner whose copy it keeps as a hint.
    hint: Option<String>,
}

/// Where a request goes: the first N healthy nodes of the key's ring walk,
/// and the live nodes further along that can stand in for one that fails.
struct Plan {
    slots: Vec<Target>,
    spares: std::collections::VecDeque<Target>,
}

fn target(view: &View, node: &str, hint: Option<String>) -> Option<Target> {
    Some(Target {
        node: node.to_string(),
        addr: view.addr(node)?,
        live: view.is_live(node),
        hint,
    })
}

/// The merge of every copy the replicas returned.
fn merge_replies(replies: &[(Target, Option<Object>)]) -> Option<Object> {
    replies.iter().fold(None, |acc, (_, o)| {
        Object::merge_opt(acc.as_ref(), o.as_ref())
    })
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
            .filter_map(|node| target(view, node, None))
            .collect()
    }

    /// The sloppy-quorum plan for `key`: each owner the failure detector
    /// marks down is replaced by the next live node of the ring walk, which
    /// keeps the copy as a hint for that owner (Dynamo section 4.6).
    fn plan(&self, view: &View, key: &[u8]) -> Plan {
        let n = self.effective_n(view);
        let walk = view.ring.walk(key);
        let (owners, rest) = walk.split_at(n.min(walk.len()));
        let mut spares: std::collections::VecDeque<Target> = rest
            .iter()
            .filter(|node| view.is_live(node))
            .filter_map(|node| target(view, node, None))
            .collect();
        let mut slots = Vec::with_capacity(owners.len());
        for owner in owners {
            if view.is_live(owner) {
                slots.extend(target(view, owner, None));
            } else if let Some(mut stand_in) = spares.pop_front() {
                stand_in.hint = Some(owner.to_string());
                slots.push(stand_in);
            } else {
                // No one to stand in: try the owner anyway (the detector may be wrong).
                slots.extend(target(view, owner, None));
            }
        }
        Plan { slots, spares }
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
        let targets = self.plan(&view, key).slots;
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
        let merged = merge_replies(&replies);
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
            return self.local_get(&key).await.map_err(|e| e.to_string());
        }
        match self
            .call_peer(t.addr, Request::Get { key }, timeout)
            .await?
        {
            Response::Object(Some(o)) => match o.validate() {
                Ok(()) => Ok(Some(o)),
                Err(e) => Err(format!("invalid copy: {e}")),
            },
            Response::Object(None) => Ok(None),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// One peer call; a remote error and a transport error both become the
    /// error text.
    pub(crate) async fn call_peer(
        &self,
        addr: SocketAddr,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        match self.transport.call(addr, req, timeout).await {
            Ok(Response::Error { message, .. }) => Err(message),
            Ok(r) => Ok(r),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends the merge of every reply to the replicas whose copy lacks part of it.
    async fn read_repair(&self, key: &[u8], replies: Vec<(Target, Option<Object>)>) {
        let Some(merged) = merge_replies(&replies) else {
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

    /// This node's copy of `key`: its own replica merged with any hint it
    /// holds for the key (a stand-in answers reads with what it keeps).
    async fn local_get(&self, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        let own = self.replica.get(key).await?;
        let hinted = self.hints.for_key(key).await?;
        Ok(Object::merge_opt(own.as_ref(), hinted.as_ref()))
    }

    /// Stores a copy locally: in the replica, or as a hint for `hint`.
    async fn local_merge(
        &self,
        key: &[u8],
        object: &Object,
        hint: Option<&str>,
    ) -> Result<(), ReplicaError> {
        match hint {
            Some(owner) if owner != self.id() => self.hints.add(owner, key, object).await,
            _ => self.replica.merge(key, object).await.map(|_| ()),
        }
    }

    async fn replicate_to(&self, t: &Target, key: &[u8], object: &Object) -> Result<(), String> {
        if t.node == self.id() {
            return self
                .local_merge(key, object, t.hint.as_deref())
                .await
                .map_err(|e| e.to_string());
        }
        let req = Request::Replicate {
            key: key.to_vec(),
            object: object.clone(),
            hint: t.hint.clone(),
        };
        match self
            .call_peer(t.addr, req, self.config.request_timeout)
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
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
                .put_as_actor(key, value.clone(), context.as_ref(), w, None)
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
        // No owner of the key can be reached: stay writable (sloppy quorum).
        // This node makes the write itself, keeping it as a hint for the
        // first owner, and hands copies to live stand-ins for the others.
        let Some(owner) = targets.first().map(|t| t.node.clone()) else {
            return Err(CoordError::WriteFailed("the ring is empty".into()));
        };
        warn!(owner = %owner, errors = %describe(&errors), "no owner reachable; writing as a stand-in");
        self.put_as_actor(key, value, context.as_ref(), w, Some(owner))
            .await
    }

    /// Applies a write locally as its actor, then replicates it to the rest
    /// of the key's sloppy-quorum plan, replacing a replica that fails with
    /// the next live stand-in while time remains.
    ///
    /// With `stand_in_for`, this node is not an owner of the key: it makes
    /// the write under a single-use actor (its hinted copy will be handed
    /// off and deleted, so it cannot promise to remember its own dots) and
    /// keeps it as a hint for that owner.
    pub async fn put_as_actor(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<&VClock>,
        w: usize,
        stand_in_for: Option<String>,
    ) -> Result<bool, CoordError> {
        let refuse = |e: ReplicaError| match e {
            ReplicaError::Update(u) => CoordError::Invalid(u.to_string()),
            other => CoordError::WriteFailed(format!("{other}")),
        };
        let (object, existed) = match &stand_in_for {
            None => self
                .replica
                .update(key, context, &self.actor.get(), value)
                .await
                .map_err(refuse)?,
            Some(owner) => {
                let local = self.local_get(key).await.map_err(refuse)?;
                let existed = local.as_ref().is_some_and(|o| !o.is_deleted());
                let ctx = context
                    .cloned()
                    .unwrap_or_else(|| local.as_ref().map(|o| o.clock.clone()).unwrap_or_default());
                let actor = format!("{}~{:08x}", self.actor.get(), rand::random::<u32>());
                let object = Object::update(
                    local.as_ref(),
                    &ctx,
                    &actor,
                    value,
                    crate::replica::now_ms(),
                )
                .map_err(|u| CoordError::Invalid(u.to_string()))?;
                self.hints.add(owner, key, &object).await.map_err(refuse)?;
                (object, existed)
            }
        };
        let view = self.membership.view();
        let Plan { slots, mut spares } = self.plan(&view, key);
        let me = self.id().to_string();
        spares.retain(|t| t.node != me);
        let others: Vec<Target> = slots
            .into_iter()
            .filter(|t| t.node != me && Some(&t.node) != stand_in_for.as_ref())
            .collect();
        let mut acks = 1;
        let mut errors = Vec::new();
        let mut unreplicated: Vec<String> = Vec::new();
        let (tx, mut rx) = mpsc::channel(others.len() + spares.len() + 1);
        let send = |t: Target| {
            let (node, tx, object) = (self.clone(), tx.clone(), object.clone());
            let key = key.to_vec();
            tokio::spawn(async move {
                let r = node.replicate_to(&t, &key, &object).await;
                if let Err(e) = &r {
                    debug!(node = %t.node, cause = %e, "replication failed");
                }
                let _ = tx.send((t, r)).await;
            });
        };
        let mut outstanding = others.len();
        for t in others {
            send(t);
        }
        let deadline =
            tokio::time::Instant::now() + self.config.request_timeout + Duration::from_millis(100);
        while acks < w && outstanding > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((_, Ok(())))) => {
                    acks += 1;
                    outstanding -= 1;
                }
                Ok(Some((t, Err(e)))) => {
                    outstanding -= 1;
                    errors.push(format!("{}: {e}", t.node));
                    let owner = t.hint.unwrap_or(t.node);
                    // A stand-in takes the failed replica's place, with a hint;
                    // with no spare left, this node keeps the hint itself.
                    if let Some(mut stand_in) = spares.pop_front() {
                        stand_in.hint = Some(owner);
                        outstanding += 1;
                        send(stand_in);
                    } else {
                        unreplicated.push(owner);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(tx);
        // Replication past W goes on in the background, bounded by its
        // timeout; every owner it does not reach gets a hint kept here, so
        // handoff (not only anti-entropy) brings it the write.
        let (node, key_owned, object) = (self.clone(), key.to_vec(), object.clone());
        tokio::spawn(async move {
            let mut missed = unreplicated;
            // Every replication task has its own timeout, so this ends.
            while let Some((t, result)) = rx.recv().await {
                if result.is_err() {
                    missed.push(t.hint.unwrap_or(t.node));
                }
            }
            for owner in missed.into_iter().filter(|o| o.as_str() != node.id()) {
                if let Err(e) = node.hints.add(&owner, &key_owned, &object).await {
                    warn!(owner = %owner, cause = %e, "cannot keep a hint for a replica that missed a write");
                }
            }
        });
        if acks < w {
            return Err(CoordError::WriteUnknown {
                needed: w,
                got: acks,
                details: describe(&errors),
            });
        }
        Ok(existed)
    }

    /// Answers a request from a peer (after checking every field of it).
    pub async fn handle_peer(self: &Arc<Self>, req: Request) -> Response {
        let err = |e: ReplicaError| Response::Error {
            message: e.to_string(),
            unknown: false,
        };
        if let Err(why) = req.validate(self.config.n) {
            warn!(cause = %why, "refusing an invalid peer request");
            return Response::Error {
                message: format!("invalid request: {why}"),
                unknown: false,
            };
        }
        match req {
            Request::Ping => Response::Pong {
                node_id: self.id().to_string(),
            },
            Request::Get { key } => match self.local_get(&key).await {
                Ok(o) => Response::Object(o),
                Err(e) => err(e),
            },
            Request::Replicate { key, object, hint } => {
                match self.local_merge(&key, &object, hint.as_deref()).await {
                    Ok(()) => Response::Ack,
                    Err(e) => err(e),
                }
            }
            Request::Inspect { key } => {
                let own = match self.replica.get(&key).await {
                    Ok(o) => o,
                    Err(e) => return err(e),
                };
                let mut hints = Vec::new();
                for owner in self.hints.owners_of(&key) {
                    match self.hints.for_owner(&owner, &key).await {
                        Ok(Some(o)) => hints.push((owner, o)),
                        Ok(None) => {}
                        Err(e) => return err(e),
                    }
                }
                Response::Inspected { own, hints }
            }
            Request::Put {
                key,
                value,
                context,
                w,
            } => match self
                .put_as_actor(&key, value, context.as_ref(), w, None)
                .await
            {
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
            Request::AaeRoots { peer } => Response::Hashes(self.trees.roots(&peer)),
            Request::AaeLeaves { peer, partition } => {
                Response::Hashes(self.trees.leaves(&peer, partition as usize))
            }
            Request::AaeKeys {
                peer,
                partition,
                buckets,
            } => Response::KeyDigests(
                self.trees
                    .key_digests(&peer, partition as usize, &buckets)
                    .into_iter()
                    .map(|(k, d)| (serde_bytes::ByteBuf::from(k), d))
                    .collect(),
            ),
        }
    }

    /// What every member stores for `key`, one line each: the owners (in
    /// preference order) first, then stand-ins holding hints for it.
    pub async fn replicas_report(self: &Arc<Self>, key: &[u8]) -> String {
        let view = self.membership.view();
        let owners: Vec<String> = self
            .targets(&view, key)
            .into_iter()
            .map(|t| t.node)
            .collect();
        let mut tasks = Vec::new();
        for (node, addr) in &view.members {
            let (this, node, addr, key) = (self.clone(), node.clone(), *addr, key.to_vec());
            tasks.push(tokio::spawn(async move {
                let answer = if node == this.id() {
                    this.handle_peer(Request::Inspect { key }).await
                } else {
                    match this
                        .transport
                        .call(addr, Request::Inspect { key }, this.config.request_timeout)
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => Response::Error {
                            message: e.to_string(),
                            unknown: false,
                        },
                    }
                };
                (node, answer)
            }));
        }
        let mut answers = std::collections::BTreeMap::new();
        for t in tasks {
            if let Ok((node, answer)) = t.await {
                answers.insert(node, answer);
            }
        }
        let mut lines = Vec::new();
        for (i, owner) in owners.iter().enumerate() {
            let state = if view.is_live(owner) { "live" } else { "down" };
            let what = match answers.get(owner) {
                Some(Response::Inspected { own, .. }) => describe_object(own.as_ref()),
                Some(Response::Error { message, .. }) => format!("unreachable: {message}"),
                _ => "no answer".into(),
            };
            lines.push(format!("{owner} (owner {}, {state}) {what}", i + 1));
        }
        for (node, answer) in &answers {
            if let Response::Inspected { own, hints } = answer {
                if !owners.contains(node) && own.is_some() {
                    lines.push(format!(
                        "{node} (not an owner) {}",
                        describe_object(own.as_ref())
                    ));
                }
                for (owner, obj) in hints {
                    lines.push(format!(
                        "{node} (stand-in for {owner}) {}",
                        describe_object(Some(obj))
                    ));
                }
            }
        }
        lines.join("\n") + "\n"
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

/// One line for a stored copy: clock, then each sibling as `dot=value`.
fn describe_object(obj: Option<&Object>) -> String {
    let Some(o) = obj else {
        return "(none)".into();
    };
    let siblings: Vec<String> = o
        .siblings
        .iter()
        .map(|s| {
            let v = s
                .value
                .as_deref()
                .map_or("(deleted)".to_string(), crate::repl::quote);
            format!("{}:{}={v}", s.dot.actor, s.dot.counter)
        })
        .collect();
    format!("clock={} siblings=[{}]", o.clock, siblings.join(", "))
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
