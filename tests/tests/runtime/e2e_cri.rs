//! End to end on a real container runtime: containerd + runc driven through CRI as kubelet
//! drives them, the real `graceful-daemon run` binary watching, its HTTP endpoints read back.
use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, http_get, record_where, Daemon, TIMEOUT},
};
use serde_json::Value;

/// Kills a throwaway container and returns /terminations once its record is there: every
/// event before the kill has been processed by then.
fn kill_marker(addr: SocketAddr, name: &str) -> Vec<Value> {
    let mut cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-tests/marker-{}", std::process::id()));
    let parent = run_cgroup.path();
    let sb =
        graceful::throwaway::Throwaway::spawn(&mut cgroups, parent, name, &["/bin/sleep", "1000"])
            .unwrap();
    graceful_tests::wait_for_program(&sb, "sleep");
    let needle = format!("\"cgroup\":\"{}\"", sb.cgroup);
    sb.signal(graceful::signals::Signal::KILL).unwrap();
    let body = eventually("the marker's record", || {
        http_get(addr, "/terminations")
            .map(|(_, b)| b)
            .filter(|b| b.contains(&needle))
    });
    drop(sb);
    serde_json::from_str(&body).unwrap()
}

struct Case {
    pod: &'static str,
    script: &'static str,
    /// The programs it runs before it is stopped, one name per process.
    programs: &'static [&'static str],
    timeout: i64,
    verdict: &'static str,
    outcome: &'static str,
    /// shareProcessNamespace: the app is not PID 1 (pause is).
    shared_pids: bool,
}

const CASES: &[Case] = &[
    Case { pod: "shell", script: "sleep 1000; true", programs: &["sh", "sleep"], timeout: 2, verdict: "swallowed_by_shell_pid1", outcome: "killed_after_grace", shared_pids: false },
    Case { pod: "exec-sleep", script: "exec sleep 1000", programs: &["sleep"], timeout: 2, verdict: "pid1_ignores_stop_signal", outcome: "killed_after_grace", shared_pids: false },
    Case { pod: "no-forward", script: "trap 'echo stopping' TERM; sleep 1000 & while :; do wait; done", programs: &["sh", "sleep"], timeout: 2, verdict: "not_forwarded", outcome: "killed_after_grace", shared_pids: false },
    Case { pod: "forwards", script: "trap 'kill -TERM -1; wait; exit 0' TERM; sleep 1000 & wait", programs: &["sh", "sleep"], timeout: 2, verdict: "graceful", outcome: "exited", shared_pids: false },
    Case { pod: "slow", script: "trap 'kill -TERM -1; wait' TERM; sh -c 'trap \"sleep 60\" TERM; sleep 1000 & wait' & wait", programs: &["sh", "sh", "sleep"], timeout: 2, verdict: "slow_shutdown", outcome: "killed_after_grace", shared_pids: false },
    Case { pod: "exits-on-term", script: "trap 'exit 0' TERM; sleep 1000 & wait", programs: &["sh", "sleep"], timeout: 2, verdict: "children_killed_at_exit", outcome: "exited", shared_pids: false },
    Case { pod: "force", script: "trap 'exit 0' TERM; sleep 1000 & wait", programs: &["sh", "sleep"], timeout: 0, verdict: "killed_without_stop_signal", outcome: "killed", shared_pids: false },
    // shareProcessNamespace: pause is PID 1, so the app is not protected as an init.
    Case { pod: "shared-exec-sleep", script: "exec sleep 1000", programs: &["sleep"], timeout: 2, verdict: "graceful", outcome: "exited", shared_pids: true },
    Case { pod: "shared-shell", script: "sleep 1000; true", programs: &["sh", "sleep"], timeout: 2, verdict: "not_forwarded", outcome: "killed", shared_pids: true },
    Case { pod: "shared-no-forward", script: "trap 'echo stopping' TERM; sleep 1000 & while :; do wait; done", programs: &["sh", "sleep"], timeout: 2, verdict: "not_forwarded", outcome: "killed_after_grace", shared_pids: true },
    Case { pod: "shared-forwards", script: "trap 'kill -TERM $!; wait $!; exit 0' TERM; sleep 1000 & wait", programs: &["sh", "sleep"], timeout: 2, verdict: "graceful", outcome: "exited", shared_pids: true },
];

