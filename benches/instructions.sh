#!/usr/bin/env bash
# User-space instructions per request on a coordinator, counted by
# callgrind: a figure that, unlike CPU time, does not move with the other
# tenants of a shared machine (two runs of one build agree within ~1%).
#
#   benches/instructions.sh --db BIN [--db BIN2 ...] [--rounds 1]
#       [--workloads get,getp16,set,setp16] [--requests 20000] [--clients 50]
#
# For each build and workload: three durable nodes on 127.0.0.1:24341-24343
# (`--threads 1`, `--fsync always`), the first under callgrind. After a
# warm-up it counts the first node's instructions for 10 s of idling, then
# for the workload (redis-benchmark against the first node, 50 clients
# unless --clients says otherwise: with one, nothing is batched and two
# runs of one build agree closely,
# 100-byte values, 20,000 keys), then 10 s of idling again, and prints the
# workload's instructions per request with the lower idle rate taken out,
# and those under the client sessions alone (see `request_path`).
# `get` and `getp16` first fill the keys (through the measured node, so that no
# replication backlog runs during the count). Anti-entropy and compaction
# are off: they run at their own pace, not per request. Kernel time (system
# calls, fsync) is not counted: read it from /proc (benches/compare.sh) or
# perf.
#
# Needs valgrind and redis-benchmark (apt-get install valgrind redis-tools).
# Each run takes 30-90 s (the measured node runs ~50x slower).
set -euo pipefail

dbs=()
rounds=1
workloads=get,set,setp16
requests=20000
clients=50
while [ $# -gt 0 ]; do
    case "$1" in
        --db) dbs+=("$2"); shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ ${#dbs[@]} -gt 0 ] || { echo "usage: $0 --db BIN [--db BIN2] [--rounds N] [--workloads get,getp16,set,setp16] [--requests N] [--clients 50]" >&2; exit 2; }
for tool in valgrind callgrind_control redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install valgrind redis-tools)" >&2; exit 2; }
done

PORTS=(24341 24342 24343)
pids=()
dir=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 2
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    pids=()
    [ -n "$dir" ] && rm -rf "$dir"
    dir=""
}
trap cleanup EXIT

# Total instructions in a callgrind dump.
total() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'; }

# Instructions under the client sessions' tasks (inclusive: parsing, the
# coordinator's work, the local write, encoding the peer calls; not the
# peer connections' reader and writer, whose code callgrind splits over
# several inlined entries). Unlike the total net of idling, it leaves out
# gossip, timers and background work by construction, so a loaded machine
# (which stretches the workload, and with it the idle share taken out)
# does not move it.
request_path() {
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null | awk '
        function n(s) { gsub(",", "", s); return s + 0 }
        /server::connection::\{\{closure\}\} \[/ && !c++ { t = n($1) }
        END { print t + 0 }'
}

run() {
    local db=$1 workload=$2 extra=() bench
    case "$workload" in
        get) bench=(-t get) ;;
        set) bench=(-t set) ;;
        setp16) bench=(-t set -P 16) ;;
        getp16) bench=(-t get -P 16) ;;
        *) echo "unknown workload $workload" >&2; exit 2 ;;
    esac
    dir=$(mktemp -d)
    # Background work runs at its own pace, not per request: off.
    extra=(--aae-interval-ms 0 --compaction-interval-ms 0)
    local seeds=()
    for p in "${PORTS[@]}"; do seeds+=(--seed "127.0.0.1:$p"); done
    for p in "${PORTS[@]}"; do
        local cmd=("$db" node --listen "127.0.0.1:$p" "${seeds[@]}" --cluster-id instructions
            --data-dir "$dir/$p" --fsync always --threads 1 "${extra[@]}" --log-file "$dir/$p.log")
        if [ "$p" = "${PORTS[0]}" ]; then
            valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" --dump-instr=no \
                "${cmd[@]}" >/dev/null 2>"$dir/valgrind.err" &
        else
            "${cmd[@]}" >/dev/null 2>&1 &
        fi
        pids+=($!)
    done
    # Every node takes writes (bounded: 120 s each).
    for p in "${PORTS[@]}"; do
        local ok=""
        for _ in $(seq 240); do
            if [ "$(timeout 5 redis-cli -p "$p" SET "warm$p" x 2>/dev/null)" = OK ]; then ok=1; break; fi
            sleep 0.5
        done
        [ -n "$ok" ] || { echo "node $p never took a write" >&2; exit 1; }
    done
    local port=${PORTS[0]} measured=${pids[0]}
    if [ "$workload" = get ] || [ "$workload" = getp16 ]; then
        timeout 600 redis-benchmark -p "$port" -c 50 -P 16 -n 30000 -t set -d 100 -r 20000 -q >/dev/null 2>&1
    fi
    timeout 300 redis-benchmark -p "$port" -c 20 -n 2000 -t set,get -d 100 -r 20000 -q >/dev/null 2>&1
    callgrind_control -z "$measured" >/dev/null 2>&1
    sleep 10
    callgrind_control -d "$measured" >/dev/null 2>&1
    local idle
    idle=$(total "$(ls "$dir"/cg.out.* | head -1)")
    rm -f "$dir"/cg.out.*
    local t0 t1
    t0=$(date +%s.%N)
    timeout 900 redis-benchmark -p "$port" -c "$clients" -n "$requests" "${bench[@]}" -d 100 -r 20000 -q >/dev/null 2>&1
    t1=$(date +%s.%N)
    callgrind_control -d "$measured" >/dev/null 2>&1
    local busy path
    busy=$(total "$(ls "$dir"/cg.out.* | head -1)")
    path=$(request_path "$(ls "$dir"/cg.out.* | head -1)")
    rm -f "$dir"/cg.out.*
    # Idle again, after: the lower of the two rates is the steady one.
    sleep 10
    callgrind_control -d "$measured" >/dev/null 2>&1
    local idle2
    idle2=$(total "$(ls "$dir"/cg.out.* | head -1)")
    [ "$idle2" -lt "$idle" ] && idle=$idle2
    cleanup
    echo "$busy $idle $t0 $t1 $requests $path" | awk -v db="$db" -v w="$workload" \
        '{ idle_rate = $2 / 10; per = ($1 - idle_rate * ($4 - $3)) / $5;
           printf "%-8s %-40s %8.0f in sessions, %8.0f in all net of idling (idle %.1fM/s, %.1f s)\n", w, db, $6 / $5, per, idle_rate / 1e6, $4 - $3 }'
}

IFS=, read -r -a wl <<<"$workloads"
for _ in $(seq "$rounds"); do
    for w in "${wl[@]}"; do
        for db in "${dbs[@]}"; do
            run "$db" "$w"
        done
    done
done
