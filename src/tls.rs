//! TLS for the node's port and for the tools that connect to it (rustls,
//! with the ring provider).
//!
//! This module owns the TLS flags of a node ([`ServerArgs`], held in
//! [`crate::config::Config`] as one [`TlsConfig`]) and of the client tools
//! ([`ClientArgs`]), loading the PEM files they name into rustls
//! configurations ([`NodeTls`], [`ClientTls`]), the handshakes, and
//! [`Stream`], the connection type the server, the peer transport and the
//! tools share whether it is encrypted or not.
//!
//! With a certificate, a node's port speaks TLS only: a connection that
//! does not start with a TLS record is answered with one plain-text error
//! line and closed, never served. Peers tell themselves apart from clients
//! in the TLS handshake, by offering the ALPN protocol [`PEER_ALPN`]; such
//! a connection must present a certificate that chains to `--tls-ca` (the
//! node asks for one whatever `--tls-client-auth` says of clients), and only
//! such a connection may then speak the peer protocol. The peer handshake
//! over the cluster secret ([`crate::rpc::auth`]) runs inside TLS and is
//! bound to the TLS session ([`Stream::binding`]), so a holder of some
//! certificate of the CA but not of the secret cannot relay it.
//!
//! Peers check each other's certificate against `--tls-ca` but not its
//! name: every certificate the CA signed is a member's (use a CA of the
//! cluster's own), and which member it is the gossip and the cluster secret
//! say. Client tools check the name as any TLS client does.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{debug, warn};

/// The ALPN protocol a node offers when it connects to a peer.
pub const PEER_ALPN: &[u8] = b"distro-db-peer/1";
/// Longest a TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a plain-text client of a TLS-only port is told before it is cut.
const PLAINTEXT_REFUSAL: &[u8] =
    b"-ERR this node accepts TLS connections only (redis-cli --tls --cacert CA.pem)\r\n";
/// The TLS exporter label of the peer handshake's channel binding.
const BINDING_LABEL: &[u8] = b"EXPORTER-distro-db-peer-auth";

/// Which clients must present a certificate (`--tls-client-auth`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Clients are not asked for one (peers always are).
    #[default]
    None,
    /// Clients may present one; if they do, it must chain to `--tls-ca`.
    Optional,
    /// Clients must present one that chains to `--tls-ca`.
    Required,
}

/// A node's TLS settings: the files, not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The node's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA bundle (PEM) peers' certificates, and clients' when asked
    /// for, must chain to.
    pub ca: PathBuf,
    /// Which clients must present a certificate.
    pub client_auth: ClientAuth,
}

/// The TLS flags of a node.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Serve TLS only (no plain-text fallback) with this certificate chain
    /// (PEM, leaf first); needs --tls-key and --tls-ca. Peers then connect
    /// to each other with TLS too.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that peers' certificates, and clients' when asked for,
    /// must chain to. Use a CA of the cluster's own: any certificate it
    /// signed is accepted as a peer's.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Whether clients must present a certificate signed by --tls-ca
    /// (peers always must).
    #[arg(
        long,
        value_enum,
        default_value_t = ClientAuth::None,
        requires = "tls_cert",
        value_name = "none|optional|required"
    )]
    pub tls_client_auth: ClientAuth,
}

impl ServerArgs {
    /// The node's TLS settings, if TLS is on.
    pub fn config(&self) -> Option<TlsConfig> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                client_auth: self.tls_client_auth,
            }),
            _ => None,
        }
    }
}

/// The TLS flags of a tool that connects to a node (`db repl`, `db leave`,
/// `db bench`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Connect with TLS (the node's certificate must chain to --tls-ca).
    #[arg(long)]
    pub tls: bool,
    /// CA bundle (PEM) the node's certificate must chain to; implies --tls.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for nodes started with
    /// --tls-client-auth; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClientArgs {
    /// The client TLS configuration these flags ask for (`None`: plain text).
    pub fn load(&self) -> anyhow::Result<Option<ClientTls>> {
        if !self.tls && self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(None);
        }
        let ca = self.tls_ca.as_deref().context(
            "--tls needs --tls-ca FILE: the CA bundle (PEM) that signed the nodes' certificates",
        )?;
        let roots = load_roots(ca)?;
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .with_context(|| {
                    format!(
                        "cannot use the key in {} with the certificate in {}",
                        key.display(),
                        cert.display()
                    )
                })?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(ClientTls {
            config: Arc::new(config),
            check_name: true,
        }))
    }
}

/// A client's TLS configuration (what `--tls` and its files say).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// False: any certificate of the CA will do, whatever its name (a
    /// node's connections to itself and its peers).
    check_name: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("check_name", &self.check_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The rustls configuration (for blocking clients).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name to check the certificate of the node at `target`
    /// (`host:port`) against.
    pub fn server_name(&self, target: &str, addr: SocketAddr) -> io::Result<ServerName<'static>> {
        let host = target
            .rsplit_once(':')
            .map_or(target, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        if !self.check_name || host.is_empty() {
            return Ok(ServerName::IpAddress(addr.ip().into()));
        }
        ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{host}' is not a TLS server name: {e}"),
            )
        })
    }

    /// Runs the client side of the handshake over `tcp`, within
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(&self, tcp: TcpStream, name: ServerName<'static>) -> io::Result<Stream> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| timed_out("TLS handshake"))??;
        Ok(Stream::Client(Box::new(s)))
    }
}

