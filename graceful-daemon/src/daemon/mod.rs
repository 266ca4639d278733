//! `run`: the node daemon. One loop owns the tracker; enrichment lookups run beside it and
//! report back, so the tracing path never waits for the runtime or a /proc scan.
use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

mod housekeeping;

use crate::{
    audit::AuditEntry,
    clock::WallClock,
    enrich::{
        cri::{CriClient, CriError},
        kubernetes::{self, PodUpdate},
        pod_store::PodStore,
        ContainerInfo,
    },
    events::SignalCounts,
    events::{CgroupId, Event, LossReason},
    export::{
        announcer::Announcer,
        events::{EventOptions, EventSink, PodRef},
        http::{lock, router, Shared, SharedState},
        log::{self, LogFormat},
        metric_labels::LossKind,
        metrics::Metrics,
    },
    identity::{self, Identity, Runtime},
    pipeline::{Pipeline, Session},
    privileges,
    probes::{ProbeError, ProbeOptions, Probes, PROGRAMS},
    record::{container_labels, HookKind, TerminationRecord},
    signals::Signal,
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

/// Waits before asking the runtime again about a container it did not know at its first exec.
const CREATION_RETRIES: [Duration; 2] = [Duration::from_millis(300), Duration::from_secs(1)];

const TICK: Duration = Duration::from_secs(1);
/// Ticks between node-wide counter reads, sweeps and TTL pruning (cheap, but not free at rest).
const HOUSEKEEPING_EVERY: u32 = 5;
/// Ticks between audits of the running containers (a /proc scan).
const AUDIT_EVERY: u32 = 10;
/// Audits between retries of containers the runtime could not name.
const RETRY_FAILED_EVERY: u32 = 6;
/// Audits between prunes of processes and cgroup paths that are gone (a memory bound).
const PRUNE_EVERY: u32 = 3;
/// Containers whose runtime answers are kept at most (running ones, and stopped ones whose
/// record is not out yet): far above what one node runs.
const CACHE_MAX: usize = 8192;

/// A CRI answer, with the record that waited for it (if one did).
struct Lookup {
    id: String,
    cgroup: CgroupId,
    info: Result<ContainerInfo, CriError>,
    record: Option<Box<TerminationRecord>>,
}

/// What work beside the loop reports back: CRI answers, audit scans and this node's pods.
struct Replies {
    answers: mpsc::Receiver<Lookup>,
    scanned: mpsc::Receiver<Vec<AuditEntry>>,
    pods: Option<mpsc::Receiver<PodUpdate>>,
}

/// The Kubernetes API, when there is one: this node's pods and the Events queue.
pub struct Kube {
    pods: mpsc::Receiver<PodUpdate>,
    events: EventSink,
}

struct Daemon {
    state: SharedState,
    pipeline: Pipeline,
    clock: WallClock,
    cri: Option<CriClient>,
    cache: HashMap<String, ContainerInfo>,
    pending: HashSet<String>,
    /// Containers the runtime could not name: not asked again by the audit until the next retry.
    failed: HashSet<String>,
    audits: u32,
    /// cgroups whose identity was already looked at: one parse and lookup per container.
    seen: HashSet<u64>,
    lookups: mpsc::Sender<Lookup>,
    /// Audit scans of /proc run beside the loop and report here; one at a time.
    scans: mpsc::Sender<Vec<AuditEntry>>,
    scanning: bool,
    cri_warned: bool,
    log_format: LogFormat,
    /// This node's pods, as the API server last said (empty without one).
    pods: PodStore,
    /// Events, with an API server.
    announcer: Option<Announcer>,
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
    let state: SharedState = Arc::new(Mutex::new(Shared::new(Metrics::new(
        options.series_ttl,
        options.workload_series_ttl,
    ))));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let server = tokio::spawn(crate::export::http::serve(listener, app, async {
        let _ = http_stopped.await;
    }));

    let Session {
        probes,
        mut events,
        pipeline,
    } = Session::start(&options.probes)?;
    tracing::info!(addr = %options.metrics_addr, node = options.node_name.as_deref().unwrap_or(""), "probes attached");
    let health = lock(&state).metrics.health.clone();
    let programs: Vec<&str> = PROGRAMS.iter().map(|(program, _, _)| *program).collect();
    health.probes(&programs, probes.unavailable());

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
    let (mut daemon, replies) = Daemon::new(state.clone(), pipeline, cri, kube, options.log_format);
    let traced = daemon.serve(&mut events, replies, &probes, shutdown).await;
    tracing::info!("shutting down: detaching probes");
    lock(&state).ready = false;
    drop(events);
    drop(probes);
    let _ = stop_http.send(());
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
async fn connect_kube(
    node: Option<&str>,
    events: EventOptions,
    health: &crate::export::health::Health,
) -> Option<Kube> {
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
        pods: kubernetes::watch_pods(client.clone(), node, health.api_up.clone()),
        events: EventSink::start(client, node, events, health.events.clone()),
    })
}

