//! The agent's HTTP surface: `/healthz`, `/status` (JSON) and `/metrics`
//! (Prometheus text format via the `prometheus-client` crate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::state::AgentState;

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, state: Arc<AgentState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
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
    match crate::server::status(&state).await {
        Ok(s) => {
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
            });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string())
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e.message().to_string()),
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let mut reg = Registry::with_prefix("mend");
    let c = &state.counters;
    reg.register("writes", "Writes applied through the Replica service", ConstCounter::new(c.writes_total.load(Ordering::Relaxed)));
    reg.register("exchanges", "Exchanges initiated by this agent", ConstCounter::new(c.exchanges_total.load(Ordering::Relaxed)));
    reg.register("repaired_keys", "Keys written by repairs", ConstCounter::new(c.repaired_keys_total.load(Ordering::Relaxed)));
    reg.register("repaired_bytes", "Entry bytes streamed by repairs", ConstCounter::new(c.repaired_bytes_total.load(Ordering::Relaxed)));
    reg.register(
        "divergent_keys",
        "Divergent keys found by the last exchange",
        ConstGauge::new(c.last_divergent_keys.load(Ordering::Relaxed) as i64),
    );
    let mut body = String::new();
    if encode(&mut body, &reg).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], String::from("encoding failed"));
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}
