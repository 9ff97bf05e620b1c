#!/usr/bin/env bash
# benches/compare.sh: distro-db side by side with Redis and etcd, on loopback.
#
# Measures, in interleaved rounds (each round starts every system afresh,
# in a rotated order): distro-db (3 nodes, N=3 R=2 W=2) durable and in
# memory (each node --threads 1, as `db local`, `db slave` and `db master`
# start nodes), durable with `db node`'s default --threads (one runtime
# worker per core), the same for a second distro-db binary (--db2,
# for before/after figures), redis-server without persistence and with
# appendfsync always, a replicated Redis (primary + 2 replicas, all
# appendfsync always, each write SET + WAITAOF 1 1 0: Valkey >= 7.2 or
# Redis >= 7.2), and a 3-member etcd cluster. Workloads: SET, GET (after a
# fill), 90/10 mix with 50 clients and 100-byte values over 100k keys; for
# the RESP systems also -P 16 and a 1-client latency run, each through
# redis-benchmark and through db-bench; for distro-db also the load spread
# over the 3 nodes and a cluster-mode client (db-bench --cluster: distro-db's
# one-shard view sends it all to one node); redis-cli --pipe of 100k SETs.
# For every run: throughput,
# p50/p99 and the servers' CPU time per request (utime+stime of every server
# process, from /proc/PID/stat, before and after the run). Also TIME-WAIT
# sockets after the distro-db runs and resident memory per key.
# Writes a markdown report (medians over rounds, same-round ratios) and a PNG.
#
# Every server is a child process on 127.0.0.1, ports 17000-18999 (below the
# 20000-32000 the multi-process tests draw from), stopped by PID on exit;
# every wait has a deadline; every run has a timeout.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: benches/compare.sh [options]

  --rounds N         interleaved rounds; figures are medians (default 3)
  --requests N       requests per run with 50 clients (default 50000; 1-client runs: N/10)
  --keyspace N       distinct keys of the runs (default 100000)
  --pipe-keys N      SETs in the redis-cli --pipe file (default 100000)
  --keys-for-rss N   keys loaded for the memory-per-key figures (default 1000000; 0: skip)
  --db PATH          distro-db binary to measure (alias --db-bin; default: target/release/db,
                     built if missing)
  --db2 PATH         a second distro-db binary measured in the same rounds, interleaved
                     (alias --db2-bin): systems ddb2-durable, ddb2-mem, ddb2-default. With
                     --db2 and no --systems: ddb-durable,ddb2-durable,ddb-default,ddb2-default
  --bench-bin PATH   the db-bench load generator (default: target/release/db-bench of this
                     checkout, built if missing); the same one drives every system
  --repl-server PATH server of the replicated Redis (default: valkey-server, else a
                     redis-server >= 7.2; installed from Debian (backports) if missing)
  --secs S           every db-bench run lasts S seconds instead of a request count
                     (redis-benchmark and --pipe runs keep theirs, under the same cap)
  --systems LIST     comma-separated subset of ddb-durable,ddb-mem,ddb-default,
                     ddb2-durable,ddb2-mem,ddb2-default,redis,redis-aof,redis-repl,etcd
                     (default: ddb-durable,ddb-mem,ddb-default,redis,redis-aof,redis-repl,etcd)
  --quick            smoke run of a few minutes: 1 round, 2000 requests, 5000 keys,
                     output under target/compare-quick/ unless --out/--png say otherwise
  --out FILE         markdown report (default docs/benchmarks-compare.md)
  --png DIR          directory of the chart, named after the report (default docs/img)
  -h, --help         this text
EOF
}

ROUNDS=3
REQUESTS=50000
KEYSPACE=100000
PIPE_KEYS=100000
KEYS_RSS=1000000
DB_BIN=""
DB2_BIN=""
BENCH_BIN=""
REPL_SERVER=""
SECS=""
SYSTEMS=""
QUICK=0
OUT=""
PNG_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --requests) REQUESTS="$2"; shift 2 ;;
    --keyspace) KEYSPACE="$2"; shift 2 ;;
    --pipe-keys) PIPE_KEYS="$2"; shift 2 ;;
    --keys-for-rss) KEYS_RSS="$2"; shift 2 ;;
    --db-bin|--db) DB_BIN="$2"; shift 2 ;;
    --db2-bin|--db2) DB2_BIN="$2"; shift 2 ;;
    --bench-bin) BENCH_BIN="$2"; shift 2 ;;
    --repl-server) REPL_SERVER="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --png) PNG_DIR="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in ROUNDS REQUESTS KEYSPACE PIPE_KEYS KEYS_RSS; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then echo "--${v,,} must be a whole number" >&2; exit 2; fi
done
if [ -n "$SECS" ] && ! [[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 1 && "$SECS" -le 600 ]]; then
  echo "--secs must be a whole number of seconds from 1 to 600" >&2; exit 2
fi
if [ -z "$SYSTEMS" ]; then
  if [ -n "$DB2_BIN" ]; then SYSTEMS="ddb-durable,ddb2-durable,ddb-default,ddb2-default"
  else SYSTEMS="ddb-durable,ddb-mem,ddb-default,redis,redis-aof,redis-repl,etcd"; fi
fi
for s in ${SYSTEMS//,/ }; do
  case "$s" in
    ddb-durable|ddb-mem|ddb-default|redis|redis-aof|redis-repl|etcd) ;;
    ddb2-durable|ddb2-mem|ddb2-default) [ -n "$DB2_BIN" ] || { echo "system $s needs --db2 PATH" >&2; exit 2; } ;;
    *) echo "unknown system in --systems: $s" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 1
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
if [ "$QUICK" = 1 ]; then
  ROUNDS=1; REQUESTS=2000; KEYSPACE=5000; PIPE_KEYS=2000
  [ "$KEYS_RSS" -gt 20000 ] && KEYS_RSS=20000
  OUT="${OUT:-$TARGET_DIR/compare-quick/benchmarks-compare.md}"
  PNG_DIR="${PNG_DIR:-$TARGET_DIR/compare-quick/img}"
fi
OUT="${OUT:-docs/benchmarks-compare.md}"
PNG_DIR="${PNG_DIR:-docs/img}"
[ "$ROUNDS" -ge 1 ] || { echo "--rounds must be at least 1" >&2; exit 2; }
[ "$REQUESTS" -ge 10 ] || { echo "--requests must be at least 10" >&2; exit 2; }
C1_REQUESTS=$(( REQUESTS / 10 )); [ "$C1_REQUESTS" -ge 100 ] || C1_REQUESTS=100
CLIENTS=50
VALUE=100
# A run is cut at this many seconds (db-bench --duration) or killed a minute later.
RUN_CAP=180
[ "$QUICK" = 1 ] && RUN_CAP=30
[ -n "$SECS" ] && RUN_CAP=$SECS

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
want() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

# ---------------------------------------------------------------------------
# Tools and binaries.

NOTES=()   # lines for the report: skipped systems, failures
have() { command -v "$1" >/dev/null 2>&1; }
need_etcd=0; want etcd && need_etcd=1
if ! have redis-server || ! have redis-benchmark || ! have redis-cli || { [ "$need_etcd" = 1 ] && { ! have etcd || ! have etcdctl; }; }; then
  log "installing redis-server, redis-tools, etcd-server, etcd-client (apt-get)"
  if ! (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
        apt-get install -y -qq redis-server redis-tools etcd-server etcd-client) >"${TMPDIR:-/tmp}/compare-apt.log" 2>&1; then
    log "WARNING: apt-get could not install them (see ${TMPDIR:-/tmp}/compare-apt.log); missing systems are skipped"
  fi
