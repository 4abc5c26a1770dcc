//! The log of what operators did from the dashboard page ([`ActionLog`]):
//! the actions as the page posts them and where each is. The audit trail of
//! who did what from the page; `actions` runs them.
//!
//! Bounded: [`ACTIONS_MAX`] actions kept, at most [`ACTIONS_PENDING_MAX`]
//! running at once (beyond it a new one is refused, HTTP 429).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Actions kept in the log (the oldest finished ones leave first).
pub const ACTIONS_MAX: usize = 32;

/// Actions running at once.
pub const ACTIONS_PENDING_MAX: usize = 4;

// `ActionLog::begin` makes room by dropping a finished action: with fewer
// than ACTIONS_MAX pending, one has finished.
const _: () = assert!(ACTIONS_PENDING_MAX < ACTIONS_MAX);

/// An action as the page posts it (`POST /api/actions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Diff with a configured peer and repair what the plan selects.
    Repair {
        /// The peer's node id (a configured or discovered peer; never an
        /// address).
        peer: String,
        /// One range only (default: every range).
        #[serde(default)]
        range: Option<String>,
        /// Plan only.
        #[serde(default)]
        dry_run: bool,
    },
    /// Undo a journaled repair.
    Undo {
        /// The repair id.
        id: String,
    },
    /// Pause a run between segments.
    Pause {
        /// The repair id.
        id: String,
    },
    /// Resume a paused, failed or interrupted run.
    Resume {
        /// The repair id.
        id: String,
    },
    /// Cancel a run: what was done stays.
    Cancel {
        /// The repair id.
        id: String,
    },
}

impl Action {
    /// What it does, for a person and the log.
    pub fn describe(&self) -> String {
        match self {
            Action::Repair {
                peer,
                range,
                dry_run,
            } => format!(
                "{} with {peer}{}",
                if *dry_run { "dry-run repair" } else { "repair" },
                range
                    .as_ref()
                    .map(|r| format!(" (range {r})"))
                    .unwrap_or_default()
            ),
            Action::Undo { id } => format!("undo {id}"),
            Action::Pause { id } => format!("pause {id}"),
            Action::Resume { id } => format!("resume {id}"),
            Action::Cancel { id } => format!("cancel {id}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Action::Repair { .. } => "repair",
            Action::Undo { .. } => "undo",
            Action::Pause { .. } => "pause",
            Action::Resume { .. } => "resume",
            Action::Cancel { .. } => "cancel",
        }
    }
}

/// Why an action was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The request names something that does not exist or is too long.
    #[error("{0}")]
    Invalid(String),
    /// [`ACTIONS_PENDING_MAX`] actions are running.
    #[error("{ACTIONS_PENDING_MAX} dashboard actions are already running; wait for one to finish")]
    Busy,
}

/// Where an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Running.
    Pending,
    /// Finished without an error.
    Done,
    /// Finished with an error (in `result`).
    Failed,
}

/// One action as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionView {
    /// Its number in this agent's run (from 1).
    pub id: u64,
    /// `repair`, `undo`, `pause`, `resume` or `cancel`.
    pub kind: &'static str,
    /// What it does.
    pub what: String,
    /// Who asked (the session's operator).
    pub operator: String,
    /// When, ms since the epoch (agent clock).
    pub at_ms: u64,
    /// When it finished (0 while pending).
    pub finished_ms: u64,
    /// Where it is.
    pub state: ActionState,
    /// What came of it, for a person (or the error).
    pub result: String,
    /// The repair it started or acted on (empty for a dry run).
    pub repair_id: String,
}

/// The actions taken from the page.
#[derive(Debug, Default)]
pub struct ActionLog {
    inner: Mutex<(u64, VecDeque<ActionView>)>,
}

