//! One check of one endpoint: the request, the timing, and the
//! classification of what went wrong.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use apimon_core::apis::Endpoint;
use apimon_core::db::metrics::MetricRow;
use chrono::{SubsecRound, Utc};

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
    /// Too many redirects, or a redirect loop.
    Redirect,
    /// Anything else about the request (malformed response, protocol error).
    Request,
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
        }
    }
}

/// Longest error message stored.
const MAX_MESSAGE: usize = 1000;

/// Sends checks through one shared HTTP client (one connection pool).
#[derive(Clone)]
pub struct Checker {
    client: reqwest::Client,
}

impl Checker {
    pub fn new(user_agent: &str) -> Result<Checker, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Checker { client })
    }

    /// Checks `ep` once. Never fails: a failure is a row too.
    #[tracing::instrument(skip_all, fields(api = %ep.name))]
    pub async fn check(&self, ep: &Endpoint) -> MetricRow {
        let timestamp = Utc::now().trunc_subsecs(6);
        let mut req = self
            .client
            .request(ep.method.clone(), ep.url.clone())
            .headers(ep.headers.clone())
            .timeout(ep.timeout);
        if let Some(body) = &ep.body {
            req = req.body(body.clone());
        }
        let started = Instant::now();
        let outcome = fetch(req).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut row = MetricRow {
            timestamp,
            api_name: ep.name.clone(),
            url: ep.url.to_string(),
            response_time_ms: None,
            status_code: None,
            success: false,
            response_size_bytes: None,
            error_kind: None,
            error_message: None,
        };
        match outcome {
            Ok((status, size)) => {
                row.status_code = Some(i32::from(status));
                row.response_size_bytes = Some(size);
                row.response_time_ms = Some(elapsed_ms);
                if ep.expected_status.matches(status) {
                    row.success = true;
                } else {
                    row.error_kind = Some(ErrorKind::HttpStatus.as_str().to_string());
                    row.error_message =
                        Some(format!("status {status}, expected {}", ep.expected_status));
                }
            }
            Err(FetchError { status, error }) => {
                let kind = classify(&error);
                row.status_code = status.map(i32::from);
                row.error_kind = Some(kind.as_str().to_string());
                row.error_message = Some(describe(error));
            }
        }
        row
    }
}

struct FetchError {
    /// Status, when the failure came after the response head.
    status: Option<u16>,
    error: reqwest::Error,
}

/// Sends the request and reads the body to its end, counting its bytes
/// without keeping them.
async fn fetch(req: reqwest::RequestBuilder) -> Result<(u16, i64), FetchError> {
    let mut resp = req.send().await.map_err(|error| FetchError {
        status: None,
        error,
    })?;
    let status = resp.status().as_u16();
    let mut size: i64 = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => size += chunk.len() as i64,
            Ok(None) => return Ok((status, size)),
            Err(error) => {
                return Err(FetchError {
                    status: Some(status),
                    error,
                })
            }
        }
    }
}

/// Tells a failure's kind from the error and its chain of causes.
pub fn classify(err: &reqwest::Error) -> ErrorKind {
    let chain = chain_text(err).to_ascii_lowercase();
    let io_kind = causes(err)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(|e| e.kind());
    if err.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
        ErrorKind::Timeout
    } else if chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("name or service not known")
        || chain.contains("no such host")
    {
        ErrorKind::Dns
    } else if chain.contains("tls")
        || chain.contains("certificate")
        || chain.contains("handshake")
        || chain.contains("invalidcontenttype")
        || chain.contains("corrupt message")
    {
        ErrorKind::Tls
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
    let err = err.without_url();
    let mut s = chain_text(&err);
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
