//! Who may call what, and the mutual secret check of the handshake.
//!
//! Every gRPC service of the agent is wrapped in a [`Guard`] for its role:
//! the caller's identity (the DNS/URI SANs of its client certificate,
//! parsed once per connection by `mend_tls::accept`) must match one of the
//! role's patterns, else the call is `PERMISSION_DENIED` before the service
//! reads or writes anything, and `mend_auth_denied_total{service,reason}`
//! counts it. Plaintext connections (loopback only, `insecure_plaintext`)
//! carry no identity and are granted every role.
//!
//! [`Challenges`] holds the single-use challenges of protocol 3's
//! handshake; [`initiator_proof`] and [`responder_proof`] are the two
//! proofs of holding the cluster secret.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tonic::{Request, Status};

use mend_core::Secret;
use mend_tls::accept::ConnInfo;
use mend_tls::{Identity, Pattern};

use crate::config::AgentConfig;
use crate::metrics::Metrics;

/// Most outstanding handshake challenges; the oldest is dropped beyond it
/// (an initiator whose challenge was dropped retries the handshake).
pub const CHALLENGES_MAX: usize = 1024;

/// How long a handshake challenge may be answered, in ms.
pub const CHALLENGE_TTL_MS: u64 = 30_000;

/// Bytes of a challenge and of a nonce.
pub const NONCE_BYTES: usize = 16;

/// A gRPC service's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The Replica service.
    Replica,
    /// The Ingest service: a change feed's writer, so it takes the
    /// replica role's identities (`roles.replica`).
    Ingest,
    /// The Peer service.
    Peer,
    /// The Operator service.
    Operator,
}

impl Role {
    /// The service name used in metrics and messages.
    pub fn service(self) -> &'static str {
        match self {
            Role::Replica => "Replica",
            Role::Ingest => "Ingest",
            Role::Peer => "Peer",
            Role::Operator => "Operator",
        }
    }

    /// The configuration field listing the role's identities.
    pub fn config_field(self) -> &'static str {
        match self {
            Role::Replica | Role::Ingest => "roles.replica",
            Role::Peer => "roles.peer",
            Role::Operator => "roles.operator",
        }
    }
}

/// The identity patterns of each role, fixed at start.
#[derive(Debug, Clone)]
pub struct RolePatterns {
    replica: Vec<Pattern>,
    peer: Vec<Pattern>,
    operator: Vec<Pattern>,
}

impl RolePatterns {
    /// From the configuration: `roles.*`, and every configured peer's id
    /// for the peer role.
    pub fn new(c: &AgentConfig) -> RolePatterns {
        let pats = |v: &[String]| v.iter().map(|p| Pattern::new(p.as_str())).collect();
        let mut peer: Vec<Pattern> = pats(&c.roles.peer);
        peer.extend(c.peers.iter().map(|p| Pattern::new(p.id.as_str())));
        RolePatterns {
            replica: pats(&c.roles.replica),
            peer,
            operator: pats(&c.roles.operator),
        }
    }

    fn of(&self, r: Role) -> &[Pattern] {
        match r {
            Role::Replica | Role::Ingest => &self.replica,
            Role::Peer => &self.peer,
            Role::Operator => &self.operator,
        }
    }
}

/// The caller's identity: `None` on a plaintext connection.
pub fn caller<T>(req: &Request<T>) -> Option<Arc<Identity>> {
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.identity.clone())
}

/// The interceptor that enforces one role on one service.
#[derive(Clone)]
pub struct Guard {
    role: Role,
    patterns: Arc<RolePatterns>,
    tls: bool,
    metrics: Arc<Metrics>,
}

impl Guard {
    /// A guard for `role`; `tls` false means plaintext (every role granted).
    pub fn new(role: Role, patterns: Arc<RolePatterns>, tls: bool, metrics: Arc<Metrics>) -> Guard {
        Guard {
            role,
            patterns,
            tls,
            metrics,
        }
    }

    /// Checks a caller against the role.
    pub fn check(&self, identity: Option<&Identity>) -> Result<(), Status> {
        let reason = match identity {
            None if !self.tls => return Ok(()),
            None => "no_identity",
            Some(id) if id.matches_any(self.patterns.of(self.role)) => return Ok(()),
            Some(_) => "role",
        };
        self.metrics.auth_denied(self.role.service(), reason);
        Err(Status::permission_denied(format!(
            "{} is not allowed to call the {} service ({})",
            identity
                .map(|i| i.to_string())
                .unwrap_or_else(|| "a caller without a certificate".into()),
            self.role.service(),
            self.role.config_field(),
        )))
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(caller(&req).as_deref())?;
        Ok(req)
    }
}

/// Outstanding handshake challenges, each usable once before it expires.
#[derive(Debug, Default)]
pub struct Challenges {
    open: Mutex<VecDeque<([u8; NONCE_BYTES], u64)>>,
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

impl Challenges {
    /// Issues a challenge at `now_ms`.
    pub fn issue(&self, now_ms: u64) -> [u8; NONCE_BYTES] {
        let c = nonce();
        let mut open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while open
            .front()
            .is_some_and(|(_, exp)| *exp < now_ms || open.len() >= CHALLENGES_MAX)
        {
            open.pop_front();
        }
        open.push_back((c, now_ms + CHALLENGE_TTL_MS));
        c
    }

    /// Takes `c` if it was issued and has not expired or been used.
    pub fn take(&self, c: &[u8], now_ms: u64) -> bool {
        let mut open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match open.iter().position(|(x, _)| x.as_slice() == c) {
            Some(i) => open.remove(i).is_some_and(|(_, exp)| exp >= now_ms),
            None => false,
        }
    }
}

/// The initiator's proof over the responder's challenge and its own nonce.
pub fn initiator_proof(s: &Secret, challenge: &[u8], nonce: &[u8], node: &str) -> [u8; 32] {
    s.handshake_proof("initiator", &[challenge, nonce, node.as_bytes()])
}

/// The responder's proof over the initiator's nonce and its challenge.
pub fn responder_proof(s: &Secret, challenge: &[u8], nonce: &[u8], node: &str) -> [u8; 32] {
    s.handshake_proof("responder", &[nonce, challenge, node.as_bytes()])
}

/// Constant-time equality of two proofs.
pub fn proof_eq(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_single_use_and_expire() {
        let c = Challenges::default();
        let a = c.issue(1_000);
        assert!(c.take(&a, 1_001));
        assert!(!c.take(&a, 1_002), "used twice");
        let b = c.issue(2_000);
        assert!(!c.take(&b, 2_000 + CHALLENGE_TTL_MS + 1), "expired");
        assert!(!c.take(&[0; NONCE_BYTES], 2_000), "never issued");
        // Bounded: the oldest go first.
        let first = c.issue(3_000);
        for _ in 0..CHALLENGES_MAX {
            c.issue(3_000);
        }
        assert!(!c.take(&first, 3_000));
        assert!(c.open.lock().unwrap().len() <= CHALLENGES_MAX);
    }

    #[test]
    fn proofs_bind_side_and_secret() {
        let s = Secret::from_bytes(b"s");
        let p = initiator_proof(&s, b"c", b"n", "a");
        assert!(proof_eq(&p, &initiator_proof(&s, b"c", b"n", "a")));
        assert!(!proof_eq(&p, &responder_proof(&s, b"c", b"n", "a")));
        assert!(!proof_eq(
            &p,
            &initiator_proof(&Secret::from_bytes(b"t"), b"c", b"n", "a")
        ));
        assert!(!proof_eq(&p[..31], &p));
    }
}
