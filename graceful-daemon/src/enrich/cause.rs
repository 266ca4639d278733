//! Why a container was stopped: the API's word on its pod (a disruption condition, the kubelet's
//! status reason, a deletion), the kubelet's `Killing` Event for a restart without deletion, and
//! what the node saw itself (the OOM killer, systemd). Pure: the daemon gathers the facts.
use serde::Serialize;

use super::pods::{Disruption, PodFacts};
use crate::tracker::{Termination, Verdict};

/// What asked for the stop: a closed set (the `cause` label's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CauseKind {
    Deleted,
    Evicted,
    NodePressureEviction,
    Preempted,
    TaintEviction,
    NodeShutdown,
    DeadlineExceeded,
    LivenessProbe,
    StartupProbe,
    Restart,
    Oom,
    Runtime,
    Unknown,
}

/// Where the cause came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseSource {
    KubernetesApi,
    Kernel,
    Runtime,
}

serialize_by_name!(CauseKind, CauseSource);

impl CauseKind {
    pub const ALL: [CauseKind; 13] = [
        CauseKind::Deleted,
        CauseKind::Evicted,
        CauseKind::NodePressureEviction,
        CauseKind::Preempted,
        CauseKind::TaintEviction,
        CauseKind::NodeShutdown,
        CauseKind::DeadlineExceeded,
        CauseKind::LivenessProbe,
        CauseKind::StartupProbe,
        CauseKind::Restart,
        CauseKind::Oom,
        CauseKind::Runtime,
        CauseKind::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Deleted => "deleted",
            CauseKind::Evicted => "evicted",
            CauseKind::NodePressureEviction => "node_pressure_eviction",
            CauseKind::Preempted => "preempted",
            CauseKind::TaintEviction => "taint_eviction",
            CauseKind::NodeShutdown => "node_shutdown",
            CauseKind::DeadlineExceeded => "deadline_exceeded",
            CauseKind::LivenessProbe => "liveness_probe",
            CauseKind::StartupProbe => "startup_probe",
            CauseKind::Restart => "restart",
            CauseKind::Oom => "oom",
            CauseKind::Runtime => "runtime",
            CauseKind::Unknown => "unknown",
        }
    }
}

impl CauseSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CauseSource::KubernetesApi => "kubernetes_api",
            CauseSource::Kernel => "kernel",
            CauseSource::Runtime => "runtime",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub kind: CauseKind,
    /// In words, from whoever said it (the condition's or the kubelet's message, the owner).
    pub detail: Option<String>,
    pub source: CauseSource,
}

/// The kubelet's `Killing` Event for a container it stopped without a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletKill {
    /// "Container app failed liveness probe, will be restarted".
    pub message: String,
}

impl KubeletKill {
    fn probe(&self) -> Option<CauseKind> {
        if self.message.contains("failed liveness probe") {
            Some(CauseKind::LivenessProbe)
        } else if self.message.contains("failed startup probe") {
            Some(CauseKind::StartupProbe)
        } else {
            None
        }
    }
}

/// What the kubelet's eviction and node shutdown write as the pod's `status.reason`.
const EVICTED: &str = "Evicted";
const SHUTDOWN_REASONS: [&str; 3] = ["Shutdown", "Terminated", "NodeShutdown"];
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

impl Cause {
    fn api(kind: CauseKind, detail: Option<String>) -> Cause {
        Cause {
            kind,
            detail: detail.filter(|d| !d.is_empty()),
            source: CauseSource::KubernetesApi,
        }
    }

    /// The cause of a stop from what the node saw, the pod's facts (None: no API, or
    /// it does not know the pod) and the kubelet's `Killing` Event (looked up only for a stop
    /// without a deletion).
    pub fn of(t: &Termination, pod: Option<&PodFacts>, kill: Option<&KubeletKill>) -> Cause {
        if t.verdict == Verdict::OomKilled {
            let victim = t.oom.iter().find(|v| v.ended_container);
            return Cause {
                kind: CauseKind::Oom,
                detail: victim.map(|v| format!("the OOM killer took {} (pid {})", v.comm, v.pid)),
                source: CauseSource::Kernel,
            };
        }
        if let Some(cause) = pod.and_then(|p| Cause::from_pod(p, kill)) {
            return cause;
        }
        // systemd stopping a container's processes itself: the node is going down (or the
        // unit was stopped) with no kubelet in between.
        let sender = t
            .stop
            .as_ref()
            .map(|s| &s.sender)
            .or(t.kill.as_ref().map(|k| &k.sender));
        if sender.is_some_and(|s| s.comm == "systemd") {
            return Cause {
                kind: CauseKind::NodeShutdown,
                detail: Some("systemd stopped it (a node shutdown, or its unit stopped)".into()),
                source: CauseSource::Kernel,
            };
        }
        if t.stop.is_some() || t.kill.is_some() {
            return Cause {
                kind: CauseKind::Runtime,
                detail: None,
                source: CauseSource::Runtime,
            };
        }
        Cause {
            kind: CauseKind::Unknown,
            detail: None,
            source: CauseSource::Kernel,
        }
    }

