//! Native TLS (https / wss) with rustls.
//!
//! [`load`] builds a rustls server config from PEM files (`tls_cert`: the
//! certificate chain, leaf first; `tls_key`: its PKCS#8, PKCS#1 or SEC1 private key).
//! The TLS listener (`tls_listen`) hands each accepted connection through the
//! resulting [`TlsAcceptor`] and then serves the very same router as the plain
//! listener, so `https://…/live/NAME.flv` and `wss://…/signal/ROOM` behave exactly
//! like their plain counterparts. Only HTTP/1.1 is offered (ALPN `http/1.1`):
//! WebSocket upgrades need it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    /// `tls_listen` is on but `tls_cert` or `tls_key` is not set.
    #[error("tls_listen needs both tls_cert and tls_key")]
    MissingFiles,
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("cannot load certificates from {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or holds no PEM private key.
    #[error("cannot load the private key from {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("invalid TLS certificate/key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads the certificate chain and key and builds the acceptor.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(cert, key)?))
}

/// The rustls server config for `cert` and `key` (ring provider, TLS 1.2 and 1.3,
/// ALPN `http/1.1`).
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsrelay-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn loads_an_rcgen_certificate_and_completes_a_handshake() {
        let dir = temp_dir("ok");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let acceptor = load(&cert, &key).unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(client));

        let (a, b) = tokio::io::duplex(16 << 10);
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(a).await.unwrap();
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, b).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        let mut echo = Vec::new();
        tls.read_to_end(&mut echo).await.unwrap();
        assert_eq!(echo, b"hello");
        server.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_or_mismatched_files_are_explained() {
        let dir = temp_dir("bad");
        let a = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key, other_key) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("o.pem"));
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        std::fs::write(&other_key, b.signing_key.serialize_pem()).unwrap();
        assert!(matches!(
            server_config(&dir.join("nope.pem"), &key),
            Err(TlsError::Cert { .. })
        ));
        assert!(matches!(
            server_config(&key, &key),
            Err(TlsError::Cert { .. })
        ));
        assert!(matches!(
            server_config(&cert, &cert),
            Err(TlsError::Key { .. })
        ));
        assert!(matches!(
            server_config(&cert, &other_key),
            Err(TlsError::Rustls(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
