//! The Redis Cluster family: the CLUSTER sub-commands cluster clients read
//! to map slots to nodes (rendered by [`crate::api::cluster`]), and the
//! connection flags READONLY, READWRITE and ASKING (accepted, no effect:
//! every node serves every key).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::args::{int, unknown_sub, upper};
use super::spec::*;
use super::{Access, Action, ConnReply, ConnectionCommand, Family, NodeCommand, Reply, answer};
use crate::api::resp::Frame;
use crate::api::session::Conn;
use crate::api::{Api, cluster};
use crate::cluster::ClusterView;
use crate::rpc::message::{Request, Response};

/// The Redis Cluster family.
pub const FAMILY: Family = Family {
    name: "cluster",
    commands: COMMANDS,
    refused: &[],
};

/// A cluster-mode connection flag: `OK`, nothing changes.
const fn flag(name: &'static str, flags: &'static [&'static str], summary: &'static str) -> Spec {
    cmd(name, 1, CLUSTER, "3.0.0", Access::Connection, |_| {
        Ok(Action::connection(ClusterFlag))
    })
    .doc(summary, "O(1)")
    .flags(flags)
    .acl(A_CONN_FAST)
}

/// Redis Cluster's sub-commands that change the cluster: refused with the
/// reason.
const REFUSED: &[&str] = &[
    "ADDSLOTS",
    "ADDSLOTSRANGE",
    "DELSLOTS",
    "DELSLOTSRANGE",
    "FLUSHSLOTS",
    "SETSLOT",
    "MEET",
    "FORGET",
    "REPLICATE",
    "FAILOVER",
    "RESET",
    "SAVECONFIG",
    "SET-CONFIG-EPOCH",
    "BUMPEPOCH",
];

const COMMANDS: &[Spec] = &[
    cmd("cluster", -2, CLUSTER, "3.0.0", Access::Read, |c| {
        let sub = c.args.first().map_or(&[][..], |s| s);
        let name = upper(sub);
        if REFUSED.contains(&name.as_str()) {
            return Ok(Action::Refuse(format!(
                "CLUSTER {name} is not supported: distro-db draws the slot map from its own partition layout and every node serves every key, so there are no slots to assign or move and no failover to run (nodes join with --seed and leave with LEAVE or REMOVE)"
            )));
        }
        Err(unknown_sub("CLUSTER", sub))
    })
    .doc(
        "A container for the commands of Redis Cluster.",
        "Depends on the sub-command",
    )
    .subs(CLUSTER_SUBS),
    flag(
        "readonly",
        &["loading", "stale", "fast"],
        "Lets this connection read from replica nodes of a cluster.",
    ),
    flag(
        "readwrite",
        &["loading", "stale", "fast"],
        "Ends the READONLY mode of this connection.",
    ),
    flag(
        "asking",
        F_FAST,
        "Tells the node that the client follows an ASK redirection.",
    ),
];

/// A sub-command that reads the cluster view and takes no argument
/// (words after it are ignored).
const fn view(
    name: &'static str,
    summary: &'static str,
    complexity: &'static str,
    parse: super::Parser,
) -> Spec {
    cmd(name, 2, CLUSTER, "3.0.0", Access::Read, parse)
        .doc(summary, complexity)
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC)
        .free()
        .parser_checks_arity()
}

const CLUSTER_SUBS: &[Spec] = &[
    view(
        "cluster|slots",
        "Returns the ranges of hash slots, each with the nodes that serve it.",
        "O(N) where N is the number of nodes",
        |_| Ok(Action::node(ClusterCmd::Slots)),
    )
    .deprecated("7.0.0", "`CLUSTER SHARDS`"),
    view(
        "cluster|shards",
        "Returns the shards of the cluster, with their hash slot ranges and nodes.",
        "O(N) where N is the number of nodes",
        |_| Ok(Action::node(ClusterCmd::Shards)),
    ),
    view(
        "cluster|nodes",
        "Returns the nodes of the cluster, one line each, as this node sees them.",
        "O(N) where N is the number of nodes",
        |_| Ok(Action::node(ClusterCmd::Nodes)),
    ),
    view(
        "cluster|info",
        "Returns the state of the cluster as this node sees it.",
        "O(1)",
        |_| Ok(Action::node(ClusterCmd::Info)),
    ),
    cmd("cluster|myid", 2, CLUSTER, "3.0.0", Access::Read, |_| {
        Ok(Action::node(ClusterCmd::MyId))
    })
    .doc("Returns the ID of this node.", "O(1)")
    .flags(F_LOADING_STALE)
    .free()
    .parser_checks_arity(),
    cmd("cluster|keyslot", 3, CLUSTER, "3.0.0", Access::Read, |c| {
        Ok(Action::node(ClusterCmd::KeySlot(c.args[0].clone())))
    })
    .doc(
        "Returns the hash slot of a key.",
        "O(N) where N is the length of the key",
    )
    .flags(F_LOADING_STALE)
    .args(&[string("key")])
    .free(),
    cmd(
        "cluster|countkeysinslot",
        3,
        CLUSTER,
        "3.0.0",
        Access::Read,
        |c| {
            let s = int(&c.args[0]).map_err(|_| "Invalid slot")?;
            let s = usize::try_from(s)
                .ok()
                .filter(|s| *s < crate::keyspace::SLOTS)
                .ok_or("Invalid slot")?;
            Ok(Action::node(ClusterCmd::CountKeysInSlot(s)))
        },
    )
    .doc(
        "Returns how many keys this node holds in a hash slot.",
        "O(1)",
    )
    .flags(F_LOADING_STALE)
    .args(&[integer("slot")])
    .free(),
    help("cluster|help", CLUSTER, Access::Connection, A_SLOW, |_| {
        Ok(Action::node(ClusterCmd::Help))
    })
    // Words after HELP are ignored.
    .parser_checks_arity(),
];