    /// Only the kubelet's Events can say why: the API knows the pod, which was neither deleted
    /// nor disrupted, and the node saw no OOM kill.
    pub fn needs_kubelet_word(t: &Termination, pod: Option<&PodFacts>) -> bool {
        t.verdict != Verdict::OomKilled && pod.is_some_and(|p| Cause::from_pod(p, None).is_none())
    }

    /// What the API says of the pod, when it says anything.
    fn from_pod(pod: &PodFacts, kill: Option<&KubeletKill>) -> Option<Cause> {
        let status_message = pod.status_message.clone();
        if let Some(Disruption { reason, message }) = pod.disruption.as_ref() {
            let kind = match reason.as_str() {
                "EvictionByEvictionAPI" => CauseKind::Evicted,
                "PreemptionByScheduler" => CauseKind::Preempted,
                "DeletionByTaintManager" => CauseKind::TaintEviction,
                "TerminationByKubelet" => match pod.status_reason.as_deref() {
                    Some(r) if SHUTDOWN_REASONS.contains(&r) => CauseKind::NodeShutdown,
                    _ => CauseKind::NodePressureEviction,
                },
                // DeletionByPodGC and reasons yet to come: a deletion, said as it was.
                _ => CauseKind::Deleted,
            };
            let detail = match kind {
                CauseKind::NodePressureEviction | CauseKind::NodeShutdown => {
                    status_message.or_else(|| message.clone())
                }
                _ => message.clone(),
            };
            return Some(Cause::api(kind, detail));
        }
        match pod.status_reason.as_deref() {
            Some(EVICTED) => {
                return Some(Cause::api(CauseKind::NodePressureEviction, status_message))
            }
            Some(r) if SHUTDOWN_REASONS.contains(&r) => {
                return Some(Cause::api(CauseKind::NodeShutdown, status_message))
            }
            Some(DEADLINE_EXCEEDED) => {
                return Some(Cause::api(CauseKind::DeadlineExceeded, status_message))
            }
            _ => {}
        }
        if pod.deleted_at.is_some() {
            let owner = pod
                .owner
                .as_ref()
                .map(|o| format!("deleted through the API; owned by {} {}", o.kind, o.name));
            return Some(Cause::api(
                CauseKind::Deleted,
                owner.or_else(|| Some("deleted through the API".into())),
            ));
        }
        let kill = kill?;
        let kind = kill.probe().unwrap_or(CauseKind::Restart);
        Some(Cause::api(kind, Some(kill.message.clone())))
    }

    /// The cause in words, to begin an Event's note: "Evicted through the eviction API
    /// (kubectl drain); ".
    pub fn words(&self) -> String {
        let what = match self.kind {
            CauseKind::Deleted => "Deleted through the API",
            CauseKind::Evicted => {
                "Evicted through the eviction API (kubectl drain, or a controller)"
            }
            CauseKind::NodePressureEviction => "Evicted by the kubelet for node pressure",
            CauseKind::Preempted => "Preempted by the scheduler for a higher-priority pod",
            CauseKind::TaintEviction => "Evicted for a NoExecute taint on its node",
            CauseKind::NodeShutdown => "Stopped for the node's shutdown",
            CauseKind::DeadlineExceeded => "Stopped at its pod's activeDeadlineSeconds",
            CauseKind::LivenessProbe => "Restarted by the kubelet: its liveness probe failed",
            CauseKind::StartupProbe => "Restarted by the kubelet: its startup probe failed",
            CauseKind::Restart => "Restarted by the kubelet",
            CauseKind::Oom => "Killed by the kernel's OOM killer",
            CauseKind::Runtime => {
                "Stopped through the container runtime, with no word from the API"
            }
            CauseKind::Unknown => "Stopped for a reason nobody said",
        };
        match (self.kind, &self.detail) {
            // The kubelet's own message, in full, for the kinds it says best.
            (
                CauseKind::NodePressureEviction
                | CauseKind::Restart
                | CauseKind::Deleted
                | CauseKind::Oom,
                Some(d),
            ) => format!("{what} ({d})"),
            _ => what.to_string(),
        }
    }

    /// A liveness or startup probe's kill gives the probe's own grace when it has one
    /// (KEP-2238), not the pod's.
    pub fn grace_override(&self, pod: Option<&PodFacts>, container: Option<&str>) -> Option<f64> {
        let c = pod?
            .containers
            .iter()
            .find(|c| Some(c.name.as_str()) == container)?;
        match self.kind {
            CauseKind::LivenessProbe => c.liveness_grace,
            CauseKind::StartupProbe => c.startup_grace,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
