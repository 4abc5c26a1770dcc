//! The Operator service: diff, repair, undo and status for the CLI and
//! dashboards. Long operations stream their results.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use mend_core::classify::Category;
use mend_core::playbook::{PlaybookAction, SkipNote};
use mend_rpc::enums::{category_from_pb, category_to_pb, playbook_action_to_pb, side_to_pb};
use mend_rpc::pb;

use super::status_report::{run_pb, run_state_pb};
use crate::exchange::diff;
use crate::outcome::DiffOutcome;
use crate::repair::{RepairOptions, repair, undo};
use crate::state::AgentState;
use crate::wire::skipped_pb;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Depth of the bounded channels feeding streamed replies.
const STREAM_DEPTH: usize = 64;

/// Implementation of `mend.v1.Operator`.
pub struct OperatorService {
    state: Arc<AgentState>,
}

impl OperatorService {
    /// A service over `state`.
    pub fn new(state: Arc<AgentState>) -> OperatorService {
        OperatorService { state }
    }
}

fn categories(v: &[i32]) -> Result<Vec<Category>, Status> {
    v.iter()
        .map(|&c| category_from_pb(c, "categories"))
        .collect()
}

/// A divergent key as a wire message.
pub fn key_pb(k: &crate::outcome::DivergentKey) -> pb::DivergentKey {
    mend_rpc::report::key_to_pb(&crate::report::key_report(k), k.div.key.clone())
}

