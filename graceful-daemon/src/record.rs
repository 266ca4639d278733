//! The termination record: JSON (the contract of DESIGN.md) and a short timeline for a person.
use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;
use serde_json::Value;

use crate::{
    clock::WallClock,
    events::{ExitStatus, SignalResult},
    identity::Identity,
    signals::Signal,
    tracker::{Init, NamedProcess, Outcome, Received, Sender, Termination, Verdict},
};

/// The termination record of DESIGN.md, field for field.
#[derive(Serialize)]
struct RecordJson<'a> {
    kind: &'static str,
    container: ContainerJson<'a>,
    stop: Option<StopJson<'a>>,
    init: &'a Init,
    received: &'a [Received],
    received_more: usize,
    never_received: &'a [NamedProcess],
    never_received_more: usize,
    kill: Option<KillJson<'a>>,
    outcome: Outcome,
    exit: Option<ExitStatus>,
    duration_seconds: f64,
    grace_period_seconds: Option<f64>,
    verdict: Verdict,
    explanation: &'a str,
}

/// The `container` object that records and audits share.
#[derive(Serialize)]
pub struct ContainerJson<'a> {
    id: Option<&'a str>,
    runtime: &'static str,
    cgroup: Option<&'a str>,
    pod_uid: Option<&'a str>,
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    name: Option<&'a str>,
    workload: Option<&'a str>,
    qos: Option<&'a str>,
}

impl<'a> ContainerJson<'a> {
    pub fn new(
        identity: Option<&'a Identity>,
        cgroup: Option<&'a str>,
        info: Option<&'a ContainerInfo>,
    ) -> ContainerJson<'a> {
        ContainerJson {
            id: identity.map(|i| i.id.as_str()),
            runtime: identity.map_or("unknown", |i| i.runtime.as_str()),
            cgroup,
            pod_uid: info
                .and_then(|i| i.pod_uid.as_deref())
                .or_else(|| identity.and_then(|i| i.pod_uid.as_deref())),
            namespace: info.and_then(|i| i.namespace.as_deref()),
            pod: info.and_then(|i| i.pod.as_deref()),
            name: info.and_then(|i| i.name.as_deref()),
            workload: None,
            qos: identity.and_then(|i| i.qos.as_deref()),
        }
    }
}

#[derive(Serialize)]
struct StopJson<'a> {
    signal: Signal,
    signo: i32,
    at: String,
    sender: &'a Sender,
    result: SignalResult,
}

#[derive(Serialize)]
struct KillJson<'a> {
    at: String,
    sender: &'a Sender,
}

/// Kubernetes names and settings of one container, from kubelet's labels and annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerInfo {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub grace_period_seconds: Option<f64>,
    /// A preStop hook is set (its command is never kept: it can carry secrets).
    pub pre_stop_hook: bool,
    /// The pod's sandbox (pause) container: stopped with SIGKILL by design, never reported.
    pub sandbox: bool,
}

/// Who a record or a series is about: Kubernetes names, or (without Kubernetes) the short id or
/// unit name.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// A termination with what enrichment knows of its container.
#[derive(Debug, Clone)]
pub struct TerminationRecord {
    pub termination: Termination,
    /// Path below the cgroup2 root.
    pub cgroup: Option<String>,
    pub identity: Option<Identity>,
    /// What the container runtime said about it (Kubernetes names, grace period).
    pub info: Option<ContainerInfo>,
    pub grace_period_seconds: Option<f64>,
}

impl TerminationRecord {
    /// The name people know the container by: short id or unit name, else the cgroup.
    pub fn display_name(&self) -> String {
        match (&self.identity, &self.cgroup) {
            (Some(i), _) => i.short_id().to_string(),
            (None, Some(c)) => c.clone(),
            (None, None) => format!("cgroup {}", self.termination.cgroup),
        }
    }

