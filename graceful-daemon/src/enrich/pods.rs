//! What the Kubernetes API says of a pod on this node, reduced to what a record needs: its
//! workload, the grace this deletion gives, each container's stop signal and preStop hook.
use crate::{
    enrich::{HookKind, PreStopHook},
    redact,
    signals::Signal,
};
use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::core::v1::{Container, LifecycleHandler, Pod},
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
}

#[derive(Debug, Clone, PartialEq)]
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
        let specs: Vec<&Container> = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .collect();
        let containers = specs
            .into_iter()
            .map(|c| {
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
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a Pod")
    }

    fn owned_by(kind: &str, name: &str, labels: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u", "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "o", "controller": true}]},
        }))
    }

    #[test]
    fn workloads_from_owner_names() {
        let hash = serde_json::json!({"pod-template-hash": "7d4b9c8f5"});
        let none = serde_json::json!({});
        let cases = [
            (
                owned_by("ReplicaSet", "web-7d4b9c8f5", hash.clone()),
                Some("Deployment/web"),
            ),
            (
                owned_by("ReplicaSet", "my-web-app-7d4b9c8f5", hash),
                Some("Deployment/my-web-app"),
            ),
            (
                owned_by("ReplicaSet", "bare-rs", none.clone()),
                Some("ReplicaSet/bare-rs"),
            ),
            (
                owned_by("StatefulSet", "db", none.clone()),
                Some("StatefulSet/db"),
            ),
            (
                owned_by("DaemonSet", "agent", none.clone()),
                Some("DaemonSet/agent"),
            ),
            (
                owned_by("Job", "backup-29345760", none.clone()),
                Some("CronJob/backup"),
            ),
            (
                owned_by("Job", "migrate-v2", none.clone()),
                Some("Job/migrate-v2"),
            ),
            (
                owned_by("Job", "load-2024", none.clone()),
                Some("Job/load-2024"),
            ),
            (
                pod(serde_json::json!({"metadata": {"name": "p", "uid": "u"}})),
                None,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(
                workload(&p).as_deref(),
                want,
                "{:?}",
                p.metadata.owner_references
            );
        }
    }

    fn deleted_pod() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "web-7d4b9c8f5-x2x9z", "namespace": "shop", "uid": "8dbd0d3c",
                "deletionTimestamp": "2026-11-23T10:00:05Z", "deletionGracePeriodSeconds": 5,
            },
            "spec": {
                "terminationGracePeriodSeconds": 30,
                "containers": [
                    {"name": "app", "image": "app:1", "lifecycle": {
                        "stopSignal": "SIGUSR1",
                        "preStop": {"exec": {"command": ["/usr/local/bin/drain-connections", "--token=s3cr3t"]}}}},
                    {"name": "proxy", "image": "envoy", "lifecycle": {"preStop": {"httpGet": {"path": "/quit", "port": 9901}}}},
                    {"name": "log", "image": "fluent"},
                ],
            },
            "status": {"containerStatuses": [
                {"name": "app", "containerID": "containerd://abc123", "image": "app:1", "imageID": "", "ready": true, "restartCount": 0, "stopSignal": "SIGQUIT"},
                {"name": "proxy", "containerID": "containerd://def456", "image": "envoy", "imageID": "", "ready": true, "restartCount": 0},
            ]},
        }))
    }

    #[test]
    fn a_deleted_pod_gives_its_deletion_grace_and_each_containers_stop() {
        let f = PodFacts::from_pod(&deleted_pod()).expect("facts");
        assert_eq!(
            f.grace_period_seconds,
            Some(5.0),
            "the deletion's grace, not the spec's"
        );
        assert_eq!(
            f.deleted_at.map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-11-23T10:00:00+00:00")
        );
        let app = f.container("abc123", None).expect("app by id");
        assert_eq!(app.name, "app");
        assert_eq!(
            app.stop_signal,
            Some(Signal::QUIT),
            "the status's word first"
        );
        let hook = app.pre_stop.as_ref().expect("exec hook");
        assert_eq!(hook.kind, HookKind::Exec);
        assert_eq!(hook.program.as_deref(), Some("drain-connectio"));
        let command = hook.command.as_deref().unwrap_or_default();
        assert!(
            !command.contains("s3cr3t") && command.contains("drain-connections"),
            "{command}"
        );
        let proxy = f.container("nope", Some("proxy")).expect("proxy by name");
        assert_eq!(
            proxy.pre_stop.as_ref().map(|h| h.kind),
            Some(HookKind::Http)
        );
        assert_eq!(proxy.stop_signal, None);
        assert_eq!(
            f.container("nope", Some("log")).and_then(|c| c.id.clone()),
            None
        );
    }

    #[test]
    fn a_running_pod_gives_its_specs_grace_and_lifecycle_stop_signal() {
        let mut p = deleted_pod();
        p.metadata.deletion_timestamp = None;
        p.metadata.deletion_grace_period_seconds = None;
        if let Some(s) = p.status.as_mut() {
            s.container_statuses.as_mut().unwrap()[0].stop_signal = None;
        }
        let f = PodFacts::from_pod(&p).expect("facts");
        assert_eq!(f.grace_period_seconds, Some(30.0));
        assert_eq!(f.deleted_at, None);
        assert_eq!(
            f.container("abc123", None).and_then(|c| c.stop_signal),
            Some(Signal::USR1)
        );
    }

    #[test]
    fn garbage_is_no_pod() {
        assert_eq!(PodFacts::from_pod(&Pod::default()), None);
        assert_eq!(PreStopHook::from_annotation("{not json"), None);
        assert_eq!(PreStopHook::from_annotation("{}"), None);
        let hook = PreStopHook::from_annotation(
            r#"{"exec":{"command":["/bin/sh","-c","curl -H 'Authorization: Bearer s3cr3t' localhost"]}}"#,
        );
        let hook = hook.expect("exec hook");
        assert_eq!(hook.program.as_deref(), Some("sh"));
        assert!(!hook.command.unwrap_or_default().contains("s3cr3t"));
    }
}
