//! The keys family: DEL, UNLINK, EXISTS, TYPE, SCAN, KEYS, DBSIZE, and the
//! key-space commands distro-db refuses (renames, copies, moves between
//! databases, flushes, object dumps).

use std::sync::Arc;

use futures::future::join_all;

use super::args::{SYNTAX, int, upper};
use super::spec::*;
use super::{Access, Action, Call, Family, NodeCommand, Refusal, Reply, answer};
use crate::api::resp::Frame;
use crate::api::{Api, coord_err};
use crate::keyspace::PARTITIONS;
use crate::text::glob_match;
use crate::token::Token;
use crate::write::Write;

/// The keys family.
pub const FAMILY: Family = Family {
    name: "keys",
    commands: COMMANDS,
    refused: &[
        Refusal {
            names: &["flushdb", "flushall"],
            reason: " is not supported: distro-db has no cluster-wide delete; delete the keys with SCAN and DEL (or UNLINK)",
        },
        Refusal {
            names: &["swapdb", "move"],
            reason: " is not supported: distro-db has one database (0), so there is no other to swap with or move to; keep data sets apart with a key prefix, or run a separate cluster (--cluster-id)",
        },
        Refusal {
            names: &["rename", "renamenx", "copy"],
            reason: " is not supported: the two keys live on different replicas, so it cannot be atomic; GET the value, SET the new key, then DEL the old one",
        },
        Refusal {
            names: &["object", "dump", "restore", "migrate"],
            reason: " is not supported: distro-db has no Redis object encoding or RDB format; copy a key with GET, PTTL and SET ... PX",
        },
        Refusal {
            names: DATA_TYPES,
            reason: " is not supported: distro-db stores strings only (no hashes, lists, sets, sorted sets, streams, HyperLogLogs or geo indexes); keep the structure in one string value (e.g. JSON), or one key per field",
        },
    ],
};

/// Redis's commands of the data types distro-db does not have: refused
/// with the reason, rather than left unknown.
const DATA_TYPES: &[&str] = &[
    // hashes
    "hset",
    "hsetnx",
    "hmset",
    "hget",
    "hmget",
    "hgetall",
    "hdel",
    "hexists",
    "hlen",
    "hkeys",
    "hvals",
    "hincrby",
    "hincrbyfloat",
    "hstrlen",
    "hscan",
    "hrandfield",
    // lists
    "lpush",
    "rpush",
    "lpushx",
    "rpushx",
    "lpop",
    "rpop",
    "lrange",
    "llen",
    "lindex",
    "lset",
    "lrem",
    "ltrim",
    "linsert",
    "lpos",
    "lmove",
    "lmpop",
    "rpoplpush",
    "blpop",
    "brpop",
    "blmove",
    "blmpop",
    "brpoplpush",
    // sets
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "smismember",
    "scard",
    "spop",
    "srandmember",
    "smove",
    "sunion",
    "sinter",
    "sdiff",
    "sunionstore",
    "sinterstore",
    "sdiffstore",
    "sintercard",
    "sscan",
    // sorted sets
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zrevrange",
    "zrevrangebyscore",
    "zscore",
    "zmscore",
    "zincrby",
    "zcard",
    "zcount",
    "zrank",
    "zrevrank",
    "zpopmin",
    "zpopmax",
    "bzpopmin",
    "bzpopmax",
    "zrangestore",
    "zunionstore",
    "zinterstore",
    "zscan",
    "zremrangebyscore",
    "zremrangebyrank",
    // streams
    "xadd",
    "xread",
    "xreadgroup",
    "xrange",
    "xrevrange",
    "xlen",
    "xdel",
    "xtrim",
    "xgroup",
    "xack",
    "xpending",
    "xclaim",
    "xautoclaim",
    "xinfo",
    // HyperLogLog, geo
    "pfadd",
    "pfcount",
    "pfmerge",
    "geoadd",
    "geodist",
    "geopos",
    "geohash",
    "georadius",
    "georadiusbymember",
    "geosearch",
    "geosearchstore",
];

