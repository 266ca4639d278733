//! Each cause from the pod as the API server, the scheduler and the kubelet write it.
use serde_json::json;

use super::*;
use crate::{
    events::ExitStatus,
    tracker::{Init, Kill, OomVictim, Outcome, Sender, Stop, StopSource},
};

fn sender(comm: &str) -> Sender {
    Sender {
        pid: 1,
        comm: comm.into(),
    }
}

/// A stop from outside by `by`, the main process exiting 143.
fn stopped_by(by: &str) -> Termination {
    Termination {
        cgroup: 5,
        stop: Some(Stop {
            signal: crate::signals::Signal::TERM,
            at: 0,
            sender: sender(by),
            result: crate::events::SignalResult::Delivered,
            source: StopSource::Runtime,
        }),
        init: Init {
            pid: 10,
            comm: "app".into(),
            shell: false,
            handles_stop_signal: Some(true),
        },
        received: Vec::new(),
        received_more: 0,
        never_received: Vec::new(),
        never_received_more: 0,
        kill: None,
        outcome: Outcome::Exited,
        exit: Some(ExitStatus {
            code: Some(143),
            signal: None,
        }),
        started: 0,
        ended: 1,
        verdict: Verdict::Graceful,
        explanation: String::new(),
        pre_stop: None,
        stuck: Vec::new(),
        oom: Vec::new(),
        connections: None,
    }
}

/// A pod of the ReplicaSet web-7d9 as the API serves it, with `extra` merged into it.
fn pod(status: serde_json::Value, deleted: bool) -> PodFacts {
    let mut meta = json!({
        "name": "web-7d9-x2x9z", "namespace": "shop", "uid": "u1",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9",
                             "uid": "rs1", "controller": true}],
    });
    if deleted {
        meta["deletionTimestamp"] = json!("2026-11-30T10:00:30Z");
        meta["deletionGracePeriodSeconds"] = json!(30);
    }
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [{
            "name": "app", "image": "app:1",
            "livenessProbe": {"httpGet": {"path": "/", "port": 80}, "terminationGracePeriodSeconds": 3},
        }]},
        "status": status,
    }))
    .unwrap();
    PodFacts::from_pod(&pod).unwrap()
}

fn disrupted(reason: &str, message: &str) -> serde_json::Value {
    json!({"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": reason,
                           "message": message, "lastTransitionTime": "2026-11-30T10:00:00Z"}]})
}

fn cause(pod: &PodFacts) -> Cause {
    Cause::of(&stopped_by("containerd-shim"), Some(pod), None)
}

#[test]
fn disruption_conditions_name_the_cause() {
    let cases = [
        (
            "EvictionByEvictionAPI",
            "Eviction API: evicting",
            CauseKind::Evicted,
        ),
        (
            "PreemptionByScheduler",
            "default-scheduler: preempting to accommodate a higher priority pod",
            CauseKind::Preempted,
        ),
        (
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
            CauseKind::TaintEviction,
        ),
        (
            "DeletionByPodGC",
            "PodGC: node no longer exists",
            CauseKind::Deleted,
        ),
    ];
    for (reason, message, kind) in cases {
        let c = cause(&pod(disrupted(reason, message), true));
        assert_eq!(c.kind, kind, "{reason}");
        assert_eq!(c.source, CauseSource::KubernetesApi);
        assert_eq!(c.detail.as_deref(), Some(message));
    }
}

#[test]
fn the_kubelets_own_terminations_by_status_reason() {
    // Node-pressure eviction: no deletion, the kubelet's status and condition.
    let mut status = disrupted(
        "TerminationByKubelet",
        "The node was low on resource: memory.",
    );
    status["phase"] = json!("Failed");
    status["reason"] = json!("Evicted");
    status["message"] =
        json!("The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi.");
    let c = cause(&pod(status.clone(), false));
    assert_eq!(c.kind, CauseKind::NodePressureEviction);
    assert!(c.detail.unwrap().contains("Threshold quantity"));
    // The same without the condition (a kubelet before 1.26).
    status["conditions"] = json!([]);
    assert_eq!(
        cause(&pod(status, false)).kind,
        CauseKind::NodePressureEviction
    );
    // Graceful node shutdown.
    let mut status = disrupted(
        "TerminationByKubelet",
        "Pod was terminated in response to imminent node shutdown.",
    );
    status["reason"] = json!("Terminated");
    status["message"] = json!("Pod was terminated in response to imminent node shutdown.");
    assert_eq!(cause(&pod(status, false)).kind, CauseKind::NodeShutdown);
    // activeDeadlineSeconds.
    let status = json!({"phase": "Failed", "reason": "DeadlineExceeded",
                        "message": "Pod was active on the node longer than the specified deadline"});
    assert_eq!(cause(&pod(status, false)).kind, CauseKind::DeadlineExceeded);
}

