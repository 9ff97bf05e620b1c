//! What a node lets its connections take, so that no client or peer can
//! starve it: connection slots (clients, peers, and connections that have
//! not said yet which they are), the node-wide budget of bytes held by
//! requests still being read or served, and the process's file-descriptor
//! limit.
//!
//! Memory held for a request grows with the bytes actually received, never
//! with the length a frame merely announces, and every such byte is taken
//! from one [`ByteBudget`]: past it, readers wait (bounded by their I/O
//! timeout) instead of the node growing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    /// Client connections (Redis's default `maxclients`).
    pub const MAX_CLIENTS: usize = 10_000;
    /// Connections reserved for peers; clients can never take them.
    pub const PEER_CONNECTIONS: usize = 512;
    /// Bytes of requests in flight (being read or served), node-wide.
    pub const REQUEST_BYTES: usize = 512 << 20;
    /// A connection must send its first byte within this.
    pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
}

/// Connection and memory limits of a node's TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Client (RESP) connections open at once; one more is refused with
    /// `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// Peer connections open at once, apart from the clients' share.
    pub peer_connections: usize,
    /// Node-wide budget of request bytes in flight.
    pub request_bytes: usize,
    /// Time a new connection has to send its first byte.
    pub first_byte_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_clients: defaults::MAX_CLIENTS,
            peer_connections: defaults::PEER_CONNECTIONS,
            request_bytes: defaults::REQUEST_BYTES,
            first_byte_timeout: defaults::FIRST_BYTE_TIMEOUT,
        }
    }
}

impl ServerLimits {
    /// Connections that may be open at once, of every kind (pending ones
    /// are bounded by the same total).
    pub fn max_connections(&self) -> usize {
        self.max_clients + self.peer_connections
    }
}

/// The connection slots of a node's port.
#[derive(Debug, Clone)]
pub struct Slots {
    /// Accepted connections that have not sent their first byte yet.
    pub pending: Arc<Semaphore>,
    /// Client connections.
    pub clients: Arc<Semaphore>,
    /// Peer connections.
    pub peers: Arc<Semaphore>,
}

impl Slots {
    /// Slots for `limits`.
    pub fn new(limits: &ServerLimits) -> Slots {
        Slots {
            pending: Arc::new(Semaphore::new(limits.max_connections())),
            clients: Arc::new(Semaphore::new(limits.max_clients)),
            peers: Arc::new(Semaphore::new(limits.peer_connections)),
        }
    }

    /// Takes a slot of `pool` now, or `None` when every slot is taken.
    pub fn take(pool: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        pool.clone().try_acquire_owned().ok()
    }
}

/// The node-wide budget of bytes held by requests being read or served.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    total: usize,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: ByteBudget,
    permit: Option<OwnedSemaphorePermit>,
}

/// Why bytes could not be taken from the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// One request needs more than the whole budget.
    #[error("request of {need} bytes exceeds the node's request memory budget of {total} bytes")]
    TooLarge {
        /// Bytes the request needs.
        need: usize,
        /// The whole budget.
        total: usize,
    },
    /// The budget stayed exhausted for the whole wait.
    #[error("the node is out of request memory (budget {0} bytes); try again")]
    Exhausted(usize),
}

