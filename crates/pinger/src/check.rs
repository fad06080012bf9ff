//! One check of one endpoint: the request (and its redirects, when the
//! endpoint follows them), the timing, and the classification of what went
//! wrong.
//!
//! Redirects are followed here, hop by hop, not by reqwest: each hop decides
//! what it carries. The endpoint's headers and body go to its own origin
//! only; a hop from https to http is refused.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimon_core::apis::{Endpoint, Probe};
use apimon_core::certs::CaBundle;
use apimon_core::db::metrics::MetricRow;
use chrono::{DateTime, SubsecRound, Utc};
use reqwest::{Method, StatusCode, Url};

use crate::certificate::Rechecks;
use crate::dns;
use crate::tcp;

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No complete response within the endpoint's timeout.
    Timeout,
    /// The host name could not be resolved.
    Dns,
    /// The TCP connection was refused, reset or unreachable.
    Connect,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// A response came, with a status the endpoint does not expect.
    HttpStatus,
    /// The response started but its body broke off.
    Body,
    /// A redirect that is refused (https to http, not to http(s), an
    /// invalid `Location`) or one too many.
    Redirect,
    /// Anything else about the request (malformed response, protocol error).
    Request,
    /// The answer came, with the expected status, but an assertion failed
    /// (`expect_body`, `expect_json`, `expect_headers`, `max_response_time`…).
    Assertion,
    /// A heartbeat endpoint got none for longer than `interval + grace`.
    Missed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Body => "body",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Request => "request",
            ErrorKind::Assertion => "assertion",
            ErrorKind::Missed => "missed",
        }
    }
}

/// Longest error message stored.
const MAX_MESSAGE: usize = 1000;

/// Time between two probes of an https endpoint's certificate, unless
/// `PINGER_TLS_RECHECK` says otherwise.
pub const DEFAULT_TLS_RECHECK: Duration = Duration::from_secs(3600);

/// Most redirects followed in one check.
pub const MAX_REDIRECTS: usize = 10;

/// Sends checks through one shared HTTP client (one connection pool), one
/// more per private CA (`ca_file`), and one DNS resolver per resolver
/// address.
#[derive(Clone)]
pub struct Checker {
    client: reqwest::Client,
    /// The settings every client is built with.
    user_agent: String,
    hosts: Vec<(String, SocketAddr)>,
    /// The clients that also trust a private CA, by the CA file's PEM
    /// text, built as they are needed.
    ca_clients: Arc<Mutex<HashMap<Arc<Vec<u8>>, reqwest::Client>>>,
    /// The resolvers of `kind = "dns"` checks, built as they are needed.
    resolvers: dns::Resolvers,
    /// The certificate probes of https endpoints.
    rechecks: Rechecks,
}

impl Checker {
    pub fn new(user_agent: &str) -> Result<Checker, reqwest::Error> {
        Checker::with_resolved(user_agent, &[])
    }

    /// [`Checker::new`], resolving the host names of `hosts` to fixed
    /// addresses instead of asking DNS (tests give loopback servers names).
    pub fn with_resolved(
        user_agent: &str,
        hosts: &[(&str, SocketAddr)],
    ) -> Result<Checker, reqwest::Error> {
        let hosts: Vec<(String, SocketAddr)> =
            hosts.iter().map(|(h, a)| (h.to_string(), *a)).collect();
        Ok(Checker {
            client: client_builder(user_agent, &hosts).build()?,
            user_agent: user_agent.to_string(),
            hosts,
            ca_clients: Arc::default(),
            resolvers: dns::Resolvers::default(),
            rechecks: Rechecks::new(DEFAULT_TLS_RECHECK),
        })
    }

    /// Probes each https endpoint's certificate every `every` (zero: never)
    /// besides reading it from the checks' connections.
    pub fn with_tls_recheck(mut self, every: Duration) -> Checker {
        self.rechecks = Rechecks::new(every);
        self
    }

