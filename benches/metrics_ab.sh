#!/usr/bin/env bash
# The request-path cost of the metrics (`--metrics`): a 3-node durable
# cluster run by an old build (without the counters) and a new one (with
# them, and the metrics port open), interleaved (old, new; new, old; ...),
# each run a fresh cluster; `db bench` SET then GET. Prints one TSV line per
# run and phase: round, mode, phase, requests/s, server CPU per request
# (utime+stime of the three node processes, from /proc/PID/stat, over the
# phase, divided by its requests), p50 and p99 in ms. docs/benchmarks.md
# ("Metrics") has the figures.
#
#   benches/metrics_ab.sh --old-bin OLD_DB [--new-bin target/release/db] [--rounds 3] [--secs 8] [--base-port 24201]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
secs=8
old=
new=target/release/db
base=24201
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --old-bin) old=$2; shift 2 ;;
    --new-bin) new=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$old" ] || { echo "--old-bin is required" >&2; exit 2; }

source benches/ab_lib.sh

client_db=$new
client_extra=()
ab_header
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for mode in $order; do
    node_db=$old
    node_extra=()
    if [ "$mode" = new ]; then
      node_db=$new
      node_extra=(--metrics 127.0.0.1:0)
    fi
    ab_run "$round" "$mode"
  done
done
