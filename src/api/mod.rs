//! The client API: what a RESP client (a Redis library, `redis-cli`, the
//! REPL) can ask a node, over narrow handles.
//!
//! - [`resp`]: the RESP2/RESP3 codec (pure).
//! - [`command`]: parsing a command's arguments (pure).
//! - [`session`]: one pipelined connection and its state (protocol version,
//!   authentication, name, `MULTI`).
//! - [`clients`]: the registry behind `CLIENT LIST/KILL` and `INFO`.
//! - [`admin`]: cluster and node reports (NODES, STATUS, OWNERS,
//!   REPLICAS), KILL, cluster stop and FAULT.
//! - [`cluster`]: Redis Cluster's view (`CLUSTER SLOTS` and friends).
//! - [`info`]: `INFO` and `CONFIG GET`.
//! - [`catalog`]: the command table behind `COMMAND`.
//!
//! [`Api::execute`] runs one data or administration command (commands about
//! the connection itself are the session's) and says what the session does
//! next ([`After`]). What each command does, and how it differs from Redis,
//! is in docs/redis.md.

pub mod admin;
pub mod catalog;
pub mod clients;
pub mod cluster;
pub mod command;
pub mod info;
pub mod resp;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::future::join_all;
use tracing::info;

use crate::cluster::layout::Change;
use crate::config::SiblingReads;
use crate::coordinator::service::StopFn;
use crate::coordinator::{CoordError, Coordinator};
use crate::fault::Faults;
use crate::hints::Hints;
use crate::keyspace::PARTITIONS;
use crate::object::encode_context;
use crate::replica::Replica;
use crate::text::glob_match;
use crate::workers::Workers;
use crate::workers::anti_entropy::AaeStats;
use crate::write::{Condition, Done, Ttl, Write};
use command::{ClusterCmd, Command, SetReply, SetTtl};
use resp::Frame;

/// What a session does after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving the connection.
    Continue,
    /// Close the connection (RESP `QUIT`).
    Close,
    /// Stop this node (after the answer went out).
    StopNode,
}

/// Facts about this node that reports show.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The configuration the node runs with.
    pub config: crate::config::Config,
}

/// Counters of the client API.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Commands run.
    pub commands: AtomicU64,
    /// Plain reads of a key holding more than one value.
    pub conflicted_reads: AtomicU64,
}

/// Everything a client command may use.
pub struct Api {
    /// Quorum reads and writes.
    pub coordinator: Arc<Coordinator>,
    /// The local replica (STATUS figures).
    pub replica: Arc<Replica>,
    /// Hints held for others (NODES, STATUS).
    pub hints: Arc<Hints>,
    /// Fault-injection rules.
    pub faults: Arc<Faults>,
    /// Anti-entropy counters.
    pub aae: Arc<AaeStats>,
    /// Background workers (their status lines).
    pub workers: Workers,
    /// This node's settings.
    pub info: NodeInfo,
    /// Stops this node.
    pub stop: StopFn,
    /// Connected clients.
    pub clients: Arc<clients::Clients>,
    /// Counters.
    pub stats: Arc<ApiStats>,
    /// When the node started.
    pub started: Instant,
    /// The layout steward's state (RING, LEAVE, REMOVE).
    pub layouts: Arc<crate::cluster::steward::Shared>,
}

fn bulk_or_nil(v: Option<Vec<u8>>) -> Frame {
    v.map_or(Frame::Null, Frame::Bulk)
}