/// Streams a report: the keys, then the summary with its sources.
fn stream_report(d: DiffOutcome, now_ms: u64) -> BoxStream<pb::DiffEvent> {
    let (tx, rx) = mpsc::channel(STREAM_DEPTH);
    tokio::spawn(async move {
        let srcs = crate::report::attribution(&d, now_ms, crate::report::SOURCE_WINDOW_GAP_MS);
        let report = crate::report::build(&d, &srcs, usize::MAX);
        for (k, r) in d.keys.iter().zip(&report.keys) {
            let ev = mend_rpc::report::key_to_pb(r, k.div.key.clone());
            if tx
                .send(Ok(pb::DiffEvent {
                    event: Some(pb::diff_event::Event::Key(ev)),
                }))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx
            .send(Ok(pb::DiffEvent {
                event: Some(pb::diff_event::Event::Summary(
                    mend_rpc::report::summary_to_pb(&report),
                )),
            }))
            .await;
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl pb::operator_server::Operator for OperatorService {
    type DiffStream = BoxStream<pb::DiffEvent>;

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<Self::DiffStream>, Status> {
        let r = req.into_inner();
        if r.peer.is_empty() {
            return Err(Status::invalid_argument("peer: required"));
        }
        let addr = self.state.resolve_peer(&r.peer)?;
        let range = (!r.range.is_empty()).then_some(r.range);
        let d = match diff(&self.state, &addr, range.as_deref()).await {
            Ok(d) => Arc::new(d),
            Err(e) => {
                // Shown per configured peer only (bounded: never a
                // caller-supplied address).
                if let Some(p) = self.state.peer(&r.peer) {
                    crate::schedule::exchange_failed(&self.state, &p.id, &e);
                }
                return Err(e.into());
            }
        };
        // Labelled by the node id the peer proved at handshake, never by the
        // caller-supplied address (bounded cardinality). An exchange on
        // demand is part of the drift history like a scheduled one.
        crate::schedule::record_exchange(
            &self.state,
            &d.peer_node,
            &d,
            (PlaybookAction::OnDemand, "on demand"),
        );
        crate::schedule::persist_drift(&self.state, &d.peer_node).await;
        let d = Arc::unwrap_or_clone(d);
        Ok(Response::new(stream_report(d, self.state.store.now_ms())))
    }

    type RepairStream = BoxStream<pb::RepairEvent>;

    async fn repair(
        &self,
        req: Request<pb::RepairRequest>,
    ) -> Result<Response<Self::RepairStream>, Status> {
        let r = req.into_inner();
        if r.peer.is_empty() {
            return Err(Status::invalid_argument("peer: required"));
        }
        let opts = RepairOptions {
            dry_run: r.dry_run,
            rate_bytes_per_s: if r.rate_bytes_per_s > 0 {
                r.rate_bytes_per_s
            } else {
                self.state.config.limits.repair_rate_bytes_per_s
            },
            rate_keys_per_s: if r.rate_keys_per_s > 0 {
                r.rate_keys_per_s
            } else {
                self.state.config.limits.repair_rate_keys_per_s
            },
            categories: categories(&r.categories)?,
            shadow: r.shadow,
        };
        let addr = self.state.resolve_peer(&r.peer)?;
        let range = (!r.range.is_empty()).then_some(r.range);
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        let (ptx, mut prx) = mpsc::channel::<(u64, u64, u64)>(STREAM_DEPTH);
        let state = self.state.clone();
        let tx2 = tx.clone();
        tokio::spawn(async move {
            while let Some((done, total, bytes)) = prx.recv().await {
                let ev = pb::RepairProgress {
                    keys_done: done,
                    keys_total: total,
                    bytes_streamed: bytes,
                };
                let _ = tx2
                    .send(Ok(pb::RepairEvent {
                        event: Some(pb::repair_event::Event::Progress(ev)),
                    }))
                    .await;
            }
        });
        tokio::spawn(async move {
            let out = repair(&state, &addr, range.as_deref(), opts, Some(ptx)).await;
            let msg = out.map_err(Status::from).map(|s| pb::RepairEvent {
                event: Some(pb::repair_event::Event::Summary(pb::RepairSummary {
                    repair_id: s.repair_id,
                    dry_run: s.dry_run,
                    keys_repaired: s.keys_repaired,
                    keys_to_local: s.keys_to_local,
                    keys_to_peer: s.keys_to_peer,
                    keys_toward_authority: s.keys_toward_authority,
                    bytes_streamed: s.bytes_streamed,
                    skipped: s
                        .skipped
                        .into_iter()
                        .map(|(key, note)| skipped_pb(key, note, None))
                        .collect(),
                    plan: s
                        .plan
                        .into_iter()
                        .map(|p| pb::PlannedKey {
                            key: p.key,
                            category: category_to_pb(p.category),
                            behind: side_to_pb(Some(p.behind)),
                            value_bytes: 0,
                            toward_authority: p.resolution
                                == mend_core::playbook::Resolution::Authority,
                        })
                        .collect(),
                    elapsed_ms: s.elapsed.as_millis() as u64,
                    shadow: s.shadow.map(|o| pb::ShadowOutcome {
                        predicted_converged: o.converged,
                        predicted_remaining: o
                            .remaining
                            .into_iter()
                            .map(|(key, note)| skipped_pb(key, note, None))
                            .collect(),
                    }),
                    state: run_state_pb(s.run) as i32,
                    segments_done: s.segments_done,
                    segments_total: s.segments_total,
                })),
            });
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReportStream = BoxStream<pb::DiffEvent>;

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let peer = req.into_inner().peer;
        let peer = (!peer.is_empty()).then_some(peer);
        let d = self.state.monitor.last(peer.as_deref()).ok_or_else(|| {
            Status::not_found(match &peer {
                Some(p) => format!("no scheduled exchange with {p} has run yet"),
                None => "no scheduled exchange has run yet (set interval_ms on a peer)".into(),
            })
        })?;
        Ok(Response::new(stream_report(
            (*d).clone(),
            self.state.store.now_ms(),
        )))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let peer = req.into_inner().peer;
        let views = self
            .state
            .monitor
            .view((!peer.is_empty()).then_some(peer.as_str()));
        let peers = views
            .into_iter()
            .map(|v| pb::PeerHistory {
                peer: v.peer,
                range: v.range,
                budget_exceeded: v.budget_exceeded,
                budget_since_ms: v.budget_since_ms,
                converged_keys: v.converged_keys,
                convergence_ms_mean: v.convergence_ms_mean,
                records: v
                    .records
                    .into_iter()
                    .map(|r| pb::ExchangeRecord {
                        at_ms: r.at_ms,
                        divergent_keys: r.divergent_keys,
                        by_category: r
                            .by_category
                            .into_iter()
                            .map(|(c, count)| pb::CategoryCount {
                                category: category_to_pb(c),
                                count,
                            })
                            .collect(),
                        oldest_divergence_ms: r.oldest_divergence_ms,
                        persistent: r.persistent,
                        transient: r.transient,
                        converged: r.converged,
                        rounds: r.rounds,
                        bytes_sent: r.bytes_sent,
                        bytes_received: r.bytes_received,
                        elapsed_ms: r.elapsed_ms,
                        action: r.action,
                        action_kind: playbook_action_to_pb(r.action_kind),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse { peers }))
    }

    async fn sample(
        &self,
        req: Request<pb::SampleRequest>,
    ) -> Result<Response<pb::SampleResponse>, Status> {
        let r = req.into_inner();
        if r.peer.is_empty() {
            return Err(Status::invalid_argument("peer: required"));
        }
        if r.keys == 0 || r.keys > crate::sample::SAMPLE_KEYS_MAX {
            return Err(Status::invalid_argument(format!(
                "keys must be in 1..={}",
                crate::sample::SAMPLE_KEYS_MAX
            )));
        }
        let addr = self.state.resolve_peer(&r.peer)?;
        let s = crate::sample::sample(&self.state, &addr, r.keys, r.seed).await?;
        Ok(Response::new(pb::SampleResponse {
            sampled: s.sampled,
            divergent: s.keys.len() as u64,
            share: s.share,
            ci_low: s.ci_low,
            ci_high: s.ci_high,
            keys: s.keys.iter().map(key_pb).collect(),
        }))
    }

    async fn undo(
        &self,
        req: Request<pb::UndoRequest>,
    ) -> Result<Response<pb::UndoResponse>, Status> {
        let id = req.into_inner().repair_id;
        let out = undo(&self.state, id).await?;
        Ok(Response::new(pb::UndoResponse {
            restored: out.restored_local + out.restored_peer,
            skipped: out
                .skipped
                .into_iter()
                .map(|(side, key, note)| {
                    let note = SkipNote::new(note.reason, format!("{side}: {}", note.text));
                    skipped_pb(key, note, Some(side))
                })
                .collect(),
        }))
    }

    async fn control_repair(
        &self,
        req: Request<pb::RepairControlRequest>,
    ) -> Result<Response<pb::RepairRun>, Status> {
        use crate::repair::control::{Action, control};
        let r = req.into_inner();
        let action = match pb::RepairAction::try_from(r.action) {
            Ok(pb::RepairAction::Pause) => Action::Pause,
            Ok(pb::RepairAction::Resume) => Action::Resume,
            Ok(pb::RepairAction::Cancel) => Action::Cancel,
            Ok(pb::RepairAction::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "action: {} is not one of PAUSE (1), RESUME (2), CANCEL (3)",
                    r.action
                )));
            }
        };
        let run = control(&self.state, &r.repair_id, action).await?;
        Ok(Response::new(run_pb(run)))
    }

    async fn dashboard_session(
        &self,
        req: Request<pb::DashboardSessionRequest>,
    ) -> Result<Response<pb::DashboardSessionResponse>, Status> {
        // The operator role's guard already admitted the caller; the page
        // acts as them.
        let operator = crate::auth::caller(&req)
            .map(|i| i.to_string())
            .unwrap_or_else(|| "a plaintext caller (no TLS)".to_string());
        let http = self.state.http_addr.get().ok_or_else(|| {
            Status::failed_precondition(
                "this agent serves no HTTP port (start it with --http ADDR)",
            )
        })?;
        let ttl_ms = req.into_inner().ttl_ms;
        let (token, expires_at_ms) =
            self.state
                .sessions
                .issue(&operator, self.state.store.now_ms(), ttl_ms);
        tracing::info!(%operator, expires_at_ms, "dashboard session issued");
        Ok(Response::new(pb::DashboardSessionResponse {
            token,
            expires_at_ms,
            operator,
            http_address: http.to_string(),
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(
            crate::service::status_report::status(&self.state, req.into_inner()).await?,
        ))
    }
}
