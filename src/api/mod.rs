//! The client API: what a RESP client (a Redis library, `redis-cli`, the
//! REPL) can ask a node, over narrow handles.
//!
//! - [`resp`]: the RESP codec (pure).
//! - [`command`]: parsing a command's arguments (pure).
//! - [`session`]: one pipelined client connection.
//! - [`admin`]: cluster and node reports (NODES, STATUS, OWNERS,
//!   REPLICAS), KILL, cluster stop and FAULT.
//!
//! [`Api::execute`] runs one parsed command and says what the session does
//! next ([`After`]).

pub mod admin;
pub mod command;
pub mod resp;
pub mod session;

use std::sync::Arc;

use tracing::info;

use crate::coordinator::{CoordError, Coordinator};
use crate::fault::Faults;
use crate::hints::Hints;
use crate::object::encode_context;
use crate::replica::Replica;
use crate::rpc::service::StopFn;
use crate::workers::Workers;
use crate::workers::anti_entropy::AaeStats;
use command::Command;
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
}

impl Api {
    /// Runs one client command.
    pub async fn execute(self: &Arc<Self>, cmd: Command) -> (Frame, After) {
        let reply = match cmd {
            Command::Ping(None) => Frame::Simple("PONG".into()),
            Command::Ping(Some(m)) | Command::Echo(m) => Frame::Bulk(m),
            Command::Get { key, r } => match self.coordinator.get(&key, r).await {
                Ok(obj) => match obj.filter(|o| !o.is_deleted()) {
                    None => Frame::Null,
                    Some(o) if o.siblings.len() == 1 => {
                        o.siblings[0].value.clone().map_or(Frame::Null, Frame::Bulk)
                    }
                    Some(o) => Frame::Array(
                        o.siblings
                            .iter()
                            .map(|s| s.value.clone().map_or(Frame::Null, Frame::Bulk))
                            .collect(),
                    ),
                },
                Err(e) => coord_err(e),
            },
            Command::VGet { key, r } => match self.coordinator.get(&key, r).await {
                Ok(obj) => {
                    let obj = obj.unwrap_or_default();
                    let mut items = vec![Frame::bulk(encode_context(&key, &obj.clock))];
                    if !obj.is_deleted() {
                        items.extend(
                            obj.siblings
                                .iter()
                                .map(|s| s.value.clone().map_or(Frame::Null, Frame::Bulk)),
                        );
                    }
                    Frame::Array(items)
                }
                Err(e) => coord_err(e),
            },
            Command::Set { key, value, w, ctx } => {
                match self.coordinator.put(&key, Some(value), ctx, w).await {
                    Ok(_) => Frame::ok(),
                    Err(e) => coord_err(e),
                }
            }
            Command::Del { key, w, ctx } => match self.coordinator.put(&key, None, ctx, w).await {
                Ok(existed) => Frame::Integer(i64::from(existed)),
                Err(e) => coord_err(e),
            },
            Command::Nodes => Frame::Bulk(admin::nodes_report(self).into_bytes()),
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
            Command::Quit => return (Frame::ok(), After::Close),
            Command::Fault(f) => admin::fault_command(self, f),
            Command::CommandDocs => Frame::Array(Vec::new()),
            Command::Noop => Frame::ok(),
        };
        (reply, After::Continue)
    }
}

fn coord_err(e: CoordError) -> Frame {
    Frame::err(e)
}
