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

source benches/ab_lib.sh

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

node_db=$db
client_db=$db
ab_header
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
  for mode in $order; do
    node_extra=()
    client_extra=()
    if [ "$mode" = tls ]; then
      node_extra=(--tls-cert "$pki/node.crt" --tls-key "$pki/node.key" --tls-ca "$pki/ca.pem")
      client_extra=(--tls --tls-ca "$pki/ca.pem")
    fi
    ab_run "$round" "$mode"
  done
done
