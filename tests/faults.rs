//! Fault injection: refused unless enabled; a partition made by FAULT cuts
//! gossip and peer RPC both ways, and HEAL restores them.

mod common;

use std::time::Duration;

use common::{Cluster, bulk, live_nodes, wait_until};
use distro_db::resp::Frame;

#[test]
fn fault_commands_are_refused_without_the_flag() {
    let c = Cluster::start(1);
    let reply = c.cmd(0, &["FAULT", "HEAL"]);
    let Frame::Error(msg) = reply else {
        panic!("expected an error, got {reply:?}")
    };
    assert!(msg.contains("--fault-injection"), "{msg}");
}

#[test]
fn partition_cuts_both_ways_and_heal_restores() {
    let c = Cluster::start_with(3, &["--fault-injection"]);
    let (a0, a2) = (c.nodes[0].addr(), c.nodes[2].addr());
    let (id0, id1, id2) = (
        c.nodes[0].id.clone(),
        c.nodes[1].id.clone(),
        c.nodes[2].id.clone(),
    );
    assert!(c.cmd(0, &["FAULT", "PARTITION", "nobody"]) != Frame::ok());
    // Rules on node 2 alone cut it off from both others, in both directions.
    // (Gossip is transitive: cutting only 0-2 would leave node 1 relaying
    // each one's heartbeats to the other, as on a real network.)
    assert_eq!(c.cmd(2, &["FAULT", "PARTITION", &id0, &id1]), Frame::ok());
    let a1 = c.nodes[1].addr();
    wait_until(
        Duration::from_secs(20),
        "each side to see the other down",
        || {
            !live_nodes(&a0).contains(&id2)
                && !live_nodes(&a1).contains(&id2)
                && live_nodes(&a2) == vec![id2.clone()]
        },
    );
    // Writes through node 0 reach W=2 with node 1; W=3 cannot.
    assert_eq!(c.cmd(0, &["SET", "k", "v"]), Frame::ok());
    let Frame::Error(msg) = c.cmd(0, &["SET", "k", "w", "W=3"]) else {
        panic!("W=3 across a partition")
    };
    assert!(msg.contains("write outcome unknown: 2 of 3"), "{msg}");
    let Frame::Bulk(rules) = c.cmd(2, &["FAULT", "SHOW"]) else {
        panic!("FAULT SHOW")
    };
    assert!(String::from_utf8_lossy(&rules).contains("partitioned=true"));
    // The isolated node cannot reach a write quorum.
    let Frame::Error(msg) = c.cmd(2, &["SET", "k", "lonely"]) else {
        panic!("write on the minority side")
    };
    assert!(msg.contains("write outcome unknown: 1 of 2"), "{msg}");
    assert_eq!(c.cmd(2, &["FAULT", "HEAL"]), Frame::ok());
    wait_until(Duration::from_secs(20), "the partition to heal", || {
        live_nodes(&a0).contains(&id2) && live_nodes(&a2).contains(&id0)
    });
    // Both "unknown" writes landed: "w" on nodes 0 and 1, "lonely" on node 2,
    // and each side kept hints for the owners it could not reach. Once they
    // are handed off, both surface as siblings everywhere: never lost.
    wait_until(
        Duration::from_secs(30),
        "the hints to be handed off",
        || {
            [0, 2].iter().all(|&i| {
                c.cmd(i, &["STATUS"])
                    .text()
                    .is_some_and(|t| t.contains("hints pending: 0\n"))
            })
        },
    );
    assert_eq!(c.siblings(1, "k", 3), vec![bulk("lonely"), bulk("w")]);
    // A plain write through node 0, which has seen both, replaces them.
    assert_eq!(c.cmd(0, &["SET", "k", "x", "W=3"]), Frame::ok());
    assert_eq!(c.cmd(2, &["GET", "k", "R=3"]), bulk("x"));
}