impl ActionLog {
    fn with<R>(&self, f: impl FnOnce(&mut (u64, VecDeque<ActionView>)) -> R) -> R {
        // Plain data, changed by whole pushes and field sets.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Every action kept, oldest first.
    pub fn list(&self) -> Vec<ActionView> {
        self.with(|(_, v)| v.iter().cloned().collect())
    }

    pub(crate) fn begin(
        &self,
        a: &Action,
        operator: &str,
        now_ms: u64,
    ) -> Result<u64, ActionError> {
        self.with(|(next, v)| {
            let pending = v.iter().filter(|x| x.state == ActionState::Pending).count();
            if pending >= ACTIONS_PENDING_MAX {
                return Err(ActionError::Busy);
            }
            while v.len() >= ACTIONS_MAX {
                // Fewer than ACTIONS_MAX are pending, so one has finished.
                match v.iter().position(|x| x.state != ActionState::Pending) {
                    Some(i) => v.remove(i),
                    None => break,
                };
            }
            *next += 1;
            let (repair_id, what) = match a {
                Action::Undo { id }
                | Action::Pause { id }
                | Action::Resume { id }
                | Action::Cancel { id } => (id.clone(), a.describe()),
                Action::Repair { .. } => (String::new(), a.describe()),
            };
            v.push_back(ActionView {
                id: *next,
                kind: a.kind(),
                what,
                operator: operator.to_string(),
                at_ms: now_ms,
                finished_ms: 0,
                state: ActionState::Pending,
                result: String::new(),
                repair_id,
            });
            Ok(*next)
        })
    }

    pub(crate) fn finish(&self, id: u64, now_ms: u64, out: Result<(String, String), String>) {
        self.with(|(_, v)| {
            if let Some(x) = v.iter_mut().find(|x| x.id == id) {
                x.finished_ms = now_ms;
                match out {
                    Ok((result, repair_id)) => {
                        x.state = ActionState::Done;
                        x.result = result;
                        if !repair_id.is_empty() {
                            x.repair_id = repair_id;
                        }
                    }
                    Err(e) => {
                        x.state = ActionState::Failed;
                        x.result = e;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undo(id: &str) -> Action {
        Action::Undo { id: id.into() }
    }

    #[test]
    fn the_log_is_bounded_and_never_drops_a_pending_action() {
        let log = ActionLog::default();
        for i in 0..ACTIONS_PENDING_MAX as u64 {
            assert_eq!(log.begin(&undo("x"), "op", i), Ok(i + 1));
        }
        assert_eq!(log.begin(&undo("x"), "op", 9), Err(ActionError::Busy));
        for i in 1..=ACTIONS_PENDING_MAX as u64 {
            log.finish(i, 10, Ok(("ok".into(), String::new())));
        }
        for _ in 0..2 * ACTIONS_MAX {
            let id = log.begin(&undo("y"), "op", 11).unwrap();
            log.finish(id, 12, Err("no".into()));
        }
        let pending = log.begin(&undo("z"), "op", 13).unwrap();
        for _ in 0..2 * ACTIONS_MAX {
            let id = log.begin(&undo("y"), "op", 14).unwrap();
            log.finish(id, 15, Ok(("ok".into(), "r".into())));
        }
        let v = log.list();
        assert_eq!(v.len(), ACTIONS_MAX);
        assert!(
            v.iter()
                .any(|x| x.id == pending && x.state == ActionState::Pending)
        );
        assert_eq!(v.last().unwrap().repair_id, "r");
    }

    #[test]
    fn actions_parse_strictly() {
        let a: Action = serde_json::from_str(r#"{"action":"repair","peer":"node-b"}"#).unwrap();
        assert_eq!(
            a,
            Action::Repair {
                peer: "node-b".into(),
                range: None,
                dry_run: false
            }
        );
        assert_eq!(a.describe(), "repair with node-b");
        for bad in [
            r#"{"action":"drop","id":"x"}"#,
            r#"{"action":"undo"}"#,
            r#"{"action":"undo","id":"x","force":true}"#,
            r#"{"peer":"node-b"}"#,
        ] {
            assert!(serde_json::from_str::<Action>(bad).is_err(), "{bad}");
        }
    }
}