fi
HAVE_RB=1; have redis-benchmark || HAVE_RB=0
if ! have redis-cli; then
  echo "redis-cli is required (to wait for nodes and for --pipe) and could not be installed" >&2
  exit 1
fi
if ! have redis-server; then
  for s in redis redis-aof; do want $s && NOTES+=("$s skipped: redis-server is not installed and could not be installed"); done
  SYSTEMS=$(echo ",$SYSTEMS," | sed -e 's/,redis-aof,/,/' -e 's/,redis,/,/' -e 's/^,//' -e 's/,$//')
fi
if ! have etcd || ! have etcdctl; then
  want etcd && NOTES+=("etcd skipped: etcd/etcdctl are not installed and could not be installed")
  SYSTEMS=$(echo ",$SYSTEMS," | sed -e 's/,etcd,/,/' -e 's/^,//' -e 's/,$//')
fi
[ "$HAVE_RB" = 1 ] || NOTES+=("redis-benchmark is not installed: only db bench figures")

# The replicated Redis needs WAITAOF (Redis >= 7.2): Debian bookworm's
# redis-server is 7.0, so Valkey (a fork of Redis 7.2 with WAITAOF) from
# Debian: in main from trixie on, in bookworm-backports before.
server_version_ok() { # binary: true when its version is >= 7.2
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.* v=\([0-9]*\.[0-9]*\).*/\1/p' | head -1)
  [ -n "$v" ] && python3 -c "import sys; a, b = map(int, sys.argv[1].split('.')); sys.exit(0 if (a, b) >= (7, 2) else 1)" "$v"
}
find_repl_server() {
  local c
  for c in "${REPL_SERVER:-}" valkey-server redis-server; do
    [ -n "$c" ] && have "$c" && server_version_ok "$c" && { command -v "$c"; return 0; }
  done
  return 1
}
if want redis-repl; then
  if [ -n "$REPL_SERVER" ] && ! { have "$REPL_SERVER" && server_version_ok "$REPL_SERVER"; }; then
    echo "--repl-server $REPL_SERVER: not a runnable Redis or Valkey >= 7.2 (WAITAOF)" >&2; exit 1
  fi
  if ! find_repl_server >/dev/null; then
    log "installing valkey-server (Debian; bookworm-backports on bookworm) for the replicated Redis"
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    {
      timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq valkey-server
    } >"${TMPDIR:-/tmp}/compare-apt-valkey.log" 2>&1 || {
      [ -n "$codename" ] && echo "deb http://deb.debian.org/debian $codename-backports main" \
        >"/etc/apt/sources.list.d/$codename-backports.list" \
      && timeout 600 apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq -t "$codename-backports" valkey-server
    } >>"${TMPDIR:-/tmp}/compare-apt-valkey.log" 2>&1
  fi
  REPL_SERVER=$(find_repl_server) || {
    echo "the replicated Redis (redis-repl) needs valkey-server or redis-server >= 7.2 (WAITAOF), and neither" >&2
    echo "is installed nor could be (see ${TMPDIR:-/tmp}/compare-apt-valkey.log); pass --repl-server PATH," >&2
    echo "or leave redis-repl out of --systems" >&2
    exit 1
  }
fi

build_release() { # package
  log "building $1 (cargo build --release -p $1)"
  cargo build --release --quiet -p "$1" || { echo "cargo build --release -p $1 failed" >&2; exit 1; }
}
if [ -z "$DB_BIN" ]; then
  DB_BIN="$TARGET_DIR/release/db"
  [ -x "$DB_BIN" ] || build_release distro-db
fi
[ -x "$DB_BIN" ] || { echo "no distro-db binary at $DB_BIN" >&2; exit 1; }
if [ -n "$DB2_BIN" ] && [ ! -x "$DB2_BIN" ]; then echo "no distro-db binary at $DB2_BIN (--db2)" >&2; exit 1; fi
if [ -z "$BENCH_BIN" ]; then
  BENCH_BIN="$TARGET_DIR/release/db-bench"
  [ -x "$BENCH_BIN" ] || build_release distro-db-bench
fi
"$BENCH_BIN" --help 2>/dev/null | grep -q -- '--wait-aof' \
  || { echo "$BENCH_BIN is not db-bench (benches/loadgen; cargo build --release -p distro-db-bench)" >&2; exit 1; }
