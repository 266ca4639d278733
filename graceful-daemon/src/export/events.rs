//! Kubernetes Events (events.k8s.io/v1): on the Pod, what `kubectl describe pod` shows, and
//! for a bad stop also on the workload that owns it (Deployment, StatefulSet, DaemonSet, Job),
//! where `kubectl describe` still finds it after a rollout deleted the pod. Offered from the
//! loop without waiting (a bounded queue, a node-wide rate limit like kubelet's, a smaller one
//! per pod, a namespace filter); a task beside it publishes them, folding repeats into series.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::ObjectReference};
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client,
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::sync::mpsc;

use super::metric_labels::EventLabels;
pub use crate::enrich::pods::Owner;
use crate::{
    redact,
    tracker::{Outcome, Verdict},
};

/// What `kubectl describe pod` shows as the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SigkillAfterGrace,
    StopSignalIgnored,
    StopSignalNotForwarded,
    Pid1IgnoresStopSignal,
    /// Processes outlived their SIGKILL: the pod will stay Terminating.
    ProcessUnkillable,
    /// A sidecar was gone while an app container of its pod still shut down.
    SidecarStoppedFirst,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SigkillAfterGrace => "SIGKILLAfterGrace",
            Reason::StopSignalIgnored => "StopSignalIgnored",
            Reason::StopSignalNotForwarded => "StopSignalNotForwarded",
            Reason::Pid1IgnoresStopSignal => "PID1IgnoresStopSignal",
            Reason::ProcessUnkillable => "ProcessUnkillable",
            Reason::SidecarStoppedFirst => "SidecarStoppedFirst",
        }
    }

    /// The Events a termination deserves: SIGKILLAfterGrace when the runtime had to kill after
    /// the grace, and the cause when PID 1 dropped the stop signal or did not forward it. None
    /// for a graceful stop, a force delete, the OOM killer (kubelet says OOMKilled) or a record
    /// that cannot be judged.
    pub fn of(verdict: Verdict, outcome: Outcome) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if verdict == Verdict::Unknown {
            return reasons;
        }
        if outcome == Outcome::KilledAfterGrace {
            reasons.push(Reason::SigkillAfterGrace);
        }
        match verdict {
            Verdict::Unkillable => reasons.push(Reason::ProcessUnkillable),
            Verdict::SwallowedByShellPid1 | Verdict::Pid1IgnoresStopSignal => {
                reasons.push(Reason::StopSignalIgnored)
            }
            Verdict::NotForwarded => reasons.push(Reason::StopSignalNotForwarded),
            _ => {}
        }
        reasons
    }

    fn action(self) -> &'static str {
        match self {
            Reason::Pid1IgnoresStopSignal => "Audit",
            _ => "Stop",
        }
    }

    /// A stop that went wrong (also told on the workload); not an audit finding.
    fn about_a_stop(self) -> bool {
        self != Reason::Pid1IgnoresStopSignal
    }
}

/// The pod (and container) an Event is about, and the controller that owns the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone)]
pub struct PodEvent {
    pub pod: PodRef,
    pub reason: Reason,
    pub note: String,
    pub type_: EventType,
}

/// What the audit's findings become: Warning Events, Normal ones, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditEvents {
    Warning,
    Normal,
    Off,
}

/// The Events settings (flags of `run`).
#[derive(Debug, Clone)]
pub struct EventOptions {
    /// Node-wide: Events written per second on average, and at most this many at once.
    pub qps: f64,
    pub burst: u32,
    pub audit: AuditEvents,
    /// Only these namespaces (empty: all), less the excluded ones.
    pub namespaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
}

impl Default for EventOptions {
    /// kubelet's own event limits (--event-qps 50, --event-burst 100).
    fn default() -> EventOptions {
        EventOptions {
            qps: 50.0,
            burst: 100,
            audit: AuditEvents::Warning,
            namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
        }
    }
}

impl EventOptions {
    pub fn wants(&self, namespace: &str) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && !self.exclude_namespaces.iter().any(|n| n == namespace)
    }
}

