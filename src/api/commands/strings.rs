//! The strings family: GET, SET and its older forms (SETNX, SETEX, PSETEX,
//! GETSET), GETDEL, GETEX, MGET, MSET, STRLEN, and the string commands
//! distro-db refuses (partial edits, MSETNX). Every write replaces a whole
//! value through a quorum write.

use std::sync::Arc;

use futures::future::join_all;

use super::args::{Options, SYNTAX, When, int, is_option, parse_options, parse_when, upper};
use super::spec::*;
use super::{Access, Action, Call, Family, NodeCommand, Refusal, Reply, answer};
use crate::api::resp::Frame;
use crate::api::{Api, bulk_or_nil, coord_err};
use crate::token::Token;
use crate::write::{Condition, ExpireIf, Ttl, Write};

/// The strings family.
pub const FAMILY: Family = Family {
    name: "strings",
    commands: COMMANDS,
    refused: &[
        Refusal {
            names: &["msetnx"],
            reason: " is not supported: setting several keys only if none exists needs them all on one node at once; use SET key value NX per key",
        },
        Refusal {
            names: &[
                "append", "setrange", "getrange", "substr", "getbit", "setbit",
            ],
            reason: " is not supported: values are read and replaced whole (concurrent partial edits have no merge rule); GET the value, change it in the client and SET it back (VGET and SET ... CTX= detect a concurrent write)",
        },
        Refusal {
            names: &["incrbyfloat"],
            reason: " is not supported: the counter is an integer CRDT; count in integer units with INCRBY, or keep the float in a string value and SET it",
        },
    ],
};

