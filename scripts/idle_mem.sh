#!/usr/bin/env bash
# Memory of one idle in-memory node (`--threads 1`, no data directory), for
# each binary given, interleaved over rounds: RSS split into anonymous and
# file pages (/proc/PID/smaps_rollup), and the anonymous memory of the
# largest anonymous mappings (/proc/PID/smaps). Not a test: it prints
# figures (docs/operations.md, "Scale").
#
#   scripts/idle_mem.sh [--rounds 2] [--secs 15] [--port 26990] [--env K=V]... BIN...
#
# Each node is stopped by its PID once measured. Bounded: a node that does
# not answer within 20 s is reported and stopped.
set -euo pipefail

rounds=2
secs=15
port=26990
envs=()
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || { echo "name at least one db binary" >&2; exit 2; }

dir=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap 'stop; rm -rf "$dir"' EXIT

printf 'round\tbinary\trss_kib\tanon_kib\tfile_kib\tpss_kib\tlargest anonymous mappings (KiB)\n'
for round in $(seq "$rounds"); do
  for bin in "${bins[@]}"; do
    env "${envs[@]}" "$bin" node --listen "127.0.0.1:$port" --cluster-id "idle-$port" --threads 1 \
      --log-file "$dir/node.log" >/dev/null 2>"$dir/stderr" &
    pid=$!
    ok=0
    for _ in $(seq 200); do
      if printf 'PING\n' | timeout 5 "$bin" repl --connect "127.0.0.1:$port" 2>/dev/null | grep -q PONG; then
        ok=1; break
      fi
      sleep 0.1
    done
    if [ "$ok" != 1 ]; then echo "$bin did not answer on $port" >&2; stop; continue; fi
    sleep "$secs"
    read -r rss anon file pss < <(awk '/^Rss:/ {r=$2} /^Anonymous:/ {a=$2} /^Pss:/ {p=$2}
      END {print r, a, r - a, p}' "/proc/$pid/smaps_rollup")
    top=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6); range = $1}
      /^Anonymous:/ && $2 > 0 {print $2, name "@" range}' "/proc/$pid/smaps" \
      | sort -rn | head -5 | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$bin" "$rss" "$anon" "$file" "$pss" "$top"
    stop
  done
done
