//! Certificates for loopback TLS servers: a private CA (written to a PEM
//! file for `ca_file`) and leaf certificates for `localhost` and
//! 127.0.0.1 that expire when a test says.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA of its own: self-signed, trusted by nobody until a test gives its
/// PEM to a client.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, for [`crate::http::HttpServer::start_tls`].
pub struct Identity {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
    /// Its notAfter (whole seconds).
    pub not_after: OffsetDateTime,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "apimon test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key).expect("a self-signed CA");
        TestCa { cert, key }
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes [`TestCa::pem`] to `path`.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.pem()).expect("write the CA file");
    }

    /// A certificate for `localhost` and 127.0.0.1, valid from a day ago
    /// until `days` from now (whole seconds).
    pub fn leaf_for_days(&self, days: i64) -> Identity {
        self.leaf(Duration::days(days))
    }

    /// A certificate for `localhost` and 127.0.0.1, valid from a day ago
    /// until `valid_for` from now (whole seconds).
    pub fn leaf(&self, valid_for: Duration) -> Identity {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("leaf parameters");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("zero nanoseconds");
        params.not_before = now - Duration::days(1);
        params.not_after = now + valid_for;
        let not_after = params.not_after;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a leaf signed by the CA");
        Identity {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            not_after,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl Identity {
    /// A TLS acceptor that presents this certificate.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .expect("a server certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
