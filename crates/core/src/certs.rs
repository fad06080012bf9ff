//! Certificates: the private CAs an endpoint trusts (`ca_file`), and the
//! expiry of the certificate a check's TLS session presented.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The certificates of a `ca_file`, read and validated when the
/// configuration is loaded: an unreadable file, one without a certificate,
/// or one whose certificate does not parse stops the pinger at start.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// The file, as resolved (shown in errors and in `--check-config`).
    pub path: PathBuf,
    /// Its PEM text, with at least one valid certificate.
    pub pem: Arc<Vec<u8>>,
    /// How many certificates it holds.
    pub certificates: usize,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certificates)
            .finish()
    }
}

impl CaBundle {
    /// Reads the PEM file at `path`. The error names the file and what is
    /// wrong with it.
    pub fn load(path: &Path) -> Result<CaBundle, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let certificates =
            count_certificates(&pem).map_err(|why| format!("`{}`: {why}", path.display()))?;
        Ok(CaBundle {
            path: path.to_path_buf(),
            pem: Arc::new(pem),
            certificates,
        })
    }
}

/// How many PEM `CERTIFICATE` blocks `pem` holds, each a valid X.509
/// certificate; an error when there is none or one is invalid.
pub fn count_certificates(pem: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| format!("PEM block {} is not valid PEM ({e})", i + 1))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        block
            .parse_x509()
            .map_err(|e| format!("PEM block {} is not a valid X.509 certificate ({e})", i + 1))?;
        n += 1;
    }
    if n == 0 {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(n)
}

/// The DER of each PEM `CERTIFICATE` block of `pem` (unparseable blocks
/// are skipped: [`CaBundle::load`] has refused them already).
pub fn der_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .flatten()
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
        .collect()
}

/// The notAfter of a DER certificate; `None` when it does not parse.
pub fn not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_without_a_valid_certificate_are_refused_with_the_reason() {
        assert!(count_certificates(b"")
            .unwrap_err()
            .contains("holds no PEM certificate"));
        assert!(count_certificates(b"just some text\n")
            .unwrap_err()
            .contains("holds no PEM certificate"));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = count_certificates(garbage).unwrap_err();
        assert!(
            e.contains("block 1 is not a valid X.509 certificate"),
            "{e}"
        );
        assert!(not_after(b"\x30\x03\x02\x01\x01").is_none());
        let dir = tempfile::tempdir().unwrap();
        let e = CaBundle::load(&dir.path().join("missing.pem")).unwrap_err();
        assert!(
            e.starts_with("cannot read `") && e.contains("missing.pem"),
            "{e}"
        );
    }
}
