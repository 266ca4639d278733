//! `run`: the node daemon. One loop owns the tracker; enrichment lookups run beside it and
//! report back, so the tracing path never waits for the runtime or a /proc scan.
use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

mod causes;
mod containers;
mod housekeeping;
mod pod_records;

use crate::{
    audit::MainProcess,
    driver::{Driver, Step, StreamEnded},
    enrich::{
        cri::CriClient,
        kubernetes::{self, PodUpdate},
        pod_store::PodStore,
        runtime_names::{Lookup, RuntimeNames},
    },
    events::{Event, LossReason, SignalCounts},
    export::{
        announcer::Announcer,
        events::{EventOptions, EventSink},
        health::Health,
        http::{lock, router, Endpoints, SharedState},
        log::LogFormat,
        metric_labels::{ContainerLabels, LossKind},
        metrics::Metrics,
    },
    identity::{self, Identity},
    pipeline::Session,
    pod_termination::PodAssembler,
    privileges,
    probes::{ProbeError, ProbeOptions, Probes, StopMarks},
    record::TerminationRecord,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub metrics_addr: SocketAddr,
    pub cri_socket: Option<PathBuf>,
    pub node_name: Option<String>,
    pub series_ttl: Duration,
    pub workload_series_ttl: Duration,
    pub log_format: LogFormat,
    pub events: EventOptions,
    pub probes: ProbeOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
    #[error("the kernel event stream ended: nothing is traced any more")]
    EventStreamEnded,
}

/// What the loop reads from the kernel besides the event stream: the node-wide counters.
pub trait KernelCounters {
    /// Records the kernel could not write: (ring buffer full, read failed).
    fn lost_events(&self) -> Result<(u64, u64), ProbeError>;
    fn signal_counts(&self) -> Result<SignalCounts, ProbeError>;
}

impl KernelCounters for Probes {
    fn lost_events(&self) -> Result<(u64, u64), ProbeError> {
        Probes::lost_events(self)
    }
    fn signal_counts(&self) -> Result<SignalCounts, ProbeError> {
        Probes::signal_counts(self)
    }
}

const TICK: Duration = Duration::from_secs(1);
/// Ticks between node-wide counter reads and TTL pruning (cheap, but not free at rest).
const HOUSEKEEPING_EVERY: u32 = 5;
/// How often the driver looks for processes whose exit was lost.
const SWEEP: Duration = Duration::from_secs(5);
/// Audits of the running containers (a /proc scan) come this often, or less often where a scan
/// costs more than [`AUDIT_SHARE`] of a core at that rate (a node with a thousand containers).
const AUDIT_EVERY: Duration = Duration::from_secs(10);
const AUDIT_SHARE: f64 = 0.0025;
const AUDIT_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Audits between retries of containers the runtime could not name.
const RETRY_FAILED_EVERY: u32 = 6;
/// Audits between prunes of processes and cgroup paths that are gone (a memory bound).
const PRUNE_EVERY: u32 = 3;
/// A record that waits for the runtime's answer about its container.
type Waiting = Box<TerminationRecord>;

/// What work beside the loop reports back: CRI answers, audit scans, this node's pods and
/// the API's word on why a container stopped.
struct Replies {
    answers: mpsc::Receiver<Lookup<Waiting>>,
    /// Each scan's findings, and the CPU time it took.
    scanned: mpsc::Receiver<(Vec<MainProcess>, Duration)>,
    pods: Option<mpsc::Receiver<PodUpdate>>,
    causes: mpsc::Receiver<causes::CauseAnswer>,
}

/// The Kubernetes API, when there is one: its client (per-stop lookups), this node's pods and
/// the Events queue.
pub struct Kube {
    client: kube::Client,
    pods: mpsc::Receiver<PodUpdate>,
    events: EventSink,
}

struct Daemon {
    /// The kernel's events through the pipeline, the sweep and the wall clock.
    driver: Driver,
    /// What the HTTP endpoints read besides the metrics.
    state: SharedState,
    /// Owned by the loop: a scrape encodes the registry without waiting for it.
    metrics: Metrics,
    /// The kernel's preStop hook programs and stopping marks (None: not available).
    marks: Option<StopMarks>,
    /// What the runtime said of each container.
    names: RuntimeNames<Waiting>,
    audits: u32,
    /// cgroups whose identity was already looked at: one parse and lookup per container.
    seen: HashSet<u64>,
    /// Audit scans of /proc run beside the loop and report here; one at a time.
    scans: mpsc::Sender<(Vec<MainProcess>, Duration)>,
    scanning: bool,
    /// When the next audit starts.
    next_audit: Instant,
    log_format: LogFormat,
    /// This node's pods, as the API server last said (empty without one).
    pods: PodStore,
    /// Events, with an API server.
    announcer: Option<Announcer>,
    /// Lookups of the kubelet's Events for a stop's cause, with an API server.
    lookups: Option<causes::CauseLookups>,
    /// Container records waiting for the rest of their pod's.
    assembler: PodAssembler,
    /// When the ring reader last reported a drain (for /healthz).
    drained_at: Instant,
}