/// A node's loaded TLS state: what it serves clients and peers with, and
/// what it connects to peers with.
pub struct NodeTls {
    /// Clients' handshakes (`--tls-client-auth`).
    clients: Arc<ServerConfig>,
    /// Peers' handshakes (a certificate of the CA required).
    peers: Arc<ServerConfig>,
    /// Connections to peers (and to the node itself).
    dial: ClientTls,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls(..)")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (an error naming the file if it has none).
fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The private key in a PEM file.
fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

/// A CA bundle.
fn load_roots(path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("{} holds a certificate that is not a CA", path.display()))?;
    }
    Ok(Arc::new(roots))
}

impl NodeTls {
    /// Reads the files `config` names; every error names its file.
    pub fn load(config: &TlsConfig) -> anyhow::Result<NodeTls> {
        let certs = load_certs(&config.cert)?;
        let key = load_key(&config.key)?;
        let roots = load_roots(&config.ca)?;
        let provider = provider();
        let mismatch = || {
            format!(
                "cannot use the key in {} with the certificate in {}",
                config.key.display(),
                config.cert.display()
            )
        };
        let server = |verifier| {
            ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| b.with_client_cert_verifier(verifier))
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let clients = match config.client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::Optional => verifier.clone().allow_unauthenticated().build()?,
            ClientAuth::Required => verifier.clone().build()?,
        };
        let clients = server(clients)?
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(mismatch)?;
        let mut peers = server(verifier.build()?)?
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(mismatch)?;
        peers.alpn_protocols = vec![PEER_ALPN.to_vec()];

        let verifier = Arc::new(PeerVerifier(
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()?,
        ));
        // The node's own certificate must be one its peers accept.
        let (leaf, chain) = certs.split_first().context("no certificate")?;
        verifier
            .verify_server_cert(
                leaf,
                chain,
                &ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
                &[],
                UnixTime::now(),
            )
            .with_context(|| {
                format!(
                    "the certificate in {} does not chain to the CA in {} (peers would refuse it)",
                    config.cert.display(),
                    config.ca.display()
                )
            })?;
        let mut dial = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(certs, key)
            .with_context(mismatch)?;
        dial.alpn_protocols = vec![PEER_ALPN.to_vec()];
        Ok(NodeTls {
            clients: Arc::new(clients),
            peers: Arc::new(peers),
            dial: ClientTls {
                config: Arc::new(dial),
                check_name: false,
            },
        })
    }

    /// What this node connects to its peers with.
    pub fn dial(&self) -> &ClientTls {
        &self.dial
    }

    /// What a tool of this node's (the REPL of `db master`) connects to it
    /// with: the CA, and the node's certificate when clients need one.
    pub fn own_client(&self) -> ClientTls {
        let mut config = (*self.dial.config).clone();
        config.alpn_protocols.clear();
        ClientTls {
            config: Arc::new(config),
            check_name: false,
        }
    }

    /// Runs the server side of the handshake on an accepted connection,
    /// within [`HANDSHAKE_TIMEOUT`]. A connection that does not start with
    /// a TLS record is told the port speaks TLS only, and closed. `None`:
    /// the connection was refused or closed (see [`note_refused`]).
    pub async fn accept(&self, tcp: TcpStream) -> Option<Stream> {
        let from = tcp.peer_addr().ok();
        let run = async move {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 0 {
                return Ok(None);
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                refuse_plain_text(tcp).await;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a plain-text connection to a TLS-only port",
                ));
            }
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                    .await?;
            let peer = start
                .client_hello()
                .alpn()
                .is_some_and(|mut a| a.any(|p| p == PEER_ALPN));
            let config = if peer {
                self.peers.clone()
            } else {
                self.clients.clone()
            };
            let s = start.into_stream(config).await?;
            Ok(Some(Stream::Server(Box::new(s))))
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                note_refused(from, &e.to_string());
                None
            }
            Err(_) => {
                note_refused(from, "the TLS handshake timed out");
                None
            }
        }
    }
}

