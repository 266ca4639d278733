//! Where records and events leave the daemon: the live trace view, JSON logs, Prometheus
//! metrics and the HTTP endpoints.
pub mod http;
pub mod log;
pub mod metric_labels;
pub mod metrics;
pub mod trace;
