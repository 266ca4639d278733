//! The pod as a whole: its containers' records put together once all are in (or the pod's
//! grace is long past), in the order they were stopped, on the pod's clock (seconds since its
//! first stop signal), with a pod verdict about order: a sidecar gone while an app container
//! still shut down, a native sidecar never signalled. Pure: the daemon and `check` feed it.
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

pub use crate::enrich::pods::{sidecar_names, Role};
use crate::{
    clock::WallClock,
    enrich::cause::Cause,
    events::Mono,
    record::TerminationRecord,
    tracker::{Outcome, Verdict},
};

/// How long after the pod's grace a pod record waits for a container's record that never came.
const LATE_NS: u64 = 15_000_000_000;
/// The grace assumed when neither the runtime nor the API said (Kubernetes' default).
const DEFAULT_GRACE_NS: u64 = 30_000_000_000;
/// An app outliving its sidecar by less than this is noise (their exits' order), not a finding.
const OVERLAP_NS: u64 = 100_000_000;
/// Stop signals this close are one wave (a kubelet stopping containers together): a proxy that
/// exits within a millisecond may be gone before its app's signal is even sent.
const WAVE_NS: u64 = 1_000_000_000;

/// A container of the pod as its pod knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub name: String,
    pub role: Role,
    /// A native sidecar: the kubelet must stop it after the app containers.
    pub native: bool,
}

/// The pod a container record belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct PodOf {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub workload: Option<String>,
    /// Its containers, as far as anyone said (empty: only those whose records come).
    pub containers: Vec<Expected>,
    pub grace_ns: Option<u64>,
}

/// One container's stop, from its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub native: bool,
    /// Its stop signal (None: none came, only a SIGKILL or nothing).
    pub stop_at: Option<Mono>,
    /// When its stop began: the stop signal, else the kill.
    pub began: Mono,
    pub ended: Mono,
    pub killed: bool,
    pub outcome: Outcome,
    pub verdict: Verdict,
}

impl Member {
    /// A container's stop from its record, under the name and role its pod gives it.
    pub fn of(record: &TerminationRecord, name: String, role: Role, native: bool) -> Member {
        let t = &record.termination;
        let stop_at = t.stop.as_ref().map(|s| s.at);
        Member {
            name,
            role,
            native,
            stop_at,
            began: stop_at
                .or(t.kill.as_ref().map(|k| k.at))
                .unwrap_or(t.started),
            ended: t.ended,
            killed: t.kill.is_some(),
            outcome: t.outcome,
            verdict: t.verdict,
        }
    }
}

/// What the pod's stop came to: an order finding, or its worst container's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodVerdict {
    SidecarStoppedFirst,
    SidecarNotStopped,
    Container(Verdict),
}

impl PodVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PodVerdict::SidecarStoppedFirst => "sidecar_stopped_first",
            PodVerdict::SidecarNotStopped => "sidecar_not_stopped",
            PodVerdict::Container(v) => v.as_str(),
        }
    }

    /// Whatever is not `graceful` (`check --pod` exits 1 on it).
    pub fn is_bad(self) -> bool {
        self != PodVerdict::Container(Verdict::Graceful)
    }
}

impl Serialize for PodVerdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Container verdicts from the worst: what the pod's verdict is when order is not the finding.
const WORST_FIRST: [Verdict; 10] = [
    Verdict::OomKilled,
    Verdict::KilledWithoutStopSignal,
    Verdict::SwallowedByShellPid1,
    Verdict::Pid1IgnoresStopSignal,
    Verdict::NotForwarded,
    Verdict::PreStopTookTheGrace,
    Verdict::SlowShutdown,
    Verdict::ChildrenKilledAtExit,
    Verdict::Unknown,
    Verdict::Graceful,
];

/// A pod's stop, whole.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTermination {
    pub pod: PodOf,
    pub cause: Option<Cause>,
    /// In the order they were stopped.
    pub members: Vec<Member>,
    /// Containers the pod has whose record never came.
    pub missing: Vec<String>,
    pub first_stop: Mono,
    pub verdict: PodVerdict,
    pub explanation: String,
}

fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e6).round() / 1e3
}

impl PodTermination {
    fn new(pod: PodOf, cause: Option<Cause>, mut members: Vec<Member>) -> PodTermination {
        members.sort_by_key(|m| (m.began, m.ended));
        let first_stop = members.iter().map(|m| m.began).min().unwrap_or_default();
        let missing = pod
            .containers
            .iter()
            .filter(|e| e.role != Role::Init && !members.iter().any(|m| m.name == e.name))
            .map(|e| e.name.clone())
            .collect();
        let (verdict, explanation) = judge(&members);
        PodTermination {
            pod,
            cause,
            members,
            missing,
            first_stop,
            verdict,
            explanation,
        }
    }

