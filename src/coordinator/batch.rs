//! Replication in batches: the copies of the writes this node makes as
//! their actor in one turn of its scheduler (a client's pipeline of SETs,
//! or many clients' SETs read at once) go to each replica as one
//! [`Request::ReplicateMany`] frame, answered after one log sync there,
//! while one wait here covers this node's own sync of them all. Each write
//! is still acknowledged on its own, as soon as W copies of it are durable.
//!
//! The first write of a turn starts the batch's flush as a task, which
//! yields once so that it runs after the tasks already woken in that turn
//! and the writes they make join the batch. Only the plain case is batched
//! ([`fits`]): a write whose other replicas are all owners believed live,
//! outside a layout change, with a small value; anything else takes the
//! per-write path ([`Coordinator::replicate_written`]). As in that path, a
//! copy that fails goes at once to the write's next spare stand-in (which
//! keeps it as a hint for the owner) while the write waits for W and time
//! remains, a write gives up as soon as W is out of reach, and every owner
//! a write did not reach gets a hint kept here.
//!
//! Digest reads are batched the same way, per replica: the digests one
//! turn's reads ask of a replica go in one [`Request::DigestMany`] frame
//! (a lone one as a plain [`Request::Digest`]). Each read keeps its own
//! quorum driver, with its hedge and deadline; only the call is shared.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::plan::Target;
use super::{CoordError, Coordinator};
use crate::cluster::InFlightGuard;
use crate::object::Object;
use crate::rpc::call::{Answer as _, Digests as DigestsAnswer, Fingerprint, Merged};
use crate::rpc::message::MAX_FETCH_KEYS;
use crate::rpc::message::{NodeFailure, QuorumFailure, Reason, RemoteError};
use crate::rpc::{Request, Response, Shared, ask, ask_shared};
use crate::storage::Lsn;
use crate::vclock::Dot;
use crate::write::Done;

/// Copies per frame (a peer takes up to
/// [`crate::rpc::message::MAX_REPLICATE_COPIES`]).
const MAX_COPIES: usize = 128;
/// Bytes of copies past which a frame takes no more.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// A write with a larger value is replicated on its own.
const MAX_VALUE: usize = 64 * 1024;

/// Whether a write this node made as an owner of its key can be batched:
/// see the module doc. `others` are its other replicas, `two_sets` says a
/// layout change asks for W in two owner sets.
pub(super) fn fits(others: &[Target], two_sets: bool, w: usize, value_len: usize) -> bool {
    !two_sets
        && !others.is_empty()
        && w <= others.len() + 1
        && value_len <= MAX_VALUE
        && others.iter().all(|t| t.live && t.hint.is_none())
}

/// A write made here whose copies wait for their batch.
pub(super) struct Made {
    /// The key.
    pub key: Vec<u8>,
    /// The object stored here, to copy to the other replicas.
    pub object: Object,
    /// Where this node's replica appended it.
    pub lsn: Lsn,
    /// The answer, once W copies are durable.
    pub done: Done,
    /// Acknowledgements required (this node's own copy included).
    pub w: usize,
    /// The other replicas.
    pub others: Vec<Target>,
    /// Live nodes that may stand in for a replica that fails.
    pub spares: VecDeque<Target>,
    /// Counts the write as running under its view's layout.
    pub running: InFlightGuard,
}

/// A batched write and where its answer goes.
struct Waiting {
    made: Made,
    tx: oneshot::Sender<Result<Done, CoordError>>,
}

/// The writes of the current turn, not yet taken by their flush.
#[derive(Default)]
pub(super) struct Batch {
    open: Mutex<Vec<Waiting>>,
}

impl Batch {
    /// Adds a write; true when it is the first of a new batch.
    fn add(&self, w: Waiting) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.push(w);
        open.len() == 1
    }

    /// Takes every write waiting.
    fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A digest read's answer.
type Digested = Result<Fingerprint, Reason>;

/// The keys of the digest reads waiting for one replica, each with where
/// its answer goes.
type Asked = Vec<(Vec<u8>, oneshot::Sender<Digested>)>;

/// The digest reads of the current turn, by replica, not yet taken by
/// their flush.
#[derive(Default)]
pub(super) struct Digests {
    open: Mutex<std::collections::HashMap<std::net::SocketAddr, Asked>>,
}

