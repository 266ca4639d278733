//! The label sets of the daemon's metrics, and the enums that name some of their values.
use prometheus_client::encoding::EncodeLabelSet;

use crate::{enrich::ContainerInfo, identity::Identity, record::TerminationRecord};

/// Who a series is about: Kubernetes names, or (without Kubernetes) the short id or unit name.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl ContainerLabels {
    /// A container's: its Kubernetes names, else its short id.
    pub fn of(identity: &Identity, info: Option<&ContainerInfo>) -> ContainerLabels {
        ContainerLabels {
            namespace: info.and_then(|i| i.namespace.clone()).unwrap_or_default(),
            pod: info.and_then(|i| i.pod.clone()).unwrap_or_default(),
            container: info
                .and_then(|i| i.name.clone())
                .unwrap_or_else(|| identity.short_id().to_string()),
        }
    }

    /// A record's: its container's, else (no identity) the name it is displayed by.
    pub fn of_record(record: &TerminationRecord) -> ContainerLabels {
        match &record.identity {
            Some(identity) => ContainerLabels::of(identity, record.info.as_ref()),
            None => ContainerLabels {
                container: record.display_name(),
                ..Default::default()
            },
        }
    }
}

/// Why events were lost: the `reason` of `graceful_events_lost_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum LossKind {
    RingFull,
    ReadFailed,
    DecodeFailed,
}

impl LossKind {
    pub(super) fn labels(self) -> LossLabels {
        let reason = match self {
            LossKind::RingFull => "ring_full",
            LossKind::ReadFailed => "read_failed",
            LossKind::DecodeFailed => "decode_failed",
        };
        LossLabels {
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LossLabels {
    pub(super) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SignalLabels {
    pub(super) signal: String,
    pub(super) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ContainerSignalLabels {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) signal: String,
    pub(super) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TerminationLabels {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) outcome: String,
    pub(super) verdict: String,
    /// What asked for the stop: one of a closed set (`CauseKind`).
    pub(super) cause: String,
}

/// A workload's stops: what alerts and dashboards group by, with no pod name in it.
/// `workload` and `workload_type` as kubernetes-mixin's
/// `namespace_workload_pod:kube_pod_owner:relabel` has them, so the two join.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WorkloadLabels {
    pub(super) namespace: String,
    pub(super) workload_type: String,
    pub(super) workload: String,
    pub(super) outcome: String,
    pub(super) verdict: String,
    pub(super) cause: String,
}

/// A workload as kubernetes-mixin names it: ("deployment", "web") for "Deployment/web"; both
/// empty when the API server did not say (a bare pod, no API).
pub(super) fn workload_parts(workload: Option<&str>) -> (String, String) {
    match workload.and_then(|w| w.split_once('/')) {
        Some((kind, name)) => (kind.to_ascii_lowercase(), name.to_string()),
        None => (String::new(), String::new()),
    }
}

/// Every stop on the node, by outcome and verdict: created at 0 at start, so that `increase()`
/// sees the first one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeVerdictLabels {
    pub(super) outcome: String,
    pub(super) verdict: String,
}

/// A running container's PID 1 risk, with its workload (what the alert and the risk table name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RiskLabels {
    pub(super) namespace: String,
    pub(super) workload_type: String,
    pub(super) workload: String,
    pub(super) pod: String,
    pub(super) container: String,
}

/// Kubernetes Events by reason and what became of them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub reason: String,
    /// `published`, `failed` (the API refused or did not answer), `rate_limited`,
    /// `queue_full`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProgramLabels {
    pub(super) program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VerdictLabels {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DurationLabels {
    pub(super) namespace: String,
    pub(super) container: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NamespaceContainer {
    pub(super) namespace: String,
    pub(super) container: String,
}

/// What the daemon holds in memory: the `kind` of `graceful_tracked`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Tracked {
    Processes,
    Containers,
    Terminations,
    CgroupPaths,
    RuntimeCache,
    MetricSeries,
    /// This node's pods as the API server said (and deleted ones kept a while).
    Pods,
}

impl Tracked {
    pub(super) fn labels(self) -> KindLabels {
        let kind = match self {
            Tracked::Processes => "processes",
            Tracked::Containers => "containers",
            Tracked::Terminations => "terminations",
            Tracked::CgroupPaths => "cgroup_paths",
            Tracked::RuntimeCache => "runtime_cache",
            Tracked::MetricSeries => "metric_series",
            Tracked::Pods => "pods",
        };
        KindLabels { kind: kind.into() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub(super) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabels {
    pub(super) version: String,
}
