//! End to end on a real container runtime: containerd + runc driven through CRI as kubelet
//! drives them, the real `graceful-daemon run` binary watching, its HTTP endpoints read back.
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use graceful_tests::cri::{Containerd, PodSpec};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon binary next to this test's target dir (`cargo xtask test` builds it first).
fn daemon_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("graceful-daemon");
    assert!(bin.exists(), "{} is missing: build it first (`cargo build -p graceful-daemon`, as `cargo xtask test` does)", bin.display());
    bin
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls until `f` gives Some (a bounded wait on the daemon's own state, not a sleep).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn start(socket: &std::path::Path, log: PathBuf) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(daemon_binary())
            .args([
                "run",
                "--metrics-addr",
                &addr.to_string(),
                "--series-ttl",
                "3s",
                "--log-format",
                "json",
                "--cri-socket",
            ])
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, addr };
        eventually("/readyz", || {
            http_get(addr, "/readyz").filter(|(s, _)| *s == 200)
        });
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Kills a throwaway container and returns /terminations once its record is there: every
/// event before the kill has been processed by then.
fn kill_marker(addr: SocketAddr, name: &str) -> Vec<Value> {
    let mut cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let parent = format!("/graceful-tests/marker-{}", std::process::id());
    let sb =
        graceful::sandbox::Sandbox::spawn(&mut cgroups, &parent, name, &["/bin/sleep", "1000"])
            .unwrap();
    eventually("the marker to run sleep", || {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", sb.init)).ok()?;
        (comm.trim() == "sleep").then_some(())
    });
    let needle = format!("\"cgroup\":\"{}\"", sb.cgroup);
    sb.signal(graceful::signals::Signal::KILL).unwrap();
    let body = eventually("the marker's record", || {
        http_get(addr, "/terminations")
            .map(|(_, b)| b)
            .filter(|b| b.contains(&needle))
    });
    drop(sb);
    let _ = std::fs::remove_dir(cgroups.dir(&parent));
    serde_json::from_str(&body).unwrap()
}

struct Case {
    pod: &'static str,
    script: &'static str,
    processes: usize,
    timeout: i64,
    verdict: &'static str,
    outcome: &'static str,
}

const CASES: &[Case] = &[
    Case { pod: "shell", script: "sleep 1000; true", processes: 2, timeout: 2, verdict: "swallowed_by_shell_pid1", outcome: "killed_after_grace" },
    Case { pod: "exec-sleep", script: "exec sleep 1000", processes: 1, timeout: 2, verdict: "pid1_ignores_stop_signal", outcome: "killed_after_grace" },
    Case { pod: "no-forward", script: "trap 'echo stopping' TERM; sleep 1000 & while :; do wait; done", processes: 2, timeout: 2, verdict: "not_forwarded", outcome: "killed_after_grace" },
    Case { pod: "forwards", script: "trap 'kill -TERM -1; wait; exit 0' TERM; sleep 1000 & wait", processes: 2, timeout: 2, verdict: "graceful", outcome: "exited" },
    Case { pod: "slow", script: "trap 'kill -TERM -1; wait' TERM; sh -c 'trap \"sleep 60\" TERM; sleep 1000 & wait' & wait", processes: 3, timeout: 2, verdict: "slow_shutdown", outcome: "killed_after_grace" },
    Case { pod: "exits-on-term", script: "trap 'exit 0' TERM; sleep 1000 & wait", processes: 2, timeout: 2, verdict: "graceful", outcome: "exited" },
    Case { pod: "force", script: "trap 'exit 0' TERM; sleep 1000 & wait", processes: 2, timeout: 0, verdict: "killed_without_stop_signal", outcome: "killed" },
];

