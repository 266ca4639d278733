//! The pod as a whole, through the real containerd: multi-container pods (one sandbox, several
//! containers, the API double describing them) stopped as the kubelet stops them, and the pod
//! record that says in what order their containers went.
use graceful_tests::{
    cri::{Containerd, Cri, PodSpec},
    daemon::{eventually, http_get, record_where},
    kube_api::ApiServer,
    GRACEFUL_SCRIPT,
};
use serde_json::{json, Value};

const NODE: &str = "node-pods";
/// An app that drains for 3 s on SIGTERM, then exits 0.
const DRAINS: &str = "trap 'kill -TERM $!; sleep 3; wait $!; exit 0' TERM; sleep 1000 & wait";
const GRACE: i64 = 6;

/// The pod as the API serves it: `app` and `sidecar`, the sidecar a native one (an init
/// container with restartPolicy Always) or a classic one, with their container ids.
fn pod_json(pod: &PodSpec<'_>, sidecar: &str, native: bool, ids: (&str, &str)) -> Value {
    let status = |name: &str, id: &str| {
        json!({"name": name, "containerID": format!("containerd://{id}"), "image": "graceful.test/busybox:1",
            "imageID": "", "ready": true, "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": "2026-11-30T10:00:01Z"}}})
    };
    let app = json!({"name": "app", "image": "graceful.test/busybox:1"});
    let mut side = json!({"name": sidecar, "image": "graceful.test/busybox:1"});
    let (containers, init, statuses, init_statuses) = if native {
        side["restartPolicy"] = json!("Always");
        (
            json!([app]),
            json!([side]),
            json!([status("app", ids.0)]),
            json!([status(sidecar, ids.1)]),
        )
    } else {
        (
            json!([app, side]),
            json!([]),
            json!([status("app", ids.0), status(sidecar, ids.1)]),
            json!([]),
        )
    };
    json!({
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": pod.name,
                "uid": "0a1b2c3d-0000-4000-8000-0000000000f1", "controller": true}]},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": GRACE, "containers": containers,
            "initContainers": init},
        "status": {"phase": "Running", "containerStatuses": statuses, "initContainerStatuses": init_statuses},
    })
}

/// A running pod of `app` (draining 3 s) and a sidecar that exits at once on SIGTERM.
async fn start(
    cri: &mut Cri,
    api: &ApiServer,
    ctd: &Containerd,
    pod: &PodSpec<'_>,
    sidecar: &str,
    native: bool,
) -> (String, String, String) {
    let (sandbox, app) = cri.start_pod(pod, "app", DRAINS, None, &ctd.dir).await;
    let side = cri
        .start_container(&sandbox, pod, sidecar, 0, GRACEFUL_SCRIPT, None, &ctd.dir)
        .await;
    for id in [&app, &side] {
        pod.wait_for_programs(id, &["sh", "sleep"]);
    }
    api.put_pod(pod_json(pod, sidecar, native, (&app, &side)));
    (sandbox, app, side)
}

fn spec(name: &'static str, uid: &'static str) -> PodSpec<'static> {
    PodSpec {
        namespace: "pods",
        name,
        uid,
        grace_seconds: GRACE as u64,
        shared_pids: false,
    }
}

