//! TLS in front of the gateway (rustls), and mutual TLS: with a client CA the gateway
//! requires a certificate it signed, and the certificate's subject is the caller's name
//! the host's access rules see ([`cellshm::PeerIdentity::remote`]).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The gateway's TLS set-up: its certificate chain and key, and optionally the CA whose
/// client certificates it requires (mTLS). See [`crate::Gateway::tls`].
#[derive(Clone)]
pub struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// Whether clients must present a certificate.
    pub(crate) mutual: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mutual", &self.mutual).finish_non_exhaustive()
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn certificates(pem: &[u8], what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{what}: not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid(format!("{what}: no certificate in it")));
    }
    Ok(certificates)
}

fn read(path: &Path, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display())))
}

impl Tls {
    /// TLS with the PEM certificate chain `cert_chain` (the gateway's first) and its PEM
    /// private key `key`; with `client_ca` (PEM), clients must present a certificate
    /// that CA signed: the handshake of one without fails.
    pub fn from_pem(cert_chain: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> io::Result<Tls> {
        let chain = certificates(cert_chain, "the certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(format!("the private key: {e}")))?;
        // ring keeps the build to Rust and cc (aws-lc-rs would build AWS-LC); it offers no
        // post-quantum key exchange, which rustls marks by deprecating it. A host that
        // wants one brings its own configuration to `Tls::from_config`.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?;
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in certificates(ca, "the client CA")? {
                    roots.add(certificate).map_err(|e| invalid(format!("the client CA: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| invalid(format!("the client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| invalid(format!("the certificate: {e}")))?;
        Ok(Tls::from_config(config, client_ca.is_some()))
    }

    /// [`Tls::from_pem`] from files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path, client_ca: Option<&Path>) -> io::Result<Tls> {
        let ca = client_ca.map(|p| read(p, "the client CA")).transpose()?;
        Tls::from_pem(&read(cert_chain, "the certificate chain")?, &read(key, "the private key")?, ca.as_deref())
    }

    /// TLS from a rustls configuration of your own (`mutual`: it requires client
    /// certificates, whose subjects then name the callers). HTTP/2 is offered by ALPN.
    pub fn from_config(mut config: rustls::ServerConfig, mutual: bool) -> Tls {
        config.alpn_protocols = vec![b"h2".to_vec()];
        Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), mutual }
    }
}

/// The caller's name from a client certificate: its subject's first Common Name, or the
/// whole subject (RFC 4514 text) if it has none.
pub(crate) fn subject_name(certificate: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let subject = certificate.subject();
    let common_name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    common_name.or_else(|| Some(subject.to_string())).filter(|name| !name.is_empty())
}