impl Daemon {
    fn new(
        state: SharedState,
        pipeline: Pipeline,
        cri: Option<CriClient>,
        kube: Option<Kube>,
        log_format: LogFormat,
    ) -> (Daemon, Replies) {
        let (pods, events) = match kube {
            Some(k) => (Some(k.pods), Some(k.events)),
            None => (None, None),
        };
        let (lookups, answers) = mpsc::channel(1024);
        let (scans, scanned) = mpsc::channel(1);
        let daemon = Daemon {
            state,
            pipeline,
            clock: WallClock::default(),
            cri,
            cache: HashMap::new(),
            pending: HashSet::new(),
            failed: HashSet::new(),
            audits: 0,
            seen: HashSet::new(),
            lookups,
            scans,
            scanning: false,
            cri_warned: false,
            log_format,
            pods: PodStore::default(),
            announcer: events.map(Announcer::new),
            drained_at: Instant::now(),
        };
        let replies = Replies {
            answers,
            scanned,
            pods,
        };
        (daemon, replies)
    }

    /// The event loop, until shutdown (Ok) or until the kernel's event stream ends (an error: a
    /// daemon that no longer traces must not look healthy to its supervisor).
    async fn serve(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
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
                _ = &mut shutdown => return Ok(()),
                event = events.recv() => {
                    let Some(event) = event else {
                        tracing::error!("the kernel event stream ended");
                        return Err(DaemonError::EventStreamEnded);
                    };
                    self.on_event(&event);
                }
                Some(answer) = replies.answers.recv() => self.on_lookup(answer),
                update = next_pod(&mut replies.pods) => match update {
                    Some(update) => self.on_pod(update),
                    None => {
                        tracing::warn!("the pod watch ended: pod facts stay as they are");
                        replies.pods = None;
                    }
                },
                Some(entries) = replies.scanned.recv() => {
                    self.scanning = false;
                    self.audit(entries);
                }
                _ = tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    {
                        let mut shared = lock(&self.state);
                        shared.beat = Some(Instant::now());
                        shared.drained = Some(self.drained_at);
                    }
                    // The tracker hears of losses in the stream; the counters are for metrics.
                    let lost = kernel.lost_events().unwrap_or(lost_seen);
                    {
                        let shared = lock(&self.state);
                        shared.metrics.events_lost(LossKind::RingFull, lost.0.saturating_sub(lost_seen.0));
                        shared.metrics.events_lost(LossKind::ReadFailed, lost.1.saturating_sub(lost_seen.1));
                    }
                    lost_seen = lost;
                    if ticks % HOUSEKEEPING_EVERY == 1 {
                        // An NTP step or a resumed VM moves the wall clock: follow it.
                        self.clock = WallClock::default();
                        if let Ok(counts) = kernel.signal_counts() {
                            lock(&self.state).metrics.node_signals(counts);
                        }
                        self.pipeline.sweep();
                        let shared = lock(&self.state);
                        shared.metrics.health.process();
                        drop(shared);
                        lock(&self.state).metrics.prune(Instant::now());
                        self.report_tracked();
                    }
                    if ticks % AUDIT_EVERY == 1 {
                        self.start_audit();
                    }
                }
            }
        }
    }

    fn identity(&self, cgroup: u64) -> Option<Identity> {
        self.pipeline
            .cgroups
            .cached_path(cgroup)
            .and_then(identity::parse)
    }

    /// A CRI runtime is there to ask, and it names containers of this runtime.
    fn can_ask(&self, identity: &Identity) -> bool {
        self.cri.is_some() && matches!(identity.runtime, Runtime::Containerd | Runtime::CriO)
    }

    fn lookup(
        &mut self,
        identity: &Identity,
        cgroup: CgroupId,
        record: Option<Box<TerminationRecord>>,
    ) -> Option<Box<TerminationRecord>> {
        let Some(cri) = self.cri.clone().filter(|_| self.can_ask(identity)) else {
            return record;
        };
        if self.pending.contains(&identity.id) && record.is_none() {
            return record;
        }
        self.pending.insert(identity.id.clone());
        let (id, tx) = (identity.id.clone(), self.lookups.clone());
        let first_sight = record.is_none();
        let up = lock(&self.state).metrics.health.cri_up.clone();
        tokio::spawn(async move {
            let mut cri = cri;
            let mut info = cri.container(&id).await;
            // A container seen at its first exec may not be in the runtime's store yet (a pod
            // sandbox's pause runs inside RunPodSandbox): ask again shortly before giving up.
            for wait in CREATION_RETRIES.iter().filter(|_| first_sight) {
                if !matches!(info, Err(CriError::Call { .. })) {
                    break;
                }
                tokio::time::sleep(*wait).await;
                info = cri.container(&id).await;
            }
            up.set(i64::from(match &info {
                Ok(_) => true,
                Err(e) => e.runtime_answered(),
            }));
            let _ = tx
                .send(Lookup {
                    id,
                    cgroup,
                    info,
                    record,
                })
                .await;
        });
        None
    }

    fn on_event(&mut self, event: &Event) {
        if let Event::Drained(_) = event {
            self.drained_at = Instant::now();
        }
        if let Event::Lost(l) = event {
            tracing::warn!(lost = l.count, reason = ?l.reason, "events lost: terminations under way will be reported as unknown");
            if l.reason == LossReason::Decode {
                lock(&self.state)
                    .metrics
                    .events_lost(LossKind::DecodeFailed, l.count);
            }
        }
        let records = self.pipeline.handle(event);
        match event {
            Event::Exec(e) if self.seen.insert(e.cgroup) => {
                if let Some(identity) = self.identity(e.cgroup) {
                    self.configure(e.cgroup, &identity);
                    if !self.cache.contains_key(&identity.id) {
                        self.lookup(&identity, e.cgroup, None);
                    }
                }
            }
            Event::Signal(e) => {
                let target = self
                    .pipeline
                    .cgroups
                    .cached_path(e.target_cgroup)
                    .and_then(identity::parse);
                if let Some(identity) = target {
                    let info = self.info_for(&identity);
                    if let Some(labels) = container_labels(Some(&identity), info.as_ref()) {
                        lock(&self.state).metrics.container_signal(
                            &labels,
                            &e.signal.to_string(),
                            e.result.as_str(),
                        );
                    }
                }
            }
            _ => {}
        }
        for record in records {
            self.finish(record);
        }
    }

    fn on_lookup(&mut self, answer: Lookup) {
        self.pending.remove(&answer.id);
        match answer.info {
            Ok(info) => {
                if self.cache.len() < CACHE_MAX || answer.record.is_some() {
                    self.cache.insert(answer.id.clone(), info);
                }
                if let Some(identity) = self.identity(answer.cgroup) {
                    // Known now (a container that ran before the daemon too): pod updates
                    // reach it from here on.
                    self.seen.insert(answer.cgroup);
                    self.configure(answer.cgroup, &identity);
                }
            }
            Err(e) => {
                // A runtime too busy to answer in time is asked again at the next audit; one
                // that does not know the container, only at the next retry.
                if !matches!(e, CriError::Timeout { .. }) {
                    self.failed.insert(answer.id.clone());
                }
                if self.cri_warned {
                    tracing::debug!("{e}");
                } else {
                    tracing::warn!(
                        "{e}; records keep the cgroup identity (further CRI errors at debug level)"
                    );
                    self.cri_warned = true;
                }
            }
        }
        if let Some(record) = answer.record {
            self.publish(*record);
        }
    }

    /// Completes a record with the runtime's view (asking it now if nothing is cached) and
    /// publishes it.
    fn finish(&mut self, mut record: TerminationRecord) {
        if let Some(identity) = record.identity.clone() {
            match self.cache.get(&identity.id) {
                Some(info) => record.info = Some(info.clone()),
                None => {
                    let cgroup = record.termination.cgroup;
                    if let Some(waiting) = self.lookup(&identity, cgroup, Some(Box::new(record))) {
                        self.publish(*waiting);
                    }
                    return;
                }
            }
        }
        self.publish(record);
    }

    fn publish(&mut self, mut record: TerminationRecord) {
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
        record.grace_period_seconds = record.info.as_ref().and_then(|i| i.grace_period_seconds);
        record.explain_pre_stop(&self.clock);
        let json = record.to_json(&self.clock);
        self.announce_termination(&record);
        log::termination(self.log_format, &json, &record.display_name());
        let labels = record.labels();
        let app_grace = record.app_grace_seconds(&self.clock);
        let mut shared = lock(&self.state);
        shared.metrics.termination(&labels, &record, app_grace);
        shared.push_record(&json);
        if let Some(identity) = &record.identity {
            self.cache.remove(&identity.id);
        }
    }
}