    /// The client for `ep`: the shared one, or the one that also trusts
    /// its `ca_file`.
    fn client_for(&self, ep: &Endpoint) -> Result<reqwest::Client, Failure> {
        let Some(ca) = &ep.ca else {
            return Ok(self.client.clone());
        };
        let mut clients = self.ca_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&ca.pem) {
            return Ok(c.clone());
        }
        let client = self.ca_client(ca).map_err(|e| {
            Failure::new(
                ErrorKind::Tls,
                None,
                format!("cannot use ca_file `{}`: {e}", ca.path.display()),
            )
        })?;
        clients.insert(ca.pem.clone(), client.clone());
        Ok(client)
    }

    fn ca_client(&self, ca: &CaBundle) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = client_builder(&self.user_agent, &self.hosts);
        for cert in reqwest::Certificate::from_pem_bundle(&ca.pem)? {
            builder = builder.add_root_certificate(cert);
        }
        builder.build()
    }

    /// Checks `ep` once. Never fails: a failure is a row too.
    #[tracing::instrument(skip_all, fields(api = %ep.name, kind = ep.probe.kind()))]
    pub async fn check(&self, ep: &Endpoint) -> MetricRow {
        let timestamp = Utc::now().trunc_subsecs(6);
        let mut row = MetricRow::empty(timestamp, &ep.name, ep.url.redacted().as_str());
        let started = Instant::now();
        let outcome = match &ep.probe {
            Probe::Http => self.check_http(ep, started).await,
            Probe::Tcp { address } => tcp::connect(address, ep.timeout)
                .await
                .and_then(|done| within_limit(done, &ep.assertions)),
            // Scheduled apart (crate::heartbeat): no request to make.
            Probe::Heartbeat(_) => Err(Failure::new(
                ErrorKind::Request,
                None,
                "a heartbeat endpoint is not checked by a request",
            )),
            Probe::Dns(probe) => {
                self.resolvers
                    .check(probe, ep.timeout, &ep.assertions)
                    .await
            }
        };
        match outcome {
            Ok(done) => {
                row.status_code = done.status.map(i32::from);
                row.response_size_bytes = done.size;
                row.response_time_ms = Some(done.elapsed.as_secs_f64() * 1000.0);
                row.tls_expires_at = done.tls_expires_at;
                row.success = true;
            }
            Err(f) => {
                row.status_code = f.status.map(i32::from);
                row.response_size_bytes = f.size;
                row.response_time_ms = f.elapsed.map(|e| e.as_secs_f64() * 1000.0);
                row.tls_expires_at = f.tls_expires_at;
                row.error_kind = Some(f.kind.as_str().to_string());
                row.error_message = Some(bounded(f.message));
            }
        }
        row
    }

    /// An HTTP check: the request, its status, then its assertions.
    async fn check_http(&self, ep: &Endpoint, started: Instant) -> Result<Done, Failure> {
        let mut answer = self.fetch(ep, started).await?;
        let elapsed = started.elapsed();
        answer.tls_expires_at = self.rechecks.expiry(ep, answer.tls_expires_at);
        let fail = |kind: ErrorKind, message: String| Failure {
            kind,
            status: Some(answer.status),
            message,
            size: Some(answer.size),
            elapsed: Some(elapsed),
            tls_expires_at: answer.tls_expires_at,
        };
        if !ep.expected_status.matches(answer.status) {
            return Err(fail(
                ErrorKind::HttpStatus,
                format!("status {}, expected {}", answer.status, ep.expected_status),
            ));
        }
        if let Err(e) =
            ep.assertions
                .evaluate(&answer.headers, &answer.body, answer.truncated, elapsed)
        {
            return Err(fail(ErrorKind::Assertion, e.0));
        }
        Ok(Done {
            status: Some(answer.status),
            size: Some(answer.size),
            elapsed,
            tls_expires_at: answer.tls_expires_at,
        })
    }

    /// Sends the request, follows redirects when the endpoint says so, and
    /// reads the final body to its end, counting its bytes without keeping
    /// them. The endpoint's timeout covers every hop.
    async fn fetch(&self, ep: &Endpoint, started: Instant) -> Result<Answer, Failure> {
        let origin = ep.url.expose().origin();
        let mut url = ep.url.expose().clone();
        let mut method = ep.method.clone();
        // The endpoint's headers and body go to its own origin only: once a
        // redirect left it, no later hop carries them.
        let mut same_origin = true;
        let mut with_body = ep.body.is_some();
        let mut hops = 0;
        let mut tls_expires_at = None;
        loop {
            let left = ep.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Failure::new(
                    ErrorKind::Timeout,
                    None,
                    "no complete response within the timeout (after redirects)",
                ));
            }
            let mut req = self
                .client_for(ep)?
                .request(method.clone(), url.clone())
                .timeout(left);
            if same_origin {
                req = req.headers(ep.headers.clone());
                if let (true, Some(body)) = (with_body, &ep.body) {
                    req = req.body(body.clone());
                }
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(e, None))?;
            let status = resp.status();
            if hops == 0 {
                tls_expires_at = resp
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|info| info.peer_certificate())
                    .and_then(apimon_core::certs::not_after);
            }
            if ep.follow_redirects {
                if let Some(next) = next_hop(&url, status, resp.headers())? {
                    if hops == MAX_REDIRECTS {
                        return Err(Failure::new(
                            ErrorKind::Redirect,
                            Some(status.as_u16()),
                            format!("more than {MAX_REDIRECTS} redirects"),
                        ));
                    }
                    hops += 1;
                    // As browsers do: 303 turns anything but HEAD into a GET,
                    // 301 and 302 a POST; 307 and 308 keep method and body.
                    let to_get = match status.as_u16() {
                        303 => method != Method::HEAD,
                        301 | 302 => method == Method::POST,
                        _ => false,
                    };
                    if to_get {
                        method = Method::GET;
                        with_body = false;
                    }
                    same_origin &= next.origin() == origin;
                    url = next;
                    continue;
                }
            }
            let keep = if ep.assertions.need_body() {
                ep.assertions.max_body_bytes
            } else {
                0
            };
            let mut answer = read_body(resp, keep).await?;
            answer.tls_expires_at = tls_expires_at;
            return Ok(answer);
        }
    }
}

