//! The agent's HTTP surface: the dashboard at `/` with its JSON at
//! `/api/dashboard` and `/api/cluster` (`dashboard`), `/healthz`
//! (liveness), `/readyz` (readiness: the store takes writes), `/status`
//! (JSON) and `/metrics` (Prometheus text format via the
//! `prometheus-client` crate). Read-only: nothing here changes the store.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AgentState;

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, state: Arc<AgentState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/api/dashboard", get(dashboard))
        .route("/api/cluster", get(cluster))
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
    let r = crate::server::status(&state, Default::default()).await.map(|s| {
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
            });
            body
    });
    json_or_error(r)
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
    r: Result<T, tonic::Status>,
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
            e.message().to_string(),
        ),
    }
}

async fn dashboard(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    json_or_error(crate::dashboard::build(&state).await)
}

async fn cluster(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    json_or_error(crate::dashboard::cluster_cached(&state).await)
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
