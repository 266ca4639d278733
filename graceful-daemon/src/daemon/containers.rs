//! What the loop knows of each container and does with its record: the runtime's answer
//! completed by its pod's facts, the settings the tracker needs before a stop, the record
//! published (log, metrics, /terminations) and told (Events).
use std::time::Instant;

use super::Daemon;
use crate::{
    audit::AuditEntry,
    enrich::{kubernetes::PodUpdate, ContainerInfo, HookKind},
    events::CgroupId,
    export::{
        announcer::Announcer, events::PodRef, http::lock, log, metric_labels::ContainerLabels,
    },
    identity::Identity,
    record::TerminationRecord,
    signals::Signal,
    tracker::Outcome,
};

impl Daemon {
    /// Completes a record with the runtime's view (asking it now if nothing is cached) and
    /// publishes it.
    pub(super) fn finish(&mut self, mut record: TerminationRecord) {
        if let Some(identity) = record.identity.clone() {
            match self.names.get(&identity.id) {
                Some(info) => record.info = Some(info.clone()),
                None => {
                    let cgroup = record.termination.cgroup;
                    let record = Some(Box::new(record));
                    if let Some(waiting) = self.names.ask(&identity, cgroup, record) {
                        self.publish(*waiting);
                    }
                    return;
                }
            }
        }
        self.publish(record);
    }

    pub(super) fn publish(&mut self, mut record: TerminationRecord) {
        if let Some(identity) = &record.identity {
            record.info = self.info_for(identity).or(record.info);
        }
        // A pod's sandbox is SIGKILLed by design when the pod goes: no finding. Without the
        // runtime's word, Kubernetes' pause image is recognised by its PID 1.
        let in_pod = record
            .identity
            .as_ref()
            .is_some_and(|i| i.pod_uid.is_some());
        let sandbox = match &record.info {
            Some(info) => info.sandbox,
            None => in_pod && record.termination.init.comm == "pause",
        };
        if sandbox {
            tracing::debug!(container = %record.display_name(), "pod sandbox stopped");
            return;
        }
        self.find_cause(record);
    }

    /// Sends a complete record out: log, /terminations, metrics, Events.
    pub(super) fn emit(&mut self, mut record: TerminationRecord, now: Instant) {
        record.judge_pre_stop(&self.driver.clock);
        let json = record.to_json(&self.driver.clock);
        self.announce_termination(&record, now);
        log::termination(self.log_format, &json, &record.display_name());
        lock(&self.state).push_record(&json);
        // An interim record (processes held past their SIGKILL): its final record follows, and
        // only that one counts, with what is known of the container still at hand.
        if record.termination.outcome == Outcome::Stuck {
            self.metrics.unkillable();
            return;
        }
        let labels = ContainerLabels::of_record(&record);
        let app_grace = record.app_grace_seconds(&self.driver.clock);
        self.metrics.termination(&labels, &record, app_grace);
        self.add_to_pod(&record);
        if let Some(identity) = &record.identity {
            self.names.forget(&identity.id);
        }
    }

    /// What is known of a container: the runtime's answer, completed by its pod's facts.
    pub(super) fn info_for(&self, identity: &Identity) -> Option<ContainerInfo> {
        let cached = self.names.get(&identity.id);
        let pod_uid = cached
            .and_then(|i| i.pod_uid.as_deref())
            .or(identity.pod_uid.as_deref());
        let pod = pod_uid.and_then(|uid| self.pods.get(uid));
        match (cached, pod) {
            (None, None) => None,
            (cached, pod) => {
                let mut info = cached.cloned().unwrap_or_default();
                if let Some(pod) = pod {
                    info.merge_pod(pod, &identity.id);
                }
                Some(info)
            }
        }
    }

    /// Tells the tracker what it needs of a container before its stop: its grace, its own stop
    /// signal, the program of its preStop exec hook.
    pub(super) fn configure(&mut self, cgroup: CgroupId, identity: &Identity) {
        let Some(info) = self.info_for(identity) else {
            return;
        };
        let tracker = &mut self.driver.pipeline.tracker;
        if let Some(grace) = info.grace_period_seconds {
            tracker.set_grace(cgroup, grace);
        }
        if let Some(signal) = info.stop_signal {
            tracker.set_stop_signal(cgroup, signal);
        }
        if let Some(program) = info
            .pre_stop
            .as_ref()
            .filter(|h| h.kind == HookKind::Exec)
            .and_then(|h| h.program.as_deref())
        {
            tracker.set_pre_stop_program(cgroup, program);
            if let Some(marks) = self.marks.as_mut() {
                marks.set_hook(cgroup, program);
            }
        }
    }

