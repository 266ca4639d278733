//! The termination record: JSON (the contract of docs/design.md) and a short timeline for a person.
use serde::Serialize;
use serde_json::Value;

use crate::{
    clock::WallClock,
    enrich::{cause::Cause, ContainerInfo, HookKind},
    events::{Mono, SignalResult},
    identity::Identity,
    signals::Signal,
    tracker::explanation::{pre_stop_took_the_grace, HookShare},
    tracker::{
        Connections, Init, NamedProcess, OomVictim, Outcome, Received, Sender, StopSource,
        StuckProcess, Termination, Verdict,
    },
};

/// The kubelet's minimumGracePeriodInSeconds: what the stop signal gets however long the
/// preStop hook ran.
const KUBELET_MIN_GRACE: f64 = 2.0;

/// The termination record of docs/design.md, field for field.
#[derive(Serialize)]
struct RecordJson<'a> {
    kind: &'static str,
    container: ContainerJson<'a>,
    stop: Option<StopJson<'a>>,
    pre_stop: Option<PreStopJson<'a>>,
    init: &'a Init,
    received: &'a [Received],
    received_more: usize,
    never_received: &'a [NamedProcess],
    never_received_more: usize,
    kill: Option<KillJson<'a>>,
    outcome: Outcome,
    exit: Option<ExitJson>,
    /// What asked for the stop.
    cause: Cause,
    duration_seconds: f64,
    grace_period_seconds: Option<f64>,
    /// The grace left to the app after its preStop hook.
    #[serde(skip_serializing_if = "Option::is_none")]
    app_grace_seconds: Option<f64>,
    verdict: Verdict,
    explanation: &'a str,
    /// An interim `stuck` record's processes, held in the kernel past their SIGKILL.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stuck: &'a [StuckProcess],
    /// The OOM killer's victims in the container, and whether one ended it.
    oom: &'a [OomVictim],
    /// Its TCP connections through the stop (null: not measured).
    connections: Option<ConnectionsJson<'a>>,
}

#[derive(Serialize)]
struct ConnectionsJson<'a> {
    #[serde(flatten)]
    counts: &'a Connections,
    listener_closed: Option<String>,
}

/// The preStop hook's part of the grace: an exec hook's run as the kernel saw it; for an
/// httpGet or sleep hook, the time from the deletion to the stop signal.
#[derive(Serialize)]
struct PreStopJson<'a> {
    kind: HookKind,
    command: Option<&'a str>,
    started: String,
    ended: Option<String>,
    exit_code: Option<i32>,
    grace_share: Option<f64>,
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
            workload: info.and_then(|i| i.workload.as_deref()),
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
    /// `runtime` (from outside) or `pre_stop` (the container's preStop hook, from inside).
    source: StopSource,
}

/// The main process's end, and what it means.
#[derive(Serialize)]
struct ExitJson {
    code: Option<i32>,
    signal: Option<i32>,
    meaning: String,
}

#[derive(Serialize)]
struct KillJson<'a> {
    at: String,
    sender: &'a Sender,
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
    /// What asked for the stop, once enrichment knows (None: what the node saw alone says).
    pub cause: Option<Cause>,
}

impl TerminationRecord {
    /// The grace the container had: its pod's (this deletion's), as enrichment found it.
    pub fn grace_period_seconds(&self) -> Option<f64> {
        self.info.as_ref().and_then(|i| i.grace_period_seconds)
    }

    /// What asked for the stop: enrichment's word, else what the node saw alone.
    pub fn cause(&self) -> Cause {
        self.cause
            .clone()
            .unwrap_or_else(|| Cause::of(&self.termination, None, None))
    }

