//! Mutual TLS for mend: every connection (agent ↔ agent, CLI ↔ agent) is
//! TLS 1.2+/1.3 with certificates on both sides, issued by one cluster CA.
//!
//! This crate owns:
//! - [`material`]: loading and validating a certificate, key and CA from PEM
//!   files (parseable, key matches certificate, chains to the CA, not
//!   expired) and building rustls configs from them, always with the `ring`
//!   provider (exactly one rustls crypto provider is compiled in);
//! - [`reload`]: a [`reload::TlsSource`] that polls the files and swaps in a
//!   new, validated set without a restart, keeping the old one on a bad set;
//! - [`identity`]: a peer's identity (the DNS/URI SANs of its certificate,
//!   parsed once per connection) and identity patterns for roles;
//! - [`accept`]: the server's accept loop (bounded connections, a TLS
//!   handshake deadline, identity in the connection info tonic hands to
//!   every request);
//! - [`client`]: tonic client endpoints over the same material;
//! - [`dev`]: a development CA and node/client certificates (rcgen) for
//!   `mend cert`, the demo and the tests.
//!
//! Invariant: nothing here reads the cluster secret; TLS authenticates
//! callers, the secret only keys digests.

pub mod accept;
pub mod client;
pub mod dev;
pub mod identity;
pub mod material;
pub mod reload;

use std::path::PathBuf;

pub use identity::{Identity, Pattern};
pub use material::{Material, TlsPaths};
pub use reload::TlsSource;

/// Errors of TLS setup. None of them is retryable by waiting: each names
/// a file or a setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The set of files does not fit together or is not valid now.
    #[error("{0}")]
    Invalid(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
    /// Writing generated files failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Installs the `ring` provider as rustls's process default, for libraries
/// (reqwest's rustls feature) that build configs from the default provider.
/// Idempotent.
pub fn install_default_provider() {
    // Err means a provider is already installed: with one provider compiled
    // in, that is this same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
