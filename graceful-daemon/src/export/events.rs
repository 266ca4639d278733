//! Kubernetes Events (events.k8s.io/v1) on the Pod: what `kubectl describe pod` shows. Offered
//! from the loop without waiting (a bounded queue, a rate limit per pod); a task beside it
//! publishes them, folding repeats into series.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};
use tokio::sync::mpsc;

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
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SigkillAfterGrace => "SIGKILLAfterGrace",
            Reason::StopSignalIgnored => "StopSignalIgnored",
            Reason::StopSignalNotForwarded => "StopSignalNotForwarded",
            Reason::Pid1IgnoresStopSignal => "PID1IgnoresStopSignal",
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
}

/// The pod (and container) an Event is about.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
}

#[derive(Debug, Clone)]
pub struct PodEvent {
    pub pod: PodRef,
    pub reason: Reason,
    pub note: String,
}

/// The API's limit on a note.
const NOTE_MAX: usize = 1024;
/// Events waiting to be published; beyond, new ones are dropped (and counted).
const QUEUE: usize = 256;
/// Per pod: a burst of this many Events, then one per [`REFILL`].
const BURST: f64 = 5.0;
const REFILL: Duration = Duration::from_secs(12);
/// One publish may take this long before it is given up (a slow API server).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The loop's end of the Events queue.
pub struct EventSink {
    tx: mpsc::Sender<PodEvent>,
    buckets: HashMap<String, Bucket>,
    /// Events not offered: over a pod's rate, or the queue full.
    pub dropped: u64,
}

impl EventSink {
    /// Starts the publisher: reportingController `graceful`, reportingInstance `node`.
    pub fn start(client: Client, node: &str) -> EventSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reporter = Reporter {
            controller: "graceful".into(),
            instance: Some(node.to_string()),
        };
        tokio::spawn(publish(Recorder::new(client, reporter), rx));
        EventSink::with_queue(tx)
    }

    fn with_queue(tx: mpsc::Sender<PodEvent>) -> EventSink {
        EventSink {
            tx,
            buckets: HashMap::new(),
            dropped: 0,
        }
    }

    /// Queues an Event unless its pod is over its rate or the queue is full; never waits.
    pub fn offer(&mut self, event: PodEvent, now: Instant) -> bool {
        let bucket = self.buckets.entry(event.pod.uid.clone()).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() / REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            self.dropped += 1;
            tracing::debug!(pod = %event.pod.name, reason = event.reason.as_str(), "Event over the pod's rate: dropped");
            return false;
        }
        bucket.tokens -= 1.0;
        if self.tx.try_send(event).is_err() {
            self.dropped += 1;
            return false;
        }
        true
    }

    /// Forgets the rate of pods that are full again (a bound on the map).
    pub fn prune(&mut self, now: Instant) {
        let full = REFILL.mul_f64(BURST);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < full);
    }
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
    let mut note = redact::text(&event.note);
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    let api = Event {
        type_: EventType::Warning,
        reason: event.reason.as_str().into(),
        note: Some(note),
        action: event.reason.action().into(),
        secondary: None,
    };
    (api, reference)
}

async fn publish(recorder: Recorder, mut rx: mpsc::Receiver<PodEvent>) {
    let mut failing = false;
    while let Some(event) = rx.recv().await {
        let (api, reference) = to_api(&event);
        let error =
            match tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&api, &reference)).await {
                Ok(Ok(())) => {
                    failing = false;
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
            };
        if !failing {
            tracing::warn!(pod = %event.pod.name, reason = event.reason.as_str(), "cannot publish the Event: {error} (further failures at debug level)");
            failing = true;
        } else {
            tracing::debug!(pod = %event.pod.name, "cannot publish the Event: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uid: &str, container: &str) -> PodEvent {
        PodEvent {
            pod: PodRef {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: uid.into(),
                container: container.into(),
            },
            reason: Reason::StopSignalIgnored,
            note: "PID 1 is a shell (sh) ... Authorization: Bearer s3cr3t".into(),
        }
    }

    #[test]
    fn reasons_follow_the_verdicts() {
        use Outcome::*;
        use Reason::*;
        assert_eq!(
            Reason::of(Verdict::SwallowedByShellPid1, KilledAfterGrace),
            [SigkillAfterGrace, StopSignalIgnored]
        );
        assert_eq!(
            Reason::of(Verdict::Pid1IgnoresStopSignal, KilledAfterGrace),
            [SigkillAfterGrace, StopSignalIgnored]
        );
        assert_eq!(
            Reason::of(Verdict::NotForwarded, KilledAfterGrace),
            [SigkillAfterGrace, StopSignalNotForwarded]
        );
        assert_eq!(
            Reason::of(Verdict::SlowShutdown, KilledAfterGrace),
            [SigkillAfterGrace]
        );
        for quiet in [
            Verdict::Graceful,
            Verdict::KilledWithoutStopSignal,
            Verdict::OomKilled,
            Verdict::Unknown,
        ] {
            assert_eq!(Reason::of(quiet, Killed), [], "{quiet:?}");
        }
        assert_eq!(
            Reason::of(Verdict::Unknown, KilledAfterGrace),
            [],
            "a record that cannot be judged says nothing"
        );
    }

    #[test]
    fn a_pod_over_its_rate_is_dropped_and_a_full_queue_never_waits() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut sink = EventSink::with_queue(tx);
        let t0 = Instant::now();
        let offered = (0..8).filter(|_| sink.offer(event("a", "app"), t0)).count();
        assert_eq!(offered, 5);
        assert!(
            sink.offer(event("b", "app"), t0),
            "another pod has its own rate"
        );
        assert!(
            sink.offer(event("a", "app"), t0 + REFILL),
            "a token came back"
        );
        assert_eq!(sink.dropped, 3);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 7);

        let (tx, _rx) = mpsc::channel(1);
        let mut sink = EventSink::with_queue(tx);
        assert!(sink.offer(event("a", "app"), t0));
        assert!(
            !sink.offer(event("b", "app"), t0),
            "full queue: dropped, not awaited"
        );
    }

    #[test]
    fn containers_stay_apart_and_notes_carry_no_secrets() {
        let (api, reference) = to_api(&event("a", "app"));
        let (_, other) = to_api(&event("a", "sidecar"));
        assert_eq!(
            reference.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_ne!(reference, other);
        assert_eq!(api.reason, "StopSignalIgnored");
        assert!(matches!(api.type_, EventType::Warning));
        let note = api.note.unwrap_or_default();
        assert!(!note.contains("s3cr3t") && note.contains("PID 1"), "{note}");
        let mut long = event("a", "app");
        long.note = "é".repeat(2000);
        assert!(to_api(&long).0.note.unwrap_or_default().len() <= NOTE_MAX);
    }
}