/// One frame's copies and the replicas they all go to.
struct Group {
    peers: Vec<Target>,
    /// The write (index into the items) of each copy, in frame order.
    members: Vec<usize>,
    bytes: usize,
    copies: Vec<(serde_bytes::ByteBuf, Object)>,
}

impl Group {
    /// Whether a write replicated to `others` (and `bytes` long) joins it.
    fn takes(&self, others: &[Target], bytes: usize) -> bool {
        self.members.len() < MAX_COPIES
            && self.bytes + bytes <= MAX_FRAME_BYTES
            && self.peers.len() == others.len()
            && others
                .iter()
                .all(|o| self.peers.iter().any(|p| p.node == o.node))
    }
}

/// What a batch knows of one of its writes.
struct Item {
    done: Done,
    w: usize,
    spares: VecDeque<Target>,
    running: Option<InFlightGuard>,
    tx: Option<oneshot::Sender<Result<Done, CoordError>>>,
    /// Its copy: group and position in the group's frame.
    group: usize,
    at: usize,
    /// Durable copies so far (this node's included).
    acks: usize,
    /// Calls not answered yet (this node's sync included).
    pending: usize,
    failures: Vec<NodeFailure>,
    /// Owners that failed to store it, with no stand-in keeping it for them.
    missed: Vec<Arc<str>>,
    /// Owners that hold it durably (or whose stand-in does).
    placed: Vec<Arc<str>>,
}

/// Who answered in a batch.
enum From {
    /// This node's log sync.
    Here,
    /// The replica `peer` of group `group`.
    Peer { group: usize, peer: usize },
    /// A spare keeping a copy of write `item` for the owner it was
    /// named a stand-in for (`target.hint`).
    StandIn { item: usize, target: Target },
}

type Answer = (From, Result<Vec<Result<Vec<Dot>, RemoteError>>, Reason>);