#[test]
fn a_plain_deletion_names_the_owner() {
    let c = cause(&pod(json!({"phase": "Running"}), true));
    assert_eq!(c.kind, CauseKind::Deleted);
    assert_eq!(
        c.detail.as_deref(),
        Some("deleted through the API; owned by ReplicaSet web-7d9")
    );
    assert_eq!(
        c.words(),
        "Deleted through the API (deleted through the API; owned by ReplicaSet web-7d9)"
    );
}

#[test]
fn a_restart_without_deletion_is_what_the_kubelets_killing_event_says() {
    let p = pod(json!({"phase": "Running"}), false);
    let t = stopped_by("containerd-shim");
    assert!(Cause::needs_kubelet_word(&t, Some(&p)));
    let said = |message: &str| {
        Cause::of(
            &t,
            Some(&p),
            Some(&KubeletKill {
                message: message.into(),
            }),
        )
    };
    let liveness = said("Container app failed liveness probe, will be restarted");
    assert_eq!(liveness.kind, CauseKind::LivenessProbe);
    // The probe's own grace (3 s), not the pod's 30.
    assert_eq!(liveness.grace_override(Some(&p), Some("app")), Some(3.0));
    let startup = said("Container app failed startup probe, will be restarted");
    assert_eq!(startup.kind, CauseKind::StartupProbe);
    assert_eq!(startup.grace_override(Some(&p), Some("app")), None);
    assert_eq!(
        said("Container app definition changed, will be restarted").kind,
        CauseKind::Restart
    );
    // The kubelet said nothing (crictl stop, an Events lookup that failed): the runtime.
    let c = Cause::of(&t, Some(&p), None);
    assert_eq!(
        (c.kind, c.source),
        (CauseKind::Runtime, CauseSource::Runtime)
    );
    // A deleted pod needs no lookup.
    assert!(!Cause::needs_kubelet_word(&t, Some(&pod(json!({}), true))));
    assert!(!Cause::needs_kubelet_word(&t, None));
}

#[test]
fn without_an_api_the_node_still_knows_oom_systemd_and_the_runtime() {
    let mut t = stopped_by("containerd-shim");
    let c = Cause::of(&t, None, None);
    assert_eq!(
        (c.kind, c.source),
        (CauseKind::Runtime, CauseSource::Runtime)
    );
    t.stop.as_mut().unwrap().sender = sender("systemd");
    let c = Cause::of(&t, None, None);
    assert_eq!(
        (c.kind, c.source),
        (CauseKind::NodeShutdown, CauseSource::Kernel)
    );
    // The OOM killer ended it: that, whatever the API says.
    let mut t = stopped_by("containerd-shim");
    t.stop = None;
    t.verdict = Verdict::OomKilled;
    t.oom = vec![OomVictim {
        pid: 10,
        comm: "app".into(),
        main: true,
        ended_container: true,
    }];
    let c = Cause::of(&t, Some(&pod(json!({}), true)), None);
    assert_eq!((c.kind, c.source), (CauseKind::Oom, CauseSource::Kernel));
    assert_eq!(
        c.detail.as_deref(),
        Some("the OOM killer took app (pid 10)")
    );
    // Nothing seen at all (events lost): unknown.
    let mut t = stopped_by("x");
    t.stop = None;
    t.kill = None;
    assert_eq!(Cause::of(&t, None, None).kind, CauseKind::Unknown);
    t.kill = Some(Kill {
        at: 0,
        sender: sender("runc"),
    });
    assert_eq!(Cause::of(&t, None, None).kind, CauseKind::Runtime);
}

#[test]
fn every_kind_has_its_name_and_words() {
    let mut names: Vec<&str> = CauseKind::ALL.iter().map(|k| k.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CauseKind::ALL.len());
    for kind in CauseKind::ALL {
        let c = Cause {
            kind,
            detail: None,
            source: CauseSource::Kernel,
        };
        assert!(!c.words().is_empty());
    }
}
