//! The status page: `/` is one HTML file compiled into the binary
//! (`status.html`: markup, style and script, no external asset) whose
//! script polls `/status.json` every two seconds and redraws: members and
//! their state, each one's share of the ring, hints, anti-entropy, request
//! rates and latency (computed by the page from the difference between two
//! polls), storage and transfers. [`json`] builds that document from the
//! node's counters.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::Observer;
use super::histogram::Snapshot;
use crate::cluster::NodeState;

/// The page.
pub const PAGE: &str = include_str!("status.html");

/// A histogram for the page: per-bucket counts (the last bound is null for
/// `+Inf`), count and sum, and all-time p50 and p99 estimates.
fn histogram(h: &Snapshot) -> Value {
    json!({
        "bounds": h.buckets.iter().map(|(b, _)| if b.is_finite() { json!(b) } else { Value::Null }).collect::<Vec<_>>(),
        "buckets": h.buckets.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        "count": h.count,
        "sum": h.sum,
        "p50": h.quantile(0.5),
        "p99": h.quantile(0.99),
    })
}

/// The document `/status.json` answers.
pub fn json(o: &Observer) -> Value {
    let ready = o.readiness();
    let mut doc = json!({
        "node": o.node_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": o.uptime(),
        "ready": ready.is_ok(),
        "not_ready_because": ready.err(),
        "rss_bytes": crate::api::info::rss_bytes(),
    });
    let Some(s) = o.sources() else {
        return doc;
    };
    let api = &s.api;
    let view = api.coordinator.view();
    let layout = view.layout();
    let me = api.coordinator.me();
    let pending = api.hints.pending();
    let mut members = Vec::new();
    if layout.version == 0 {
        for (i, m) in view.members().iter().enumerate() {
            members.push(json!({
                "id": &*m.id,
                "addr": m.addr.to_string(),
                "state": if view.is_live_at(i) { "live" } else { "down" },
                "role": "forming",
                "this": m.id == *me,
                "hints_for_it": pending.get(&*m.id).copied().unwrap_or(0),
            }));
        }
    } else {
        let cur = &layout.current;
        let counts = cur.counts();
        let primaries = cur.primary_counts();
        let copies = (crate::keyspace::PARTITIONS * cur.n().max(1)) as f64;
        for node in &layout.nodes {
            let share = cur.members().binary_search(&node.id).ok();
            members.push(json!({
                "id": &*node.id,
                "addr": node.addr.to_string(),
                "state": if node.state == NodeState::Removed {
                    "removed"
                } else if view.is_live(&node.id) {
                    "live"
                } else {
                    "down"
                },
                "role": node.state.word(),
                "this": node.id == *me,
                "partitions": share.map(|i| counts[i]),
                "ring_share": share.map(|i| 100.0 * counts[i] as f64 / copies),
                "primary_share": share.map(|i| 100.0 * primaries[i] as f64 / crate::keyspace::PARTITIONS as f64),
                "hints_for_it": pending.get(&*node.id).copied().unwrap_or(0),
            }));
        }
    }
    let st = api.coordinator.stats();
    let relaxed = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counts = api.stats.requests.counts();
    let store = |st: &dyn crate::storage::Store| {
        let status = st.status();
        let detail = |k: &str| status.detail(k).map(str::to_string);
        json!({
            "backend": status.backend,
            "keys": status.keys,
            "bytes": status.bytes,
            "dead_bytes": status.dead_bytes,
            "segments": status.segments,
            "reclaimed_bytes": status.reclaimed_bytes,
            "compactions": detail("compactions"),
            "fsync": detail("fsync"),
            "fsync_seconds": st.sync_histograms().map(|h| histogram(&h.fsync_seconds)),
        })
    };
    let extra = json!({
        "cluster": api.info.config.cluster_id,
        "addr": api.info.config.advertise.to_string(),
        "replication": {"n": api.info.config.n, "r": api.info.config.r, "w": api.info.config.w},
        "layout": {"version": layout.version, "changing": layout.migrating()},
        "members": members,
        "hints": {
            "pending": pending.values().sum::<usize>(),
            "bytes": api.hints.bytes(),
            "delivered": api.hints.delivered(),
            "refused": api.hints.refused().total(),
        },
        "anti_entropy": {
            "interval_ms": api.info.config.aae_interval.as_millis() as u64,
            "exchanges": relaxed(&api.aae.rounds),
            "keys_compared": relaxed(&api.aae.keys_compared),
            "keys_repaired": relaxed(&api.aae.keys_repaired),
        },
        "requests": {
            "ok": counts.iter().map(|c| c.ok).sum::<u64>(),
            "error": counts.iter().map(|c| c.error).sum::<u64>(),
            "by_command": counts.iter().map(|c| json!({"command": c.command, "ok": c.ok, "error": c.error})).collect::<Vec<_>>(),
            "quorum_reads": relaxed(&st.reads),
            "quorum_writes": relaxed(&st.writes),
            "read_failures": relaxed(&st.read_failures),
            "write_failures": relaxed(&st.write_failures),
            "read_repairs": relaxed(&st.read_repairs),
        },
        "latency": {
            "read": histogram(&st.read_latency.snapshot()),
            "write": histogram(&st.write_latency.snapshot()),
        },
        "connections": {
            "clients": api.clients.count(),
            "peers_in": api.info.config.limits.peer_connections.saturating_sub(s.slots.peers.available_permits()),
        },
        "storage": {
            "data": store(api.replica.store().as_ref()),
            "hints": store(api.hints.store().as_ref()),
        },
        "transfers": s.transfers.line(),
    });
    if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
        d.extend(e);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_node_says_why_it_is_not_ready() {
        let doc = json(&Observer::new("node-7"));
        assert_eq!(doc["node"], "node-7");
        assert_eq!(doc["ready"], false);
        assert!(
            doc["not_ready_because"]
                .as_str()
                .unwrap()
                .contains("opening the stores")
        );
        assert!(doc.get("members").is_none());
    }

    #[test]
    fn the_page_is_self_contained() {
        // No external asset: everything comes from this port.
        for outside in ["http://", "https://", "//cdn", "<link"] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
        assert!(PAGE.contains("/status.json"));
    }
}
