//! Is a port free for a node, and if not, who holds it?
//!
//! A node binds its port twice: TCP (tokio's `TcpListener::bind`: socket,
//! SO_REUSEADDR, bind, listen) and UDP (gossip, a plain bind). [`check`] does
//! exactly the same (std's `TcpListener::bind` also sets SO_REUSEADDR on
//! Unix, then binds and listens), so it calls a port taken only when a node
//! could not bind it: a listening or bound socket. Connections in TIME-WAIT
//! left by an earlier node on that port do not count; a bind without
//! SO_REUSEADDR would fail on them, though the node would start fine.
//!
//! One kind of TIME-WAIT does block every bind, SO_REUSEADDR or not: that of
//! an outgoing connection that got the port as its ephemeral local port
//! (Linux picks those from 32768-60999, which holds the default ports
//! 55551-55560) and closed first. No process holds it, and the kernel frees
//! it 60 s after the last such connection closed; [`Busy`] says so. Linux's
//! connect() picks even ephemeral ports first, so a machine that keeps
//! making short loopback connections (a benchmark, a test suite: 28,000 in
//! TIME-WAIT were seen here) can keep every even port of that range,
//! 55552 included, in TIME-WAIT: that is why `db local` falls back to
//! blocks below the ephemeral range.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};

/// Why a port cannot be used.
#[derive(Debug)]
pub struct Busy {
    /// The port.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub proto: &'static str,
    /// What the bind said.
    pub error: io::Error,
    /// The process holding it (`pid 123: db slave 55551`), when it can be found.
    pub owner: Option<String>,
    /// Only connections in TIME-WAIT hold it: it frees by itself within 60 s.
    pub transient: bool,
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = if self.error.kind() == io::ErrorKind::AddrInUse {
            "in use".to_string()
        } else {
            self.error.to_string()
        };
        write!(f, "port {} {} {reason}", self.port, self.proto)?;
        if let Some(owner) = &self.owner {
            write!(f, " by {owner}")?;
        } else if self.transient {
            write!(
                f,
                " by connections in TIME-WAIT (outgoing connections had it as their ephemeral port; it frees 60 s after the last one closed)"
            )?;
        }
        Ok(())
    }
}

/// Binds `ip:port` for TCP as a node's listener would (SO_REUSEADDR, bind,
/// listen) and for UDP as its gossip socket would; both are closed at once.
/// Cheap: who holds a taken port is only looked up by [`Busy::explained`].
pub fn check(ip: Ipv4Addr, port: u16) -> Result<(), Busy> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let busy = |proto, error| Busy {
        port,
        proto,
        error,
        owner: None,
        transient: false,
    };
    TcpListener::bind(addr).map_err(|e| busy("TCP", e))?;
    UdpSocket::bind(addr).map_err(|e| busy("UDP", e))?;
    Ok(())
}

impl Busy {
    /// Looks up who holds the port (a process, or TIME-WAIT connections),
    /// unless that is known already. Reads `/proc`: slow on a machine with
    /// tens of thousands of sockets, so only for a port an error names.
    pub fn explained(mut self) -> Busy {
        if self.owner.is_none() && !self.transient {
            let proto = if self.proto == "UDP" { "udp" } else { "tcp" };
            let (owner, transient) = holder(self.port, proto);
            self.owner = owner;
            self.transient = transient && self.proto == "TCP";
        }
        self
    }
}

/// The process holding a socket on local `port` (Linux `/proc`; `None`
/// elsewhere or when the process belongs to another user), and whether only
/// connections in TIME-WAIT use the port.
pub fn holder(port: u16, proto: &str) -> (Option<String>, bool) {
    let mut time_wait = false;
    let owner = owner(port, proto, &mut time_wait);
    (owner.clone(), owner.is_none() && time_wait)
}

fn owner(port: u16, proto: &str, time_wait: &mut bool) -> Option<String> {
    let mut inodes = Vec::new();
    for table in [format!("/proc/net/{proto}"), format!("/proc/net/{proto}6")] {
        let Ok(text) = std::fs::read_to_string(&table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            // TIME-WAIT (06) sockets belong to no process.
            if *state == "06" {
                *time_wait = true;
            } else if *inode != "0" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let mut cmd: String = String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if cmd.len() > 80 {
                    let cut = (0..=80)
                        .rev()
                        .find(|&i| cmd.is_char_boundary(i))
                        .unwrap_or(0);
                    cmd.truncate(cut);
                    cmd.push_str("...");
                }
                return Some(format!("pid {pid} ({cmd})"));
            }
        }
    }
    None
}

/// How many blocks `db local` tries, ten ports apart, when the default
/// block is taken: a few next to it (out of the 55551-55560 range that nodes
/// started without `--seed` look for each other in), then from
/// [`FALLBACK_LOW`] on.
const FALLBACK_NEAR: u16 = 4;
/// See [`FALLBACK_NEAR`].
const FALLBACK_FAR: u16 = 40;
/// First fallback block below Linux's ephemeral range (32768-60999), where
/// no outgoing connection can hold a port.
pub const FALLBACK_LOW: u16 = 25551;

