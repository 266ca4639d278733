//! Pod facts from pods as the API server serves them.
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
fn containers_roles_native_sidecars_and_named_ones() {
    let spec = serde_json::json!({
        "initContainers": [
            {"name": "setup", "image": "x"},
            {"name": "proxy", "image": "x", "restartPolicy": "Always"},
        ],
        "containers": [{"name": "app", "image": "x"}, {"name": "linkerd-proxy", "image": "x"}],
    });
    let roles = |annotations: serde_json::Value| {
        let f = PodFacts::from_pod(&pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u", "annotations": annotations},
            "spec": spec,
        })))
        .unwrap();
        f.containers
            .iter()
            .map(|c| (c.name.clone(), c.role, c.native))
            .collect::<Vec<_>>()
    };
    let name = |n: &str| n.to_string();
    assert_eq!(
        roles(serde_json::json!({})),
        [
            (name("app"), Role::App, false),
            (name("linkerd-proxy"), Role::Sidecar, false),
            (name("setup"), Role::Init, false),
            (name("proxy"), Role::Sidecar, true),
        ]
    );
    // The pod's own list replaces the default.
    let named = roles(serde_json::json!({SIDECARS_ANNOTATION: "envoy"}));
    assert_eq!(named[1], (name("linkerd-proxy"), Role::App, false));
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