impl Daemon {
    /// What is known of a container: the runtime's answer, completed by its pod's facts.
    fn info_for(&self, identity: &Identity) -> Option<ContainerInfo> {
        let cached = self.cache.get(&identity.id);
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
    fn configure(&mut self, cgroup: CgroupId, identity: &Identity) {
        let Some(info) = self.info_for(identity) else {
            return;
        };
        let tracker = &mut self.pipeline.tracker;
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
        }
    }

    fn on_pod(&mut self, update: PodUpdate) {
        let changed = self.pods.apply(update, Instant::now());
        if changed.is_empty() {
            return;
        }
        let containers: Vec<(CgroupId, Identity)> = self
            .seen
            .iter()
            .filter_map(|&cgroup| Some((cgroup, self.identity(cgroup)?)))
            .filter(|(_, i)| i.pod_uid.as_ref().is_some_and(|u| changed.contains(u)))
            .collect();
        for (cgroup, identity) in containers {
            self.configure(cgroup, &identity);
        }
    }

    /// Forgets pods deleted from the API long enough ago, and pods' Event rates.
    fn forget_departed(&mut self, now: Instant) {
        self.pods.forget_departed(now);
        if let Some(announcer) = self.announcer.as_mut() {
            announcer.prune(now);
        }
    }