/// Picks the ports for `nodes` nodes starting at `base`. An explicit base
/// must be free (the error names the port, the protocol and the holder);
/// the default one falls back to the next free block, with a notice saying so.
pub fn choose(
    base: u16,
    nodes: u16,
    explicit: bool,
    check: impl Fn(u16) -> Result<(), Busy>,
) -> Result<(Vec<u16>, Option<String>), String> {
    let block = |start: u16| -> Option<Vec<u16>> {
        let last = u32::from(start) + u32::from(nodes) - 1;
        (start >= 1 && last <= u32::from(u16::MAX)).then(|| (start..=last as u16).collect())
    };
    let first_busy = |ports: &[u16]| ports.iter().find_map(|&p| check(p).err());
    let Some(ports) = block(base) else {
        return Err(format!(
            "--base-port {base} with --nodes {nodes} does not fit: ports must be 1-65535"
        ));
    };
    let range = |p: &[u16]| format!("{}-{}", p[0], p[p.len() - 1]);
    let Some(busy) = first_busy(&ports) else {
        return Ok((ports, None));
    };
    let busy = busy.explained();
    if explicit {
        return Err(format!(
            "cannot use ports {}: {busy}; stop it or pick another --base-port",
            range(&ports)
        ));
    }
    let near = (1..=FALLBACK_NEAR).filter_map(|i| base.checked_add(i * 10));
    let far = (0..FALLBACK_FAR).filter_map(|i| FALLBACK_LOW.checked_add(i * 10));
    for start in near.chain(far) {
        let Some(other) = block(start) else { continue };
        if other.iter().any(|p| ports.contains(p)) {
            continue;
        }
        if first_busy(&other).is_none() {
            let notice = format!(
                "ports {} are taken ({busy}); using {} instead",
                range(&ports),
                range(&other)
            );
            return Ok((other, Some(notice)));
        }
    }
    Err(format!(
        "ports {} are taken ({busy}), and so are the {} blocks tried after them; pass --base-port",
        range(&ports),
        FALLBACK_NEAR + FALLBACK_FAR
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(port: u16) -> Busy {
        Busy {
            port,
            proto: "TCP",
            error: io::Error::from(io::ErrorKind::AddrInUse),
            owner: Some("pid 7 (db slave 55551)".into()),
            transient: false,
        }
    }

    #[test]
    fn the_default_block_falls_back_to_a_free_one() {
        let taken = |p: u16| if p == 55552 { Err(busy(p)) } else { Ok(()) };
        let (ports, notice) = choose(55551, 3, false, taken).unwrap();
        assert_eq!(ports, [55561, 55562, 55563]);
        assert_eq!(
            notice.unwrap(),
            "ports 55551-55553 are taken (port 55552 TCP in use by pid 7 (db slave 55551)); using 55561-55563 instead"
        );
        let (ports, notice) = choose(55551, 3, false, |_| Ok(())).unwrap();
        assert_eq!((ports, notice), (vec![55551, 55552, 55553], None));
        // Every even port of the ephemeral range in TIME-WAIT (many short
        // outgoing connections): fall back below that range.
        let evens = |p: u16| {
            if p % 2 == 0 && p >= 32768 {
                Err(busy(p))
            } else {
                Ok(())
            }
        };
        let (ports, notice) = choose(55551, 3, false, evens).unwrap();
        assert_eq!(ports, [25551, 25552, 25553]);
        assert!(notice.unwrap().ends_with("using 25551-25553 instead"));
        let err = choose(55551, 3, false, |p| Err(busy(p))).unwrap_err();
        assert!(
            err.contains("and so are the 44 blocks tried after them"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_block_that_is_taken_is_an_error_naming_the_cause() {
        let taken = |p: u16| if p == 24002 { Err(busy(p)) } else { Ok(()) };
        let err = choose(24001, 3, true, taken).unwrap_err();
        assert_eq!(
            err,
            "cannot use ports 24001-24003: port 24002 TCP in use by pid 7 (db slave 55551); stop it or pick another --base-port"
        );
        assert!(choose(65535, 2, true, |_| Ok(())).is_err());
        assert!(choose(0, 1, true, |_| Ok(())).is_err());
        assert!(choose(65535, 1, true, |_| Ok(())).is_ok());
    }

    #[test]
    fn a_listener_is_taken_and_its_owner_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = check(Ipv4Addr::LOCALHOST, port).unwrap_err().explained();
        assert_eq!(err.proto, "TCP");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("port {port} TCP in use")),
            "{text}"
        );
        let me = std::process::id().to_string();
        assert!(text.contains(&format!("pid {me} (")), "{text}");
        drop(l);
        // A UDP socket alone (on a port whose TCP side is free: port 0 could
        // get an ephemeral port that TIME-WAIT connections hold for TCP).
        let port = (20000..32000)
            .find(|&p| check(Ipv4Addr::LOCALHOST, p).is_ok())
            .unwrap();
        let _u = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(check(Ipv4Addr::LOCALHOST, port).unwrap_err().proto, "UDP");
    }

    #[test]
    fn a_port_held_only_by_time_wait_says_so() {
        let b = Busy {
            port: 55552,
            proto: "TCP",
            error: io::Error::from(io::ErrorKind::AddrInUse),
            owner: None,
            transient: true,
        };
        assert_eq!(
            b.to_string(),
            "port 55552 TCP in use by connections in TIME-WAIT (outgoing connections had it as their ephemeral port; it frees 60 s after the last one closed)"
        );
    }

    #[test]
    fn a_time_wait_remnant_does_not_make_a_port_taken() {
        // A listener with SO_REUSEADDR (as a node's) accepts a connection and
        // closes it first: its side of the connection stays in TIME-WAIT.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (a, _) = l.accept().unwrap();
        drop(a);
        drop(l);
        let mut buf = [0u8; 1];
        use std::io::Read as _;
        let _ = (&c).read(&mut buf); // sees the FIN
        drop(c);
        // A bind without SO_REUSEADDR would refuse the port now; the node's
        // bind, and so the check, do not.
        assert!(check(Ipv4Addr::LOCALHOST, port).is_ok());
    }
}