/// The settings of every HTTP client of the checks.
fn client_builder(user_agent: &str, hosts: &[(String, SocketAddr)]) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        // The certificate of each https check, for its expiry.
        .tls_info(true)
        // `Checker::fetch` follows redirects itself, or not at all.
        .redirect(reqwest::redirect::Policy::none());
    for (host, addr) in hosts {
        builder = builder.resolve(host, *addr);
    }
    builder
}

/// Where a redirect answer sends the next hop: `None` when `status` is no
/// redirect to follow (or has no `Location`: then it is the result). The
/// errors never show the `Location`, which may carry a token.
fn next_hop(
    current: &Url,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Result<Option<Url>, Failure> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(location) = headers.get(reqwest::header::LOCATION) else {
        return Ok(None);
    };
    let refuse = |why: String| Failure::new(ErrorKind::Redirect, Some(status.as_u16()), why);
    let location = location
        .to_str()
        .map_err(|_| refuse(format!("status {status} with a Location that is not text")))?;
    let next = current
        .join(location)
        .map_err(|e| refuse(format!("status {status} with an invalid Location ({e})")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(refuse(format!(
            "status {status}: a redirect to a `{}` URL is refused",
            next.scheme()
        )));
    }
    if current.scheme() == "https" && next.scheme() == "http" {
        return Err(refuse(format!(
            "status {status}: a redirect from https to http is refused"
        )));
    }
    Ok(Some(next))
}

/// A successful check: the status (HTTP), the size of the body (HTTP) and
/// the time it took (to the end of the body, the connect, the resolve).
#[derive(Debug)]
pub(crate) struct Done {
    pub status: Option<u16>,
    pub size: Option<i64>,
    pub elapsed: Duration,
    /// The notAfter of the endpoint's certificate (https).
    pub tls_expires_at: Option<DateTime<Utc>>,
}

/// A complete HTTP answer: its status, headers, size, and the first bytes
/// of its body kept for the assertions.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    size: i64,
    body: Vec<u8>,
    truncated: bool,
    /// The notAfter of the certificate of the endpoint's own URL (the
    /// first hop), when it is https.
    tls_expires_at: Option<DateTime<Utc>>,
}

/// A failed check: its kind, the status when a response head came, and
/// what to store as its message (never the URL); the size and the time
/// when the answer was complete but not as expected.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub message: String,
    pub size: Option<i64>,
    pub elapsed: Option<Duration>,
    pub tls_expires_at: Option<DateTime<Utc>>,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            status,
            message: message.into(),
            size: None,
            elapsed: None,
            tls_expires_at: None,
        }
    }

    fn from_reqwest(error: reqwest::Error, status: Option<u16>) -> Failure {
        Failure::new(classify(&error), status, describe(error))
    }
}

/// Reads the body to its end, counting its bytes and keeping the first
/// `keep` of them (none when no assertion reads the body).
async fn read_body(mut resp: reqwest::Response, keep: usize) -> Result<Answer, Failure> {
    let status = resp.status().as_u16();
    let headers = std::mem::take(resp.headers_mut());
    let mut size: i64 = 0;
    let mut body = Vec::new();
    let mut truncated = false;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as i64;
                let room = keep.saturating_sub(body.len());
                if chunk.len() > room {
                    truncated |= keep > 0;
                }
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => {
                return Ok(Answer {
                    status,
                    headers,
                    size,
                    body,
                    truncated,
                    tls_expires_at: None,
                })
            }
            Err(error) => return Err(Failure::from_reqwest(error, Some(status))),
        }
    }
}

/// A successful connect (or resolve) that took longer than
/// `max_response_time` is a failed check of kind `assertion`.
fn within_limit(
    done: Done,
    assertions: &apimon_core::assertions::Assertions,
) -> Result<Done, Failure> {
    match assertions.evaluate(&reqwest::header::HeaderMap::new(), &[], false, done.elapsed) {
        Ok(()) => Ok(done),
        Err(e) => Err(Failure {
            kind: ErrorKind::Assertion,
            status: None,
            message: e.0,
            size: None,
            elapsed: Some(done.elapsed),
            tls_expires_at: None,
        }),
    }
}