impl Api {
    /// Runs one data or administration command.
    pub async fn execute(self: &Arc<Self>, cmd: Command) -> (Frame, After) {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let reply = match cmd {
            Command::Ping(None) => Frame::Simple("PONG".into()),
            Command::Ping(Some(m)) | Command::Echo(m) => Frame::Bulk(m),
            Command::Get { key, r } => match self.read(&key, r).await {
                Ok(Some(values)) => values,
                Ok(None) => Frame::Null,
                Err(e) => e,
            },
            Command::VGet { key, r } => match self.coordinator.get(&key, r).await {
                Ok(obj) => {
                    let obj = obj.unwrap_or_default();
                    let mut items = vec![Frame::bulk(encode_context(&key, &obj.clock))];
                    items.extend(
                        obj.resolve(self.replica.now_ms())
                            .values
                            .into_iter()
                            .map(Frame::Bulk),
                    );
                    Frame::Array(items)
                }
                Err(e) => coord_err(e),
            },
            Command::Set {
                key,
                value,
                ttl,
                cond,
                reply,
                w,
                ctx,
            } => {
                let ttl = match ttl {
                    SetTtl::None => Ttl::None,
                    SetTtl::Keep => Ttl::Keep,
                    SetTtl::When(when) => Ttl::At(when.deadline(self.replica.now_ms())),
                };
                match self
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
            }
            Command::GetDel(key) => match self
                .coordinator
                .write(&key, Write::Delete, None, None)
                .await
            {
                Ok(done) => bulk_or_nil(done.before),
                Err(e) => coord_err(e),
            },
            Command::GetEx { key, change } => match change {
                None => match self.read(&key, None).await {
                    Ok(v) => v.unwrap_or(Frame::Null),
                    Err(e) => e,
                },
                Some(when) => {
                    let write = Write::Expire {
                        deadline: when.map(|w| w.deadline(self.replica.now_ms())),
                        cond: crate::write::ExpireIf::Always,
                    };
                    match self.coordinator.write(&key, write, None, None).await {
                        Ok(done) => bulk_or_nil(done.before),
                        Err(e) => coord_err(e),
                    }
                }
            },
            Command::MGet(keys) => {
                let reads = keys.iter().map(|k| self.read(k, None));
                let mut out = Vec::with_capacity(keys.len());
                for r in join_all(reads).await {
                    match r {
                        Ok(v) => out.push(v.unwrap_or(Frame::Null)),
                        Err(e) => return (e, After::Continue),
                    }
                }
                Frame::Array(out)
            }
            Command::MSet(pairs) => {
                let writes = pairs.into_iter().map(|(k, v)| async move {
                    self.coordinator
                        .write(&k, Write::value(Some(v)), None, None)
                        .await
                });
                match join_all(writes).await.into_iter().find_map(Result::err) {
                    None => Frame::ok(),
                    Some(e) => coord_err(e),
                }
            }
            Command::Del { keys, w, ctx } => {
                let deletes = keys.iter().map(|k| {
                    let ctx = ctx.clone();
                    async move { self.coordinator.write(k, Write::Delete, ctx, w).await }
                });
                let mut n = 0;
                for r in join_all(deletes).await {
                    match r {
                        Ok(done) => n += i64::from(done.existed),
                        Err(e) => return (coord_err(e), After::Continue),
                    }
                }
                Frame::Integer(n)
            }
            Command::Exists(keys) => {
                let reads = keys.iter().map(|k| self.read(k, None));
                let mut n = 0;
                for r in join_all(reads).await {
                    match r {
                        Ok(v) => n += i64::from(v.is_some()),
                        Err(e) => return (e, After::Continue),
                    }
                }
                Frame::Integer(n)
            }
            Command::Expire { key, when, cond } => {
                let write = Write::Expire {
                    deadline: when.map(|w| w.deadline(self.replica.now_ms())),
                    cond,
                };
                match self.coordinator.write(&key, write, None, None).await {
                    Ok(done) => Frame::Integer(i64::from(done.applied)),
                    Err(e) => coord_err(e),
                }
            }
            Command::Ttl {
                key,
                millis,
                absolute,
            } => match self.coordinator.get(&key, None).await {
                Ok(obj) => {
                    let now = self.replica.now_ms();
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
            },
            Command::Incr { key, by } => {
                match self
                    .coordinator
                    .write(&key, Write::Incr { by }, None, None)
                    .await
                {
                    Ok(Done {
                        number: Some(n), ..
                    }) => Frame::Integer(n),
                    Ok(_) => Frame::err("the counter did not answer a value"),
                    Err(e) => coord_err(e),
                }
            }
            Command::StrLen(key) => match self.read_value(&key).await {
                Ok(v) => Frame::Integer(v.map_or(0, |v| v.len() as i64)),
                Err(e) => e,
            },
            Command::Type(key) => match self.read_value(&key).await {
                Ok(Some(_)) => Frame::Simple("string".into()),
                Ok(None) => Frame::Simple("none".into()),
                Err(e) => e,
            },
            Command::Scan {
                cursor,
                pattern,
                count,
                kind,
            } => self.scan(cursor, pattern, count, kind).await,
            Command::Keys(pattern) => {
                let mut all = Vec::new();
                for p in 0..PARTITIONS {
                    match self.coordinator.scan_partition(p).await {
                        Ok(keys) => all.extend(
                            keys.into_iter()
                                .filter(|k| glob_match(&pattern, k))
                                .map(Frame::Bulk),
                        ),
                        Err(e) => return (coord_err(e), After::Continue),
                    }
                }
                Frame::Array(all)
            }
            Command::DbSize => Frame::Integer(
                i64::try_from(self.coordinator.dbsize_estimate()).unwrap_or(i64::MAX),
            ),
            Command::Info(sections) => {
                Frame::Verbatim("txt".into(), info::info(self, &sections).into_bytes())
            }
            Command::Command(args) => catalog::command(&args),
            Command::ConfigGet(patterns) => info::config_get(self, &patterns),
            Command::ConfigRefused(msg) | Command::Refused(msg) => Frame::err(msg),
            Command::ConfigHelp => Frame::Array(
                [
                    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GET <pattern> -- the node's settings matching a glob-style pattern",
                    "(distro-db takes its settings from the command line: CONFIG SET is refused)",
                ]
                .into_iter()
                .map(|l| Frame::Simple(l.into()))
                .collect(),
            ),
            Command::Time => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Frame::Array(vec![
                    Frame::bulk(now.as_secs().to_string()),
                    Frame::bulk(now.subsec_micros().to_string()),
                ])
            }
            Command::Cluster(c) => self.cluster(c),
            Command::Nodes => Frame::Bulk(admin::nodes_report(self).into_bytes()),
            Command::Ring => Frame::Bulk(admin::ring_report(self).into_bytes()),
            Command::Leave => {
                let me = self.coordinator.me().to_string();
                match admin::layout_change(self, vec![Change::Leave { id: me.clone() }], false)
                    .await
                {
                    Ok(()) => Frame::Simple(format!(
                        "OK {me} is leaving: it hands its partitions over, then stops (see RING)"
                    )),
                    Err(e) => Frame::err(e),
                }
            }
            Command::Remove(id, force) => {
                match admin::layout_change(self, vec![Change::Remove { id: id.clone() }], force)
                    .await
                {
                    Ok(()) => Frame::Simple(format!(
                        "OK {id} will be removed; the others re-create its copies (see RING)"
                    )),
                    Err(e) => Frame::err(e),
                }
            }
            Command::Owners(key) => Frame::Bulk(admin::owners_report(self, &key).into_bytes()),
            Command::Status => Frame::Bulk(admin::status_report(self).into_bytes()),
            Command::Replicas(key) => {
                Frame::Bulk(admin::replicas_report(self, &key).await.into_bytes())
            }
            Command::Kill(target) => {
                if *target == **self.coordinator.me() {
                    return (Frame::ok(), After::StopNode);
                }
                match admin::kill(self, &target).await {
                    Ok(()) => Frame::ok(),
                    Err(e) => Frame::err(e),
                }
            }
            Command::Shutdown => return (Frame::ok(), After::StopNode),
            Command::ShutdownCluster => {
                // Stop the others first, so the answer says what happened.
                let (stopped, total) = admin::stop_others(self).await;
                info!(stopped, total, "cluster shutdown requested");
                let reply = if stopped == total {
                    Frame::ok()
                } else {
                    Frame::Simple(format!(
                        "OK ({stopped} of {total} other nodes stopped; the others did not answer and may be down already)"
                    ))
                };
                return (reply, After::StopNode);
            }
            Command::Fault(f) => admin::fault_command(self, f),
            // The session handles commands about the connection itself.
            other => Frame::err(format!(
                "{other:?} is a connection command and cannot run here"
            )),
        };
        (reply, After::Continue)
    }

