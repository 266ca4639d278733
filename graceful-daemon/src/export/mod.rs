//! Where records and events leave the daemon: the live trace view, JSON logs, Prometheus
//! metrics, the HTTP endpoints and Kubernetes Events.
pub mod announcer;
pub mod events;
pub mod exposition;
pub mod health;
pub mod http;
pub mod http_server;
pub mod log;
pub mod metric_labels;
pub mod metrics;
pub mod process;
pub mod trace;