impl ByteBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> ByteBudget {
        // A semaphore holds at most `Semaphore::MAX_PERMITS`.
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        ByteBudget {
            sem: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not taken right now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// The whole budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Takes `n` bytes now, or nothing when they are not free.
    pub fn try_take(&self, n: usize) -> Option<Held> {
        let permit = match u32::try_from(n) {
            Ok(0) => None,
            Ok(n) => Some(self.sem.clone().try_acquire_many_owned(n).ok()?),
            Err(_) => return None,
        };
        Some(Held {
            budget: self.clone(),
            permit,
        })
    }

    /// Nothing held yet.
    pub fn empty(&self) -> Held {
        Held {
            budget: self.clone(),
            permit: None,
        }
    }
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Takes `n` more bytes, waiting at most `wait` for them.
    pub async fn grow(&mut self, n: usize, wait: Duration) -> Result<(), BudgetError> {
        if n == 0 {
            return Ok(());
        }
        let total = self.budget.total;
        if self.bytes() + n > total {
            return Err(BudgetError::TooLarge {
                need: self.bytes() + n,
                total,
            });
        }
        let more = u32::try_from(n).map_err(|_| BudgetError::TooLarge { need: n, total })?;
        let permit = match self.budget.sem.clone().try_acquire_many_owned(more) {
            Ok(p) => p,
            Err(_) => tokio::time::timeout(wait, self.budget.sem.clone().acquire_many_owned(more))
                .await
                .map_err(|_| BudgetError::Exhausted(total))?
                .map_err(|_| BudgetError::Exhausted(total))?,
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }

    /// Adds what `other` holds to `self`.
    pub fn merge(&mut self, mut other: Held) {
        match (&mut self.permit, other.permit.take()) {
            (_, None) => {}
            (Some(p), Some(q)) => p.merge(q),
            (None, q) => self.permit = q,
        }
    }

    /// Moves what `self` holds out, leaving it empty.
    pub fn take(&mut self) -> Held {
        Held {
            budget: self.budget.clone(),
            permit: self.permit.take(),
        }
    }

    /// Gives back all but `keep` bytes.
    pub fn shrink_to(&mut self, keep: usize) {
        let held = self.bytes();
        if keep == 0 {
            self.permit = None;
        } else if keep < held
            && let Some(p) = &mut self.permit
        {
            drop(p.split(held - keep));
        }
    }
}

/// Time a reader may wait for request memory before giving up.
pub const BUDGET_WAIT: Duration = Duration::from_secs(30);
/// Largest single read into a connection's buffer.
pub const READ_CHUNK: usize = 64 * 1024;

/// Reads more bytes into a connection's input buffer. The first `base`
/// bytes of capacity are the connection's own; growing beyond them takes
/// bytes from the node's budget (held in `held`), so a buffer only ever
/// grows with bytes actually arriving (to at most twice them), and never
/// past the budget.
pub async fn read_budgeted(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    held: &mut Held,
    base: usize,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < 512 {
        // Doubling keeps the buffer within twice the bytes received and the
        // copies linear in them (growing by a fixed step would copy a large
        // request quadratically).
        let grow = buf.capacity().max(512);
        let beyond = (buf.capacity() + grow).saturating_sub(base);
        if beyond > held.bytes() {
            held.grow(beyond - held.bytes(), BUDGET_WAIT)
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string()))?;
        }
        buf.reserve_exact(grow);
    }
    reader.read_buf(buf).await
}

/// Drops the front `used` bytes of a connection's buffer, and gives its
/// memory back once a large request is done.
pub fn consume(buf: &mut Vec<u8>, used: usize, held: &mut Held, base: usize) {
    buf.drain(..used);
    if buf.is_empty() && buf.capacity() > base {
        *buf = Vec::with_capacity(512);
        held.shrink_to(0);
    }
}

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit now in force (`None` if it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass; no
    // other memory is involved.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Fits `limits` into `fd_limit` open files (with room for the node's own
/// files), as Redis does with `maxclients`; returns the limits to use and a
/// warning when they had to shrink.
pub fn fit_to_fds(limits: ServerLimits, fd_limit: Option<u64>) -> (ServerLimits, Option<String>) {
    const OWN_FILES: usize = 128;
    let Some(fds) = fd_limit.and_then(|f| usize::try_from(f).ok()) else {
        return (limits, None);
    };
    let room = fds.saturating_sub(OWN_FILES + limits.peer_connections);
    if limits.max_clients <= room {
        return (limits, None);
    }
    let fitted = ServerLimits {
        max_clients: room.max(1),
        ..limits
    };
    let warning = format!(
        "the open-file limit is {fds}: max clients lowered from {} to {} (raise `ulimit -n`)",
        limits.max_clients, fitted.max_clients
    );
    (fitted, Some(warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_grows_with_use_and_is_given_back() {
        let budget = ByteBudget::new(1000);
        let mut a = budget.empty();
        a.grow(600, Duration::from_millis(10)).await.unwrap();
        assert_eq!(budget.available(), 400);
        let mut b = budget.empty();
        // Past the budget, a reader waits, then gives up.
        assert_eq!(
            b.grow(500, Duration::from_millis(20)).await,
            Err(BudgetError::Exhausted(1000))
        );
        assert!(matches!(
            b.grow(2000, Duration::from_millis(20)).await,
            Err(BudgetError::TooLarge { .. })
        ));
        a.shrink_to(100);
        assert_eq!(budget.available(), 900);
        b.grow(500, Duration::from_millis(10)).await.unwrap();
        drop(a);
        drop(b);
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test]
    async fn a_waiting_reader_proceeds_when_bytes_come_back() {
        let budget = ByteBudget::new(100);
        let mut a = budget.empty();
        a.grow(100, Duration::from_millis(10)).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut b = budget.empty();
                b.grow(50, Duration::from_secs(10))
                    .await
                    .map(|()| b.bytes())
            })
        };
        tokio::task::yield_now().await;
        a.shrink_to(0);
        assert_eq!(waiter.await.unwrap(), Ok(50));
    }

    #[test]
    fn limits_fit_the_fd_limit() {
        let l = ServerLimits::default();
        assert_eq!(fit_to_fds(l, Some(1_000_000)).0, l);
        let (fitted, warning) = fit_to_fds(l, Some(1024));
        assert!(fitted.max_clients < 1024 && fitted.max_clients >= 1);
        assert!(warning.unwrap().contains("1024"));
        assert_eq!(fit_to_fds(l, None).0, l);
    }
}