    pub(super) fn on_pod(&mut self, update: PodUpdate) {
        let changed = self.pods.apply(update, Instant::now());
        if changed.is_empty() {
            return;
        }
        for pod in changed.iter().filter_map(|uid| self.pods.get(uid)) {
            tracing::debug!(
                uid = %pod.uid,
                deleted = pod.deleted_at.is_some(),
                disruption = pod.disruption.as_ref().map(|d| d.reason.as_str()),
                status_reason = pod.status_reason.as_deref(),
                "pod facts from the API"
            );
        }
        let containers: Vec<(CgroupId, Identity)> = self
            .seen
            .iter()
            .filter_map(|&cgroup| Some((cgroup, self.identity(cgroup)?)))
            .filter(|(_, i)| i.pod_uid.as_ref().is_some_and(|u| changed.contains(u)))
            .collect();
        for (cgroup, identity) in containers {
            self.configure(cgroup, &identity);
            // The API says the pod is terminating: what its containers' own processes signal
            // from now on (a preStop hook of any program, the app itself) is seen.
            let deleted = self.pod_terminating(&identity);
            if let (true, Some(marks)) = (deleted, self.marks.as_mut()) {
                marks.mark_stopping(cgroup);
            }
        }
    }

    fn pod_terminating(&self, identity: &Identity) -> bool {
        identity
            .pod_uid
            .as_deref()
            .and_then(|uid| self.pods.get(uid))
            .is_some_and(|pod| pod.deleted_at.is_some())
    }

    /// Takes the kernel's marks off containers no longer being stopped: neither a termination
    /// under way nor a terminating pod (`StopMarks::sweep`).
    pub(super) fn sweep_marks(&mut self) {
        let Some(mut marks) = self.marks.take() else {
            return;
        };
        marks.sweep(Instant::now(), |cgroup| {
            self.driver.pipeline.tracker.stopping(cgroup)
                || self
                    .identity(cgroup)
                    .is_some_and(|i| self.pod_terminating(&i))
        });
        self.marks = Some(marks);
    }

    /// Forgets pods deleted from the API long enough ago, and pods' Event rates.
    pub(super) fn forget_departed(&mut self, now: Instant) {
        self.pods.forget_departed(now);
        if let Some(announcer) = self.announcer.as_mut() {
            announcer.prune(now);
        }
    }

    /// The pod and container an Event about this container is regarding, when the API knows it.
    pub(super) fn pod_ref(&self, info: Option<&ContainerInfo>) -> Option<PodRef> {
        let info = info?;
        let uid = info.pod_uid.clone()?;
        let pod = self.pods.get(&uid)?;
        Some(PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid,
            container: info.name.clone()?,
            owner: pod.owner.clone(),
        })
    }

    /// Events for a stop that went wrong.
    pub(super) fn announce_termination(&mut self, record: &TerminationRecord, now: Instant) {
        if self.announcer.is_none() {
            return;
        }
        let Some(pod) = self.pod_ref(record.info.as_ref()) else {
            return;
        };
        let t = &record.termination;
        // The cause first ("Evicted through the eviction API; ..."), then what happened, and
        // what the exit code means.
        let mut note = format!("{}; {}", record.cause().words(), t.explanation);
        if let Some(exit) = t.exit {
            note += &format!(" Exit: {}.", exit.meaning());
        }
        if let Some(announcer) = self.announcer.as_mut() {
            announcer.stop(pod, t.verdict, t.outcome, &note, now);
        }
    }

    /// The audit's findings: running containers whose PID 1 would drop their stop signal.
    pub(super) fn announce_risks(&mut self, entries: &[AuditEntry]) {
        if !self.announcer.as_ref().is_some_and(Announcer::tells_risks) {
            return;
        }
        let now = Instant::now();
        for e in entries.iter().filter(|e| e.stop_signal_dropped()) {
            let info = self.info_for(&e.main.identity);
            if info.as_ref().is_some_and(|i| i.sandbox) {
                continue;
            }
            let Some(pod) = self.pod_ref(info.as_ref()) else {
                continue;
            };
            let info = info.unwrap_or_default();
            if let Some(announcer) = self.announcer.as_mut() {
                announcer.risk(
                    pod,
                    info.workload.as_deref(),
                    info.image.as_deref(),
                    &e.explanation(),
                    now,
                );
            }
        }
    }

    /// The stop signal of a running container: its own, else SIGTERM.
    pub(super) fn stop_signal_of(&self, identity: &Identity) -> Signal {
        self.info_for(identity)
            .and_then(|i| i.stop_signal)
            .unwrap_or(Signal::TERM)
    }
}
