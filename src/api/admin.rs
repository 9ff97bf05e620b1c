//! Cluster and node administration for clients: the text reports (NODES,
//! OWNERS, STATUS, REPLICAS), KILL, the cluster-wide stop behind the REPL's
//! QUIT, and FAULT. Presentation lives here, not in the coordinator.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Api;
use super::commands::admin::FaultCmd;
use super::resp::Frame;
use crate::cluster::NodeState;
use crate::cluster::layout::Change;
use crate::coordinator::plan;
use crate::coordinator::service::inspect;
use crate::keyspace::partition_of;
use crate::object::Object;
use crate::rpc::call::{Acked, Inspection};
use crate::rpc::{CallError, Request, ask};

/// One line per ring member: id, address, live/down (and which one is this node).
pub fn nodes_report(api: &Api) -> String {
    let view = api.coordinator.view();
    let pending = api.hints.pending();
    let me = api.coordinator.me();
    let mut out = String::new();
    for (i, m) in view.members().iter().enumerate() {
        let state = if view.is_live_at(i) { "live" } else { "down" };
        let this = if m.id == *me { " (this node)" } else { "" };
        let hints = match pending.get(&*m.id) {
            Some(&n) => format!(" ({} pending here)", crate::text::count(n as u64, "hint")),
            None => String::new(),
        };
        let _ = writeln!(out, "{} {} {state}{this}{hints}", m.id, m.addr);
    }
    out
}

/// The preference list of `key`, one numbered line per owner.
pub fn owners_report(api: &Api, key: &[u8]) -> String {
    let view = api.coordinator.view();
    let mut out = String::new();
    for (i, t) in plan::owners(&view, partition_of(key)).iter().enumerate() {
        let state = if t.live { "live" } else { "down" };
        let _ = writeln!(out, "{}) {} {} {state}", i + 1, t.node, t.addr);
    }
    out
}