impl Coordinator {
    /// Queues a write made here for its batch and waits for its answer.
    pub(super) async fn write_batched(self: &Arc<Self>, made: Made) -> Result<Done, CoordError> {
        let w = made.w;
        let (tx, rx) = oneshot::channel();
        if self.batch.add(Waiting { made, tx }) {
            let me = self.clone();
            self.tasks.spawn(async move { me.flush().await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(CoordError::WriteUnknown(QuorumFailure {
                needed: w,
                got: 0,
                failures: vec![NodeFailure {
                    node: "this node".into(),
                    reason: Reason::Store("the batch ended without an answer".into()),
                }],
            }))
        })
    }

    /// Sends the waiting writes' copies, a frame per group of replicas,
    /// and answers each write as its copies become durable.
    async fn flush(self: Arc<Self>) {
        // After the tasks woken in this turn (a runtime worker runs a task
        // it just spawned next, before them), so that their writes join.
        tokio::task::yield_now().await;
        let waiting = self.batch.take();
        if waiting.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.config.timeout + Duration::from_millis(100);
        let mut groups: Vec<Group> = Vec::new();
        let mut items: Vec<Item> = Vec::with_capacity(waiting.len());
        let mut last = 0;
        for Waiting { made, tx } in waiting {
            let bytes = made.key.len() + made.object.encoded_size_hint();
            let g = match groups.iter().rposition(|g| g.takes(&made.others, bytes)) {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        peers: made.others.clone(),
                        members: Vec::new(),
                        bytes: 0,
                        copies: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[g];
            last = last.max(made.lsn);
            items.push(Item {
                done: made.done,
                w: made.w,
                spares: made.spares,
                running: Some(made.running),
                tx: Some(tx),
                group: g,
                at: group.members.len(),
                acks: 0,
                pending: 1 + made.others.len(),
                failures: Vec::new(),
                missed: Vec::new(),
                placed: Vec::new(),
            });
            group.members.push(items.len() - 1);
            group.bytes += bytes;
            group
                .copies
                .push((serde_bytes::ByteBuf::from(made.key), made.object));
        }
        let mut calls: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
        let here = self.replica.durable(last);
        calls.push(
            async move {
                let r = here.wait().await;
                (
                    From::Here,
                    r.map(|()| Vec::new())
                        .map_err(|e| Reason::Store(e.to_string())),
                )
            }
            .boxed(),
        );
        let mut frames: Vec<Arc<Shared>> = Vec::with_capacity(groups.len());
        let mut peers: Vec<Vec<Target>> = Vec::with_capacity(groups.len());
        let mut members: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
        for (g, group) in groups.into_iter().enumerate() {
            let frame = Arc::new(Shared::new(Request::ReplicateMany {
                copies: group.copies,
            }));
            for (p, t) in group.peers.iter().enumerate() {
                let (me, frame, addr) = (self.clone(), frame.clone(), t.addr);
                calls.push(
                    async move {
                        let r =
                            ask_shared::<Merged>(&*me.transport, addr, &frame, me.config.timeout)
                                .await
                                .map(|m| m.0)
                                .map_err(|e| e.reason());
                        (From::Peer { group: g, peer: p }, r)
                    }
                    .boxed(),
                );
            }
            frames.push(frame);
            peers.push(group.peers);
            members.push(group.members);
        }
        let copy = |item: &Item| -> (&[u8], &Object) {
            match frames[item.group].request() {
                Request::ReplicateMany { copies } => {
                    let (key, object) = &copies[item.at];
                    (key.as_ref(), object)
                }
                _ => unreachable!("a batch frame carries copies"),
            }
        };
        // Answers until the deadline; then, within one more timeout, the
        // late ones (for hints only).
        let drain_until = deadline + self.config.timeout;
        loop {
            let bound = if items.iter().any(|i| i.tx.is_some()) {
                deadline
            } else {
                drain_until
            };
            let Ok(next) = tokio::time::timeout_at(bound, calls.next()).await else {
                if bound == drain_until {
                    break;
                }
                self.time_out(&mut items, Reason::Timeout);
                continue;
            };
            let Some((from, result)) = next else { break };
            // (write, owner, why) of each copy that failed.
            let mut failed: Vec<(usize, Arc<str>, NodeFailure)> = Vec::new();
            let touched: Vec<usize> = match from {
                From::Here => {
                    for item in &mut items {
                        item.pending -= 1;
                        match &result {
                            Ok(_) => item.acks += 1,
                            Err(reason) => item.failures.push(NodeFailure {
                                node: self.me.to_string(),
                                reason: reason.clone(),
                            }),
                        }
                    }
                    (0..items.len()).collect()
                }
                From::Peer { group, peer } => {
                    let node = &peers[group][peer].node;
                    let members = &members[group];
                    let results = match result {
                        Ok(r) if r.len() == members.len() => r.into_iter().map(Ok).collect(),
                        Ok(r) => {
                            let why = format!("{} results for {} copies", r.len(), members.len());
                            vec![Err(Reason::BadAnswer(why)); members.len()]
                        }
                        Err(reason) => vec![Err(reason); members.len()],
                    };
                    for (&i, r) in members.iter().zip(results) {
                        let item = &mut items[i];
                        item.pending -= 1;
                        match r.and_then(|r| r.map_err(|e| Reason::Remote(e.to_string()))) {
                            Ok(conflicts) => {
                                item.acks += 1;
                                item.placed.push(node.clone());
                                self.replica.note_conflicts_seen_by_peer(&conflicts);
                            }
                            Err(reason) => {
                                debug!(node = %node, cause = %reason, "batched replication failed");
                                let failure = NodeFailure {
                                    node: node.to_string(),
                                    reason,
                                };
                                failed.push((i, node.clone(), failure));
                            }
                        }
                    }
                    members.clone()
                }
                From::StandIn { item: i, target } => {
                    let item = &mut items[i];
                    item.pending -= 1;
                    let owner = target.hint.clone().unwrap_or(target.node.clone());
                    match result {
                        Ok(_) => {
                            item.acks += 1;
                            item.placed.push(owner);
                        }
                        Err(reason) => {
                            let failure = NodeFailure {
                                node: target.node.to_string(),
                                reason,
                            };
                            failed.push((i, owner, failure));
                        }
                    }
                    vec![i]
                }
            };
            // A copy that failed goes to the write's next spare at once
            // (which keeps it as a hint for the owner), while the write
            // waits for W and time is left; else the owner gets a hint here.
            for (i, owner, failure) in failed {
                let item = &mut items[i];
                item.failures.push(failure);
                let spare = match item.tx.is_some() && Instant::now() < deadline {
                    true => item.spares.pop_front(),
                    false => None,
                };
                let Some(mut spare) = spare else {
                    item.missed.push(owner);
                    continue;
                };
                spare.hint = Some(owner.clone());
                item.pending += 1;
                let (key, object) = copy(item);
                let req = Arc::new(Shared::new(Request::Replicate {
                    key: key.to_vec(),
                    object: object.clone(),
                    hint: Some(owner.to_string()),
                }));
                calls.push(
                    self.replicate_to_target(spare, req)
                        .map(move |(target, r)| {
                            (From::StandIn { item: i, target }, r.map(|()| Vec::new()))
                        })
                        .boxed(),
                );
            }
            for i in touched {
                let item = &mut items[i];
                if item.tx.is_some() && item.acks >= item.w {
                    self.answer(item, Ok(()));
                }
                // W out of reach even if every call running and every
                // spare left succeeded: give up now, as the driver does.
                if item.tx.is_some() && item.acks + item.pending + item.spares.len() < item.w {
                    item.failures.push(NodeFailure {
                        node: format!("{} replica(s)", item.pending),
                        reason: Reason::NoAnswer,
                    });
                    let failure = QuorumFailure {
                        needed: item.w,
                        got: item.acks,
                        failures: std::mem::take(&mut item.failures),
                    };
                    self.answer(item, Err(failure));
                }
                if item.pending > 0 {
                    continue;
                }
                // Every call answered (stand-ins included): W not met is
                // final.
                if item.tx.is_some() {
                    let failure = QuorumFailure {
                        needed: item.w,
                        got: item.acks,
                        failures: std::mem::take(&mut item.failures),
                    };
                    self.answer(item, Err(failure));
                }
                let missed = std::mem::take(&mut item.missed);
                let (key, object) = copy(item);
                self.keep_hints(key, object, missed);
            }
        }
        // Calls still unanswered after the drain: the owners that do not
        // hold the write get hints.
        for item in &mut items {
            if item.pending > 0 {
                let mut missed = std::mem::take(&mut item.missed);
                let g = item.group;
                let unplaced: Vec<Arc<str>> = peers[g]
                    .iter()
                    .map(|t| t.node.clone())
                    .filter(|o| !item.placed.contains(o) && !missed.contains(o))
                    .collect();
                missed.extend(unplaced);
                let (key, object) = copy(item);
                self.keep_hints(key, object, missed);
            }
        }
    }

    /// Asks the replica at `addr` for the digest of its copy of `key`, in
    /// one frame with the other digest reads of this turn to it.
    pub(super) async fn ask_digest(
        self: &Arc<Self>,
        addr: std::net::SocketAddr,
        key: &[u8],
    ) -> Digested {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut open = self.digests.open.lock().unwrap_or_else(|e| e.into_inner());
            let asked = open.entry(addr).or_default();
            asked.push((key.to_vec(), tx));
            asked.len() == 1
        };
        if first {
            let me = self.clone();
            self.tasks
                .spawn(async move { me.flush_digests(addr).await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(Reason::BadAnswer(
                "the digest batch ended without an answer".into(),
            ))
        })
    }

    /// Sends the digest reads waiting for `addr`, a frame per
    /// [`MAX_FETCH_KEYS`] (all at once), and hands each its answer.
    async fn flush_digests(self: Arc<Self>, addr: std::net::SocketAddr) {
        // After the tasks woken in this turn (a runtime worker runs a task
        // it just spawned next, before them).
        tokio::task::yield_now().await;
        let mut asked = {
            let mut open = self.digests.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(&addr).unwrap_or_default()
        };
        let mut chunks = Vec::new();
        while !asked.is_empty() {
            let rest = asked.split_off(asked.len().min(MAX_FETCH_KEYS));
            chunks.push(std::mem::replace(&mut asked, rest));
        }
        futures::future::join_all(chunks.into_iter().map(|c| self.send_digests(addr, c))).await;
    }

    /// Sends one frame of digest reads to `addr` and hands each its answer.
    async fn send_digests(&self, addr: std::net::SocketAddr, asked: Asked) {
        use crate::rpc::message::DigestAnswer;
        let timeout = self.config.timeout;
        let (keys, txs): (Vec<Vec<u8>>, Vec<_>) = asked.into_iter().unzip();
        let answers: Vec<Digested> = if keys.len() == 1 {
            let key = keys.into_iter().next().unwrap_or_default();
            let r =
                ask::<Fingerprint>(&*self.transport, addr, &Request::Digest { key }, timeout).await;
            vec![r.map_err(|e| e.reason())]
        } else {
            let n = keys.len();
            let keys = keys.into_iter().map(serde_bytes::ByteBuf::from).collect();
            let req = Request::DigestMany { keys };
            match ask::<DigestsAnswer>(&*self.transport, addr, &req, timeout).await {
                Ok(DigestsAnswer(answers)) if answers.len() == n => answers
                    .into_iter()
                    .map(|a| match a {
                        DigestAnswer::Digest(d) => Ok(Fingerprint::Digest(d)),
                        DigestAnswer::Object(o) => {
                            Fingerprint::decode(Response::Object(o)).map_err(Reason::BadAnswer)
                        }
                        DigestAnswer::Error(e) => Err(Reason::Remote(e.to_string())),
                    })
                    .collect(),
                Ok(DigestsAnswer(answers)) => {
                    let why = format!("{} answers for {n} digest reads", answers.len());
                    vec![Err(Reason::BadAnswer(why)); n]
                }
                Err(e) => vec![Err(e.reason()); n],
            }
        };
        for (tx, answer) in txs.into_iter().zip(answers) {
            // The read may be over (its quorum met elsewhere).
            let _ = tx.send(answer);
        }
    }

    /// Answers every write not answered yet as failed for `reason`.
    fn time_out(&self, items: &mut [Item], reason: Reason) {
        for item in items.iter_mut().filter(|i| i.tx.is_some()) {
            item.failures.push(NodeFailure {
                node: format!("{} replica(s)", item.pending),
                reason: reason.clone(),
            });
            let failure = QuorumFailure {
                needed: item.w,
                got: item.acks,
                failures: item.failures.clone(),
            };
            self.answer(item, Err(failure));
        }
    }

    /// Answers one batched write.
    fn answer(&self, item: &mut Item, r: Result<(), QuorumFailure>) {
        item.running = None;
        self.settle(item.tx.take(), item.done.clone(), r);
    }

    /// Counts a write's outcome and sends it to its waiter.
    fn settle(
        &self,
        tx: Option<oneshot::Sender<Result<Done, CoordError>>>,
        done: Done,
        r: Result<(), QuorumFailure>,
    ) {
        let answer = self.write_outcome(done, r);
        if let Some(tx) = tx {
            // The client may be gone: its write stands all the same.
            let _ = tx.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(node: &str, live: bool, hint: Option<&str>) -> Target {
        Target {
            idx: 0,
            node: node.into(),
            addr: "127.0.0.1:1".parse().expect("an address"),
            live,
            hint: hint.map(Into::into),
        }
    }

    #[test]
    fn only_plain_writes_to_live_owners_are_batched() {
        let two = [target("b", true, None), target("c", true, None)];
        assert!(fits(&two, false, 2, 100));
        assert!(fits(&two, false, 3, MAX_VALUE));
        assert!(!fits(&two, true, 2, 100), "a layout change");
        assert!(!fits(&two, false, 4, 100), "W beyond the replicas");
        assert!(!fits(&two, false, 2, MAX_VALUE + 1), "a large value");
        assert!(!fits(&[], false, 1, 100), "no other replica");
        let down = [target("b", false, None), target("c", true, None)];
        assert!(!fits(&down, false, 2, 100), "an owner believed down");
        let stand_in = [target("d", true, Some("b")), target("c", true, None)];
        assert!(!fits(&stand_in, false, 2, 100), "a stand-in");
    }

    #[test]
    fn a_group_takes_writes_to_the_same_replicas_until_full() {
        let group = |peers: Vec<Target>, members: usize, bytes: usize| Group {
            peers,
            members: vec![0; members],
            bytes,
            copies: Vec::new(),
        };
        let bc = vec![target("b", true, None), target("c", true, None)];
        let cb = vec![target("c", true, None), target("b", true, None)];
        let bd = vec![target("b", true, None), target("d", true, None)];
        assert!(
            group(bc.clone(), 1, 10).takes(&cb, 10),
            "order does not matter"
        );
        assert!(!group(bc.clone(), 1, 10).takes(&bd, 10));
        assert!(!group(bc.clone(), 1, 10).takes(&bc[..1], 10));
        assert!(!group(bc.clone(), MAX_COPIES, 10).takes(&bc, 10));
        assert!(!group(bc.clone(), 1, MAX_FRAME_BYTES - 5).takes(&bc, 10));
        assert!(group(bc, 1, MAX_FRAME_BYTES - 10).takes(&cb, 10));
    }
}
