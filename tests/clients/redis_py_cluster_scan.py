"""redis-py's cluster-wide commands against a running distro-db cluster.

Driven by tests/redis_clients.rs, which starts the cluster, writes the keys
and passes:
  DDB_PORTS  comma-separated client ports of the nodes
  DDB_KEYS   how many keys named cs:<i> it wrote (and nothing else cs:*)

RedisCluster sends SCAN (scan_iter), KEYS and DBSIZE to every primary and
adds up the answers; a plain client pinned to one node scans through it
alone. Both must see every key exactly once. Exits non-zero with a message
on the first failure.
"""

import os
import sys

import redis
from redis.cluster import RedisCluster

PORTS = [int(p) for p in os.environ["DDB_PORTS"].split(",")]
KEYS = int(os.environ["DDB_KEYS"])
EXPECTED = {f"cs:{i}".encode() for i in range(KEYS)}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def once(found, who):
    """Every expected key, each exactly once."""
    check(len(found) == len(set(found)),
          f"{who}: {len(found)} keys returned, {len(set(found))} distinct")
    check(set(found) == EXPECTED,
          f"{who}: {len(set(found) & EXPECTED)} of {KEYS} keys, "
          f"{len(set(found) - EXPECTED)} unexpected")


def main():
    for port in PORTS:
        rc = RedisCluster(host="127.0.0.1", port=port, socket_timeout=10,
                          socket_connect_timeout=5)
        # The map: one primary, every other node its replica.
        primaries = rc.get_primaries()
        replicas = rc.get_replicas()
        check(len(primaries) == 1, f"via {port}: {len(primaries)} primaries")
        check(len(replicas) == len(PORTS) - 1, f"via {port}: {len(replicas)} replicas")
        once(list(rc.scan_iter(match="cs:*", count=100)), f"RedisCluster({port}).scan_iter")
        once(rc.keys("cs:*"), f"RedisCluster({port}).keys")
        size = rc.dbsize()
        check(size == KEYS, f"RedisCluster({port}).dbsize() = {size}, not {KEYS}")
        rc.close()

    # A plain client pinned to one node sees the whole keyspace through it,
    # whichever node that is (the primary or a replica).
    for port in PORTS:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10,
                        socket_connect_timeout=5)
        once(list(r.scan_iter(match="cs:*", count=100)), f"Redis({port}).scan_iter")
        check(r.dbsize() == KEYS, f"Redis({port}).dbsize() = {r.dbsize()}")
        r.close()
    print("redis-py cluster scan: all checks passed")


if __name__ == "__main__":
    main()
