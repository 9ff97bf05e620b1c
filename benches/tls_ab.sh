#!/usr/bin/env bash
# The cost of TLS: a 3-node durable cluster in plain text and with TLS
# (clients and peers), interleaved (plain, tls; tls, plain; ...), each run
# a fresh cluster; `db bench` SET then GET. Prints one TSV line per run and
# phase: round, mode, phase, requests/s, server CPU per request (utime+stime
# of the three node processes, from /proc/PID/stat, over the phase, divided
# by its requests), p50 and p99 in ms. docs/benchmarks.md ("TLS") has the
# figures and the medians.
#
#   benches/tls_ab.sh [--rounds 3] [--secs 8] [--db-bin target/release/db] [--base-port 24101]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
secs=8
db=target/release/db
base=24101
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --db-bin) db=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

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

# A CA and one certificate for the three nodes (and the clients), as
# docs/security.md shows.
pki=$work/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node" \
  -keyout "$pki/node.key" -out "$pki/node.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$pki/ext"
openssl x509 -req -in "$pki/node.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 30 -extfile "$pki/ext" -out "$pki/node.crt" 2>/dev/null

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
  local node_tls=() client_tls=()
  if [ "$mode" = tls ]; then
    node_tls=(--tls-cert "$pki/node.crt" --tls-key "$pki/node.key" --tls-ca "$pki/ca.pem")
    client_tls=(--tls --tls-ca "$pki/ca.pem")
  fi
  local seeds=()
  for p in "${ports[@]}"; do seeds+=(--seed "127.0.0.1:$p"); done
  for p in "${ports[@]}"; do
    "$db" node --listen "127.0.0.1:$p" "${seeds[@]}" --cluster-id "tlsab-$mode-$round" \
      --data-dir "$dir/d$p" --threads 1 --fsync always "${node_tls[@]}" \
      --log-file "$dir/node-$p.log" 2>>"$dir/stderr" &
    pids+=($!)
  done
  # Wait (bounded) until the first node's layout is settled with 3 members.
  local ok=0
  for _ in $(seq 120); do
    if printf 'RING\n' | "$db" repl --connect "127.0.0.1:${ports[0]}" "${client_tls[@]}" 2>/dev/null \
      | grep -q settled \
      && [ "$(printf 'NODES\n' | "$db" repl --connect "127.0.0.1:${ports[0]}" "${client_tls[@]}" 2>/dev/null | grep -c ' live')" -ge 3 ]; then
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
    "$db" bench --target "$targets" "${client_tls[@]}" --workload "$phase" -c 50 -d 100 -r 100000 \
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
  if [ $((round % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
  for mode in $order; do run "$round" "$mode"; done
done
