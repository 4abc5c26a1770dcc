//! Operator sessions of the dashboard page.
//!
//! The HTTP port has no TLS and no caller identity, so the page cannot
//! itself prove the operator role. Instead an operator asks for a session
//! over gRPC (`Operator/DashboardSession`, behind the operator role's
//! mutual-TLS guard, as `mend dashboard` does) and gets a bearer token
//! naming them. The page sends it in `Authorization: Bearer` on every
//! action; browsers never attach that header on their own, so another
//! site cannot make a logged-in browser act (no CSRF).
//!
//! A token is `mend1.EXPIRY.NONCE.SUBJECT.MAC`: the expiry (agent clock,
//! ms, 16 hex digits), a random nonce (16 hex digits: two sessions are two
//! tokens), the operator's identity (hex), and a keyed BLAKE3 MAC of the
//! three under a key drawn at start and never stored. Tokens therefore need
//! no table, die with the process, and cannot be forged or extended.
//! Ending a session revokes its token until its expiry ([`REVOKED_MAX`]
//! at once).

use std::sync::Mutex;

/// Lifetime of a session when the caller asks for none, in ms.
pub const SESSION_TTL_MS_DEFAULT: u64 = 15 * 60_000;

/// Longest session, in ms.
pub const SESSION_TTL_MS_MAX: u64 = 12 * 3_600_000;

// A session asked for with no lifetime must be one the agent grants.
const _: () = assert!(SESSION_TTL_MS_DEFAULT <= SESSION_TTL_MS_MAX);

/// Longest operator identity a token carries, in bytes (longer ones are
/// cut at a character boundary: it is shown, not matched).
pub const SUBJECT_BYTES_MAX: usize = 256;

/// Longest token accepted, in characters (checked before any parsing).
pub const TOKEN_CHARS_MAX: usize = PREFIX.len() + 16 + 16 + 2 * SUBJECT_BYTES_MAX + 64 + 4;

/// Most sessions ended before their expiry that are remembered at once;
/// beyond it, ending one more is refused (it still expires on its own).
pub const REVOKED_MAX: usize = 1024;

const PREFIX: &str = "mend1";
const CONTEXT: &[u8] = b"mend dashboard session v1";

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who the page acts as.
    pub operator: String,
    /// When the token stops working (agent clock, ms).
    pub expires_at_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No `Authorization: Bearer` header.
    #[error("no operator session: run `mend dashboard --agent ADDR` and open the URL it prints")]
    Missing,
    /// Not a token of this format.
    #[error("the operator session token is malformed")]
    Malformed,
    /// The MAC does not match: forged, altered, or from another agent or an
    /// earlier run of this one.
    #[error(
        "the operator session is not valid on this agent (issued elsewhere or before a restart)"
    )]
    BadMac,
    /// Past its expiry.
    #[error("the operator session expired at {0} ms; run `mend dashboard` again")]
    Expired(u64),
    /// Ended by the operator.
    #[error("the operator session was ended")]
    Ended,
    /// [`REVOKED_MAX`] sessions are already ended and not yet expired.
    #[error("too many ended sessions remembered ({REVOKED_MAX}); this one expires on its own")]
    TooManyEnded,
}

/// Issues and checks tokens with one process-lifetime key.
pub struct Sessions {
    key: [u8; 32],
    /// (MAC, expiry) of ended sessions not yet expired.
    ended: Mutex<Vec<([u8; 32], u64)>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(rand::random())
    }
}

impl Sessions {
    /// Sessions under `key`.
    pub fn new(key: [u8; 32]) -> Sessions {
        Sessions {
            key,
            ended: Mutex::new(Vec::new()),
        }
    }

    fn mac(&self, expires_at_ms: u64, nonce: u64, subject: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(CONTEXT);
        h.update(&expires_at_ms.to_be_bytes());
        h.update(&nonce.to_be_bytes());
        h.update(&(subject.len() as u64).to_be_bytes());
        h.update(subject);
        h.finalize()
    }

    /// A token for `operator` valid for `ttl_ms` (0 = the default, clamped
    /// to [`SESSION_TTL_MS_MAX`]) from `now_ms`; returns it and its expiry.
    pub fn issue(&self, operator: &str, now_ms: u64, ttl_ms: u64) -> (String, u64) {
        let ttl = match ttl_ms {
            0 => SESSION_TTL_MS_DEFAULT,
            t => t.min(SESSION_TTL_MS_MAX),
        };
        let mut cut = operator.len().min(SUBJECT_BYTES_MAX);
        while !operator.is_char_boundary(cut) {
            cut -= 1;
        }
        let subject = &operator.as_bytes()[..cut];
        let expires = now_ms.saturating_add(ttl);
        let nonce: u64 = rand::random();
        let mac = self.mac(expires, nonce, subject);
        let token = format!(
            "{PREFIX}.{expires:016x}.{nonce:016x}.{}.{}",
            hex::encode(subject),
            mac.to_hex()
        );
        (token, expires)
    }

