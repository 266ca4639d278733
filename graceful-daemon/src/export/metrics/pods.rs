//! Pods' stops by their pod verdict: no pod label (bounded by workloads), kept as long as a
//! workload's stop counts.
use std::time::{Duration, Instant};

use prometheus_client::{encoding::EncodeLabelSet, registry::Registry};

use super::{super::metric_labels::workload_parts, kept::Kept};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PodLabels {
    namespace: String,
    workload_type: String,
    workload: String,
    verdict: String,
}

pub(super) struct PodMetrics(Kept<PodLabels>);

impl PodMetrics {
    pub(super) fn register(registry: &mut Registry) -> PodMetrics {
        PodMetrics(Kept::register(
            registry,
            "pod_terminations",
            "Pods stopped, by workload and pod verdict (sidecar_stopped_first, sidecar_not_stopped, else the worst container verdict)",
        ))
    }

    pub(super) fn count(&mut self, namespace: &str, workload: Option<&str>, verdict: &str) {
        let (workload_type, workload) = workload_parts(workload);
        let labels = PodLabels {
            namespace: namespace.to_string(),
            workload_type,
            workload,
            verdict: verdict.to_string(),
        };
        self.0.inc_by(labels, 1);
    }

    pub(super) fn prune(&mut self, now: Instant, ttl: Duration) {
        self.0.prune(now, ttl);
    }
}
