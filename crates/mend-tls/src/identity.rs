//! Who is calling: the identity of a TLS peer is the set of DNS and URI
//! subject alternative names of its leaf certificate, parsed once when the
//! connection is accepted. Roles are granted to identity patterns.

use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most names kept from one certificate (a certificate with more is
/// refused at the handshake's end: it is not one mend or cert-manager
/// issues).
pub const IDENTITY_NAMES_MAX: usize = 32;

/// Most bytes of one name.
pub const IDENTITY_NAME_BYTES_MAX: usize = 253;

/// The DNS/URI SANs of a certificate, in certificate order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    names: Vec<String>,
}

impl Identity {
    /// An identity with these names (tests, configuration).
    pub fn new(names: Vec<String>) -> Identity {
        Identity { names }
    }

    /// Parses the DNS and URI SANs of a DER certificate.
    pub fn from_der(der: &CertificateDer<'_>) -> Result<Identity, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| format!("certificate does not parse: {e}"))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("bad subjectAltName: {e}"))?;
        let mut names = Vec::new();
        if let Some(san) = san {
            for g in &san.value.general_names {
                let n = match g {
                    GeneralName::DNSName(s) | GeneralName::URI(s) => *s,
                    _ => continue,
                };
                if names.len() == IDENTITY_NAMES_MAX {
                    return Err(format!(
                        "more than IDENTITY_NAMES_MAX = {IDENTITY_NAMES_MAX} DNS/URI names"
                    ));
                }
                if n.is_empty() || n.len() > IDENTITY_NAME_BYTES_MAX {
                    return Err(format!(
                        "a name of {} bytes (allowed 1..={IDENTITY_NAME_BYTES_MAX})",
                        n.len()
                    ));
                }
                names.push(n.to_string());
            }
        }
        Ok(Identity { names })
    }

    /// Every name.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The first name: what logs, journals and `UndoPush` ownership use.
    /// Empty when the certificate carries no DNS/URI name.
    pub fn primary(&self) -> &str {
        self.names.first().map(String::as_str).unwrap_or("")
    }

    /// Whether any name matches any of `patterns`.
    pub fn matches_any(&self, patterns: &[Pattern]) -> bool {
        self.names
            .iter()
            .any(|n| patterns.iter().any(|p| p.matches(n)))
    }

    /// Whether `name` is one of the names.
    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.names.is_empty() {
            return f.write_str("(no DNS/URI name)");
        }
        f.write_str(&self.names.join(","))
    }
}

/// The validity window of a DER certificate, seconds since the Unix epoch.
pub fn validity(der: &CertificateDer<'_>) -> Result<(u64, u64), String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let v = cert.validity();
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok((
        secs(v.not_before.timestamp()),
        secs(v.not_after.timestamp()),
    ))
}

/// An identity pattern: an exact name, or a name with `*` wildcards, each
/// matching any run of characters (`*.mend.svc`, `spiffe://prod/ns/*`,
/// `*` for any authenticated caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern from its text.
    pub fn new(p: impl Into<String>) -> Pattern {
        Pattern(p.into())
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// `*`-only glob matching in O(|p|·|s|) worst case, no recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_wildcards_only() {
        let cases = [
            ("node-a", "node-a", true),
            ("node-a", "node-ab", false),
            ("node-*", "node-a", true),
            ("node-*", "nodeX-a", false),
            ("*.mend.svc", "a.mend.svc", true),
            ("*.mend.svc", "a.mend.svc.evil", false),
            ("*", "anything", true),
            ("spiffe://prod/*/mend", "spiffe://prod/ns1/mend", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(Pattern::new(p).matches(s), want, "{p:?} vs {s:?}");
        }
    }
}