/// The pod record's containers as (name, role, verdict), in the order they were stopped.
fn order(r: &Value) -> Vec<(String, String, String)> {
    r["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("name"), s("role"), s("verdict"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_stopped_first_in_order_or_never() {
    let ctd = Containerd::start().await;
    let api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let mut cri2 = ctd.client().await;
    let daemon = api.daemon(&ctd, NODE, "daemon.log");
    let classic = spec("classic", "b0d5e000-0000-4000-8000-000000000001");
    let native = spec("native", "b0d5e000-0000-4000-8000-000000000002");
    let forgotten = spec("forgotten", "b0d5e000-0000-4000-8000-000000000003");
    let c = start(&mut cri, &api, &ctd, &classic, "istio-proxy", false).await;
    let n = start(&mut cri, &api, &ctd, &native, "proxy", true).await;
    let f = start(&mut cri, &api, &ctd, &forgotten, "proxy", true).await;
    // The daemon knows the pods' containers before they stop (the runtime names them).
    eventually("the pods' containers named", || {
        let (_, m) = http_get(daemon.addr, "/metrics")?;
        ["classic", "native", "forgotten"]
            .iter()
            .all(|p| m.contains(&format!(r#"pod="{p}",container="app"}} "#)))
            .then_some(())
    });

    // Classic sidecar: the kubelet stops every container at once.
    tokio::join!(
        cri.stop_container(&c.1, GRACE),
        cri2.stop_container(&c.2, GRACE)
    );
    // Native sidecar: the app first, then the sidecar once the app is gone.
    cri.stop_container(&n.1, GRACE).await;
    cri.stop_container(&n.2, GRACE).await;
    // A native sidecar the kubelet never signals (kubernetes#125880): SIGKILLed at the grace's end.
    cri.stop_container(&f.1, GRACE).await;
    cri.stop_container(&f.2, 0).await;

    let pod_record = |uid: &str| record_where(daemon.addr, "/pod/uid", uid);
    let r = pod_record(classic.uid);
    assert_eq!(r["kind"], "pod_termination", "{r:#}");
    assert_eq!(r["verdict"], "sidecar_stopped_first", "{r:#}");
    // Stopped together: in either order, each with its role and its own verdict.
    let mut both = order(&r);
    both.sort();
    assert_eq!(
        both,
        [
            ("app".into(), "app".into(), "graceful".into()),
            ("istio-proxy".into(), "sidecar".into(), "graceful".into())
        ],
        "{r:#}"
    );
    let why = r["explanation"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("istio-proxy (sidecar) was gone ")
            && why.contains("before app finished shutting down"),
        "{why}"
    );
    let ended = |name: &str| {
        r["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["ended_at"].as_f64())
            .unwrap()
    };
    let (proxy_end, app_end) = (ended("istio-proxy"), ended("app"));
    assert!(app_end - proxy_end > 2.5, "the app drained 3 s: {r:#}");

    let r = pod_record(native.uid);
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    let o = order(&r);
    assert_eq!(
        (o[0].0.as_str(), o[1].0.as_str()),
        ("app", "proxy"),
        "{r:#}"
    );
    assert_eq!(o[1].1, "sidecar", "native: {r:#}");

    let r = pod_record(forgotten.uid);
    assert_eq!(r["verdict"], "sidecar_not_stopped", "{r:#}");
    assert!(r["containers"][1]["stop_at"].is_null(), "{r:#}");

    // The list filters by kind; the metric and the Event.
    let (_, pods) = http_get(daemon.addr, "/terminations?kind=pod_termination").unwrap();
    let pods: Vec<Value> = serde_json::from_str(&pods).unwrap();
    assert_eq!(pods.len(), 3, "{pods:#?}");
    assert!(pods.iter().all(|p| p["kind"] == "pod_termination"));
    let (status, _) = http_get(daemon.addr, "/terminations?kind=nope").unwrap();
    assert_eq!(status, 400);
    let (_, m) = http_get(daemon.addr, "/metrics").unwrap();
    for (workload, verdict) in [
        ("classic", "sidecar_stopped_first"),
        ("native", "graceful"),
        ("forgotten", "sidecar_not_stopped"),
    ] {
        let series = format!(
            r#"graceful_pod_terminations_total{{namespace="pods",workload_type="statefulset",workload="{workload}",verdict="{verdict}"}} 1"#
        );
        assert!(m.contains(&series), "{series} not in\n{m}");
    }
    let event = eventually("SidecarStoppedFirst on the classic pod", || {
        api.events()
            .into_iter()
            .find(|e| e["regarding"]["uid"] == classic.uid && e["reason"] == "SidecarStoppedFirst")
    });
    assert_eq!(
        event["regarding"]["fieldPath"], "spec.containers{istio-proxy}",
        "{event:#}"
    );
    for (sandbox, _, _) in [&c, &n, &f] {
        cri.remove_pod(sandbox).await;
    }
    assert!(daemon.stop().success());
}
