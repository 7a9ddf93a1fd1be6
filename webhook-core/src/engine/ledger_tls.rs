//! TLS of the PostgreSQL ledger's connections, as libpq's `sslmode` and `sslrootcert` in
//! `LEDGER_URL` ask: `disable`, `prefer` (the default: TLS when the server offers it),
//! `require` (TLS, the server not authenticated, as libpq does), and `verify-full` (TLS,
//! the server's certificate checked against `sslrootcert` or the system's roots, for the
//! host name in the URL). tokio-postgres knows neither `verify-full` nor `sslrootcert`, so
//! both are taken out of the URL before it parses the rest.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// The TLS settings of a `LEDGER_URL`.
#[derive(Debug, Clone)]
pub struct LedgerTls {
    pub mode: Mode,
    /// `sslrootcert`: the CA certificates (PEM) that `verify-full` trusts instead of the
    /// system's.
    pub root_cert: Option<PathBuf>,
}

/// Splits `LEDGER_URL` into what tokio-postgres parses and its TLS settings; the error
/// says what is wrong, without the URL (it holds a password).
pub fn parse(url: &str) -> Result<(tokio_postgres::Config, LedgerTls), String> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                mode = Some(match value {
                    "disable" => Mode::Disable,
                    "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-full" => Mode::VerifyFull,
                    "verify-ca" => {
                        return Err(
                            "sslmode=verify-ca is not supported: use verify-full, which \
                                    also checks the server's host name"
                                .into(),
                        );
                    }
                    other => {
                        return Err(format!(
                            "sslmode={other} is not disable, prefer, require or verify-full"
                        ));
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, &percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            if !take(key, value.trim_matches('\''))? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    let mode = mode.unwrap_or(Mode::Prefer);
    if root_cert.is_some() && mode != Mode::VerifyFull {
        return Err("sslrootcert is used only with sslmode=verify-full".into());
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!("not a PostgreSQL URL such as postgres://user:password@host:5432/webhook ({e})")
    })?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyFull => SslMode::Require,
    });
    Ok((config, LedgerTls { mode, root_cert }))
}

/// `%XX` escapes in a URL's query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl LedgerTls {
    /// The connector for these settings; `None` when TLS is off.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let config = match self.mode {
            Mode::Disable => return Ok(None),
            Mode::Prefer | Mode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            Mode::VerifyFull => builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth(),
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("sslrootcert: cannot read {}: {e}", path.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        format!(
                            "sslrootcert: {} is not PEM certificates: {e}",
                            path.display()
                        )
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert: {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "sslrootcert: {} holds no certificate",
                        path.display()
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "sslmode=verify-full found no CA certificates on this system: \
                                set sslrootcert to the server's CA"
                            .into(),
                    );
                }
            }
        }
        Ok(roots)
    }
}

/// `require`: the connection is encrypted, but whoever answers is believed, as with libpq.
/// Signatures are still checked, so the handshake itself is sound.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_both_forms() {
        let (config, tls) =
            parse("postgres://u:p@db:5432/hook?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Fca.pem&application_name=x")
                .unwrap();
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/ca dir/ca.pem")));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));

        let (config, tls) = parse("host=db user=u sslmode=require dbname=hook").unwrap();
        assert_eq!(tls.mode, Mode::Require);
        assert_eq!(config.get_dbname(), Some("hook"));

        let (_, tls) = parse("postgres://u@db/hook").unwrap();
        assert_eq!(tls.mode, Mode::Prefer);
    }

    #[test]
    fn unsupported_modes_and_a_stray_root_cert_are_refused() {
        for (url, expected) in [
            ("postgres://db/h?sslmode=verify-ca", "use verify-full"),
            ("postgres://db/h?sslmode=always", "sslmode=always is not"),
            (
                "postgres://db/h?sslmode=require&sslrootcert=/ca.pem",
                "only with",
            ),
        ] {
            let err = parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }
}