/// This node's configuration and figures.
pub fn status_report(api: &Api) -> String {
    let view = api.coordinator.view();
    let c = &api.info.config;
    let n = view.n();
    let store = api.replica.store().status();
    let stats = api.coordinator.stats();
    let mut out = String::new();
    let _ = writeln!(out, "node: {} at {}", c.node_id, c.advertise);
    let _ = writeln!(out, "actor: {}", api.replica.actor().get());
    let behind = api.replica.catch_up().behind_count();
    if behind > 0 {
        let _ = writeln!(
            out,
            "restored: {behind} partitions not yet compared with a peer (their reads go to other replicas)"
        );
    }
    let _ = writeln!(out, "cluster: {}", c.cluster_id);
    if let Some(m) = c.metrics {
        let _ = writeln!(out, "metrics: http://{m}/ (/metrics, /health, /ready)");
    }
    let _ = writeln!(
        out,
        "members: {} ({} live)",
        view.members().len(),
        view.live_count()
    );
    if n < c.n {
        let _ = writeln!(
            out,
            "replication: N={} R={} W={} (N shrunk to {n}: the ring has only {} members)",
            c.n,
            c.r.min(n),
            c.w.min(n),
            view.members().len()
        );
    } else {
        let _ = writeln!(out, "replication: N={} R={} W={}", c.n, c.r, c.w);
    }
    let _ = writeln!(
        out,
        "layout: version {}{}",
        view.layout().version,
        if view.layout().migrating() {
            " (a change is under way, see RING)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "partitions: {}", crate::keyspace::PARTITIONS);
    let a = &api.aae;
    let _ = writeln!(
        out,
        "anti-entropy: every {} ms, {} exchanges, {} key digests compared, {} keys repaired",
        c.aae_interval.as_millis(),
        a.rounds.load(Ordering::Relaxed),
        a.keys_compared.load(Ordering::Relaxed),
        a.keys_repaired.load(Ordering::Relaxed)
    );
    let pending = api.hints.pending();
    let total: usize = pending.values().sum();
    let per: Vec<String> = pending.iter().map(|(o, n)| format!("{o}={n}")).collect();
    if per.is_empty() {
        let _ = writeln!(out, "hints pending: {total}");
    } else {
        let _ = writeln!(out, "hints pending: {total} ({})", per.join(", "));
    }
    let (refused, limits) = (api.hints.refused(), api.hints.limits());
    let _ = writeln!(
        out,
        "hints refused: {} ({} at --max-hints-per-node {}, {} at --max-hint-bytes {}); {} bytes of hints held",
        refused.total(),
        refused.per_node,
        limits.per_node,
        refused.bytes,
        limits.bytes,
        api.hints.bytes()
    );
    let _ = writeln!(
        out,
        "requests: {} reads, {} writes, {} failed reads, {} failed or unknown writes, {} read repairs",
        stats.reads.load(Ordering::Relaxed),
        stats.writes.load(Ordering::Relaxed),
        stats.read_failures.load(Ordering::Relaxed),
        stats.write_failures.load(Ordering::Relaxed),
        stats.read_repairs.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "digest reads: {} answered, {} read again in full (digests disagreed or no quorum)",
        stats.digest_reads.load(Ordering::Relaxed),
        stats.digest_mismatches.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "dot conflicts: {}", api.replica.conflicts());
    let _ = writeln!(out, "clock entries pruned: {}", api.replica.pruned());
    let _ = writeln!(
        out,
        "storage: {} ({} keys, {} bytes)",
        store.backend, store.keys, store.bytes
    );
    for (k, v) in &store.details {
        let _ = writeln!(out, "storage.{k}: {v}");
    }
    for (name, status) in api.workers.statuses() {
        let _ = writeln!(out, "worker.{name}: {status}");
    }
    out
}

/// What every member stores for `key`, one line each: the owners (in
/// preference order) first, then stand-ins holding hints for it.
pub async fn replicas_report(api: &Api, key: &[u8]) -> String {
    let coord = &api.coordinator;
    let view = coord.view();
    let owners: Vec<String> = plan::owners(&view, partition_of(key))
        .into_iter()
        .map(|t| t.node.to_string())
        .collect();
    let req = Request::Inspect { key: key.to_vec() };
    let timeout = coord.config().timeout;
    let asks = view.members().iter().map(|m| {
        let req = &req;
        async move {
            let answer = if m.id == *coord.me() {
                inspect(&api.replica, &api.hints, key).map_err(|e| format!("error: {e}"))
            } else {
                ask::<Inspection>(&**coord.transport(), m.addr, req, timeout)
                    .await
                    .map_err(|e| match e {
                        // The connect error alone: its own text says "unreachable" too.
                        CallError::Rpc(crate::rpc::RpcError::Connect(e)) => {
                            format!("unreachable: {e}")
                        }
                        CallError::Rpc(e) => format!("unreachable: {e}"),
                        e => format!("error: {e}"),
                    })
            };
            (m.id.to_string(), answer)
        }
    });
    let answers: BTreeMap<String, Result<Inspection, String>> =
        futures::future::join_all(asks).await.into_iter().collect();
    let now = api.replica.now_ms();
    let mut lines = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let state = if view.is_live(owner) { "live" } else { "down" };
        let what = match answers.get(owner) {
            Some(Ok(Inspection { own, .. })) => describe_object(own.as_ref(), now),
            Some(Err(e)) => e.clone(),
            _ => "no answer".into(),
        };
        lines.push(format!("{owner} (owner {}, {state}) {what}", i + 1));
    }
    for (node, answer) in &answers {
        if let Ok(Inspection { own, hints }) = answer {
            if !owners.contains(node) && own.is_some() {
                lines.push(format!(
                    "{node} (not an owner) {}",
                    describe_object(own.as_ref(), now)
                ));
            }
            for (owner, obj) in hints {
                lines.push(format!(
                    "{node} (stand-in for {owner}) {}",
                    describe_object(Some(obj), now)
                ));
            }
        }
    }
    lines.join("\n") + "\n"
}

/// One line for a stored copy: clock, then each sibling as `dot=value`.
fn describe_object(obj: Option<&Object>, now: u64) -> String {
    let Some(o) = obj else {
        return "(none)".into();
    };
    let siblings: Vec<String> = o
        .siblings
        .iter()
        .map(|s| {
            let mut v = match (&s.counter, &s.value) {
                (Some(c), _) => format!("counter {}", c.value()),
                (None, Some(v)) => crate::text::quote(v),
                (None, None) => "(deleted)".to_string(),
            };
            match s.expires_ms {
                Some(at) if at <= now => v.push_str(" (expired)"),
                Some(at) => v.push_str(&format!(" (expires in {} ms)", at - now)),
                None => {}
            }
            format!("{}:{}={v}", s.dot.actor, s.dot.counter)
        })
        .collect();
    format!("clock={} siblings=[{}]", o.clock, siblings.join(", "))
}

/// Asks `node` to stop its process.
pub async fn kill(api: &Api, node: &str) -> Result<(), String> {
    let coord = &api.coordinator;
    let addr = coord
        .view()
        .addr(node)
        .ok_or_else(|| format!("unknown node '{node}' (see NODES)"))?;
    match ask::<Acked>(
        &**coord.transport(),
        addr,
        &Request::Shutdown,
        coord.config().timeout,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e @ CallError::Rpc(_)) => Err(format!("cannot reach {node}: {e}")),
        Err(e) => Err(format!("{node} answered: {e}")),
    }
}

