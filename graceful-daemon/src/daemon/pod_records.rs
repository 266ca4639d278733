//! The pod as a whole: each published container record joins its pod's; a pod record goes out
//! (log, /terminations, metrics, `SidecarStoppedFirst`) once every container of the pod has
//! one, or its grace is long past.
use std::time::Instant;

use super::Daemon;
use crate::{
    clock::monotonic_now,
    enrich::cause::CauseKind,
    export::{events::PodRef, http::lock, log},
    pod_termination::{sidecar_names, Expected, Member, PodOf, PodTermination, PodVerdict, Role},
    record::TerminationRecord,
};

impl Daemon {
    /// A container's record joins its pod's. Only when the runtime or the API named the
    /// container and its pod: without them, a pod's containers cannot be told.
    pub(super) fn add_to_pod(&mut self, record: &TerminationRecord) {
        let Some(info) = record.info.as_ref() else {
            return;
        };
        let (Some(uid), Some(name)) = (info.pod_uid.clone(), info.name.clone()) else {
            return;
        };
        // A container restarted in a running pod (a failed probe): no pod stop.
        let restart = [
            CauseKind::LivenessProbe,
            CauseKind::StartupProbe,
            CauseKind::Restart,
        ];
        if record
            .cause
            .as_ref()
            .is_some_and(|c| restart.contains(&c.kind))
        {
            return;
        }
        let facts = self.pods.get(&uid);
        let containers: Vec<Expected> = match facts {
            Some(f) => f
                .containers
                .iter()
                .map(|c| Expected {
                    name: c.name.clone(),
                    role: c.role,
                    native: c.native,
                })
                .collect(),
            None => {
                let sidecars = sidecar_names(None);
                self.names
                    .siblings(&uid)
                    .into_iter()
                    .map(|name| Expected {
                        role: if sidecars.contains(&name) {
                            Role::Sidecar
                        } else {
                            Role::App
                        },
                        name,
                        native: false,
                    })
                    .collect()
            }
        };
        let (role, native) = containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.role, c.native))
            .unwrap_or((Role::App, false));
        let pod = PodOf {
            namespace: info
                .namespace
                .clone()
                .or(facts.map(|f| f.namespace.clone()))
                .unwrap_or_default(),
            name: info
                .pod
                .clone()
                .or(facts.map(|f| f.name.clone()))
                .unwrap_or_default(),
            workload: info.workload.clone(),
            grace_ns: facts
                .and_then(|f| f.grace_period_seconds)
                .or(info.grace_period_seconds)
                .map(|g| (g * 1e9) as u64),
            uid,
            containers,
        };
        let member = Member::of(record, name, role, native);
        if let Some(p) = self.assembler.add(pod, member, record.cause.clone()) {
            self.publish_pod(p);
        }
    }

    /// Pods whose records did not all come in time: what came.
    pub(super) fn expire_pods(&mut self) {
        for p in self.assembler.expire(monotonic_now()) {
            self.publish_pod(p);
        }
    }

    pub(super) fn publish_pod(&mut self, p: PodTermination) {
        let json = p.to_json(&self.driver.clock);
        let name = format!("pod {}/{}", p.pod.namespace, p.pod.name);
        log::termination(self.log_format, &json, &name);
        lock(&self.state).push_record(&json);
        self.metrics.pod_termination(
            &p.pod.namespace,
            p.pod.workload.as_deref(),
            p.verdict.as_str(),
        );
        if p.verdict != PodVerdict::SidecarStoppedFirst {
            return;
        }
        // About the sidecar that went first: the first member the explanation names.
        let Some(sidecar) = p
            .members
            .iter()
            .find(|m| p.explanation.starts_with(&m.name))
        else {
            return;
        };
        let owner = self.pods.get(&p.pod.uid).and_then(|f| f.owner.clone());
        if let Some(announcer) = self.announcer.as_mut() {
            let pod = PodRef {
                namespace: p.pod.namespace.clone(),
                name: p.pod.name.clone(),
                uid: p.pod.uid.clone(),
                container: sidecar.name.clone(),
                owner,
            };
            announcer.sidecar_first(pod, &p.explanation, Instant::now());
        }
    }
}