fn uid(i: usize) -> String {
    format!("8dbd0d3c-4b1e-4c39-9b32-{:012x}", 0x5b6b0f7a3c00 + i)
}

/// What one run of the pods through containerd left to check: each concern is its own test,
/// so one failure does not hide the rest. The run happens once, for every test of this file
/// that reads it; containerd and the daemon are gone before any test looks.
struct PodsRun {
    /// (pod sandbox id, container id) of each case, in CASES order.
    started: Vec<(String, String)>,
    /// /metrics while the containers ran, once the audit had named them.
    running_metrics: String,
    /// The record of each container, by container id.
    records: HashMap<String, Value>,
    /// /metrics once every record was out.
    stopped_metrics: String,
    /// /terminations after the pods (and their sandboxes) were removed.
    after_sandboxes: Vec<Value>,
    /// The daemon's log and every record it served.
    log: String,
    terminations: String,
    /// Prometheus's OpenMetrics parser on the scrape: Ok, or what it said.
    prometheus_reads_scrape: Result<(), String>,
    /// e2e series still there once the TTL had passed (bounded wait).
    series_left_after_ttl: Vec<String>,
}

static PODS_RUN: std::sync::OnceLock<PodsRun> = std::sync::OnceLock::new();

fn pods_run() -> &'static PodsRun {
    PODS_RUN.get_or_init(|| {
        tokio::runtime::Runtime::new()
            .expect("tokio runtime")
            .block_on(run_pods())
    })
}

