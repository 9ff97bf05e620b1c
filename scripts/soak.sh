#!/usr/bin/env bash
# Randomized nemesis soak: a 5-node durable cluster on loopback, concurrent
# read-modify-write clients, and a random schedule of the nemeses of
# tests/nemesis.rs (kill -9 + restart, SIGSTOP/SIGCONT, minority partition,
# bridge partition, packet loss + delay) for DURATION seconds, then the same
# checks as the CI tests (no acknowledged write lost, replicas converge, no
# panic or corrupt record in any log).
#
#   scripts/soak.sh [--seed S] [--duration SECONDS]
#
# The seed (printed first) fixes the schedule (which fault, which nodes, how
# long, the gaps) and every client's key choices: rerunning with the same
# seed replays the same schedule. Thread interleavings and timings are the
# machine's, so the history differs in detail. Without --seed a random seed
# is drawn. The summary row is appended to target/soak-table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seed=""
duration=300
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="${2:?--seed needs a value}"; shift 2 ;;
    --seed=*) seed="${1#--seed=}"; shift ;;
    --duration) duration="${2:?--duration needs a value}"; shift 2 ;;
    --duration=*) duration="${1#--duration=}"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$seed" ]; then
  seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
fi
case "$seed" in ''|*[!0-9]*) echo "--seed must be a non-negative integer" >&2; exit 2 ;; esac
case "$duration" in ''|*[!0-9]*) echo "--duration must be a whole number of seconds" >&2; exit 2 ;; esac

echo "soak seed: $seed"
echo "duration: ${duration}s (reproduce with: scripts/soak.sh --seed $seed --duration $duration)"

mkdir -p target
export SOAK_SEED="$seed" SOAK_SECS="$duration" NEMESIS_TABLE="$PWD/target/soak-table.md"
exec cargo test --release --test nemesis soak -- --ignored --nocapture --exact