const COMMANDS: &[Spec] = &[
    cmd("del", -2, GENERIC, "1.0.0", Access::Write, del)
        .doc(
            "Removes keys; replies how many of them existed.",
            "O(N) where N is the number of keys (plus the size of each value that is not a string)",
        )
        .flags(&["write"])
        .acl(A_KEYS_WRITE_SLOW)
        .tips(T_SUM_OVER_SHARDS)
        .keys(1, -1, 1, K_DELETE_ALL)
        .args(&[key("key").multi()]),
    cmd("unlink", -2, GENERIC, "4.0.0", Access::Write, del)
        .doc(
            "Removes keys, freeing their memory in the background; replies how many existed.",
            "O(1) per key; the memory is then freed in the background",
        )
        .flags(F_WRITE_FAST)
        .acl(A_KEYS_WRITE_FAST)
        .tips(T_SUM_OVER_SHARDS)
        .keys(1, -1, 1, K_DELETE_ALL)
        .args(&[key("key").multi()]),
    cmd("exists", -2, GENERIC, "1.0.0", Access::Read, |c| {
        Ok(Action::node(Exists(c.args.to_vec())))
    })
    .doc(
        "Counts how many of the given keys exist (a key given twice counts twice).",
        "O(N) where N is the number of keys",
    )
    .flags(F_READ_FAST)
    .acl(A_KEYS_READ_FAST)
    .tips(T_SUM_OVER_SHARDS)
    .keys(1, -1, 1, K_META_ALL)
    .args(&[key("key").multi()]),
    cmd("type", 2, GENERIC, "1.0.0", Access::Read, |c| {
        Ok(Action::node(Type(c.args[0].clone())))
    })
    .doc(
        "Returns the type of the value stored at a key (none when missing).",
        "O(1)",
    )
    .flags(F_READ_FAST)
    .acl(A_KEYS_READ_FAST)
    .keys(1, 1, 1, K_READ_META)
    .args(ARGS_KEY),
    cmd("scan", -2, GENERIC, "2.8.0", Access::Read, parse_scan)
        .doc(
            "Walks through the key names a page at a time, from a cursor.",
            "O(1) per call; O(N) for a whole walk, where N is the number of keys",
        )
        .flags(&["readonly"])
        .acl(A_KEYS_READ_SLOW)
        .tips(&[
            "nondeterministic_output",
            "request_policy:special",
            "response_policy:special",
        ])
        .args(&[
            integer("cursor"),
            pattern("pattern").tok("MATCH").opt(),
            integer("count").tok("COUNT").opt(),
            string("type").tok("TYPE").opt().since("6.0.0"),
        ])
        .free(),
    cmd("keys", 2, GENERIC, "1.0.0", Access::Read, |c| {
        Ok(Action::node(Keys(c.args[0].clone())))
    })
    .doc(
        "Returns every key name that matches a glob-style pattern.",
        "O(N) where N is the number of keys in the database",
    )
    .flags(&["readonly"])
    .acl(&["@keyspace", "@read", "@slow", "@dangerous"])
    .tips(&["request_policy:all_shards", "nondeterministic_output"])
    .args(&[pattern("pattern")])
    .free(),
    cmd("dbsize", 1, SERVER, "1.0.0", Access::Read, |_| {
        Ok(Action::report("dbsize", |api| {
            Frame::Integer(i64::try_from(api.coordinator.dbsize_estimate()).unwrap_or(i64::MAX))
        }))
    })
    .doc("Returns the number of keys in the database.", "O(1)")
    .flags(F_READ_FAST)
    .acl(A_KEYS_READ_FAST)
    .tips(&["request_policy:all_shards", "response_policy:agg_sum"])
    .free(),
];

/// `DEL key...`, `UNLINK key...`, `VDEL key [W=n] [CTX=token]`
#[derive(Debug, PartialEq)]
pub struct Del {
    /// Keys.
    pub keys: Vec<Vec<u8>>,
    /// Write quorum override (VDEL).
    pub w: Option<usize>,
    /// Causal context (VDEL), checked when the command runs.
    pub ctx: Option<Token>,
}

fn del(c: &Call) -> Result<Action, String> {
    Ok(Action::node(Del {
        keys: c.args.to_vec(),
        w: None,
        ctx: None,
    }))
}