/// Asks every other member to stop; returns how many acknowledged, of how many.
pub async fn stop_others(api: &Api) -> (usize, usize) {
    let coord = &api.coordinator;
    let view = coord.view();
    let timeout = coord.config().timeout;
    let asks: Vec<_> = view
        .members()
        .iter()
        .filter(|m| m.id != *coord.me())
        .map(|m| async move {
            let r = ask::<Acked>(&**coord.transport(), m.addr, &Request::Shutdown, timeout).await;
            if let Err(e) = &r {
                tracing::debug!(node = %m.id, cause = %e, "not stopped (already down?)");
            }
            r.is_ok()
        })
        .collect();
    let total = asks.len();
    let stopped = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    (stopped, total)
}

/// Runs a FAULT command (only with `--fault-injection`).
pub fn fault_command(api: &Api, cmd: FaultCmd) -> Frame {
    let faults = &api.faults;
    if !faults.enabled() {
        return Frame::err("fault injection is disabled; start the node with --fault-injection");
    }
    let view = api.coordinator.view();
    let resolve = |id: &str| {
        view.addr(id)
            .ok_or_else(|| format!("unknown node '{id}' (see NODES)"))
    };
    let result: Result<(), String> = match cmd {
        FaultCmd::Partition(nodes) => nodes.iter().try_for_each(|n| {
            let a = resolve(n)?;
            faults.update(a, |r| r.partitioned = true);
            Ok(())
        }),
        FaultCmd::Delay(n, ms) => resolve(&n).map(|a| {
            faults.update(a, |r| r.delay = Duration::from_millis(ms));
        }),
        FaultCmd::Loss(n, pct) => resolve(&n).map(|a| faults.update(a, |r| r.loss_pct = pct)),
        FaultCmd::Heal => {
            faults.heal();
            Ok(())
        }
        FaultCmd::Show => {
            let mut out = String::new();
            for (addr, rule) in faults.rules() {
                let _ = writeln!(
                    out,
                    "{addr} partitioned={} delay_ms={} loss_pct={}",
                    rule.partitioned,
                    rule.delay.as_millis(),
                    rule.loss_pct
                );
            }
            return Frame::Bulk(out.into_bytes());
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(rules = ?faults.rules(), "fault rules changed");
            Frame::ok()
        }
        Err(e) => Frame::err(e),
    }
}

