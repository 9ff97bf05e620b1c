//! The quorum tracker: a pure state machine that says when a request has
//! enough answers, when it can no longer get them, and which replicas to
//! ask next. Reads, writes, read repair and hint delivery all count their
//! answers with it, so the rule is written once.
//!
//! During a layout change a write needs W answers in *each* of two owner
//! sets (the partition's previous owners and its new ones): a tracker made
//! [`Tracker::with_sets`] counts a success for every set that holds the
//! owner it stands for, and fails as soon as one set can no longer reach W.
//!
//! Two strategies: [`Strategy::All`] sends to every target at once (writes:
//! every replica must get the write anyway); [`Strategy::Quorum`] sends to
//! `needed` targets first and one more for each failure, or to all the rest
//! when the caller hedges after a delay (reads: fewer messages per request).

use std::sync::Arc;

use crate::rpc::message::{NodeFailure, QuorumFailure, Reason};

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// To every target at once.
    All,
    /// To `needed` targets, then one more per failure (or all, on hedge).
    Quorum,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Enough successes.
    Met,
    /// Not yet; more answers are coming or more targets can be asked.
    Pending,
    /// Can no longer be met: too many failures.
    Failed,
}

/// Counts answers from up to `total` targets toward `needed` successes.
#[derive(Debug, Clone)]
pub struct Tracker {
    needed: usize,
    total: usize,
    strategy: Strategy,
    sent: usize,
    ok: usize,
    failures: Vec<NodeFailure>,
    sets: Option<Sets>,
}

/// Owner sets that must each reach their quorum.
#[derive(Debug, Clone)]
struct Sets {
    owners: Vec<Vec<Arc<str>>>,
    needed: Vec<usize>,
    ok: Vec<usize>,
    lost: Vec<usize>,
}

impl Tracker {
    /// A request needing `needed` of `total` targets.
    pub fn new(needed: usize, total: usize, strategy: Strategy) -> Tracker {
        Tracker {
            needed,
            total,
            strategy,
            sent: 0,
            ok: 0,
            failures: Vec::new(),
            sets: None,
        }
    }

    /// This tracker, met only when each of `sets` (owner ids) has `needed`
    /// successes (at most the set's size). With a single set it behaves as
    /// the plain tracker.
    pub fn with_sets(mut self, sets: Vec<Vec<Arc<str>>>, needed: usize) -> Tracker {
        let k = sets.len();
        self.sets = Some(Sets {
            needed: sets.iter().map(|s| needed.min(s.len())).collect(),
            owners: sets,
            ok: vec![0; k],
            lost: vec![0; k],
        });
        self
    }

    /// Records a success on behalf of `owner` (a stand-in counts for the
    /// owner it keeps a hint for).
    pub fn success_for(&mut self, owner: &str) {
        self.ok += 1;
        if let Some(s) = &mut self.sets {
            for (i, set) in s.owners.iter().enumerate() {
                if set.iter().any(|o| &**o == owner) {
                    s.ok[i] += 1;
                }
            }
        }
    }

    /// Records that `owner`'s copy is lost for this request: it failed and
    /// no stand-in took its place.
    pub fn lost(&mut self, owner: &str) {
        if let Some(s) = &mut self.sets {
            for (i, set) in s.owners.iter().enumerate() {
                if set.iter().any(|o| &**o == owner) {
                    s.lost[i] += 1;
                }
            }
        }
    }

    /// How many more targets to send to now (and records them as sent).
    pub fn to_send(&mut self) -> usize {
        let want = match self.strategy {
            Strategy::All => self.total,
            // Enough in flight to reach `needed` if they all succeed.
            Strategy::Quorum => (self.needed + self.failures.len()).min(self.total),
        };
        let n = want.saturating_sub(self.sent);
        self.sent += n;
        n
    }

    /// Sends to every target not asked yet (a hedge); returns how many.
    pub fn hedge(&mut self) -> usize {
        let n = self.total - self.sent;
        self.sent = self.total;
        n
    }

    /// Records a success.
    pub fn success(&mut self) {
        self.ok += 1;
    }

    /// Records a failure of `node`.
    pub fn failure(&mut self, node: &str, reason: Reason) {
        self.failures.push(NodeFailure {
            node: node.to_string(),
            reason,
        });
    }

    /// Adds a target that was not known at the start (a sloppy stand-in
    /// replacing a failed replica).
    pub fn add_target(&mut self) {
        self.total += 1;
    }

    /// Where the request stands.
    pub fn state(&self) -> State {
        if let Some(s) = &self.sets {
            let n = s.owners.len();
            if (0..n).all(|i| s.ok[i] >= s.needed[i]) {
                return State::Met;
            }
            if (0..n).any(|i| s.owners[i].len().saturating_sub(s.lost[i]) < s.needed[i]) {
                return State::Failed;
            }
            return State::Pending;
        }
        if self.ok >= self.needed {
            State::Met
        } else if self.total - self.failures.len() < self.needed {
            State::Failed
        } else {
            State::Pending
        }
    }

