# Shared by the A/B scripts (benches/tls_ab.sh, benches/metrics_ab.sh): a
# fresh 3-node durable cluster per run, `db bench` SET then GET, one TSV line
# per run and phase: round, mode, phase, requests/s, server CPU per request
# (utime+stime of the three node processes, from /proc/PID/stat, over the
# phase, divided by its requests), p50 and p99 in ms. Source it after
# setting `base` (first port) and `secs`; then, before each `ab_run ROUND
# MODE`, set `node_db` (the binary the nodes run; its REPL checks that the
# cluster formed, as each build renders its own reports), `client_db` (the
# bench binary), `node_extra` and `client_extra` (arrays of extra flags).
# `ab_memory=1` runs the nodes without a data directory (in memory) instead.
# `ab_start ROUND MODE` alone starts such a cluster and waits for it, for a
# script that drives its own load (benches/build_ab.sh: redis-benchmark).

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

ab_header() {
  printf 'round\tmode\tphase\trps\tcpu_us_per_req\tp50_ms\tp99_ms\n'
}

ab_memory=0

# Starts a fresh cluster of `node_db` for run ROUND of MODE (its files in
# $work/MODE-ROUND) and waits until it formed.
ab_start() {
  local round=$1 mode=$2
  local dir=$work/$mode-$round
  mkdir -p "$dir"
  local seeds=()
  for p in "${ports[@]}"; do seeds+=(--seed "127.0.0.1:$p"); done
  for p in "${ports[@]}"; do
    local store=(--data-dir "$dir/d$p" --fsync always)
    if [ "$ab_memory" = 1 ]; then store=(); fi
    "$node_db" node --listen "127.0.0.1:$p" "${seeds[@]}" --cluster-id "ab-$mode-$round" \
      "${store[@]}" --threads 1 "${node_extra[@]}" \
      --log-file "$dir/node-$p.log" 2>>"$dir/stderr" &
    pids+=($!)
  done
  # Wait (bounded) until the first node's layout is settled with 3 members.
  local ok=0
  for _ in $(seq 120); do
    if printf 'RING\n' | "$node_db" repl --connect "127.0.0.1:${ports[0]}" "${client_extra[@]}" 2>/dev/null \
      | grep -q settled \
      && [ "$(printf 'NODES\n' | "$node_db" repl --connect "127.0.0.1:${ports[0]}" "${client_extra[@]}" 2>/dev/null | grep -c ' live')" -ge 3 ]; then
      ok=1
      break
    fi
    sleep 0.5
  done
  [ "$ok" = 1 ] || { echo "cluster $mode-$round did not form" >&2; exit 1; }
  # Our nodes, not another cluster that answered on these ports.
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a node of $mode-$round exited (ports ${ports[*]} in use?)" >&2; exit 1; }
  done
}

# One run: a fresh cluster of `node_db`, SET then GET from `client_db`.
ab_run() {
  local round=$1 mode=$2
  local dir=$work/$mode-$round
  ab_start "$round" "$mode"
  local targets
  targets=$(printf '127.0.0.1:%s,' "${ports[@]}")
  targets=${targets%,}
  for phase in set get; do
    local before after tck
    before=$(cpu_ticks)
    "$client_db" bench --target "$targets" "${client_extra[@]}" --workload "$phase" -c 50 -d 100 -r 100000 \
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
