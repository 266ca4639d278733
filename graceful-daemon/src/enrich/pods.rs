//! What the Kubernetes API says of a pod on this node, reduced to what a record needs: its
//! workload, the grace this deletion gives, each container's stop signal and preStop hook.
use crate::{
    enrich::{HookKind, PreStopHook},
    redact,
    signals::Signal,
};
use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::core::v1::{Container, LifecycleHandler, Pod, PodStatus, Probe},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};

/// A pod's controlling owner reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl From<&OwnerReference> for Owner {
    fn from(o: &OwnerReference) -> Owner {
        Owner {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        }
    }
}

/// The names a pod's `graceful.dev/sidecars` annotation gives when it has none.
pub const DEFAULT_SIDECARS: [&str; 2] = ["istio-proxy", "linkerd-proxy"];
pub const SIDECARS_ANNOTATION: &str = "graceful.dev/sidecars";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    App,
    /// A native sidecar (an init container with `restartPolicy: Always`) or a container the pod
    /// names as one (`graceful.dev/sidecars`).
    Sidecar,
    Init,
}

serialize_by_name!(Role);

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Sidecar => "sidecar",
            Role::Init => "init",
        }
    }
}

/// The names a pod calls its sidecars: its annotation's list, else the default.
pub fn sidecar_names(annotation: Option<&str>) -> Vec<String> {
    match annotation {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
        None => DEFAULT_SIDECARS.iter().map(|s| s.to_string()).collect(),
    }
}

/// How long a kernel `comm` is (TASK_COMM_LEN - 1): what an exec hook's process is called.
const COMM_LEN: usize = 15;

impl PreStopHook {
    pub fn from_handler(h: &LifecycleHandler) -> Option<PreStopHook> {
        if let Some(exec) = &h.exec {
            let argv = exec.command.clone().unwrap_or_default();
            let program = argv.first().map(|p| {
                let base = p.rsplit('/').next().unwrap_or(p);
                let mut end = base.len().min(COMM_LEN);
                while !base.is_char_boundary(end) {
                    end -= 1;
                }
                base[..end].to_string()
            });
            return Some(PreStopHook {
                kind: HookKind::Exec,
                command: Some(redact::command(&argv)),
                program,
            });
        }
        let kind = if h.http_get.is_some() {
            HookKind::Http
        } else if h.sleep.is_some() {
            HookKind::Sleep
        } else if h.tcp_socket.is_some() {
            HookKind::TcpSocket
        } else {
            return None;
        };
        Some(PreStopHook {
            kind,
            command: None,
            program: None,
        })
    }

