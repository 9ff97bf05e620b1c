//! The client connections of a node: a registry for `CLIENT ID`, `CLIENT
//! LIST`, `CLIENT INFO`, `CLIENT KILL` and the client counts `INFO` shows.
//! Each session registers itself and unregisters when it ends; `CLIENT
//! KILL` cancels a session's token, which ends it at its next step.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::commands::connection::KillFilter;

/// One connected client.
#[derive(Debug)]
pub struct ClientHandle {
    /// `CLIENT ID`.
    pub id: u64,
    /// The client's address (`ip:port`).
    pub addr: String,
    /// This node's address of the connection.
    pub laddr: String,
    created: Instant,
    last_active: Mutex<Instant>,
    name: Mutex<Option<String>>,
    lib: Mutex<(Option<String>, Option<String>)>,
    last_cmd: Mutex<String>,
    /// The user authenticated as, when not `default`.
    user: Mutex<Option<String>>,
    proto: AtomicU8,
    /// Cancelled by `CLIENT KILL`.
    pub kill: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientHandle {
    /// The name set with `CLIENT SETNAME` / `HELLO ... SETNAME`.
    pub fn name(&self) -> Option<String> {
        lock(&self.name).clone()
    }

    /// Sets (or with an empty name, clears) the connection's name.
    pub fn set_name(&self, name: &[u8]) {
        *lock(&self.name) = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
    }

    /// Records `CLIENT SETINFO LIB-NAME|LIB-VER`.
    pub fn set_lib(&self, attr: &str, value: &[u8]) {
        let v = String::from_utf8_lossy(value).into_owned();
        let mut lib = lock(&self.lib);
        if attr == "LIB-NAME" {
            lib.0 = Some(v);
        } else {
            lib.1 = Some(v);
        }
    }

    /// Records the command the client just sent.
    pub fn touch(&self, cmd: &[u8]) {
        *lock(&self.last_active) = Instant::now();
        let mut last = lock(&self.last_cmd);
        // Compared in place: a client repeats its command far more often
        // than it changes it, and a new string at every command was one of
        // a SET's ~50 allocations.
        // (It starts as `NULL`, which names no command.)
        if !last.as_bytes().eq_ignore_ascii_case(cmd) {
            *last = String::from_utf8_lossy(cmd).to_ascii_lowercase();
        }
    }

    /// Records the user the connection authenticated as.
    pub fn set_user(&self, name: &str) {
        *lock(&self.user) = (name != crate::acl::DEFAULT_USER).then(|| name.to_string());
    }

    /// The user the connection runs as (`default` until AUTH says otherwise).
    pub fn user(&self) -> String {
        lock(&self.user)
            .clone()
            .unwrap_or_else(|| crate::acl::DEFAULT_USER.to_string())
    }

    /// Records the protocol version (2 or 3).
    pub fn set_proto(&self, v: u8) {
        self.proto.store(v, Ordering::Relaxed);
    }

    /// The connection as one `CLIENT LIST` line (Redis's fields).
    pub fn line(&self) -> String {
        let (lib_name, lib_ver) = lock(&self.lib).clone();
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.name().unwrap_or_default(),
            self.created.elapsed().as_secs(),
            lock(&self.last_active).elapsed().as_secs(),
            lock(&self.last_cmd),
            self.user(),
            self.proto.load(Ordering::Relaxed),
            lib_name.unwrap_or_default(),
            lib_ver.unwrap_or_default(),
        )
    }
}

/// Every client of the node.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    /// Connections accepted since start.
    pub total: AtomicU64,
}

/// Removes a client from the registry when its session ends.
pub struct Registration {
    clients: Arc<Clients>,
    /// The client.
    pub handle: Arc<ClientHandle>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.clients.map).remove(&self.handle.id);
    }
}

impl Clients {
    /// An empty registry.
    pub fn new() -> Arc<Clients> {
        Arc::new(Clients::default())
    }

    /// Registers a new connection.
    pub fn register(self: &Arc<Self>, addr: String, laddr: String) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            created: Instant::now(),
            last_active: Mutex::new(Instant::now()),
            name: Mutex::new(None),
            lib: Mutex::new((None, None)),
            last_cmd: Mutex::new(String::from("NULL")),
            user: Mutex::new(None),
            proto: AtomicU8::new(2),
            kill: CancellationToken::new(),
        });
        lock(&self.map).insert(id, handle.clone());
        Registration {
            clients: self.clone(),
            handle,
        }
    }

    /// Clients connected now.
    pub fn count(&self) -> usize {
        lock(&self.map).len()
    }

    /// `CLIENT LIST` (only `ids`, if any are given).
    pub fn list(&self, ids: &[u64]) -> String {
        lock(&self.map)
            .values()
            .filter(|c| ids.is_empty() || ids.contains(&c.id))
            .map(|c| c.line() + "\n")
            .collect()
    }

    /// Closes the clients `filter` names (not `me` when it says to skip
    /// itself); returns how many.
    pub fn kill(&self, filter: &KillFilter, me: u64) -> usize {
        let map = lock(&self.map);
        let mut killed = 0;
        for c in map.values() {
            let skip = filter.skipme && c.id == me;
            let hit = !filter.matches_none
                && filter.user.as_ref().is_none_or(|u| *u == c.user())
                && filter
                    .older_than_secs
                    .is_none_or(|age| c.created.elapsed().as_secs() > age)
                && filter.id.is_none_or(|id| id == c.id)
                && filter.addr.as_ref().is_none_or(|a| *a == c.addr)
                && filter.laddr.as_ref().is_none_or(|a| *a == c.laddr);
            if hit && !skip {
                c.kill.cancel();
                killed += 1;
            }
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_register_list_and_kill() {
        let clients = Clients::new();
        let a = clients.register("127.0.0.1:1000".into(), "127.0.0.1:7000".into());
        let b = clients.register("127.0.0.1:1001".into(), "127.0.0.1:7000".into());
        assert_eq!(clients.count(), 2);
        a.handle.set_name(b"worker");
        a.handle.touch(b"GET");
        let list = clients.list(&[]);
        assert!(list.contains(&format!("id={} addr=127.0.0.1:1000", a.handle.id)));
        assert!(list.contains("name=worker") && list.contains("cmd=get"));
        assert_eq!(clients.list(&[b.handle.id]).lines().count(), 1);
        let by_addr = KillFilter {
            addr: Some("127.0.0.1:1001".into()),
            skipme: true,
            ..KillFilter::default()
        };
        assert_eq!(clients.kill(&by_addr, a.handle.id), 1);
        assert!(b.handle.kill.is_cancelled() && !a.handle.kill.is_cancelled());
        // SKIPME yes spares the caller.
        let me = KillFilter {
            id: Some(a.handle.id),
            skipme: true,
            ..KillFilter::default()
        };
        assert_eq!(clients.kill(&me, a.handle.id), 0);
        drop(b);
        assert_eq!(clients.count(), 1);
    }
}
