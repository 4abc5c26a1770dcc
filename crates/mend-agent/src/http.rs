//! The agent's HTTP surface: the dashboard at `/` with its JSON at
//! `/api/dashboard` and `/api/cluster` (`dashboard`), `/healthz`
//! (liveness), `/readyz` (readiness: the store takes writes), `/status`
//! (JSON; `reports` holds each peer's latest diff report in the shape of
//! `mend_core::report::DiffReport`, docs/REPORT.md) and `/metrics` (Prometheus text format via the
//! `prometheus-client` crate). All of that is read-only and open.
//!
//! The one way to change anything over HTTP is `POST /api/actions` (repair,
//! undo, pause, resume, cancel: `actions`), and it needs an operator
//! session (`session`): `Authorization: Bearer TOKEN`, else 401 before the
//! body is read. `GET /api/session` says whom a token names; `DELETE
//! /api/session` ends it. The port has no TLS: bind it to loopback or reach
//! it through a tunnel (`kubectl port-forward`, ssh) when sessions are used.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AgentState;

/// Largest request body accepted, in bytes (an action is a few dozen);
/// larger is 413.
pub const ACTION_BODY_BYTES_MAX: usize = 4096;

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, state: Arc<AgentState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/api/dashboard", get(dashboard))
        .route("/api/cluster", get(cluster))
        .route("/api/session", get(session).delete(end_session))
        .route("/api/actions", post(act))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(bound)
}

async fn status(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let r = crate::service::status_report::status(&state, Default::default()).await.map(|s| {
            let ranges: Vec<_> = s
                .ranges
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "fanout": r.fanout, "depth": r.depth, "root": format!("{:016x}", r.root), "entries": r.entries}))
                .collect();
            let body = serde_json::json!({
                "node_id": s.node_id,
                "version": s.version,
                "uptime_ms": s.uptime_ms,
                "ranges": ranges,
                "peers": s.peers.iter().map(|p| serde_json::json!({"id": p.id, "address": p.address})).collect::<Vec<_>>(),
                "repairs": s.repairs,
                "budgets": s.budgets.iter().map(|b| serde_json::json!({
                    "peer": b.peer, "range": b.range, "exceeded": b.exceeded, "since_ms": b.since_ms,
                    "divergent_keys": b.divergent_keys, "oldest_divergence_ms": b.oldest_divergence_ms,
                    "divergent_keys_max": b.divergent_keys_max, "oldest_divergence_ms_max": b.oldest_divergence_ms_max,
                })).collect::<Vec<_>>(),
                "reports": crate::dashboard::latest_reports(&state, crate::dashboard::REPORT_KEYS_MAX),
            });
            body
    });
    json_or_error(r.map_err(|s| s.message().to_string()))
}

/// Readiness: 200 while the store takes a write, else 503 with why (the
/// liveness probe `/healthz` answers as long as the process serves).
async fn ready(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let h = crate::health::check(&state).await;
    if h.writable {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store does not take writes\n",
        )
    }
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs ships in it: no other origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
        ],
        crate::dashboard::PAGE,
    )
}

fn json_or_error<T: serde::Serialize>(
    r: Result<T, String>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    match r.map(|v| serde_json::to_string(&v)) {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        ),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            e,
        ),
    }
}

async fn dashboard(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    json_or_error(
        crate::dashboard::build(&state)
            .await
            .map_err(|e| e.to_string()),
    )
}

async fn cluster(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    json_or_error(
        crate::dashboard::cluster_cached(&state)
            .await
            .map_err(|e| e.to_string()),
    )
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::from("encoding failed"),
        ),
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

fn json(code: StatusCode, v: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The session a request's `Authorization: Bearer` names, or the 401 to
/// answer.
fn authorize(
    state: &AgentState,
    headers: &HeaderMap,
) -> Result<(String, crate::session::Session), Box<Response>> {
    use crate::session::SessionError;
    let token = match headers.get(header::AUTHORIZATION) {
        None => Err(SessionError::Missing),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .ok_or(SessionError::Malformed),
    };
    token
        .and_then(|t| {
            let s = state.sessions.verify(&t, state.store.now_ms())?;
            Ok((t, s))
        })
        .map_err(|e| {
            state.metrics.auth_denied("Dashboard", "session");
            let mut r = text(StatusCode::UNAUTHORIZED, e.to_string());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"mend\""),
            );
            Box::new(r)
        })
}

fn session_json(s: &crate::session::Session) -> serde_json::Value {
    serde_json::json!({"operator": s.operator, "expires_at_ms": s.expires_at_ms})
}

async fn session(State(state): State<Arc<AgentState>>, headers: HeaderMap) -> Response {
    match authorize(&state, &headers) {
        Ok((_, s)) => json(StatusCode::OK, session_json(&s)),
        Err(r) => *r,
    }
}

async fn end_session(State(state): State<Arc<AgentState>>, headers: HeaderMap) -> Response {
    let token = match authorize(&state, &headers) {
        Ok((t, _)) => t,
        Err(r) => return *r,
    };
    match state.sessions.end(&token, state.store.now_ms()) {
        Ok(s) => json(StatusCode::OK, session_json(&s)),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn act(State(state): State<Arc<AgentState>>, req: axum::extract::Request) -> Response {
    use crate::action_log::ActionError;
    use crate::actions::start;
    let session = match authorize(&state, req.headers()) {
        Ok((_, s)) => s,
        Err(r) => return *r,
    };
    // Read only now, so a caller without a session never has its body read.
    let body = match axum::body::to_bytes(req.into_body(), ACTION_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("not an action: over {ACTION_BODY_BYTES_MAX} bytes, or cut short"),
            );
        }
    };
    let action = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("not an action: {e}")),
    };
    match start(&state, &session, action) {
        Ok(id) => json(StatusCode::ACCEPTED, serde_json::json!({"id": id})),
        Err(e @ ActionError::Invalid(_)) => text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ ActionError::Busy) => text(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    }
}