fn uid(i: usize) -> String {
    format!("8dbd0d3c-4b1e-4c39-9b32-{:012x}", 0x5b6b0f7a3c00 + i)
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_through_cri_end_to_end() {
    let ctd = Containerd::start().await;
    let daemon = Daemon::start(&ctd.socket, ctd.dir.join("daemon.log"));
    let mut cri = ctd.client().await;

    let mut started = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let pod = PodSpec {
            namespace: "e2e",
            name: case.pod,
            uid: &uid(i),
            grace_seconds: 2,
        };
        let pre_stop = (case.pod == "forwards").then_some("echo token=Bearer-s3cr3t > /dev/null");
        let (sandbox, id) = cri
            .start_pod(&pod, "app", case.script, pre_stop, &ctd.dir)
            .await;
        started.push((sandbox, id));
    }
    // Every container runs all its processes (read from its cgroup) before it is stopped.
    for ((_, id), (i, case)) in started.iter().zip(CASES.iter().enumerate()) {
        let procs = PathBuf::from(format!(
            "/sys/fs/cgroup/unified/kubepods/besteffort/pod{}/{id}/cgroup.procs",
            uid(i)
        ));
        eventually(
            &format!("{} processes in {}", case.processes, case.pod),
            || {
                let n = std::fs::read_to_string(&procs).ok()?.lines().count();
                (n >= case.processes).then_some(())
            },
        );
    }
    // The audit gauge, for running containers, with CRI names.
    let metrics = eventually("audit gauges", || {
        let (_, m) = http_get(daemon.addr, "/metrics")?;
        (m.contains(r#"graceful_pid1_ignores_stop_signal{namespace="e2e",pod="shell",container="app"} 1"#)
            && m.contains(r#"graceful_pid1_ignores_stop_signal{namespace="e2e",pod="forwards",container="app"} 0"#))
        .then_some(m)
    });
    assert!(metrics.contains(
        r#"graceful_pid1_ignores_stop_signal{namespace="e2e",pod="exec-sleep",container="app"} 1"#
    ));

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
    for ((_, id), (i, case)) in started.iter().zip(CASES.iter().enumerate()) {
        let r = &records[id];
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
        let sender = if case.timeout > 0 {
            &r["stop"]["sender"]["comm"]
        } else {
            &r["kill"]["sender"]["comm"]
        };
        assert_eq!(
            sender, "runc",
            "{}: the runtime stops the container: {r:#}",
            case.pod
        );
        let labels = format!(
            r#"namespace="e2e",pod="{}",container="app",outcome="{}",verdict="{}""#,
            case.pod, case.outcome, case.verdict
        );
        let (_, m) = http_get(daemon.addr, "/metrics").unwrap();
        assert!(
            m.contains(&format!("graceful_terminations_total{{{labels}}} 1")),
            "{labels} not in\n{m}"
        );
    }
    // Pod sandboxes are not app containers: removing the pods reports nothing for them. A
    // marker container killed afterwards orders the check after the sandboxes' events.
    for (sandbox, _) in &started {
        cri.remove_pod(sandbox).await;
    }
    let after = kill_marker(daemon.addr, "after-sandboxes");
    let sandbox_records = after
        .iter()
        .filter(|r| {
            started
                .iter()
                .any(|(sb, _)| r["container"]["id"] == sb.as_str())
        })
        .count();
    assert_eq!(
        sandbox_records,
        0,
        "a pod sandbox was reported: {:#}",
        after
            .iter()
            .find(|r| started
                .iter()
                .any(|(sb, _)| r["container"]["id"] == sb.as_str()))
            .unwrap()
    );
    let first: Vec<Value> = after
        .into_iter()
        .filter(|r| r["container"]["namespace"] == "e2e")
        .collect();
    let ends: Vec<&str> = first
        .iter()
        .filter_map(|r| r["stop"]["at"].as_str().or(r["kill"]["at"].as_str()))
        .collect();
    assert_eq!(ends.len(), CASES.len());

    // A real scrape passes promtool.
    let (_, scrape) = http_get(daemon.addr, "/metrics").unwrap();
    assert!(scrape.contains("graceful_sigkill_after_grace_total{namespace=\"e2e\",pod=\"shell\""));
    assert!(scrape.contains(
        "graceful_stop_signal_ignored_total{namespace=\"e2e\",pod=\"shell\",container=\"app\"} 1"
    ));
    assert!(
        scrape.contains("graceful_termination_duration_seconds_bucket{"),
        "{scrape}"
    );
    assert!(scrape
        .contains("graceful_grace_period_used_ratio_count{namespace=\"e2e\",container=\"app\"}"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // No secret of the preStop hook in records or logs; each record logged exactly once.
    let log = std::fs::read_to_string(ctd.dir.join("daemon.log")).unwrap();
    let all = http_get(daemon.addr, "/terminations").unwrap().1 + &log;
    assert!(!all.contains("s3cr3t"));
    for (_, id) in &started {
        let logged = log
            .lines()
            .filter(|l| l.contains("\"verdict\"") && l.contains(id.as_str()))
            .count();
        assert_eq!(logged, 1, "the record of {id} is logged {logged} times");
    }

    // The series of the deleted containers go after the TTL (3 s).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, m) = http_get(daemon.addr, "/metrics").unwrap();
        let left: Vec<&str> = m
            .lines()
            .filter(|l| l.contains("namespace=\"e2e\""))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let procs = Command::new("sh").arg("-c").arg("for f in /sys/fs/cgroup/unified/kubepods/besteffort/*/*/cgroup.procs; do echo $f; cat $f; done").output().unwrap();
            panic!(
                "series not expired after the TTL: {left:#?}\n{}",
                String::from_utf8_lossy(&procs.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A runtime socket that answers garbage: one warning, then cgroup identity alone.
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
    let parent = format!("/graceful-tests/garbage-{}", std::process::id());
    let sb =
        graceful::sandbox::Sandbox::spawn(&mut cgroups, &parent, "victim", &["/bin/sleep", "1000"])
            .unwrap();
    let needle = format!("\"cgroup\":\"{}\"", sb.cgroup);
    eventually("the container to run sleep", || {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", sb.init)).ok()?;
        (comm.trim() == "sleep").then_some(())
    });
    sb.signal(graceful::signals::Signal::KILL).unwrap();
    let record = eventually("the record", || {
        let (_, body) = http_get(daemon.addr, "/terminations")?;
        body.contains(&needle).then_some(body)
    });
    assert!(record.contains("\"verdict\":\"killed_without_stop_signal\""));
    drop(sb);
    let _ = std::fs::remove_dir(cgroups.dir(&parent));
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

/// Bad flags: one line on stderr and a non-zero exit, never a panic.
#[test]
fn bad_flags_get_one_line_errors() {
    for args in [
        &["run", "--metrics-addr", "nowhere"][..],
        &["run", "--series-ttl", "0s"],
        &[
            "run",
            "--stop-signals",
            "SIGNOPE",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &["trace", "--interval", "-1"],
        &["audit", "--stop-signal", "70"],
    ] {
        let out = Command::new(daemon_binary()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Without root the kernel programs cannot load: one clear line and a non-zero exit.
#[test]
fn without_root_a_one_line_error() {
    for command in ["trace", "run", "demo"] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(daemon_binary())
            .args(
                [command, "--metrics-addr", "127.0.0.1:0"]
                    .iter()
                    .take(if command == "run" { 3 } else { 1 }),
            )
            .output()
            .expect("setpriv (util-linux)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{command}: {err}");
        assert!(lines[0].contains("needs root"), "{command}: {err}");
        assert!(!err.contains("panicked"), "{command}: {err}");
    }
}
