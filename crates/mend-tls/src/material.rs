//! A validated set of TLS files: this node's certificate chain and key, and
//! the cluster CA that every peer's certificate must chain to.
//!
//! File layout (`TlsPaths::in_dir`) is cert-manager's Secret layout, so a
//! Kubernetes Secret mounted as a directory works as it is:
//! `DIR/tls.crt` (PEM chain, leaf first), `DIR/tls.key` (PEM PKCS#8, SEC1 or
//! PKCS#1 key), `DIR/ca.crt` (PEM, one or more CA certificates).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::TlsError;
use crate::identity::{self, Identity};

/// Most bytes one PEM file may have (a chain of a few certificates is a
/// few KiB; this bounds what a mistaken path makes us read).
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// The three files of a TLS set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// This node's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// This node's private key.
    pub key_file: PathBuf,
    /// The CA certificates peers' certificates must chain to.
    pub ca_file: PathBuf,
}

impl TlsPaths {
    /// The cert-manager layout: `dir/tls.crt`, `dir/tls.key`, `dir/ca.crt`.
    pub fn in_dir(dir: &Path) -> TlsPaths {
        TlsPaths {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            ca_file: dir.join("ca.crt"),
        }
    }

    /// A directory in the cert-manager layout, overridden file by file;
    /// `None` unless all three files are known.
    pub fn from_parts(
        dir: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Option<TlsPaths> {
        let base = dir.map(TlsPaths::in_dir);
        let pick = |f: Option<&Path>, d: Option<&PathBuf>| f.map(Path::to_path_buf).or(d.cloned());
        Some(TlsPaths {
            cert_file: pick(cert_file, base.as_ref().map(|b| &b.cert_file))?,
            key_file: pick(key_file, base.as_ref().map(|b| &b.key_file))?,
            ca_file: pick(ca_file, base.as_ref().map(|b| &b.ca_file))?,
        })
    }

    /// The files, for change detection.
    pub fn files(&self) -> [&Path; 3] {
        [&self.cert_file, &self.key_file, &self.ca_file]
    }
}

/// The process's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A validated TLS set.
#[derive(Debug)]
pub struct Material {
    /// Where it came from.
    pub paths: TlsPaths,
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The CA certificates.
    pub roots: Arc<RootCertStore>,
    /// The raw PEM texts (tonic's client config takes PEM).
    pub cert_pem: Vec<u8>,
    /// The key's PEM text.
    pub key_pem: Vec<u8>,
    /// The CA's PEM text.
    pub ca_pem: Vec<u8>,
    /// The names in this node's own certificate.
    pub identity: Identity,
    /// The leaf certificate's expiry, seconds since the Unix epoch.
    pub not_after_unix: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("{len} bytes exceed PEM_FILE_BYTES_MAX = {PEM_FILE_BYTES_MAX}"),
        });
    }
    std::fs::read(path).map_err(err)
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate list: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE in the file".into(),
        });
    }
    Ok(certs)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Material {
    /// Reads and validates the three files: each parses, the key matches
    /// the certificate, the certificate chains to the CA and is valid now.
    pub fn load(paths: &TlsPaths) -> Result<Material, TlsError> {
        let cert_pem = read(&paths.cert_file)?;
        let key_pem = read(&paths.key_file)?;
        let ca_pem = read(&paths.ca_file)?;
        let chain = certs(&paths.cert_file, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: paths.key_file.clone(),
            what: format!("not a PEM private key: {e}"),
        })?;
        let mut roots = RootCertStore::empty();
        for c in certs(&paths.ca_file, &ca_pem)? {
            roots.add(c).map_err(|e| TlsError::Pem {
                path: paths.ca_file.clone(),
                what: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let identity = Identity::from_der(&chain[0]).map_err(|what| TlsError::Pem {
            path: paths.cert_file.clone(),
            what,
        })?;
        let (not_before, not_after) =
            identity::validity(&chain[0]).map_err(|what| TlsError::Pem {
                path: paths.cert_file.clone(),
                what,
            })?;
        let now = now_unix();
        if now > not_after {
            return Err(TlsError::Invalid(format!(
                "{}: certificate expired {} s ago",
                paths.cert_file.display(),
                now - not_after
            )));
        }
        if now < not_before {
            return Err(TlsError::Invalid(format!(
                "{}: certificate not valid for another {} s",
                paths.cert_file.display(),
                not_before - now
            )));
        }
        let provider = provider();
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
            TlsError::Invalid(format!(
                "{} does not match {}: {e}",
                paths.key_file.display(),
                paths.cert_file.display()
            ))
        })?;
        let m = Material {
            paths: paths.clone(),
            chain,
            key,
            roots: Arc::new(roots),
            cert_pem,
            key_pem,
            ca_pem,
            identity,
            not_after_unix: not_after,
        };
        m.check_chain()?;
        Ok(m)
    }

    /// The leaf must chain to the CA, as a peer would check it.
    fn check_chain(&self) -> Result<(), TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Invalid(format!("CA {}: {e}", self.paths.ca_file.display())))?;
        verifier
            .verify_client_cert(&self.chain[0], &self.chain[1..], UnixTime::now())
            .map_err(|e| {
                TlsError::Invalid(format!(
                    "{} is not valid under CA {}: {e}",
                    self.paths.cert_file.display(),
                    self.paths.ca_file.display()
                ))
            })?;
        Ok(())
    }

    /// A server config that requires a client certificate chaining to the
    /// CA, speaking HTTP/2 only (gRPC).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Invalid(format!("client verifier: {e}")))?;
        let mut c = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Invalid(format!("server certificate: {e}")))?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    }

    /// A client config presenting this node's certificate and trusting only
    /// the CA (for HTTPS clients such as the webhook sender).
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Invalid(format!("server verifier: {e}")))?;
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Invalid(format!("client certificate: {e}")))
    }
}
