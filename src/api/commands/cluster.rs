//! The Redis Cluster family: the CLUSTER sub-commands cluster clients read
//! to map slots to nodes (rendered by [`crate::api::cluster`]), and the
//! connection flags READONLY, READWRITE and ASKING (accepted, no effect:
//! every node serves every key).

use std::sync::Arc;

use super::args::{int, unknown_sub};
use super::spec::*;
use super::{Access, Action, ConnReply, ConnectionCommand, Family, NodeCommand, Reply, reply};
use crate::api::resp::Frame;
use crate::api::session::Conn;
use crate::api::{Api, cluster};

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

const COMMANDS: &[Spec] = &[
    cmd("cluster", -2, CLUSTER, "3.0.0", Access::Read, |c| {
        Err(unknown_sub(
            "CLUSTER",
            c.args.first().map_or(&[][..], |s| s),
        ))
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
        reply(run_cluster(&api, *self))
    }
}

fn run_cluster(api: &Api, c: ClusterCmd) -> Frame {
    // Members this node just failed to connect to count as down, so a
    // client refreshing its map after a connection error does not get
    // the dead node back before the failure detector has spoken.
    let view = api.coordinator.view();
    let transport = api.coordinator.transport();
    let me_id = api.coordinator.me();
    let view = if view
        .members()
        .iter()
        .any(|m| *m.id != **me_id && transport.unreachable(m.addr))
    {
        let live = |id: &str| {
            view.is_live(id)
                && (id == &**me_id || view.addr(id).is_none_or(|a| !transport.unreachable(a)))
        };
        Arc::new(view.with_live(live))
    } else {
        view
    };
    let me = api.coordinator.me();
    match c {
        ClusterCmd::Slots => cluster::slots(&view, me),
        ClusterCmd::Shards => cluster::shards(&view, me),
        ClusterCmd::Nodes => Frame::Verbatim(
            "txt".into(),
            cluster::nodes(&view, me, api.replica.now_ms()).into_bytes(),
        ),
        ClusterCmd::Info => Frame::Verbatim("txt".into(), cluster::info(&view, me).into_bytes()),
        ClusterCmd::MyId => Frame::bulk(cluster::cluster_id(me)),
        ClusterCmd::KeySlot(key) => Frame::Integer(crate::keyspace::slot_of(&key) as i64),
        ClusterCmd::CountKeysInSlot(slot) => {
            let p = crate::keyspace::partition_of_slot(slot);
            let n = api
                .replica
                .live_keys(p, api.replica.now_ms())
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
