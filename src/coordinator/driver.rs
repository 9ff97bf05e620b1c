//! The one quorum driver: every request that needs answers from several
//! peers (a read, a write's replication, a scan, a batch of hints) runs
//! through [`drive`], which counts the answers with the pure
//! [`Tracker`](super::quorum::Tracker). The shape is Garage's
//! `try_call_many` with a request strategy:
//!
//! - the strategy says how many targets are asked at once
//!   ([`Strategy::All`], or [`Strategy::Quorum`]: `needed`, then one more
//!   per failure);
//! - an optional hedge asks every remaining target when the quorum has not
//!   answered after a delay;
//! - a target that fails may be replaced by a stand-in (the caller's
//!   `replace`, a sloppy quorum's next live node); one that cannot be
//!   replaced is reported in [`Outcome::unplaced`];
//! - it returns as soon as the quorum is met or can no longer be, or at the
//!   deadline, handing back the calls still running, so the caller decides
//!   whether their late answers matter ([`Outcome::finish`], or a
//!   background task).
//!
//! What a call does (a local step or a peer request) is the caller's
//! closure; the driver only counts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::plan::Target;
use super::quorum::{State, Strategy, Tracker};
use crate::rpc::message::Reason;

/// Something a request is sent to, named in failure reports.
pub trait Peer {
    /// The node id (or, for a batch to one node, that node's id).
    fn node(&self) -> &str;

    /// The owner an answer counts for (a stand-in's is the owner it keeps
    /// a hint for).
    fn owner(&self) -> &str {
        self.node()
    }
}

impl Peer for Target {
    fn node(&self) -> &str {
        &self.node
    }

    fn owner(&self) -> &str {
        self.hint.as_deref().unwrap_or(&self.node)
    }
}

/// One call in flight: resolves to its target and the answer.
pub type Call<'a, I, T> = BoxFuture<'a, (I, Result<T, Reason>)>;

/// How a request is driven.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Successes needed (in each owner set, when there are several).
    pub needed: usize,
    /// Owner sets that must each reach `needed` (a write during a layout
    /// change); `None`: any `needed` targets.
    pub sets: Option<Vec<Vec<Arc<str>>>>,
    /// How many targets are asked at once.
    pub strategy: Strategy,
    /// When the driver gives up waiting.
    pub deadline: Instant,
    /// Ask every remaining target if the quorum has not answered after this.
    pub hedge_after: Option<Duration>,
}

/// The calls in flight. Many requests make only one (a digest read's one
/// peer, a hint batch): it is kept inline, and a `FuturesUnordered` (two
/// allocations to make, one per call, and a shared queue to wake through)
/// is made only for a second one.
pub struct Running<'a, I, T> {
    one: Option<Call<'a, I, T>>,
    more: Option<FuturesUnordered<Call<'a, I, T>>>,
}

impl<I, T> Default for Running<'_, I, T> {
    fn default() -> Self {
        Running {
            one: None,
            more: None,
        }
    }
}

impl<'a, I, T> Running<'a, I, T> {
    /// Adds a call. A second one moves the first into the set too, so
    /// that calls that finish together come out in the order they were
    /// woken, as from a `FuturesUnordered` alone: which answer a request
    /// counts before it ends can depend on it (a quorum that can no longer
    /// be met ends it with the answers seen so far).
    pub fn push(&mut self, call: Call<'a, I, T>) {
        if self.one.is_none() && self.more.is_none() {
            self.one = Some(call);
            return;
        }
        let more = self.more.get_or_insert_with(FuturesUnordered::new);
        if let Some(first) = self.one.take() {
            more.push(first);
        }
        more.push(call);
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// True when no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<I, T> futures::Stream for Running<'_, I, T> {
    type Item = (I, Result<T, Reason>);

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        // Every field is a box or `Unpin`.
        let this = self.get_mut();
        // At most one of the two holds calls (see `push`).
        if let Some(more) = &mut this.more
            && let Poll::Ready(Some(done)) = more.poll_next_unpin(cx)
        {
            return Poll::Ready(Some(done));
        }
        if let Some(call) = &mut this.one
            && let Poll::Ready(done) = call.as_mut().poll(cx)
        {
            this.one = None;
            return Poll::Ready(Some(done));
        }
        if this.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// What a driven request came to.
pub struct Outcome<'a, I, T> {
    /// The answers counted.
    pub tracker: Tracker,
    /// The successful answers, with their targets.
    pub replies: Vec<(I, T)>,
    /// Calls still running when the driver returned.
    pub running: Running<'a, I, T>,
    /// Targets that failed with no stand-in left to replace them.
    pub unplaced: Vec<I>,
    /// The request's deadline.
    pub deadline: Instant,
}

impl<I: Peer, T> Outcome<'_, I, T> {
    /// True when the quorum was met.
    pub fn met(&self) -> bool {
        self.tracker.state() == State::Met
    }

