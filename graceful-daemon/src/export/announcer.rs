//! What the daemon tells through Kubernetes Events: a stop that went wrong, on the Pod (and its
//! workload), and an audit finding once per workload, container and image. Decides what is said
//! and how often; [`EventSink`] queues it within the rate limits.
use std::{collections::HashSet, time::Instant};

use kube::runtime::events::EventType;

use super::events::{AuditEvents, EventSink, PodEvent, PodRef, Reason};
use crate::tracker::{Outcome, Verdict};

/// Audit findings remembered at most; beyond, they may be told again (a node never has so many).
const TOLD_MAX: usize = 8192;

pub struct Announcer {
    sink: EventSink,
    /// Audit findings already told: (namespace, workload or pod, container, image).
    told: HashSet<String>,
}

impl Announcer {
    /// Publishes the Events still queued, for at most `within` (at shutdown).
    pub async fn flush(self, within: std::time::Duration) {
        self.sink.flush(within).await;
    }

    pub fn new(sink: EventSink) -> Announcer {
        Announcer {
            sink,
            told: HashSet::new(),
        }
    }

    fn offer(&mut self, pod: PodRef, reason: Reason, note: &str, type_: EventType, now: Instant) {
        let event = PodEvent {
            pod,
            reason,
            note: note.to_string(),
            type_,
        };
        self.sink.offer(event, now);
    }

    /// The Events a stop deserves (none for a graceful one): [`Reason::of`].
    pub fn stop(
        &mut self,
        pod: PodRef,
        verdict: Verdict,
        outcome: Outcome,
        explanation: &str,
        now: Instant,
    ) {
        for reason in Reason::of(verdict, outcome) {
            self.offer(pod.clone(), reason, explanation, EventType::Warning, now);
        }
    }

    /// `SidecarStoppedFirst` on the pod (about the sidecar that went first), Warning.
    pub fn sidecar_first(&mut self, pod: PodRef, note: &str, now: Instant) {
        self.offer(
            pod,
            Reason::SidecarStoppedFirst,
            note,
            EventType::Warning,
            now,
        );
    }

    /// Whether audit findings become Events at all (`--audit-events off`: no).
    pub fn tells_risks(&self) -> bool {
        self.sink.options().audit != AuditEvents::Off
    }

    /// `PID1IgnoresStopSignal` for a running container whose PID 1 would drop its stop signal:
    /// once per workload (a bare pod: the pod), container and image, whatever the number of its
    /// pods and restarts; Warning, Normal or never (`--audit-events`).
    pub fn risk(
        &mut self,
        pod: PodRef,
        workload: Option<&str>,
        image: Option<&str>,
        note: &str,
        now: Instant,
    ) {
        let type_ = match self.sink.options().audit {
            AuditEvents::Off => return,
            AuditEvents::Warning => EventType::Warning,
            AuditEvents::Normal => EventType::Normal,
        };
        if self.told.len() >= TOLD_MAX {
            self.told.clear();
        }
        let owner = workload.map_or_else(|| format!("Pod/{}", pod.name), str::to_string);
        let key = format!(
            "{}/{owner}/{}/{}",
            pod.namespace,
            pod.container,
            image.unwrap_or("")
        );
        if self.told.insert(key) {
            self.offer(pod, Reason::Pid1IgnoresStopSignal, note, type_, now);
        }
    }

    pub fn prune(&mut self, now: Instant) {
        self.sink.prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::events::EventOptions;
    use prometheus_client::metrics::family::Family;
    use tokio::sync::mpsc;

    fn announcer(audit: AuditEvents) -> (Announcer, mpsc::Receiver<PodEvent>) {
        let (tx, rx) = mpsc::channel(100);
        let options = EventOptions {
            audit,
            ..Default::default()
        };
        (
            Announcer::new(EventSink::with_queue(tx, options, Family::default())),
            rx,
        )
    }

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            container: "app".into(),
            owner: None,
        }
    }

    fn drained(rx: &mut mpsc::Receiver<PodEvent>) -> Vec<PodEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn an_audit_finding_is_told_once_per_workload_container_and_image() {
        let (mut a, mut rx) = announcer(AuditEvents::Normal);
        let now = Instant::now();
        for name in ["web-1", "web-2", "web-1"] {
            a.risk(
                pod(name),
                Some("Deployment/web"),
                Some("shop/web:1"),
                "PID 1 ...",
                now,
            );
        }
        a.risk(
            pod("web-3"),
            Some("Deployment/web"),
            Some("shop/web:2"),
            "PID 1 ...",
            now,
        );
        a.risk(pod("bare"), None, Some("shop/web:1"), "PID 1 ...", now);
        let told = drained(&mut rx);
        let names: Vec<&str> = told.iter().map(|e| e.pod.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-3", "bare"], "a new image, a bare pod");
        assert!(told.iter().all(|e| e.type_ == EventType::Normal));
    }

    #[test]
    fn audit_events_off_tells_no_finding_but_every_bad_stop() {
        let (mut a, mut rx) = announcer(AuditEvents::Off);
        assert!(!a.tells_risks());
        let now = Instant::now();
        a.risk(pod("web-1"), Some("Deployment/web"), None, "PID 1 ...", now);
        assert!(drained(&mut rx).is_empty());
        a.stop(
            pod("web-1"),
            Verdict::Graceful,
            Outcome::Exited,
            "fine",
            now,
        );
        assert!(drained(&mut rx).is_empty(), "a graceful stop says nothing");
        a.stop(
            pod("web-1"),
            Verdict::SwallowedByShellPid1,
            Outcome::KilledAfterGrace,
            "PID 1 is a shell",
            now,
        );
        let reasons: Vec<Reason> = drained(&mut rx).iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [Reason::SigkillAfterGrace, Reason::StopSignalIgnored]
        );
    }
}