const COMMANDS: &[Spec] = &[
    cmd("get", 2, STRING, "1.0.0", Access::Read, parse_get)
        .doc(
            "Returns the string stored at a key, or nil when the key does not exist.",
            "O(1)",
        )
        .flags(F_READ_FAST)
        .acl(A_READ_STRING_FAST)
        .keys(1, 1, 1, K_READ)
        .args(ARGS_KEY)
        // `R=n` may follow the key.
        .parser_checks_arity(),
    cmd("set", -3, STRING, "1.0.0", Access::Write, parse_set)
        .doc(
            "Stores a string at a key, with an optional condition and expiry; can return the previous value.",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .keys(
            1,
            1,
            1,
            &[range(&["RW", "access", "update", "variable_flags"], 1, 0, 1)
                .notes("RW and ACCESS because of the optional GET argument")],
        )
        .args(&[
            key("key"),
            string("value"),
            oneof("condition", &[token("nx", "NX"), token("xx", "XX")])
                .opt()
                .since("2.6.12"),
            token("get", "GET").opt().since("6.2.0"),
            oneof(
                "expiration",
                &[
                    integer("seconds").tok("EX").since("2.6.12"),
                    integer("milliseconds").tok("PX").since("2.6.12"),
                    unix_time("unix-time-seconds").tok("EXAT").since("6.2.0"),
                    unix_time("unix-time-milliseconds")
                        .tok("PXAT")
                        .since("6.2.0"),
                    token("keepttl", "KEEPTTL").since("6.0.0"),
                ],
            )
            .opt(),
        ]),
    cmd("setnx", 3, STRING, "1.0.0", Access::Write, |c| {
        Ok(set(c, &c.args[1], SetTtl::None, Condition::Absent, SetReply::Flag))
    })
    .doc(
        "Stores a string at a key only if the key does not exist yet.",
        "O(1)",
    )
    .flags(F_WRITE_DENYOOM_FAST)
    .acl(A_WRITE_STRING_FAST)
    .keys(1, 1, 1, &[range(&["OW", "insert"], 1, 0, 1)])
    .args(&[key("key"), string("value")])
    .deprecated("2.6.12", "`SET` with the `NX` argument"),
    cmd("setex", 4, STRING, "2.0.0", Access::Write, |c| setex(c, 1000))
        .doc("Stores a string at a key with an expiry in seconds.", "O(1)")
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .keys(1, 1, 1, K_OVERWRITE)
        .args(&[key("key"), integer("seconds"), string("value")])
        .deprecated("2.6.12", "`SET` with the `EX` argument"),
    cmd("psetex", 4, STRING, "2.6.0", Access::Write, |c| setex(c, 1))
        .doc(
            "Stores a string at a key with an expiry in milliseconds.",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .keys(1, 1, 1, K_OVERWRITE)
        .args(&[key("key"), integer("milliseconds"), string("value")])
        .deprecated("2.6.12", "`SET` with the `PX` argument"),
    cmd("getset", 3, STRING, "1.0.0", Access::Write, |c| {
        Ok(set(c, &c.args[1], SetTtl::None, Condition::Always, SetReply::Old))
    })
    .doc(
        "Stores a string at a key and returns the value it replaced.",
        "O(1)",
    )
    .flags(F_WRITE_DENYOOM_FAST)
    .acl(A_WRITE_STRING_FAST)
    .keys(1, 1, 1, K_READ_UPDATE)
    .args(&[key("key"), string("value")])
    .deprecated("6.2.0", "`SET` with the `!GET` argument"),
    cmd("getdel", 2, STRING, "6.2.0", Access::Write, |c| {
        Ok(Action::node(GetDel(c.args[0].clone())))
    })
    .doc("Returns the string stored at a key and deletes the key.", "O(1)")
    .flags(F_WRITE_FAST)
    .acl(A_WRITE_STRING_FAST)
    .keys(1, 1, 1, &[range(&["RW", "access", "delete"], 1, 0, 1)])
    .args(ARGS_KEY),
    cmd("getex", -2, STRING, "6.2.0", Access::Write, parse_getex)
        .doc(
            "Returns the string stored at a key, optionally changing or removing its expiry.",
            "O(1)",
        )
        .flags(F_WRITE_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(
            1,
            1,
            1,
            &[range(&["RW", "access", "update"], 1, 0, 1)
                .notes("RW and UPDATE because it may change the expiry")],
        )
        .args(&[
            key("key"),
            oneof(
                "expiration",
                &[
                    integer("seconds").tok("EX"),
                    integer("milliseconds").tok("PX"),
                    unix_time("unix-time-seconds").tok("EXAT"),
                    unix_time("unix-time-milliseconds").tok("PXAT"),
                    token("persist", "PERSIST"),
                ],
            )
            .opt(),
        ]),
    cmd("mget", -2, STRING, "1.0.0", Access::Read, |c| {
        Ok(Action::node(MGet(c.args.to_vec())))
    })
    .doc(
        "Returns the strings stored at several keys, nil for each missing one.",
        "O(N) where N is the number of keys",
    )
    .flags(F_READ_FAST)
    .acl(A_READ_STRING_FAST)
    .tips(&["request_policy:multi_shard"])
    .keys(1, -1, 1, K_READ_ALL)
    .args(&[key("key").multi()]),
    cmd("mset", -3, STRING, "1.0.1", Access::Write, |c| {
        if c.args.len() % 2 != 0 {
            return Err(c.arity_error());
        }
        Ok(Action::node(MSet(
            c.args
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
        )))
    })
    .doc(
        "Stores strings at several keys at once.",
        "O(N) where N is the number of keys",
    )
    .flags(F_WRITE_DENYOOM)
    .acl(A_WRITE_STRING_SLOW)
    .tips(&["request_policy:multi_shard", "response_policy:all_succeeded"])
    .keys(1, -1, 2, &[range(&["OW", "update"], 1, -1, 2)])
    .args(&[block("data", &[key("key"), string("value")]).multi()]),
    cmd("strlen", 2, STRING, "2.2.0", Access::Read, |c| {
        Ok(Action::node(StrLen(c.args[0].clone())))
    })
    .doc(
        "Returns the length in bytes of the string stored at a key (0 when missing).",
        "O(1)",
    )
    .flags(F_READ_FAST)
    .acl(A_READ_STRING_FAST)
    .keys(1, 1, 1, K_READ_META)
    .args(ARGS_KEY),
];

/// `GET key [R=n]`: one value or nil.
#[derive(Debug, PartialEq, Eq)]
pub struct Get {
    /// Key.
    pub key: Vec<u8>,
    /// Read quorum override.
    pub r: Option<usize>,
}

fn parse_get(c: &Call) -> Result<Action, String> {
    let Some((key, opts)) = c.args.split_first() else {
        return Err(c.arity_error());
    };
    let r = if opts.is_empty() {
        None
    } else if opts.iter().all(|a| is_option(a, &["R"])) {
        parse_options(c.spec.name, opts, &["R"])?.r
    } else {
        return Err(c.arity_error());
    };
    Ok(Action::node(Get {
        key: key.clone(),
        r,
    }))
}

impl NodeCommand for Get {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api.read(&self.key, self.r).await {
                Ok(Some(values)) => values,
                Ok(None) => Frame::Null,
                Err(e) => e,
            }
        })
    }
}

