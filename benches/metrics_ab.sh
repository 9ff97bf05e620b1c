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

work=$(mktemp -d)
pids=()
stop_nodes() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_nodes; rm -rf "$work"' EXIT

ports=("$base" "$((base + 1))" "$((base + 2))")
cpu_ticks() {
  local sum=0
  for p in "${pids[@]}"; do
    # Fields 14 and 15 (utime, stime), after the command name in parentheses.
    read -r ut st < <(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
    sum=$((sum + ut + st))
  done
  echo "$sum"
}

run() {
  local round=$1 mode=$2
  local dir=$work/$mode-$round
  mkdir -p "$dir"
  local db=$old extra=()
  if [ "$mode" = new ]; then
    db=$new
    extra=(--metrics 127.0.0.1:0)
  fi
  local seeds=()
  for p in "${ports[@]}"; do seeds+=(--seed "127.0.0.1:$p"); done
  for p in "${ports[@]}"; do
    "$db" node --listen "127.0.0.1:$p" "${seeds[@]}" --cluster-id "metricsab-$mode-$round" \
      --data-dir "$dir/d$p" --threads 1 --fsync always "${extra[@]}" \
      --log-file "$dir/node-$p.log" 2>>"$dir/stderr" &
    pids+=($!)
  done
  # Wait (bounded) until the first node's layout is settled with 3 members.
  local ok=0
  for _ in $(seq 120); do
    if printf 'RING\n' | "$new" repl --connect "127.0.0.1:${ports[0]}" 2>/dev/null \
      | grep -q settled \
      && [ "$(printf 'NODES\n' | "$db" repl --connect "127.0.0.1:${ports[0]}" 2>/dev/null | grep -c ' live')" -ge 3 ]; then
      ok=1
      break
    fi
    sleep 0.5
  done
  [ "$ok" = 1 ] || { echo "cluster $mode-$round did not form" >&2; exit 1; }
  local targets
  targets=$(printf '127.0.0.1:%s,' "${ports[@]}")
  targets=${targets%,}
  for phase in set get; do
    local before after tck
    before=$(cpu_ticks)
    "$new" bench --target "$targets" --workload "$phase" -c 50 -d 100 -r 100000 \
      --duration "$secs" --warmup 0 --quiet --json "$dir/$phase.json" >/dev/null 2>>"$dir/stderr"
    after=$(cpu_ticks)
    tck=$(getconf CLK_TCK)
    python3 - "$dir/$phase.json" "$round" "$mode" "$phase" "$((after - before))" "$tck" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
ticks, tck = int(sys.argv[5]), int(sys.argv[6])
cpu_us = ticks / tck * 1e6 / max(r["requests"], 1)
lat = r["latency_ms"]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], f'{r["throughput_rps"]:.0f}',
                 f"{cpu_us:.1f}", f'{lat["p50"]:.2f}', f'{lat["p99"]:.2f}']))
EOF
  done
  stop_nodes
}

printf 'round\tmode\tphase\trps\tcpu_us_per_req\tp50_ms\tp99_ms\n'
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for mode in $order; do run "$round" "$mode"; done
done
