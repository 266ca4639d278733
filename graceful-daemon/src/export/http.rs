//! HTTP on --metrics-addr: /metrics, /healthz, /readyz, /terminations.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use serde_json::Value;

use super::metrics::Metrics;

/// How many records /terminations keeps.
pub const KEPT_RECORDS: usize = 1000;

/// What the endpoints read; the daemon's loop writes it.
pub struct Shared {
    pub metrics: Metrics,
    /// Newest first.
    pub terminations: VecDeque<Value>,
    pub ready: bool,
}

impl Shared {
    pub fn push_record(&mut self, record: Value) {
        self.terminations.push_front(record);
        self.terminations.truncate(KEPT_RECORDS);
    }
}

pub type SharedState = Arc<Mutex<Shared>>;

/// A poisoned lock only means a panic elsewhere; the data is still the best there is.
pub fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/terminations", get(terminations))
        .with_state(state)
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic text format otherwise.
async fn metrics(State(state): State<SharedState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let shared = lock(&state);
    if accept.contains("application/openmetrics-text") {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            shared.metrics.encode(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            shared.metrics.encode_text(),
        )
    }
}

async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    if lock(&state).ready {
        (StatusCode::OK, "ready: probes attached\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: probes not attached\n",
        )
    }
}

async fn terminations(State(state): State<SharedState>) -> impl IntoResponse {
    let list: Vec<Value> = lock(&state).terminations.iter().cloned().collect();
    axum::Json(list)
}