/// What a `SET`-like command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `+OK`, or nil when a condition kept it from writing (`SET`).
    Ok,
    /// `:1` when written, `:0` when not (`SETNX`).
    Flag,
    /// The value before (`GETSET`, `SET ... GET`).
    Old,
}

/// The deadline a `SET` gives its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTtl {
    /// No deadline.
    None,
    /// A deadline.
    When(When),
    /// Keep the current one (`KEEPTTL`).
    Keep,
}

/// `SET`, `SETNX`, `SETEX`, `PSETEX`, `GETSET`.
#[derive(Debug, PartialEq)]
pub struct Set {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Deadline.
    pub ttl: SetTtl,
    /// `NX`, `XX`.
    pub cond: Condition,
    /// What to answer.
    pub reply: SetReply,
    /// Write quorum override.
    pub w: Option<usize>,
    /// Causal context from a read, checked when the command runs.
    pub ctx: Option<Token>,
}

/// The `Set` of an older form: the key is the first word.
fn set(c: &Call, value: &[u8], ttl: SetTtl, cond: Condition, reply: SetReply) -> Action {
    Action::node(Set {
        key: c.args[0].clone(),
        value: value.to_vec(),
        ttl,
        cond,
        reply,
        w: None,
        ctx: None,
    })
}

/// `SETEX` (`unit_ms` 1000) and `PSETEX` (1).
fn setex(c: &Call, unit_ms: i64) -> Result<Action, String> {
    let t = int(&c.args[1])?;
    if t <= 0 {
        return Err(format!("invalid expire time in '{}' command", c.spec.name));
    }
    let ttl = SetTtl::When(When::In(t.saturating_mul(unit_ms)));
    Ok(set(c, &c.args[2], ttl, Condition::Always, SetReply::Ok))
}

fn parse_set(c: &Call) -> Result<Action, String> {
    let name = c.spec.name;
    let rest = c.args;
    let (key, value) = (&rest[0], &rest[1]);
    // distro-db's own options come last.
    let redis_end = rest
        .iter()
        .enumerate()
        .skip(2)
        .find(|(_, a)| is_option(a, &["W", "CTX"]))
        .map_or(rest.len(), |(i, _)| i);
    let o = match &rest[redis_end..] {
        [] => Options::default(),
        opts => parse_options(name, opts, &["W", "CTX"])?,
    };
    let mut ttl = SetTtl::None;
    let mut cond = Condition::Always;
    let mut reply = SetReply::Ok;
    let mut i = 2;
    while i < redis_end {
        let word = upper(&rest[i]);
        match word.as_str() {
            "NX" | "XX" => {
                if cond != Condition::Always {
                    return Err(SYNTAX.into());
                }
                cond = if word == "NX" {
                    Condition::Absent
                } else {
                    Condition::Present
                };
            }
            "GET" => reply = SetReply::Old,
            "KEEPTTL" => {
                if ttl != SetTtl::None {
                    return Err(SYNTAX.into());
                }
                ttl = SetTtl::Keep;
            }
            "EX" | "PX" | "EXAT" | "PXAT" => {
                if ttl != SetTtl::None || i + 1 >= redis_end {
                    return Err(SYNTAX.into());
                }
                let when = parse_when(name, &rest[i], &rest[i + 1])?.ok_or(SYNTAX)?;
                ttl = SetTtl::When(when);
                i += 1;
            }
            _ => return Err(SYNTAX.into()),
        }
        i += 1;
    }
    Ok(Action::node(Set {
        key: key.clone(),
        value: value.clone(),
        ttl,
        cond,
        reply,
        w: o.w,
        ctx: o.ctx,
    }))
}