have python3 || { echo "python3 is required (JSON parsing and the report)" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Processes, clean-up, measurements.

TMP="$(mktemp -d "${TMPDIR:-/tmp}/distro-db-compare.XXXXXX")"
mkdir -p "$TMP/logs" "$TMP/json" "$TMP/data"
ALL_PIDS=()
SYS_PIDS=()
CHILD=""   # the load tool running now, if any

# Runs "$@" under a timeout of $1 seconds, in the background so that a signal
# reaches this script's trap at once; stdin from $IN_FILE when set.
bounded() {
  local secs=$1; shift
  if [ -n "${IN_FILE:-}" ]; then
    timeout -k 5 "$secs" "$@" <"$IN_FILE" &
  else
    timeout -k 5 "$secs" "$@" </dev/null &
  fi
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=""
  return $rc
}

stop_pids() {
  local pid i
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "$@"; do
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
}
cleanup() {
  local live=() pid
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null
  for pid in "${ALL_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && live+=("$pid"); done
  [ ${#live[@]} -gt 0 ] && stop_pids "${live[@]}"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

CLK_TCK=$(getconf CLK_TCK)
# utime+stime (fields 14 and 15 of /proc/PID/stat) of the given processes, in ticks.
cpu_ticks() {
  local total=0 pid line rest
  for pid in "$@"; do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    total=$(( total + ${12} + ${13} ))
  done
  echo "$total"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }

RESULTS="$TMP/results.tsv"
printf 'round\tsystem\ttool\tworkload\trequests\telapsed_s\trps\tp50_ms\tp99_ms\tcpu_us_per_req\terrors\tnote\n' >"$RESULTS"
TIMEWAIT="$TMP/timewait.tsv"; printf 'round\tsystem\tall\tsystem_ports\n' >"$TIMEWAIT"
RSS="$TMP/rss.tsv"; printf 'system\tprocess\trss_before_kb\trss_after_kb\tkeys\n' >"$RSS"

# ---------------------------------------------------------------------------
# Systems. Each start_* sets SYS_PIDS, PORT (where clients go), PORT_LO/PORT_HI.

wait_until() { # deadline_seconds command...
  local deadline=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$deadline" ]; do "$@" && return 0; sleep 0.2; done
  return 1
}
ddb_ready() {
  local p n
  for p in "$@"; do
    n=$(timeout 2 redis-cli -p "$p" NODES 2>/dev/null | grep -c ' live') || return 1
    [ "$n" = 3 ] || return 1
  done
}
# The three nodes share this machine with each other and the load: for the
# ddb-durable and ddb-mem systems, when the binary has it, each runs on one
# runtime thread (--threads 1), as redis-server does and as `db local`,
# `db slave` and `db master` start nodes; ddb-default runs with `db node`'s
# default --threads (one worker per core, meant for a node with a machine
# of its own).
start_ddb() { # bin durable|mem|default base_port
  local bin=$1 kind=$2 base=$3 i dir seeds=() ports=() id flags=()
  id="bench-$RANDOM$RANDOM"
  if [ "$kind" != default ] && "$bin" node --help 2>/dev/null | grep -q -- '--threads'; then
    flags=(--threads 1)
  fi
  for i in 1 2 3; do ports+=($(( base + i ))); seeds+=(--seed "127.0.0.1:$(( base + i ))"); done
  SYS_PIDS=()
  for i in 0 1 2; do
    local args=(node --listen "127.0.0.1:${ports[$i]}" "${seeds[@]}" --cluster-id "$id" --n 3 --r 2 --w 2 "${flags[@]}")
    if [ "$kind" != mem ]; then
      dir="$TMP/data/ddb-$base-$i"; mkdir -p "$dir"; args+=(--data-dir "$dir" --fsync always)
    fi
    "$bin" "${args[@]}" >"$TMP/logs/ddb-$kind-${ports[$i]}.log" 2>&1 &
    SYS_PIDS+=($!); ALL_PIDS+=($!)
  done
  PORT=${ports[0]}; PORT_LO=${ports[0]}; PORT_HI=${ports[2]}
  ALL_TARGETS="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  wait_until 30 ddb_ready "${ports[@]}"
}
redis_ready() { [ "$(timeout 2 redis-cli -p "$1" PING 2>/dev/null)" = PONG ]; }
start_redis() { # none|always port
  local mode=$1 port=$2 dir="$TMP/data/redis-$2"
  mkdir -p "$dir"
  local args=(--port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --daemonize no --protected-mode no)
  if [ "$mode" = always ]; then args+=(--appendonly yes --appendfsync always); else args+=(--appendonly no); fi
  redis-server "${args[@]}" >"$TMP/logs/redis-$port.log" 2>&1 &
  SYS_PIDS=($!); ALL_PIDS+=($!)
  PORT=$port; PORT_LO=$port; PORT_HI=$port
  wait_until 20 redis_ready "$port"
}
# A primary and two replicas, each `appendonly yes` + `appendfsync always`.
repl_ready() { # primary replica replica
  local info
  info=$(timeout 2 redis-cli -p "$1" INFO replication 2>/dev/null) || return 1
  [[ "$info" == *"connected_slaves:2"* ]] || return 1
  for p in "$2" "$3"; do
    [[ "$(timeout 2 redis-cli -p "$p" INFO replication 2>/dev/null)" == *"master_link_status:up"* ]] || return 1
  done
}
start_redis_repl() { # base_port: primary base, replicas base+1, base+2
  local base=$1 i port dir
  SYS_PIDS=()
  for i in 0 1 2; do
    port=$(( base + i )); dir="$TMP/data/repl-$port"; mkdir -p "$dir"
    local args=(--port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --daemonize no --protected-mode no
                --appendonly yes --appendfsync always)
    [ "$i" -gt 0 ] && args+=(--replicaof 127.0.0.1 "$base")
    "$REPL_SERVER" "${args[@]}" >"$TMP/logs/repl-$port.log" 2>&1 &
    SYS_PIDS+=($!); ALL_PIDS+=($!)
  done
  PORT=$base; PORT_LO=$base; PORT_HI=$(( base + 2 ))
  wait_until 30 repl_ready "$base" $(( base + 1 )) $(( base + 2 ))
}
etcd_ready() { ETCDCTL_API=3 timeout 5 etcdctl --command-timeout=2s --endpoints="$1" endpoint health >/dev/null 2>&1; }
start_etcd() { # base_port: clients base+1..3, peers base+11..13
  local base=$1 i cluster="" endpoints="" token="bench-$RANDOM$RANDOM"
  for i in 1 2 3; do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$(( base + 10 + i ))"
    endpoints+="${endpoints:+,}127.0.0.1:$(( base + i ))"
  done
  SYS_PIDS=()
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$TMP/data/etcd-$base-$i" \
      --listen-client-urls "http://127.0.0.1:$(( base + i ))" --advertise-client-urls "http://127.0.0.1:$(( base + i ))" \
      --listen-peer-urls "http://127.0.0.1:$(( base + 10 + i ))" --initial-advertise-peer-urls "http://127.0.0.1:$(( base + 10 + i ))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$token" \
      --logger zap --log-outputs stderr >"$TMP/logs/etcd-$base-$i.log" 2>&1 &
    SYS_PIDS+=($!); ALL_PIDS+=($!)
  done
  PORT=$(( base + 1 )); PORT_LO=$(( base + 1 )); PORT_HI=$(( base + 13 ))
  wait_until 60 etcd_ready "$endpoints"
}
# True when no TCP or UDP socket uses a port in lo..hi.
ports_free() { [ "$(ss -Htuan "( sport >= :$1 and sport <= :$2 )" 2>/dev/null | wc -l)" = 0 ]; }
start_system() { # system round: each system and round has its own ports;
  # a range in use by something else is skipped (bounded: 4 tries).
  local r=$2 try base lo hi
  for try in 0 1 2 3; do
    case "$1" in
      ddb-durable|ddb-mem|ddb-default|ddb2-durable|ddb2-mem|ddb2-default)
        local k
        case "$1" in
          ddb-durable) k=0 ;; ddb-mem) k=1 ;; ddb-default) k=2 ;;
          ddb2-durable) k=3 ;; ddb2-mem) k=4 ;; ddb2-default) k=5 ;;
        esac
        base=$(( 17000 + 40 * r + 5 * k + 500 * try )); lo=$(( base + 1 )); hi=$(( base + 3 )) ;;
      redis-repl) base=$(( 18800 + 4 * r + 40 * try )); lo=$base; hi=$(( base + 2 )) ;;
      redis) base=$(( 18600 + 2 * r + 40 * try )); lo=$base; hi=$base ;;
      redis-aof) base=$(( 18601 + 2 * r + 40 * try )); lo=$base; hi=$base ;;
      etcd) base=$(( 18000 + 20 * r + 100 * try )); lo=$(( base + 1 )); hi=$(( base + 13 )) ;;
    esac
    ports_free "$lo" "$hi" && break
    log "  ports $lo-$hi are in use; trying others"
  done
  case "$1" in
    ddb-durable) start_ddb "$DB_BIN" durable "$base" ;;
    ddb-mem) start_ddb "$DB_BIN" mem "$base" ;;
    ddb-default) start_ddb "$DB_BIN" default "$base" ;;
    ddb2-durable) start_ddb "$DB2_BIN" durable "$base" ;;
    ddb2-mem) start_ddb "$DB2_BIN" mem "$base" ;;
    ddb2-default) start_ddb "$DB2_BIN" default "$base" ;;
    redis-repl) start_redis_repl "$base" ;;
    redis) start_redis none "$base" ;;
    redis-aof) start_redis always "$base" ;;
    etcd) start_etcd "$base" ;;
  esac
}
stop_system() { stop_pids "${SYS_PIDS[@]}"; SYS_PIDS=(); }

# ---------------------------------------------------------------------------
# Runs. Each appends one line to $RESULTS.