/// Tells a plain-text client that the port speaks TLS only, then reads
/// (and drops) what it sent for a moment before closing: closing with
/// unread input would reset the connection, and the client could lose the
/// message.
async fn refuse_plain_text(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    if tcp.write_all(PLAINTEXT_REFUSAL).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Counts refused TLS connections and logs them: each at debug, and at
/// most one warning every [`WARN_EVERY`] with the count so far, so a
/// scanner or a misconfigured client cannot flood the log.
fn note_refused(from: Option<SocketAddr>, why: &str) {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_WARN: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let from = from.map(|a| a.to_string()).unwrap_or_default();
    let count = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let due = {
        let mut last = LAST_WARN.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if due {
        warn!(%from, cause = why, refused_so_far = count,
            "TLS connection refused (more within {WARN_EVERY:?} are logged at debug only)");
    } else {
        debug!(%from, cause = why, "TLS connection refused");
    }
}

/// Least time between two warnings about refused TLS connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Checks a peer's certificate against the CA, not its name (see the
/// module doc).
#[derive(Debug)]
struct PeerVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name mismatch means the
        // chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timeout"))
}

/// A connection, in plain text or TLS.
pub enum Stream {
    /// Plain text.
    Plain(TcpStream),
    /// TLS, accepted by this node.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, opened by this process.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => s.get_ref().0,
            Stream::Client(s) => s.get_ref().0,
        }
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// True for a TLS connection a peer opened (it offered [`PEER_ALPN`]
    /// and presented a certificate of the CA).
    pub fn is_tls_peer(&self) -> bool {
        match self {
            Stream::Server(s) => s.get_ref().1.alpn_protocol() == Some(PEER_ALPN),
            _ => false,
        }
    }

    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Bytes both ends of a TLS session derive alike and nobody else can
    /// (a TLS exporter, RFC 5705/8446): the peer handshake signs them, so
    /// it cannot be relayed into another session. Empty in plain text.
    pub fn binding(&self) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let r = match self {
            Stream::Plain(_) => return Vec::new(),
            Stream::Server(s) => s
                .get_ref()
                .1
                .export_keying_material(&mut out[..], BINDING_LABEL, None)
                .map(|_| ()),
            Stream::Client(s) => s
                .get_ref()
                .1
                .export_keying_material(&mut out[..], BINDING_LABEL, None)
                .map(|_| ()),
        };
        // Only fails before the handshake ends, which it has by now.
        match r {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Reads the connection's first byte, within `within` (`None`: the
    /// connection closed first).
    pub async fn first_byte(&mut self, within: Duration) -> io::Result<Option<u8>> {
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(within, self.read(&mut first))
            .await
            .map_err(|_| timed_out("first byte"))??;
        Ok((n == 1).then_some(first[0]))
    }

    /// Splits the connection into halves that can be used at once. Plain
    /// TCP splits for free; TLS shares one session behind a lock.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            tls => {
                let (r, w) = tokio::io::split(tls);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// The reading half of a [`Stream`].
pub enum ReadHalf {
    /// Plain text.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<Stream>),
}

/// The writing half of a [`Stream`]. Over TLS, written bytes may wait in
/// the session until a flush: flush after each batch.
pub enum WriteHalf {
    /// Plain text.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<Stream>),
}

/// Forwards a poll to whichever variant `$self` holds.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr, [$($v:ident),+]) => {
        match $self.get_mut() {
            $(Self::$v($s) => $e,)+
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf), [Plain, Server, Client])
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf), [Plain, Server, Client])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx), [Plain, Server, Client])
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx), [Plain, Server, Client])
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf), [Plain, Tls])
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf), [Plain, Tls])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx), [Plain, Tls])
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx), [Plain, Tls])
    }
}

/// Writes `bytes` and flushes them (a TLS session holds written bytes until
/// flushed), within `within`.
pub async fn send(
    w: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    within: Duration,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    tokio::time::timeout(within, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await
    .map_err(|_| timed_out("write"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dial(check_name: bool) -> ClientTls {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        ClientTls {
            config: Arc::new(config),
            check_name,
        }
    }

    #[test]
    fn the_server_name_is_the_host_of_the_target() {
        let addr: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let t = dial(true);
        let name = |target| t.server_name(target, addr).unwrap().to_str().into_owned();
        assert_eq!(name("db1.example:7000"), "db1.example");
        assert_eq!(name("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(name("[::1]:7000"), "::1");
        assert!(t.server_name("bad name!:1", addr).is_err());
        // Peers: the address dialled, whatever the target says.
        let p = dial(false).server_name("db1.example:7000", addr).unwrap();
        assert_eq!(p.to_str(), "10.0.0.1");
    }

    #[test]
    fn client_flags_need_a_ca_and_name_missing_files() {
        assert!(ClientArgs::default().load().unwrap().is_none());
        let no_ca = ClientArgs {
            tls: true,
            ..ClientArgs::default()
        };
        let e = format!("{:#}", no_ca.load().unwrap_err());
        assert!(e.contains("--tls-ca"), "{e}");
        let missing = ClientArgs {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..ClientArgs::default()
        };
        let e = format!("{:#}", missing.load().unwrap_err());
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn node_flags_make_a_config_only_when_complete() {
        assert_eq!(ServerArgs::default().config(), None);
        let args = ServerArgs {
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            tls_ca: Some("a".into()),
            tls_client_auth: ClientAuth::Required,
        };
        let c = args.config().unwrap();
        assert_eq!(c.client_auth, ClientAuth::Required);
        assert_eq!(c.ca, PathBuf::from("a"));
    }
}
