//! `kind = "tcp"` checks: the host is resolved, then a TCP connection is
//! opened and closed at once. The response time is the connect alone (the
//! resolve is not counted); the endpoint's timeout covers both.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::check::{Done, ErrorKind, Failure};

/// Connects to `address` (`host:port`) once.
pub(crate) async fn connect(address: &str, timeout: Duration) -> Result<Done, Failure> {
    let started = Instant::now();
    let timed_out = || {
        Failure::new(
            ErrorKind::Timeout,
            None,
            format!("no TCP connection within {} ms", timeout.as_millis()),
        )
    };
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host(address)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(Failure::new(
                    ErrorKind::Dns,
                    None,
                    format!("cannot resolve the host: {e}"),
                ))
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    if addrs.is_empty() {
        return Err(Failure::new(
            ErrorKind::Dns,
            None,
            "the host has no address",
        ));
    }
    let mut last = None;
    for addr in addrs {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(timed_out());
        }
        let began = Instant::now();
        match tokio::time::timeout(left, TcpStream::connect(addr)).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(stream)) => {
                let elapsed = began.elapsed();
                drop(stream);
                return Ok(Done {
                    status: None,
                    size: None,
                    elapsed,
                    tls_expires_at: None,
                });
            }
            Ok(Err(e)) => last = Some(e),
        }
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(Failure::new(
        ErrorKind::Connect,
        None,
        format!("TCP connection failed: {e}"),
    ))
}
