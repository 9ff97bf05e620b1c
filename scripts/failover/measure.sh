#!/usr/bin/env bash
# Failover figures of cluster-mode Redis clients against distro-db: starts a
# 3-node cluster on loopback, has one client write and read in a loop
# (a SET and a GET of a new key per request), kill -9s one node after 300
# good requests, and prints the failed requests and how long they went on.
#
#   scripts/failover/measure.sh [--runs N] [--kill master|replica]
#                               [--db PATH] CLIENT...
#
# CLIENT: redis-py, ioredis, or node-redis[:CONFIG] with CONFIG one of
# node.js's CONFIGS (defaults, recommended, socketTimeout, connectTimeout,
# connectTimeout+reconnect). redis-py needs `pip install redis`; the Node
# clients are installed with npm under target/failover-npm the first time.
# --kill master (default) kills the node every client sends its requests to
# (the one master of the cluster view), replica another one. One JSON line
# per run; docs/redis.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=3
kill_which=master
db=target/debug/db
clients=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?}"; shift 2 ;;
    --kill) kill_which="${2:?}"; shift 2 ;;
    --db) db="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    *) clients+=("$1"); shift ;;
  esac
done
[ ${#clients[@]} -gt 0 ] || { echo "name a client (see --help)" >&2; exit 2; }
case "$kill_which" in master|replica) ;; *) echo "--kill master or replica" >&2; exit 2 ;; esac
[ -x "$db" ] || { echo "$db not built (cargo build)" >&2; exit 2; }
for c in "${clients[@]}"; do
  case "$c" in
    ioredis|node-redis*)
      npm_dir=target/failover-npm
      if [ ! -d "$npm_dir/node_modules/ioredis" ] || [ ! -d "$npm_dir/node_modules/redis" ]; then
        mkdir -p "$npm_dir"
        (cd "$npm_dir" && npm init -y >/dev/null && timeout 300 npm install --silent redis ioredis)
      fi
      export NODE_PATH="$PWD/$npm_dir/node_modules" ;;
  esac
done

work=$(mktemp -d)
pids=()
stop_nodes() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_nodes; rm -rf "$work"' EXIT

for client in "${clients[@]}"; do
  for run in $(seq 1 "$runs"); do
    # Three ports below 32768, away from the reserved 55551-55553.
    base=$((20000 + RANDOM % 12000))
    ports=("$base" $((base + 1)) $((base + 2)))
    seeds=()
    for p in "${ports[@]}"; do seeds+=(--seed "127.0.0.1:$p"); done
    declare -A pid_of=()
    for p in "${ports[@]}"; do
      "$db" node --listen "127.0.0.1:$p" --cluster-id "failover-$base" "${seeds[@]}" \
        --gossip-interval-ms 100 >"$work/node-$p.log" 2>&1 &
      pids+=($!)
      pid_of[$p]=$!
    done
    # Formed: every node lists three live members (bounded wait).
    formed=""
    for _ in $(seq 1 200); do
      if [ "$(redis-cli -p "${ports[0]}" NODES 2>/dev/null | grep -c ' live')" = 3 ] &&
         [ "$(redis-cli -p "${ports[2]}" NODES 2>/dev/null | grep -c ' live')" = 3 ]; then
        formed=1; break
      fi
      sleep 0.1
    done
    [ -n "$formed" ] || { echo "the cluster did not form" >&2; exit 1; }
    master_port=$(redis-cli -p "${ports[0]}" CLUSTER NODES | awk '$3 ~ /master/ {split($2, a, "[:@]"); print a[2]}' | head -n 1)
    victim=$master_port
    if [ "$kill_which" = replica ]; then
      for p in "${ports[@]}"; do [ "$p" != "$master_port" ] && victim=$p && break; done
    fi
    env_common=(DDB_PORTS="$(IFS=,; echo "${ports[*]}")" DDB_KILL_PID="${pid_of[$victim]}")
    case "$client" in
      redis-py) env "${env_common[@]}" timeout 120 python3 scripts/failover/redis_py.py ;;
      ioredis) env "${env_common[@]}" DDB_CLIENT=ioredis timeout 120 node scripts/failover/node.js ;;
      node-redis*)
        config=${client#node-redis}; config=${config#:}
        env "${env_common[@]}" DDB_CLIENT=node-redis DDB_CONFIG="${config:-defaults}" \
          timeout 120 node scripts/failover/node.js ;;
      *) echo "unknown client $client" >&2; exit 2 ;;
    esac | sed "s/^{/{\"run\": $run, \"killed\": \"$kill_which\", /"
    stop_nodes
    unset pid_of
  done
done
