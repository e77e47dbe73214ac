//! TLS: builds the rustls acceptor from PEM certificate and key files.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as RustlsConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::config::TlsFiles;
use crate::error::ServerError;

fn open(path: &std::path::Path) -> Result<BufReader<File>, ServerError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| ServerError::Tls(format!("cannot open {}: {e}", path.display())))
}

/// Load the certificate chain and private key and build an acceptor that
/// also speaks direct TLS (ALPN `postgresql`).
pub fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let certs = rustls_pemfile::certs(&mut open(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate found",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(&files.key)?)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ServerError::Tls(format!("{}: no private key found", files.key.display()))
        })?;
    let mut config = RustlsConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_reported() {
        let files = TlsFiles {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let err = load_tls(&files)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn empty_cert_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "").unwrap();
        let files = TlsFiles {
            cert,
            key: dir.path().join("k.pem"),
        };
        let err = load_tls(&files)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no certificate"), "{err}");
    }
}
