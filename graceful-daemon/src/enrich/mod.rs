//! Enrichment: what the container runtime knows of a container (names, grace period), looked
//! up when the container appears and cached, so a record is complete after the container is gone.
pub mod cri;

use std::collections::HashMap;

pub use crate::record::ContainerInfo;

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
            pre_stop_hook: annotations
                .get("io.kubernetes.container.preStopHandler")
                .is_some_and(|h| !h.trim().is_empty()),
            sandbox: false,
        }
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
        assert!(i.pre_stop_hook);
        assert!(
            !format!("{i:?}").contains("s3cr3t"),
            "the preStop command is never kept"
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
