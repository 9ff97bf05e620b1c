"""One failover run of redis-py's RedisCluster against a distro-db cluster.

Run by scripts/failover/measure.sh, which starts the nodes and passes:
  DDB_PORTS     comma-separated client ports (the first is the startup node)
  DDB_KILL_PID  the pid of the node to kill -9 after 300 good requests
  DDB_SECONDS   how long to go on after the kill (default 8)
Each request is a SET and a GET of a new key. Prints one line of figures:
failed requests, when the first and last failed (ms after the kill), the
slowest request, and the requests that succeeded after the kill.
"""

import json
import os
import signal
import sys
import time

import redis
from redis.cluster import RedisCluster

PORTS = [int(p) for p in os.environ["DDB_PORTS"].split(",")]
KILL_PID = int(os.environ["DDB_KILL_PID"])
SECONDS = float(os.environ.get("DDB_SECONDS", "8"))


def main():
    rc = RedisCluster(host="127.0.0.1", port=PORTS[0], socket_timeout=5,
                      socket_connect_timeout=2)
    ok = ok_after = 0
    failures = []
    killed = None
    slowest = 0.0
    i = 0
    while killed is None or time.time() - killed < SECONDS:
        i += 1
        if killed is None and ok >= 300:
            os.kill(KILL_PID, signal.SIGKILL)
            killed = time.time()
        t = time.time()
        try:
            rc.set(f"fo:{i}", i)
            if rc.get(f"fo:{i}") != str(i).encode():
                raise ValueError("read back a different value")
            ok += 1
            if killed is not None:
                ok_after += 1
        except (redis.exceptions.RedisError, ValueError) as e:
            failures.append((time.time(), type(e).__name__))
        if killed is not None:
            slowest = max(slowest, time.time() - t)
        if killed is None and time.time() - t > 30:
            sys.exit("no progress before the kill")
    ms = lambda t: round((t - killed) * 1000)
    print(json.dumps({
        "client": f"redis-py {redis.__version__} RedisCluster",
        "failed": len(failures),
        "first_failed_ms": ms(failures[0][0]) if failures else None,
        "last_failed_ms": ms(failures[-1][0]) if failures else None,
        "errors": sorted({f[1] for f in failures}),
        "ok_after_kill": ok_after,
        "slowest_ms": round(slowest * 1000),
    }))


if __name__ == "__main__":
    main()
