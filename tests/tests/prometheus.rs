//! A real Prometheus (Debian's) scrapes the daemon while pods go through the real containerd,
//! with deploy/'s alert rules loaded: GracefulSIGKILLAfterGrace fires for the workload whose
//! container is SIGKILLed after its grace, nothing fires for the graceful one, and every query
//! of the Grafana dashboard, its variables filled in, returns data.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, http_get},
    kube_api::ApiServer,
    manifests::{of_kind, rendered, root},
};
use serde_json::{json, Value};

const NODE: &str = "node-prom";

struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(dir: &std::path::Path, target: SocketAddr, rules: &Value) -> Prometheus {
    std::fs::write(
        dir.join("graceful.rules.yaml"),
        serde_yaml::to_string(rules).unwrap(),
    )
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: graceful\n    static_configs:\n      - targets: ['{target}']\n        labels:\n          node: {NODE}\n",
        dir.join("graceful.rules.yaml").display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian's package, installed by `cargo xtask setup`)");
    let p = Prometheus { child, addr };
    eventually("Prometheus ready", || {
        http_get(addr, "/-/ready").filter(|(s, _)| *s == 200)
    });
    p
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(prom: &Prometheus, q: &str) -> Option<Vec<Value>> {
    let (status, body) = http_get(prom.addr, &format!("/api/v1/query?query={}", encode(q)))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    assert_eq!(status, 200, "{q}: {body}");
    assert_eq!(v["status"], "success", "{q}: {body}");
    v["data"]["result"].as_array().cloned()
}

fn alerts(prom: &Prometheus) -> Vec<Value> {
    http_get(prom.addr, "/api/v1/alerts")
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
}

fn pod_json(pod: &PodSpec<'_>, owner: (&str, &str), id: &str) -> Value {
    json!({
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1, "uid": "1", "controller": true}]},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": pod.grace_seconds, "containers": [{"name": "app", "image": "x"}]},
        "status": {"containerStatuses": [{"name": "app", "containerID": format!("containerd://{id}"), "image": "x", "imageID": "", "ready": true, "restartCount": 0}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_fires_the_alerts_and_fills_every_panel() {
    let t0 = std::time::Instant::now();
    let stage = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let (_, docs) = rendered();
    let rules = &of_kind(&docs, "PrometheusRule")["spec"];
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/graceful.json")).unwrap(),
    )
    .unwrap();

    let ctd = Containerd::start().await;
    let api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let daemon = api.daemon(&ctd, NODE, "daemon.log");
    let prom = start_prometheus(&ctd.dir, daemon.addr, rules);
    stage("daemon and Prometheus up");

    let pods = [
        (
            PodSpec {
                namespace: "prom",
                name: "web-5d8f7c9b4-k2x9z",
                uid: "3c2b1a00-0000-4000-8000-000000000001",
                grace_seconds: 1,
                shared_pids: false,
            },
            ("ReplicaSet", "web-5d8f7c9b4"),
            "sleep 1000; true",
        ),
        (
            PodSpec {
                namespace: "prom",
                name: "calm-0",
                uid: "3c2b1a00-0000-4000-8000-000000000002",
                grace_seconds: 1,
                shared_pids: false,
            },
            ("StatefulSet", "calm"),
            graceful_tests::GRACEFUL_SCRIPT,
        ),
        (
            PodSpec {
                namespace: "prom",
                name: "risky-0",
                uid: "3c2b1a00-0000-4000-8000-000000000003",
                grace_seconds: 1,
                shared_pids: false,
            },
            ("StatefulSet", "risky"),
            "sleep 1000; true",
        ),
    ];
    let mut started = Vec::new();
    for (spec, owner, script) in &pods {
        let (sandbox, id) = cri.start_pod(spec, "app", script, None, &ctd.dir).await;
        let mut pod = pod_json(spec, *owner, &id);
        if spec.name.starts_with("web") {
            pod["metadata"]["labels"] = json!({"pod-template-hash": "5d8f7c9b4"});
        }
        api.put_pod(pod);
        started.push((sandbox, id));
    }
    // Each app container by its name (the pod's sandbox may show too, by its short id, while
    // the runtime has not said what it is).
    eventually("the audit of the three app containers, scraped", || {
        let r = query(
            &prom,
            r#"graceful_pid1_ignores_stop_signal{namespace="prom",container="app"}"#,
        )?;
        (r.len() == 3).then_some(())
    });
    stage("three pods audited and scraped");

    // web is SIGKILLed after its grace, calm exits; risky keeps running (the PID 1 risk table).
    cri.stop_container(&started[0].1, 1).await;
    cri.stop_container(&started[1].1, 1).await;
    let firing = eventually(
        "GracefulSIGKILLAfterGrace firing for Deployment/web",
        || {
            alerts(&prom).into_iter().find(|a| {
                a["labels"]["alertname"] == "GracefulSIGKILLAfterGrace"
                    && a["labels"]["workload"] == "Deployment/web"
                    && a["state"] == "firing"
            })
        },
    );
    stage("GracefulSIGKILLAfterGrace firing");
    assert_eq!(firing["labels"]["namespace"], "prom", "{firing:#}");
    assert!(
        firing["annotations"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("exec"),
        "{firing:#}"
    );
    let ignored = eventually("GracefulStopSignalIgnored firing for web", || {
        alerts(&prom).into_iter().find(|a| {
            a["labels"]["alertname"] == "GracefulStopSignalIgnored" && a["state"] == "firing"
        })
    });
    assert_eq!(
        ignored["labels"]["pod"], "web-5d8f7c9b4-k2x9z",
        "{ignored:#}"
    );
    // The graceful pod's container fires nothing, and the daemon is neither down nor losing
    // events. (Its pod's sandbox may be pending in GracefulPID1DropsStopSignal: this test's
    // pause image is `sleep`, and a busy host can delay the runtime's word that it is a sandbox.)
    for a in alerts(&prom) {
        assert_ne!(a["labels"]["workload"], "StatefulSet/calm", "{a:#}");
        let calm_app = a["labels"]["pod"] == "calm-0" && a["labels"]["container"] == "app";
        assert!(
            !calm_app && (a["labels"]["pod"] != "calm-0" || a["state"] != "firing"),
            "{a:#}"
        );
        assert!(
            !matches!(
                a["labels"]["alertname"].as_str(),
                Some("GracefulDown" | "GracefulLosingEvents")
            ),
            "{a:#}"
        );
    }

    stage("alerts checked");
    // Every panel's query, its variables filled in, returns data from this Prometheus.
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let filled = expr
                .replace("$namespace", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h");
            eventually(
                &format!("data for the panel {:?}: {filled}", panel["title"]),
                || query(&prom, &filled).filter(|r| !r.is_empty()),
            );
        }
    }
    let variable = &dashboard["templating"]["list"][1]["definition"];
    let names = query(&prom, "group by (namespace) (graceful_terminations_total)").unwrap();
    assert!(
        names.iter().any(|n| n["metric"]["namespace"] == "prom"),
        "{variable}: {names:?}"
    );

    for (sandbox, _) in &started {
        cri.remove_pod(sandbox).await;
    }
    drop(prom);
    assert!(daemon.stop().success());
}
