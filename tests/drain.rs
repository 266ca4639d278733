//! A node drain through the real containerd, as the kubelet does it for `kubectl drain`: pods of
//! two containers each (an app whose shell forwards SIGTERM to its worker and waits for it, a
//! sidecar whose PID 1 has no handler), all stopped at once with a 2 s grace: the `drain` test
//! (110 pods, every record right) and the bench (`--drain`, 250 pods, what it costs; a drain
//! that loses a record keeps the daemon's log in /tmp/drain-daemon.log).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use std::net::SocketAddr;

use crate::{
    cri::{Containerd, PodSpec},
    daemon::http_get,
};

/// The grace every pod gets.
pub const GRACE: u64 = 2;
/// Kubelet-like workers that start and stop the pods.
const WORKERS: usize = 8;

/// What the drain left, as the daemon reported it.
pub struct Drain {
    /// Container name ("app", "sidecar") -> verdicts of its records, one per pod.
    pub verdicts: HashMap<String, Vec<String>>,
    /// Container name -> the names its records give its main process (`init.comm`).
    pub inits: HashMap<String, Vec<String>>,
    /// Records of this drain whose verdict or outcome is `unknown`.
    pub unknown: usize,
    /// Containers stopped that have no record.
    pub missing: usize,
    /// `graceful_events_lost_total`, all reasons, after the drain.
    pub events_lost: u64,
    /// Seconds from each container's end (its record's stop + duration) to the record on
    /// /terminations, sorted.
    pub latencies: Vec<f64>,
    /// The daemon's CPU seconds from the first stop to the last record, and its peak RSS (KiB).
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// Containers the runtime called stopped with processes left, which the drain killed.
    pub runtime_failures: usize,
    /// Seconds to start the pods, and from the first stop to the last record.
    pub started_in: f64,
    pub drained_in: f64,
}

fn uid(i: usize) -> String {
    format!("d4a1e0e0-0000-4000-8000-{i:012x}")
}

/// The `cgroup.procs` of container `id` of pod `i`.
fn procs(cgroups: &graceful::cgroup::Cgroup2, i: usize, id: &str) -> std::path::PathBuf {
    cgroups
        .dir(&format!("/kubepods/besteffort/pod{}/{id}", uid(i)))
        .join("cgroup.procs")
}

fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime (fields 14 and 15) count the threads that have ended too.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: a plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) as f64 / hz
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn events_lost(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("graceful_events_lost_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The daemon under test: its pid and its HTTP address.
#[derive(Clone, Copy)]
pub struct Watching {
    pub pid: u32,
    pub addr: SocketAddr,
}

/// Starts `pods` pods in namespace `namespace` and drains them all at once; the daemon records
/// them. Panics when containerd refuses what a kubelet would ask.
pub async fn drain(
    ctd: &Containerd,
    daemon: Watching,
    namespace: &'static str,
    pods: usize,
) -> Drain {
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut cri = ctd.client().await;
        let dir = ctd.dir.clone();
        workers.push(tokio::spawn(async move {
            let mut started = Vec::new();
            for i in (w..pods).step_by(WORKERS) {
                let (name, uid) = (format!("drained-{i}"), uid(i));
                let pod = PodSpec {
                    namespace,
                    name: &name,
                    uid: &uid,
                    grace_seconds: GRACE,
                    shared_pids: false,
                };
                let (sandbox, app) = cri
                    .start_pod(&pod, "app", crate::GRACEFUL_SCRIPT, None, &dir)
                    .await;
                let sidecar = cri
                    .start_container(
                        &sandbox,
                        &pod,
                        "sidecar",
                        0,
                        "exec sleep 100000",
                        None,
                        &dir,
                    )
                    .await;
                started.push((i, sandbox, app, sidecar));
            }
            started
        }));
    }
    let mut running = Vec::new();
    for w in workers {
        running.push(w.await.expect("a worker starting pods"));
    }
    let started_in = started.elapsed().as_secs_f64();
    // Each running its programs (the app's shell has its handler then), before any stop.
    for (i, _, app, sidecar) in running.iter().flatten() {
        let uid = uid(*i);
        let pod = PodSpec {
            namespace,
            name: "drained",
            uid: &uid,
            grace_seconds: GRACE,
            shared_pids: false,
        };
        pod.wait_for_programs(app, &["sh", "sleep"]);
        pod.wait_for_programs(sidecar, &["sleep"]);
    }
    let cgroups = graceful::cgroup::Cgroup2::discover().expect("cgroup2");
    let stops: Vec<(String, std::path::PathBuf)> = running
        .iter()
        .flatten()
        .flat_map(|(i, _, app, sidecar)| [(*i, app), (*i, sidecar)])
        .map(|(i, id)| (id.clone(), procs(&cgroups, i, id)))
        .collect();
    let pid = daemon.pid;
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    // Every pod at once, as the kubelet's pod workers do; each pod's containers together.
    let mut stopping = Vec::new();
    let cri = ctd.client().await;
    for (id, procs) in stops {
        let mut cri = cri.clone();
        stopping.push(tokio::spawn(async move {
            cri.stop_until_exited(&id, GRACE as i64).await;
            // containerd under a storm of stops has lost a shim mid-kill and called the
            // container exited with its processes alive: SIGKILL what is left, as the
            // node's teardown of the pod would, and count it (the runtime's failure).
            let left: Vec<i32> = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .filter_map(|p| p.parse().ok())
                .collect();
            for pid in &left {
                // SAFETY: a plain kill(2) of a process in the container's cgroup.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            !left.is_empty()
        }));
    }
    let expected = 2 * pods;
    let mut seen: HashMap<String, (serde_json::Value, Instant)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < expected && Instant::now() < deadline {
        if let Some((200, body)) = http_get(daemon.addr, "/terminations?kind=termination") {
            let now = Instant::now();
            let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
            for r in records {
                if r["container"]["namespace"] != namespace {
                    continue;
                }
                if let Some(id) = r["container"]["id"].as_str() {
                    seen.entry(id.to_string()).or_insert((r, now));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_in = t0.elapsed().as_secs_f64();
    // What is left of the containers without a record, to tell a runtime's failure from ours,
    // and the records that name none of this drain's containers (one may be the missing one).
    let mut named_none = Vec::new();
    for (i, _, app, sidecar) in running.iter().flatten() {
        for id in [app, sidecar] {
            if !seen.contains_key(id.as_str()) {
                let procs = std::fs::read_to_string(procs(&cgroups, *i, id));
                eprintln!("no record for {id} (pod {i}); its cgroup.procs: {procs:?}");
                named_none.push(id.clone());
            }
        }
    }
    if !named_none.is_empty() {
        let body = http_get(daemon.addr, "/terminations").map(|(_, b)| b);
        let records: Vec<serde_json::Value> = body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        for r in records.iter().filter(|r| r["kind"] == "termination") {
            let text = r.to_string();
            let named = r["container"]["namespace"] == namespace;
            let names_missing = named_none.iter().any(|id| text.contains(id.as_str()));
            if !named && (names_missing || r["container"]["id"].is_null()) {
                eprintln!("a record that names no drained container: {text}");
            }
        }
    }
    let cpu_seconds = cpu_seconds(pid) - cpu0;
    let mut runtime_failures = 0;
    for s in stopping {
        runtime_failures += usize::from(s.await.expect("a worker stopping pods"));
    }
    let events_lost = http_get(daemon.addr, "/metrics").map_or(u64::MAX, |(_, m)| events_lost(&m));
    let mut verdicts: HashMap<String, Vec<String>> = HashMap::new();
    let mut inits: HashMap<String, Vec<String>> = HashMap::new();
    let mut latencies = Vec::new();
    let mut unknown = 0;
    for (r, seen_at) in seen.values() {
        let name = r["container"]["name"].as_str().unwrap_or("?").to_string();
        let verdict = r["verdict"].as_str().unwrap_or("?").to_string();
        if verdict == "unknown" || r["outcome"] == "unknown" {
            unknown += 1;
        }
        let init = r["init"]["comm"].as_str().unwrap_or("?").to_string();
        inits.entry(name.clone()).or_default().push(init);
        verdicts.entry(name).or_default().push(verdict);
        // The container's end on the wall clock, against when the record was first seen.
        let ended = r["stop"]["at"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .zip(r["duration_seconds"].as_f64())
            .map(|(at, d)| at.timestamp_micros() as f64 / 1e6 + d);
        if let Some(ended) = ended {
            let seen_wall = chrono::Utc::now().timestamp_micros() as f64 / 1e6
                - seen_at.elapsed().as_secs_f64();
            latencies.push((seen_wall - ended).max(0.0));
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut cri = ctd.client().await;
    for (_, sandbox, _, _) in running.iter().flatten() {
        cri.remove_pod(sandbox).await;
    }
    Drain {
        verdicts,
        inits,
        unknown,
        missing: expected.saturating_sub(seen.len()),
        events_lost,
        latencies,
        cpu_seconds,
        peak_rss_kib: peak_rss_kib(pid),
        runtime_failures,
        started_in,
        drained_in,
    }
}

impl Drain {
    /// The p-th quantile of the latencies, in ms.
    pub fn latency_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize] * 1000.0
    }
}
