//! Enrichment: what the container runtime knows of a container (names, grace period, the
//! image's STOPSIGNAL), looked up when the container appears and cached, so a record is complete
//! after the container is gone; and what the Kubernetes API says of its pod (workload, the
//! grace this deletion gives, stop signals, preStop hooks).
pub mod cause;
pub mod cri;
pub mod kubelet_events;
pub mod kubernetes;
pub mod pod_store;
pub mod pods;
pub mod runtime_names;

use std::collections::HashMap;

use serde::Serialize;

use crate::signals::Signal;
use pods::PodFacts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Exec,
    Http,
    Sleep,
    TcpSocket,
}

serialize_by_name!(HookKind);

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Exec => "exec",
            HookKind::Http => "http",
            HookKind::Sleep => "sleep",
            HookKind::TcpSocket => "tcp_socket",
        }
    }
}

/// A container's preStop hook. Its command is kept only redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreStopHook {
    pub kind: HookKind,
    /// The exec hook's command, redacted.
    pub command: Option<String>,
    /// The name (`comm`) its process gets: the program's file name, as the kernel cuts it.
    #[serde(skip)]
    pub program: Option<String>,
}

/// Kubernetes names and settings of one container: kubelet's labels and annotations through
/// CRI, completed by the pod from the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerInfo {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub grace_period_seconds: Option<f64>,
    /// "Deployment/web": the pod's owner (API server).
    pub workload: Option<String>,
    /// The container's own stop signal (Kubernetes' `stopSignal`, else the image's STOPSIGNAL);
    /// None: SIGTERM.
    pub stop_signal: Option<Signal>,
    /// Its preStop hook (the command only redacted: it can carry secrets).
    pub pre_stop: Option<PreStopHook>,
    /// When the pod's deletion was asked for (API server).
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The pod's sandbox (pause) container: stopped with SIGKILL by design, never reported.
    pub sandbox: bool,
}

impl ContainerInfo {
    pub fn from_kubelet(
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
        name: &str,
        image: &str,
    ) -> ContainerInfo {
        let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        ContainerInfo {
            namespace: label("io.kubernetes.pod.namespace"),
            pod: label("io.kubernetes.pod.name"),
            pod_uid: label("io.kubernetes.pod.uid"),
            name: label("io.kubernetes.container.name")
                .or_else(|| (!name.is_empty()).then(|| name.to_string())),
            image: (!image.is_empty()).then(|| image.to_string()),
            grace_period_seconds: annotations
                .get("io.kubernetes.pod.terminationGracePeriod")
                .and_then(|g| g.trim().parse::<f64>().ok())
                .filter(|g| g.is_finite() && *g >= 0.0),
            pre_stop: annotations
                .get("io.kubernetes.container.preStopHandler")
                .and_then(|h| PreStopHook::from_annotation(h)),
            sandbox: false,
            ..Default::default()
        }
    }
}

impl ContainerInfo {
    /// Completes what the runtime said with what the API says of the container's pod: names
    /// (when the runtime could not say), the workload, the grace this deletion gives, the
    /// container's stop signal and preStop hook (the API's word over the image's and kubelet's
    /// annotations).
    pub fn merge_pod(&mut self, pod: &PodFacts, container_id: &str) {
        let container = pod.container(container_id, self.name.as_deref());
        self.namespace.get_or_insert_with(|| pod.namespace.clone());
        self.pod.get_or_insert_with(|| pod.name.clone());
        self.pod_uid.get_or_insert_with(|| pod.uid.clone());
        if let Some(c) = container {
            self.name.get_or_insert_with(|| c.name.clone());
            self.stop_signal = c.stop_signal.or(self.stop_signal);
            if c.pre_stop.is_some() {
                self.pre_stop = c.pre_stop.clone();
            }
        }
        self.workload = pod.workload.clone();
        self.grace_period_seconds = pod.grace_period_seconds.or(self.grace_period_seconds);
        self.deleted_at = pod.deleted_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_and_annotations() {
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.name", "web-7d4b9c-x2x9z"),
            (
                "io.kubernetes.pod.uid",
                "8dbd0d3c-4b1e-4c39-9b32-5b6b0f7a3c11",
            ),
            ("io.kubernetes.container.name", "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let annotations: HashMap<String, String> = [
            ("io.kubernetes.pod.terminationGracePeriod", "45"),
            (
                "io.kubernetes.container.preStopHandler",
                r#"{"exec":{"command":["curl","-H","Authorization: Bearer s3cr3t"]}}"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let i = ContainerInfo::from_kubelet(&labels, &annotations, "app", "nginx:1");
        assert_eq!(i.namespace.as_deref(), Some("shop"));
        assert_eq!(i.pod.as_deref(), Some("web-7d4b9c-x2x9z"));
        assert_eq!(i.name.as_deref(), Some("app"));
        assert_eq!(i.grace_period_seconds, Some(45.0));
        assert_eq!(
            i.pre_stop.as_ref().and_then(|h| h.program.as_deref()),
            Some("curl")
        );
        assert!(
            !format!("{i:?}").contains("s3cr3t"),
            "the preStop command is kept only redacted"
        );
    }

    #[test]
    fn garbage_annotations_are_ignored() {
        let annotations: HashMap<String, String> = [(
            "io.kubernetes.pod.terminationGracePeriod".to_string(),
            "-3".to_string(),
        )]
        .into_iter()
        .collect();
        let i = ContainerInfo::from_kubelet(&HashMap::new(), &annotations, "", "");
        assert_eq!(i, ContainerInfo::default());
    }
}
