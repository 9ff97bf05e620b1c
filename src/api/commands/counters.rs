//! The counters family: INCR, DECR, INCRBY, DECRBY, on a per-key
//! PN-counter (concurrent increments all count; docs/redis.md).

use std::sync::Arc;

use super::args::int;
use super::spec::*;
use super::{Access, Action, Family, NodeCommand, Reply, answer};
use crate::api::resp::Frame;
use crate::api::{Api, coord_err};
use crate::write::{Done, Write};

/// The counters family.
pub const FAMILY: Family = Family {
    name: "counters",
    commands: COMMANDS,
    refused: &[],
};

/// A counter command on the first key.
const fn counter(
    name: &'static str,
    arity: i64,
    summary: &'static str,
    args: &'static [Arg],
    parse: super::Parser,
) -> Spec {
    cmd(name, arity, STRING, "1.0.0", Access::Write, parse)
        .doc(summary, "O(1)")
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, K_READ_UPDATE)
        .args(args)
}

const COMMANDS: &[Spec] = &[
    counter(
        "incr",
        2,
        "Adds one to the integer stored at a key (a missing key counts as 0).",
        ARGS_KEY,
        |c| Ok(incr(&c.args[0], 1)),
    ),
    counter(
        "decr",
        2,
        "Subtracts one from the integer stored at a key (a missing key counts as 0).",
        ARGS_KEY,
        |c| Ok(incr(&c.args[0], -1)),
    ),
    counter(
        "incrby",
        3,
        "Adds an amount to the integer stored at a key (a missing key counts as 0).",
        &[key("key"), integer("increment")],
        |c| Ok(incr(&c.args[0], int(&c.args[1])?)),
    ),
    counter(
        "decrby",
        3,
        "Subtracts an amount from the integer stored at a key (a missing key counts as 0).",
        &[key("key"), integer("decrement")],
        |c| {
            let by = int(&c.args[1])?
                .checked_neg()
                .ok_or("decrement would overflow")?;
            Ok(incr(&c.args[0], by))
        },
    ),
];

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
#[derive(Debug, PartialEq, Eq)]
pub struct Incr {
    /// Key.
    pub key: Vec<u8>,
    /// Change.
    pub by: i64,
}

fn incr(key: &[u8], by: i64) -> Action {
    Action::node(Incr {
        key: key.to_vec(),
        by,
    })
}

impl NodeCommand for Incr {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api
                .coordinator
                .write(&self.key, Write::Incr { by: self.by }, None, None)
                .await
            {
                Ok(Done {
                    number: Some(n), ..
                }) => Frame::Integer(n),
                Ok(_) => Frame::err("the counter did not answer a value"),
                Err(e) => coord_err(e),
            }
        })
    }
}
