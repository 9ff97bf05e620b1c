//! Redis Cluster's view of a distro-db cluster, for cluster-mode clients
//! (`CLUSTER SLOTS`, `SHARDS`, `NODES`, `INFO`, `MYID`, `KEYSLOT`).
//!
//! Any distro-db node can serve any key, so there is no wrong node to be at
//! and no `MOVED` reply ever. The map still routes well: a partition is 16
//! consecutive hash slots (see [`crate::keyspace`]), and each slot range is
//! given to the first *live* owner of its partition as "master", with the
//! other live owners as "replicas" (used by `READONLY` clients). A client
//! then sends each key to a replica of it, saving the forwarding hop. Nodes
//! the failure detector marks down are left out, and so are nodes this node
//! just failed to connect to (before the failure detector has spoken), so a
//! client that refreshes its map after a connection error (redis-py,
//! ioredis, go-redis, redis-rs's async client do) moves to live nodes; a partition with no live owner is served by this node
//! (it stands in, as the sloppy quorum lets any node do).

use std::fmt::Write as _;

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::resp::Frame;
use crate::cluster::ClusterView;
use crate::keyspace::{PARTITIONS, SLOTS_PER_PARTITION};

/// A node id as Redis Cluster shows it: 40 hex characters, derived from the
/// distro-db node id (stable across restarts).
pub fn cluster_id(node: &str) -> String {
    format!(
        "{:032x}{:08x}",
        xxh3_128(node.as_bytes()),
        xxh3_64(node.as_bytes()) as u32
    )
}

/// One slot range and the members that serve it (indexes into the view;
/// the first is the "master").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First slot.
    pub start: usize,
    /// Last slot (inclusive).
    pub end: usize,
    /// Serving members, master first.
    pub nodes: Vec<usize>,
}

/// The slot map: consecutive partitions served by the same members, merged.
pub fn ranges(view: &ClusterView, me: &str) -> Vec<Range> {
    let me_idx = view.index_of(me);
    let mut out: Vec<Range> = Vec::new();
    for p in 0..PARTITIONS {
        let mut nodes: Vec<usize> = view
            .owners_of_partition(p)
            .iter()
            .map(|&i| usize::from(i))
            .filter(|&i| view.is_live_at(i))
            .collect();
        if nodes.is_empty() {
            nodes.extend(me_idx);
        }
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

/// Members (by index) serving some slot ranges (first and last slot).
type Shard = (Vec<usize>, Vec<(usize, usize)>);

/// `CLUSTER SHARDS`: one shard per distinct set of serving members.
pub fn shards(view: &ClusterView, me: &str) -> Frame {
    let mut groups: Vec<Shard> = Vec::new();
    for r in ranges(view, me) {
        match groups.iter_mut().find(|(nodes, _)| *nodes == r.nodes) {
            Some((_, slots)) => slots.push((r.start, r.end)),
            None => groups.push((r.nodes, vec![(r.start, r.end)])),
        }
    }
    Frame::Array(
        groups
            .into_iter()
            .map(|(nodes, slots)| {
                let slots = slots
                    .iter()
                    .flat_map(|&(s, e)| [Frame::Integer(s as i64), Frame::Integer(e as i64)])
                    .collect();
                let nodes = nodes
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| {
                        let m = view.member(i);
                        Frame::map([
                            ("id", Frame::bulk(cluster_id(&m.id))),
                            ("port", Frame::Integer(i64::from(m.addr.port()))),
                            ("ip", Frame::bulk(m.addr.ip().to_string())),
                            ("endpoint", Frame::bulk(m.addr.ip().to_string())),
                            (
                                "role",
                                Frame::bulk(if k == 0 { "master" } else { "replica" }),
                            ),
                            ("replication-offset", Frame::Integer(0)),
                            ("health", Frame::bulk("online")),
                        ])
                    })
                    .collect();
                Frame::map([
                    ("slots", Frame::Array(slots)),
                    ("nodes", Frame::Array(nodes)),
                ])
            })
            .collect(),
    )
}

/// `CLUSTER NODES`: every member as a master of the ranges it leads (live
/// members that lead none are listed without slots; down members as failed).
pub fn nodes(view: &ClusterView, me: &str, now_ms: u64) -> String {
    let ranges = ranges(view, me);
    let mut out = String::new();
    for (i, m) in view.members().iter().enumerate() {
        let mut flags = String::new();
        if *m.id == *me {
            flags.push_str("myself,");
        }
        flags.push_str("master");
        if !view.is_live_at(i) {
            flags.push_str(",fail");
        }
        let mut slots = String::new();
        for r in ranges.iter().filter(|r| r.nodes.first() == Some(&i)) {
            if r.start == r.end {
                let _ = write!(slots, " {}", r.start);
            } else {
                let _ = write!(slots, " {}-{}", r.start, r.end);
            }
        }
        let link = if view.is_live_at(i) {
            "connected"
        } else {
            "disconnected"
        };
        let _ = writeln!(
            out,
            "{} {}:{}@{} {flags} - 0 {now_ms} 1 {link}{slots}",
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
    let ranges = ranges(view, me);
    let masters: std::collections::BTreeSet<usize> = ranges
        .iter()
        .filter_map(|r| r.nodes.first().copied())
        .collect();
    let state = if view.live_count() > 0 { "ok" } else { "fail" };
    format!(
        "cluster_state:{state}\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\n\
         cluster_size:{}\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n\
         cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n\
         total_cluster_links_buffer_limit_exceeded:0\r\n",
        view.members().len(),
        masters.len()
    )
}

/// `CLUSTER HELP`.
pub fn help() -> Frame {
    Frame::Array(
        [
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "SLOTS -- slot ranges and the nodes that serve them (any node serves any key)",
            "SHARDS -- the same, grouped by serving nodes",
            "NODES -- every member, its address, state and the ranges it leads",
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
    fn every_slot_is_covered_by_live_nodes_only() {
        for (n, down) in [(3, vec![]), (5, vec!["n2"]), (5, vec!["n0", "n3"])] {
            let v = view(n, &down);
            let rs = ranges(&v, "n1");
            assert_eq!(rs.first().map(|r| r.start), Some(0));
            assert_eq!(rs.last().map(|r| r.end), Some(16383));
            for w in rs.windows(2) {
                assert_eq!(w[0].end + 1, w[1].start);
            }
            for r in &rs {
                assert!(!r.nodes.is_empty());
                for &i in &r.nodes {
                    assert!(v.is_live_at(i), "a down node serves slots");
                }
                // The master is the first live owner of every partition in the range.
                let p = r.start / SLOTS_PER_PARTITION;
                let first_live = v
                    .owners_of_partition(p)
                    .iter()
                    .map(|&i| usize::from(i))
                    .find(|&i| v.is_live_at(i));
                assert_eq!(r.nodes.first().copied(), first_live);
            }
        }
        // With every owner of a partition down, this node serves it.
        let v = view(3, &["n0", "n2"]);
        assert!(ranges(&v, "n1").iter().all(|r| r.nodes == vec![1]));
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
        assert!(matches!(shards(&v, "n0"), Frame::Array(s) if !s.is_empty()));
    }
}
