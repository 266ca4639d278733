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
