#!/usr/bin/env bash
# Starts a large in-memory cluster on loopback and prints how it scales:
# time until every node sees every other live and the layout is settled,
# time until a kill -9 is seen everywhere, memory and CPU per node, gossip
# traffic, ring balance, and a read/write load while one node joins and one
# leaves. Not a test: it prints figures (docs/operations.md, "Scale").
#
#   scripts/scale.sh [--nodes 100] [--base-port 26000] [--db target/release/db]
#
# Every node runs with --threads 1. Bounded: every wait has a deadline, and
# every process started here is stopped by its PID on exit.
set -euo pipefail

NODES=100
BASE=26000
DB=target/release/db
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --base-port) BASE=$2; shift 2 ;;
    --db) DB=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$DB" ] || { echo "build it first: cargo build --release ($DB is missing)" >&2; exit 2; }
if [ $((BASE + NODES + 2)) -ge 32768 ]; then
  echo "ports $BASE..$((BASE + NODES + 1)) reach the ephemeral range; lower --base-port" >&2
  exit 2
fi

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

SEEDS="--seed 127.0.0.1:$BASE --seed 127.0.0.1:$((BASE + 1)) --seed 127.0.0.1:$((BASE + 2))"
start_node() {
  local port=$1
  # shellcheck disable=SC2086
  "$DB" node --listen "127.0.0.1:$port" $SEEDS --cluster-id "scale-$BASE" --threads 1 \
    --log-file "$DIR/node-$port.log" >/dev/null 2>&1 &
  PIDS+=("$!")
  echo "$!" > "$DIR/pid-$port"
}

ask() { # port command...
  local port=$1; shift
  printf '%s\n' "$*" | timeout 10 "$DB" repl --connect "127.0.0.1:$port" 2>/dev/null || true
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Polls `cmd` (a shell function name) every 0.5 s until it succeeds or
# `limit` seconds pass; prints the seconds it took, or "timeout".
until_true() {
  local limit=$1 fn=$2 t0
  t0=$(now)
  while ! "$fn"; do
    if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo timeout; return 1
    fi
    sleep 0.5
  done
  elapsed "$t0"
}

echo "starting $NODES nodes on 127.0.0.1:$BASE.. ($DB)"
T0=$(now)
for i in $(seq 0 $((NODES - 1))); do start_node $((BASE + i)); done

all_live_and_settled() {
  local first
  first=$(ask "$BASE" RING | head -1)
  case "$first" in *settled*) ;; *) return 1 ;; esac
  # A sample of nodes, each seeing every member live.
  for i in 0 $((NODES / 3)) $((2 * NODES / 3)) $((NODES - 1)); do
    [ "$(ask $((BASE + i)) NODES | grep -c ' live')" -ge "$NODES" ] || return 1
  done
}
echo "every node live and the layout settled after: $(until_true 300 all_live_and_settled) s (from the first start)"

rss_kb=0
pss_kb=0
for i in $(seq 0 $((NODES - 1))); do
  pid=$(cat "$DIR/pid-$((BASE + i))")
  r=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
  p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
  rss_kb=$((rss_kb + r))
  pss_kb=$((pss_kb + p))
done
# RSS counts the binary's pages every node maps (shared, ~8 MiB each);
# PSS splits shared pages among the processes sharing them.
awk -v r="$rss_kb" -v p="$pss_kb" -v n="$NODES" 'BEGIN {
  printf "memory: %.1f MiB RSS per node, %.1f MiB PSS (mean over %d)\n", r / n / 1024, p / n / 1024, n }'

cpu_ticks() {
  local total=0 pid
  for i in $(seq 0 $((NODES - 1))); do
    pid=$(cat "$DIR/pid-$((BASE + i))")
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# OutDatagrams of the machine's UDP counters (every UDP sender counts).
udp_out() { awk '/^Udp:/ { n++; if (n == 1) for (i = 1; i <= NF; i++) if ($i == "OutDatagrams") f = i; if (n == 2) print $f }' /proc/net/snmp; }
c0=$(cpu_ticks); u0=$(udp_out); sleep 10; c1=$(cpu_ticks); u1=$(udp_out)
hz=$(getconf CLK_TCK)
awk -v c=$((c1 - c0)) -v hz="$hz" -v n="$NODES" 'BEGIN { printf "idle CPU: %.2f%% of a core per node (10 s)\n", 100 * c / hz / 10 / n }'
echo "gossip: $(( (u1 - u0) / 10 / NODES )) UDP datagrams/s sent per node (loopback, all UDP on this machine)"

echo "balance (RING on the first node):"
ask "$BASE" RING | awk '/ partitions \(/ { for (i = 1; i <= NF; i++) if ($i == "partitions") print $(i - 1) }' |
  sort -n | awk '{ a[NR] = $1; s += $1 } END { printf "  partitions per node: min %d, max %d, mean %.1f\n", a[1], a[NR], s / NR }'

VICTIM=$((BASE + NODES / 2))
kill -9 "$(cat "$DIR/pid-$VICTIM")"
seen_down() {
  for i in 0 $((NODES / 4)) $((NODES - 1)); do
    ask $((BASE + i)) NODES | grep -q "node-$VICTIM .* down" || return 1
  done
}
echo "kill -9 of node-$VICTIM seen down by a sample of nodes after: $(until_true 60 seen_down) s"
version() { ask "$BASE" RING | head -1 | awk '{ print $3 }'; }
BEFORE=$(version)
ask "$BASE" "REMOVE node-$VICTIM" >/dev/null
changed() {
  local first
  first=$(ask "$BASE" RING | head -1)
  case "$first" in *settled*) [ "$(echo "$first" | awk '{ print $3 }')" -gt "$BEFORE" ] ;; *) return 1 ;; esac
}
echo "REMOVE of node-$VICTIM carried out after: $(until_true 300 changed) s"

# A load across many nodes while one node joins and one leaves.
TARGETS=""
for i in 0 $((NODES / 5)) $((2 * NODES / 5)) $((3 * NODES / 5)) $((4 * NODES / 5)); do
  TARGETS="$TARGETS --target 127.0.0.1:$((BASE + i))"
done
# shellcheck disable=SC2086
"$DB" bench $TARGETS -c 20 --workload mix --duration 30 > "$DIR/bench.out" 2>&1 &
BENCH=$!
PIDS+=("$BENCH")
sleep 5
JOINER=$((BASE + NODES))
LEAVER=$((BASE + NODES - 1))
start_node "$JOINER"
sleep 2
ask "$LEAVER" LEAVE >/dev/null
both_done() {
  local ring
  ring=$(ask "$BASE" RING)
  echo "$ring" | head -1 | grep -q settled &&
    echo "$ring" | grep -q "node-$JOINER .* member" &&
    echo "$ring" | grep -q "node-$LEAVER .* removed"
}
echo "a join and a LEAVE under load carried out after: $(until_true 300 both_done) s"
wait "$BENCH" || true
echo "load (db bench, mix, 20 clients over 5 nodes, 30 s, the join and the leave included):"
sed 's/^/  /' "$DIR/bench.out"