/// Asks the claimant (the live member with the lowest id) to make layout
/// changes. REMOVE of a node that looks live is refused unless forced.
pub async fn layout_change(api: &Api, changes: Vec<Change>, force: bool) -> Result<(), String> {
    let coord = &api.coordinator;
    let view = coord.view();
    let layout = view.layout().clone();
    if layout.version == 0 {
        return Err("the cluster is forming: no layout yet".into());
    }
    for c in &changes {
        match c {
            Change::Remove { id } if layout.state(id) == Some(NodeState::Removed) => {
                return Err(format!("{id} was already removed"));
            }
            Change::Remove { id } if layout.state(id).is_none() => {
                return Err(format!("unknown node '{id}' (see RING)"));
            }
            Change::Remove { id } if view.is_live(id) && !force => {
                return Err(format!(
                    "{id} is live: REMOVE is for a node that is dead for good; use LEAVE on it, or \
                     REMOVE {id} FORCE to drop it anyway (its copies are re-created from the others; \
                     writes it alone holds are lost)"
                ));
            }
            _ => {}
        }
    }
    let claimant = layout
        .members()
        .find(|m| view.is_live(&m.id))
        .map(|m| (m.id.clone(), m.addr))
        .ok_or("no live member to make the change")?;
    if claimant.0 == *coord.me() {
        api.layouts.queue(changes.clone())?;
        api.layouts.remember(&changes, force);
        return Ok(());
    }
    let req = Request::LayoutChange {
        changes: changes.clone(),
        force,
    };
    ask::<Acked>(
        &**coord.transport(),
        claimant.1,
        &req,
        coord.config().timeout,
    )
    .await
    .map_err(|e| match e {
        CallError::Remote(e) => e.to_string(),
        e => format!("cannot reach the claimant {}: {e}", claimant.0),
    })?;
    // Kept here until the layout shows it, whatever becomes of the claimant.
    api.layouts.remember(&changes, force);
    Ok(())
}

/// The layout: version and phase, each node with its state and share, the
/// queued changes, and this node's transfers.
pub fn ring_report(api: &Api) -> String {
    let view = api.coordinator.view();
    let layout = view.layout();
    let mut out = String::new();
    if layout.version == 0 {
        let _ = writeln!(
            out,
            "no layout yet: the cluster is forming (nodes wait {} s for their seeds)",
            crate::cluster::steward::BOOTSTRAP_WAIT.as_secs_f64()
        );
        return out;
    }
    let phase = if !layout.migrating() {
        "settled".to_string()
    } else {
        let waiting = api.layouts.waiting();
        let reads = if view.reads_previous() {
            "reads on the previous owners"
        } else {
            "reads on the new owners"
        };
        if waiting.is_empty() {
            format!("changing ({reads})")
        } else {
            format!("changing ({reads}; waiting for {waiting})")
        }
    };
    let _ = writeln!(
        out,
        "layout version {} (N={}): {phase}",
        layout.version, layout.n
    );
    let claimant = layout
        .members()
        .find(|m| view.is_live(&m.id))
        .map(|m| m.id.to_string());
    let _ = writeln!(
        out,
        "claimant: {}",
        claimant.as_deref().unwrap_or("(none live)")
    );
    let cur = &layout.current;
    let counts = cur.counts();
    let primaries = cur.primary_counts();
    let copies = (crate::keyspace::PARTITIONS * cur.n().max(1)) as f64;
    for node in &layout.nodes {
        let live = if node.state == NodeState::Removed {
            ""
        } else if view.is_live(&node.id) {
            " live"
        } else {
            " down"
        };
        let joining = layout.migrating()
            && node.state == NodeState::Member
            && layout
                .previous
                .as_ref()
                .is_some_and(|p| !p.members().contains(&node.id));
        let state = if joining {
            "joining"
        } else {
            node.state.word()
        };
        let share = match cur.members().binary_search(&node.id) {
            Ok(i) => format!(
                " {} partitions ({:.1}% of the copies), primary of {} ({:.1}% of the key space)",
                counts[i],
                100.0 * counts[i] as f64 / copies,
                primaries[i],
                100.0 * primaries[i] as f64 / crate::keyspace::PARTITIONS as f64
            ),
            Err(_) => String::new(),
        };
        let me = if *node.id == **api.coordinator.me() {
            " (this node)"
        } else {
            ""
        };
        let _ = writeln!(out, "{} {} {state}{live}{share}{me}", node.id, node.addr);
    }
    let queued = api.layouts.queued();
    if !queued.is_empty() {
        let q: Vec<String> = queued.iter().map(|c| format!("{c:?}")).collect();
        let _ = writeln!(out, "queued with this node: {}", q.join(", "));
    }
    let _ = writeln!(out, "transfers:");
    for (node, line) in api.layouts.transfers() {
        let _ = writeln!(out, "  {node}: {line}");
    }
    out
}