/// `CLUSTER` sub-commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCmd {
    /// `CLUSTER SLOTS`
    Slots,
    /// `CLUSTER SHARDS`
    Shards,
    /// `CLUSTER NODES`
    Nodes,
    /// `CLUSTER INFO`
    Info,
    /// `CLUSTER MYID`
    MyId,
    /// `CLUSTER KEYSLOT key`
    KeySlot(Vec<u8>),
    /// `CLUSTER COUNTKEYSINSLOT slot`
    CountKeysInSlot(usize),
    /// `CLUSTER HELP`
    Help,
}

impl NodeCommand for ClusterCmd {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move { run_cluster(&api, *self).await })
    }
}

/// How long a map request waits for a member to answer its probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The view the map is drawn from: the failure detector's, less the members
/// this node cannot reach right now. A client asks for the map after a
/// connection error, often a moment after a node died and before the
/// failure detector has spoken; naming the dead node again (as master, or
/// as a replica) would send it straight back there. So each other live
/// member is probed (a peer `Ping`, at most [`PROBE_TIMEOUT`], all at once)
/// and one that does not answer, or that this node just failed to connect
/// to, counts as down for this answer.
async fn map_view(api: &Api) -> Arc<ClusterView> {
    let view = api.coordinator.view();
    let transport = api.coordinator.transport();
    let me = api.coordinator.me();
    let probes = view
        .members()
        .iter()
        .enumerate()
        .filter(|(i, m)| *m.id != **me && view.is_live_at(*i))
        .map(|(_, m)| {
            let (id, addr) = (m.id.clone(), m.addr);
            async move {
                let answered = !transport.unreachable(addr)
                    && matches!(
                        transport.call(addr, &Request::Ping, PROBE_TIMEOUT).await,
                        Ok(Response::Pong { .. })
                    );
                (!answered).then_some(id)
            }
        });
    let silent: Vec<Arc<str>> = join_all(probes).await.into_iter().flatten().collect();
    if silent.is_empty() {
        return view;
    }
    let live = |id: &str| view.is_live(id) && !silent.iter().any(|s| **s == *id);
    Arc::new(view.with_live(live))
}

async fn run_cluster(api: &Api, c: ClusterCmd) -> Frame {
    let me = api.coordinator.me();
    match c {
        ClusterCmd::Slots => cluster::slots(&*map_view(api).await, me),
        ClusterCmd::Shards => cluster::shards(&*map_view(api).await, me),
        ClusterCmd::Nodes => Frame::Verbatim(
            "txt".into(),
            cluster::nodes(&*map_view(api).await, me, api.replica.now_ms()).into_bytes(),
        ),
        ClusterCmd::Info => Frame::Verbatim(
            "txt".into(),
            cluster::info(&*map_view(api).await, me).into_bytes(),
        ),
        ClusterCmd::MyId => Frame::bulk(cluster::cluster_id(me)),
        ClusterCmd::KeySlot(key) => Frame::Integer(crate::keyspace::slot_of(&key) as i64),
        ClusterCmd::CountKeysInSlot(slot) => {
            let p = crate::keyspace::partition_of_slot(slot);
            let n = api
                .replica
                .off_runtime({
                    let now = api.replica.now_ms();
                    move |r| r.live_keys(p, now)
                })
                .await
                .unwrap_or_default()
                .iter()
                .filter(|k| crate::keyspace::slot_of(k) == slot)
                .count();
            Frame::Integer(n as i64)
        }
        ClusterCmd::Help => cluster::help(),
    }
}

/// `READONLY`, `READWRITE`, `ASKING`: cluster-mode connection flags.
#[derive(Debug, PartialEq, Eq)]
pub struct ClusterFlag;

impl ConnectionCommand for ClusterFlag {
    fn run(self: Box<Self>, _conn: &mut Conn) -> ConnReply {
        Frame::ok().into()
    }
}