pub async fn run(
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let listener = tokio::net::TcpListener::bind(options.metrics_addr)
        .await
        .map_err(|error| DaemonError::Listen {
            addr: options.metrics_addr,
            error,
        })?;
    let state = SharedState::default();
    let metrics = Metrics::new(options.series_ttl, options.workload_series_ttl);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(Endpoints {
        state: state.clone(),
        metrics: metrics.exposition(),
    });
    let server = tokio::spawn(crate::export::http_server::serve(listener, app, async {
        let _ = http_stopped.await;
    }));

    let (mut probes, driver) = Driver::start(Session::start(&options.probes)?, SWEEP);
    let marks = probes
        .stop_marks()
        .inspect_err(|e| tracing::warn!("{e}; a preStop hook's own signals are not seen"))
        .ok();
    tracing::info!(addr = %options.metrics_addr, node = options.node_name.as_deref().unwrap_or(""), "probes attached");
    let health = metrics.health.clone();
    health.probes(&probes.programs(), probes.unavailable());

    let cri = match CriClient::connect(options.cri_socket.as_deref()).await {
        Ok(c) => {
            tracing::info!(socket = %c.path().display(), "CRI connected: Kubernetes names from the runtime");
            health.cri_up.set(1);
            Some(c)
        }
        Err(e) => {
            tracing::warn!("{e}; containers are named from their cgroups only");
            None
        }
    };
    let kube = connect_kube(
        options.node_name.as_deref(),
        options.events.clone(),
        &health,
    )
    .await;
    // Everything that needed a capability is done: the rest reads world-readable /proc and
    // cgroupfs files and the fds it holds.
    privileges::drop_all()?;
    tracing::info!("all capabilities dropped");
    lock(&state).ready = true;
    let (mut daemon, replies) = Daemon::new(
        driver,
        state.clone(),
        metrics,
        marks,
        cri,
        kube,
        options.log_format,
    );
    let traced = daemon.serve(replies, &probes, shutdown).await;
    tracing::info!("shutting down: detaching probes");
    lock(&state).ready = false;
    // The server winds down while the probes detach: the pod's grace is not spent twice.
    let _ = stop_http.send(());
    drop(daemon);
    drop(probes);
    let _ = server.await;
    traced
}

