//! `graceful-daemon check`, the real binary, as a CI pipeline runs it.
use std::process::Command;

use serde_json::Value;

use crate::daemon::daemon_binary;

pub struct Checked {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The check's own pid: its run's cgroup is `/graceful-demo/<pid>-0`.
    pub pid: u32,
}

impl Checked {
    /// The one `error:` line it printed (it must print exactly one).
    pub fn error_line(&self) -> &str {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", self.stderr);
        errors[0]
    }
}

/// `check FLAGS -- COMMAND`.
pub fn check(flags: &[&str], command: &[&str]) -> Checked {
    let child = Command::new(daemon_binary())
        .arg("check")
        .args(flags)
        .arg("--")
        .args(command)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        pid,
    }
}

/// `check --json --grace 2 EXTRA -- COMMAND`: the exit code and the record.
pub fn record(extra: &[&str], command: &[&str]) -> (Option<i32>, Value) {
    let mut flags = vec!["--json", "--grace", "2"];
    flags.extend_from_slice(extra);
    let c = check(&flags, command);
    assert!(!c.stderr.contains("panicked"), "{}", c.stderr);
    let record: Value = serde_json::from_str(c.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{command:?}: not one JSON record ({e}): {}{}",
            c.stdout, c.stderr
        )
    });
    (c.code, record)
}

/// The record's explanation.
pub fn explanation(r: &Value) -> &str {
    r["explanation"].as_str().unwrap_or_default()
}
