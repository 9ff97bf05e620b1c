//! Redis Cluster's view of a distro-db cluster, for cluster-mode clients
//! and tools (`CLUSTER SLOTS`, `SHARDS`, `NODES`, `INFO`, `MYID`,
//! `KEYSLOT`, and what `redis-cli --cluster check` reads).
//!
//! Any distro-db node serves any key, so there is no wrong node to be at
//! and no `MOVED` reply ever; the map only says where a client sends
//! requests first. Redis Cluster's model is shards: each slot has exactly
//! one master, and each replica follows exactly one master. distro-db's
//! owners overlap (every node is an owner of many partitions, next to
//! different others), so the map presents the whole cluster as **one
//! shard**: one master, the first live member in id order (the same on
//! every node), holding all 16384 slots, and every other member its
//! replica. Every view says the same: `SLOTS` lists the master first for
//! every range, then the live *owners* of the range's partitions as its
//! replicas (so a `READONLY` client reads from a node that holds the key);
//! `SHARDS` is that one shard; `NODES` shows one master and the others as
//! `slave <master-id>`.
//!
//! One master is what makes the usual cluster-wide commands right without
//! telling clients apart: a cluster client that runs `SCAN`, `KEYS` or
//! `DBSIZE` "on every master" (redis-py's `scan_iter`, node-redis and
//! ioredis loops, `redis-cli --cluster check`'s key count) asks one node,
//! and every node's `SCAN` and `DBSIZE` cover the whole keyspace, as they
//! do for a client pinned to one node. Each key is seen once.
//!
//! Nodes the failure detector marks down are left out of `SLOTS` and
//! `SHARDS` (and flagged `fail` in `NODES`), and so are nodes this node
//! just failed to connect to (before the failure detector has spoken), so a
//! client that refreshes its map after a connection error (redis-py,
//! ioredis, go-redis, redis-rs's async client do) moves to a live master.

use std::fmt::Write as _;

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::resp::Frame;
use crate::cluster::ClusterView;
use crate::cluster::layout::NodeState;
use crate::keyspace::{PARTITIONS, SLOTS, SLOTS_PER_PARTITION};

/// A node id as Redis Cluster shows it: 40 hex characters, derived from the
/// distro-db node id (stable across restarts).
pub fn cluster_id(node: &str) -> String {
    format!(
        "{:032x}{:08x}",
        xxh3_128(node.as_bytes()),
        xxh3_64(node.as_bytes()) as u32
    )
}

/// The master of every slot: the first live member in id order that is not
/// leaving (then any live member), or this node when it sees none live.
/// Members are in id order on every node, so nodes that agree on who is
/// live agree on the master.
pub fn master(view: &ClusterView, me: &str) -> Option<usize> {
    let live = |i: &usize| view.is_live_at(*i);
    let staying = |i: &usize| view.member(*i).state == NodeState::Member;
    (0..view.members().len())
        .filter(live)
        .find(staying)
        .or_else(|| (0..view.members().len()).find(live))
        .or_else(|| view.index_of(me))
}

/// One slot range and the members that serve it (indexes into the view;
/// the first is the master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First slot.
    pub start: usize,
    /// Last slot (inclusive).
    pub end: usize,
    /// Serving members: the master, then the live owners of the range's
    /// partitions other than the master, in member order.
    pub nodes: Vec<usize>,
}

/// The slot map: for each partition, the master and the partition's other
/// live owners; consecutive partitions with the same list merged. Empty
/// only when this node is not a member of its own view.
pub fn ranges(view: &ClusterView, me: &str) -> Vec<Range> {
    let Some(master) = master(view, me) else {
        return Vec::new();
    };
    let mut out: Vec<Range> = Vec::new();
    for p in 0..PARTITIONS {
        let mut replicas: Vec<usize> = view
            .owners_of_partition(p)
            .iter()
            .map(|&i| usize::from(i))
            .filter(|&i| i != master && view.is_live_at(i))
            .collect();
        replicas.sort_unstable();
        let nodes: Vec<usize> = std::iter::once(master).chain(replicas).collect();
        let (start, end) = (p * SLOTS_PER_PARTITION, (p + 1) * SLOTS_PER_PARTITION - 1);
        match out.last_mut() {
            Some(last) if last.nodes == nodes && last.end + 1 == start => last.end = end,
            _ => out.push(Range { start, end, nodes }),
        }
    }
    out
}

