//! deploy/ as the tests read it: rendered by the official kubectl (`kubectl kustomize`), and the
//! tools `cargo xtask setup` installs under target/tools.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn tool(path: &str) -> PathBuf {
    let p = root().join("target/tools").join(path);
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask setup` installs it",
        p.display()
    );
    p
}

pub fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `kubectl kustomize deploy/`: the YAML and its objects.
pub fn rendered() -> (String, Vec<Value>) {
    rendered_at(&root().join("deploy"))
}

/// `kubectl kustomize` of a kustomization directory.
pub fn rendered_at(dir: &std::path::Path) -> (String, Vec<Value>) {
    let yaml = output(
        Command::new(tool("venv/bin/kubectl"))
            .arg("kustomize")
            .arg(dir),
    );
    let docs = yaml_docs(&yaml);
    (yaml, docs)
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/"))
}

/// deploy/'s Grafana dashboard.
pub fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/graceful.json")).unwrap(),
    )
    .expect("the dashboard's JSON")
}

/// A dashboard query with its variables filled in as Grafana fills them for every cluster,
/// namespace and workload on one `node`, with these intervals.
pub fn filled(expr: &str, node: &str, rate: &str, range: &str) -> String {
    expr.replace("$cluster", ".*")
        .replace("$node", node)
        .replace("$namespace", ".*")
        .replace("$workload", ".*")
        .replace("$__rate_interval", rate)
        .replace("$__range", range)
}

/// The first query of the dashboard's panel `title`, filled in as [`filled`] does.
pub fn panel_query(dashboard: &Value, title: &str, node: &str, rate: &str, range: &str) -> String {
    let panel = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title}"));
    filled(
        panel["targets"][0]["expr"].as_str().unwrap_or_default(),
        node,
        rate,
        range,
    )
}
