"""redis-py, unmodified, against a node started with ACL users.

Driven by tests/redis_clients.rs, which starts the node with the users
reader:rpw:read, writer:wpw:readwrite and root:rootpw:admin and passes:
  DDB_PORT     the node's client port
  DDB_NODE_ID  the node's id

Checks username/password authentication in RESP3 (redis-py sends
`HELLO 3 AUTH user pass`) and RESP2 (`AUTH user pass`), that a read-only
user reads and gets NoPermissionError for a write (which changes nothing),
that a read-write user cannot stop the node, and ACL WHOAMI/LIST/USERS.
Exits non-zero with a message on the first failure.
"""

import os
import sys

import redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

PORT = int(os.environ["DDB_PORT"])
NODE_ID = os.environ["DDB_NODE_ID"]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def client(user, password, protocol=3):
    return redis.Redis(host="127.0.0.1", port=PORT, username=user, password=password,
                       protocol=protocol, socket_timeout=10)


def refused(f, what):
    try:
        f()
    except NoPermissionError as e:
        check("has no permissions to run" in str(e), f"{what}: {e}")
        return
    except ResponseError as e:
        check(False, f"{what}: not a NoPermissionError: {type(e).__name__} {e}")
    check(False, f"{what}: ran")


def main():
    root = client("root", "rootpw")
    check(root.acl_whoami() == "root" or root.acl_whoami() == b"root", "root WHOAMI")
    check(root.set("py:k", "v") is True, "root SET")
    users = [u if isinstance(u, str) else u.decode() for u in root.acl_users()]
    check(users == ["default", "reader", "root", "writer"], f"ACL USERS: {users}")
    lines = [l if isinstance(l, str) else l.decode() for l in root.acl_list()]
    check(len(lines) == 4 and lines[1].startswith("user reader on #"), f"ACL LIST: {lines}")
    check(all("rpw" not in l and "wpw" not in l for l in lines), "ACL LIST shows a password")

    for protocol in (3, 2):
        reader = client("reader", "rpw", protocol)
        check(reader.get("py:k") == b"v", f"reader GET (RESP{protocol})")
        who = reader.acl_whoami()
        check(who in ("reader", b"reader"), f"reader WHOAMI (RESP{protocol}): {who}")
        refused(lambda: reader.set("py:k", "x"), f"reader SET (RESP{protocol})")
        refused(lambda: reader.delete("py:k"), f"reader DEL (RESP{protocol})")
        check(root.get("py:k") == b"v", "the refused writes changed nothing")

        writer = client("writer", "wpw", protocol)
        check(writer.set("py:w", "1") is True, f"writer SET (RESP{protocol})")
        check(writer.incr("py:n") >= 1, f"writer INCR (RESP{protocol})")
        refused(lambda: writer.execute_command("KILL", NODE_ID), f"writer KILL (RESP{protocol})")
        refused(lambda: writer.config_set("maxmemory", "1"), f"writer CONFIG SET (RESP{protocol})")
        refused(lambda: writer.client_kill_filter(_id=1), f"writer CLIENT KILL (RESP{protocol})")
        # A pipeline with a forbidden command: the others run.
        p = writer.pipeline(transaction=False)
        p.set("py:p", "1").execute_command("SHUTDOWN").get("py:p")
        out = p.execute(raise_on_error=False)
        check(out[0] is True and isinstance(out[1], NoPermissionError) and out[2] == b"1",
              f"pipeline (RESP{protocol}): {out}")
        # A transaction with a forbidden command is discarded.
        t = writer.pipeline(transaction=True)
        t.set("py:t", "1").execute_command("CONFIG", "SET", "maxmemory", "1")
        try:
            t.execute()
            check(False, "a transaction with CONFIG SET ran")
        except (ResponseError, NoPermissionError):
            pass
        check(root.get("py:t") is None, f"the aborted transaction wrote (RESP{protocol})")

        bad = client("reader", "nope", protocol)
        try:
            bad.ping()
            check(False, "a wrong password was accepted")
        except AuthenticationError:
            pass

    check(root.ping() is True, "the node still serves")
    print("redis-py acl: all checks passed")


main()