    /// The name people know the container by: short id or unit name, else the cgroup.
    pub fn display_name(&self) -> String {
        match (&self.identity, &self.cgroup) {
            (Some(i), _) => i.short_id().to_string(),
            (None, Some(c)) => c.clone(),
            (None, None) => format!("cgroup {}", self.termination.cgroup),
        }
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
                source: s.source,
            }),
            pre_stop: self.pre_stop_json(clock),
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
            exit: t.exit.map(|e| ExitJson {
                code: e.code,
                signal: e.signal,
                meaning: e.meaning(),
            }),
            cause: self.cause(),
            duration_seconds: (t.duration_seconds() * 1e6).round() / 1e6,
            grace_period_seconds: self.grace_period_seconds(),
            app_grace_seconds: self
                .app_grace_seconds(clock)
                .filter(|g| Some(*g) != self.grace_period_seconds())
                .map(|g| (g * 1000.0).round() / 1000.0),
            verdict: t.verdict,
            explanation: &t.explanation,
            stuck: &t.stuck,
            oom: &t.oom,
            connections: t.connections.as_ref().map(|c| ConnectionsJson {
                counts: c,
                listener_closed: c.listener_closed.map(|at| clock.rfc3339(at)),
            }),
        };
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_value(json).unwrap_or(Value::Null)
    }

    /// When the preStop hook started and ended (monotonic ns; its end None when it was still
    /// running at the stop signal), its exit code, and the share of the grace it took.
    fn pre_stop_span(&self, clock: &WallClock) -> Option<HookSpan> {
        let hook = self.info.as_ref()?.pre_stop.as_ref()?;
        let stop = self.termination.stop.as_ref()?;
        let (started, ended, exit_code) = match hook.kind {
            HookKind::Exec => {
                let run = self.termination.pre_stop.as_ref()?;
                (run.started, run.ended, run.exit.and_then(|e| e.code))
            }
            _ => {
                // The deletion as a monotonic time: the stop's wall time less the wait.
                let deleted = self.info.as_ref()?.deleted_at?;
                let waited = (clock.at(stop.at) - deleted).num_nanoseconds()?;
                let started = stop.at.checked_sub(u64::try_from(waited).ok()?)?;
                (started, Some(stop.at), None)
            }
        };
        let used = ended
            .unwrap_or(stop.at)
            .min(stop.at)
            .saturating_sub(started) as f64
            / 1e9;
        let share = self
            .grace_period_seconds()
            .filter(|g| *g > 0.0)
            .map(|g| ((used / g).min(1.0) * 1000.0).round() / 1000.0);
        Some(HookSpan {
            kind: hook.kind,
            started,
            ended,
            exit_code,
            used,
            share,
        })
    }

    fn pre_stop_json(&self, clock: &WallClock) -> Option<PreStopJson<'_>> {
        let span = self.pre_stop_span(clock)?;
        Some(PreStopJson {
            kind: span.kind,
            command: self
                .info
                .as_ref()
                .and_then(|i| i.pre_stop.as_ref())
                .and_then(|h| h.command.as_deref()),
            started: clock.rfc3339(span.started),
            ended: span.ended.map(|e| clock.rfc3339(e)),
            exit_code: span.exit_code,
            grace_share: span.share,
        })
    }

    /// The grace the app had after its preStop hook: the kubelet gives the stop signal the
    /// grace period less what the hook took, but never less than 2 s.
    pub fn app_grace_seconds(&self, clock: &WallClock) -> Option<f64> {
        let grace = self.grace_period_seconds().filter(|g| *g > 0.0)?;
        Some(match self.pre_stop_span(clock) {
            Some(span) => (grace - span.used).max(KUBELET_MIN_GRACE.min(grace)),
            None => grace,
        })
    }

    /// What the preStop hook did to the stop, once enrichment knows the hook: a hook that ran
    /// (nearly) to the end of the grace, so that the app got its stop signal with at most the
    /// kubelet's minimum left, makes a slow shutdown `pre_stop_took_the_grace`; under any other
    /// verdict a hook that took 90% of the grace is added to the explanation. Idempotent.
    pub fn judge_pre_stop(&mut self, clock: &WallClock) {
        let t = &self.termination;
        let (Some(span), Some(grace), Some(stop), Some(kill)) = (
            self.pre_stop_span(clock),
            self.grace_period_seconds(),
            t.stop.as_ref(),
            t.kill.as_ref(),
        ) else {
            return;
        };
        if t.outcome != Outcome::KilledAfterGrace {
            return;
        }
        let hook = self.hook_name(span.kind);
        let share = HookShare {
            hook: &hook,
            used: span.used,
            grace,
            signal: stop.signal,
            left: kill.at.saturating_sub(stop.at) as f64 / 1e9,
        };
        // The kubelet gives the stop signal whatever is left, but never under 2 s; its clock
        // and ours differ by a little.
        let left_the_minimum = grace - span.used <= KUBELET_MIN_GRACE + 0.5;
        if left_the_minimum
            && matches!(
                t.verdict,
                Verdict::SlowShutdown | Verdict::PreStopTookTheGrace
            )
        {
            self.termination.verdict = Verdict::PreStopTookTheGrace;
            self.termination.explanation = pre_stop_took_the_grace(&share, true);
            return;
        }
        if span.share.is_none_or(|s| s < 0.9) {
            return;
        }
        let sentence = pre_stop_took_the_grace(&share, false);
        // Idempotent: a second call finds its sentence already there.
        let said = &mut self.termination.explanation;
        if !said.ends_with(&sentence) {
            *said = format!("{said} {sentence}");
        }
    }

    /// The hook as people wrote it: its (redacted) command, else its kind.
    fn hook_name(&self, kind: HookKind) -> String {
        let command = self
            .info
            .as_ref()
            .and_then(|i| i.pre_stop.as_ref())
            .and_then(|h| h.command.as_deref());
        match command {
            Some(c) => format!("{}: {c}", kind.as_str()),
            None => kind.as_str().to_string(),
        }
    }

    /// A few lines for a person: what happened, in order, and why.
    pub fn timeline(&self) -> String {
        let t = &self.termination;
        // Signed: a preStop hook runs before the stop.
        let at = |ts: u64| {
            let d = (ts as i128 - t.started as i128) as f64 / 1e9;
            format!("{}{:>7.3}s", if d < 0.0 { '-' } else { '+' }, d.abs())
        };
        let mut out = format!(
            "== {} ({}) verdict: {}  outcome: {}\n",
            self.display_name(),
            self.cgroup.as_deref().unwrap_or("?"),
            t.verdict.as_str(),
            t.outcome.as_str()
        );
        if let Some(s) = &t.stop {
            let by_hook = match s.source {
                StopSource::PreStop => ", the preStop hook",
                StopSource::Inside => ", inside the container",
                StopSource::Runtime => "",
            };
            out += &format!(
                "   {}  {} from {} (pid {}{by_hook}) -> {} (pid {}): {}\n",
                at(s.at),
                s.signal,
                s.sender.comm,
                s.sender.pid,
                t.init.comm,
                t.init.pid,
                s.result.as_str()
            );
        }
        if let Some(span) = self.pre_stop_span(&WallClock::default()) {
            let share = span
                .share
                .map(|s| format!(", {:.0}% of the grace", s * 100.0))
                .unwrap_or_default();
            let exit = span
                .exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            out += &format!(
                "   {}  preStop {} hook before it: {:.3}s{share}{exit}\n",
                at(span.started),
                span.kind.as_str(),
                span.used
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
        if t.stuck.is_empty() {
            out += &format!("   {}  all processes gone; PID 1 {exit}\n", at(t.ended));
        } else {
            let held: Vec<String> = t
                .stuck
                .iter()
                .map(|p| {
                    let state = p.state.map(|s| format!(", state {s}")).unwrap_or_default();
                    let wchan = p
                        .wchan
                        .as_deref()
                        .map(|w| format!(", in {w}"))
                        .unwrap_or_default();
                    format!("{} (pid {}{state}{wchan})", p.comm, p.pid)
                })
                .collect();
            out += &format!("   {}  still there: {}\n", at(t.ended), held.join(", "));
        }
        if !t.never_received.is_empty() {
            let names: Vec<String> = t
                .never_received
                .iter()
                .map(|p| format!("{} (pid {})", p.comm, p.pid))
                .collect();
            out += &format!("   never received the stop signal: {}\n", names.join(", "));
        }
        // Only for a container that had connections to lose.
        let had = |c: &&crate::tracker::Connections| {
            c.open_at_stop.unwrap_or(0)
                + c.closed_by_app
                + c.reset
                + c.open_at_kill.unwrap_or(0)
                + c.refused.unwrap_or(0)
                > 0
                || c.listener_closed.is_some()
        };
        if let Some(c) = t.connections.as_ref().filter(had) {
            if let Some(at_) = c.listener_closed {
                out += &format!("   {}  the last listening socket closed\n", at(at_));
            }
            let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
            out += &format!(
                "   connections: {} open at the stop, {} closed by the app, {} reset, {} cut by the SIGKILL, {} refused\n",
                count(c.open_at_stop),
                c.closed_by_app,
                c.reset,
                count(c.open_at_kill),
                count(c.refused),
            );
        }
        out += &format!("   why: {}\n", t.explanation);
        out
    }
}

struct HookSpan {
    kind: HookKind,
    started: Mono,
    ended: Option<Mono>,
    exit_code: Option<i32>,
    /// Seconds of the grace it took (to its end, or to the stop signal).
    used: f64,
    share: Option<f64>,
}

/// Metric labels of a container, when it is one.
#[cfg(test)]
mod tests;
