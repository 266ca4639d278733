//! Prometheus metrics (OpenMetrics text), with bounded cardinality: the series of a container
//! are dropped once it has been gone for longer than the TTL.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use connections::ConnectionMetrics;
use node::NodeMetrics;
use pods::PodMetrics;

use super::{
    exposition::Exposition,
    health::{registered, registered_as, Health, ProcessMetrics},
    metric_labels::*,
};
use crate::{
    events::SignalCounts,
    record::TerminationRecord,
    tracker::{Outcome, Verdict},
};

/// The label sets one container used, so they can all be dropped together.
#[derive(Debug, Default)]
struct Series {
    gone_at: Option<Instant>,
    /// The PID 1 risk gauge's labels while it runs.
    risk: Option<RiskLabels>,
    signals: HashSet<ContainerSignalLabels>,
    terminations: HashSet<TerminationLabels>,
    after_grace: HashSet<VerdictLabels>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
}

fn ratio_histogram() -> Histogram {
    Histogram::new([0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1])
}

/// Running containers: the stop-relevant signals they get and their PID 1's risk.
struct ContainerMetrics {
    signals: Family<ContainerSignalLabels, Counter>,
    pid1_ignores: Family<RiskLabels, Gauge>,
}

impl ContainerMetrics {
    fn register(registry: &mut Registry) -> ContainerMetrics {
        ContainerMetrics {
            signals: registered(
                registry,
                "container_signals",
                "Stop-relevant signals that reached a container's processes, by the kernel's result",
                None,
            ),
            pid1_ignores: registered(
                registry,
                "pid1_ignores_stop_signal",
                "1 when a running container's PID 1 would have its stop signal dropped by the kernel",
                None,
            ),
        }
    }
}

/// Stopped containers: outcomes and verdicts, SIGKILLs after the grace, durations.
struct TerminationMetrics {
    terminations: Family<TerminationLabels, Counter>,
    workloads: Family<WorkloadLabels, Counter>,
    sigkill_after_grace: Family<VerdictLabels, Counter>,
    stop_signal_ignored: Family<ContainerLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    grace_used: Family<NamespaceContainer, Histogram, fn() -> Histogram>,
}

impl TerminationMetrics {
    fn register(registry: &mut Registry) -> TerminationMetrics {
        TerminationMetrics {
            terminations: registered(
                registry,
                "terminations",
                "Containers stopped, by outcome, verdict and cause (what asked for the stop)",
                None,
            ),
            workloads: registered(
                registry,
                "workload_terminations",
                "Containers stopped, by workload (workload_type, workload), outcome, verdict and cause",
                None,
            ),
            sigkill_after_grace: registered(
                registry,
                "sigkill_after_grace",
                "Containers the runtime had to SIGKILL after the grace period, by verdict",
                None,
            ),
            stop_signal_ignored: registered(
                registry,
                "stop_signal_ignored",
                "Stops whose stop signal the kernel dropped at PID 1",
                None,
            ),
            duration: registered_as(
                registry,
                "termination_duration",
                "From the stop signal to the last process gone",
                Some(Unit::Seconds),
                Family::new_with_constructor(duration_histogram),
            ),
            grace_used: registered_as(
                registry,
                "grace_period_used",
                "Termination duration over the grace period the app had (after its preStop hook)",
                Some(Unit::Other("ratio".into())),
                Family::new_with_constructor(ratio_histogram),
            ),
        }
    }
}

/// The metric families and the book of which series each container and workload holds:
/// owned by the event loop, which alone writes them.
pub struct Metrics {
    registry: Exposition,
    node: NodeMetrics,
    pub health: Health,
    containers: ContainerMetrics,
    stops: TerminationMetrics,
    pods: PodMetrics,
    connections: ConnectionMetrics,
    node_counts: SignalCounts,
    series: HashMap<ContainerLabels, Series>,
    /// Workload series and when a stop last counted in each: dropped `workload_ttl` after.
    workloads: HashMap<WorkloadLabels, Instant>,
    workload_ttl: Duration,
    /// Histogram label sets by (namespace, container): shared by the pods of a workload.
    durations: HashMap<NamespaceContainer, HashSet<DurationLabels>>,
    ttl: Duration,
}

