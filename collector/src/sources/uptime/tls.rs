//! TLS checks: a handshake with tokio-rustls (the rustls reqwest already links, ring
//! provider), then the peer certificate's notAfter read with x509-parser.
//!
//! The verifier wraps rustls' WebPKI verifier and keeps the end-entity certificate it is
//! shown, so days left are reported even when verification fails (an expired or
//! untrusted certificate is exactly when they matter) and with `verify_tls = false`
//! (self-signed, internal CAs). Latency is the handshake alone, after the TCP connect.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lake_format::units::Dur;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{tcp, Outcome, TlsCheck};
use lake_format::error::error_chain;

/// What the checks report about a certificate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CertInfo {
    /// Days until notAfter, fractional; negative once expired.
    pub(crate) days_left: f64,
    /// Subject DN.
    pub(crate) subject: String,
    /// Issuer DN.
    pub(crate) issuer: String,
    /// notAfter, RFC 3339 UTC.
    pub(crate) not_after: String,
}

/// Reads a DER certificate; `None` when it does not parse.
pub(crate) fn cert_info(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    Some(CertInfo {
        days_left: (not_after as f64 - now) / 86_400.0,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after: rfc3339(not_after),
    })
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let date = lake_format::layout::Date::from_days(days);
    format!("{date}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Trust roots and crypto, built once per source.
#[derive(Debug, Clone)]
pub(crate) struct TlsProber {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
}

impl TlsProber {
    pub(crate) fn new() -> TlsProber {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        // Building only fails without roots or algorithms; the check then reports it.
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build().ok();
        TlsProber { provider, webpki }
    }

    pub(crate) async fn probe(&self, check: &TlsCheck, timeout: Duration) -> Outcome {
        let Some(webpki) = &self.webpki else {
            return Outcome::failed("no TLS verifier (no trust roots)");
        };
        let verifier =
            Arc::new(Capturing { inner: Arc::clone(webpki), verify: check.verify_tls, seen: Mutex::new(None) });
        let config = match ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.dangerous().with_custom_certificate_verifier(verifier.clone()).with_no_client_auth(),
            Err(e) => return Outcome::failed(format!("TLS configuration: {e}")),
        };
        let server_name = match ServerName::try_from(check.server_name.clone()) {
            Ok(n) => n,
            Err(e) => return Outcome::failed(format!("server_name: {e}")),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || Outcome::failed(format!("timeout after {}", Dur(timeout)));
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect((check.host.as_str(), check.port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Outcome::failed(tcp::connect_error(&e)),
            Err(_) => return timed_out(),
        };
        let address = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let start = Instant::now();
        let result =
            tokio::time::timeout_at(deadline, TlsConnector::from(Arc::new(config)).connect(server_name, tcp)).await;
        let latency = start.elapsed();
        let seen = verifier.seen.lock().ok().and_then(|mut s| s.take());
        let mut out = Outcome { cert: seen.as_deref().and_then(cert_info), ..Outcome::default() };
        out.attrs.push(("address", address));
        match result {
            Err(_) => out.error = timed_out().error,
            Ok(Err(e)) => out.error = Some(format!("TLS handshake: {}", error_chain(&e))),
            Ok(Ok(stream)) => {
                out.latency = Some(latency);
                let (_, conn) = stream.get_ref();
                if let Some(v) = conn.protocol_version() {
                    out.attrs.push(("tls_version", format!("{v:?}")));
                }
                match &out.cert {
                    None => out.error = Some("no readable peer certificate".to_string()),
                    Some(c) if c.days_left <= 0.0 => {
                        out.error = Some(format!("certificate expired on {}", c.not_after));
                    }
                    Some(_) => out.ok = true,
                }
            }
        }
        out
    }
}

/// Keeps the end-entity certificate, then verifies with WebPKI or accepts it.
#[derive(Debug)]
struct Capturing {
    inner: Arc<WebPkiServerVerifier>,
    verify: bool,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.as_ref().to_vec());
        }
        if self.verify {
            self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        } else {
            Ok(ServerCertVerified::assertion())
        }
    }

    // Handshake signatures are always checked: they prove the peer holds the key of the
    // certificate it showed, which matters even when the certificate is not trusted.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_852_800), "2026-11-28T08:00:00Z");
        assert_eq!(rfc3339(-86_400), "1969-12-31T00:00:00Z");
    }
}