async fn run_pods() -> PodsRun {
    let ctd = Containerd::start().await;
    let daemon = Daemon::start(&ctd.socket, ctd.dir.join("daemon.log"));
    let mut cri = ctd.client().await;

    let uids: Vec<String> = (0..CASES.len()).map(uid).collect();
    let pods: Vec<PodSpec> = CASES
        .iter()
        .zip(&uids)
        .map(|(case, uid)| PodSpec {
            namespace: "e2e",
            name: case.pod,
            uid,
            grace_seconds: 2,
            shared_pids: case.shared_pids,
        })
        .collect();
    let mut started = Vec::new();
    for (pod, case) in pods.iter().zip(CASES) {
        let pre_stop = (case.pod == "forwards").then_some("echo token=Bearer-s3cr3t > /dev/null");
        started.push(
            cri.start_pod(pod, "app", case.script, pre_stop, &ctd.dir)
                .await,
        );
    }
    // Every container runs all its programs before it is stopped.
    for ((_, id), (pod, case)) in started.iter().zip(pods.iter().zip(CASES)) {
        pod.wait_for_programs(id, case.programs);
    }
    let running_metrics = eventually("audit gauges with CRI names", || {
        let (_, m) = http_get(daemon.addr, "/metrics")?;
        CASES
            .iter()
            .all(|c| m.contains(&format!(r#"pod="{}",container="app"}} "#, c.pod)))
            .then_some(m)
    });

    // StopContainer, all at once, as kubelet does on a node drain.
    let mut stops = Vec::new();
    for ((_, id), case) in started.iter().zip(CASES) {
        let (mut c, id, timeout) = (ctd.client().await, id.clone(), case.timeout);
        stops.push(tokio::spawn(
            async move { c.stop_container(&id, timeout).await },
        ));
    }
    for s in stops {
        s.await.unwrap();
    }
    let records: HashMap<String, Value> = eventually("a record for every container", || {
        let (_, body) = http_get(daemon.addr, "/terminations")?;
        let list: Vec<Value> = serde_json::from_str(&body).ok()?;
        let by_id: HashMap<String, Value> = list
            .into_iter()
            .filter_map(|r| Some((r["container"]["id"].as_str()?.to_string(), r)))
            .collect();
        started
            .iter()
            .all(|(_, id)| by_id.contains_key(id))
            .then_some(by_id)
    });
    let (_, stopped_metrics) = http_get(daemon.addr, "/metrics").unwrap();

    // Pod sandboxes are not app containers: removing the pods must report nothing for them. A
    // marker container killed afterwards orders the check after the sandboxes' events.
    for (sandbox, _) in &started {
        cri.remove_pod(sandbox).await;
    }
    let after_sandboxes = kill_marker(daemon.addr, "after-sandboxes");
    let (_, scrape) = http_get(daemon.addr, "/metrics").unwrap();
    let prometheus_reads_scrape = prometheus_reads(&scrape, &ctd.dir);
    let terminations = http_get(daemon.addr, "/terminations").unwrap().1;

    // The series of the deleted containers go after the TTL (3 s).
    let deadline = Instant::now() + TIMEOUT;
    let series_left_after_ttl = loop {
        let (_, m) = http_get(daemon.addr, "/metrics").unwrap();
        let left: Vec<String> = m
            .lines()
            .filter(|l| l.contains("namespace=\"e2e\""))
            .map(str::to_string)
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(daemon);
    let log = std::fs::read_to_string(ctd.dir.join("daemon.log")).unwrap();
    PodsRun {
        started,
        running_metrics,
        records,
        stopped_metrics,
        after_sandboxes,
        log,
        terminations,
        prometheus_reads_scrape,
        series_left_after_ttl,
    }
}

/// Prometheus's own OpenMetrics parser (HELP, TYPE, UNIT suffixes, `# EOF`) reads the scrape:
/// promtool imports it into a TSDB block, which wants a timestamp on every sample.
fn prometheus_reads(scrape: &str, dir: &std::path::Path) -> Result<(), String> {
    let stamped: String = scrape
        .lines()
        .map(|l| match l.starts_with('#') {
            true => format!("{l}\n"),
            false => format!("{l} 1700000000\n"),
        })
        .collect();
    let file = dir.join("scrape.om");
    std::fs::write(&file, stamped).map_err(|e| e.to_string())?;
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(dir.join("tsdb"))
        .output()
        .map_err(|e| format!("promtool (Debian package prometheus): {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "promtool tsdb create-blocks-from openmetrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

#[test]
fn each_pod_gets_its_verdict_outcome_and_names() {
    let run = pods_run();
    for ((_, id), (i, case)) in run.started.iter().zip(CASES.iter().enumerate()) {
        let r = &run.records[id];
        let c = &r["container"];

        assert_eq!(r["verdict"], case.verdict, "{}: {r:#}", case.pod);
        assert_eq!(r["outcome"], case.outcome, "{}: {r:#}", case.pod);
        assert_eq!(
            (
                c["namespace"].as_str(),
                c["pod"].as_str(),
                c["name"].as_str()
            ),
            (Some("e2e"), Some(case.pod), Some("app"))
        );
        assert_eq!(c["runtime"], "containerd");
        assert_eq!(c["pod_uid"], uid(i));
        assert_eq!(c["qos"], "besteffort");
        assert_eq!(r["grace_period_seconds"], 2.0);
        if case.shared_pids && case.verdict != "graceful" {
            // pause is PID 1: the shell the runtime started is still the main process.
            assert_eq!(r["init"]["comm"], "sh", "{}: {r:#}", case.pod);
        }
    }
}

#[test]
fn the_runtime_is_the_sender_of_every_stop() {
    let run = pods_run();
    for ((_, id), case) in run.started.iter().zip(CASES) {
        let r = &run.records[id];
        let sender = if case.timeout > 0 {
            &r["stop"]["sender"]["comm"]
        } else {
            &r["kill"]["sender"]["comm"]
        };
        assert_eq!(sender, "runc", "{}: {r:#}", case.pod);
    }
}

#[test]
fn running_containers_have_their_pid1_risk_gauge() {
    let m = &pods_run().running_metrics;
    for (pod, risk) in [("shell", 1), ("exec-sleep", 1), ("forwards", 0)] {
        let gauge = format!(
            r#"graceful_pid1_ignores_stop_signal{{namespace="e2e",workload_type="",workload="",pod="{pod}",container="app"}} {risk}"#
        );
        assert!(m.contains(&gauge), "{gauge} not in\n{m}");
    }
}

#[test]
fn every_stop_is_counted_by_its_labels() {
    let run = pods_run();
    let m = &run.stopped_metrics;
    for case in CASES {
        let labels = format!(
            // Through CRI, with no API to say why: the runtime's stop.
            r#"namespace="e2e",pod="{}",container="app",outcome="{}",verdict="{}",cause="runtime""#,
            case.pod, case.outcome, case.verdict
        );
        assert!(
            m.contains(&format!("graceful_terminations_total{{{labels}}} 1")),
            "{labels} not in\n{m}"
        );
    }
    assert!(m.contains("graceful_sigkill_after_grace_total{namespace=\"e2e\",pod=\"shell\""));
    assert!(m.contains(
        "graceful_stop_signal_ignored_total{namespace=\"e2e\",pod=\"shell\",container=\"app\"} 1"
    ));
    assert!(
        m.contains("graceful_termination_duration_seconds_bucket{"),
        "{m}"
    );
    assert!(
        m.contains("graceful_grace_period_used_ratio_count{namespace=\"e2e\",container=\"app\"}")
    );
}

#[test]
fn pod_sandboxes_are_never_reported() {
    let run = pods_run();
    let sandbox = |r: &&Value| {
        run.started
            .iter()
            .any(|(sb, _)| r["container"]["id"] == sb.as_str())
    };
    let reported: Vec<&Value> = run.after_sandboxes.iter().filter(sandbox).collect();
    assert!(
        reported.is_empty(),
        "a pod sandbox was reported: {reported:#?}"
    );
    let e2e = run
        .after_sandboxes
        .iter()
        .filter(|r| r["container"]["namespace"] == "e2e")
        .count();
    assert_eq!(e2e, CASES.len());
}

#[test]
fn the_scrape_is_openmetrics_that_prometheus_reads() {
    if let Err(said) = &pods_run().prometheus_reads_scrape {
        panic!("{said}");
    }
}

#[test]
fn no_secret_anywhere_and_each_record_logged_once() {
    let run = pods_run();
    assert!(!(run.terminations.clone() + &run.log).contains("s3cr3t"));
    for (_, id) in &run.started {
        let logged = run
            .log
            .lines()
            .filter(|l| l.contains("\"verdict\"") && l.contains(id.as_str()))
            .count();
        assert_eq!(logged, 1, "the record of {id} is logged {logged} times");
    }
}

#[test]
fn series_of_deleted_containers_go_after_the_ttl() {
    let left = &pods_run().series_left_after_ttl;
    assert!(
        left.is_empty(),
        "series not expired after the TTL: {left:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_answering_garbage_degrades_to_cgroup_identity() {
    let dir = std::env::temp_dir().join(format!("graceful-garbage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("cri.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nthis is not gRPC\n\x00\xff\xfe");
        }
    });
    let daemon = Daemon::start(&socket, dir.join("daemon.log"));
    let mut cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let run_cgroup = graceful::throwaway::Parent::new(&format!(
        "/graceful-tests/garbage-{}",
        std::process::id()
    ));
    let parent = run_cgroup.path();
    let sb = graceful::throwaway::Throwaway::spawn(
        &mut cgroups,
        parent,
        "victim",
        &["/bin/sleep", "1000"],
    )
    .unwrap();
    graceful_tests::wait_for_program(&sb, "sleep");
    sb.signal(graceful::signals::Signal::KILL).unwrap();
    let record = record_where(daemon.addr, "/container/cgroup", &sb.cgroup);
    assert_eq!(
        record["verdict"], "killed_without_stop_signal",
        "{record:#}"
    );
    drop(sb);
    drop(daemon);
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("CRI"))
        .count();
    assert_eq!(warnings, 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
