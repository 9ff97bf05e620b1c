//! A deliberately small HTTP/1.1 responder for the observability port:
//! GET and HEAD only, one request per connection (`Connection: close`),
//! the request head read within [`READ_TIMEOUT`] and at most
//! [`MAX_HEAD`] bytes, the answer written within [`WRITE_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] connections at once (one more is closed at once).
//! Request bodies are never read. Enough for Prometheus, `curl`, load
//! balancer probes and a browser; no HTTP stack (hyper and its
//! dependencies) in the node for four small pages.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write an answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// A request, as far as this responder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The page.
    Get,
    /// The page's head only.
    Head,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// An answer with this body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// The bytes sent: status line, headers and (unless `head_only`) body.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The reason phrase of the status codes this responder sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Why a request head was refused: the answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub Response);

/// The end of the request head in `buf` (just past the blank line), if
/// it has arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete request head (pure).
pub fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let bad = |why: &str| Refusal(Response::text(400, format!("bad request: {why}\n")));
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected `METHOD /path HTTP/1.1`"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("only HTTP/1.x is served"));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => {
            return Err(Refusal(Response::text(
                405,
                "method not allowed: this port serves GET and HEAD only\n",
            )));
        }
    };
    // Origin form (`/path?query`); absolute form (`http://host/path`) too.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !target.starts_with('/') {
        return Err(bad("the target must be a path"));
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    Ok(Request {
        method,
        path: path.to_string(),
    })
}

/// What answers a request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, handler: Handler, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "too many connections on the metrics port; closing one");
                    continue;
                };
                let (handler, shutdown) = (handler.clone(), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        r = answer(stream, &handler) => {
                            if let Err(e) = r {
                                debug!(%peer, cause = %e, "metrics connection closed");
                            }
                        }
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(cause = %e, "accept failed on the metrics port");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head (bounded in size and time) and answers it.
async fn answer(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            if let Some(end) = head_end(&buf) {
                return Ok(Some(end));
            }
            if buf.len() >= MAX_HEAD {
                return Ok(None);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the request head ended",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out"))??;
    let (response, head_only) = match read {
        None => (
            Response::text(431, format!("request head larger than {MAX_HEAD} bytes\n")),
            false,
        ),
        Some(end) => match parse_head(&buf[..end]) {
            Ok(req) => (handler(&req), req.method == Method::Head),
            Err(Refusal(r)) => (r, false),
        },
    };
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response.to_bytes(head_only)).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer timed out"))??;
    // Read what the client still sends (a refused head's rest) until it
    // closes, so that closing with unread bytes does not reset the
    // connection before the client has read the answer. Bounded in bytes
    // and time.
    let _ = tokio::time::timeout(LINGER, async {
        let mut drained = 0;
        while drained < MAX_HEAD * 8 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

/// How long a closing connection reads what the client still sends.
const LINGER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_to_method_and_path() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Request {
                method: Method::Get,
                path: "/metrics".into()
            }
        );
        let r = parse_head(b"HEAD http://h:9/ready HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.method, r.path.as_str()), (Method::Head, "/ready"));
        let r = parse_head(b"GET http://h:9 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.path, "/");
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let status = |head: &[u8]| parse_head(head).unwrap_err().0.status;
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status(b"GET /metrics\r\n\r\n"), 400);
        assert_eq!(status(b"GET /metrics SPDY/3\r\n\r\n"), 400);
        assert_eq!(status(b"GET metrics HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1 extra\r\n\r\n"), 400);
        assert_eq!(status(b"GET /\xff HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn responses_close_and_state_their_length() {
        let r = Response::text(503, "not ready: x\n");
        let text = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nnot ready: x\n"));
        let head = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }

    /// A live listener on loopback: an answer, an oversized head, a
    /// client that never finishes its head does not hold the others up.
    #[tokio::test]
    async fn serves_bounded_requests_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler =
            Arc::new(|r: &Request| Response::text(200, format!("path {}\n", r.path)));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, handler, stop.clone()));
        async fn fetch(addr: std::net::SocketAddr, req: &[u8]) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
                .await
                .expect("answered in time")
                .unwrap();
            String::from_utf8_lossy(&out).into_owned()
        }
        // A slow client holds one slot only.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let ok = fetch(addr, b"GET /x?y HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("path /x\n"), "{ok}");
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        huge.extend_from_slice(b"\r\n\r\n");
        let big = fetch(addr, &huge).await;
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
        let head = fetch(addr, b"HEAD /h HTTP/1.1\r\n\r\n").await;
        assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
        stop.cancel();
        drop(idle);
    }
}
