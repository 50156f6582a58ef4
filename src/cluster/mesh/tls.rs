//! Optional TLS on mesh links (rustls), with certificates checked both ways.
//!
//! Every node presents a certificate signed by the cluster's CA and accepts
//! only peers whose certificate that CA signed: the dialling side checks the
//! listener's certificate against the address it dialled (an IP address or
//! a DNS name in the certificate's subject alternative names), and the
//! listening side requires a client certificate. TLS protects the link; the
//! secret handshake still runs inside it, so both can be used together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where a node's TLS material lives, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {path}: {reason}")]
    Load {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("tls configuration: {0}")]
    Config(String),
}

/// The TLS ends of this node's links.
#[derive(Clone)]
pub struct LinkTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// A link's byte stream, plain or encrypted.
pub trait LinkIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkIo for T {}

impl LinkTls {
    /// Loads the certificate, key and CA.
    ///
    /// # Errors
    /// When a file is missing or invalid, or rustls refuses the material.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = load_certs(&files.cert)?;
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| load_error(&files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in load_certs(&files.ca)? {
            roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(config_error)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(config_error)?;

        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Accepts TLS on an inbound link.
    ///
    /// # Errors
    /// When the handshake fails (no or untrusted client certificate...).
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<Box<dyn LinkIo>> {
        Ok(Box::new(self.acceptor.accept(tcp).await?))
    }

    /// Starts TLS on an outbound link to `addr` (`host:port`), checking the
    /// peer's certificate against `host`.
    ///
    /// # Errors
    /// When the host is not a valid name or the handshake fails.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> std::io::Result<Box<dyn LinkIo>> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(self.connector.connect(name, tcp).await?))
    }
}

/// The host part of `host:port` (brackets of IPv6 removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| load_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| load_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Load {
            path: path.display().to_string(),
            reason: "no certificate".into(),
        });
    }
    Ok(certs)
}

fn load_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Load { path: path.display().to_string(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(host_of("127.0.0.1:5410"), "127.0.0.1");
        assert_eq!(host_of("node-a.internal:5410"), "node-a.internal");
        assert_eq!(host_of("[::1]:5410"), "::1");
    }
}
