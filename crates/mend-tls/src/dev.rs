//! Development certificates, made with rcgen so that a newcomer needs no
//! openssl: a cluster CA and, per name, a certificate usable both as a
//! server and as a client certificate.
//!
//! Layout under a directory `D`:
//! - `D/ca.crt`, `D/ca.key`: the CA (keep `ca.key` away from nodes);
//! - `D/NAME/tls.crt`, `D/NAME/tls.key`, `D/NAME/ca.crt`: one node's or
//!   client's set, in cert-manager's Secret layout ([`TlsPaths::in_dir`]).
//!
//! A node certificate's first SAN is its name (its identity); `localhost`,
//! `127.0.0.1` and `::1` follow so that loopback clients can verify it by
//! address.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::TlsError;
use crate::material::TlsPaths;

/// Default validity of development certificates, in days.
pub const DEV_VALID_DAYS_DEFAULT: i64 = 365;

/// A development CA able to issue certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// One issued certificate and key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    // Write beside and rename, so a reloading agent never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl DevCa {
    /// A new CA named `name`, valid for `days`.
    pub fn new(name: &str, days: i64) -> Result<DevCa, TlsError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "mend development CA");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + Duration::days(days);
        let cert = p.self_signed(&key).map_err(gen_err)?;
        let key_pem = key.serialize_pem();
        Ok(DevCa {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(p, key),
        })
    }

    /// Loads `dir/ca.crt` and `dir/ca.key`.
    pub fn load(dir: &Path) -> Result<DevCa, TlsError> {
        let cert_pem = read(&dir.join("ca.crt"))?;
        let key_pem = read(&dir.join("ca.key"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(gen_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(gen_err)?;
        Ok(DevCa {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// Loads the CA in `dir`, creating it if `dir/ca.crt` does not exist.
    pub fn load_or_create(dir: &Path, days: i64) -> Result<(DevCa, bool), TlsError> {
        if dir.join("ca.crt").exists() {
            return Ok((DevCa::load(dir)?, false));
        }
        let ca = DevCa::new("mend dev CA", days)?;
        write(&dir.join("ca.crt"), &ca.cert_pem, false)?;
        write(&dir.join("ca.key"), &ca.key_pem, true)?;
        Ok((ca, true))
    }

    /// Issues a certificate for `name` (its first SAN and common name) plus
    /// `extra_sans` (DNS names, `uri:` prefixed URIs, or IP addresses),
    /// valid from `not_before` to `not_after`.
    pub fn issue_between(
        &self,
        name: &str,
        extra_sans: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        let mut sans = vec![san(name)?];
        for s in extra_sans {
            sans.push(san(s)?);
        }
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = p.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `name` valid for `days` from now, with the
    /// loopback names after `name` and `extra_sans`.
    pub fn issue(&self, name: &str, extra_sans: &[String], days: i64) -> Result<Issued, TlsError> {
        let mut sans = extra_sans.to_vec();
        for l in ["localhost", "127.0.0.1", "::1"] {
            if name != l && !sans.iter().any(|s| s == l) {
                sans.push(l.to_string());
            }
        }
        let now = OffsetDateTime::now_utc();
        self.issue_between(
            name,
            &sans,
            now - Duration::minutes(5),
            now + Duration::days(days),
        )
    }

    /// Writes `issued` as the set `dir` (`tls.crt`, `tls.key`, `ca.crt`).
    pub fn write_set(&self, issued: &Issued, dir: &Path) -> Result<TlsPaths, TlsError> {
        let paths = TlsPaths::in_dir(dir);
        write(&paths.ca_file, &self.cert_pem, false)?;
        write(&paths.key_file, &issued.key_pem, true)?;
        write(&paths.cert_file, &issued.cert_pem, false)?;
        Ok(paths)
    }
}

fn san(s: &str) -> Result<SanType, TlsError> {
    if let Some(u) = s.strip_prefix("uri:") {
        return Ok(SanType::URI(u.try_into().map_err(gen_err)?));
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    Ok(SanType::DnsName(s.try_into().map_err(gen_err)?))
}

/// What `mend cert` made.
#[derive(Debug, Clone)]
pub struct Made {
    /// Whether the CA was created (else an existing one was used).
    pub ca_created: bool,
    /// The CA directory.
    pub dir: PathBuf,
    /// One set directory per name.
    pub sets: Vec<(String, PathBuf)>,
}

/// Creates (or reuses) the CA in `dir` and a set `dir/NAME/` per name.
pub fn make(
    dir: &Path,
    names: &[String],
    extra_sans: &[String],
    days: i64,
) -> Result<Made, TlsError> {
    let (ca, ca_created) = DevCa::load_or_create(dir, days.max(DEV_VALID_DAYS_DEFAULT))?;
    let mut sets = Vec::new();
    for n in names {
        let issued = ca.issue(n, extra_sans, days)?;
        let d = dir.join(n);
        ca.write_set(&issued, &d)?;
        sets.push((n.clone(), d));
    }
    Ok(Made {
        ca_created,
        dir: dir.to_path_buf(),
        sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::Material;

    #[test]
    fn issued_sets_load_and_carry_their_names() {
        let d = tempfile::tempdir().unwrap();
        let made = make(
            d.path(),
            &["node-a".into()],
            &["uri:spiffe://t/a".into()],
            2,
        )
        .unwrap();
        assert!(made.ca_created);
        let m = Material::load(&TlsPaths::in_dir(&made.sets[0].1)).unwrap();
        assert_eq!(m.identity.primary(), "node-a");
        assert!(m.identity.has("spiffe://t/a"));
        assert!(m.identity.has("localhost"));
        // A second run reuses the CA: the first set still verifies.
        let again = make(d.path(), &["node-b".into()], &[], 2).unwrap();
        assert!(!again.ca_created);
        Material::load(&TlsPaths::in_dir(&made.sets[0].1)).unwrap();
        Material::load(&TlsPaths::in_dir(&again.sets[0].1)).unwrap();
    }

    #[test]
    fn invalid_sets_are_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let ca = DevCa::new("t", 2).unwrap();
        let now = OffsetDateTime::now_utc();
        let expired = ca
            .issue_between("old", &[], now - Duration::days(3), now - Duration::days(1))
            .unwrap();
        let p = ca.write_set(&expired, &d.path().join("old")).unwrap();
        let e = Material::load(&p).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");

        // Key of another certificate.
        let a = ca.issue("a", &[], 2).unwrap();
        let b = ca.issue("b", &[], 2).unwrap();
        let mixed = Issued {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem,
        };
        let p = ca.write_set(&mixed, &d.path().join("mixed")).unwrap();
        let e = Material::load(&p).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");

        // A certificate of another CA.
        let other = DevCa::new("other", 2).unwrap();
        let foreign = other.issue("f", &[], 2).unwrap();
        let p = ca.write_set(&foreign, &d.path().join("foreign")).unwrap();
        let e = Material::load(&p).unwrap_err().to_string();
        assert!(e.contains("not valid under CA"), "{e}");

        // Garbage.
        std::fs::write(&p.cert_file, "not pem").unwrap();
        let e = Material::load(&p).unwrap_err().to_string();
        assert!(e.contains("CERTIFICATE") || e.contains("PEM"), "{e}");
    }
}
