//! The certificate an https endpoint presents to new connections.
//!
//! Checks reuse kept-alive connections, and a connection's TLS session
//! shows the certificate it was opened with: a renewed certificate would
//! stay unseen for as long as the server keeps that connection open. So,
//! every `PINGER_TLS_RECHECK` (1 h) per https endpoint, a handshake-only
//! probe (a TCP connect and a TLS handshake, no request, so no check is
//! slowed and the endpoint sees no extra request) reads the certificate
//! the endpoint presents now, trusting what the checks trust (the web PKI
//! roots and the endpoint's `ca_file`). A row's `tls_expires_at` is the
//! later of its connection's and the latest probe's notAfter: a renewed
//! certificate always expires later than the one it replaces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimon_core::apis::Endpoint;
use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The probes of every https endpoint, and what they saw.
#[derive(Clone)]
pub struct Rechecks {
    every: Duration,
    seen: Arc<Mutex<HashMap<String, Probed>>>,
}

#[derive(Debug, Clone, Copy)]
struct Probed {
    /// When the last probe started (or the endpoint was first checked).
    at: Instant,
    in_flight: bool,
    not_after: Option<DateTime<Utc>>,
}

impl Rechecks {
    /// Probes every `every`; zero turns the probes off.
    pub fn new(every: Duration) -> Rechecks {
        Rechecks {
            every,
            seen: Arc::default(),
        }
    }

    /// What to record for a check of `ep` whose connection presented a
    /// certificate expiring at `from_connection`: the later of that and
    /// the latest probe's. Starts a probe when one is due (the first one
    /// `every` after the endpoint's first check, whose connection is new).
    pub fn expiry(
        &self,
        ep: &Endpoint,
        from_connection: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let url = ep.url.expose();
        if self.every.is_zero() || url.scheme() != "https" {
            return from_connection;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The name is copied once per endpoint, not once per check.
        if !seen.contains_key(&ep.name) {
            let first = Probed {
                at: now,
                in_flight: false,
                not_after: None,
            };
            seen.insert(ep.name.clone(), first);
        }
        let Some(entry) = seen.get_mut(&ep.name) else {
            return from_connection;
        };
        if !entry.in_flight && now.duration_since(entry.at) >= self.every {
            if let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) {
                entry.in_flight = true;
                entry.at = now;
                let host = host.to_string();
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let ca = ep.ca.as_ref().map(|c| c.pem.clone());
                let (name, timeout, seen) = (ep.name.clone(), ep.timeout, self.seen.clone());
                tokio::spawn(async move {
                    let got =
                        presented(&host, port, ca.as_deref().map(Vec::as_slice), timeout).await;
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(p) = seen.get_mut(&name) {
                        p.in_flight = false;
                        // A failed probe keeps what the last one saw.
                        p.not_after = got.or(p.not_after);
                    }
                });
            }
        }
        match (from_connection, entry.not_after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The notAfter of the certificate `host:port` presents now; `None` when
/// no handshake got that far within `timeout`. Untrusted or expired
/// certificates are read too (the handshake fails after the reading).
pub async fn presented(
    host: &str,
    port: u16,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Option<DateTime<Utc>> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in ca_pem
        .map(apimon_core::certs::der_certificates)
        .unwrap_or_default()
    {
        let _ = roots.add(CertificateDer::from(der));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .ok()?;
    let recorder = Arc::new(Recorder {
        inner,
        leaf: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).ok()?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        // Its result does not matter: the verifier has read the leaf.
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        Some(())
    };
    tokio::time::timeout(timeout, handshake).await.ok()??;
    let der = recorder
        .leaf
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()?;
    apimon_core::certs::not_after(&der)
}

/// Verifies as the web PKI verifier does, keeping the leaf certificate.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock().unwrap_or_else(|e| e.into_inner()) = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
