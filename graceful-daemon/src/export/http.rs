//! HTTP on --metrics-addr: /metrics, /healthz, /readyz, /terminations.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{header, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use super::exposition::Exposition;

/// The kinds of record /terminations lists (`?kind=` picks one).
const KINDS: [&str; 2] = ["termination", "pod_termination"];

/// How many records /terminations keeps.
pub const KEPT_RECORDS: usize = 1000;

/// What the endpoints read besides the metrics; the daemon's loop writes it.
#[derive(Default)]
pub struct Shared {
    /// Newest first, serialized once: a request copies pointers under the lock, not records.
    /// With each its `kind` (`termination`, `pod_termination`).
    pub terminations: VecDeque<(&'static str, Arc<str>)>,
    pub ready: bool,
    /// The loop's last tick and the ring reader's last drain it saw: /healthz fails when
    /// either is older than [`STALLED`].
    pub beat: Option<Instant>,
    pub drained: Option<Instant>,
}

/// The loop ticks every second and the reader reports at least every 100 ms: this long
/// without either is a stalled daemon that a restart may cure.
pub const STALLED: Duration = Duration::from_secs(20);

impl Shared {
    /// None when healthy, else what stalled.
    pub fn stalled(&self, now: Instant) -> Option<&'static str> {
        let old =
            |at: Option<Instant>| at.is_some_and(|t| now.saturating_duration_since(t) > STALLED);
        if old(self.beat) {
            Some("the event loop")
        } else if old(self.drained) {
            Some("the kernel ring reader")
        } else {
            None
        }
    }
}

impl Shared {
    pub fn push_record(&mut self, record: &serde_json::Value) {
        let kind = KINDS
            .iter()
            .find(|k| record["kind"] == **k)
            .copied()
            .unwrap_or("termination");
        self.terminations
            .push_front((kind, record.to_string().into()));
        self.terminations.truncate(KEPT_RECORDS);
    }
}

pub type SharedState = Arc<Mutex<Shared>>;

/// A poisoned lock only means a panic elsewhere; the data is still the best there is.
pub fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The endpoints' view of the daemon: the loop's shared state and the metrics registry,
/// which a scrape encodes without the loop's lock.
#[derive(Clone)]
pub struct Endpoints {
    pub state: SharedState,
    pub metrics: Exposition,
}

pub fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/terminations", get(terminations))
        .with_state(endpoints)
}

/// OpenMetrics text, what the client library writes and Prometheus asks for.
async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoints.metrics.encode(),
    )
}

async fn healthz(State(Endpoints { state, .. }): State<Endpoints>) -> impl IntoResponse {
    match lock(&state).stalled(Instant::now()) {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(what) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: {what} has not moved for over {}s\n",
                STALLED.as_secs()
            ),
        ),
    }
}

async fn readyz(State(Endpoints { state, .. }): State<Endpoints>) -> impl IntoResponse {
    if lock(&state).ready {
        (StatusCode::OK, "ready: probes attached\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: probes not attached\n",
        )
    }
}

async fn terminations(State(Endpoints { state, .. }): State<Endpoints>, uri: Uri) -> Response {
    let kind = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("kind="));
    if let Some(k) = kind.filter(|k| !KINDS.contains(k)) {
        let said = format!("unknown kind {k:?}: termination or pod_termination\n");
        return (StatusCode::BAD_REQUEST, said).into_response();
    }
    let list: Vec<Arc<str>> = lock(&state)
        .terminations
        .iter()
        .filter(|(k, _)| kind.is_none_or(|want| want == *k))
        .map(|(_, r)| r.clone())
        .collect();
    let mut body = String::with_capacity(list.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, r) in list.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push(']');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_loop_or_reader_fails_health() {
        let mut shared = Shared::default();
        let t0 = Instant::now();
        assert_eq!(shared.stalled(t0), None, "not started yet: healthy");
        shared.beat = Some(t0);
        shared.drained = Some(t0);
        assert_eq!(shared.stalled(t0 + STALLED / 2), None);
        shared.beat = Some(t0 + STALLED);
        assert_eq!(
            shared.stalled(t0 + STALLED * 2),
            Some("the kernel ring reader")
        );
        shared.drained = Some(t0 + STALLED * 2);
        assert_eq!(
            shared.stalled(t0 + STALLED * 2 + Duration::from_secs(1)),
            Some("the event loop")
        );
    }
}
