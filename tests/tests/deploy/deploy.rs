//! What deploy/ ships, checked with the real tools: `kubectl kustomize` renders it, every object
//! validates against the Kubernetes schemas (kubernetes-validate) and the Prometheus operator's
//! CRD schemas, every privilege the DaemonSet asks for is justified in the README, and the
//! alert rules pass `promtool check rules` and `promtool test rules`.
use std::{
    collections::BTreeSet,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use graceful_tests::manifests::{
    dashboard, of_kind, output, panel_query, rendered, rendered_at, root, tool, yaml_docs,
};
use serde_json::Value;

#[test]
fn the_kustomization_renders_and_validates_against_the_schemas() {
    let (yaml, docs) = rendered();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let want = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Namespace",
        "NetworkPolicy",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    assert_eq!(kinds, want.into_iter().collect(), "{yaml}");
    for d in docs.iter().filter(|d| {
        d["kind"] != "Namespace" && !d["kind"].as_str().unwrap_or("").starts_with("Cluster")
    }) {
        assert_eq!(d["metadata"]["namespace"], "graceful", "{d:#}");
    }

    // Kubernetes' own schemas, strict (no unknown fields), for the oldest version we support.
    let dir = tempdir("validate");
    std::fs::write(dir.join("rendered.yaml"), &yaml).unwrap();
    let said = output(
        Command::new(tool("venv/bin/kubernetes-validate"))
            .args(["--strict", "-k", "1.33.0"])
            .arg(dir.join("rendered.yaml")),
    );
    for kind in [
        "namespace",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "configmap",
        "service",
        "daemonset",
        "networkpolicy",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind}/")),
            "{kind}: {said}"
        );
    }
    assert!(
        !said.contains("ERROR") && !said.contains("failed"),
        "{said}"
    );

    // The CRDs' own schemas, for the ServiceMonitor and PrometheusRule, and the PodMonitor
    // that replaces the ServiceMonitor for a Prometheus that selects those.
    let mut crds: Vec<Value> = docs.clone();
    crds.extend(yaml_docs(
        &std::fs::read_to_string(root().join("deploy/podmonitor.yaml")).unwrap(),
    ));
    let said = validate_crds(&crds);
    for object in [
        "ServiceMonitor/graceful",
        "PrometheusRule/graceful",
        "PodMonitor/graceful",
    ] {
        assert!(
            said.contains(&format!("valid {object}")),
            "{object}: {said}"
        );
    }
    // It can fail: a scrape interval that is not a duration string.
    let mut broken = crds.clone();
    for d in broken.iter_mut().filter(|d| d["kind"] == "ServiceMonitor") {
        d["spec"]["endpoints"][0]["interval"] = serde_json::json!(30);
    }
    let (ok, said) = run_validate_crds(&broken);
    assert!(
        !ok && said.contains("invalid ServiceMonitor/graceful"),
        "{said}"
    );

    // The operator's selector label, set in one place, on monitors and rules.
    let release: Value =
        yaml_docs(&std::fs::read_to_string(root().join("deploy/prometheus-release.yaml")).unwrap())
            .remove(0);
    let wanted = &release["labels"]["release"];
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            &of_kind(&docs, kind)["metadata"]["labels"]["release"],
            wanted,
            "{kind}"
        );
    }
    // The dashboard, for kube-prometheus-stack's sidecar.
    let dashboard = of_kind(&docs, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dashboard["data"]["graceful.json"].as_str().unwrap())
        .expect("dashboard JSON");
    assert!(json["panels"].as_array().is_some_and(|p| p.len() >= 6));
}