record() { # round system tool workload requests elapsed rps p50 p99 ticks errors note
  local cpu="nan"
  if [ "$5" -gt 0 ] 2>/dev/null; then
    cpu=$(python3 -c "print(round(${10} * 1e6 / $CLK_TCK / $5, 2))")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "$cpu" "${11}" "${12}" >>"$RESULTS"
}

run_rb() { # round system workload(set|get) label clients requests [extra...]
  local r=$1 sys=$2 w=$3 label=$4 c=$5 n=$6; shift 6
  [ "$HAVE_RB" = 1 ] || return 0
  local out="$TMP/logs/rb-$r-$sys-$label.txt" t0 t1 line
  t0=$(cpu_ticks "${SYS_PIDS[@]}")
  bounded $(( RUN_CAP + 60 )) redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$c" -n "$n" -d "$VALUE" \
    -r "$KEYSPACE" -t "$w" --csv "$@" >"$out" 2>&1
  local rc=$?
  t1=$(cpu_ticks "${SYS_PIDS[@]}")
  line=$(grep -i "^\"$w\"" "$out" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    log "  redis-benchmark $label on $sys failed (exit $rc)"
    record "$r" "$sys" redis-benchmark "$label" 0 nan nan nan nan 0 nan "failed (exit $rc)"
    return 0
  fi
  # "SET","rps","avg","min","p50","p95","p99","max"
  IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"${line//\"/}"
  local elapsed
  elapsed=$(python3 -c "print(round($n / max($rps, 1e-9), 3))")
  record "$r" "$sys" redis-benchmark "$label" "$n" "$elapsed" "$rps" "$p50" "$p99" $(( t1 - t0 )) "" ""
  log "  redis-benchmark $label: $rps req/s p50 $p50 ms p99 $p99 ms"
}

run_db() { # round system workload label clients pipeline requests [extra...]
  # (extra: more db-bench flags; --target given there replaces the first node)
  local r=$1 sys=$2 w=$3 label=$4 c=$5 p=$6 n=$7; shift 7
  local json="$TMP/json/$r-$sys-$label.json" t0 t1 fields
  local proto=resp; [ "$sys" = etcd ] && proto=etcd
  local target=(--target "127.0.0.1:$PORT") limit=(-n "$n")
  [[ " $* " == *" --target "* ]] && target=()
  # --secs: a run lasts that long (a fill keeps its count: each key once).
  [ -n "$SECS" ] && [ "$w" != fill ] && limit=()
  rm -f "$json"
  t0=$(cpu_ticks "${SYS_PIDS[@]}")
  bounded $(( RUN_CAP + 60 )) "$BENCH_BIN" --protocol "$proto" "${target[@]}" \
    --workload "$w" -c "$c" -P "$p" "${limit[@]}" -d "$VALUE" -r "$KEYSPACE" --key-width 12 \
    --duration "$RUN_CAP" --warmup 0 --quiet --seed $(( 1000 + r )) --json "$json" "$@" \
    >"$TMP/logs/db-$r-$sys-$label.txt" 2>"$TMP/logs/db-$r-$sys-$label.err"
  local rc=$?
  t1=$(cpu_ticks "${SYS_PIDS[@]}")
  if [ ! -s "$json" ]; then
    log "  db-bench $label on $sys failed (exit $rc): $(tail -1 "$TMP/logs/db-$r-$sys-$label.err")"
    record "$r" "$sys" "db bench" "$label" 0 nan nan nan nan 0 nan "failed (exit $rc)"
    return 0
  fi
  fields=$(python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
note = []
if r["connection_errors"]:
    note.append(f'{r["connection_errors"]} connection errors, {r["lost"]} lost')
if r["nil"]:
    note.append(f'{r["nil"]} nil')
if r["first_error"]:
    note.append("first error: " + r["first_error"].replace("\t", " ")[:80])
print("\t".join(str(x) for x in [r["requests"], r["elapsed_s"], r["throughput_rps"],
      r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"], "; ".join(note) or "-"]))
PY
)
  local req el rps p50 p99 errs note
  IFS=$'\t' read -r req el rps p50 p99 errs note <<<"$fields"
  [ "$note" = "-" ] && note=""
  record "$r" "$sys" "db bench" "$label" "$req" "$el" "$rps" "$p50" "$p99" $(( t1 - t0 )) "$errs" "$note"
  log "  db-bench $label: $rps req/s p50 $p50 ms p99 $p99 ms errors $errs ${note:+($note)}"
}

PIPE_FILE="$TMP/pipe.resp"
make_pipe_file() {
  python3 - "$PIPE_KEYS" "$VALUE" >"$PIPE_FILE" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
value = b"x" * size
out = sys.stdout.buffer
for i in range(n):
    key = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, size, value))
PY
}
run_pipe() { # round system
  local r=$1 sys=$2 t0 t1 s e out
  out="$TMP/logs/pipe-$r-$sys.txt"
  t0=$(cpu_ticks "${SYS_PIDS[@]}"); s=$(now)
  IN_FILE="$PIPE_FILE" bounded $(( RUN_CAP * 3 )) redis-cli -p "$PORT" --pipe >"$out" 2>&1
  local rc=$?
  e=$(now); t1=$(cpu_ticks "${SYS_PIDS[@]}")
  local replies errors
  replies=$(sed -n 's/.*errors: \([0-9]*\), replies: \([0-9]*\).*/\2/p' "$out" | tail -1)
  errors=$(sed -n 's/.*errors: \([0-9]*\), replies: \([0-9]*\).*/\1/p' "$out" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$replies" ]; then
    log "  redis-cli --pipe on $sys failed (exit $rc)"
    record "$r" "$sys" "redis-cli --pipe" "pipe $PIPE_KEYS SET" 0 nan nan nan nan 0 nan "failed or timed out (exit $rc)"
    return 0
  fi
  local el rps
  el=$(python3 -c "print(round($e - $s, 3))"); rps=$(python3 -c "print(round($replies / max($e - $s, 1e-9)))")
  record "$r" "$sys" "redis-cli --pipe" "pipe $PIPE_KEYS SET" "$replies" "$el" "$rps" nan nan $(( t1 - t0 )) "$errors" ""
  log "  redis-cli --pipe: $replies replies in $el s ($rps SET/s), errors $errors"
}

timewait() { # round system
  local all sys
  all=$(ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l)
  sys=$(ss -tan state time-wait "( sport >= :$PORT_LO and sport <= :$PORT_HI ) or ( dport >= :$PORT_LO and dport <= :$PORT_HI )" 2>/dev/null | tail -n +2 | wc -l)
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$all" "$sys" >>"$TIMEWAIT"
  log "  TIME-WAIT sockets: $all in all, $sys on $2's ports"
}

run_resp_system() { # round system
  local r=$1 sys=$2 n=$REQUESTS n1=$C1_REQUESTS
  case "$sys" in
    ddb-default|ddb2-default)
      # `db node`'s default --threads (one worker per core): the durable write and read figures.
      run_db "$r" "$sys" fill "fill" "$CLIENTS" 16 "$KEYSPACE"
      run_db "$r" "$sys" set "SET c50" "$CLIENTS" 1 "$n"
      run_db "$r" "$sys" get "GET c50" "$CLIENTS" 1 "$n"
      run_db "$r" "$sys" set "SET c1" 1 1 "$n1"
      return ;;
    redis-repl)
      # Every write is SET + WAITAOF 1 1 0 (db-bench --wait-aof; redis-benchmark
      # cannot send it). No 1-client SET: an idle primary learns of its
      # replicas' fsyncs from their once-a-second ACK, so it is ~1 write/s.
      run_db "$r" "$sys" fill "fill" "$CLIENTS" 16 "$KEYSPACE"
      run_db "$r" "$sys" set "SET c50" "$CLIENTS" 1 "$n" --wait-aof 1,1,0
      run_rb "$r" "$sys" get "GET c50" "$CLIENTS" "$n"
      run_db "$r" "$sys" get "GET c50" "$CLIENTS" 1 "$n"
      run_db "$r" "$sys" set "SET c50 P16" "$CLIENTS" 16 "$n" --wait-aof 1,1,0
      run_rb "$r" "$sys" get "GET c50 P16" "$CLIENTS" "$n" -P 16
      run_db "$r" "$sys" get "GET c50 P16" "$CLIENTS" 16 "$n"
      run_db "$r" "$sys" get "GET c1" 1 1 "$n1"
      return ;;
  esac
  if [ "$sys" = ddb-durable ] || [ "$sys" = redis ]; then run_pipe "$r" "$sys"; fi
  run_db "$r" "$sys" fill "fill" "$CLIENTS" 16 "$KEYSPACE"
  run_rb "$r" "$sys" set "SET c50" "$CLIENTS" "$n"
  run_db "$r" "$sys" set "SET c50" "$CLIENTS" 1 "$n"
  run_rb "$r" "$sys" get "GET c50" "$CLIENTS" "$n"
  run_db "$r" "$sys" get "GET c50" "$CLIENTS" 1 "$n"
  run_db "$r" "$sys" mix "MIX90 c50" "$CLIENTS" 1 "$n"
  run_rb "$r" "$sys" set "SET c50 P16" "$CLIENTS" "$n" -P 16
  run_db "$r" "$sys" set "SET c50 P16" "$CLIENTS" 16 "$n"
  run_rb "$r" "$sys" get "GET c50 P16" "$CLIENTS" "$n" -P 16
  run_db "$r" "$sys" get "GET c50 P16" "$CLIENTS" 16 "$n"
  run_rb "$r" "$sys" set "SET c1" 1 "$n1"
  run_db "$r" "$sys" set "SET c1" 1 1 "$n1"
  run_rb "$r" "$sys" get "GET c1" 1 "$n1"
  run_db "$r" "$sys" get "GET c1" 1 1 "$n1"
  case "$sys" in
    ddb-durable|ddb2-durable|ddb-mem|ddb2-mem)
      # Clients spread over the three nodes, and a Redis Cluster client,
      # which distro-db's one-shard view sends all to the first live node.
      run_db "$r" "$sys" set "SET c50 3 nodes" "$CLIENTS" 1 "$n" --target "$ALL_TARGETS"
      run_db "$r" "$sys" get "GET c50 3 nodes" "$CLIENTS" 1 "$n" --target "$ALL_TARGETS"
      run_db "$r" "$sys" set "SET c50 cluster" "$CLIENTS" 1 "$n" --target "$ALL_TARGETS" --cluster
      run_db "$r" "$sys" get "GET c50 cluster" "$CLIENTS" 1 "$n" --target "$ALL_TARGETS" --cluster ;;
  esac
}
run_etcd_system() { # round
  local r=$1 n=$REQUESTS n1=$C1_REQUESTS
  run_db "$r" etcd fill "fill" "$CLIENTS" 1 "$KEYSPACE"
  run_db "$r" etcd set "SET c50" "$CLIENTS" 1 "$n"
  run_db "$r" etcd get "GET c50" "$CLIENTS" 1 "$n"
  run_db "$r" etcd mix "MIX90 c50" "$CLIENTS" 1 "$n"
  run_db "$r" etcd set "SET c1" 1 1 "$n1"
  run_db "$r" etcd get "GET c1" 1 1 "$n1"
}