/// The API's limit on a note.
const NOTE_MAX: usize = 1024;
/// Events waiting to be published; beyond, new ones are dropped (and counted).
const QUEUE: usize = 256;
/// Per pod: a burst of this many Events, then one per [`REFILL`].
const POD_BURST: f64 = 5.0;
const REFILL: Duration = Duration::from_secs(12);
/// One publish may take this long before it is given up (a slow API server).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
/// ReplicaSets whose Deployment is remembered at most.
const OWNERS_KEPT: usize = 4096;

/// A token bucket: `burst` at once, `rate` per second after.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The loop's end of the Events queue.
pub struct EventSink {
    tx: mpsc::Sender<PodEvent>,
    /// The publisher task (None in tests that read the queue themselves).
    publisher: Option<tokio::task::JoinHandle<()>>,
    options: EventOptions,
    node: Bucket,
    pods: HashMap<String, Bucket>,
    counts: Family<EventLabels, Counter>,
}

impl EventSink {
    /// Starts the publisher: reportingController `graceful`, reportingInstance `node`;
    /// `counts` gets every Event by reason and result.
    pub fn start(
        client: Client,
        node: &str,
        options: EventOptions,
        counts: Family<EventLabels, Counter>,
    ) -> EventSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reporter = Reporter {
            controller: "graceful".into(),
            instance: Some(node.to_string()),
        };
        let publisher = Publisher {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            deployments: HashMap::new(),
            counts: counts.clone(),
        };
        let task = tokio::spawn(publisher.run(rx));
        let mut sink = EventSink::with_queue(tx, options, counts);
        sink.publisher = Some(task);
        sink
    }

    /// At shutdown: publishes what is queued, for at most `within`; what is left then is
    /// dropped (the DaemonSet's grace is short).
    pub async fn flush(self, within: std::time::Duration) {
        let EventSink { tx, publisher, .. } = self;
        drop(tx);
        if let Some(task) = publisher {
            if tokio::time::timeout(within, task).await.is_err() {
                tracing::warn!("Events still queued at shutdown were dropped after {within:?}");
            }
        }
    }

    pub(crate) fn with_queue(
        tx: mpsc::Sender<PodEvent>,
        options: EventOptions,
        counts: Family<EventLabels, Counter>,
    ) -> EventSink {
        EventSink {
            tx,
            publisher: None,
            node: Bucket::full(f64::from(options.burst), Instant::now()),
            options,
            pods: HashMap::new(),
            counts,
        }
    }

    pub fn options(&self) -> &EventOptions {
        &self.options
    }

    /// Queues an Event unless its namespace is not wanted, the node or its pod is over its
    /// rate, or the queue is full; never waits.
    pub fn offer(&mut self, event: PodEvent, now: Instant) -> bool {
        if !self.options.wants(&event.pod.namespace) {
            return false;
        }
        let pod = self
            .pods
            .entry(event.pod.uid.clone())
            .or_insert_with(|| Bucket::full(POD_BURST, now));
        let rate = 1.0 / REFILL.as_secs_f64();
        let limited = !pod.take(rate, POD_BURST, now)
            || !self
                .node
                .take(self.options.qps, f64::from(self.options.burst), now);
        let (result, event) = if limited {
            ("rate_limited", event)
        } else {
            match self.tx.try_send(event) {
                Ok(()) => return true,
                Err(refused) => ("queue_full", refused.into_inner()),
            }
        };
        count(&self.counts, event.reason, result);
        tracing::debug!(pod = %event.pod.name, reason = event.reason.as_str(), "Event not published: {result}");
        false
    }

    /// Forgets the rate of pods that are full again (a bound on the map).
    pub fn prune(&mut self, now: Instant) {
        let full = REFILL.mul_f64(POD_BURST);
        self.pods
            .retain(|_, b| now.saturating_duration_since(b.at) < full);
    }
}

fn count(counts: &Family<EventLabels, Counter>, reason: Reason, result: &str) {
    counts
        .get_or_create(&EventLabels {
            reason: reason.as_str().into(),
            result: result.into(),
        })
        .inc();
}