impl NodeCommand for Del {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let Del { keys, w, ctx } = *self;
            let mut contexts = Vec::with_capacity(keys.len());
            for k in &keys {
                match api.context(k, ctx.as_ref()) {
                    Ok(c) => contexts.push(c),
                    Err(refused) => return refused,
                }
            }
            let api = &api;
            let deletes = keys.iter().zip(contexts).map(|(k, ctx)| async move {
                api.coordinator.write(k, Write::Delete, ctx, w).await
            });
            let mut n = 0;
            for r in join_all(deletes).await {
                match r {
                    Ok(done) => n += i64::from(done.existed),
                    Err(e) => return coord_err(e),
                }
            }
            Frame::Integer(n)
        })
    }
}

/// `EXISTS key...`
#[derive(Debug, PartialEq, Eq)]
pub struct Exists(pub Vec<Vec<u8>>);

impl NodeCommand for Exists {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let reads = self.0.iter().map(|k| api.read(k, None));
            let mut n = 0;
            for r in join_all(reads).await {
                match r {
                    Ok(v) => n += i64::from(v.is_some()),
                    Err(e) => return e,
                }
            }
            Frame::Integer(n)
        })
    }
}

/// `TYPE key`
#[derive(Debug, PartialEq, Eq)]
pub struct Type(pub Vec<u8>);

impl NodeCommand for Type {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api.read_value(&self.0).await {
                Ok(Some(_)) => Frame::Simple("string".into()),
                Ok(None) => Frame::Simple("none".into()),
                Err(e) => e,
            }
        })
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// Where to go on (0 starts).
    pub cursor: u64,
    /// A glob the keys must match.
    pub pattern: Option<Vec<u8>>,
    /// About how many keys to return.
    pub count: usize,
    /// A type the keys must have.
    pub kind: Option<String>,
}

fn parse_scan(c: &Call) -> Result<Action, String> {
    let rest = c.args;
    let cursor: u64 = std::str::from_utf8(&rest[0])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("invalid cursor")?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut kind = None;
    let mut opts = &rest[1..];
    while let Some((word, more)) = opts.split_first() {
        let Some((value, after)) = more.split_first() else {
            return Err(SYNTAX.into());
        };
        match upper(word).as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                let n = int(value)?;
                if n < 1 {
                    return Err(SYNTAX.into());
                }
                count = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "TYPE" => kind = Some(String::from_utf8_lossy(value).to_ascii_lowercase()),
            _ => return Err(SYNTAX.into()),
        }
        opts = after;
    }
    Ok(Action::node(Scan {
        cursor,
        pattern,
        count,
        kind,
    }))
}

impl NodeCommand for Scan {
    /// The cursor is the next partition to visit; each call visits
    /// partitions until it has about `count` keys, so every key that holds
    /// a value from the first call to the last is returned exactly once
    /// (keys come from the union of live owners: a node failure between
    /// calls changes nothing).
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let Scan {
                cursor,
                pattern,
                count,
                kind,
            } = *self;
            let mut p = usize::try_from(cursor).unwrap_or(usize::MAX);
            let mut keys = Vec::new();
            // Every key holds a string: any other TYPE finds nothing.
            if kind.as_deref().is_some_and(|k| k != "string") {
                p = PARTITIONS;
            }
            while p < PARTITIONS && keys.len() < count {
                match api.coordinator.scan_partition(p).await {
                    Ok(found) => keys.extend(
                        found
                            .into_iter()
                            .filter(|k| pattern.as_ref().is_none_or(|pat| glob_match(pat, k))),
                    ),
                    Err(e) => return coord_err(e),
                }
                p += 1;
            }
            let next = if p >= PARTITIONS { 0 } else { p };
            Frame::Array(vec![
                Frame::bulk(next.to_string()),
                Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
            ])
        })
    }
}

/// `KEYS pattern`
#[derive(Debug, PartialEq, Eq)]
pub struct Keys(pub Vec<u8>);

impl NodeCommand for Keys {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let mut all = Vec::new();
            for p in 0..PARTITIONS {
                match api.coordinator.scan_partition(p).await {
                    Ok(keys) => all.extend(
                        keys.into_iter()
                            .filter(|k| glob_match(&self.0, k))
                            .map(Frame::Bulk),
                    ),
                    Err(e) => return coord_err(e),
                }
            }
            Frame::Array(all)
        })
    }
}