    /// Checks `token` at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Session, SessionError> {
        let (expires, nonce, subject, mac) = self.parse(token)?;
        // blake3::Hash compares in constant time.
        if self.mac(expires, nonce, &subject) != blake3::Hash::from_bytes(mac) {
            return Err(SessionError::BadMac);
        }
        if now_ms >= expires {
            return Err(SessionError::Expired(expires));
        }
        if self.lock_ended().iter().any(|(m, _)| *m == mac) {
            return Err(SessionError::Ended);
        }
        let operator = String::from_utf8(subject).map_err(|_| SessionError::Malformed)?;
        Ok(Session {
            operator,
            expires_at_ms: expires,
        })
    }

    /// Ends a valid session: its token is refused from now on.
    pub fn end(&self, token: &str, now_ms: u64) -> Result<Session, SessionError> {
        let s = self.verify(token, now_ms)?;
        let (_, _, _, mac) = self.parse(token)?;
        let mut ended = self.lock_ended();
        ended.retain(|(_, exp)| *exp > now_ms);
        if ended.len() >= REVOKED_MAX {
            return Err(SessionError::TooManyEnded);
        }
        ended.push((mac, s.expires_at_ms));
        Ok(s)
    }

    fn lock_ended(&self) -> std::sync::MutexGuard<'_, Vec<([u8; 32], u64)>> {
        // A panic while holding it cannot leave the list half-written
        // (every change is one push or retain), so a poisoned lock is fine.
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parse(&self, token: &str) -> Result<(u64, u64, Vec<u8>, [u8; 32]), SessionError> {
        if token.len() > TOKEN_CHARS_MAX {
            return Err(SessionError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(exp), Some(nonce), Some(subject), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SessionError::Malformed);
        };
        let hex64 = |s: &str| match s.len() {
            16 => u64::from_str_radix(s, 16).map_err(|_| SessionError::Malformed),
            _ => Err(SessionError::Malformed),
        };
        let expires = hex64(exp)?;
        let nonce = hex64(nonce)?;
        let subject = hex::decode(subject).map_err(|_| SessionError::Malformed)?;
        let mut m = [0u8; 32];
        hex::decode_to_slice(mac, &mut m).map_err(|_| SessionError::Malformed)?;
        Ok((expires, nonce, subject, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_000_000_000;

    #[test]
    fn a_token_names_its_operator_until_it_expires() {
        let s = Sessions::new([7; 32]);
        let (t, exp) = s.issue("cli", NOW, 60_000);
        assert_eq!(exp, NOW + 60_000);
        let v = s.verify(&t, NOW + 59_999).unwrap();
        assert_eq!(v.operator, "cli");
        assert_eq!(s.verify(&t, NOW + 60_000), Err(SessionError::Expired(exp)));
        // 0 is the default; more than the most is clamped.
        assert_eq!(s.issue("cli", NOW, 0).1, NOW + SESSION_TTL_MS_DEFAULT);
        assert_eq!(s.issue("cli", NOW, u64::MAX).1, NOW + SESSION_TTL_MS_MAX);
    }

    #[test]
    fn altered_foreign_and_malformed_tokens_are_refused() {
        let s = Sessions::new([7; 32]);
        let (t, _) = s.issue("cli", NOW, 60_000);
        // Another key (another agent, or this one before a restart).
        assert_eq!(
            Sessions::new([8; 32]).verify(&t, NOW),
            Err(SessionError::BadMac)
        );
        // A later expiry or another name under the same MAC.
        let parts: Vec<&str> = t.split('.').collect();
        let later = format!(
            "mend1.{:016x}.{}.{}.{}",
            NOW + (1 << 20),
            parts[2],
            parts[3],
            parts[4]
        );
        assert_eq!(s.verify(&later, NOW), Err(SessionError::BadMac));
        let admin = format!(
            "mend1.{}.{}.{}.{}",
            parts[1],
            parts[2],
            hex::encode("admin"),
            parts[4]
        );
        assert_eq!(s.verify(&admin, NOW), Err(SessionError::BadMac));
        for bad in [
            "",
            "mend1",
            "mend2.0000000000000000.0000000000000000.00.00",
            &format!("{t}.x"),
            &t[..t.len() - 1],
            &"a".repeat(TOKEN_CHARS_MAX + 1),
            "mend1.zz00000000000000.0000000000000000.636c69.00",
            "mend1.0000000000000000.0000000000000000.636c69.00",
        ] {
            assert_eq!(s.verify(bad, NOW), Err(SessionError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn an_ended_session_stays_ended_and_long_names_are_cut() {
        let s = Sessions::new([7; 32]);
        let (t, _) = s.issue("cli", NOW, 60_000);
        let (other, _) = s.issue("cli", NOW, 60_000);
        s.end(&t, NOW).unwrap();
        assert_eq!(s.verify(&t, NOW), Err(SessionError::Ended));
        assert_eq!(s.end(&t, NOW), Err(SessionError::Ended));
        assert!(s.verify(&other, NOW).is_ok(), "only the ended one");
        let long = "é".repeat(SUBJECT_BYTES_MAX);
        let (t, _) = s.issue(&long, NOW, 60_000);
        let v = s.verify(&t, NOW).unwrap();
        assert!(v.operator.len() <= SUBJECT_BYTES_MAX && long.starts_with(&v.operator));
        assert!(t.len() <= TOKEN_CHARS_MAX);
    }
}
