//! What stops cost in TCP connections, by workload: cut by the SIGKILL, reset after the stop
//! signal, refused after the listener closed. Kept as long as a workload's stop counts.
use std::time::{Duration, Instant};

use prometheus_client::{encoding::EncodeLabelSet, registry::Registry};

use super::{super::metric_labels::workload_parts, kept::Kept};
use crate::tracker::Connections;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ConnectionLabels {
    namespace: String,
    workload_type: String,
    workload: String,
    /// `cut`, `reset` or `refused`.
    how: String,
}

pub(super) struct ConnectionMetrics(Kept<ConnectionLabels>);

impl ConnectionMetrics {
    pub(super) fn register(registry: &mut Registry) -> ConnectionMetrics {
        ConnectionMetrics(Kept::register(
            registry,
            "connections",
            "TCP connections stops cost, by workload: cut (still open at the SIGKILL) reset (aborted after the stop signal) or refused (attempts after the listener closed)",
        ))
    }

    pub(super) fn count(&mut self, namespace: &str, workload: Option<&str>, c: &Connections) {
        let (workload_type, workload) = workload_parts(workload);
        for (how, n) in [
            ("cut", c.cut().unwrap_or(0)),
            ("reset", c.reset),
            ("refused", c.refused.unwrap_or(0)),
        ] {
            if n == 0 {
                continue;
            }
            let labels = ConnectionLabels {
                namespace: namespace.to_string(),
                workload_type: workload_type.clone(),
                workload: workload.clone(),
                how: how.into(),
            };
            self.0.inc_by(labels, n);
        }
    }

    pub(super) fn prune(&mut self, now: Instant, ttl: Duration) {
        self.0.prune(now, ttl);
    }
}
