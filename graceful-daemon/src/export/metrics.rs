//! Prometheus metrics (OpenMetrics text), with bounded cardinality: the series of a container
//! are dropped once it has been gone for longer than the TTL.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry, Unit},
};

use super::metric_labels::*;
use crate::{
    events::SignalCounts,
    record::{ContainerLabels, TerminationRecord},
    tracker::{Outcome, Verdict},
};

/// The label sets one container used, so they can all be dropped together.
#[derive(Debug, Default)]
struct Series {
    gone_at: Option<Instant>,
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

/// Node-wide: every signal by the kernel's result, lost events, what the daemon holds.
struct NodeMetrics {
    signals: Family<SignalLabels, Counter>,
    events_lost: Family<LossLabels, Counter>,
    tracked: Family<KindLabels, Gauge>,
}

impl NodeMetrics {
    fn register(registry: &mut Registry) -> NodeMetrics {
        let m = NodeMetrics {
            signals: registered(
                registry,
                "signals",
                "Signals generated on the node, by signal and the kernel's result",
                None,
            ),
            events_lost: registered(
                registry,
                "events_lost",
                "Events lost on their way from the kernel, by reason",
                None,
            ),
            tracked: registered(
                registry,
                "tracked",
                "Entries the daemon holds in memory, by kind",
                None,
            ),
        };
        for kind in [
            LossKind::RingFull,
            LossKind::ReadFailed,
            LossKind::DecodeFailed,
        ] {
            let _ = m.events_lost.get_or_create(&kind.labels());
        }
        let build_info: Family<VersionLabels, Gauge> =
            registered(registry, "build_info", "Version of graceful", None);
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        m
    }
}

/// Registers a metric under `name` (the registry adds `graceful_`, the unit its suffix) and
/// returns it.
fn registered<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> M {
    registered_as(registry, name, help, unit, M::default())
}

fn registered_as<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Running containers: the stop-relevant signals they get and their PID 1's risk.
struct ContainerMetrics {
    signals: Family<ContainerSignalLabels, Counter>,
    pid1_ignores: Family<ContainerLabels, Gauge>,
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
                "Containers stopped, by outcome and verdict",
                None,
            ),
            workloads: registered(
                registry,
                "workload_terminations",
                "Containers stopped, by workload (Deployment/web), outcome and verdict",
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
                "Termination duration over the grace period the container had",
                Some(Unit::Other("ratio".into())),
                Family::new_with_constructor(ratio_histogram),
            ),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    node: NodeMetrics,
    containers: ContainerMetrics,
    stops: TerminationMetrics,
    node_counts: SignalCounts,
    series: HashMap<ContainerLabels, Series>,
    /// Workload series and when a stop last counted in each: dropped a TTL after.
    workloads: HashMap<WorkloadLabels, Instant>,
    /// Histogram label sets by (namespace, container): shared by the pods of a workload.
    durations: HashMap<NamespaceContainer, HashSet<DurationLabels>>,
    ttl: Duration,
}

impl Metrics {
    pub fn new(ttl: Duration) -> Metrics {
        let mut registry = Registry::with_prefix("graceful");
        Metrics {
            node: NodeMetrics::register(&mut registry),
            containers: ContainerMetrics::register(&mut registry),
            stops: TerminationMetrics::register(&mut registry),
            registry,
            node_counts: SignalCounts::default(),
            series: HashMap::new(),
            durations: HashMap::new(),
            workloads: HashMap::new(),
            ttl,
        }
    }

    /// OpenMetrics text, what Prometheus asks for.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
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

    pub fn termination(&mut self, who: &ContainerLabels, record: &TerminationRecord) {
        let t = &record.termination;
        let (outcome, verdict) = (
            t.outcome.as_str().to_string(),
            t.verdict.as_str().to_string(),
        );
        let series = self.series.entry(who.clone()).or_default();
        let labels = TerminationLabels {
            namespace: who.namespace.clone(),
            pod: who.pod.clone(),
            container: who.container.clone(),
            outcome: outcome.clone(),
            verdict: verdict.clone(),
        };
        self.stops.terminations.get_or_create(&labels).inc();
        series.terminations.insert(labels);
        let workload = WorkloadLabels {
            namespace: who.namespace.clone(),
            workload: record
                .info
                .as_ref()
                .and_then(|i| i.workload.clone())
                .unwrap_or_default(),
            outcome: outcome.clone(),
            verdict: verdict.clone(),
        };
        self.stops.workloads.get_or_create(&workload).inc();
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
        if let Some(grace) = record.grace_period_seconds.filter(|g| *g > 0.0) {
            self.stops
                .grace_used
                .get_or_create(&name)
                .observe(t.duration_seconds() / grace);
        }
    }

    /// The audit gauge for the running containers; containers no longer running lose theirs.
    pub fn audit(&mut self, running: &[(ContainerLabels, bool)]) {
        let keep: HashSet<&ContainerLabels> = running.iter().map(|(l, _)| l).collect();
        let stale: Vec<ContainerLabels> = self
            .series
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for k in &stale {
            self.containers.pid1_ignores.remove(k);
        }
        for (labels, ignores) in running {
            self.containers
                .pid1_ignores
                .get_or_create(labels)
                .set(i64::from(*ignores));
            self.series.entry(labels.clone()).or_default();
        }
    }

    /// Marks a container gone (its cgroup is removed); its series go after the TTL.
    pub fn gone(&mut self, who: &ContainerLabels) {
        if let Some(s) = self.series.get_mut(who) {
            s.gone_at.get_or_insert_with(Instant::now);
        }
        self.containers.pid1_ignores.remove(who);
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
    pub fn prune(&mut self, now: Instant) {
        let ttl = self.ttl;
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
            self.containers.pid1_ignores.remove(&key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_a_gone_container_are_dropped_after_the_ttl() {
        let mut m = Metrics::new(Duration::from_secs(60));
        let who = ContainerLabels {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
        };
        m.container_signal(&who, "SIGTERM", "ignored");
        m.audit(&[(who.clone(), true)]);
        assert!(m.encode().contains("pod=\"p\""));
        m.gone(&who);
        m.prune(Instant::now());
        assert!(m
            .encode()
            .contains("graceful_container_signals_total{namespace=\"ns\",pod=\"p\""));
        m.prune(Instant::now() + Duration::from_secs(61));
        assert!(!m.encode().contains("pod=\"p\""), "{}", m.encode());
    }
}