    /// A plain read: the key's value (`Ok(None)` when it holds none); a key
    /// with several concurrent values answers the pick or, with
    /// `--sibling-reads error`, an error pointing to VGET.
    async fn read(&self, key: &[u8], r: Option<usize>) -> Result<Option<Frame>, Frame> {
        let coord = self.coordinator.clone();
        let obj = coord.get(key, r).await.map_err(coord_err)?;
        let Some(obj) = obj else {
            return Ok(None);
        };
        let resolved = obj.resolve(self.replica.now_ms());
        if resolved.conflicted() {
            self.stats.conflicted_reads.fetch_add(1, Ordering::Relaxed);
            if self.info.config.sibling_reads == SiblingReads::Error {
                return Err(Frame::Error(format!(
                    "CONFLICT key has {} concurrent values; read them with VGET and write back with its CTX",
                    resolved.values.len()
                )));
            }
        }
        Ok(resolved.pick.map(Frame::Bulk))
    }

    /// The key's value, as a plain read picks it.
    async fn read_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Frame> {
        match self.read(key, None).await? {
            Some(Frame::Bulk(v)) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// `SCAN`: the cursor is the next partition to visit; each call visits
    /// partitions until it has about `count` keys, so every key that holds
    /// a value from the first call to the last is returned exactly once
    /// (keys come from the union of live owners: a node failure between
    /// calls changes nothing).
    async fn scan(
        &self,
        cursor: u64,
        pattern: Option<Vec<u8>>,
        count: usize,
        kind: Option<String>,
    ) -> Frame {
        let mut p = usize::try_from(cursor).unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        // Every key holds a string: any other TYPE finds nothing.
        if kind.as_deref().is_some_and(|k| k != "string") {
            p = PARTITIONS;
        }
        while p < PARTITIONS && keys.len() < count {
            match self.coordinator.scan_partition(p).await {
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
    }

    fn cluster(&self, c: ClusterCmd) -> Frame {
        // Members this node just failed to connect to count as down, so a
        // client refreshing its map after a connection error does not get
        // the dead node back before the failure detector has spoken.
        let view = self.coordinator.view();
        let transport = self.coordinator.transport();
        let me_id = self.coordinator.me();
        let view = if view
            .members()
            .iter()
            .any(|m| *m.id != **me_id && transport.unreachable(m.addr))
        {
            let live = |id: &str| {
                view.is_live(id)
                    && (id == &**me_id || view.addr(id).is_none_or(|a| !transport.unreachable(a)))
            };
            std::sync::Arc::new(view.with_live(live))
        } else {
            view
        };
        let me = self.coordinator.me();
        match c {
            ClusterCmd::Slots => cluster::slots(&view, me),
            ClusterCmd::Shards => cluster::shards(&view, me),
            ClusterCmd::Nodes => Frame::Verbatim(
                "txt".into(),
                cluster::nodes(&view, me, self.replica.now_ms()).into_bytes(),
            ),
            ClusterCmd::Info => {
                Frame::Verbatim("txt".into(), cluster::info(&view, me).into_bytes())
            }
            ClusterCmd::MyId => Frame::bulk(cluster::cluster_id(me)),
            ClusterCmd::KeySlot(key) => Frame::Integer(crate::keyspace::slot_of(&key) as i64),
            ClusterCmd::CountKeysInSlot(slot) => {
                let p = crate::keyspace::partition_of_slot(slot);
                let n = self
                    .replica
                    .live_keys(p, self.replica.now_ms())
                    .unwrap_or_default()
                    .iter()
                    .filter(|k| crate::keyspace::slot_of(k) == slot)
                    .count();
                Frame::Integer(n as i64)
            }
            ClusterCmd::Help => cluster::help(),
        }
    }
}

/// A write condition's name, for docs and errors.
pub fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Always => "",
        Condition::Absent => "NX",
        Condition::Present => "XX",
    }
}

fn coord_err(e: CoordError) -> Frame {
    Frame::err(e)
}