impl NodeCommand for Set {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let Set {
                key,
                value,
                ttl,
                cond,
                reply,
                w,
                ctx,
            } = *self;
            let ttl = match ttl {
                SetTtl::None => Ttl::None,
                SetTtl::Keep => Ttl::Keep,
                SetTtl::When(when) => Ttl::At(when.deadline(api.replica.now_ms())),
            };
            let ctx = match api.context(&key, ctx.as_ref()) {
                Ok(ctx) => ctx,
                Err(refused) => return refused,
            };
            match api
                .coordinator
                .write(&key, Write::Set { value, ttl, cond }, ctx, w)
                .await
            {
                Ok(done) => match reply {
                    SetReply::Ok if done.applied => Frame::ok(),
                    SetReply::Ok => Frame::Null,
                    SetReply::Flag => Frame::Integer(i64::from(done.applied)),
                    SetReply::Old => bulk_or_nil(done.before),
                },
                Err(e) => coord_err(e),
            }
        })
    }
}

/// `GETDEL key`
#[derive(Debug, PartialEq, Eq)]
pub struct GetDel(pub Vec<u8>);

impl NodeCommand for GetDel {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api
                .coordinator
                .write(&self.0, Write::Delete, None, None)
                .await
            {
                Ok(done) => bulk_or_nil(done.before),
                Err(e) => coord_err(e),
            }
        })
    }
}

/// `GETEX key [EX|PX|EXAT|PXAT t | PERSIST]`
#[derive(Debug, PartialEq, Eq)]
pub struct GetEx {
    /// Key.
    pub key: Vec<u8>,
    /// `None`: no change; `Some(None)`: PERSIST; `Some(Some(when))`.
    pub change: Option<Option<When>>,
}

fn parse_getex(c: &Call) -> Result<Action, String> {
    let change = match &c.args[1..] {
        [] => None,
        [p] if upper(p) == "PERSIST" => Some(None),
        [unit, t] => Some(Some(parse_when(c.spec.name, unit, t)?.ok_or(SYNTAX)?)),
        _ => return Err(SYNTAX.into()),
    };
    Ok(Action::node(GetEx {
        key: c.args[0].clone(),
        change,
    }))
}

impl NodeCommand for GetEx {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match self.change {
                None => match api.read(&self.key, None).await {
                    Ok(v) => v.unwrap_or(Frame::Null),
                    Err(e) => e,
                },
                Some(when) => {
                    let write = Write::Expire {
                        deadline: when.map(|w| w.deadline(api.replica.now_ms())),
                        cond: ExpireIf::Always,
                    };
                    match api.coordinator.write(&self.key, write, None, None).await {
                        Ok(done) => bulk_or_nil(done.before),
                        Err(e) => coord_err(e),
                    }
                }
            }
        })
    }
}

/// `MGET key...`
#[derive(Debug, PartialEq, Eq)]
pub struct MGet(pub Vec<Vec<u8>>);

impl NodeCommand for MGet {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let reads = self.0.iter().map(|k| api.read(k, None));
            let mut out = Vec::with_capacity(self.0.len());
            for r in join_all(reads).await {
                match r {
                    Ok(v) => out.push(v.unwrap_or(Frame::Null)),
                    Err(e) => return e,
                }
            }
            Frame::Array(out)
        })
    }
}

/// `MSET key value...`
#[derive(Debug, PartialEq, Eq)]
pub struct MSet(pub Vec<(Vec<u8>, Vec<u8>)>);

impl NodeCommand for MSet {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let api = &api;
            let writes = self.0.into_iter().map(|(k, v)| async move {
                api.coordinator
                    .write(&k, Write::value(Some(v)), None, None)
                    .await
            });
            match join_all(writes).await.into_iter().find_map(Result::err) {
                None => Frame::ok(),
                Some(e) => coord_err(e),
            }
        })
    }
}

/// `STRLEN key`
#[derive(Debug, PartialEq, Eq)]
pub struct StrLen(pub Vec<u8>);

impl NodeCommand for StrLen {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api.read_value(&self.0).await {
                Ok(v) => Frame::Integer(v.map_or(0, |v| v.len() as i64)),
                Err(e) => e,
            }
        })
    }
}
