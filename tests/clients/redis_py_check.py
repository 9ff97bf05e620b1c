"""redis-py, unmodified, against a running distro-db cluster.

Driven by tests/redis_clients.rs, which starts the cluster and passes:
  DDB_PORTS  comma-separated client ports of the nodes (first = the one used)
  DDB_KILL_PID  pid of a node (not the first) this script kills -9 mid-run

Checks what an application does with the library's defaults (RESP3 in
redis-py 8): plain commands, pipelines with and without transaction,
MGET/MSET, expiry, counters, SCAN, a key holding siblings, and a
RedisCluster client that keeps serving through a node's kill -9. Exits
non-zero with a message on the first failure.
"""

import os
import signal
import sys
import time

import redis
from redis.cluster import RedisCluster

PORTS = [int(p) for p in os.environ["DDB_PORTS"].split(",")]
KILL_PID = int(os.environ["DDB_KILL_PID"])


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    r = redis.Redis(host="127.0.0.1", port=PORTS[0], socket_timeout=10)
    other = redis.Redis(host="127.0.0.1", port=PORTS[1], socket_timeout=10)
    check(r.ping() is True, "PING")
    info = r.client_info()
    check(str(info.get("resp")) == "3", f"the default connection speaks RESP3: {info}")

    # Plain commands.
    check(r.set("py:a", "1") is True, "SET")
    check(other.get("py:a") == b"1", "GET through another node")
    check(r.delete("py:a", "py:none") == 1, "DEL of two keys, one existing")
    check(r.get("py:a") is None, "GET after DEL")
    check(r.mset({"py:m1": "x", "py:m2": "y"}) is True, "MSET")
    check(r.mget("py:m1", "py:m2", "py:m3") == [b"x", b"y", None], "MGET")
    check(r.exists("py:m1", "py:m2", "py:m3") == 2, "EXISTS")
    check(r.set("py:m1", "z", nx=True) is None, "SET NX on an existing key")
    check(r.set("py:m1", "z", xx=True, get=True) == b"x", "SET XX GET")
    check(r.strlen("py:m1") == 1 and r.type("py:m1") == b"string", "STRLEN/TYPE")

    # Pipelines: plain, and MULTI/EXEC.
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"py:p{i}", i)
    check(all(p.execute()), "a 100-command pipeline")
    p = r.pipeline(transaction=True)
    p.set("py:t", "1").incr("py:tn").get("py:t")
    res = p.execute()
    check(res == [True, 1, b"1"], f"pipeline(transaction=True) applies everything: {res}")
    # A transaction with a command refused while queuing applies nothing.
    p = r.pipeline(transaction=True)
    p.set("py:t2", "never").execute_command("NOSUCHCOMMAND")
    try:
        p.execute()
        check(False, "a transaction with a bad command must fail")
    except redis.exceptions.ResponseError:
        pass
    check(r.get("py:t2") is None, "nothing of a failed transaction is applied")

    # Expiry.
    check(r.set("py:e", "v", px=500) is True, "SET PX")
    pttl = r.pttl("py:e")
    check(0 < pttl <= 500, f"PTTL {pttl}")
    check(r.expire("py:m2", 100) is True and 0 < r.ttl("py:m2") <= 100, "EXPIRE/TTL")
    check(r.persist("py:m2") is True and r.ttl("py:m2") == -1, "PERSIST")
    deadline = time.time() + 10
    while r.get("py:e") is not None and time.time() < deadline:
        time.sleep(0.05)
    check(r.get("py:e") is None and r.ttl("py:e") == -2, "the key expired")

    # Counters.
    check(r.incr("py:n") == 1 and r.incrby("py:n", 9) == 10, "INCR/INCRBY")
    # The reply is the counter as the writing replica sees it (docs/redis.md,
    # Counters): with W=2 that replica may not hold the increments yet. The
    # quorum read after it counts all of them.
    d = other.decr("py:n")
    check(d in (9, 0, -1), f"DECR through another node answered {d}")
    check(r.get("py:n") == b"9", "a counter reads as a number")

    # SCAN walks every key once.
    seen = list(r.scan_iter(match="py:p*", count=50))
    check(len(seen) == 100 and len(set(seen)) == 100, f"SCAN found {len(seen)} of 100")

    # Siblings: two writes from the same context through two nodes.
    r.set("py:cart", "base")
    ctx = r.execute_command("VGET", "py:cart")[0]
    r.execute_command("SET", "py:cart", "apple", b"CTX=" + ctx)
    other.execute_command("SET", "py:cart", "pear", b"CTX=" + ctx)
    v = r.get("py:cart")
    check(v in (b"apple", b"pear"), f"a GET of a key with siblings answers one value: {v!r}")
    check(v.decode() in ("apple", "pear"), "the value decodes like any string")
    both = r.execute_command("VGET", "py:cart", "R=3")
    check(sorted(both[1:]) == [b"apple", b"pear"], f"VGET shows both: {both}")
    # Resolve: write back with the context that saw both.
    r.execute_command("SET", "py:cart", "apple+pear", b"CTX=" + both[0])
    check(r.get("py:cart") == b"apple+pear", "the merged value")

    # Cluster mode through a node's kill -9.
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0], socket_timeout=5)
    check(len(rc.get_nodes()) == len(PORTS), f"RedisCluster sees {len(rc.get_nodes())} nodes")
    ok = 0
    ok_after_kill = 0
    failures = []
    killed_at = None
    first_ok_after_kill = None
    start = time.time()
    i = 0
    while time.time() - start < 10:
        i += 1
        if killed_at is None and ok >= 300:
            os.kill(KILL_PID, signal.SIGKILL)
            killed_at = time.time()
        try:
            rc.set(f"py:fo{i}", i)
            check(rc.get(f"py:fo{i}") == str(i).encode(), "read back through the cluster client")
            ok += 1
            if killed_at is not None:
                ok_after_kill += 1
            if killed_at is not None and first_ok_after_kill is None and failures:
                first_ok_after_kill = time.time()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ClusterError) as e:
            failures.append((time.time(), repr(e)[:120]))
        if killed_at is not None and time.time() - killed_at > 6:
            break
    check(killed_at is not None, "the node was killed")
    after_reconnect = [f for f in failures if first_ok_after_kill and f[0] > first_ok_after_kill]
    print(f"cluster client: {ok} ok, {len(failures)} failed "
          f"({len(after_reconnect)} after the reconnect): {failures[:3]}")
    check(not after_reconnect, f"failures after the reconnect: {after_reconnect[:3]}")
    check(len(failures) <= 5, f"too many failures around the kill: {failures[:5]}")
    check(ok_after_kill >= 100, f"the client kept serving after the kill: {ok_after_kill} ok")
    print("redis-py: all checks passed")


if __name__ == "__main__":
    main()
