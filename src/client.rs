//! A small blocking RESP client: what `db repl` uses to talk to a node, and
//! what tests use to drive a cluster. Every socket operation has a timeout.
//! Speaks TLS when given a [`ClientTls`] (or when the process set one with
//! [`use_tls`], as the command-line tools do for `--tls`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

pub use crate::acl::Credentials;
use crate::resp::{self, DecodeError, Frame};
use crate::tls::ClientTls;

/// The TLS settings of this process's connections (see [`use_tls`]).
static PROCESS_TLS: OnceLock<ClientTls> = OnceLock::new();

/// Makes every [`Client::connect`] and [`Client::connect_with`] of this
/// process use TLS (the tools' `--tls`); the first call wins.
pub fn use_tls(tls: ClientTls) {
    let _ = PROCESS_TLS.set(tls);
}

/// A connection in plain text or TLS.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn sock(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for a node to answer one command. A node answers every
/// command within its own request timeout, so this is only a safety net.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one node.
#[derive(Debug)]
pub struct Client {
    stream: Conn,
    buf: Vec<u8>,
    addr: SocketAddr,
}

/// The environment variable the command-line tools (and nodes) read the
/// client password from.
pub const PASSWORD_ENV: &str = "DISTRO_DB_PASSWORD";

/// The environment variable the command-line tools read the user to
/// authenticate as from (with the password in [`PASSWORD_ENV`]); unset:
/// the default user.
pub const USER_ENV: &str = "DISTRO_DB_USER";

/// The password in [`PASSWORD_ENV`], if set and not empty.
pub fn password_from_env() -> Option<Vec<u8>> {
    std::env::var_os(PASSWORD_ENV)
        .filter(|p| !p.is_empty())
        .map(|p| p.into_encoded_bytes())
}

/// The credentials of the environment: the password in [`PASSWORD_ENV`]
/// and the user in [`USER_ENV`] (or `user`, given on the command line,
/// which wins). None without a password; an error when `user` is given
/// without one.
pub fn credentials_from_env(user: Option<&str>) -> Result<Option<Credentials>, String> {
    let Some(password) = password_from_env() else {
        return match user {
            Some(_) => Err(format!("--user needs the password in {PASSWORD_ENV}")),
            None => Ok(None),
        };
    };
    let user = match user {
        Some(u) => Some(u.as_bytes().to_vec()),
        None => std::env::var_os(USER_ENV)
            .filter(|u| !u.is_empty())
            .map(|u| u.into_encoded_bytes()),
    };
    Ok(Some(Credentials { user, password }))
}

impl Client {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: &str) -> io::Result<Client> {
        Client::connect_with(addr, REPLY_TIMEOUT)
    }

    /// Connects to `addr`, waiting at most `reply_timeout` for each reply
    /// (a test client facing stopped nodes wants less than the default).
    pub fn connect_with(addr: &str, reply_timeout: Duration) -> io::Result<Client> {
        Client::connect_via(addr, reply_timeout, PROCESS_TLS.get())
    }

    /// [`Client::connect_with`], with TLS when `tls` is given (whatever
    /// [`use_tls`] said).
    pub fn connect_via(
        addr: &str,
        reply_timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> io::Result<Client> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(reply_timeout.min(CONNECT_TIMEOUT)))?;
                    stream.set_write_timeout(Some(reply_timeout))?;
                    stream.set_nodelay(true)?;
                    let stream = match tls {
                        None => Conn::Plain(stream),
                        Some(tls) => handshake(tls, addr, a, stream)?,
                    };
                    stream.sock().set_read_timeout(Some(reply_timeout))?;
                    return Ok(Client {
                        stream,
                        buf: Vec::with_capacity(4096),
                        addr: a,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Authenticates the connection (`AUTH password`); a refused password
    /// is an error of kind `PermissionDenied` carrying the node's message.
    pub fn auth(&mut self, password: &[u8]) -> io::Result<()> {
        self.auth_as(&Credentials {
            user: None,
            password: password.to_vec(),
        })
    }

    /// Authenticates the connection as `creds` says (`AUTH [user]
    /// password`); a refused pair is an error of kind `PermissionDenied`
    /// carrying the node's message.
    pub fn auth_as(&mut self, creds: &Credentials) -> io::Result<()> {
        let reply = match &creds.user {
            Some(user) => self.call(&[b"AUTH".as_slice(), user, &creds.password])?,
            None => self.call(&[b"AUTH".as_slice(), &creds.password])?,
        };
        match reply {
            Frame::Error(e) => Err(io::Error::new(io::ErrorKind::PermissionDenied, e)),
            _ => Ok(()),
        }
    }

    /// Sends one command and waits for its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Frame> {
        let frame = Frame::command(args.iter().map(|a| a.as_ref()));
        self.stream.write_all(&frame.to_bytes())?;
        self.stream.flush()?;
        self.read_reply()
    }

    /// True when the node has closed this connection (say, after its idle
    /// timeout): checked without blocking before reusing it.
    pub fn is_closed(&mut self) -> bool {
        let sock = self.stream.sock();
        if !self.buf.is_empty() || sock.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let closed = match sock.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        let _ = sock.set_nonblocking(false);
        closed
    }

    fn read_reply(&mut self) -> io::Result<Frame> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match resp::decode(&self.buf) {
                Ok((frame, used)) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Err(DecodeError::Incomplete) => {}
                Err(DecodeError::Invalid(msg)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the node",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Runs the client side of a TLS handshake over `sock` (within its
/// timeouts), so that a refused certificate shows at connect.
fn handshake(
    tls: &ClientTls,
    target: &str,
    addr: SocketAddr,
    mut sock: TcpStream,
) -> io::Result<Conn> {
    let name = tls.server_name(target, addr)?;
    let mut conn = rustls::ClientConnection::new(tls.config(), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, sock))))
}
