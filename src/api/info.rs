//! `INFO` in Redis's format (`# Section` headers, `key:value` lines) with
//! the fields tools read (`redis_version`, `connected_clients`,
//! `used_memory`, the keyspace line, ...) and distro-db's own, and `CONFIG
//! GET` over the node's settings.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::Api;
use super::resp::Frame;
use crate::text::glob_match;

/// The Redis version distro-db answers as (the command set it follows).
pub const REDIS_VERSION: &str = "7.0.0";

/// Resident memory of this process, in bytes.
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// User and system CPU seconds of this process.
pub(crate) fn cpu_seconds() -> (f64, f64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass; it is read only if the
    // call succeeded.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return (0.0, 0.0);
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime), secs(u.ru_stime))
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}K", b / 1024.0)
    }
}

/// `INFO [section...]` (`all`, `everything` and `default` give every section).
pub fn info(api: &Api, sections: &[String]) -> String {
    let want = |s: &str| {
        sections.is_empty()
            || sections
                .iter()
                .any(|w| w == s || w == "all" || w == "everything" || w == "default")
    };
    let c = &api.info.config;
    let view = api.coordinator.view();
    let stats = api.coordinator.stats();
    let mut out = String::new();
    let uptime = api.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\ndistro_db_version:{}\r\nredis_mode:cluster\r\n\
             os:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:db\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            super::cluster::cluster_id(&c.node_id),
            c.advertise.port(),
            uptime / 86_400,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\ntracking_clients:0\r\n\r\n",
            api.clients.count(),
            c.limits.max_clients
        );
    }
    if want("memory") {
        let rss = rss_bytes();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\n\
             used_memory_rss_human:{}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n",
            human(rss),
            human(rss)
        );
    }
    if want("persistence") {
        let aof = u8::from(c.data_dir.is_some());
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:{aof}\r\ndistro_db_fsync:{}\r\n\
             rdb_changes_since_last_save:0\r\n\r\n",
            c.fsync
        );
    }
    if want("stats") {
        let a = &api.stats;
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:0\r\nexpired_keys:{}\r\nkeyspace_hits:0\r\nkeyspace_misses:0\r\n\
             distro_db_quorum_reads:{}\r\ndistro_db_quorum_writes:{}\r\ndistro_db_failed_reads:{}\r\n\
             distro_db_failed_writes:{}\r\ndistro_db_read_repairs:{}\r\ndistro_db_conflicted_reads:{}\r\n\
             distro_db_dot_conflicts:{}\r\n\r\n",
            api.clients.total.load(Ordering::Relaxed),
            a.commands.load(Ordering::Relaxed),
            api.replica.expired(),
            stats.reads.load(Ordering::Relaxed),
            stats.writes.load(Ordering::Relaxed),
            stats.read_failures.load(Ordering::Relaxed),
            stats.write_failures.load(Ordering::Relaxed),
            stats.read_repairs.load(Ordering::Relaxed),
            a.conflicted_reads.load(Ordering::Relaxed),
            api.replica.conflicts(),
        );
    }
    if want("replication") {
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\ndistro_db_n:{}\r\ndistro_db_r:{}\r\ndistro_db_w:{}\r\n\r\n",
            view.n(),
            c.r.min(view.n()),
            c.w.min(view.n())
        );
    }
    if want("cpu") {
        let (user, sys) = cpu_seconds();
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n\r\n"
        );
    }
    if want("cluster") {
        let refused = api.hints.refused();
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:1\r\ndistro_db_node:{}\r\ndistro_db_members:{}\r\n\
             distro_db_live_members:{}\r\ndistro_db_partitions:{}\r\ndistro_db_hints_pending:{}\r\n\
             distro_db_hint_bytes:{}\r\ndistro_db_hints_refused:{}\r\n\
             distro_db_hints_refused_node_cap:{}\r\ndistro_db_hints_refused_bytes_cap:{}\r\n\r\n",
            c.node_id,
            view.members().len(),
            view.live_count(),
            crate::keyspace::PARTITIONS,
            api.hints.pending().values().sum::<usize>(),
            api.hints.bytes(),
            refused.total(),
            refused.per_node,
            refused.bytes
        );
    }
    if want("keyspace") {
        let keys = api.coordinator.dbsize_estimate();
        let _ = write!(out, "# Keyspace\r\n");
        if keys > 0 {
            // Keys with a deadline on this node (an upper bound: an entry
            // stays indexed until its deadline even after PERSIST).
            let expires = api.replica.deadlines().len();
            let _ = write!(out, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    out.truncate(out.trim_end().len());
    out.push_str("\r\n");
    out
}

/// The node's settings as `CONFIG GET` shows them.
fn settings(api: &Api) -> Vec<(&'static str, String)> {
    let c = &api.info.config;
    vec![
        ("bind", c.listen.ip().to_string()),
        ("port", c.advertise.port().to_string()),
        ("databases", "1".into()),
        ("maxclients", c.limits.max_clients.to_string()),
        ("timeout", "600".into()),
        ("requirepass", String::new()),
        (
            "appendonly",
            if c.data_dir.is_some() { "yes" } else { "no" }.into(),
        ),
        (
            "appendfsync",
            match c.fsync {
                crate::storage::FsyncPolicy::Always => "always".into(),
                crate::storage::FsyncPolicy::Interval(_) => "everysec".into(),
                crate::storage::FsyncPolicy::Never => "no".into(),
            },
        ),
        ("save", String::new()),
        (
            "dir",
            c.data_dir
                .as_ref()
                .map_or(String::new(), |d| d.display().to_string()),
        ),
        ("cluster-enabled", "yes".into()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        (
            "proto-max-bulk-len",
            crate::api::resp::MAX_BULK_LEN.to_string(),
        ),
        ("distro-db-node-id", c.node_id.clone()),
        ("distro-db-n", c.n.to_string()),
        ("distro-db-r", c.r.to_string()),
        ("distro-db-w", c.w.to_string()),
        ("distro-db-fsync", c.fsync.to_string()),
        (
            "distro-db-timeout-ms",
            c.request_timeout.as_millis().to_string(),
        ),
        (
            "distro-db-aae-interval-ms",
            c.aae_interval.as_millis().to_string(),
        ),
        (
            "distro-db-sibling-reads",
            api.info.config.sibling_reads.to_string(),
        ),
    ]
}

/// `CONFIG GET pattern...`: a map of every matching setting (the password
/// is never shown).
pub fn config_get(api: &Api, patterns: &[Vec<u8>]) -> Frame {
    Frame::Map(
        settings(api)
            .into_iter()
            .filter(|(k, _)| patterns.iter().any(|p| glob_match(p, k.as_bytes())))
            .map(|(k, v)| (Frame::bulk(k), Frame::bulk(v)))
            .collect(),
    )
}
