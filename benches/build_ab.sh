#!/usr/bin/env bash
# Two builds of `db` side by side under redis-benchmark: a fresh 3-node
# cluster (`--threads 1`, in memory unless --durable) of each build per
# run, interleaved (a, b; b, a; ...), `redis-benchmark -c CLIENTS -P PIPELINE -t set,get
# -d 100 -r 100000` against the first node. Prints one TSV line per run and
# phase: round, build, phase, requests/s, server CPU per request
# (utime+stime of the three node processes, from /proc/PID/stat, over the
# phase, divided by its requests). For choices of build settings and
# allocators (docs/benchmarks.md, docs/operations.md "Scale").
#
#   benches/build_ab.sh --a DB_A --b DB_B [--rounds 3] [--requests 200000]
#       [--clients 50] [--pipeline 1] [--durable] [--base-port 24201]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
requests=200000
clients=50
pipeline=1
base=24201
a=
b=
durable=0
while [ $# -gt 0 ]; do
  case "$1" in
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --pipeline) pipeline=$2; shift 2 ;;
    --durable) durable=1; shift ;;
    --base-port) base=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$a" ] && [ -x "$b" ] || { echo "--a and --b must name db binaries" >&2; exit 2; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is missing (apt-get install redis-tools)" >&2; exit 2; }

source benches/ab_lib.sh
ab_memory=$((1 - durable))
node_extra=()
client_extra=()

printf 'round\tbuild\tphase\trps\tcpu_us_per_req\n'
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for mode in $order; do
    node_db=$a
    if [ "$mode" = b ]; then node_db=$b; fi
    ab_start "$round" "$mode"
    for phase in set get; do
      before=$(cpu_ticks)
      # Bounded: a stuck run ends after 300 s and fails the script.
      out=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "${ports[0]}" -c "$clients" -P "$pipeline" -n "$requests" \
        -t "$phase" -d 100 -r 100000 --csv 2>/dev/null)
      after=$(cpu_ticks)
      rps=$(printf '%s\n' "$out" | awk -F'"' 'NR > 1 && $2 != "" { print $4; exit }')
      awk -v r="$round" -v m="$mode" -v ph="$phase" -v rps="$rps" -v t=$((after - before)) \
        -v tck="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { printf "%s\t%s\t%s\t%.0f\t%.1f\n", r, m, ph, rps, t / tck * 1e6 / n }'
    done
    stop_nodes
  done
done
