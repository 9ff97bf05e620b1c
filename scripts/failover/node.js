// One failover run of node-redis's createCluster or ioredis's Redis.Cluster
// against a distro-db cluster. Run by scripts/failover/measure.sh, which
// starts the nodes and passes:
//   DDB_PORTS     comma-separated client ports (the first is the root node)
//   DDB_KILL_PID  the pid of the node to kill -9 after 300 good requests
//   DDB_SECONDS   how long to go on after the kill (default 8)
//   DDB_CLIENT    node-redis (default) or ioredis
//   DDB_CONFIG    which client options: see CONFIGS below
// Each request is a SET and a GET of a new key. Prints one line of figures
// (as redis_py.py does).
const PORTS = process.env.DDB_PORTS.split(",").map(Number);
const KILL_PID = Number(process.env.DDB_KILL_PID);
const SECONDS = Number(process.env.DDB_SECONDS || "8");
const CLIENT = process.env.DDB_CLIENT || "node-redis";
const CONFIG = process.env.DDB_CONFIG || "defaults";

// node-redis's options. `socketTimeout` is the idle timeout of node-redis
// 5+: it closes a connection that had no traffic for that long, and
// createCluster then answers "The client is closed" for good.
const CONFIGS = {
  "defaults": {},
  "socketTimeout": { defaults: { socket: { connectTimeout: 2000, socketTimeout: 5000 } } },
  "connectTimeout": { defaults: { socket: { connectTimeout: 2000 } } },
  // The configuration docs/redis.md recommends: a connect timeout and a
  // per-command timeout (not socketTimeout).
  "recommended": { defaults: { socket: { connectTimeout: 2000 }, commandOptions: { timeout: 5000 } } },
  "connectTimeout+reconnect": {
    defaults: { socket: { connectTimeout: 2000, reconnectStrategy: (n) => (n > 3 ? false : 100) } },
  },
};

function makeClient() {
  if (CLIENT === "ioredis") {
    const Redis = require("ioredis");
    const c = new Redis.Cluster(PORTS.map((port) => ({ host: "127.0.0.1", port })), {
      redisOptions: { connectTimeout: 2000, commandTimeout: 5000 },
    });
    c.on("error", () => {});
    return { c, ready: c.ping(), name: `ioredis ${require("ioredis/package.json").version} Redis.Cluster` };
  }
  const { createCluster } = require("redis");
  const c = createCluster({
    rootNodes: PORTS.map((port) => ({ url: `redis://127.0.0.1:${port}` })),
    ...CONFIGS[CONFIG],
  });
  c.on("error", () => {});
  return { c, ready: c.connect(), name: `node-redis ${require("redis/package.json").version} createCluster (${CONFIG})` };
}

(async () => {
  const { c, ready, name } = makeClient();
  await ready;
  let ok = 0, okAfter = 0, killed = null, slowest = 0, i = 0;
  const failures = [];
  while (killed === null || Date.now() - killed < SECONDS * 1000) {
    i += 1;
    if (killed === null && ok >= 300) {
      process.kill(KILL_PID, "SIGKILL");
      killed = Date.now();
    }
    const t = Date.now();
    try {
      await c.set(`fo:${i}`, String(i));
      const v = await c.get(`fo:${i}`);
      if (v !== String(i)) throw new Error("read back a different value");
      ok += 1;
      if (killed !== null) okAfter += 1;
    } catch (e) {
      failures.push([Date.now(), (e && (e.code || e.message)) || String(e)]);
      // A client that fails at once would spin: pace the retries.
      await new Promise((r) => setTimeout(r, 10));
    }
    if (killed !== null) slowest = Math.max(slowest, Date.now() - t);
  }
  console.log(JSON.stringify({
    client: name,
    failed: failures.length,
    first_failed_ms: failures.length ? failures[0][0] - killed : null,
    last_failed_ms: failures.length ? failures[failures.length - 1][0] - killed : null,
    errors: [...new Set(failures.map((f) => String(f[1]).slice(0, 60)))].sort(),
    ok_after_kill: okAfter,
    slowest_ms: slowest,
  }));
  setTimeout(() => process.exit(0), 100);
  try { await (c.quit ? c.quit() : c.disconnect()); } catch (_) {}
})().catch((e) => { console.error(e); process.exit(1); });