    pub fn to_json(&self, clock: &WallClock) -> Value {
        let since = |t: Mono| secs(t.saturating_sub(self.first_stop));
        let containers: Vec<Value> = self
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "role": m.role,
                    "stop_at": m.stop_at.map(since),
                    "ended_at": since(m.ended),
                    "outcome": m.outcome.as_str(),
                    "verdict": m.verdict.as_str(),
                })
            })
            .collect();
        serde_json::json!({
            "kind": "pod_termination",
            "pod": {
                "uid": self.pod.uid,
                "namespace": self.pod.namespace,
                "name": self.pod.name,
                "workload": self.pod.workload,
            },
            "cause": self.cause,
            "first_stop_at": clock.rfc3339(self.first_stop),
            "containers": containers,
            "missing": self.missing,
            "verdict": self.verdict,
            "explanation": self.explanation,
        })
    }

    /// A few lines for a person: the pod's containers on its clock.
    pub fn timeline(&self) -> String {
        let name = match self.pod.namespace.as_str() {
            "" => self.pod.name.clone(),
            ns => format!("{ns}/{}", self.pod.name),
        };
        let mut out = format!("== pod {name} verdict: {}\n", self.verdict.as_str());
        for m in &self.members {
            let stop = m
                .stop_at
                .map(|t| format!("stop signal at +{:.3}s", secs(t - self.first_stop)))
                .unwrap_or_else(|| "no stop signal".into());
            out += &format!(
                "   {:<16} {:<8} {stop}, ended at +{:.3}s: {} ({})\n",
                m.name,
                m.role.as_str(),
                secs(m.ended.saturating_sub(self.first_stop)),
                m.verdict.as_str(),
                m.outcome.as_str()
            );
        }
        out + &format!("   {}\n", self.explanation)
    }
}

/// The pod's verdict, first match wins: a sidecar gone first, a native sidecar never
/// signalled, else the worst container verdict.
fn judge(members: &[Member]) -> (PodVerdict, String) {
    let sidecars = members.iter().filter(|m| m.role == Role::Sidecar);
    let apps: Vec<&Member> = members.iter().filter(|m| m.role == Role::App).collect();
    let first_gone = sidecars
        .flat_map(|s| apps.iter().map(move |a| (s, *a)))
        .filter(|(s, a)| a.began <= s.ended + WAVE_NS && a.ended > s.ended + OVERLAP_NS)
        .max_by_key(|(s, a)| a.ended - s.ended);
    if let Some((s, a)) = first_gone {
        let overlap = secs(a.ended - s.ended);
        let kind = if s.native {
            "native sidecar"
        } else {
            "sidecar"
        };
        return (
            PodVerdict::SidecarStoppedFirst,
            format!(
                "{} ({kind}) was gone {overlap:.1} s before {} finished shutting down: whatever {} sent through it in its last {overlap:.1} s failed. \
                 Make it a native sidecar (an init container with restartPolicy: Always, Kubernetes 1.29+), which the kubelet stops only after the app containers, \
                 or make the proxy wait for the app (Istio: EXIT_ON_ZERO_ACTIVE_CONNECTIONS or terminationDrainDuration; \
                 Linkerd: config.alpha.linkerd.io/proxy-wait-before-exit-seconds).",
                s.name, a.name, a.name
            ),
        );
    }
    if let Some(s) = members
        .iter()
        .find(|m| m.native && m.stop_at.is_none() && m.killed)
    {
        return (
            PodVerdict::SidecarNotStopped,
            format!(
                "The native sidecar {} got no stop signal before the pod's grace ran out and was SIGKILLed: the kubelet never asked it to drain \
                 (with several native sidecars some kubelets skip one, kubernetes#125880). Upgrade the kubelet, or leave the sidecars' own \
                 shutdown time inside the grace (terminationGracePeriodSeconds).",
                s.name
            ),
        );
    }
    let worst = WORST_FIRST
        .iter()
        .find(|v| members.iter().any(|m| m.verdict == **v))
        .copied()
        .unwrap_or(Verdict::Unknown);
    let said = match members.iter().find(|m| m.verdict == worst) {
        Some(m) if members.len() > 1 => format!(
            "The worst of its {} containers: {} ({}).",
            members.len(),
            m.name,
            worst.as_str()
        ),
        Some(m) => format!("Its one container: {} ({}).", m.name, worst.as_str()),
        None => "None of its containers' records came.".into(),
    };
    (PodVerdict::Container(worst), said)
}

struct Pending {
    pod: PodOf,
    cause: Option<Cause>,
    members: Vec<Member>,
    deadline: Mono,
}

/// Container records in, pod records out.
#[derive(Default)]
pub struct PodAssembler {
    pending: HashMap<String, Pending>,
}

impl PodAssembler {
    /// A container's record: the pod's record when it was the last one awaited. `cause` is the
    /// first container's (what asked for the pod's stop).
    pub fn add(
        &mut self,
        pod: PodOf,
        member: Member,
        cause: Option<Cause>,
    ) -> Option<PodTermination> {
        let grace = pod.grace_ns.unwrap_or(DEFAULT_GRACE_NS);
        let p = self
            .pending
            .entry(pod.uid.clone())
            .or_insert_with(|| Pending {
                deadline: member.began + grace + LATE_NS,
                pod: pod.clone(),
                cause: cause.clone(),
                members: Vec::new(),
            });
        // What is known of the pod's containers grows (the API's word after the runtime's).
        for e in pod.containers {
            if !p.pod.containers.iter().any(|c| c.name == e.name) {
                p.pod.containers.push(e);
            }
        }
        p.deadline = p.deadline.min(member.began + grace + LATE_NS);
        p.members.retain(|m| m.name != member.name);
        p.members.push(member);
        let awaited: BTreeMap<&str, bool> = p
            .pod
            .containers
            .iter()
            .filter(|e| e.role != Role::Init)
            .map(|e| (e.name.as_str(), p.members.iter().any(|m| m.name == e.name)))
            .collect();
        if awaited.values().all(|done| *done) {
            let p = self.pending.remove(&pod.uid)?;
            return Some(PodTermination::new(p.pod, p.cause, p.members));
        }
        None
    }

    /// Pods whose awaited records did not all come by their deadline: what came.
    pub fn expire(&mut self, now: Mono) -> Vec<PodTermination> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(uid, _)| uid.clone())
            .collect();
        due.into_iter()
            .filter_map(|uid| self.pending.remove(&uid))
            .map(|p| PodTermination::new(p.pod, p.cause, p.members))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests;