impl Metrics {
    /// `ttl`: how long a gone container's series stay; `workload_ttl`: how long a workload's
    /// stop counts stay after its last stop (hours: what a dashboard's range looks back over).
    pub fn new(ttl: Duration, workload_ttl: Duration) -> Metrics {
        let mut registry = Registry::default();
        let process = ProcessMetrics::register(&mut registry);
        let graceful = registry.sub_registry_with_prefix("graceful");
        let node = NodeMetrics::register(graceful);
        let containers = ContainerMetrics::register(graceful);
        let stops = TerminationMetrics::register(graceful);
        let pods = PodMetrics::register(graceful);
        let connections = ConnectionMetrics::register(graceful);
        let health = Health::register(graceful, process);
        Metrics {
            node,
            health,
            containers,
            stops,
            pods,
            connections,
            registry: Exposition::new(registry),
            workload_ttl,
            node_counts: SignalCounts::default(),
            series: HashMap::new(),
            durations: HashMap::new(),
            workloads: HashMap::new(),
            ttl,
        }
    }

    /// The registry for the HTTP server.
    pub fn exposition(&self) -> Exposition {
        self.registry.clone()
    }

    /// OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        self.registry.encode()
    }

    /// Brings the node-wide counters up to the kernel's per-CPU totals.
    pub fn node_signals(&mut self, now: SignalCounts) {
        for &(signal, result, total) in &now.0 {
            let delta = total.saturating_sub(self.node_counts.get(signal, result));
            if delta > 0 {
                let labels = SignalLabels {
                    signal: signal.to_string(),
                    result: result.as_str().into(),
                };
                self.node.signals.get_or_create(&labels).inc_by(delta);
            }
        }
        self.node_counts = now;
    }

    pub fn events_lost(&self, reason: LossKind, count: u64) {
        if count > 0 {
            self.node
                .events_lost
                .get_or_create(&reason.labels())
                .inc_by(count);
        }
    }

    /// An interim `unkillable` record: a node's problem (a hung mount), counted per node.
    pub fn unkillable(&self) {
        self.node.unkillable.inc();
    }

    pub fn audited(&self) {
        self.node.audits.inc();
    }

    pub fn tracked(&self, kind: Tracked, count: usize) {
        self.node
            .tracked
            .get_or_create(&kind.labels())
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Containers whose series are kept (until their TTL after they are gone).
    pub fn series_count(&self) -> usize {
        self.series.len() + self.workloads.len()
    }

    pub fn container_signal(&mut self, who: &ContainerLabels, signal: &str, result: &str) {
        let labels = ContainerSignalLabels {
            namespace: who.namespace.clone(),
            pod: who.pod.clone(),
            container: who.container.clone(),
            signal: signal.into(),
            result: result.into(),
        };
        self.containers.signals.get_or_create(&labels).inc();
        self.series
            .entry(who.clone())
            .or_default()
            .signals
            .insert(labels);
    }

    /// One stop: `app_grace` is the grace the app had after its preStop hook (seconds).
    pub fn termination(
        &mut self,
        who: &ContainerLabels,
        record: &TerminationRecord,
        app_grace: Option<f64>,
    ) {
        let t = &record.termination;
        let (outcome, verdict) = (
            t.outcome.as_str().to_string(),
            t.verdict.as_str().to_string(),
        );
        self.node
            .terminations
            .get_or_create(&OutcomeVerdictLabels {
                outcome: outcome.clone(),
                verdict: verdict.clone(),
            })
            .inc();
        let cause = record.cause().kind.as_str().to_string();
        let series = self.series.entry(who.clone()).or_default();
        let labels = TerminationLabels {
            namespace: who.namespace.clone(),
            pod: who.pod.clone(),
            container: who.container.clone(),
            outcome: outcome.clone(),
            verdict: verdict.clone(),
            cause: cause.clone(),
        };
        self.stops.terminations.get_or_create(&labels).inc();
        series.terminations.insert(labels);
        let (workload_type, workload) =
            workload_parts(record.info.as_ref().and_then(|i| i.workload.as_deref()));
        let workload = WorkloadLabels {
            namespace: who.namespace.clone(),
            workload_type,
            workload,
            outcome: outcome.clone(),
            verdict: verdict.clone(),
            cause,
        };
        self.stops.workloads.get_or_create(&workload).inc();
        if let Some(c) = &t.connections {
            let w = record.info.as_ref().and_then(|i| i.workload.as_deref());
            self.connections.count(&who.namespace, w, c);
        }
        self.workloads.insert(workload, Instant::now());
        if t.outcome == Outcome::KilledAfterGrace {
            let labels = VerdictLabels {
                namespace: who.namespace.clone(),
                pod: who.pod.clone(),
                container: who.container.clone(),
                verdict,
            };
            self.stops.sigkill_after_grace.get_or_create(&labels).inc();
            series.after_grace.insert(labels);
        }
        if matches!(
            t.verdict,
            Verdict::SwallowedByShellPid1 | Verdict::Pid1IgnoresStopSignal
        ) {
            self.stops.stop_signal_ignored.get_or_create(who).inc();
        }
        series.gone_at.get_or_insert_with(Instant::now);
        let labels = DurationLabels {
            namespace: who.namespace.clone(),
            container: who.container.clone(),
            outcome,
        };
        self.stops
            .duration
            .get_or_create(&labels)
            .observe(t.duration_seconds());
        let name = NamespaceContainer {
            namespace: who.namespace.clone(),
            container: who.container.clone(),
        };
        self.durations
            .entry(name.clone())
            .or_default()
            .insert(labels);
        if let Some(grace) = app_grace.filter(|g| *g > 0.0) {
            self.stops
                .grace_used
                .get_or_create(&name)
                .observe(t.duration_seconds() / grace);
        }
    }

    /// The audit gauge for the running containers (with their workload, "Deployment/web");
    /// containers no longer running lose theirs. A running container's grace-used histogram
    /// exists (empty) before its first stop, so that `increase()` counts that stop.
    pub fn audit(&mut self, running: &[(ContainerLabels, Option<String>, bool)]) {
        let keep: HashSet<&ContainerLabels> = running.iter().map(|(l, _, _)| l).collect();
        for (who, s) in self.series.iter_mut() {
            if !keep.contains(who) {
                if let Some(risk) = s.risk.take() {
                    self.containers.pid1_ignores.remove(&risk);
                }
            }
        }
        for (who, workload, ignores) in running {
            let (workload_type, workload) = workload_parts(workload.as_deref());
            let risk = RiskLabels {
                namespace: who.namespace.clone(),
                workload_type,
                workload,
                pod: who.pod.clone(),
                container: who.container.clone(),
            };
            self.containers
                .pid1_ignores
                .get_or_create(&risk)
                .set(i64::from(*ignores));
            let series = self.series.entry(who.clone()).or_default();
            if let Some(old) = series.risk.replace(risk.clone()).filter(|o| *o != risk) {
                self.containers.pid1_ignores.remove(&old);
            }
            if !who.namespace.is_empty() {
                let _ = self.stops.grace_used.get_or_create(&NamespaceContainer {
                    namespace: who.namespace.clone(),
                    container: who.container.clone(),
                });
            }
        }
    }

    /// Marks a container gone (its cgroup is removed); its series go after the TTL.
    pub fn gone(&mut self, who: &ContainerLabels) {
        if let Some(s) = self.series.get_mut(who) {
            s.gone_at.get_or_insert_with(Instant::now);
            if let Some(risk) = s.risk.take() {
                self.containers.pid1_ignores.remove(&risk);
            }
        }
    }

    /// Containers known to the metrics that are not marked gone.
    pub fn live(&self) -> Vec<ContainerLabels> {
        self.series
            .iter()
            .filter(|(_, s)| s.gone_at.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops every series of containers gone for longer than the TTL, and of workloads with
    /// no stop for as long.
    /// A pod's stop, by its pod verdict.
    pub fn pod_termination(&mut self, namespace: &str, workload: Option<&str>, verdict: &str) {
        self.pods.count(namespace, workload, verdict);
    }

    pub fn prune(&mut self, now: Instant) {
        let ttl = self.workload_ttl;
        self.pods.prune(now, ttl);
        self.connections.prune(now, ttl);
        let family = &self.stops.workloads;
        self.workloads.retain(|labels, at| {
            let keep = now.saturating_duration_since(*at) < ttl;
            if !keep {
                family.remove(labels);
            }
            keep
        });
        let expired: Vec<ContainerLabels> = self
            .series
            .iter()
            .filter(|(_, s)| s.gone_at.is_some_and(|g| now.duration_since(g) >= self.ttl))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let Some(s) = self.series.remove(&key) else {
                continue;
            };
            s.signals.iter().for_each(|l| {
                self.containers.signals.remove(l);
            });
            s.terminations.iter().for_each(|l| {
                self.stops.terminations.remove(l);
            });
            s.after_grace.iter().for_each(|l| {
                self.stops.sigkill_after_grace.remove(l);
            });
            self.stops.stop_signal_ignored.remove(&key);
            if let Some(risk) = &s.risk {
                self.containers.pid1_ignores.remove(risk);
            }
            // Histograms are per (namespace, container): drop them when no pod uses the name.
            let shared =
                |k: &ContainerLabels| k.namespace == key.namespace && k.container == key.container;
            if !self.series.keys().any(shared) {
                let name = NamespaceContainer {
                    namespace: key.namespace.clone(),
                    container: key.container.clone(),
                };
                for l in self.durations.remove(&name).unwrap_or_default() {
                    self.stops.duration.remove(&l);
                }
                self.stops.grace_used.remove(&name);
            }
        }
    }
}

mod connections;
mod kept;
mod node;
mod pods;

#[cfg(test)]
mod tests;
