//! Why each container was stopped, through the real containerd and the Kubernetes API double:
//! each cause written the way the API server, the scheduler and the kubelet write it (the
//! DisruptionTarget condition, `status.reason`, the kubelet's `Killing` Event), the record's
//! `cause`, the grace of a probe's kill, the metrics' label, the Event's words, and what the
//! daemon asks of the API per stop.
use std::path::Path;

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, http_get, record_where},
    kube_api::{deleted, pod_json, with_container, ApiServer},
    GRACEFUL_SCRIPT,
};
use serde_json::{json, Value};

const NODE: &str = "node-causes";
const SHELL: &str = "sleep 1000; true";

fn disrupted(mut pod: Value, reason: &str, message: &str) -> Value {
    pod["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
        "reason": reason, "message": message, "lastTransitionTime": "2026-11-30T10:00:00Z"}]);
    pod
}

/// What the kubelet writes when it ends the pod itself (eviction, deadline): phase Failed.
fn failed(mut pod: Value, reason: &str, message: &str) -> Value {
    pod["status"]["phase"] = json!("Failed");
    pod["status"]["reason"] = json!(reason);
    pod["status"]["message"] = json!(message);
    pod
}

/// Until the daemon's log says it has the pod's facts with `needle` in them.
fn facts_seen(log: &Path, uid: &str, needle: &str) {
    eventually(&format!("the pod facts of {uid} with {needle}"), || {
        let text = std::fs::read_to_string(log).ok()?;
        text.lines()
            .any(|l| l.contains("pod facts from the API") && l.contains(uid) && l.contains(needle))
            .then_some(())
    });
}

struct Case {
    pod: PodSpec<'static>,
    script: &'static str,
}