    /// kubelet's `io.kubernetes.container.preStopHandler` annotation (the handler as JSON).
    pub fn from_annotation(json: &str) -> Option<PreStopHook> {
        serde_json::from_str::<LifecycleHandler>(json)
            .ok()
            .as_ref()
            .and_then(PreStopHook::from_handler)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodContainer {
    pub name: String,
    /// The runtime's container id, without its `containerd://` scheme.
    pub id: Option<String>,
    /// `containerStatuses[].stopSignal`, else `lifecycle.stopSignal` (KEP-4960).
    pub stop_signal: Option<Signal>,
    pub pre_stop: Option<PreStopHook>,
    /// The liveness and startup probes' own `terminationGracePeriodSeconds` (KEP-2238): the
    /// grace of the kubelet's kill when that probe fails.
    pub liveness_grace: Option<f64>,
    pub startup_grace: Option<f64>,
    pub role: Role,
    /// A native sidecar (an init container with `restartPolicy: Always`).
    pub native: bool,
}

/// The pod's `DisruptionTarget` condition (status True): who is about to end it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disruption {
    /// EvictionByEvictionAPI, PreemptionByScheduler, DeletionByTaintManager,
    /// TerminationByKubelet, DeletionByPodGC.
    pub reason: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFacts {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// "Deployment/web", "StatefulSet/db", "CronJob/backup", ...
    pub workload: Option<String>,
    /// The controller that owns the pod (a ReplicaSet for a Deployment's pods).
    pub owner: Option<Owner>,
    /// The grace this deletion gives (`deletionGracePeriodSeconds`), else the spec's.
    pub grace_period_seconds: Option<f64>,
    /// When the deletion was asked for: `deletionTimestamp` less the grace it gave.
    pub deleted_at: Option<DateTime<Utc>>,
    pub containers: Vec<PodContainer>,
    pub disruption: Option<Disruption>,
    /// `status.reason` and `.message`: the kubelet's Evicted, Terminated (node shutdown),
    /// DeadlineExceeded.
    pub status_reason: Option<String>,
    pub status_message: Option<String>,
}

impl PodFacts {
    /// None for a pod without a uid or name (not a real API object).
    pub fn from_pod(pod: &Pod) -> Option<PodFacts> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let name = meta.name.clone().filter(|n| !n.is_empty())?;
        let spec = pod.spec.as_ref();
        let deletion_grace = meta.deletion_grace_period_seconds.filter(|g| *g >= 0);
        let grace = deletion_grace
            .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
            .filter(|g| *g >= 0)
            .map(|g| g as f64);
        let deleted_at = meta.deletion_timestamp.as_ref().and_then(|t| {
            let at = DateTime::from_timestamp_nanos(i64::try_from(t.0.as_nanosecond()).ok()?);
            Some(at - chrono::Duration::seconds(deletion_grace.unwrap_or(0)))
        });
        let statuses = pod.status.as_ref();
        let status_of = |name: &str| {
            statuses
                .into_iter()
                .flat_map(|s| {
                    s.container_statuses
                        .iter()
                        .flatten()
                        .chain(s.init_container_statuses.iter().flatten())
                })
                .find(|c| c.name == name)
        };
        let sidecars = sidecar_names(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(SIDECARS_ANNOTATION))
                .map(String::as_str),
        );
        let specs: Vec<(&Container, bool)> = spec
            .into_iter()
            .flat_map(|s| {
                let init = s.init_containers.iter().flatten().map(|c| (c, true));
                s.containers.iter().map(|c| (c, false)).chain(init)
            })
            .collect();
        let containers = specs
            .into_iter()
            .map(|(c, init)| {
                let native = init && c.restart_policy.as_deref() == Some("Always");
                let role = match (init, native) {
                    (_, true) => Role::Sidecar,
                    (true, false) => Role::Init,
                    _ if sidecars.contains(&c.name) => Role::Sidecar,
                    _ => Role::App,
                };
                let status = status_of(&c.name);
                let lifecycle = c.lifecycle.as_ref();
                PodContainer {
                    name: c.name.clone(),
                    id: status
                        .and_then(|s| s.container_id.as_deref())
                        .map(|id| id.rsplit("://").next().unwrap_or(id).to_string())
                        .filter(|id| !id.is_empty()),
                    stop_signal: status
                        .and_then(|s| s.stop_signal.as_deref())
                        .or_else(|| lifecycle.and_then(|l| l.stop_signal.as_deref()))
                        .and_then(|s| s.parse().ok()),
                    pre_stop: lifecycle
                        .and_then(|l| l.pre_stop.as_ref())
                        .and_then(PreStopHook::from_handler),
                    liveness_grace: probe_grace(c.liveness_probe.as_ref()),
                    startup_grace: probe_grace(c.startup_probe.as_ref()),
                    role,
                    native,
                }
            })
            .collect();
        Some(PodFacts {
            uid,
            namespace: meta.namespace.clone().unwrap_or_default(),
            workload: workload(pod),
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(Owner::from),
            name,
            grace_period_seconds: grace,
            deleted_at,
            containers,
            disruption: statuses.and_then(disruption),
            status_reason: statuses
                .and_then(|s| s.reason.clone())
                .filter(|r| !r.is_empty()),
            status_message: statuses
                .and_then(|s| s.message.clone())
                .filter(|m| !m.is_empty()),
        })
    }

    /// The container with this runtime id, else with this name.
    pub fn container(&self, id: &str, name: Option<&str>) -> Option<&PodContainer> {
        self.containers
            .iter()
            .find(|c| c.id.as_deref() == Some(id))
            .or_else(|| {
                let name = name?;
                self.containers.iter().find(|c| c.name == name)
            })
    }
}

fn probe_grace(probe: Option<&Probe>) -> Option<f64> {
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .filter(|g| *g >= 0)
        .map(|g| g as f64)
}

fn disruption(status: &PodStatus) -> Option<Disruption> {
    let c = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
    Some(Disruption {
        reason: c.reason.clone().filter(|r| !r.is_empty())?,
        message: c.message.clone().filter(|m| !m.is_empty()),
    })
}

/// The workload that owns a pod, named without reading its owners: a ReplicaSet called
/// `<deployment>-<pod-template-hash>` is the Deployment's, a Job called `<cronjob>-<minutes>` a
/// CronJob's (the name the CronJob controller gives its Jobs).
pub fn workload(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let name = owner.name.as_str();
    let named = |kind: &str, name: &str| Some(format!("{kind}/{name}"));
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| name.strip_suffix(h.as_str())?.strip_suffix('-')) {
                Some(deployment) if !deployment.is_empty() => named("Deployment", deployment),
                _ => named("ReplicaSet", name),
            }
        }
        "Job" => match name.rsplit_once('-') {
            Some((cronjob, minutes))
                if !cronjob.is_empty()
                    && (8..=10).contains(&minutes.len())
                    && minutes.bytes().all(|b| b.is_ascii_digit()) =>
            {
                named("CronJob", cronjob)
            }
            _ => named("Job", name),
        },
        kind => named(kind, name),
    }
}

#[cfg(test)]
mod tests;
