//! The transactions family: MULTI, EXEC, DISCARD, WATCH, UNWATCH. The
//! session queues commands between MULTI and EXEC; EXEC hands the queue
//! back to it to run in order (not atomically: docs/redis.md).

use super::spec::*;
use super::{Access, Action, ConnReply, ConnectionCommand, Family};
use crate::api::resp::Frame;
use crate::api::session::Conn;

/// The transactions family.
pub const FAMILY: Family = Family {
    name: "transactions",
    commands: COMMANDS,
    refused: &[],
};

const COMMANDS: &[Spec] = &[
    cmd(
        "multi",
        1,
        TRANSACTIONS,
        "1.2.0",
        Access::Connection,
        |_| Ok(Action::connection(Tx::Multi)),
    )
    .doc(
        "Starts a transaction: the next commands are queued until EXEC.",
        "O(1)",
    )
    .flags(F_TRANSACTION)
    .acl(A_TRANSACTION_FAST)
    .not_queued(),
    cmd("exec", 1, TRANSACTIONS, "1.2.0", Access::Connection, |_| {
        Ok(Action::connection(Tx::Exec))
    })
    .doc(
        "Runs the commands queued since MULTI.",
        "Depends on the commands queued",
    )
    .flags(&["noscript", "loading", "stale", "skip_slowlog"])
    .acl(&["@slow", "@transaction"])
    .not_queued(),
    cmd(
        "discard",
        1,
        TRANSACTIONS,
        "2.0.0",
        Access::Connection,
        |_| Ok(Action::connection(Tx::Discard)),
    )
    .doc(
        "Drops the commands queued since MULTI.",
        "O(N) where N is the number of queued commands",
    )
    .flags(F_TRANSACTION)
    .acl(A_TRANSACTION_FAST)
    .not_queued(),
    cmd(
        "watch",
        -2,
        TRANSACTIONS,
        "2.2.0",
        Access::Connection,
        |_| Ok(Action::connection(Tx::Watch)),
    )
    .doc(
        "Makes the next EXEC fail if any of these keys changes before it.",
        "O(1) per key",
    )
    .flags(F_TRANSACTION)
    .acl(A_TRANSACTION_FAST)
    .keys(1, -1, 1, K_META_ALL)
    .args(&[key("key").multi()])
    .not_queued(),
    cmd(
        "unwatch",
        1,
        TRANSACTIONS,
        "2.2.0",
        Access::Connection,
        |_| Ok(Action::connection(Tx::Unwatch)),
    )
    .doc("Forgets every key watched by this connection.", "O(1)")
    .flags(F_TRANSACTION)
    .acl(A_TRANSACTION_FAST),
];

/// A transaction command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// `MULTI`
    Multi,
    /// `EXEC`
    Exec,
    /// `DISCARD`
    Discard,
    /// `WATCH key...` (refused: no optimistic locking across replicas)
    Watch,
    /// `UNWATCH`
    Unwatch,
}

impl ConnectionCommand for Tx {
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply {
        match *self {
            Tx::Multi if conn.multi.is_some() => Frame::err("MULTI calls can not be nested"),
            Tx::Multi => {
                conn.multi = Some(Vec::new());
                conn.multi_failed = false;
                Frame::ok()
            }
            Tx::Discard => match conn.multi.take() {
                Some(_) => Frame::ok(),
                None => Frame::err("DISCARD without MULTI"),
            },
            Tx::Exec => match conn.multi.take() {
                None => Frame::err("EXEC without MULTI"),
                Some(_) if conn.multi_failed => Frame::Error(
                    "EXECABORT Transaction discarded because of previous errors.".into(),
                ),
                Some(queue) => return ConnReply::Exec(queue),
            },
            Tx::Watch if conn.multi.is_some() => Frame::err("WATCH inside MULTI is not allowed"),
            Tx::Watch => Frame::err(
                "WATCH is not supported: distro-db has no single copy of a key to watch; write with VGET's CTX to detect concurrent changes (see docs/redis.md)",
            ),
            Tx::Unwatch => Frame::ok(),
        }
        .into()
    }
}