/// The next pod update; never, without an API server.
async fn next_pod(pods: &mut Option<mpsc::Receiver<PodUpdate>>) -> Option<PodUpdate> {
    match pods {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The API server's client, this node's pod watch and the Events publisher; None (said in one
/// line) without an API server or without this node's name.
async fn connect_kube(node: Option<&str>, events: EventOptions, health: &Health) -> Option<Kube> {
    let client = kubernetes::client().await?;
    let Some(node) = node.filter(|n| !n.is_empty()) else {
        tracing::warn!("a Kubernetes API is configured but this node's name is not (--node-name or NODE_NAME): workloads, pod grace periods and Events are off");
        return None;
    };
    tracing::info!(
        node,
        "Kubernetes API: watching this node's pods, publishing Events"
    );
    Some(Kube {
        client: client.clone(),
        pods: kubernetes::watch_pods(client.clone(), node, health.api_up.clone()),
        events: EventSink::start(client, node, events, health.events.clone()),
    })
}

impl Daemon {
    fn new(
        driver: Driver,
        state: SharedState,
        metrics: Metrics,
        marks: Option<StopMarks>,
        cri: Option<CriClient>,
        kube: Option<Kube>,
        log_format: LogFormat,
    ) -> (Daemon, Replies) {
        let (cause_answers, causes) = mpsc::channel(64);
        let (pods, events, lookups) = match kube {
            Some(k) => (
                Some(k.pods),
                Some(k.events),
                Some(causes::CauseLookups {
                    client: k.client,
                    answers: cause_answers,
                    failing: false,
                    pending: 0,
                }),
            ),
            None => (None, None, None),
        };
        let (names, answers) = RuntimeNames::new(cri, metrics.health.cri_up.clone());
        let (scans, scanned) = mpsc::channel(1);
        let daemon = Daemon {
            driver,
            state,
            metrics,
            marks,
            names,
            audits: 0,
            seen: HashSet::new(),
            scans,
            scanning: false,
            next_audit: Instant::now(),
            log_format,
            pods: PodStore::default(),
            announcer: events.map(Announcer::new),
            lookups,
            assembler: PodAssembler::default(),
            drained_at: Instant::now(),
        };
        let replies = Replies {
            answers,
            scanned,
            pods,
            causes,
        };
        (daemon, replies)
    }

    /// The event loop, until shutdown (Ok) or until the kernel's event stream ends (an error: a
    /// daemon that no longer traces must not look healthy to its supervisor).
    async fn serve(
        &mut self,
        mut replies: Replies,
        kernel: &impl KernelCounters,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let mut tick = tokio::time::interval(TICK);
        let mut ticks = 0u32;
        let mut lost_seen = (0, 0);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    self.flush(&mut replies.causes).await;
                    return Ok(());
                }
                step = self.driver.next() => match step {
                    Ok(Step::Event(event, records)) => self.on_event(&event, records),
                    Ok(Step::Swept(records)) => records.into_iter().for_each(|r| self.finish(r)),
                    Err(StreamEnded) => {
                        tracing::error!("the kernel event stream ended");
                        return Err(DaemonError::EventStreamEnded);
                    }
                },
                Some(answer) = replies.answers.recv() => self.on_lookup(answer),
                Some(answer) = replies.causes.recv() => self.on_cause(answer),
                update = next_pod(&mut replies.pods) => match update {
                    Some(update) => self.on_pod(update),
                    None => {
                        tracing::warn!("the pod watch ended: pod facts stay as they are");
                        replies.pods = None;
                    }
                },
                Some((entries, cpu)) = replies.scanned.recv() => {
                    self.scanning = false;
                    let every = cpu.div_f64(AUDIT_SHARE).clamp(AUDIT_EVERY, AUDIT_AT_MOST_EVERY);
                    self.next_audit = Instant::now() + every;
                    self.audit(entries);
                }
                _ = tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    // The tracker hears of losses in the stream; the counters are for metrics.
                    let lost = kernel.lost_events().unwrap_or(lost_seen);
                    {
                        let mut shared = lock(&self.state);
                        shared.beat = Some(Instant::now());
                        shared.drained = Some(self.drained_at);
                    }
                    self.metrics.events_lost(LossKind::RingFull, lost.0.saturating_sub(lost_seen.0));
                    self.metrics.events_lost(LossKind::ReadFailed, lost.1.saturating_sub(lost_seen.1));
                    lost_seen = lost;
                    self.expire_pods();
                    self.sweep_marks();
                    if ticks % HOUSEKEEPING_EVERY == 1 {
                        if let Ok(counts) = kernel.signal_counts() {
                            self.metrics.node_signals(counts);
                        }
                        self.metrics.health.process();
                        self.metrics.prune(Instant::now());
                        self.report_tracked();
                    }
                    if Instant::now() >= self.next_audit {
                        self.start_audit();
                    }
                }
            }
        }
    }

    fn identity(&self, cgroup: u64) -> Option<Identity> {
        self.driver
            .pipeline
            .cgroups
            .cached_path(cgroup)
            .and_then(identity::parse)
    }

    /// An event the driver handled, and the records it completed.
    fn on_event(&mut self, event: &Event, records: Vec<TerminationRecord>) {
        match event {
            Event::Drained(_) => self.drained_at = Instant::now(),
            // The ring's own losses are counted from the kernel's counters at each tick.
            Event::Lost(l) if l.reason == LossReason::Decode => {
                self.metrics.events_lost(LossKind::DecodeFailed, l.count);
            }
            _ => {}
        }
        match event {
            Event::Exec(e) if self.seen.insert(e.cgroup) => {
                if let Some(identity) = self.identity(e.cgroup) {
                    self.configure(e.cgroup, &identity);
                    if self.names.get(&identity.id).is_none() {
                        self.names.ask(&identity, e.cgroup, None);
                    }
                }
            }
            Event::Signal(e) => {
                let target = self
                    .driver
                    .pipeline
                    .cgroups
                    .cached_path(e.target_cgroup)
                    .and_then(identity::parse);
                if let Some(identity) = target {
                    let info = self.info_for(&identity);
                    let labels = ContainerLabels::of(&identity, info.as_ref());
                    self.metrics.container_signal(
                        &labels,
                        &e.signal.to_string(),
                        e.result.as_str(),
                    );
                }
            }
            _ => {}
        }
        for record in records {
            self.finish(record);
        }
    }

    fn on_lookup(&mut self, answer: Lookup<Waiting>) {
        let Lookup {
            id,
            cgroup,
            info,
            waiting: record,
        } = answer;
        if self.names.answered(&id, info, record.is_some()) {
            if let Some(identity) = self.identity(cgroup) {
                // Known now (a container that ran before the daemon too): pod updates reach it
                // from here on.
                self.seen.insert(cgroup);
                self.configure(cgroup, &identity);
            }
        }
        if let Some(record) = record {
            self.publish(*record);
        }
    }
}

#[cfg(test)]
mod tests;
