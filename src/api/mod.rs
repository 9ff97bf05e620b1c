//! The client API: what a RESP client (a Redis library, `redis-cli`, the
//! REPL) can ask a node, over narrow handles.
//!
//! - [`resp`]: the RESP2/RESP3 codec (pure).
//! - [`commands`]: the command table: every command declared once, per
//!   family (arity, flags, keys, access, docs, parser, executor), and the
//!   dispatcher that finds and parses a command in it.
//! - [`session`]: one pipelined connection and its state (protocol version,
//!   authentication, name, `MULTI`).
//! - [`clients`]: the registry behind `CLIENT LIST/KILL` and `INFO`.
//! - [`admin`]: cluster and node reports (NODES, STATUS, OWNERS,
//!   REPLICAS), KILL, cluster stop and FAULT.
//! - [`cluster`]: Redis Cluster's view (`CLUSTER SLOTS` and friends).
//! - [`info`]: `INFO` and `CONFIG GET`.
//! - [`catalog`]: the `COMMAND` replies, rendered from the table.
//!
//! [`Api::execute`] runs one parsed data or administration command (the
//! session runs commands about the connection itself) and says what the
//! session does next ([`After`]). What each command does, and how it differs from Redis,
//! is in docs/redis.md.

pub mod admin;
pub mod catalog;
pub mod clients;
pub mod cluster;
pub mod commands;
pub mod info;
pub mod resp;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::SiblingReads;
use crate::coordinator::service::StopFn;
use crate::coordinator::{CoordError, Coordinator};
use crate::fault::Faults;
use crate::hints::Hints;
use crate::replica::Replica;
use crate::vclock::VClock;
use crate::workers::Workers;
use crate::workers::anti_entropy::AaeStats;
use crate::write::Condition;
use commands::{Action, Command, Reply};
use resp::Frame;
use tracing::warn;

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
    /// Requests answered, by command and outcome (`--metrics`).
    pub requests: crate::observe::requests::RequestStats,
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
    /// Signs the context tokens reads hand out and checks those writes
    /// bring back.
    pub context_key: crate::token::ContextKey,
    /// Client users and their rights (AUTH, ACL).
    pub acl: Arc<crate::acl::Acl>,
    /// Backups being taken from this node (`BACKUP`).
    pub backups: Arc<crate::backup::Backups>,
}

/// A value, or nil.
pub(crate) fn bulk_or_nil(v: Option<Vec<u8>>) -> Frame {
    v.map_or(Frame::Null, Frame::Bulk)
}

impl Api {
    /// Runs one parsed command that is not about the connection: data,
    /// reports or administration (the session runs connection commands).
    pub fn execute(self: &Arc<Self>, cmd: Command) -> Reply {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        match cmd.action {
            Action::Node(c) => c.run(self.clone()),
            Action::Refuse(msg) => commands::reply(Frame::err(msg)),
            Action::Connection(c) => commands::reply(Frame::err(format!(
                "{c:?} is a connection command and cannot run here"
            ))),
        }
    }

    /// A plain read: the key's value (`Ok(None)` when it holds none); a key
    /// with several concurrent values answers the pick or, with
    /// `--sibling-reads error`, an error pointing to VGET.
    pub(crate) async fn read(&self, key: &[u8], r: Option<usize>) -> Result<Option<Frame>, Frame> {
        let coord = self.coordinator.clone();
        let obj = coord.get(key, r).await.map_err(coord_err)?;
        let Some(obj) = obj else {
            return Ok(None);
        };
        let (pick, values) = obj.into_pick(self.replica.now_ms());
        if values > 1 {
            self.stats.conflicted_reads.fetch_add(1, Ordering::Relaxed);
            if self.info.config.sibling_reads == SiblingReads::Error {
                return Err(Frame::Error(format!(
                    "CONFLICT key has {values} concurrent values; read them with VGET and write back with its CTX"
                )));
            }
        }
        Ok(pick.map(Frame::Bulk))
    }

    /// The clock of a write's context token for `key` (`None` without
    /// one), or the error that tells the client to read the key again.
    /// The only way from a token to a clock.
    pub(crate) fn context(
        &self,
        key: &[u8],
        token: Option<&crate::token::Token>,
    ) -> Result<Option<VClock>, Frame> {
        let Some(token) = token else {
            return Ok(None);
        };
        match self.context_key.verify(key, token) {
            Ok(clock) => Ok(Some(clock)),
            Err(e) => {
                if let crate::token::TokenError::BadClock(why) = &e {
                    // A valid tag over a bad clock: made with the cluster key.
                    warn!(key = %String::from_utf8_lossy(key), cause = %why, "refusing an authenticated context token with a bad clock");
                }
                Err(Frame::Error(e.to_string()))
            }
        }
    }

    /// The key's value, as a plain read picks it.
    pub(crate) async fn read_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Frame> {
        match self.read(key, None).await? {
            Some(Frame::Bulk(v)) => Ok(Some(v)),
            _ => Ok(None),
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

/// A coordinator error as a reply.
pub(crate) fn coord_err(e: CoordError) -> Frame {
    Frame::err(e)
}
