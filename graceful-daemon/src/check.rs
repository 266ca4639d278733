//! `check`: a command as PID 1 of a throwaway container, stopped like a runtime stops it, and
//! judged from the kernel's view: for CI pipelines, before an image ships.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    engine::{self, EngineError, Ready, Scenario},
    enrich::cri::{CriError, KNOWN_SOCKETS},
    record::TerminationRecord,
    signals::Signal,
    tracker::Verdict,
};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot start `{0}`: not found in PATH")]
    NotFound(String),
    #[error("cannot start `{0}`: not an executable file")]
    NotExecutable(String),
    #[error(transparent)]
    Image(#[from] ImageCheckError),
    #[error(transparent)]
    Pod(#[from] PodFileError),
    #[error("{}", run_failed(.0))]
    Run(#[from] EngineError),
}

#[derive(Debug, thiserror::Error)]
/// Why `check --image` could not run the image here.
pub enum ImageCheckError {
    #[error("no container runtime socket found (tried {}): give --cri-socket", KNOWN_SOCKETS.join(", "))]
    NoSocket,
    #[error("the container runtime: {0}")]
    Runtime(CriError),
    #[error("image {image} is not on this node and could not be pulled: {error}")]
    NoImage { image: String, error: String },
    #[error("the container runtime could not {what}: {error}")]
    Call { what: &'static str, error: String },
    #[error("the container of {0} has no process (the runtime did not say its pid)")]
    NoProcess(String),
}

/// Why a file cannot be checked as a pod: said in one line, exit 2.
#[derive(Debug, thiserror::Error)]
pub enum PodFileError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not YAML: {error}")]
    Yaml { path: String, error: String },
    #[error("{path} is not a Pod (kind: {kind}): check --pod takes one Pod manifest")]
    NotAPod { path: String, kind: String },
    #[error("{path} is not a valid Pod: {error}")]
    Invalid { path: String, error: String },
    #[error("{path} has no containers")]
    NoContainers { path: String },
    #[error("container {0} has no command: check runs each container's command (images are not pulled), give it `command:`")]
    NoCommand(String),
    #[error("container {container}: unknown {field} {value:?} ({expected})")]
    Value {
        container: String,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

fn run_failed(e: &EngineError) -> String {
    match e {
        EngineError::ExitedEarly { name, status } if matches!(status.code, Some(126 | 127)) => {
            format!(
                "cannot start `{name}` (exit code {})",
                status.code.unwrap_or_default()
            )
        }
        EngineError::ExitedEarly { .. } => format!(
            "{e}: check stops a command that keeps running, as a container's main process does"
        ),
        e => e.to_string(),
    }
}

impl CheckError {
    /// `check`'s exit code for it: 2 for what cannot be checked (a command that cannot start or
    /// ends by itself before the stop, an image the runtime cannot run), as for a usage error;
    /// 1 when the check itself failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            CheckError::NotFound(_)
            | CheckError::NotExecutable(_)
            | CheckError::Image(_)
            | CheckError::Pod(_)
            | CheckError::Run(EngineError::ExitedEarly { .. }) => 2,
            CheckError::Run(_) => 1,
        }
    }
}

fn executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program to exec: a path as given, or the first match in `PATH`.
pub fn resolve(program: &str) -> Result<PathBuf, CheckError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(CheckError::NotExecutable(program.into()))
        };
    }
    std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
        .ok_or_else(|| CheckError::NotFound(program.into()))
}

/// How `check` stops the command.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub grace: Duration,
    pub stop_signal: Signal,
    /// Stop this long after the start; else once its processes have settled.
    pub ready_after: Option<Duration>,
    /// `KEY=VALUE` for the command, on top of a runtime's environment.
    pub env: Vec<String>,
}

/// Runs `command` as PID 1 of a throwaway container, stops it and returns its record.
pub async fn run(
    command: &[String],
    options: &CheckOptions,
) -> Result<TerminationRecord, CheckError> {
    let program = command
        .first()
        .ok_or_else(|| CheckError::NotFound(String::new()))?;
    let path = resolve(program)?;
    let mut argv = vec![path.to_string_lossy().into_owned()];
    argv.extend(command.iter().skip(1).cloned());
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "command".into());
    let mut scenario =
        Scenario::new(&name, "check", argv, &[]).stop_with(Some(options.stop_signal));
    scenario.ready = match options.ready_after {
        Some(d) => Ready::After(d),
        None => Ready::Settled,
    };
    scenario.spawn.env = options.env.clone();
    let mut records = engine::run(&[scenario], options.grace).await?;
    let mut record = records.pop().ok_or(CheckError::Run(EngineError::NoRecord {
        name,
        waiting_for: Vec::new(),
    }))?;
    // The grace it was given, as a pod's record carries its terminationGracePeriodSeconds.
    record
        .info
        .get_or_insert_with(Default::default)
        .grace_period_seconds = Some(options.grace.as_secs_f64());
    Ok(record)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A JUnit report of one check: a failure unless the verdict is `graceful`.
pub fn junit(command: &[String], record: &TerminationRecord) -> String {
    let t = &record.termination;
    let name = xml(&command.join(" "));
    let time = t.duration_seconds();
    let failure = if t.verdict == Verdict::Graceful {
        String::new()
    } else {
        format!(
            "\n      <failure message=\"{}\" type=\"{}\">{}</failure>",
            xml(t.verdict.as_str()),
            xml(t.verdict.as_str()),
            xml(&record.timeline())
        )
    };
    let failures = usize::from(t.verdict != Verdict::Graceful);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"graceful check\" tests=\"1\" failures=\"{failures}\">\n  \
         <testsuite name=\"graceful\" tests=\"1\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">\n    \
         <testcase classname=\"graceful.check\" name=\"{name}\" time=\"{time:.3}\">{failure}\n      \
         <system-out>{}</system-out>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
        xml(&t.explanation)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_like_a_shell_would() {
        assert!(resolve("sh").is_ok());
        assert!(matches!(
            resolve("no-such-program-here"),
            Err(CheckError::NotFound(_))
        ));
        assert!(matches!(
            resolve("/etc/passwd"),
            Err(CheckError::NotExecutable(_))
        ));
        assert!(matches!(
            resolve("/nope/x"),
            Err(CheckError::NotExecutable(_))
        ));
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