/// A note with no host pids: "sleep (pid 4242)" means nothing inside the container, the name
/// does.
fn without_host_pids(note: &str) -> String {
    let mut out = String::with_capacity(note.len());
    let mut rest = note;
    while let Some(at) = rest.find(" (pid ") {
        let after = &rest[at + 6..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..at]);
        if digits > 0 && after[digits..].starts_with(')') {
            rest = &after[digits + 1..];
        } else {
            out.push_str(" (pid ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn bounded_note(note: &str) -> String {
    let mut note = without_host_pids(&redact::text(note));
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// The Event as the API gets it: regarding the Pod, the container in `fieldPath` (as kubelet
/// does), so that two containers' findings stay two series.
pub fn to_api(event: &PodEvent) -> (Event, ObjectReference) {
    let pod = &event.pod;
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        field_path: Some(format!("spec.containers{{{}}}", pod.container)),
        ..Default::default()
    };
    let api = Event {
        type_: event.type_,
        reason: event.reason.as_str().into(),
        note: Some(bounded_note(&event.note)),
        action: event.reason.action().into(),
        secondary: None,
    };
    (api, reference)
}

/// The same finding on the workload: the note names the pod and container it happened to.
pub fn to_workload(event: &PodEvent, workload: &Owner) -> (Event, ObjectReference) {
    let (mut api, _) = to_api(event);
    let pod = &event.pod;
    api.note = Some(bounded_note(&format!(
        "Pod {} (container {}): {}",
        pod.name, pod.container, event.note
    )));
    api.secondary = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        ..Default::default()
    });
    let reference = ObjectReference {
        api_version: Some(workload.api_version.clone()),
        kind: Some(workload.kind.clone()),
        name: Some(workload.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(workload.uid.clone()),
        ..Default::default()
    };
    (api, reference)
}

struct Publisher {
    recorder: Recorder,
    client: Client,
    /// ReplicaSet uid to its Deployment (None: a bare ReplicaSet).
    deployments: HashMap<String, Option<Owner>>,
    counts: Family<EventLabels, Counter>,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<PodEvent>) {
        let mut failing = false;
        while let Some(event) = rx.recv().await {
            let (api, reference) = to_api(&event);
            let mut error = self.publish(&event, &api, &reference).await.err();
            if error.is_none() && event.reason.about_a_stop() {
                if let Some(workload) = self.workload(&event.pod).await {
                    let (api, reference) = to_workload(&event, &workload);
                    error = self.publish(&event, &api, &reference).await.err();
                }
            }
            match error {
                None => failing = false,
                Some(error) if !failing => {
                    tracing::warn!(pod = %event.pod.name, reason = event.reason.as_str(), "cannot publish the Event: {error} (further failures at debug level)");
                    failing = true;
                }
                Some(error) => {
                    tracing::debug!(pod = %event.pod.name, "cannot publish the Event: {error}")
                }
            }
        }
    }

    async fn publish(
        &self,
        event: &PodEvent,
        api: &Event,
        reference: &ObjectReference,
    ) -> Result<(), String> {
        let published =
            tokio::time::timeout(PUBLISH_TIMEOUT, self.recorder.publish(api, reference)).await;
        let result = match &published {
            Ok(Ok(())) => "published",
            _ => "failed",
        };
        count(&self.counts, event.reason, result);
        match published {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PUBLISH_TIMEOUT:?}")),
        }
    }

    /// The workload that owns the pod: its controller, or a ReplicaSet's Deployment (read
    /// once per ReplicaSet). None for a bare pod, or when the ReplicaSet cannot be read.
    async fn workload(&mut self, pod: &PodRef) -> Option<Owner> {
        let owner = pod.owner.clone()?;
        if owner.kind != "ReplicaSet" {
            return Some(owner);
        }
        if let Some(known) = self.deployments.get(&owner.uid) {
            return Some(known.clone().unwrap_or(owner));
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &pod.namespace);
        let rs = match tokio::time::timeout(PUBLISH_TIMEOUT, api.get(&owner.name)).await {
            Ok(Ok(rs)) => rs,
            Ok(Err(e)) => {
                tracing::debug!(replicaset = %owner.name, "cannot read the ReplicaSet: {e}");
                return None;
            }
            Err(_) => return None,
        };
        let deployment = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            .map(Owner::from);
        if self.deployments.len() >= OWNERS_KEPT {
            self.deployments.clear();
        }
        self.deployments
            .insert(owner.uid.clone(), deployment.clone());
        Some(deployment.unwrap_or(owner))
    }
}

#[cfg(test)]
mod tests;