fn run_validate_crds(docs: &[Value]) -> (bool, String) {
    let node_dir = tool("node");
    std::fs::copy(
        root().join("tests/validate_crds.mjs"),
        node_dir.join("validate_crds.mjs"),
    )
    .unwrap();
    let mut child = Command::new("node")
        .arg(node_dir.join("validate_crds.mjs"))
        .current_dir(&node_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (installed by `cargo xtask setup`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(docs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn validate_crds(docs: &[Value]) -> String {
    let (ok, text) = run_validate_crds(docs);
    assert!(ok, "{text}");
    text
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("graceful-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (kind, what) rows of the README's table of what the DaemonSet asks for.
fn justified() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("### What the DaemonSet asks for")
        .nth(1)
        .expect("the README's \"What the DaemonSet asks for\" section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let what = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((cells[0].to_string(), what.to_string()))
        })
        .collect()
}

/// Everything the rendered DaemonSet and RBAC ask for that the README does not justify.
fn unjustified(docs: &[Value], justified: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut asked: Vec<(String, String)> = Vec::new();
    let pod = &of_kind(docs, "DaemonSet")["spec"]["template"]["spec"];
    if pod["hostPID"] == true {
        asked.push(("host".into(), "hostPID".into()));
    }
    for key in ["hostNetwork", "hostIPC"] {
        if pod[key] == true {
            asked.push(("host".into(), key.into()));
        }
    }
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            asked.push(("security".into(), "privileged".into()));
        }
        if sc["readOnlyRootFilesystem"] != true {
            asked.push(("security".into(), "writable root filesystem".into()));
        }
        if sc["allowPrivilegeEscalation"] != false {
            asked.push(("security".into(), "allowPrivilegeEscalation".into()));
        }
        if sc["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
            asked.push(("security".into(), "capabilities not dropped".into()));
        }
        for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            asked.push(("capability".into(), cap.as_str().unwrap_or_default().into()));
        }
        if let Some(profile) = sc["seccompProfile"]["type"]
            .as_str()
            .filter(|t| *t != "RuntimeDefault")
        {
            asked.push(("seccomp".into(), profile.into()));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            if m["readOnly"] != true {
                asked.push((
                    "security".into(),
                    format!("writable mount {}", m["mountPath"]),
                ));
            }
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        match v["hostPath"]["path"].as_str() {
            Some(path) => asked.push(("host path".into(), path.into())),
            None => asked.push(("volume".into(), v["name"].to_string())),
        }
    }
    for rule in of_kind(docs, "ClusterRole")["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for group in rule["apiGroups"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    let group = group.as_str().unwrap_or_default();
                    let resource = resource.as_str().unwrap_or_default();
                    let name = if group.is_empty() {
                        resource.to_string()
                    } else {
                        format!("{group}/{resource}")
                    };
                    asked.push((
                        "RBAC".into(),
                        format!("{name} {}", verb.as_str().unwrap_or_default()),
                    ));
                }
            }
        }
    }
    asked
        .into_iter()
        .filter(|a| !justified.contains(a))
        .map(|(k, w)| format!("{k} {w}"))
        .collect()
}

#[test]
fn every_privilege_the_daemonset_asks_for_is_justified_in_the_readme() {
    let (_, docs) = rendered();
    let justified = justified();
    assert!(justified.len() >= 10, "{justified:?}");
    let missing = unjustified(&docs, &justified);
    assert!(
        missing.is_empty(),
        "not justified in the README: {missing:?}"
    );
    // And it fails on one more: SYS_ADMIN, a host path, a verb.
    let mut more = docs.clone();
    for d in more.iter_mut() {
        if d["kind"] == "DaemonSet" {
            let pod = &mut d["spec"]["template"]["spec"];
            pod["containers"][0]["securityContext"]["capabilities"]["add"]
                .as_array_mut()
                .unwrap()
                .push("SYS_ADMIN".into());
            pod["volumes"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "root", "hostPath": {"path": "/"}}));
        }
        if d["kind"] == "ClusterRole" {
            d["rules"][0]["verbs"]
                .as_array_mut()
                .unwrap()
                .push("delete".into());
        }
    }
    let missing = unjustified(&more, &justified);
    for item in ["capability SYS_ADMIN", "host path /", "RBAC pods delete"] {
        assert!(
            missing.iter().any(|m| m == item),
            "{item} not caught: {missing:?}"
        );
    }
    let pod = &of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert!(pod["terminationGracePeriodSeconds"].as_i64().is_some());
    // Linux nodes only (not Windows, not virtual-kubelet), evicted last.
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let c = &pod["containers"][0];
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        c["resources"]["limits"]["memory"].is_string()
            && c["resources"]["requests"]["cpu"].is_string()
    );
    // A throttled reader loses events: the runbook says it has no CPU limit, and it has none.
    assert!(c["resources"]["limits"]["cpu"].is_null(), "{c:#}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("no CPU limit"),
        "the runbook and the limit disagree"
    );
    // The socket's directory, not the socket: a runtime restart makes a new one.
    let runtime = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "runtime-socket")
        .expect("the runtime socket volume");
    assert_eq!(runtime["hostPath"]["type"], "Directory");
}