    /// The pod and container an Event about this container is regarding, when the API knows it.
    fn pod_ref(&self, info: Option<&ContainerInfo>) -> Option<PodRef> {
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
    fn announce_termination(&mut self, record: &TerminationRecord) {
        if self.announcer.is_none() {
            return;
        }
        let Some(pod) = self.pod_ref(record.info.as_ref()) else {
            return;
        };
        let t = &record.termination;
        if let Some(announcer) = self.announcer.as_mut() {
            announcer.stop(pod, t.verdict, t.outcome, &t.explanation, Instant::now());
        }
    }

    /// The audit's findings: running containers whose PID 1 would drop their stop signal.
    fn announce_risks(&mut self, entries: &[AuditEntry]) {
        if !self.announcer.as_ref().is_some_and(Announcer::tells_risks) {
            return;
        }
        let now = Instant::now();
        for e in entries.iter().filter(|e| e.stop_signal_dropped()) {
            let info = self.info_for(&e.identity);
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
    fn stop_signal_of(&self, identity: &Identity) -> Signal {
        self.info_for(identity)
            .and_then(|i| i.stop_signal)
            .unwrap_or(Signal::TERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cgroup::Cgroup2, tracker::TrackerConfig};

    /// Counters of a kernel where nothing happens.
    struct Quiet;

    impl KernelCounters for Quiet {
        fn lost_events(&self) -> Result<(u64, u64), ProbeError> {
            Ok((0, 0))
        }
        fn signal_counts(&self) -> Result<SignalCounts, ProbeError> {
            Ok(SignalCounts(Vec::new()))
        }
    }

    fn daemon() -> (Daemon, Replies) {
        let state: SharedState = Arc::new(Mutex::new(Shared::new(Metrics::new(
            Duration::from_secs(60),
            Duration::from_secs(3600),
        ))));
        let cgroups = Cgroup2::discover().expect("a cgroup2 mount");
        let pipeline = Pipeline::new(cgroups, TrackerConfig::default());
        Daemon::new(state, pipeline, None, None, LogFormat::Json)
    }

    #[tokio::test]
    async fn an_ended_event_stream_is_an_error() {
        let (mut d, replies) = daemon();
        let (tx, mut events) = mpsc::channel(1);
        drop(tx);
        let served = d
            .serve(&mut events, replies, &Quiet, std::future::pending())
            .await;
        assert!(
            matches!(served, Err(DaemonError::EventStreamEnded)),
            "{served:?}"
        );
    }

    #[test]
    fn without_the_runtime_a_container_is_named_from_its_pod() {
        let (mut d, _replies) = daemon();
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "8dbd0d3c-4b1e-4c39-9b32-5b6b0f7a3c11",
                "deletionTimestamp": "2026-11-23T10:00:05Z", "deletionGracePeriodSeconds": 5,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "o", "controller": true}]},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "x",
                "lifecycle": {"stopSignal": "SIGQUIT"}}]},
            "status": {"containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "x", "imageID": "", "ready": true, "restartCount": 0}]},
        }))
        .expect("a Pod");
        d.on_pod(PodUpdate::Relisted(
            crate::enrich::pods::PodFacts::from_pod(&pod)
                .into_iter()
                .collect(),
        ));
        let identity = identity::Identity {
            runtime: Runtime::Containerd,
            id: "abc".into(),
            pod_uid: Some("8dbd0d3c-4b1e-4c39-9b32-5b6b0f7a3c11".into()),
            qos: None,
            namespace: None,
        };
        let info = d.info_for(&identity).expect("facts from the pod");
        assert_eq!(info.name.as_deref(), Some("app"));
        assert_eq!(info.pod.as_deref(), Some("web-1"));
        assert_eq!(info.workload.as_deref(), Some("StatefulSet/web"));
        assert_eq!(info.grace_period_seconds, Some(5.0));
        assert_eq!(d.stop_signal_of(&identity), Signal::QUIT);
        // Deleted from the API: kept a while for late records, then forgotten.
        d.on_pod(PodUpdate::Relisted(Vec::new()));
        assert!(d.info_for(&identity).is_some());
        d.forget_departed(Instant::now() + crate::enrich::pod_store::DEPARTED_KEPT);
        assert!(d.info_for(&identity).is_none());
    }

    #[tokio::test]
    async fn shutdown_is_a_clean_end() {
        let (mut d, replies) = daemon();
        let (_tx, mut events) = mpsc::channel(1);
        let served = d
            .serve(&mut events, replies, &Quiet, std::future::ready(()))
            .await;
        assert!(served.is_ok(), "{served:?}");
    }
}
