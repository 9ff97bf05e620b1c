//! `/metrics`: every figure the node keeps, as OpenMetrics text (which
//! Prometheus scrapes), encoded by `prometheus-client` from a collector
//! that reads the node's counters at scrape time. Nothing here runs on the
//! request path. The list, with what each metric means and what to alert
//! on, is in docs/operations.md ("Metrics"); a test there keeps the two
//! in step.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::histogram::Snapshot;
use super::{Observer, Sources};

/// The `Content-Type` of the text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text of one scrape.
pub fn render(observer: &Observer) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape::take(observer)));
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        // Writing to a String cannot fail; a collector error would leave a
        // partial text, which Prometheus must not take for complete.
        return "# the metrics could not be encoded\n# EOF\n".into();
    }
    out
}

/// Labels of one series.
type Labels = Vec<(&'static str, String)>;

/// One metric: name, help, and its series.
#[derive(Debug)]
struct Metric {
    name: &'static str,
    help: &'static str,
    value: Value,
}

#[derive(Debug)]
enum Value {
    Counter(Vec<(Labels, u64)>),
    /// A counter of fractional seconds.
    Seconds(Vec<(Labels, f64)>),
    Gauge(Vec<(Labels, f64)>),
    Histogram(Vec<(Labels, Snapshot)>),
}

/// The figures of one scrape, read from the node before encoding.
#[derive(Debug)]
struct Scrape(Vec<Metric>);

fn counter(name: &'static str, help: &'static str, v: u64) -> Metric {
    Metric {
        name,
        help,
        value: Value::Counter(vec![(Vec::new(), v)]),
    }
}

fn gauge(name: &'static str, help: &'static str, v: f64) -> Metric {
    Metric {
        name,
        help,
        value: Value::Gauge(vec![(Vec::new(), v)]),
    }
}

fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

impl Scrape {
    fn take(o: &Observer) -> Scrape {
        let (user, sys) = crate::api::info::cpu_seconds();
        let ready = o.readiness().is_ok();
        let mut m = vec![
            Metric {
                name: "distro_db_info",
                help: "Always 1; the labels name the node and its version.",
                value: Value::Gauge(vec![(
                    vec![
                        ("node", o.node_id().to_string()),
                        ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ],
                    1.0,
                )]),
            },
            gauge(
                "distro_db_ready",
                "1 when /ready answers 200 (stores open, ring known, member of it).",
                f64::from(u8::from(ready)),
            ),
            gauge(
                "distro_db_uptime_seconds",
                "Seconds since the node started.",
                o.uptime(),
            ),
            gauge(
                "process_resident_memory_bytes",
                "Resident memory of the node process.",
                crate::api::info::rss_bytes() as f64,
            ),
            Metric {
                name: "process_cpu_seconds",
                help: "User and system CPU time of the node process.",
                value: Value::Seconds(vec![(Vec::new(), user + sys)]),
            },
        ];
        if let Some(s) = o.sources() {
            node_metrics(s, &mut m);
        }
        Scrape(m)
    }
}

/// The figures of a running node.
fn node_metrics(s: &Sources, m: &mut Vec<Metric>) {
    let api = &s.api;
    let relaxed = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

    // Client requests.
    let mut requests = Vec::new();
    for c in api.stats.requests.counts() {
        for (outcome, n) in [("ok", c.ok), ("error", c.error)] {
            if n > 0 {
                requests.push((
                    vec![
                        ("command", c.command.to_string()),
                        ("outcome", outcome.into()),
                    ],
                    n,
                ));
            }
        }
    }
    m.push(Metric {
        name: "distro_db_requests",
        help: "Client commands answered, by command (the command table's name) and outcome (ok, error).",
        value: Value::Counter(requests),
    });
    m.push(counter(
        "distro_db_client_connections_accepted",
        "Client connections accepted since start.",
        relaxed(&api.clients.total),
    ));
    m.push(gauge(
        "distro_db_client_connections",
        "Client connections open.",
        api.clients.count() as f64,
    ));
    let limits = &api.info.config.limits;
    m.push(gauge(
        "distro_db_client_connections_limit",
        "Client connections accepted at once (--max-clients).",
        limits.max_clients as f64,
    ));
    m.push(gauge(
        "distro_db_peer_connections",
        "Peer connections other nodes opened to this one, open now.",
        limits
            .peer_connections
            .saturating_sub(s.slots.peers.available_permits()) as f64,
    ));
    m.push(gauge(
        "distro_db_request_memory_bytes",
        "Bytes of requests being read or served, node-wide (taken from the request-memory budget).",
        s.budget.total().saturating_sub(s.budget.available()) as f64,
    ));
    m.push(gauge(
        "distro_db_request_memory_limit_bytes",
        "The request-memory budget (--request-memory-mb).",
        s.budget.total() as f64,
    ));

    // The coordinator.
    let st = api.coordinator.stats();
    m.push(Metric {
        name: "distro_db_coordinator_duration_seconds",
        help: "Time of the quorum reads (op=read: GET and every read) and writes (op=write: SET, DEL and every write) this node coordinated, failed ones included.",
        value: Value::Histogram(vec![
            (label("op", "read"), st.read_latency.snapshot()),
            (label("op", "write"), st.write_latency.snapshot()),
        ]),
    });
    m.push(counter(
        "distro_db_quorum_reads",
        "Quorum reads that met R.",
        relaxed(&st.reads),
    ));
    m.push(counter(
        "distro_db_quorum_writes",
        "Quorum writes acknowledged by W replicas.",
        relaxed(&st.writes),
    ));
    m.push(Metric {
        name: "distro_db_quorum_failures",
        help: "Reads and writes that missed their quorum, by op and by the most common reason among the replicas that failed.",
        value: Value::Counter(
            st.quorum_failures()
                .into_iter()
                .map(|(op, reason, n)| {
                    (
                        vec![("op", op.to_string()), ("reason", reason.to_string())],
                        n,
                    )
                })
                .collect(),
        ),
    });
    m.push(counter(
        "distro_db_stand_in_writes",
        "Writes made by this node as a stand-in because no owner of the key was reachable.",
        relaxed(&st.stand_in_writes),
    ));
    m.push(counter(
        "distro_db_read_repairs",
        "Copies sent to replicas by read repair.",
        relaxed(&st.read_repairs),
    ));
    m.push(counter(
        "distro_db_sibling_conflicts",
        "Plain reads that found a key holding concurrent values (siblings).",
        relaxed(&api.stats.conflicted_reads),
    ));
    m.push(counter(
        "distro_db_dot_conflicts",
        "Writes this replica received whose dot it already held with another value.",
        api.replica.conflicts(),
    ));
    m.push(counter(
        "distro_db_expired_keys",
        "Keys whose time to live ran out on this replica.",
        api.replica.expired(),
    ));

    // Hints.
    let pending = api.hints.pending();
    m.push(gauge(
        "distro_db_hints_pending",
        "Hints this node holds for other nodes.",
        pending.values().sum::<usize>() as f64,
    ));
    m.push(Metric {
        name: "distro_db_hints_pending_by_owner",
        help: "Hints this node holds, by the node they are for.",
        value: Value::Gauge(
            pending
                .into_iter()
                .map(|(owner, n)| (label("owner", owner), n as f64))
                .collect(),
        ),
    });
    m.push(gauge(
        "distro_db_hint_bytes",
        "Bytes of hinted objects held.",
        api.hints.bytes() as f64,
    ));
    m.push(counter(
        "distro_db_hints_delivered",
        "Hints delivered to their owner (or, for an owner that left, to the key's owners) and removed.",
        api.hints.delivered(),
    ));
    let refused = api.hints.refused();
    m.push(Metric {
        name: "distro_db_hints_refused",
        help: "Hints not kept because a cap was reached (cap=node: --max-hints-per-node, cap=bytes: --max-hint-bytes).",
        value: Value::Counter(vec![
            (label("cap", "node"), refused.per_node),
            (label("cap", "bytes"), refused.bytes),
        ]),
    });

    // Anti-entropy and tombstone collection.
    m.push(counter(
        "distro_db_anti_entropy_exchanges",
        "Anti-entropy exchanges completed with a peer.",
        relaxed(&api.aae.rounds),
    ));
    m.push(counter(
        "distro_db_anti_entropy_keys_compared",
        "Key digests compared by anti-entropy.",
        relaxed(&api.aae.keys_compared),
    ));
    m.push(counter(
        "distro_db_anti_entropy_keys_repaired",
        "Keys anti-entropy found different and synced.",
        relaxed(&api.aae.keys_repaired),
    ));
    m.push(counter(
        "distro_db_tombstones_collected",
        "Tombstones deleted on every member by the collector.",
        relaxed(&s.gc.collected),
    ));

    // Storage: the data store and the hint store.
    for (store, which) in [(api.replica.store(), "data"), (api.hints.store(), "hints")] {
        storage_metrics(store.as_ref(), which, m);
    }

    // The cluster.
    let view = api.coordinator.view();
    let live = view.live_count();
    m.push(Metric {
        name: "distro_db_members",
        help: "Members of the ring, by state as this node sees them (live, down).",
        value: Value::Gauge(vec![
            (label("state", "live"), live as f64),
            (
                label("state", "down"),
                view.members().len().saturating_sub(live) as f64,
            ),
        ]),
    });
    let layout = view.layout();
    m.push(gauge(
        "distro_db_layout_version",
        "Version of the layout this node follows (0: none yet).",
        layout.version as f64,
    ));
    m.push(gauge(
        "distro_db_layout_changing",
        "1 while a layout change is being carried out (partitions move).",
        f64::from(u8::from(layout.migrating())),
    ));
    let me = api.coordinator.me();
    let cur = &layout.current;
    let (owned, primary) = match cur.members().iter().position(|x| x == me) {
        Some(i) => (cur.counts()[i], cur.primary_counts()[i]),
        None => (0, 0),
    };
    m.push(gauge(
        "distro_db_partitions",
        "Partitions of the key space.",
        crate::keyspace::PARTITIONS as f64,
    ));
    m.push(gauge(
        "distro_db_partitions_owned",
        "Partitions this node holds a replica of in the current layout.",
        owned as f64,
    ));
    m.push(gauge(
        "distro_db_partitions_primary",
        "Partitions this node is the first owner of.",
        primary as f64,
    ));

    // Transfers after layout changes.
    let t = &s.transfers;
    m.push(gauge(
        "distro_db_transfer_partitions",
        "Partitions to pull for the layout change under way.",
        relaxed(&t.partitions) as f64,
    ));
    m.push(gauge(
        "distro_db_transfer_partitions_done",
        "Partitions of the layout change under way held so far.",
        relaxed(&t.done) as f64,
    ));
    m.push(counter(
        "distro_db_transfer_partitions_pulled",
        "Partitions pulled from other nodes after layout changes.",
        relaxed(&t.pulled),
    ));
    m.push(counter(
        "distro_db_transfer_keys",
        "Keys received by partition transfers.",
        relaxed(&t.keys),
    ));
    m.push(counter(
        "distro_db_transfer_bytes",
        "Bytes received by partition transfers.",
        relaxed(&t.bytes),
    ));
    m.push(counter(
        "distro_db_transfer_keys_dropped",
        "Keys dropped here after a change moved their partition away.",
        relaxed(&t.dropped),
    ));
}

/// The figures of one store.
fn storage_metrics(store: &dyn crate::storage::Store, which: &'static str, m: &mut Vec<Metric>) {
    let status = store.status();
    let detail = |k: &str| {
        status
            .detail(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let l = || label("store", which);
    let gauges: [(&'static str, &'static str, f64); 5] = [
        (
            "distro_db_storage_keys",
            "Live keys in the store.",
            status.keys as f64,
        ),
        (
            "distro_db_storage_bytes",
            "Bytes the store holds (on disk for the log, in memory otherwise).",
            status.bytes as f64,
        ),
        (
            "distro_db_storage_dead_bytes",
            "Bytes on disk held by superseded or deleted records (compaction reclaims them).",
            status.dead_bytes as f64,
        ),
        (
            "distro_db_storage_segments",
            "Log segment files.",
            status.segments as f64,
        ),
        (
            "distro_db_storage_poisoned",
            "1 once an fsync failed: the store refuses writes until the node restarts.",
            f64::from(u8::from(status.poisoned())),
        ),
    ];
    for (name, help, v) in gauges {
        m.push(Metric {
            name,
            help,
            value: Value::Gauge(vec![(l(), v)]),
        });
    }
    let counters: [(&'static str, &'static str, u64); 4] = [
        (
            "distro_db_storage_appends",
            "Records appended to the log since open.",
            detail("appends"),
        ),
        (
            "distro_db_compactions",
            "Segments compacted since open.",
            detail("compactions"),
        ),
        (
            "distro_db_compaction_reclaimed_bytes",
            "Bytes freed by compaction since open.",
            status.reclaimed_bytes,
        ),
        (
            "distro_db_fsyncs",
            "Syncs made by the group commit since open.",
            detail("syncs"),
        ),
    ];
    for (name, help, v) in counters {
        m.push(Metric {
            name,
            help,
            value: Value::Counter(vec![(l(), v)]),
        });
    }
    if let Some(h) = store.sync_histograms() {
        m.push(Metric {
            name: "distro_db_fsync_duration_seconds",
            help: "Time of each group-commit fsync.",
            value: Value::Histogram(vec![(l(), h.fsync_seconds)]),
        });
        m.push(Metric {
            name: "distro_db_group_commit_batch_size",
            help: "Writes that waited for each group-commit fsync (its batch).",
            value: Value::Histogram(vec![(l(), h.batch)]),
        });
    }
}

/// Metrics of the same name (the two stores) are one family: merged so
/// that each name is described once, as OpenMetrics requires.
fn merged(metrics: &[Metric]) -> Vec<(&'static str, &'static str, Vec<&Value>)> {
    let mut out: Vec<(&'static str, &'static str, Vec<&Value>)> = Vec::new();
    for m in metrics {
        match out.iter_mut().find(|(n, _, _)| *n == m.name) {
            Some((_, _, values)) => values.push(&m.value),
            None => out.push((m.name, m.help, vec![&m.value])),
        }
    }
    out
}

/// Encodes one series of a family (an empty label set writes no braces).
fn series(
    family: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &Labels,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(family.encode_family(labels)?)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, values) in merged(&self.0) {
            let kind = match values[0] {
                Value::Counter(_) | Value::Seconds(_) => MetricType::Counter,
                Value::Gauge(_) => MetricType::Gauge,
                Value::Histogram(_) => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for value in values {
                match value {
                    Value::Counter(all) => {
                        for (labels, v) in all {
                            series(&mut family, labels, &ConstCounter::new(*v))?;
                        }
                    }
                    Value::Seconds(all) => {
                        for (labels, v) in all {
                            series(&mut family, labels, &ConstCounter::new(*v))?;
                        }
                    }
                    Value::Gauge(all) => {
                        for (labels, v) in all {
                            // Whole values (most of them) print as integers.
                            if v.fract() == 0.0 && v.abs() < 9e15 {
                                series(&mut family, labels, &ConstGauge::new(*v as i64))?;
                            } else {
                                series(&mut family, labels, &ConstGauge::new(*v))?;
                            }
                        }
                    }
                    Value::Histogram(all) => {
                        for (labels, h) in all {
                            family
                                .encode_family(labels)?
                                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_still_opening_its_stores_has_process_metrics_and_is_not_ready() {
        let o = Observer::new("node-1");
        let text = render(&o);
        assert!(text.contains("distro_db_ready 0\n"), "{text}");
        assert!(text.contains("distro_db_info{node=\"node-1\""), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