fn node_entry(view: &ClusterView, i: usize) -> Frame {
    let m = view.member(i);
    Frame::Array(vec![
        Frame::bulk(m.addr.ip().to_string()),
        Frame::Integer(i64::from(m.addr.port())),
        Frame::bulk(cluster_id(&m.id)),
        Frame::Map(Vec::new()),
    ])
}

/// `CLUSTER SLOTS`.
pub fn slots(view: &ClusterView, me: &str) -> Frame {
    Frame::Array(
        ranges(view, me)
            .into_iter()
            .map(|r| {
                let mut entry = vec![Frame::Integer(r.start as i64), Frame::Integer(r.end as i64)];
                entry.extend(r.nodes.iter().map(|&i| node_entry(view, i)));
                Frame::Array(entry)
            })
            .collect(),
    )
}

/// `CLUSTER SHARDS`: the one shard, with every slot; the master, then every
/// other member as a replica (`online`, or `failed` when down).
pub fn shards(view: &ClusterView, me: &str) -> Frame {
    let Some(master) = master(view, me) else {
        return Frame::Array(Vec::new());
    };
    let others = (0..view.members().len()).filter(|&i| i != master);
    let nodes = std::iter::once(master)
        .chain(others)
        .map(|i| {
            let m = view.member(i);
            let health = if view.is_live_at(i) {
                "online"
            } else {
                "failed"
            };
            Frame::map([
                ("id", Frame::bulk(cluster_id(&m.id))),
                ("port", Frame::Integer(i64::from(m.addr.port()))),
                ("ip", Frame::bulk(m.addr.ip().to_string())),
                ("endpoint", Frame::bulk(m.addr.ip().to_string())),
                (
                    "role",
                    Frame::bulk(if i == master { "master" } else { "replica" }),
                ),
                ("replication-offset", Frame::Integer(0)),
                ("health", Frame::bulk(health)),
            ])
        })
        .collect();
    let last = SLOTS - 1;
    Frame::Array(vec![Frame::map([
        (
            "slots",
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(last as i64)]),
        ),
        ("nodes", Frame::Array(nodes)),
    ])])
}

/// `CLUSTER NODES`: the master with every slot, every other member as its
/// replica (`slave <master-id>`), down members flagged `fail`.
pub fn nodes(view: &ClusterView, me: &str, now_ms: u64) -> String {
    let master = master(view, me);
    let master_id = master.map(|i| cluster_id(&view.member(i).id));
    let mut out = String::new();
    for (i, m) in view.members().iter().enumerate() {
        let mut flags = String::new();
        if *m.id == *me {
            flags.push_str("myself,");
        }
        let is_master = master == Some(i);
        flags.push_str(if is_master { "master" } else { "slave" });
        let live = view.is_live_at(i);
        if !live {
            flags.push_str(",fail");
        }
        let follows = match (&master_id, is_master) {
            (Some(id), false) => id.as_str(),
            _ => "-",
        };
        let slots = if is_master {
            format!(" 0-{}", SLOTS - 1)
        } else {
            String::new()
        };
        let link = if live { "connected" } else { "disconnected" };
        let _ = writeln!(
            out,
            "{} {}:{}@{} {flags} {follows} 0 {now_ms} 1 {link}{slots}",
            cluster_id(&m.id),
            m.addr.ip(),
            m.addr.port(),
            m.addr.port()
        );
    }
    out
}

/// `CLUSTER INFO`.
pub fn info(view: &ClusterView, me: &str) -> String {
    let size = usize::from(master(view, me).is_some());
    let state = if view.live_count() > 0 { "ok" } else { "fail" };
    format!(
        "cluster_state:{state}\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\n\
         cluster_size:{size}\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n\
         cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n\
         total_cluster_links_buffer_limit_exceeded:0\r\n",
        view.members().len(),
    )
}

