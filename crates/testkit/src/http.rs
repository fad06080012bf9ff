//! A programmable HTTP/1.1 server on loopback, for tests that need an
//! endpoint which answers, delays, fails, hangs, breaks off its body,
//! redirects, or records what it was sent (webhooks, redirects' targets).
//!
//! It speaks just enough HTTP/1.1 (keep-alive, `Content-Length` request
//! bodies) to serve reqwest and similar clients, and misbehaves on purpose
//! where a [`Reply`] says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::tls::Identity;

/// How the server answers requests to one path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `code` with `body`, after `delay`.
    Status {
        code: u16,
        body: String,
        delay: Duration,
    },
    /// Reads the request and never answers.
    Hang,
    /// Promises `declared` bytes of body, sends `sent`, and closes.
    Truncate { declared: usize, sent: usize },
    /// Closes the connection without answering.
    Close,
    /// `code` (a 3xx) with a `Location` header, at once.
    Redirect { code: u16, location: String },
    /// 200 with `body` and the `headers` given (instead of the JSON
    /// content type), at once.
    Body {
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Reply {
    /// 200 with a small JSON body, at once.
    pub fn ok() -> Reply {
        Reply::Status {
            code: 200,
            body: "{\"ok\":true}".into(),
            delay: Duration::ZERO,
        }
    }

    /// 200 after `ms` milliseconds.
    pub fn delayed(ms: u64) -> Reply {
        Reply::Status {
            code: 200,
            body: "{\"ok\":true}".into(),
            delay: Duration::from_millis(ms),
        }
    }

    /// `code` with `Location: location`, at once.
    pub fn redirect(code: u16, location: impl Into<String>) -> Reply {
        Reply::Redirect {
            code,
            location: location.into(),
        }
    }

    /// 200 with `body` and `headers`, at once.
    pub fn body(body: impl Into<String>, headers: &[(&str, &str)]) -> Reply {
        Reply::Body {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    /// `code` with a short body, at once.
    pub fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            body: format!("status {code}"),
            delay: Duration::ZERO,
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

/// The server; it stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    routes: Routes,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
    is_tls: bool,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// What a TLS server presents to new connections.
    identity: Arc<Mutex<Option<tokio_rustls::TlsAcceptor>>>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Starts on `127.0.0.1` on a port the OS picks. Paths without a reply
    /// get 404.
    pub async fn start() -> HttpServer {
        HttpServer::start_with(None).await
    }

    /// [`HttpServer::start`], serving HTTPS with `identity` (a certificate
    /// from [`crate::tls::TestCa`]); its URLs are `https://localhost:PORT`.
    pub async fn start_tls(identity: &Identity) -> HttpServer {
        HttpServer::start_with(Some(identity.acceptor())).await
    }

    async fn start_with(acceptor: Option<tokio_rustls::TlsAcceptor>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let routes: Routes = Arc::default();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let (r, q) = (routes.clone(), requests.clone());
        let is_tls = acceptor.is_some();
        let tls = Arc::new(Mutex::new(acceptor));
        let identity = tls.clone();
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let (r, q) = (r.clone(), q.clone());
                let acceptor = lock(&tls).clone();
                match acceptor {
                    None => {
                        tokio::spawn(serve(stream, r, q));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            // A client that refuses the certificate ends
                            // the handshake: nothing to serve.
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve(tls, r, q).await;
                            }
                        });
                    }
                }
            }
        });
        HttpServer {
            addr,
            routes,
            requests,
            task,
            is_tls,
            accepted,
            identity,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`, or `https://localhost:PORT{path}`
    /// for a TLS server (the name its certificate is for).
    pub fn url(&self, path: &str) -> String {
        if self.is_tls {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    /// Sets how `path` (without its query) is answered from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        lock(&self.routes).insert(path.to_string(), reply);
    }

    /// A TLS server presents `identity` to the connections it accepts from
    /// now on (a renewed certificate); open ones keep theirs.
    pub fn set_identity(&self, identity: &Identity) {
        *lock(&self.identity) = Some(identity.acceptor());
    }

    /// How many connections it accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    routes: Routes,
    requests: Arc<Mutex<Vec<Request>>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let path = req.path.split('?').next().unwrap_or("").to_string();
        lock(&requests).push(req.clone());
        let reply = lock(&routes).get(&path).cloned();
        match reply {
            None => {
                if write_response(&mut stream, 404, "not found").await.is_err() {
                    return;
                }
            }
            Some(Reply::Body { headers, body }) => {
                let mut head = String::from("HTTP/1.1 200 OK\r\n");
                for (k, v) in &headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                if stream.write_all(head.as_bytes()).await.is_err()
                    || stream.write_all(body.as_bytes()).await.is_err()
                    || stream.flush().await.is_err()
                {
                    return;
                }
            }
            Some(Reply::Status { code, body, delay }) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if write_response(&mut stream, code, &body).await.is_err() {
                    return;
                }
            }
            Some(Reply::Hang) => {
                // Keep the connection open, never answer.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Some(Reply::Truncate { declared, sent }) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {declared}\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&vec![b'x'; sent]).await;
                let _ = stream.flush().await;
                return;
            }
            Some(Reply::Close) => return,
            Some(Reply::Redirect { code, location }) => {
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
                );
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: u16,
    body: &str,
) -> std::io::Result<()> {
    let resp = format!(
        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.flush().await
}

/// Reads one request (head and `Content-Length` body); `None` at EOF or on
/// garbage.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let at = std::time::Instant::now();
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Vec<u8> = buf.drain(..len).collect();
    Some(Request {
        method,
        path,
        headers,
        body,
        at,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
