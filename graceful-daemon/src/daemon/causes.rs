//! Why each container was stopped, before its record goes out: the pod's facts from the watch
//! decide at once; a stop without a deletion waits (bounded) for the kubelet's `Killing` Event
//! of that one pod, looked up beside the loop.
use std::time::Instant;

use tokio::sync::mpsc;

use super::Daemon;
use crate::{
    enrich::{
        cause::{Cause, KubeletKill},
        kubelet_events::{self, LookupError},
        pods::PodFacts,
    },
    record::TerminationRecord,
};

/// A record back from its Events lookup, with what the API said.
pub(super) type CauseAnswer = (
    Box<TerminationRecord>,
    Result<Option<KubeletKill>, LookupError>,
);

/// The lookups' side of the loop: the API client, where answers come back, and whether the
/// API is failing (said once per outage, not per stop).
pub(super) struct CauseLookups {
    pub(super) client: kube::Client,
    pub(super) answers: mpsc::Sender<CauseAnswer>,
    pub(super) failing: bool,
    /// Records out on a lookup.
    pub(super) pending: usize,
}

impl Daemon {
    /// The pod facts a record's container belongs to, as the watch last said.
    fn pod_of(&self, record: &TerminationRecord) -> Option<&PodFacts> {
        let uid = record
            .info
            .as_ref()
            .and_then(|i| i.pod_uid.as_deref())
            .or(record.identity.as_ref().and_then(|i| i.pod_uid.as_deref()))?;
        self.pods.get(uid)
    }

    /// Gives the record its cause and publishes it, or first asks the API for the kubelet's
    /// word when only that can say why.
    pub(super) fn find_cause(&mut self, record: TerminationRecord) {
        let pod = self.pod_of(&record);
        // Only that one pod's namespace and uid go to the lookup.
        let asked = pod
            .filter(|p| Cause::needs_kubelet_word(&record.termination, Some(p)))
            .map(|p| (p.namespace.clone(), p.uid.clone()));
        let container = record.info.as_ref().and_then(|i| i.name.clone());
        match (asked, self.lookups.as_mut(), container) {
            (Some((namespace, uid)), Some(lookups), Some(container)) => {
                lookups.pending += 1;
                let (client, answers) = (lookups.client.clone(), lookups.answers.clone());
                let record = Box::new(record);
                tokio::spawn(async move {
                    let said =
                        kubelet_events::kubelet_kill(client, &namespace, &uid, &container).await;
                    let _ = answers.send((record, said)).await;
                });
            }
            _ => self.with_cause(record, None),
        }
    }

    /// The Events lookup answered (or failed: the record goes out with what else is known).
    pub(super) fn on_cause(&mut self, (record, said): CauseAnswer) {
        if let Some(l) = self.lookups.as_mut() {
            l.pending = l.pending.saturating_sub(1);
        }
        let kill = match said {
            Ok(kill) => {
                if let Some(l) = self.lookups.as_mut().filter(|l| l.failing) {
                    tracing::info!("the Kubernetes API answers Events lookups again");
                    l.failing = false;
                }
                kill
            }
            Err(e) => {
                if let Some(l) = self.lookups.as_mut().filter(|l| !l.failing) {
                    tracing::warn!(
                        "{e}; stops without a deletion are said `runtime` until it answers"
                    );
                    l.failing = true;
                }
                None
            }
        };
        self.with_cause(*record, kill.as_ref());
    }

    fn with_cause(&mut self, mut record: TerminationRecord, kill: Option<&KubeletKill>) {
        let pod = self.pod_of(&record);
        let cause = Cause::of(&record.termination, pod, kill);
        let container = record.info.as_ref().and_then(|i| i.name.as_deref());
        if let (Some(grace), Some(info)) =
            (cause.grace_override(pod, container), record.info.as_mut())
        {
            info.grace_period_seconds = Some(grace);
        }
        record.cause = Some(cause);
        self.emit(record, Instant::now());
    }

    /// At shutdown: the records still out on a lookup come back (each lookup ends within its
    /// timeout) and go out; then the queued Events are published.
    pub(super) async fn flush(&mut self, answers: &mut mpsc::Receiver<CauseAnswer>) {
        let deadline = tokio::time::Instant::now() + kubelet_events::LOOKUP_TIMEOUT + FLUSH_SLACK;
        while self.lookups.as_ref().is_some_and(|l| l.pending > 0) {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(answer)) => self.on_cause(answer),
                _ => break,
            }
        }
        // Pods still waiting for a record go out with what came.
        for p in self.assembler.expire(u64::MAX) {
            self.publish_pod(p);
        }
        if let Some(announcer) = self.announcer.take() {
            announcer.flush(EVENTS_FLUSH).await;
        }
    }
}

/// Beyond a lookup's own timeout, for its answer to arrive.
const FLUSH_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
/// What the Events queue gets at shutdown: the DaemonSet's grace is 10 s.
const EVENTS_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
