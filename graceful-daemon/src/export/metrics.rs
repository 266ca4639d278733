//! Prometheus metrics (OpenMetrics text), with bounded cardinality: the series of a container
//! are dropped once it has been gone for longer than the TTL.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry, Unit},
};

use super::{metric_labels::*, process};
use crate::{
    events::SignalCounts,
    record::{ContainerLabels, TerminationRecord},
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

/// Node-wide: every signal by the kernel's result, every stop by outcome and verdict, lost
/// events, what the daemon holds.
struct NodeMetrics {
    signals: Family<SignalLabels, Counter>,
    terminations: Family<OutcomeVerdictLabels, Counter>,
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
            terminations: registered(
                registry,
                "node_terminations",
                "Containers stopped on the node, by outcome and verdict (every pair exists from the start)",
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
        // At 0 from the start: a graph's increase() counts the node's first stop of a kind.
        for outcome in Outcome::ALL {
            for verdict in Verdict::ALL {
                let _ = m.terminations.get_or_create(&OutcomeVerdictLabels {
                    outcome: outcome.as_str().into(),
                    verdict: verdict.as_str().into(),
                });
            }
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

/// The daemon's own health: its links to the API server and the runtime, its probes, the
/// Events it published, and its process.
#[derive(Clone)]
pub struct Health {
    pub events: Family<EventLabels, Counter>,
    /// 1 while the pod watch is listed and watching; 0 while it fails (or has no API).
    pub api_up: Gauge,
    /// 1 while the runtime answers over CRI; 0 while it does not (or there is none).
    pub cri_up: Gauge,
    probes: Family<ProgramLabels, Gauge>,
    process: ProcessMetrics,
}

/// `process_*`, unprefixed as every client library writes them.
#[derive(Clone)]
struct ProcessMetrics {
    cpu: Counter<f64, AtomicU64>,
    resident: Gauge,
    virtual_memory: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMetrics {
    fn register(root: &mut Registry) -> ProcessMetrics {
        let p = ProcessMetrics {
            cpu: registered_as(
                root,
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(Unit::Seconds),
                Counter::default(),
            ),
            resident: registered_as(
                root,
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                Gauge::default(),
            ),
            virtual_memory: registered_as(
                root,
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                Gauge::default(),
            ),
            start_time: registered_as(
                root,
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(Unit::Seconds),
                Gauge::default(),
            ),
            open_fds: registered(
                root,
                "process_open_fds",
                "Number of open file descriptors",
                None,
            ),
            max_fds: registered(
                root,
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
            ),
        };
        p.update(process::sample());
        p
    }

    /// Brings the metrics up to a look at /proc/self.
    fn update(&self, sample: Option<process::ProcessSample>) {
        let Some(s) = sample else {
            return;
        };
        let delta = s.cpu_seconds - self.cpu.get();
        if delta > 0.0 {
            self.cpu.inc_by(delta);
        }
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.resident.set(clamp(s.resident_bytes));
        self.virtual_memory.set(clamp(s.virtual_bytes));
        self.start_time.set(s.start_time_seconds);
        self.open_fds.set(clamp(s.open_fds));
        if let Some(max) = s.max_fds {
            self.max_fds.set(clamp(max));
        }
    }
}

impl Health {
    fn register(graceful: &mut Registry, process: ProcessMetrics) -> Health {
        Health {
            events: registered(
                graceful,
                "kubernetes_events",
                "Kubernetes Events by reason and result (published, failed, rate_limited, queue_full)",
                None,
            ),
            api_up: registered(
                graceful,
                "api_up",
                "1 while the Kubernetes API answers the pod watch",
                None,
            ),
            cri_up: registered(
                graceful,
                "cri_up",
                "1 while the container runtime answers over CRI",
                None,
            ),
            probes: registered(
                graceful,
                "probe_attached",
                "1 for each kernel program attached, 0 for one this kernel lacks",
                None,
            ),
            process,
        }
    }

    /// Which kernel programs are attached: every one of `programs`, less `unavailable`.
    pub fn probes(&self, programs: &[&str], unavailable: &[&str]) {
        for p in programs {
            self.probes
                .get_or_create(&ProgramLabels {
                    program: p.to_string(),
                })
                .set(i64::from(!unavailable.contains(p)));
        }
    }

    /// Brings the `process_*` metrics up to a look at /proc/self.
    pub fn process(&self) {
        self.process.update(process::sample());
    }
}

/// Registers a metric under `name` (the registry adds its prefix, the unit its suffix) and
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
                "Containers stopped, by outcome and verdict",
                None,
            ),
            workloads: registered(
                registry,
                "workload_terminations",
                "Containers stopped, by workload (workload_type, workload), outcome and verdict",
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

pub struct Metrics {
    registry: Registry,
    node: NodeMetrics,
    pub health: Health,
    containers: ContainerMetrics,
    stops: TerminationMetrics,
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
        let health = Health::register(graceful, process);
        Metrics {
            node,
            health,
            containers,
            stops,
            registry,
            workload_ttl,
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
        let (workload_type, workload) =
            workload_parts(record.info.as_ref().and_then(|i| i.workload.as_deref()));
        let workload = WorkloadLabels {
            namespace: who.namespace.clone(),
            workload_type,
            workload,
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
    pub fn prune(&mut self, now: Instant) {
        let ttl = self.workload_ttl;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        record::ContainerInfo,
        tracker::{Init, Termination},
    };

    fn who(pod: &str) -> ContainerLabels {
        ContainerLabels {
            namespace: "ns".into(),
            pod: pod.into(),
            container: "c".into(),
        }
    }

    fn killed(workload: &str) -> TerminationRecord {
        TerminationRecord {
            termination: Termination {
                cgroup: 1,
                stop: None,
                init: Init {
                    pid: 1,
                    comm: "sh".into(),
                    shell: true,
                    handles_stop_signal: Some(false),
                },
                received: Vec::new(),
                received_more: 0,
                never_received: Vec::new(),
                never_received_more: 0,
                kill: None,
                outcome: Outcome::KilledAfterGrace,
                exit: None,
                started: 0,
                ended: 30_000_000_000,
                verdict: Verdict::SwallowedByShellPid1,
                explanation: String::new(),
                pre_stop: None,
            },
            cgroup: None,
            identity: None,
            info: Some(ContainerInfo {
                workload: Some(workload.into()),
                ..Default::default()
            }),
            grace_period_seconds: Some(30.0),
        }
    }

    /// The value of the one sample line that starts with `series`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn series_of_a_gone_container_are_dropped_after_the_ttl() {
        let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(3600));
        let who = who("p");
        m.container_signal(&who, "SIGTERM", "ignored");
        m.audit(&[(who.clone(), Some("Deployment/web".into()), true)]);
        let text = m.encode();
        assert!(
            text.contains(r#"graceful_pid1_ignores_stop_signal{namespace="ns",workload_type="deployment",workload="web",pod="p",container="c"} 1"#),
            "{text}"
        );
        m.gone(&who);
        m.prune(Instant::now());
        assert!(m
            .encode()
            .contains("graceful_container_signals_total{namespace=\"ns\",pod=\"p\""));
        m.prune(Instant::now() + Duration::from_secs(61));
        assert!(!m.encode().contains("pod=\"p\""), "{}", m.encode());
    }

    #[test]
    fn node_counters_exist_at_zero_and_workload_series_outlive_their_pods() {
        let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(3 * 3600));
        let node = r#"graceful_node_terminations_total{outcome="killed_after_grace",verdict="swallowed_by_shell_pid1"}"#;
        let text = m.encode();
        assert_eq!(value(&text, node), Some(0.0), "{text}");
        assert_eq!(
            text.matches("graceful_node_terminations_total{").count(),
            Outcome::ALL.len() * Verdict::ALL.len()
        );
        // A running container's grace histogram exists before its stop.
        m.audit(&[(who("web-1"), Some("Deployment/web".into()), true)]);
        let count = r#"graceful_grace_period_used_ratio_count{namespace="ns",container="c"}"#;
        assert_eq!(value(&m.encode(), count), Some(0.0));
        for pod in ["web-1", "web-2", "web-3"] {
            m.termination(&who(pod), &killed("Deployment/web"), Some(30.0));
        }
        let text = m.encode();
        assert_eq!(value(&text, node), Some(3.0), "{text}");
        let workload = r#"graceful_workload_terminations_total{namespace="ns",workload_type="deployment",workload="web",outcome="killed_after_grace",verdict="swallowed_by_shell_pid1"}"#;
        assert_eq!(value(&text, workload), Some(3.0), "{text}");
        assert_eq!(value(&text, count), Some(3.0), "{text}");
        // The pods' series go after the container TTL; the workload's stay for hours.
        for pod in ["web-1", "web-2", "web-3"] {
            m.gone(&who(pod));
        }
        m.prune(Instant::now() + Duration::from_secs(2 * 3600));
        let text = m.encode();
        assert!(!text.contains("pod=\"web-1\""), "{text}");
        assert_eq!(value(&text, workload), Some(3.0), "{text}");
        assert_eq!(value(&text, node), Some(3.0), "{text}");
        m.prune(Instant::now() + Duration::from_secs(3 * 3600 + 1));
        assert_eq!(value(&m.encode(), workload), None);
    }

    #[test]
    fn the_grace_ratio_is_against_the_grace_the_app_had() {
        let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(60));
        // A preStop hook took 20 of 30 s; the app was killed at the end of its 10.
        let mut r = killed("StatefulSet/db");
        r.termination.ended = 10_000_000_000;
        m.termination(&who("db-0"), &r, Some(10.0));
        let text = m.encode();
        let under_90 =
            r#"graceful_grace_period_used_ratio_bucket{le="0.9",namespace="ns",container="c"}"#;
        let all = r#"graceful_grace_period_used_ratio_count{namespace="ns",container="c"}"#;
        assert_eq!(value(&text, under_90), Some(0.0), "{text}");
        assert_eq!(value(&text, all), Some(1.0), "{text}");
    }

    #[test]
    fn its_own_health_is_exported() {
        let m = Metrics::new(Duration::from_secs(60), Duration::from_secs(60));
        m.health
            .probes(&["signal_generate", "mark_victim"], &["mark_victim"]);
        m.health.cri_up.set(1);
        m.health.process();
        let text = m.encode();
        for line in [
            r#"graceful_probe_attached{program="signal_generate"} 1"#,
            r#"graceful_probe_attached{program="mark_victim"} 0"#,
            "graceful_cri_up 1",
            "graceful_api_up 0",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(
            value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
            "{text}"
        );
        assert!(
            value(&text, "process_cpu_seconds_total").is_some(),
            "{text}"
        );
    }
}
