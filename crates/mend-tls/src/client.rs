//! The client side: tonic endpoints to an agent, over mutual TLS with the
//! node's (or operator's) certificate, trusting only the cluster CA.

use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::material::Material;

/// How a client connects.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// Mutual TLS with this material.
    Tls(Arc<Material>),
    /// Plaintext (only to agents started with `--insecure-plaintext`).
    Plaintext,
}

/// `host:port` of an address given as `host:port`, `http://host:port` or
/// `https://host:port`.
pub fn host_port(addr: &str) -> &str {
    let a = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    a.trim_end_matches('/')
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
pub fn host(host_port: &str) -> &str {
    let h = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    h.trim_start_matches('[').trim_end_matches(']')
}

/// An endpoint for `addr`. With TLS, the server's certificate must carry
/// `server_name` (a configured peer's node id), or else the address's host
/// (an IP SAN such as 127.0.0.1, or a DNS name).
pub fn endpoint(
    addr: &str,
    server_name: Option<&str>,
    tls: &ClientTls,
) -> Result<Endpoint, String> {
    let hp = host_port(addr);
    match tls {
        ClientTls::Plaintext => Endpoint::from_shared(format!("http://{hp}"))
            .map_err(|e| format!("bad address {addr}: {e}")),
        ClientTls::Tls(m) => {
            let ep = Endpoint::from_shared(format!("https://{hp}"))
                .map_err(|e| format!("bad address {addr}: {e}"))?;
            let name = server_name.unwrap_or_else(|| host(hp));
            let cfg = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&m.ca_pem))
                .identity(tonic::transport::Identity::from_pem(
                    &m.cert_pem,
                    &m.key_pem,
                ))
                .domain_name(name.to_string());
            ep.tls_config(cfg)
                .map_err(|e| format!("TLS config for {addr}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(host_port("http://127.0.0.1:7400/"), "127.0.0.1:7400");
        assert_eq!(host_port("https://a.b:1"), "a.b:1");
        assert_eq!(host(host_port("node-a.mend:7400")), "node-a.mend");
        assert_eq!(host("[::1]:7400"), "::1");
        assert_eq!(host("localhost"), "localhost");
    }
}