fn case(name: &'static str, uid: &'static str, grace: u64, script: &'static str) -> Case {
    Case {
        pod: PodSpec {
            namespace: "causes",
            name,
            uid,
            grace_seconds: grace,
            shared_pids: false,
        },
        script,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_cause_as_the_api_and_the_kubelet_write_it() {
    let ctd = Containerd::start().await;
    let api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let log = ctd.dir.join("daemon.log");
    let daemon = api.daemon(&ctd, NODE, "daemon.log");
    let cases = [
        case("evicted", "c0a5e000-0000-4000-8000-000000000001", 2, SHELL),
        case(
            "preempted",
            "c0a5e000-0000-4000-8000-000000000002",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "pressure",
            "c0a5e000-0000-4000-8000-000000000003",
            2,
            GRACEFUL_SCRIPT,
        ),
        // The pod says 30 s; its liveness probe's own grace is 2 s.
        case(
            "liveness",
            "c0a5e000-0000-4000-8000-000000000004",
            30,
            SHELL,
        ),
        case(
            "deadline",
            "c0a5e000-0000-4000-8000-000000000005",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "crictl",
            "c0a5e000-0000-4000-8000-000000000006",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "tainted",
            "c0a5e000-0000-4000-8000-000000000007",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "shutdown",
            "c0a5e000-0000-4000-8000-000000000008",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "startup",
            "c0a5e000-0000-4000-8000-000000000009",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "changed",
            "c0a5e000-0000-4000-8000-00000000000a",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "systemd",
            "c0a5e000-0000-4000-8000-00000000000b",
            2,
            GRACEFUL_SCRIPT,
        ),
    ];
    let mut started = Vec::new();
    for c in &cases {
        let (sandbox, id) = cri.start_pod(&c.pod, "app", c.script, None, &ctd.dir).await;
        let mut pod = with_container(
            pod_json(&c.pod, NODE, ("StatefulSet", c.pod.name), None, None),
            &id,
        );
        pod["spec"]["containers"][0]["livenessProbe"] = json!({"exec": {"command": ["true"]},
            "periodSeconds": 10, "terminationGracePeriodSeconds": 2});
        api.put_pod(pod.clone());
        started.push((sandbox, id, pod));
    }
    for (c, (_, id, _)) in cases.iter().zip(&started) {
        c.pod.wait_for_programs(id, &["sh", "sleep"]);
    }
    let at = |name: &str| {
        let i = cases.iter().position(|c| c.pod.name == name).unwrap();
        (&cases[i].pod, &started[i].1, started[i].2.clone())
    };

    // Evicted through the eviction API (kubectl drain): the condition, then the deletion.
    let (pod, id, json) = at("evicted");
    api.put_pod(deleted(
        disrupted(json, "EvictionByEvictionAPI", "Eviction API: evicting"),
        2,
    ));
    facts_seen(&log, pod.uid, "EvictionByEvictionAPI");
    cri.stop_like_kubelet(id, 2, None).await;
    // Preempted by the scheduler.
    let (pod, id, json) = at("preempted");
    api.put_pod(deleted(
        disrupted(
            json,
            "PreemptionByScheduler",
            "default-scheduler: preempting to accommodate a higher priority pod",
        ),
        2,
    ));
    facts_seen(&log, pod.uid, "PreemptionByScheduler");
    cri.stop_like_kubelet(id, 2, None).await;
    // The kubelet's own eviction for node pressure: no deletion, its status.
    let (pod, id, json) = at("pressure");
    api.put_pod(failed(
        disrupted(
            json,
            "TerminationByKubelet",
            "The node was low on resource: memory.",
        ),
        "Evicted",
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 90Mi.",
    ));
    facts_seen(&log, pod.uid, "TerminationByKubelet");
    cri.stop_container(id, 2).await;
    // A failed liveness probe: the kubelet's Killing Event, then the stop with the probe's grace.
    let (_, id, json) = at("liveness");
    api.put_kubelet_event(
        &json,
        "app",
        "Unhealthy",
        "Liveness probe failed: command \"true\" timed out",
    );
    api.put_kubelet_event(
        &json,
        "app",
        "Killing",
        "Container app failed liveness probe, will be restarted",
    );
    cri.stop_container(id, 2).await;
    // activeDeadlineSeconds.
    let (pod, id, json) = at("deadline");
    api.put_pod(failed(
        json,
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    ));
    facts_seen(&log, pod.uid, "DeadlineExceeded");
    cri.stop_container(id, 2).await;
    // Stopped through the runtime with nothing from the API (crictl stop).
    let (_, id, _) = at("crictl");
    cri.stop_container(id, 2).await;
    // A NoExecute taint's eviction.
    let (pod, id, json) = at("tainted");
    api.put_pod(deleted(
        disrupted(
            json,
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
        ),
        2,
    ));
    facts_seen(&log, pod.uid, "DeletionByTaintManager");
    cri.stop_like_kubelet(id, 2, None).await;
    // The kubelet's graceful node shutdown.
    let (pod, id, json) = at("shutdown");
    api.put_pod(failed(
        disrupted(
            json,
            "TerminationByKubelet",
            "Pod was terminated in response to imminent node shutdown.",
        ),
        "Terminated",
        "Pod was terminated in response to imminent node shutdown.",
    ));
    facts_seen(&log, pod.uid, "Terminated");
    cri.stop_container(id, 2).await;
    // A failed startup probe, and a restart for a changed definition.
    for (name, message) in [
        (
            "startup",
            "Container app failed startup probe, will be restarted",
        ),
        (
            "changed",
            "Container app definition changed, will be restarted",
        ),
    ] {
        let (_, id, json) = at(name);
        api.put_kubelet_event(&json, "app", "Killing", message);
        cri.stop_container(id, 2).await;
    }
    // systemd itself stops the container's PID 1 (a node going down with no kubelet in the
    // way): a host process named systemd sends SIGTERM (the shell's own kill, not an exec).
    let (pod, id, _) = at("systemd");
    let dir = ctd.dir.join("host-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let systemd = dir.join("systemd");
    std::fs::write(&systemd, "#!/bin/sh\nkill -TERM \"$1\"\n").unwrap();
    std::fs::set_permissions(
        &systemd,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sent = std::process::Command::new(&systemd)
        .arg(pod.init_pid(id).to_string())
        .status()
        .unwrap();
    assert!(sent.success());

    let record = |name: &str| record_where(daemon.addr, "/container/id", at(name).1);
    let expect = [
        ("evicted", "evicted", Some("Eviction API: evicting")),
        (
            "preempted",
            "preempted",
            Some("default-scheduler: preempting to accommodate a higher priority pod"),
        ),
        (
            "pressure",
            "node_pressure_eviction",
            Some(
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 90Mi.",
            ),
        ),
        (
            "liveness",
            "liveness_probe",
            Some("Container app failed liveness probe, will be restarted"),
        ),
        (
            "deadline",
            "deadline_exceeded",
            Some("Pod was active on the node longer than the specified deadline"),
        ),
        ("crictl", "runtime", None),
        (
            "tainted",
            "taint_eviction",
            Some("Taint manager: deleting due to NoExecute taint"),
        ),
        (
            "shutdown",
            "node_shutdown",
            Some("Pod was terminated in response to imminent node shutdown."),
        ),
        (
            "startup",
            "startup_probe",
            Some("Container app failed startup probe, will be restarted"),
        ),
        (
            "changed",
            "restart",
            Some("Container app definition changed, will be restarted"),
        ),
        (
            "systemd",
            "node_shutdown",
            Some("systemd stopped it (a node shutdown, or its unit stopped)"),
        ),
    ];
    for (name, kind, detail) in expect {
        let r = record(name);
        assert_eq!(r["cause"]["kind"], kind, "{name}: {r:#}");
        let source = match name {
            "crictl" => "runtime",
            "systemd" => "kernel",
            _ => "kubernetes_api",
        };
        assert_eq!(r["cause"]["source"], source, "{name}: {r:#}");
        assert_eq!(r["cause"]["detail"].as_str(), detail, "{name}: {r:#}");
    }
    // A pod of one container: its pod record agrees with its container's.
    for name in ["evicted", "crictl"] {
        let r = record(name);
        let p = record_where(daemon.addr, "/pod/uid", at(name).0.uid);
        assert_eq!(p["kind"], "pod_termination", "{p:#}");
        assert_eq!(p["verdict"], r["verdict"], "{p:#}\n{r:#}");
        assert_eq!(p["cause"], r["cause"], "{p:#}");
        assert_eq!(p["containers"].as_array().map(Vec::len), Some(1), "{p:#}");
        assert_eq!(p["containers"][0]["outcome"], r["outcome"], "{p:#}");
    }
    // The liveness kill had the probe's 2 s, not the pod's 30.
    let r = record("liveness");
    assert_eq!(r["grace_period_seconds"], 2.0, "{r:#}");
    assert_eq!(r["outcome"], "killed_after_grace", "{r:#}");
    assert_eq!(r["exit"]["meaning"], "terminated by SIGKILL (137)", "{r:#}");
    // A clean exit on SIGTERM says what its code means.
    let r = record("crictl");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    assert_eq!(r["exit"]["meaning"], "exited 0", "{r:#}");

    // The label, on the workload's counter.
    let (_, m) = http_get(daemon.addr, "/metrics").unwrap();
    for (name, kind, _) in expect {
        let series = m.lines().find(|l| {
            l.starts_with("graceful_workload_terminations_total{")
                && l.contains(&format!(r#"workload="{name}""#))
        });
        assert!(
            series.is_some_and(|l| l.contains(&format!(r#"cause="{kind}"}} 1"#))),
            "{name}: {series:?}"
        );
    }
    // The Event begins with the cause in words.
    let uid = at("evicted").0.uid;
    let event = eventually("SIGKILLAfterGrace on the evicted pod", || {
        api.events()
            .into_iter()
            .find(|e| e["regarding"]["uid"] == uid && e["reason"] == "SIGKILLAfterGrace")
    });
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("Evicted through the eviction API (kubectl drain, or a controller); ")
            && note.ends_with("Exit: terminated by SIGKILL (137)."),
        "{note}"
    );

    // What it asked of the API per stop: one list of that one pod's Events, only for the
    // stops the pod object did not explain; no cluster-wide list or watch.
    let asked: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET") && r.contains("events"))
        .collect();
    let unexplained = ["liveness", "crictl", "startup", "changed", "systemd"];
    assert_eq!(asked.len(), unexplained.len(), "{asked:#?}");
    for uid in unexplained.map(|name| at(name).0.uid) {
        assert!(
            asked
                .iter()
                .any(|r| r.starts_with("GET /api/v1/namespaces/causes/events?")
                    && r.contains(&format!("fieldSelector=involvedObject.uid%3D{uid}"))),
            "{asked:#?}"
        );
    }
    let watches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("watch=true") && !r.starts_with("GET /api/v1/pods?"))
        .collect();
    assert!(watches.is_empty(), "{watches:#?}");
    for (sandbox, _, _) in &started {
        cri.remove_pod(sandbox).await;
    }
    assert!(daemon.stop().success());
}

/// The API turns slow (answers after 10 s) while the pods are known: two stops that need the
/// kubelet's word still come out, each after the lookup's 3 s bound, with what the node knows
/// (`runtime`), and the log says so once for the outage, not once per stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_api_delays_no_record_past_its_bound_and_is_said_once() {
    let ctd = Containerd::start().await;
    let api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let log = ctd.dir.join("daemon.log");
    let daemon = api.daemon(&ctd, NODE, "daemon.log");
    let cases = [
        case(
            "slow-a",
            "c0a5e000-0000-4000-8000-000000000011",
            2,
            GRACEFUL_SCRIPT,
        ),
        case(
            "slow-b",
            "c0a5e000-0000-4000-8000-000000000012",
            2,
            GRACEFUL_SCRIPT,
        ),
    ];
    let mut started = Vec::new();
    for c in &cases {
        let (sandbox, id) = cri.start_pod(&c.pod, "app", c.script, None, &ctd.dir).await;
        api.put_pod(with_container(
            pod_json(&c.pod, NODE, ("StatefulSet", c.pod.name), None, None),
            &id,
        ));
        facts_seen(&log, c.pod.uid, "deleted\":false");
        c.pod.wait_for_programs(&id, &["sh", "sleep"]);
        started.push((sandbox, id));
    }
    api.set_mode(graceful_tests::kube_api::Mode::Slow(
        std::time::Duration::from_secs(10),
    ));
    for (_, id) in &started {
        cri.stop_container(id, 2).await;
    }
    for (_, id) in &started {
        let r = record_where(daemon.addr, "/container/id", id);
        assert_eq!(r["cause"]["kind"], "runtime", "{r:#}");
        assert_eq!(r["verdict"], "graceful", "{r:#}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("listing the pod's Events"))
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    for (sandbox, _) in &started {
        cri.remove_pod(sandbox).await;
    }
    assert!(daemon.stop().success());
}
