#!/usr/bin/env bash
# Rebalance figures: a 3-node durable cluster is filled with DATA_MB of
# values, then a fourth node joins while clients run a mixed load. Prints
# the transfer rate (MB of values the new node received per second, from
# its STATUS) and the foreground p50/p99 during the transfer, next to the
# same load on the same cluster without a transfer (run first).
# Not a test: figures only (docs/benchmarks.md, "Rebalance").
#
#   benches/rebalance.sh [--data-mb 1024] [--value-size 1000] [--base-port 27000]
#                        [--transfer-mb-per-s 50] [--db target/release/db]
set -euo pipefail

DATA_MB=1024
VALUE=1000
BASE=27000
RATE=50
DB=target/release/db
while [ $# -gt 0 ]; do
  case "$1" in
    --data-mb) DATA_MB=$2; shift 2 ;;
    --value-size) VALUE=$2; shift 2 ;;
    --base-port) BASE=$2; shift 2 ;;
    --transfer-mb-per-s) RATE=$2; shift 2 ;;
    --db) DB=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$DB" ] || { echo "build it first: cargo build --release" >&2; exit 2; }
KEYS=$((DATA_MB * 1024 * 1024 / VALUE))
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
  # shellcheck disable=SC2086
  "$DB" node --listen "127.0.0.1:$1" $SEEDS --cluster-id "rebalance-$BASE" --threads 1 \
    --data-dir "$DIR/data-$1" --transfer-mb-per-s "$RATE" --log-file "$DIR/node-$1.log" >/dev/null 2>&1 &
  PIDS+=("$!")
}
ask() { local port=$1; shift; printf '%s\n' "$*" | timeout 10 "$DB" repl --connect "127.0.0.1:$port" 2>/dev/null || true; }
settled_at() { # port version
  ask "$1" RING | head -1 | awk -v v="$2" '/settled/ && $3 >= v { ok = 1 } END { exit !ok }'
}
wait_for() { # seconds, command...
  local limit=$1; shift
  local t=0
  until "$@"; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt $((limit * 2)) ] || { echo "timed out waiting for: $*" >&2; exit 1; }
  done
}
now() { date +%s.%N; }

for i in 0 1 2; do start_node $((BASE + i)); done
wait_for 60 settled_at "$BASE" 1
TARGETS="--target 127.0.0.1:$BASE --target 127.0.0.1:$((BASE + 1)) --target 127.0.0.1:$((BASE + 2))"
echo "filling $KEYS keys of $VALUE bytes ($DATA_MB MB of values, 3 copies)..."
t0=$(now)
# shellcheck disable=SC2086
"$DB" bench $TARGETS -c 32 -P 16 -d "$VALUE" -r "$KEYS" --workload fill --duration 3600 > "$DIR/fill.out" 2>&1
awk '/^requests/ { printf "fill: %s SETs\n", $2 }' "$DIR/fill.out"
awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "filled in %.1f s\n", b - a }'

load() { # label seconds
  # shellcheck disable=SC2086
  "$DB" bench $TARGETS -c 20 -d 100 -r "$KEYS" --workload mix --duration "$2" > "$DIR/$1.out" 2>&1
}
figures() { awk '/throughput|latency p50|latency p99 / { printf "    %s\n", $0 }' "$DIR/$1.out"; }

load baseline 20
echo "foreground without a transfer (mix 90% GET, 20 clients, 20 s):"
figures baseline

JOINER=$((BASE + 3))
t0=$(now)
start_node "$JOINER"
load during 60 &
LOAD=$!
wait_for 900 settled_at "$BASE" 2
t1=$(now)
wait "$LOAD" || true
bytes=$(ask "$JOINER" STATUS | awk '/^worker.transfer:/ { for (i = 1; i <= NF; i++) if ($i == "bytes") print $(i - 1) }')
awk -v a="$t0" -v b="$t1" -v by="${bytes:-0}" 'BEGIN {
  printf "join carried out in %.1f s; the new node received %.1f MB of values: %.1f MB/s\n", b - a, by / 1e6, by / 1e6 / (b - a) }'
echo "foreground during the transfer (same load, 60 s from the join):"
figures during