/// deploy/ with its components switched on, in a copy.
fn with_components(name: &str) -> PathBuf {
    let dir = tempdir(name);
    let copy = Command::new("cp")
        .arg("-r")
        .arg(root().join("deploy"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copy.success());
    let kustomization = dir.join("deploy/kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization).unwrap();
    let on = text
        .replace("# components:", "components:")
        .replace("#   - components/", "  - components/");
    assert_ne!(on, text, "deploy/kustomization.yaml names its components");
    std::fs::write(&kustomization, on).unwrap();
    dir.join("deploy")
}

#[test]
fn the_cri_o_and_kube_rbac_proxy_components_render_and_validate() {
    let (yaml, docs) = rendered_at(&with_components("components"));
    let pod = &of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let daemon = &pod["containers"][0];
    let args: Vec<&str> = daemon["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // CRI-O: its socket and its directory.
    assert!(
        args.contains(&"--cri-socket=/var/run/crio/crio.sock"),
        "{args:?}"
    );
    assert!(daemon["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/var/run/crio"));
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["hostPath"]["path"] == "/var/run/crio"));
    // kube-rbac-proxy: the daemon on localhost, the proxy on 9443, probes and scrapes over TLS.
    assert!(args.contains(&"--metrics-addr=127.0.0.1:9402"), "{args:?}");
    assert!(daemon["ports"].is_null(), "{daemon:#}");
    let proxy = &pod["containers"][1];
    assert_eq!(proxy["name"], "kube-rbac-proxy");
    assert_eq!(daemon["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(daemon["livenessProbe"]["httpGet"]["port"], "https");
    assert_eq!(of_kind(&docs, "Service")["spec"]["ports"][0]["port"], 9443);
    let endpoint = &of_kind(&docs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(endpoint["honorLabels"], true);
    assert_eq!(
        of_kind(&docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"][0]["port"],
        "https"
    );
    assert!(docs
        .iter()
        .any(|d| d["metadata"]["name"] == "graceful-terminations-reader"));
    // Every object still validates, and every privilege is still justified.
    let dir = tempdir("components-validate");
    std::fs::write(dir.join("rendered.yaml"), &yaml).unwrap();
    let said = output(
        Command::new(tool("venv/bin/kubernetes-validate"))
            .args(["--strict", "-k", "1.33.0"])
            .arg(dir.join("rendered.yaml")),
    );
    assert!(
        said.contains("passed for resource daemonset/graceful")
            && !said.contains("ERROR")
            && !said.contains("failed"),
        "{said}"
    );
    let said = validate_crds(&docs);
    assert!(said.contains("valid ServiceMonitor/graceful"), "{said}");
    let missing = unjustified(&docs, &justified());
    assert!(
        missing.is_empty(),
        "not justified in the README: {missing:?}"
    );
}

#[test]
fn alert_rules_pass_promtool() {
    let (_, docs) = rendered();
    let dir = tempdir("rules");
    let rules = serde_yaml::to_string(&of_kind(&docs, "PrometheusRule")["spec"]).unwrap();
    std::fs::write(dir.join("graceful.rules.yaml"), rules).unwrap();
    std::fs::copy(
        root().join("deploy/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .unwrap();
    let said = output(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(dir.join("graceful.rules.yaml")),
    );
    assert!(said.contains("SUCCESS: 11 rules found"), "{said}");
    let said = output(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(dir.join("alerts.test.yaml")),
    );
    assert!(said.contains("SUCCESS"), "{said}");
    // Every alert has a test, a summary, a description and a runbook section in the README.
    let readme = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .to_lowercase();
    let tests = std::fs::read_to_string(root().join("deploy/alerts.test.yaml")).unwrap();
    let spec = &of_kind(&docs, "PrometheusRule")["spec"];
    for rule in spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool test"
        );
        assert!(
            rule["annotations"]["summary"].is_string()
                && rule["annotations"]["description"].is_string(),
            "{alert}"
        );
        assert!(
            readme.contains(&format!("#### {}", alert.to_lowercase())),
            "{alert} has no runbook section"
        );
    }
}

/// The dashboard's panels over a rollout that SIGKILLed three pods of `web` at 10-12m, as the
/// daemon exposes it: the node counters at 0 from the start, the workload's series created at
/// its first stop. promtool evaluates the panels' own queries: the time series while the
/// rollout shows, and the top-workloads and by-cause tables half an hour later over the
/// picker's range.
#[test]
fn the_dashboard_shows_a_rollout_half_an_hour_later() {
    let dashboard = dashboard();
    let expr = |title: &str, rate: &str, range: &str| {
        panel_query(&dashboard, title, "node-a", rate, range)
    };
    let target = r#"cluster="c1",job="graceful",instance="10.0.0.1:9402",node="node-a",service="graceful",endpoint="metrics""#;
    let test = format!(
        r#"rule_files: []
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'graceful_node_terminations_total{{{target},outcome="killed_after_grace",verdict="swallowed_by_shell_pid1"}}'
    values: '0x10 1 2 3+0x60'
  - series: 'graceful_node_terminations_total{{{target},outcome="exited",verdict="graceful"}}'
    values: '0x80'
  - series: 'graceful_workload_terminations_total{{{target},namespace="shop",workload_type="deployment",workload="web",outcome="killed_after_grace",verdict="swallowed_by_shell_pid1",cause="deleted"}}'
    values: '_x10 1 2 3+0x60'
  promql_expr_test:
  - expr: '{outcome}'
    eval_time: 13m
    exp_samples:
    - labels: '{{outcome="killed_after_grace"}}'
      value: 3
  - expr: '{verdict}'
    eval_time: 13m
    exp_samples:
    - labels: '{{verdict="swallowed_by_shell_pid1"}}'
      value: 3
  - expr: '{top}'
    eval_time: 42m
    exp_samples:
    - labels: '{{namespace="shop",workload_type="deployment",workload="web",verdict="swallowed_by_shell_pid1"}}'
      value: 3
  - expr: '{by_cause}'
    eval_time: 13m
    exp_samples:
    - labels: '{{cause="deleted"}}'
      value: 3
  - expr: '{kills_by_cause}'
    eval_time: 42m
    exp_samples:
    - labels: '{{namespace="shop",workload_type="deployment",workload="web",cause="deleted"}}'
      value: 3
"#,
        outcome = expr("Terminations by outcome", "5m", "1h").replace('\'', "''"),
        verdict = expr("Terminations by verdict", "5m", "1h").replace('\'', "''"),
        top = expr(
            "Top workloads SIGKILLed after their grace period",
            "5m",
            "1h"
        )
        .replace('\'', "''"),
        by_cause = expr("Stops by cause", "5m", "1h").replace('\'', "''"),
        kills_by_cause = expr("SIGKILLs by cause and workload", "5m", "1h").replace('\'', "''"),
    );
    let dir = tempdir("dashboard");
    std::fs::write(dir.join("dashboard.test.yaml"), test).unwrap();
    let said = output(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(dir.join("dashboard.test.yaml")),
    );
    assert!(said.contains("SUCCESS"), "{said}");
}