    /// Metric labels: Kubernetes names, or the short id / unit name without them.
    pub fn labels(&self) -> ContainerLabels {
        container_labels(self.identity.as_ref(), self.info.as_ref()).unwrap_or_else(|| {
            ContainerLabels {
                container: self.display_name(),
                ..Default::default()
            }
        })
    }

    pub fn to_json(&self, clock: &WallClock) -> Value {
        let t = &self.termination;
        let json = RecordJson {
            kind: "termination",
            container: ContainerJson::new(
                self.identity.as_ref(),
                self.cgroup.as_deref(),
                self.info.as_ref(),
            ),
            stop: t.stop.as_ref().map(|s| StopJson {
                signal: s.signal,
                signo: s.signal.0,
                at: clock.rfc3339(s.at),
                sender: &s.sender,
                result: s.result,
            }),
            init: &t.init,
            received: &t.received,
            received_more: t.received_more,
            never_received: &t.never_received,
            never_received_more: t.never_received_more,
            kill: t.kill.as_ref().map(|k| KillJson {
                at: clock.rfc3339(k.at),
                sender: &k.sender,
            }),
            outcome: t.outcome,
            exit: t.exit,
            duration_seconds: (t.duration_seconds() * 1e6).round() / 1e6,
            grace_period_seconds: self.grace_period_seconds,
            verdict: t.verdict,
            explanation: &t.explanation,
        };
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_value(json).unwrap_or(Value::Null)
    }

    /// A few lines for a person: what happened, in order, and why.
    pub fn timeline(&self) -> String {
        let t = &self.termination;
        let at = |ts: u64| format!("+{:>7.3}s", ts.saturating_sub(t.started) as f64 / 1e9);
        let mut out = format!(
            "== {} ({}) verdict: {}  outcome: {}\n",
            self.display_name(),
            self.cgroup.as_deref().unwrap_or("?"),
            t.verdict.as_str(),
            t.outcome.as_str()
        );
        if let Some(s) = &t.stop {
            out += &format!(
                "   {}  {} from {} (pid {}) -> {} (pid {}): {}\n",
                at(s.at),
                s.signal,
                s.sender.comm,
                s.sender.pid,
                t.init.comm,
                t.init.pid,
                s.result.as_str()
            );
        }
        for r in t.received.iter().filter(|r| r.pid != t.init.pid) {
            out += &format!(
                "              also received by {} (pid {}): {}\n",
                r.comm,
                r.pid,
                r.result.as_str()
            );
        }
        if let Some(k) = &t.kill {
            out += &format!(
                "   {}  SIGKILL from {} (pid {})\n",
                at(k.at),
                k.sender.comm,
                k.sender.pid
            );
        }
        let exit = match t.exit {
            Some(e) => match (e.code, e.signal) {
                (Some(c), _) => format!("exit code {c}"),
                (_, Some(s)) => format!("killed by {}", crate::signals::Signal(s)),
                _ => "exit unknown".into(),
            },
            None => "exit not seen".into(),
        };
        out += &format!("   {}  all processes gone; PID 1 {exit}\n", at(t.ended));
        if !t.never_received.is_empty() {
            let names: Vec<String> = t
                .never_received
                .iter()
                .map(|p| format!("{} (pid {})", p.comm, p.pid))
                .collect();
            out += &format!("   never received the stop signal: {}\n", names.join(", "));
        }
        out += &format!("   why: {}\n", t.explanation);
        out
    }
}

/// Metric labels of a container, when it is one.
pub fn container_labels(
    identity: Option<&Identity>,
    info: Option<&ContainerInfo>,
) -> Option<ContainerLabels> {
    let identity = identity?;
    Some(ContainerLabels {
        namespace: info.and_then(|i| i.namespace.clone()).unwrap_or_default(),
        pod: info.and_then(|i| i.pod.clone()).unwrap_or_default(),
        container: info
            .and_then(|i| i.name.clone())
            .unwrap_or_else(|| identity.short_id().to_string()),
    })
}