    /// Answers still expected from targets already asked.
    pub fn outstanding(&self) -> usize {
        self.sent - self.ok - self.failures.len()
    }

    /// Successes so far.
    pub fn successes(&self) -> usize {
        self.ok
    }

    /// Targets asked so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// The failures so far.
    pub fn failures(&self) -> &[NodeFailure] {
        &self.failures
    }

    /// The failure report (for an error that says who and why).
    pub fn report(&self) -> QuorumFailure {
        QuorumFailure {
            needed: self.needed,
            got: self.ok,
            failures: self.failures.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{
        Just, any, prop_assert, prop_assert_eq, prop_assume, prop_oneof, proptest,
    };

    #[test]
    fn quorum_strategy_sends_one_more_per_failure() {
        let mut t = Tracker::new(2, 3, Strategy::Quorum);
        assert_eq!(t.to_send(), 2);
        assert_eq!(t.to_send(), 0);
        t.failure("a", Reason::Timeout);
        assert_eq!(t.state(), State::Pending);
        assert_eq!(t.to_send(), 1);
        t.success();
        t.success();
        assert_eq!(t.state(), State::Met);
        assert_eq!(t.report().got, 2);
    }

    #[test]
    fn all_strategy_sends_everything_and_fails_early() {
        let mut t = Tracker::new(2, 3, Strategy::All);
        assert_eq!(t.to_send(), 3);
        t.failure("a", Reason::Dropped);
        t.failure("b", Reason::Timeout);
        assert_eq!(t.state(), State::Failed);
        let r = t.report();
        assert_eq!((r.needed, r.got, r.failures.len()), (2, 0, 2));
        let mut h = Tracker::new(1, 3, Strategy::Quorum);
        assert_eq!(h.to_send(), 1);
        assert_eq!(h.hedge(), 2);
        assert_eq!(h.outstanding(), 3);
    }

    #[test]
    fn owner_sets_each_need_their_quorum() {
        let set = |ids: &[&str]| ids.iter().map(|i| Arc::from(*i)).collect::<Vec<Arc<str>>>();
        // Previous owners a, b, c; new owners a, b, d.
        let mut t = Tracker::new(2, 4, Strategy::All)
            .with_sets(vec![set(&["a", "b", "c"]), set(&["a", "b", "d"])], 2);
        t.to_send();
        t.success_for("a");
        t.success_for("c");
        // The previous set is met, the new one has only a.
        assert_eq!(t.state(), State::Pending);
        t.failure("b", Reason::Timeout);
        t.lost("b");
        assert_eq!(t.state(), State::Pending);
        t.success_for("d");
        assert_eq!(t.state(), State::Met);
        // Losing two of a set fails it, whatever the other set does.
        let mut f = Tracker::new(2, 4, Strategy::All)
            .with_sets(vec![set(&["a", "b", "c"]), set(&["a", "b", "d"])], 2);
        f.success_for("c");
        f.lost("a");
        f.lost("b");
        assert_eq!(f.state(), State::Failed);
    }

    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Ok,
        Fail,
    }

    proptest! {
        /// Whatever the answers and their order, the tracker ends Met
        /// exactly when at least `needed` targets succeed, never sends to
        /// more than `total`, and says Failed as soon as it cannot be met.
        #[test]
        fn tracker_agrees_with_a_count(
            needed in 1usize..5,
            answers in proptest::collection::vec(prop_oneof![Just(Answer::Ok), Just(Answer::Fail)], 1..8),
            all in any::<bool>(),
            hedge_at in proptest::option::of(0usize..8),
        ) {
            let total = answers.len();
            prop_assume!(needed <= total);
            let strategy = if all { Strategy::All } else { Strategy::Quorum };
            let mut t = Tracker::new(needed, total, strategy);
            let mut queue: std::collections::VecDeque<Answer> = answers.iter().copied().collect();
            let mut in_flight = std::collections::VecDeque::new();
            let mut step = 0;
            loop {
                if hedge_at == Some(step) {
                    for _ in 0..t.hedge() { in_flight.extend(queue.pop_front()); }
                }
                for _ in 0..t.to_send() { in_flight.extend(queue.pop_front()); }
                prop_assert!(t.sent() <= total);
                match t.state() {
                    State::Met | State::Failed => break,
                    State::Pending => {}
                }
                let Some(a) = in_flight.pop_front() else {
                    prop_assert!(false, "pending with nothing in flight");
                    break;
                };
                match a { Answer::Ok => t.success(), Answer::Fail => t.failure("n", Reason::Timeout) }
                step += 1;
            }
            let oks = answers.iter().filter(|a| matches!(a, Answer::Ok)).count();
            if oks >= needed {
                prop_assert_eq!(t.state(), State::Met);
            } else {
                prop_assert_eq!(t.state(), State::Failed);
                // It gave up exactly when the failures made it impossible.
                prop_assert_eq!(t.failures().len(), total + 1 - needed);
            }
        }
    }
}
