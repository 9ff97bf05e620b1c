//! The operation history of a nemesis run: one record per client operation,
//! with what it read, what it wrote, through which coordinator, and how it
//! ended (acknowledged, failed, or unknown).

use std::fmt;

/// How a write ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `+OK`: acknowledged by W replicas. Must never be lost.
    Ok,
    /// Definitely not applied: the read half failed (no write was sent), the
    /// connection could not be opened, or the node refused the write.
    Fail(String),
    /// Maybe applied: `write outcome unknown`, or the connection broke or
    /// timed out after the command was sent.
    Unknown(String),
}

/// One client operation: a read-modify-write (`VGET`, then `SET` with the
/// context of that read).
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub seq: u64,
    pub key: String,
    /// Index of the coordinating node.
    pub coord: usize,
    /// The value written (unique in the run); `None` when the read half
    /// failed and no write was sent.
    pub value: Option<String>,
    /// The sibling values the `VGET` showed, i.e. what the write's context
    /// covers and replaces.
    pub seen: Vec<String>,
    pub outcome: Outcome,
    /// The coordinator was a node the nemesis had killed or stopped, at
    /// invocation or at completion (a race: clients avoid such nodes).
    pub coord_faulty: bool,
    /// Milliseconds since the run started.
    pub invoke_ms: u64,
    pub complete_ms: u64,
}

impl Op {
    pub fn acknowledged(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Fail(why) => format!("fail ({why})"),
            Outcome::Unknown(why) => format!("unknown ({why})"),
        };
        write!(
            f,
            "[{:>6}..{:>6} ms] c{} #{} via node{}{} {} := {} (read {:?}) -> {}",
            self.invoke_ms,
            self.complete_ms,
            self.client,
            self.seq,
            self.coord,
            if self.coord_faulty { " (faulty)" } else { "" },
            self.key,
            self.value.as_deref().unwrap_or("-"),
            self.seen,
            outcome
        )
    }
}
