//! What an operator does from the dashboard page: repair with a peer, undo a
//! repair, pause, resume or cancel a run. Each runs the same code as the
//! `Operator` RPC of the same name, as the operator a session names
//! (`session`), in a background task; the page follows it in
//! [`ActionLog`](crate::action_log::ActionLog), which is also the audit
//! trail of who did what from the page (and every action is logged with
//! `tracing` at info).

use std::sync::Arc;

use crate::action_log::{Action, ActionError};
use crate::error::AgentError;
use crate::journal::REPAIR_ID_BYTES_MAX;
use crate::repair::control::{self, Action as RunAction};
use crate::repair::{RepairOptions, RepairSummary};
use crate::session::Session;
use crate::state::{AgentBackend, AgentState};

/// Checks `a` and starts it in the background as `session`'s operator;
/// returns its number in the log.
pub fn start<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    session: &Session,
    a: Action,
) -> Result<u64, ActionError> {
    let addr = check(state, &a)?;
    let id = state
        .actions
        .begin(&a, &session.operator, state.store.now_ms())?;
    tracing::info!(operator = %session.operator, action = %a.describe(), id, "dashboard action");
    let state = state.clone();
    tokio::spawn(async move {
        let out = perform(&state, a, addr).await;
        if let Err(e) = &out {
            tracing::warn!(id, error = %e, "dashboard action failed");
        }
        state.actions.finish(id, state.store.now_ms(), out);
    });
    Ok(id)
}

/// The peer's address for a repair (known peers only), after checking the
/// request's sizes.
fn check<B: AgentBackend>(state: &AgentState<B>, a: &Action) -> Result<String, ActionError> {
    match a {
        Action::Repair { peer, range, .. } => {
            if let Some(r) = range
                && !state.config.ranges.iter().any(|x| &x.name == r)
            {
                return Err(ActionError::Invalid(format!("no range named {r:?}")));
            }
            state
                .peer(peer)
                .map(|p| mend_tls::client::host_port(&p.address).to_string())
                .ok_or_else(|| {
                    ActionError::Invalid(format!("{peer:?} is not a peer of this agent"))
                })
        }
        Action::Undo { id }
        | Action::Pause { id }
        | Action::Resume { id }
        | Action::Cancel { id } => {
            if !crate::journal::valid_id(id) {
                return Err(ActionError::Invalid(format!(
                    "a repair id is 1..={REPAIR_ID_BYTES_MAX} printable ASCII bytes"
                )));
            }
            Ok(String::new())
        }
    }
}

/// Runs `a`; Ok is (what came of it, the repair id).
async fn perform<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    a: Action,
    addr: String,
) -> Result<(String, String), String> {
    let msg = |s: AgentError| s.to_string();
    let ctl = |id: String, act: RunAction| async move {
        let run = control::control(state, &id, act).await.map_err(msg)?;
        Ok((
            format!(
                "run {} is {}, {}/{} segments done",
                run.id,
                run.state.as_str(),
                run.segments_done,
                run.segments_total
            ),
            run.id,
        ))
    };
    match a {
        Action::Repair { range, dry_run, .. } => {
            let opts = RepairOptions {
                dry_run,
                rate_bytes_per_s: state.config.limits.repair_rate_bytes_per_s,
                rate_keys_per_s: state.config.limits.repair_rate_keys_per_s,
                categories: Vec::new(),
                shadow: false,
            };
            let s = crate::repair::repair(state, &addr, range.as_deref(), opts, None)
                .await
                .map_err(msg)?;
            Ok((repaired(&s), s.repair_id))
        }
        Action::Undo { id } => {
            let u = crate::repair::undo(state, id.clone()).await.map_err(msg)?;
            Ok((
                format!(
                    "restored {} keys ({} here, {} on the peer), {} skipped",
                    u.restored_local + u.restored_peer,
                    u.restored_local,
                    u.restored_peer,
                    u.skipped.len()
                ),
                id,
            ))
        }
        Action::Pause { id } => ctl(id, RunAction::Pause).await,
        Action::Resume { id } => ctl(id, RunAction::Resume).await,
        Action::Cancel { id } => ctl(id, RunAction::Cancel).await,
    }
}

fn repaired(s: &RepairSummary) -> String {
    if s.dry_run {
        return format!(
            "would repair {} keys ({} skipped)",
            s.plan.len(),
            s.skipped.len()
        );
    }
    if s.plan.is_empty() {
        return format!("nothing to repair ({} skipped)", s.skipped.len());
    }
    let mut out = format!(
        "repaired {} keys ({} here, {} on the peer), {} skipped",
        s.keys_repaired,
        s.keys_to_local,
        s.keys_to_peer,
        s.skipped.len()
    );
    if s.run != crate::runs::RunState::Done {
        out.push_str(&format!(
            "; run {} after {}/{} segments",
            s.run.as_str(),
            s.segments_done,
            s.segments_total
        ));
    }
    out
}
