//! The daemon's own health as metrics: its links to the API server and the runtime, its
//! kernel programs, the Events it published, and the standard `process_*`.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Metric, Registry, Unit},
};

use super::{metric_labels::*, process};

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
pub(super) struct ProcessMetrics {
    cpu: Counter<f64, AtomicU64>,
    resident: Gauge,
    virtual_memory: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMetrics {
    pub(super) fn register(root: &mut Registry) -> ProcessMetrics {
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
    pub(super) fn register(graceful: &mut Registry, process: ProcessMetrics) -> Health {
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
pub(super) fn registered<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> M {
    registered_as(registry, name, help, unit, M::default())
}

pub(super) fn registered_as<M: Metric + Clone>(
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
