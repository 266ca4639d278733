//! A real Prometheus (Debian's) scrapes the daemon while pods go through the real containerd,
//! with deploy/'s alert rules loaded and the scrape configured as the Prometheus operator
//! configures it for deploy/'s ServiceMonitor: the operator's target labels (the daemon's own
//! namespace, pod, container, service, endpoint) and the monitor's honorLabels. A rollout
//! SIGKILLs three pods of a Deployment: the outcome, verdict and top-workloads panels show 3,
//! GracefulSIGKILLAfterGrace and GracefulStopSignalIgnored name the app's namespace and
//! workload, nothing fires for the graceful pod, and every query and variable of the Grafana
//! dashboard returns data.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, free_loopback, http_get},
    kube_api::ApiServer,
    manifests::{dashboard, filled, of_kind, panel_query, rendered},
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

/// The scrape job the Prometheus operator writes for `monitor` (a ServiceMonitor): the target
/// labels it attaches from Kubernetes discovery for the daemon's own pod, the `node` of the
/// monitor's relabeling, the job from its jobLabel, and its honorLabels.
fn operator_scrape_job(monitor: &Value, target: SocketAddr) -> String {
    let endpoint = &monitor["spec"]["endpoints"][0];
    let honor = endpoint["honorLabels"].as_bool().unwrap_or(false);
    let relabeled_node = endpoint["relabelings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["targetLabel"] == "node");
    assert!(relabeled_node, "the ServiceMonitor sets node: {monitor:#}");
    let job = monitor["metadata"]["labels"][monitor["spec"]["jobLabel"].as_str().unwrap()]
        .as_str()
        .unwrap()
        .to_string();
    let port = endpoint["port"].as_str().unwrap();
    [
        "  - job_name: serviceMonitor/graceful/graceful/0".to_string(),
        format!("    honor_labels: {honor}"),
        "    static_configs:".to_string(),
        format!("      - targets: ['{target}']"),
        "        labels:".to_string(),
        format!("          job: {job}"),
        format!("          node: {NODE}"),
        "          namespace: graceful".to_string(),
        "          pod: graceful-x7k2p".to_string(),
        "          container: graceful".to_string(),
        "          service: graceful".to_string(),
        format!("          endpoint: {port}"),
        String::new(),
    ]
    .join("\n")
}

fn start_prometheus(dir: &std::path::Path, job: &str, rules: &Value) -> Prometheus {
    std::fs::write(
        dir.join("graceful.rules.yaml"),
        serde_yaml::to_string(rules).unwrap(),
    )
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n{job}",
        dir.join("graceful.rules.yaml").display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr = free_loopback();
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
    let dashboard = dashboard();

    let ctd = Containerd::start().await;
    let api = ApiServer::start().await;
    let mut cri = ctd.client().await;
    let daemon = api.daemon(&ctd, NODE, "daemon.log");
    let job = operator_scrape_job(of_kind(&docs, "ServiceMonitor"), daemon.addr);
    let prom = start_prometheus(&ctd.dir, &job, rules);
    stage("daemon and Prometheus up");

    let web = |n: u8| {
        (
            PodSpec {
                namespace: "prom",
                name: [
                    "web-5d8f7c9b4-k2x9z",
                    "web-5d8f7c9b4-p4m7q",
                    "web-5d8f7c9b4-z8w3n",
                ][usize::from(n)],
                uid: [
                    "3c2b1a00-0000-4000-8000-000000000011",
                    "3c2b1a00-0000-4000-8000-000000000012",
                    "3c2b1a00-0000-4000-8000-000000000013",
                ][usize::from(n)],
                grace_seconds: 1,
                shared_pids: false,
            },
            ("ReplicaSet", "web-5d8f7c9b4"),
            "sleep 1000; true",
        )
    };
    let pods = [
        web(0),
        web(1),
        web(2),
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
    // Our namespace, not the daemon's (`graceful`): honorLabels kept it from becoming
    // exported_namespace.
    eventually("the audit of the five app containers, scraped", || {
        let r = query(
            &prom,
            r#"graceful_pid1_ignores_stop_signal{namespace="prom",container="app"}"#,
        )?;
        (r.len() == 5).then_some(())
    });
    let risk = query(&prom, r#"graceful_pid1_ignores_stop_signal{pod="risky-0"}"#).unwrap();
    assert_eq!(risk[0]["metric"]["workload"], "risky", "{risk:?}");
    assert_eq!(
        risk[0]["metric"]["workload_type"], "statefulset",
        "{risk:?}"
    );
    let renamed = query(&prom, r#"{exported_namespace!=""}"#).unwrap();
    assert!(
        renamed.is_empty(),
        "labels renamed by the scrape: {renamed:?}"
    );
    stage("five pods audited and scraped");

    // The rollout: web's three pods are SIGKILLed after their grace, calm exits; risky keeps
    // running (the PID 1 risk table).
    for (_, id) in started.iter().take(4) {
        cri.stop_container(id, 1).await;
    }
    let firing = eventually("GracefulSIGKILLAfterGrace firing for web", || {
        alerts(&prom).into_iter().find(|a| {
            a["labels"]["alertname"] == "GracefulSIGKILLAfterGrace"
                && a["labels"]["workload"] == "web"
                && a["state"] == "firing"
        })
    });
    stage("GracefulSIGKILLAfterGrace firing");
    assert_eq!(firing["labels"]["namespace"], "prom", "{firing:#}");
    assert_eq!(
        firing["labels"]["workload_type"], "deployment",
        "{firing:#}"
    );
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
    assert_eq!(ignored["labels"]["namespace"], "prom", "{ignored:#}");
    assert_eq!(ignored["labels"]["workload"], "web", "{ignored:#}");
    // The graceful pod's container fires nothing, and the daemon is neither down nor losing
    // events. (Its pod's sandbox may be pending in GracefulPID1DropsStopSignal: this test's
    // pause image is `sleep`, and a busy host can delay the runtime's word that it is a sandbox.)
    for a in alerts(&prom) {
        assert_ne!(a["labels"]["workload"], "calm", "{a:#}");
        let calm_app = a["labels"]["pod"] == "calm-0" && a["labels"]["container"] == "app";
        assert!(
            !calm_app && (a["labels"]["pod"] != "calm-0" || a["state"] != "firing"),
            "{a:#}"
        );
        assert!(
            !matches!(
                a["labels"]["alertname"].as_str(),
                Some("GracefulDown" | "GracefulLosingEvents" | "GracefulProcessUnkillable")
            ),
            "{a:#}"
        );
    }

    stage("alerts checked");
    // The rollout's three SIGKILLs on the outcome, verdict and top-workloads panels.
    let panels = dashboard["panels"].as_array().unwrap();
    let fill = |expr: &str| filled(expr, NODE, "10m", "1h");
    let panel = |title: &str| panel_query(&dashboard, title, NODE, "10m", "1h");
    let three = |title: &str, label: &str, value: &str| {
        let expr = panel(title);
        eventually(&format!("3 {value} on {title}: {expr}"), || {
            let r = query(&prom, &expr)?;
            let v: f64 = r.iter().find(|s| s["metric"][label] == value)?["value"][1]
                .as_str()?
                .parse()
                .ok()?;
            // increase() extrapolates a little past the last sample.
            ((2.9..3.5).contains(&v)).then_some(())
        });
    };
    three("Terminations by outcome", "outcome", "killed_after_grace");
    three(
        "Terminations by verdict",
        "verdict",
        "swallowed_by_shell_pid1",
    );
    three(
        "Top workloads SIGKILLed after their grace period",
        "workload",
        "web",
    );
    // Every panel's query, its variables filled in, succeeds; each returns data unless it is
    // empty on a healthy node or reads kube-state-metrics, which does not run here.
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let quiet = panel["description"]
            .as_str()
            .is_some_and(|d| d.contains("Empty when healthy"));
        for target in panel["targets"].as_array().unwrap() {
            let filled = fill(target["expr"].as_str().unwrap());
            if quiet || filled.contains("kube_") {
                assert!(query(&prom, &filled).is_some(), "{filled}");
                continue;
            }
            eventually(
                &format!("data for the panel {:?}: {filled}", panel["title"]),
                || query(&prom, &filled).filter(|r| !r.is_empty()),
            );
        }
    }
    // The variables: label_values(selector, label) as Grafana asks it (the series API).
    for (variable, want) in [("node", NODE), ("namespace", "prom"), ("workload", "web")] {
        let definition = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == variable)
            .unwrap()["definition"]
            .as_str()
            .unwrap()
            .to_string();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(&format!(", {variable})")))
            .unwrap_or_else(|| panic!("{definition}"));
        let (_, body) = http_get(
            prom.addr,
            &format!("/api/v1/series?match[]={}", encode(&fill(inner))),
        )
        .unwrap();
        let series: Value = serde_json::from_str(&body).unwrap();
        assert!(
            series["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s[variable] == want),
            "{definition}: {body}"
        );
    }

    for (sandbox, _) in &started {
        cri.remove_pod(sandbox).await;
    }
    drop(prom);
    assert!(daemon.stop().success());
}