# ---------------------------------------------------------------------------
# The rounds.

IFS=, read -r -a SYSTEM_LIST <<<"$SYSTEMS"
[ ${#SYSTEM_LIST[@]} -gt 0 ] || { echo "no system left to measure" >&2; exit 1; }
log "db binary: $DB_BIN${DB2_BIN:+; --db2: $DB2_BIN}; load from: $BENCH_BIN; systems: ${SYSTEM_LIST[*]}"
log "rounds $ROUNDS, $REQUESTS requests per run ($C1_REQUESTS with 1 client), keyspace $KEYSPACE, temp $TMP"
make_pipe_file
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
for r in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no system always runs first or last.
  count=${#SYSTEM_LIST[@]}
  for k in $(seq 0 $(( count - 1 ))); do
    sys=${SYSTEM_LIST[$(( (k + r - 1) % count ))]}
    log "round $r/$ROUNDS: $sys"
    if ! start_system "$sys" "$r"; then
      log "  $sys did not come up in time; skipped this round (logs: see report)"
      NOTES+=("round $r: $sys did not start in time; its last log lines: $(tail -n 2 "$TMP"/logs/*"$PORT"*.log 2>/dev/null | tr '\n' ' ' | cut -c1-300)")
      stop_system
      continue
    fi
    if [ "$sys" = etcd ]; then run_etcd_system "$r"; else run_resp_system "$r" "$sys"; fi
    timewait "$r" "$sys"
    for pid in "${SYS_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || NOTES+=("round $r: a $sys process ($pid) died during the runs")
    done
    stop_system
  done
done

# ---------------------------------------------------------------------------
# Resident memory per key.

if [ "$KEYS_RSS" -gt 0 ]; then
  for sys in ddb-mem ddb-durable redis; do
    want "$sys" || continue
    log "memory: $sys, loading $KEYS_RSS keys"
    start_system "$sys" 0 || { NOTES+=("memory: $sys did not start"); stop_system; continue; }
    before=(); for pid in "${SYS_PIDS[@]}"; do before+=("$(rss_kb "$pid")"); done
    json="$TMP/json/rss-$sys.json"
    # fsync-always loading is slow: it gets the normal cap, and the figures
    # are per key actually loaded.
    cap=$(( RUN_CAP * 2 )); [ "$sys" = ddb-durable ] && cap=$RUN_CAP
    bounded $(( cap + 60 )) "$BENCH_BIN" --target "127.0.0.1:$PORT" \
      --workload fill -c "$CLIENTS" -P 16 -d "$VALUE" -r "$KEYS_RSS" --key-width 12 \
      --duration "$cap" --quiet --json "$json" >"$TMP/logs/rss-$sys.txt" 2>&1
    loaded=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ok'])" "$json" 2>/dev/null || echo 0)
    sleep 1
    i=0
    for pid in "${SYS_PIDS[@]}"; do
      printf '%s\t%s\t%s\t%s\t%s\n' "$sys" "$(( i + 1 ))" "${before[$i]}" "$(rss_kb "$pid")" "$loaded" >>"$RSS"
      i=$(( i + 1 ))
    done
    log "  loaded $loaded keys"
    stop_system
  done
fi
ELAPSED=$(( $(date +%s) - START ))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)

# ---------------------------------------------------------------------------
# The report.

mkdir -p "$(dirname "$OUT")" "$PNG_DIR"
NOTES_FILE="$TMP/notes.txt"; printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$NOTES_FILE"
{
  echo "db_bin=$DB_BIN"
  echo "db_bin_sha256=$(sha256sum "$DB_BIN" | cut -c1-16)"
  echo "db_version=$("$DB_BIN" --version 2>/dev/null | head -1)"
  echo "db2_bin=$DB2_BIN"
  [ -n "$DB2_BIN" ] && echo "db2_bin_sha256=$(sha256sum "$DB2_BIN" | cut -c1-16)"
  echo "repl_server=${REPL_SERVER:+$("$REPL_SERVER" --version 2>/dev/null | head -1)}"
  echo "secs=$SECS"
  echo "load_start=$LOAD_START"; echo "load_end=$LOAD_END"
  echo "bench_bin=$BENCH_BIN"
  echo "git=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "redis=$(redis-server --version 2>/dev/null | head -1)"
  echo "redis_benchmark=$(redis-benchmark --version 2>/dev/null | head -1)"
  echo "etcd=$(etcd --version 2>/dev/null | head -1)"
  echo "cpus=$(nproc)"
  echo "kernel=$(uname -r)"
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "rounds=$ROUNDS"; echo "requests=$REQUESTS"; echo "c1_requests=$C1_REQUESTS"; echo "keyspace=$KEYSPACE"
  echo "pipe_keys=$PIPE_KEYS"; echo "keys_rss=$KEYS_RSS"; echo "quick=$QUICK"; echo "elapsed_s=$ELAPSED"
  echo "clk_tck=$CLK_TCK"; echo "systems=$SYSTEMS"
} >"$TMP/meta.txt"
if ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
  log "installing matplotlib for the chart (pip)"
  timeout 600 python3 -m pip install -q matplotlib >"$TMP/logs/pip.log" 2>&1 \
    || log "WARNING: could not install matplotlib: the report will have no chart"
fi
python3 - "$TMP" "$OUT" "$PNG_DIR" <<'PY'
import csv, math, os, statistics, sys
tmp, out_path, png_dir = sys.argv[1:4]
meta = dict(l.rstrip("\n").split("=", 1) for l in open(f"{tmp}/meta.txt") if "=" in l)
rows = list(csv.DictReader(open(f"{tmp}/results.tsv"), delimiter="\t"))
tw = list(csv.DictReader(open(f"{tmp}/timewait.tsv"), delimiter="\t"))
rss = list(csv.DictReader(open(f"{tmp}/rss.tsv"), delimiter="\t"))
notes = [l.strip() for l in open(f"{tmp}/notes.txt") if l.strip()]

ORDER = ["ddb-durable", "ddb2-durable", "ddb-default", "ddb2-default", "ddb-mem", "ddb2-mem",
         "redis", "redis-aof", "redis-repl", "etcd"]
SYSTEMS = [s for s in ORDER if s in meta["systems"].split(",")]
NAMES = {"ddb-durable": "distro-db durable", "ddb-mem": "distro-db memory",
         "ddb-default": "distro-db durable, default --threads",
         "ddb2-durable": "db2 durable", "ddb2-mem": "db2 memory",
         "ddb2-default": "db2 durable, default --threads", "redis": "redis",
         "redis-aof": "redis AOF always", "redis-repl": "replicated redis (SET+WAITAOF)", "etcd": "etcd"}
WORKLOADS = ["fill", "SET c50", "GET c50", "MIX90 c50", "SET c50 P16", "GET c50 P16", "SET c1", "GET c1",
             "SET c50 3 nodes", "GET c50 3 nodes", "SET c50 cluster", "GET c50 cluster"]
TOOLS = ["redis-benchmark", "db bench"]

def num(x):
    try:
        v = float(x)
        return None if math.isnan(v) else v
    except (TypeError, ValueError):
        return None

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def cell(rows_, key):
    return med([num(r[key]) for r in rows_ if num(r["requests"])])

def pick(system, tool, workload):
    return [r for r in rows if r["system"] == system and r["tool"] == tool and r["workload"] == workload]

def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"

lines = []
w = lines.append
w("# distro-db side by side with " + ("another build, " if meta.get("db2_bin") else "") + "Redis and etcd")
w("")
w(f"Generated by `benches/compare.sh` on {meta['date']} ({meta['elapsed_s']} s); "
  f"{meta['rounds']} interleaved round(s), figures are **medians over the rounds**. "
  f"Machine: {meta['cpus']} CPUs (shared), Linux {meta['kernel']}; load average (1, 5, 15 min) {meta.get('load_start', '?')} at the start, "
  f"{meta.get('load_end', '?')} at the end. See "
  "[benchmarks.md](benchmarks.md#side-by-side-comparison-benchescomparesh) for how to run it and the caveats.")
w("")
w(f"- distro-db binary: `{meta['db_bin']}` (sha256 {meta['db_bin_sha256']}…, {meta['db_version']}); checkout `{meta['git']}`; load from `{meta['bench_bin']}` (db-bench; \"db bench\" in the tables)")
if meta.get("db2_bin"):
    w(f"- db2 (second distro-db binary, same rounds): `{meta['db2_bin']}` (sha256 {meta.get('db2_bin_sha256', '?')}…)")
w(f"- {meta['redis']}; {meta['redis_benchmark']}; {meta['etcd']}"
  + (f"; replicated redis: {meta['repl_server']}" if meta.get("repl_server") else ""))
if meta.get("secs"):
    w(f"- `--secs {meta['secs']}`: each db-bench run lasted {meta['secs']} s (no request count)")
w(f"- Each run: {meta['requests']} requests with 50 clients ({meta['c1_requests']} with 1 client), 100-byte values, "
  f"keys `key:%012d` over {meta['keyspace']} keys (both tools use the same names), every client on the first node/member; "
  "GETs follow a fill of the whole keyspace; db bench runs have no warm-up, like redis-benchmark.")
w("- Systems: distro-db 3 nodes N=3 R=2 W=2, durable = `--data-dir` + `--fsync always`, memory = no `--data-dir`, "
  "each node `--threads 1` (what `db local`, `db slave` and `db master` give) except \"default --threads\" "
  "(`db node`'s default, one runtime worker per core); "
  "redis-server `--save '' --appendonly no`; redis-server `--appendonly yes --appendfsync always`; "
  "replicated redis = a primary and 2 replicas, all `--appendonly yes --appendfsync always`, every SET sent with "
  "`WAITAOF 1 1 0` in the same write and counted once its reply shows 1 local and >= 1 replica fsync (db-bench `--wait-aof 1,1,0`), "
  "CPU summed over the 3 processes; "
  "etcd 3 members (each its own data dir), driven through its v3 HTTP/JSON gateway (put / linearizable range). "
  "\"3 nodes\": the clients spread over the 3 nodes; \"cluster\": db-bench `--cluster` (a Redis Cluster client: "
  "slot map from CLUSTER SLOTS, each key to its slot's master; distro-db's one-shard view names the first live node master of every slot).")
w("")
if notes:
    w("**Notes from this run:**")
    w("")
    for n in notes:
        w(f"- {n}")
    w("")

# The figures of issue 16's targets, for each distro-db binary measured.
def rnd_ratio(a, b, key):
    """Median over rounds of a/b, each pair measured in the same round; a, b: (system, tool, workload)."""
    rs = []
    for rnd in sorted({r["round"] for r in rows}):
        va = med([num(r[key]) for r in pick(*a) if r["round"] == rnd and num(r["requests"])])
        vb = med([num(r[key]) for r in pick(*b) if r["round"] == rnd and num(r["requests"])])
        if va is not None and vb:
            rs.append(va / vb)
    return med(rs)

def figure(sys_, tool, wl, key):
    return cell(pick(sys_, tool, wl), key)

DB = "db bench"
RB = "redis-benchmark"
for d, dflt in [("ddb-durable", "ddb-default"), ("ddb2-durable", "ddb2-default")]:
    if d not in SYSTEMS and dflt not in SYSTEMS:
        continue
    label = NAMES[d].replace(" durable", "")
    w(f"## Issue 16 targets: {label}")
    w("")
    w("Medians over the rounds; ratios are same-round ratios (median over rounds). `–`: not measured in this run.")
    w("")
    w("| figure | distro-db | peer | ratio | target |")
    w("|---|---:|---:|---:|---|")
    def rps_p99(s, tool, wl):
        v, p = figure(s, tool, wl, "rps"), figure(s, tool, wl, "p99_ms")
        return "–" if v is None else f"{fmt(v)}/s, p99 {fmt(p, 2)} ms"
    def ratio(v):
        return "–" if v is None else f"{v:.2f}x"
    w(f"| durable acknowledged write, c50 (db-bench) | {rps_p99(d, DB, 'SET c50')} | replicated redis SET+WAITAOF: {rps_p99('redis-repl', DB, 'SET c50')} "
      f"| {ratio(rnd_ratio((d, DB, 'SET c50'), ('redis-repl', DB, 'SET c50'), 'rps'))} | >= 1.5x |")
    for tool in (DB, RB):
        w(f"| GET c50, R=2 vs one redis-server ({tool}) | {fmt(figure(d, tool, 'GET c50', 'rps'))}/s | {fmt(figure('redis', tool, 'GET c50', 'rps'))}/s "
          f"| {ratio(rnd_ratio((d, tool, 'GET c50'), ('redis', tool, 'GET c50'), 'rps'))} | >= 0.7x |")
    for op in ("SET", "GET"):
        for tool in (RB, DB):
            mine = rnd_ratio((d, tool, f"{op} c50 P16"), (d, tool, f"{op} c50"), "rps")
            peer = rnd_ratio(("redis", tool, f"{op} c50 P16"), ("redis", tool, f"{op} c50"), "rps")
            w(f"| {op} -P 16 over -P 1, c50 ({tool}) | {ratio(mine)} | redis: {ratio(peer)} | | >= 3x |")
    w(f"| server CPU per durable SET, c50, 3 nodes (db-bench) | {fmt(figure(d, DB, 'SET c50', 'cpu_us_per_req'), 1)} µs "
      f"| replicated redis, 3 processes: {fmt(figure('redis-repl', DB, 'SET c50', 'cpu_us_per_req'), 1)} µs | | <= 35 µs |")
    w(f"| server CPU per GET, c50, 3 nodes (db-bench) | {fmt(figure(d, DB, 'GET c50', 'cpu_us_per_req'), 1)} µs "
      f"| redis: {fmt(figure('redis', DB, 'GET c50', 'cpu_us_per_req'), 1)} µs | | <= 15 µs |")
    w(f"| server CPU per durable SET, 1 client (db-bench) | {fmt(figure(d, DB, 'SET c1', 'cpu_us_per_req'), 1)} µs "
      f"| redis AOF always: {fmt(figure('redis-aof', DB, 'SET c1', 'cpu_us_per_req'), 1)} µs | | <= 150 µs |")
    w(f"| server CPU per GET, 1 client (db-bench) | {fmt(figure(d, DB, 'GET c1', 'cpu_us_per_req'), 1)} µs "
      f"| redis: {fmt(figure('redis', DB, 'GET c1', 'cpu_us_per_req'), 1)} µs | | |")
    w(f"| durable SET p50, 1 client (db-bench) | {fmt(figure(d, DB, 'SET c1', 'p50_ms'), 3)} ms "
      f"| redis AOF always: {fmt(figure('redis-aof', DB, 'SET c1', 'p50_ms'), 3)} ms | | <= 0.5 ms |")
    w(f"| durable SET c50 with the defaults of `db local` (`--threads 1`) (db-bench) | {rps_p99(d, DB, 'SET c50')}, "
      f"{fmt(figure(d, DB, 'SET c50', 'cpu_us_per_req'), 1)} µs CPU | | | p99 <= 3 ms |")
    w(f"| durable SET c50 with `db node`'s default --threads (one per core) (db-bench) | {rps_p99(dflt, DB, 'SET c50')}, "
      f"{fmt(figure(dflt, DB, 'SET c50', 'cpu_us_per_req'), 1)} µs CPU | | | |")
    for op in ("SET", "GET"):
        w(f"| {op} c50 as a Redis Cluster client (db-bench --cluster) | {rps_p99(d, DB, f'{op} c50 cluster')} "
          f"| clients spread over the 3 nodes: {rps_p99(d, DB, f'{op} c50 3 nodes')} "
          f"| {ratio(rnd_ratio((d, DB, f'{op} c50 cluster'), (d, DB, f'{op} c50 3 nodes'), 'rps'))} | |")
    w("")

def table(title, key, digits, tools=TOOLS, workloads=WORKLOADS, explain=None):
    w(f"## {title}")
    w("")
    if explain:
        w(explain)
        w("")
    w("| workload | tool | " + " | ".join(NAMES[s] for s in SYSTEMS) + " |")
    w("|---|---|" + "---:|" * len(SYSTEMS))
    for wl in workloads:
        for tool in tools:
            vals = [cell(pick(s, tool, wl), key) for s in SYSTEMS]
            if all(v is None for v in vals):
                continue
            w(f"| {wl} | {tool} | " + " | ".join(fmt(v, digits) for v in vals) + " |")
    w("")

table("Throughput (requests/s)", "rps", 0,
      explain="`fill` is `db bench --workload fill -P 16` (each key once); etcd is driven by `db bench` only and without pipelining.")
table("Latency p50 (ms)", "p50_ms", 3)
table("Latency p99 (ms)", "p99_ms", 3,
      explain="With `-P 16`, db bench gives each request its batch's round trip; redis-benchmark measures differently, so compare P16 latencies within one tool only.")
table("Server CPU time per request (µs)", "cpu_us_per_req", 1,
      explain=f"utime+stime of every server process of the system (fields 14 and 15 of /proc/PID/stat, {meta['clk_tck']} ticks/s) just after the run minus just before, divided by the requests of the run. It includes background work (gossip, anti-entropy, fsync threads) during the run.")

# Same-round ratios.
PAIRS = [("ddb2-durable", "ddb-durable"), ("ddb2-default", "ddb-default"), ("ddb2-mem", "ddb-mem"),
         ("ddb-durable", "redis-repl"), ("ddb2-durable", "redis-repl"),
         ("ddb-mem", "redis"), ("ddb-durable", "redis-aof"), ("ddb-durable", "redis"), ("ddb-durable", "etcd"), ("ddb-mem", "etcd")]
PAIRS = [p for p in PAIRS if p[0] in SYSTEMS and p[1] in SYSTEMS]
def ratio_cell(a, b, tool, wl, key):
    rs = []
    for rnd in sorted({r["round"] for r in rows}):
        va = med([num(r[key]) for r in pick(a, tool, wl) if r["round"] == rnd and num(r["requests"])])
        vb = med([num(r[key]) for r in pick(b, tool, wl) if r["round"] == rnd and num(r["requests"])])
        if va is not None and vb:
            rs.append(va / vb)
    return med(rs)
for key, title, digits in [("rps", "throughput", 3), ("cpu_us_per_req", "server CPU per request", 2)]:
    if not PAIRS:
        break
    w(f"## Same-round ratios: {title}")
    w("")
    w("Each ratio is computed within a round (both systems measured minutes apart) and the median of the rounds is shown. "
      + ("Below 1: distro-db serves fewer requests per second." if key == "rps" else "Above 1: distro-db spends more CPU per request."))
    w("")
    w("| workload | tool | " + " | ".join(f"{NAMES[a]} / {NAMES[b]}" for a, b in PAIRS) + " |")
    w("|---|---|" + "---:|" * len(PAIRS))
    for wl in WORKLOADS:
        for tool in TOOLS:
            vals = [ratio_cell(a, b, tool, wl, key) for a, b in PAIRS]
            if all(v is None for v in vals):
                continue
            w(f"| {wl} | {tool} | " + " | ".join(fmt(v, digits) + ("x" if v is not None else "") for v in vals) + " |")
    w("")

# Tool agreement.
agree = []
for s in SYSTEMS:
    for wl in WORKLOADS:
        a = cell(pick(s, "db bench", wl), "rps"); b = cell(pick(s, "redis-benchmark", wl), "rps")
        if a and b:
            agree.append((s, wl, a, b))
if agree:
    w("## db bench against redis-benchmark (same system, same workload)")
    w("")
    w("| system | workload | db bench req/s | redis-benchmark req/s | db bench / redis-benchmark |")
    w("|---|---|---:|---:|---:|")
    for s, wl, a, b in agree:
        w(f"| {NAMES[s]} | {wl} | {fmt(a)} | {fmt(b)} | {a / b:.2f}x |")
    w("")

# Pipe.
pipe_rows = [r for r in rows if r["tool"] == "redis-cli --pipe"]
if pipe_rows:
    w(f"## redis-cli --pipe ({meta['pipe_keys']} SETs on one connection)")
    w("")
    w("| system | seconds | SET/s | server CPU µs/SET | errors |")
    w("|---|---:|---:|---:|---:|")
    for s in SYSTEMS:
        rs = [r for r in pipe_rows if r["system"] == s]
        if rs:
            errs = ",".join(sorted({r["errors"] for r in rs}))
            w(f"| {NAMES[s]} | {fmt(cell(rs, 'elapsed_s'), 2)} | {fmt(cell(rs, 'rps'))} | {fmt(cell(rs, 'cpu_us_per_req'), 1)} | {errs} |")
    w("")

if tw:
    w("## TIME-WAIT sockets")
    w("")
    w("`ss -tan state time-wait` right after all of a system's runs: the machine-wide count, and those with a local or remote port of that system (its client and peer connections). Median over rounds.")
    w("")
    w("| system | all | on the system's ports |")
    w("|---|---:|---:|")
    for s in SYSTEMS:
        t = [r for r in tw if r["system"] == s]
        if t:
            w(f"| {NAMES[s]} | {fmt(med([num(r['all']) for r in t]))} | {fmt(med([num(r['system_ports']) for r in t]))} |")
    w("")

if rss:
    w(f"## Resident memory per key ({meta['keys_rss']} keys requested, 100-byte values)")
    w("")
    w("VmRSS of each server process after `db bench --workload fill` (keys `key:%012d`), summed over the system's processes, divided by the keys loaded. \"Growth\" subtracts the RSS before loading.")
    w("")
    w("| system | keys loaded | RSS per process after (MiB) | total RSS (MiB) | bytes/key (total RSS) | bytes/key (growth) | bytes/key per node (growth) |")
    w("|---|---:|---|---:|---:|---:|---:|")
    for s in SYSTEMS:
        rr = [r for r in rss if r["system"] == s]
        if not rr:
            continue
        keys = float(rr[0]["keys"] or 0)
        after = [float(r["rss_after_kb"]) for r in rr]
        before = [float(r["rss_before_kb"]) for r in rr]
        total = sum(after) * 1024
        growth = (sum(after) - sum(before)) * 1024
        per = " / ".join(f"{a / 1024:.0f}" for a in after)
        if keys > 0:
            w(f"| {NAMES[s]} | {fmt(keys)} | {per} | {total / 2**20:.0f} | {fmt(total / keys)} | {fmt(growth / keys)} | {fmt(growth / keys / len(rr))} |")
        else:
            w(f"| {NAMES[s]} | 0 | {per} | {total / 2**20:.0f} | – | – | – |")
    w("")

bad = [r for r in rows if (num(r["errors"]) or 0) > 0
       or any(k in r["note"] for k in ("connection", "failed", "first error"))]
if bad:
    w("## Runs with errors or failures")
    w("")
    w("| round | system | tool | workload | errors | note |")
    w("|---|---|---|---|---:|---|")
    for r in bad:
        w(f"| {r['round']} | {NAMES.get(r['system'], r['system'])} | {r['tool']} | {r['workload']} | {r['errors']} | {r['note']} |")
    w("")

# Chart: db bench throughput and p99 per system and workload.
png_name = os.path.splitext(os.path.basename(out_path))[0] + ".png"
chart_ok = False
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    wls = [wl for wl in WORKLOADS if wl != "fill"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 8))
    width = 0.8 / max(len(SYSTEMS), 1)
    for ax, key, label in [(axes[0], "rps", "requests/s (db bench, median)"), (axes[1], "p99_ms", "p99 latency, ms (db bench, median)")]:
        for i, s in enumerate(SYSTEMS):
            vals = [cell(pick(s, "db bench", wl), key) or 0 for wl in wls]
            ax.bar([x + i * width for x in range(len(wls))], vals, width, label=NAMES[s])
        ax.set_xticks([x + width * (len(SYSTEMS) - 1) / 2 for x in range(len(wls))])
        ax.set_xticklabels(wls)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(SYSTEMS), 5), fontsize=8)
    axes[0].set_title(f"distro-db vs Redis vs etcd on loopback ({meta['rounds']} rounds, log scale)")
    fig.tight_layout()
    fig.savefig(os.path.join(png_dir, png_name), dpi=90)
    chart_ok = True
except Exception as e:  # no matplotlib: the report says so
    print(f"chart skipped: {e}", file=sys.stderr)
if chart_ok:
    rel = os.path.relpath(os.path.join(png_dir, png_name), os.path.dirname(os.path.abspath(out_path)))
    lines.insert(2, f"![throughput and p99 per system and workload]({rel})\n")
else:
    lines.insert(2, "(No chart: matplotlib is not available; `pip install matplotlib` and run again.)\n")

text = "\n".join(lines) + "\n"
open(out_path, "w").write(text)
print(text)
PY
cp "$RESULTS" "$(dirname "$OUT")/$(basename "$OUT" .md)-runs.tsv" 2>/dev/null || true
log "report: $OUT"
