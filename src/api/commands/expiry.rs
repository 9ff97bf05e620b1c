//! The expiry family: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT and PERSIST
//! (writes of a key's deadline), TTL, PTTL, EXPIRETIME and PEXPIRETIME
//! (reads of it).

use std::sync::Arc;

use super::args::{When, int, upper};
use super::spec::*;
use super::{Access, Action, Call, Family, NodeCommand, Reply, answer};
use crate::api::resp::Frame;
use crate::api::{Api, coord_err};
use crate::write::{ExpireIf, Write};

/// The expiry family.
pub const FAMILY: Family = Family {
    name: "expiry",
    commands: COMMANDS,
    refused: &[],
};

const EXPIRE_CONDITION: Arg = oneof(
    "condition",
    &[
        token("nx", "NX"),
        token("xx", "XX"),
        token("gt", "GT"),
        token("lt", "LT"),
    ],
)
.opt()
.since("7.0.0");

/// `EXPIRE`-like commands: `NAME key <amount> [NX | XX | GT | LT]`.
const fn expire(
    name: &'static str,
    since: &'static str,
    summary: &'static str,
    args: &'static [Arg],
    parse: super::Parser,
) -> Spec {
    cmd(name, -3, GENERIC, since, Access::Write, parse)
        .doc(summary, "O(1)")
        .flags(F_WRITE_FAST)
        .acl(A_KEYS_WRITE_FAST)
        .keys(1, 1, 1, K_UPDATE)
        .args(args)
}

/// Commands that read one key's deadline: `NAME key`.
const fn ttl(
    name: &'static str,
    since: &'static str,
    summary: &'static str,
    parse: super::Parser,
) -> Spec {
    cmd(name, 2, GENERIC, since, Access::Read, parse)
        .doc(summary, "O(1)")
        .flags(F_READ_FAST)
        .acl(A_KEYS_READ_FAST)
        .keys(1, 1, 1, K_READ)
        .args(ARGS_KEY)
}

const COMMANDS: &[Spec] = &[
    expire(
        "expire",
        "1.0.0",
        "Gives a key a time to live, in seconds.",
        &[key("key"), integer("seconds"), EXPIRE_CONDITION],
        |c| parse_expire(c, |t| When::In(t.saturating_mul(1000))),
    ),
    expire(
        "pexpire",
        "2.6.0",
        "Gives a key a time to live, in milliseconds.",
        &[key("key"), integer("milliseconds"), EXPIRE_CONDITION],
        |c| parse_expire(c, When::In),
    ),
    expire(
        "expireat",
        "1.2.0",
        "Makes a key expire at a Unix time, in seconds.",
        &[key("key"), unix_time("unix-time-seconds"), EXPIRE_CONDITION],
        |c| parse_expire(c, |t| When::At(t.saturating_mul(1000))),
    ),
    expire(
        "pexpireat",
        "2.6.0",
        "Makes a key expire at a Unix time, in milliseconds.",
        &[
            key("key"),
            unix_time("unix-time-milliseconds"),
            EXPIRE_CONDITION,
        ],
        |c| parse_expire(c, When::At),
    ),
    ttl(
        "ttl",
        "1.0.0",
        "Returns the seconds a key has left to live (-1: no expiry, -2: no key).",
        |c| read_ttl(c, false, false),
    )
    .tips(T_NONDETERMINISTIC),
    ttl(
        "pttl",
        "2.6.0",
        "Returns the milliseconds a key has left to live (-1: no expiry, -2: no key).",
        |c| read_ttl(c, true, false),
    )
    .tips(T_NONDETERMINISTIC),
    ttl(
        "expiretime",
        "7.0.0",
        "Returns the Unix time in seconds at which a key expires (-1: no expiry, -2: no key).",
        |c| read_ttl(c, false, true),
    ),
    ttl(
        "pexpiretime",
        "7.0.0",
        "Returns the Unix time in milliseconds at which a key expires (-1: no expiry, -2: no key).",
        |c| read_ttl(c, true, true),
    ),
    cmd("persist", 2, GENERIC, "2.2.0", Access::Write, |c| {
        Ok(Action::node(Expire {
            key: c.args[0].clone(),
            when: None,
            cond: ExpireIf::Always,
        }))
    })
    .doc(
        "Removes the expiry of a key, which then lives until deleted.",
        "O(1)",
    )
    .flags(F_WRITE_FAST)
    .acl(A_KEYS_WRITE_FAST)
    .keys(1, 1, 1, K_UPDATE)
    .args(ARGS_KEY),
];

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `PERSIST` (`when: None`).
#[derive(Debug, PartialEq, Eq)]
pub struct Expire {
    /// Key.
    pub key: Vec<u8>,
    /// The deadline (`None` removes it).
    pub when: Option<When>,
    /// `NX`, `XX`, `GT`, `LT`.
    pub cond: ExpireIf,
}

/// `NAME key amount [condition]`; `when` reads the amount.
fn parse_expire(c: &Call, when: fn(i64) -> When) -> Result<Action, String> {
    let rest = c.args;
    let when = when(int(&rest[1])?);
    let cond = match &rest[2..] {
        [] => ExpireIf::Always,
        [c] => match upper(c).as_str() {
            "NX" => ExpireIf::NoTtl,
            "XX" => ExpireIf::HasTtl,
            "GT" => ExpireIf::Later,
            "LT" => ExpireIf::Earlier,
            other => return Err(format!("Unsupported option {other}")),
        },
        _ => {
            return Err("NX and XX, GT or LT options at the same time are not compatible".into());
        }
    };
    Ok(Action::node(Expire {
        key: rest[0].clone(),
        when: Some(when),
        cond,
    }))
}

impl NodeCommand for Expire {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let write = Write::Expire {
                deadline: self.when.map(|w| w.deadline(api.replica.now_ms())),
                cond: self.cond,
            };
            match api.coordinator.write(&self.key, write, None, None).await {
                Ok(done) => Frame::Integer(i64::from(done.applied)),
                Err(e) => coord_err(e),
            }
        })
    }
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`.
#[derive(Debug, PartialEq, Eq)]
pub struct Ttl {
    /// Key.
    pub key: Vec<u8>,
    /// Milliseconds rather than seconds.
    pub millis: bool,
    /// The deadline itself rather than the time left.
    pub absolute: bool,
}

fn read_ttl(c: &Call, millis: bool, absolute: bool) -> Result<Action, String> {
    Ok(Action::node(Ttl {
        key: c.args[0].clone(),
        millis,
        absolute,
    }))
}

impl NodeCommand for Ttl {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let Ttl {
                key,
                millis,
                absolute,
            } = *self;
            match api.coordinator.get(&key, None).await {
                Ok(obj) => {
                    let now = api.replica.now_ms();
                    let resolved = obj.map(|o| o.resolve(now));
                    match resolved.filter(|r| r.pick.is_some()) {
                        None => Frame::Integer(-2),
                        Some(r) => match r.expires_ms {
                            None => Frame::Integer(-1),
                            Some(at) => {
                                let ms = if absolute { at } else { at.saturating_sub(now) };
                                let v = if millis {
                                    ms
                                } else if absolute {
                                    ms / 1000
                                } else {
                                    (ms + 500) / 1000
                                };
                                Frame::Integer(i64::try_from(v).unwrap_or(i64::MAX))
                            }
                        },
                    }
                }
                Err(e) => coord_err(e),
            }
        })
    }
}
