//! Client requests counted by command and outcome: one pair of relaxed
//! atomic counters per command of the command table (sub-commands
//! included), found from the command's [`Spec`] by its address, so that
//! counting costs a hash look-up of a pointer and one atomic add.

use std::sync::LazyLock;

use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::commands::{self, Spec};

/// The label of requests that named no command of the table (unknown or
/// refused names, protocol errors, arity errors found before dispatch).
pub const OTHER: &str = "other";

/// Every command and sub-command, in table order, then [`OTHER`].
static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    all_specs()
        .map(|s| s.name)
        .chain(std::iter::once(OTHER))
        .collect()
});

/// A spec's address to its place in [`NAMES`] (hashbrown's default
/// hasher: a few nanoseconds for a word-sized key).
static INDEX: LazyLock<HashMap<usize, usize>> = LazyLock::new(|| {
    all_specs()
        .enumerate()
        .map(|(i, s)| (std::ptr::from_ref(s) as usize, i))
        .collect()
});

fn all_specs() -> impl Iterator<Item = &'static Spec> {
    commands::commands().flat_map(|s| std::iter::once(s).chain(s.subcommands.iter()))
}

/// Requests answered, by command and outcome.
#[derive(Debug)]
pub struct RequestStats {
    ok: Box<[AtomicU64]>,
    error: Box<[AtomicU64]>,
}

impl Default for RequestStats {
    fn default() -> Self {
        let zeros = || (0..NAMES.len()).map(|_| AtomicU64::new(0)).collect();
        RequestStats {
            ok: zeros(),
            error: zeros(),
        }
    }
}

/// One command's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCount {
    /// The table's name (`get`, `client|id`) or [`OTHER`].
    pub command: &'static str,
    /// Answered with anything but an error.
    pub ok: u64,
    /// Answered with an error.
    pub error: u64,
}

impl RequestStats {
    /// Counts one answered request of `spec` (`None`: no command of the table).
    pub fn record(&self, spec: Option<&'static Spec>, ok: bool) {
        let i = spec
            .and_then(|s| INDEX.get(&(std::ptr::from_ref(s) as usize)).copied())
            .unwrap_or(NAMES.len() - 1);
        let counters = if ok { &self.ok } else { &self.error };
        counters[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The commands answered at least once, in table order.
    pub fn counts(&self) -> Vec<CommandCount> {
        NAMES
            .iter()
            .enumerate()
            .map(|(i, command)| CommandCount {
                command,
                ok: self.ok[i].load(Ordering::Relaxed),
                error: self.error[i].load(Ordering::Relaxed),
            })
            .filter(|c| c.ok + c.error > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_command_and_outcome() {
        let stats = RequestStats::default();
        let get = commands::lookup(b"GET").unwrap();
        let client = commands::lookup(b"client").unwrap();
        let id = commands::sub_of(client, b"id").unwrap();
        stats.record(Some(get), true);
        stats.record(Some(get), true);
        stats.record(Some(get), false);
        stats.record(Some(id), true);
        stats.record(None, false);
        let counts = stats.counts();
        let of = |name: &str| counts.iter().find(|c| c.command == name).cloned();
        assert_eq!(
            of("get"),
            Some(CommandCount {
                command: "get",
                ok: 2,
                error: 1
            })
        );
        assert_eq!(of("client|id").map(|c| c.ok), Some(1));
        assert_eq!(of(OTHER).map(|c| c.error), Some(1));
        assert_eq!(of("set"), None, "commands never run are left out");
    }
}