/// `s` cut to [`MAX_MESSAGE`] bytes, on a character boundary.
fn bounded(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Tells a failure's kind from the types in the error's chain of causes,
/// never from its text, which holds the URL (a refused connection to
/// `https://tls.example.com` is `connect`, not `tls`).
pub fn classify(err: &reqwest::Error) -> ErrorKind {
    let io_kind = causes(err)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(|e| e.kind());
    if err.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
        ErrorKind::Timeout
    } else if causes(err).any(is_tls_error) {
        ErrorKind::Tls
    } else if causes(err).any(is_dns_error) {
        ErrorKind::Dns
    } else if err.is_redirect() {
        ErrorKind::Redirect
    } else if err.is_connect()
        || matches!(
            io_kind,
            Some(
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        )
    {
        ErrorKind::Connect
    } else if err.is_body() || err.is_decode() {
        ErrorKind::Body
    } else {
        ErrorKind::Request
    }
}

/// A rustls error (a handshake or certificate failure), as such or inside
/// the `io::Error`s that tokio-rustls and reqwest wrap it in (an
/// `io::Error`'s `source()` skips what it wraps, so they are unwrapped
/// here).
fn is_tls_error(e: &(dyn StdError + 'static)) -> bool {
    let mut e: &(dyn StdError + 'static) = e;
    loop {
        if e.is::<rustls::Error>() {
            return true;
        }
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => e = inner,
            None => return false,
        }
    }
}

/// A failed name resolution: hyper-util's `ConnectError` made by its
/// `ConnectError::dns`. That type is private, so it is told by its own
/// message, a fixed text that holds no URL or host name (compared whole,
/// not searched for).
fn is_dns_error(e: &(dyn StdError + 'static)) -> bool {
    // Not the reqwest error itself: its text may end with the URL.
    !e.is::<reqwest::Error>() && e.to_string() == "dns error"
}

fn causes<'a>(err: &'a reqwest::Error) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let first: &(dyn StdError + 'static) = err;
    std::iter::successors(Some(first), |e: &&'a (dyn StdError + 'static)| {
        (*e).source()
    })
}

fn chain_text(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in causes(err) {
        let s = e.to_string();
        // Causes often repeat their source's text; keep each once.
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The error's message with its causes, without the URL (it may carry a
/// token in its query), cut to a sane length.
fn describe(err: reqwest::Error) -> String {
    bounded(chain_text(&err.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LOCATION};

    fn hop(from: &str, status: u16, location: &str) -> Result<Option<Url>, Failure> {
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, HeaderValue::from_str(location).unwrap());
        next_hop(
            &Url::parse(from).unwrap(),
            StatusCode::from_u16(status).unwrap(),
            &headers,
        )
    }

    #[test]
    fn a_redirect_from_https_to_http_is_refused_without_showing_where_to() {
        let f = hop("https://api.test/a", 301, "http://api.test/a?key=S3CR3T").unwrap_err();
        assert_eq!(f.kind, ErrorKind::Redirect);
        assert_eq!(f.status, Some(301));
        assert!(f.message.contains("from https to http"), "{f:?}");
        assert!(!f.message.contains("S3CR3T") && !f.message.contains("api.test"));
        // Upgrades and same-scheme hops are followed.
        let next = hop("http://api.test/a", 302, "https://other.test/b").unwrap();
        assert_eq!(next.unwrap().as_str(), "https://other.test/b");
        let next = hop("https://api.test/a/b", 307, "../c?x=1").unwrap();
        assert_eq!(next.unwrap().as_str(), "https://api.test/c?x=1");
    }

    #[test]
    fn only_redirects_with_a_usable_location_are_followed() {
        let f = hop("https://api.test/", 302, "ftp://files.test/x").unwrap_err();
        assert_eq!(f.kind, ErrorKind::Redirect);
        let f = hop("https://api.test/", 302, "http://[::1").unwrap_err();
        assert_eq!(f.kind, ErrorKind::Redirect);
        assert!(!f.message.contains("::1"), "{f:?}");
        // Not a redirect to follow: the answer is the result.
        for status in [200, 300, 304, 404] {
            assert!(hop("https://api.test/", status, "/x").unwrap().is_none());
        }
        let none = next_hop(
            &Url::parse("https://api.test/").unwrap(),
            StatusCode::FOUND,
            &HeaderMap::new(),
        );
        assert!(none.unwrap().is_none());
    }
}
