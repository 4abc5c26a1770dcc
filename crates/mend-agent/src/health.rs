//! The health the agent reports on the standard gRPC health service, per
//! service, from its real state rather than a constant SERVING: checked
//! every [`HEALTH_CHECK_MS`].
//!
//! - `mend.v1.Replica` and `mend.v1.Ingest`: the store takes a write
//!   (`Store::probe_writable`).
//! - `mend.v1.Peer`: the store takes a write, and a streamed reply slot is
//!   free (`limits.server_streams_max`; all taken means overloaded, and an
//!   exchange started now would queue).
//! - `mend.v1.Operator` and the whole server (`""`): the store takes a write.
//!
//! Peers check `mend.v1.Peer` before automatic repairs
//! (`playbook.require_healthy_peer`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::state::{AgentBackend, AgentState};

/// Interval of the health checks, in ms.
pub const HEALTH_CHECK_MS: u64 = 1_000;

/// The statuses one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The store took the probe write.
    pub writable: bool,
    /// Every streamed reply slot is taken.
    pub overloaded: bool,
}

fn status(ok: bool) -> ServingStatus {
    if ok {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Checks once.
pub async fn check<B: AgentBackend>(state: &AgentState<B>) -> Health {
    let writable = state.blocking(|s| s.probe_writable()).await.is_ok();
    Health {
        writable,
        overloaded: state.streams.available_permits() == 0,
    }
}

impl Health {
    /// Whether `mend.v1.Peer` is SERVING with this health.
    pub fn peer_serving(self) -> bool {
        self.writable && !self.overloaded
    }
}

/// Reports `h` on the health service.
pub async fn report(reporter: &HealthReporter, h: Health) {
    let base = status(h.writable);
    for svc in ["", "mend.v1.Replica", "mend.v1.Ingest", "mend.v1.Operator"] {
        reporter.set_service_status(svc, base).await;
    }
    reporter
        .set_service_status("mend.v1.Peer", status(h.peer_serving()))
        .await;
}

/// Checks and reports every [`HEALTH_CHECK_MS`] until `stop`.
pub fn spawn(state: Arc<AgentState>, reporter: HealthReporter, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(HEALTH_CHECK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let h = check(&state).await;
            if last != Some(h) {
                if !h.writable || h.overloaded {
                    tracing::warn!(
                        writable = h.writable,
                        overloaded = h.overloaded,
                        "health: not serving"
                    );
                }
                report(&reporter, h).await;
                last = Some(h);
            }
        }
    });
}