    /// Waits, until the deadline, for the calls still running, counting
    /// their answers (late successes join `replies`, late failures
    /// `unplaced`).
    pub async fn finish(&mut self) {
        while let Ok(Some((t, result))) =
            tokio::time::timeout_at(self.deadline, self.running.next()).await
        {
            match result {
                Ok(v) => {
                    self.tracker.success_for(t.owner());
                    self.replies.push((t, v));
                }
                Err(reason) => {
                    self.tracker.failure(t.node(), reason);
                    self.tracker.lost(t.owner());
                    self.unplaced.push(t);
                }
            }
        }
    }
}

/// Drives one request: see the module doc. `call` starts the call to one
/// target; `replace` offers a stand-in for a target that failed (or `None`).
pub async fn drive<'a, I, T, F, R>(
    targets: impl IntoIterator<Item = I>,
    spec: Spec,
    mut call: F,
    mut replace: R,
) -> Outcome<'a, I, T>
where
    I: Peer,
    F: FnMut(I) -> Call<'a, I, T>,
    R: FnMut(&I) -> Option<I>,
{
    let mut pending: VecDeque<I> = targets.into_iter().collect();
    let mut tracker = Tracker::new(spec.needed, pending.len(), spec.strategy);
    if let Some(sets) = spec.sets.clone() {
        tracker = tracker.with_sets(sets, spec.needed);
    }
    let mut running = Running::default();
    let mut replies = Vec::with_capacity(spec.needed);
    let mut unplaced = Vec::new();
    // One timer, not two (each costs a registration in the runtime's
    // wheel): it fires at the hedge, if there is one before the deadline,
    // and is then set to the deadline.
    let hedge_at = spec
        .hedge_after
        .and_then(|h| Instant::now().checked_add(h))
        .filter(|&at| at < spec.deadline);
    let mut hedged = hedge_at.is_none();
    let timer = tokio::time::sleep_until(hedge_at.unwrap_or(spec.deadline));
    tokio::pin!(timer);
    loop {
        for _ in 0..tracker.to_send() {
            match pending.pop_front() {
                Some(t) => running.push(call(t)),
                None => break,
            }
        }
        if tracker.state() != State::Pending || running.is_empty() {
            break;
        }
        tokio::select! {
            done = running.next() => {
                let Some((t, result)) = done else { break };
                match result {
                    Ok(v) => {
                        tracker.success_for(t.owner());
                        replies.push((t, v));
                    }
                    Err(reason) => {
                        tracker.failure(t.node(), reason);
                        match replace(&t) {
                            Some(stand_in) => {
                                tracker.add_target();
                                pending.push_front(stand_in);
                            }
                            None => {
                                tracker.lost(t.owner());
                                unplaced.push(t);
                            }
                        }
                    }
                }
            }
            _ = &mut timer => {
                if hedged {
                    break;
                }
                hedged = true;
                for _ in 0..tracker.hedge() {
                    match pending.pop_front() {
                        Some(t) => running.push(call(t)),
                        None => break,
                    }
                }
                timer.as_mut().reset(spec.deadline);
            }
        }
    }
    Outcome {
        tracker,
        replies,
        running,
        unplaced,
        deadline: spec.deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[derive(Debug, Clone, PartialEq)]
    struct P(&'static str);

    impl Peer for P {
        fn node(&self) -> &str {
            self.0
        }
    }

    fn spec(needed: usize, strategy: Strategy, ms: u64) -> Spec {
        Spec {
            needed,
            sets: None,
            strategy,
            deadline: Instant::now() + Duration::from_millis(ms),
            hedge_after: None,
        }
    }

    /// A call answering after `delay` ms, failing for names starting with `x`.
    fn call(p: P, delay: u64) -> Call<'static, P, &'static str> {
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let r = if p.0.starts_with('x') {
                Err(Reason::Timeout)
            } else {
                Ok(p.0)
            };
            (p, r)
        }
        .boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_running_set_yields_every_call_in_the_order_they_finish() {
        let mut running = Running::default();
        assert!(running.is_empty());
        assert!(running.next().await.is_none());
        // The first call (inline until the second comes) finishes last; the
        // others overtake it.
        running.push(call(P("a"), 30));
        running.push(call(P("b"), 10));
        running.push(call(P("x1"), 20));
        assert_eq!(running.len(), 3);
        let mut order = Vec::new();
        while let Some((p, _)) = running.next().await {
            order.push(p.0);
            // A call pushed while others run is awaited too.
            if p.0 == "b" {
                running.push(call(P("c"), 5));
            }
        }
        assert_eq!(order, ["b", "c", "x1", "a"]);
        assert!(running.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn quorum_asks_one_more_per_failure_and_stops_when_met() {
        let mut asked = Vec::new();
        let out = drive(
            [P("x1"), P("a"), P("b"), P("c")],
            spec(2, Strategy::Quorum, 1000),
            |p| {
                asked.push(p.0);
                call(p, 10)
            },
            |_| None,
        )
        .await;
        assert!(out.met());
        assert_eq!(asked, ["x1", "a", "b"]);
        assert_eq!(out.unplaced, [P("x1")]);
        let mut got: Vec<_> = out.replies.iter().map(|(_, v)| *v).collect();
        got.sort();
        assert_eq!(got, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_replaced_by_stand_ins_and_late_answers_can_be_finished() {
        let mut spares = vec![P("s2"), P("s1")];
        let mut out = drive(
            [P("a"), P("x1"), P("slow")],
            spec(2, Strategy::All, 1000),
            |p| {
                let delay = if p.0 == "slow" { 500 } else { 10 };
                call(p, delay)
            },
            |_| spares.pop(),
        )
        .await;
        assert!(out.met());
        assert_eq!(out.tracker.sent(), 4);
        assert_eq!(out.running.len(), 1);
        out.finish().await;
        assert_eq!(out.replies.len(), 3);
        assert!(out.running.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_quorum_fails_early_and_the_deadline_bounds_waiting() {
        let out = drive(
            [P("x1"), P("x2"), P("a")],
            spec(2, Strategy::All, 1000),
            |p| call(p, 10),
            |_| None,
        )
        .await;
        assert_eq!(out.tracker.state(), State::Failed);
        let started = Instant::now();
        let out = drive(
            [P("a"), P("b")],
            spec(2, Strategy::All, 100),
            |p| {
                let delay = if p.0 == "b" { 5000 } else { 1 };
                call(p, delay)
            },
            |_| None,
        )
        .await;
        assert_eq!(out.tracker.state(), State::Pending);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_asks_every_remaining_target() {
        let mut s = spec(1, Strategy::Quorum, 1000);
        s.hedge_after = Some(Duration::from_millis(50));
        let mut asked = Vec::new();
        let out = drive(
            [P("slow"), P("b"), P("c")],
            s,
            |p| {
                asked.push(p.0);
                let delay = if p.0 == "slow" { 500 } else { 10 };
                call(p, delay)
            },
            |_| None,
        )
        .await;
        assert!(out.met());
        assert_eq!(asked, ["slow", "b", "c"]);
        assert_eq!(out.running.len(), 2);
    }
}