/// `CLUSTER HELP`.
pub fn help() -> Frame {
    Frame::Array(
        [
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "SLOTS -- slot ranges: the master (of every slot), then the live owners as replicas (any node serves any key)",
            "SHARDS -- the one shard: every slot, the master and its replicas",
            "NODES -- every member, its address and state: one master, the others its replicas",
            "INFO -- cluster state",
            "MYID -- this node's cluster id",
            "KEYSLOT <key> -- the hash slot of a key",
            "COUNTKEYSINSLOT <slot> -- keys this node stores in a slot",
        ]
        .into_iter()
        .map(|l| Frame::Simple(l.into()))
        .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn view(n: usize, down: &[&str]) -> ClusterView {
        let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        ClusterView::new(
            ids.iter().enumerate().map(|(i, id)| {
                (
                    id.as_str(),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            }),
            |id| !down.contains(&id),
            3,
        )
    }

    #[test]
    fn one_live_master_serves_every_slot_with_the_live_owners_as_replicas() {
        for (n, down) in [(3, vec![]), (5, vec!["n2"]), (5, vec!["n0", "n3"])] {
            let v = view(n, &down);
            let master = master(&v, "n1").expect("a master");
            // The first live member, whichever node answers.
            assert_eq!(Some(master), (0..n).find(|&i| v.is_live_at(i)));
            assert_eq!(ranges(&v, "n1"), ranges(&v, "n4"));
            let rs = ranges(&v, "n1");
            assert_eq!(rs.first().map(|r| r.start), Some(0));
            assert_eq!(rs.last().map(|r| r.end), Some(16383));
            for w in rs.windows(2) {
                assert_eq!(w[0].end + 1, w[1].start);
                assert_ne!(w[0].nodes, w[1].nodes, "equal neighbours are merged");
            }
            for r in &rs {
                assert_eq!(r.nodes[0], master);
                for &i in &r.nodes {
                    assert!(v.is_live_at(i), "a down node serves slots");
                }
                // The replicas are the partition's live owners but the master.
                let p = r.start / SLOTS_PER_PARTITION;
                let mut owners: Vec<usize> = v
                    .owners_of_partition(p)
                    .iter()
                    .map(|&i| usize::from(i))
                    .filter(|&i| i != master && v.is_live_at(i))
                    .collect();
                owners.sort_unstable();
                assert_eq!(r.nodes[1..], owners[..]);
            }
        }
        // Three nodes, N=3: one range, the master and two replicas.
        let v = view(3, &[]);
        assert_eq!(
            ranges(&v, "n2"),
            vec![Range {
                start: 0,
                end: 16383,
                nodes: vec![0, 1, 2]
            }]
        );
        // Every other node down: this node is the master of everything.
        let v = view(3, &["n0", "n2"]);
        assert!(ranges(&v, "n1").iter().all(|r| r.nodes == vec![1]));
    }

    #[test]
    fn nodes_shards_and_info_show_the_same_master_and_replicas() {
        let v = view(3, &["n2"]);
        let text = nodes(&v, "n1", 7);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(lines.len(), 3);
        let id0 = cluster_id("n0");
        assert_eq!(lines[0][0], id0);
        assert_eq!(&lines[0][2..4], ["master", "-"]);
        assert_eq!(lines[0].last(), Some(&"0-16383"));
        assert_eq!(&lines[1][2..4], ["myself,slave", id0.as_str()]);
        assert_eq!(&lines[2][2..4], ["slave,fail", id0.as_str()]);
        assert_eq!(lines[2][7], "disconnected");
        assert_eq!(lines[1].len(), 8, "a replica lists no slots");
        assert!(info(&v, "n1").contains("cluster_size:1\r\n"));
        let Frame::Array(shard_list) = shards(&v, "n1") else {
            panic!("shards is an array")
        };
        assert_eq!(shard_list.len(), 1);
        let Frame::Map(shard) = &shard_list[0] else {
            panic!("a shard is a map")
        };
        assert_eq!(
            shard[0].1,
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(16383)])
        );
        let Frame::Array(members) = &shard[1].1 else {
            panic!("nodes")
        };
        let field = |m: &Frame, k: &str| match m {
            Frame::Map(kv) => kv
                .iter()
                .find(|(f, _)| *f == Frame::bulk(k))
                .map(|(_, v)| v.clone()),
            _ => None,
        };
        let roles: Vec<_> = members.iter().map(|m| field(m, "role")).collect();
        assert_eq!(
            roles,
            [
                Some(Frame::bulk("master")),
                Some(Frame::bulk("replica")),
                Some(Frame::bulk("replica"))
            ]
        );
        assert_eq!(field(&members[2], "health"), Some(Frame::bulk("failed")));
    }

    #[test]
    fn replies_have_redis_shapes() {
        let v = view(3, &[]);
        let Frame::Array(entries) = slots(&v, "n0") else {
            panic!("slots is an array")
        };
        let Frame::Array(first) = &entries[0] else {
            panic!("an entry is an array")
        };
        assert_eq!(first[0], Frame::Integer(0));
        assert!(matches!(&first[2], Frame::Array(n) if n.len() == 4));
        let text = nodes(&v, "n0", 1);
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("myself,master"));
        assert_eq!(cluster_id("n0").len(), 40);
        assert!(info(&v, "n0").starts_with("cluster_state:ok\r\n"));
    }
}
