//! The command line as a user meets it: flags, Ctrl-C, exit codes, logs. Runs the real binary.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use graceful::{cgroup::Cgroup2, signals::Signal, throwaway::Throwaway};
use graceful_tests::daemon::{daemon_binary, eventually, http_get, Daemon, TIMEOUT};
use serde_json::Value;

/// Garbage for every flag of every subcommand: a usage error (exit 2), one line, no panic.
#[test]
fn garbage_flags_are_usage_errors() {
    let garbage: &[&[&str]] = &[
        &["run", "--metrics-addr", "nowhere"],
        &["run", "--metrics-addr", "1.2.3.4:99999"],
        &["run", "--series-ttl", "0s"],
        &["run", "--series-ttl", "-5m"],
        &["run", "--series-ttl", "99999999999999999999h"],
        &["run", "--series-ttl", "1e400s"],
        &["run", "--series-ttl", "NaNs"],
        &["run", "--series-ttl", "10 parsecs"],
        &["run", "--stop-signals", "SIGNOPE"],
        &["run", "--stop-signals", "0"],
        &["run", "--stop-signals", "TERM,,"],
        &["run", "--log-format", "xml"],
        &["run", "--node-name", "Not A Node!"],
        &["run", "--node-name", ""],
        &["run", "--cri-socket", ""],
        &["run", "--workload-series-ttl", "0s"],
        &["run", "--workload-series-ttl", "40d"],
        &["run", "--workload-series-ttl", "forever"],
        &["run", "--event-qps", "0"],
        &["run", "--event-qps", "-1"],
        &["run", "--event-qps", "NaN"],
        &["run", "--event-qps", "1e9"],
        &["run", "--event-burst", "0"],
        &["run", "--event-burst", "-3"],
        &["run", "--event-burst", "many"],
        &["run", "--audit-events", "loud"],
        &["run", "--event-namespaces", "Not_A_Namespace"],
        &["run", "--event-namespaces", "shop,,web"],
        &["run", "--event-exclude-namespaces", "-kube"],
        &["trace", "--interval", "1e-12"],
        &["trace", "--interval", "-1"],
        &["trace", "--interval", "inf"],
        &["trace", "--interval", "NaN"],
        &["trace", "--interval", "1e300"],
        &["trace", "--stop-signals", "99"],
        &["trace", "--json=maybe"],
        &["audit", "--stop-signal", "70"],
        &["audit", "--stop-signal", "SIGWHAT"],
        &["demo", "--grace", "1e300"],
        &["demo", "--grace", "0"],
        &["demo", "--grace", "-2"],
        &["demo", "--grace", "NaN"],
        &["demo", "--grace", "two"],
        &["demo", "--bogus"],
        &["frobnicate"],
    ];
    for args in garbage {
        let out = Command::new(daemon_binary()).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let errors = err.lines().filter(|l| l.starts_with("error:")).count();
        assert_eq!(errors, 1, "{args:?}: {err}");
    }
}

/// Every flag of `run` that shapes metrics and Events, given good values: the daemon runs,
/// and exports its own health beside the node counters.
#[test]
fn run_takes_the_fleet_flags_and_exports_its_own_health() {
    let dir = std::env::temp_dir().join(format!("graceful-cli-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start_with(
        &[
            "--workload-series-ttl",
            "2h",
            "--event-qps",
            "5",
            "--event-burst",
            "10",
            "--audit-events",
            "off",
            "--event-namespaces",
            "shop,web",
            "--event-exclude-namespaces",
            "kube-system",
        ],
        dir.join("daemon.log"),
    );
    let metrics = eventually("/metrics", || {
        http_get(daemon.addr, "/metrics").filter(|(s, _)| *s == 200)
    })
    .1;
    for line in [
        r#"graceful_node_terminations_total{outcome="killed_after_grace",verdict="swallowed_by_shell_pid1"} 0"#,
        r#"graceful_probe_attached{program="signal_generate"} 1"#,
        "graceful_api_up 0",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let (status, body) = http_get(daemon.addr, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(daemon.stop().success());
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
        assert!(lines[0].contains("CAP_BPF"), "{command}: {err}");
        assert!(!err.contains("panicked"), "{command}: {err}");
    }
}

/// `trace` with its stderr lines delivered on a channel, once its probes are attached.
fn start_trace() -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(daemon_binary())
        .args(["trace", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut said = Vec::new();
    while let Ok(line) = rx.recv_timeout(TIMEOUT) {
        if line.contains("probes attached") {
            return (child, rx);
        }
        said.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("trace never said its probes were attached: {said:#?}");
}

/// Exit status of `child`, which must come within `within` of now.
fn exits_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One Ctrl-C stops `trace`, every time; SIGTERM too. The SIGINT's own kernel event races the
/// signal handler: a watcher made anew on each turn of the loop lost it about half the time.
#[test]
fn trace_stops_at_the_first_ctrl_c_or_sigterm() {
    for (round, signal) in [libc::SIGINT; 6]
        .into_iter()
        .chain([libc::SIGTERM; 2])
        .enumerate()
    {
        let (mut child, _lines) = start_trace();
        // SAFETY: our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = exits_within(&mut child, Duration::from_secs(10));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let status = status.unwrap_or_else(|| {
            panic!("round {round}: trace still running 10 s after one signal {signal}")
        });
        assert!(status.success(), "round {round}: {status}");
    }
}

/// Kills a throwaway container and waits for its record on `/terminations`.
fn record_one_kill(daemon: &Daemon, name: &str) -> String {
    let mut cgroups = Cgroup2::discover().unwrap();
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-tests/cli-{}", std::process::id()));
    let parent = run_cgroup.path();
    let sb = Throwaway::spawn(&mut cgroups, parent, name, &["/bin/sleep", "1000"]).unwrap();
    graceful_tests::wait_for_program(&sb, "sleep");
    let needle = format!("\"cgroup\":\"{}\"", sb.cgroup);
    sb.signal(Signal::KILL).unwrap();
    eventually("the record", || {
        http_get(daemon.addr, "/terminations").filter(|(_, b)| b.contains(&needle))
    });
    drop(sb);
    needle
}

#[test]
fn json_logs_are_one_object_per_line_with_the_record_as_an_object() {
    let log = std::env::temp_dir().join(format!("graceful-json-log-{}", std::process::id()));
    let daemon = Daemon::start_with(&["--log-format", "json"], log.clone());
    record_one_kill(&daemon, "json-log");
    assert!(daemon.stop().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a JSON log: {text}"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        assert!(l["timestamp"].is_string(), "{l}");
        assert!(l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    let records: Vec<&Value> = lines.iter().filter(|l| l.get("record").is_some()).collect();
    assert!(
        records.iter().any(|l| l["record"]["kind"] == "termination"
            && l["record"]["verdict"] == "killed_without_stop_signal"
            && l["record"]["container"]["cgroup"]
                .as_str()
                .is_some_and(|c| c.ends_with("/json-log"))),
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn text_logs_into_a_file_have_no_colour() {
    let log = std::env::temp_dir().join(format!("graceful-text-log-{}", std::process::id()));
    let daemon = Daemon::start_with(&["--log-format", "text"], log.clone());
    record_one_kill(&daemon, "text-log");
    assert!(daemon.stop().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("killed_without_stop_signal"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a file: {text:?}");
    let _ = std::fs::remove_file(&log);
}

/// A TCP connection to `to` from the loopback address `from` (each its own peer to the daemon).
fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

fn rss_kib(pid: u32) -> u64 {
    graceful::procfs::ProcStatus::read(pid).map_or(0, |s| s.rss_kib)
}

/// Anyone on the pod network can reach the daemon's port. One peer holding a thousand silent
/// connections and another sending half-written requests all the while: the kubelet's probes
/// and Prometheus' scrape (a third peer) are answered within a second each, memory stays
/// bounded, and SIGTERM still ends the daemon within a second.
#[test]
fn the_endpoints_answer_within_a_second_through_a_connection_flood() {
    use std::io::Write;
    let log = std::env::temp_dir().join(format!("graceful-flood-http-{}", std::process::id()));
    let daemon = Daemon::start_with(&[], log.clone());
    let addr = daemon.addr;
    let pid = daemon.child.id();
    let before = rss_kib(pid);
    let silent: Vec<std::net::TcpStream> = (0..1000)
        .map(|_| connect_from([127, 0, 0, 2], addr).unwrap())
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut s) = connect_from([127, 0, 0, 3], addr) {
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
                    held.push(s);
                }
                if held.len() > 500 {
                    held.remove(0);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            held.len()
        })
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let asked = std::time::Instant::now();
            let answer = http_get(addr, path);
            let took = asked.elapsed();
            assert_eq!(answer.map(|(status, _)| status), Some(200), "{path}");
            assert!(took < Duration::from_secs(1), "{path} took {took:?}");
            slowest = slowest.max(took);
        }
    }
    let during = rss_kib(pid);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = slow.join();
    eprintln!(
        "slowest answer {slowest:?}; daemon RSS {before} KiB before, {during} KiB during the flood"
    );
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} to {during} KiB"
    );
    let stopping = std::time::Instant::now();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    let took = stopping.elapsed();
    eprintln!("SIGTERM to exit: {took:?} (polled every 100 ms)");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?} under the flood"
    );
    drop(silent);
    let _ = std::fs::remove_file(&log);
}

/// nor hold up the daemon's own shutdown (its pod must not end in SIGKILL).
#[test]
fn slow_http_clients_neither_starve_nor_hold_up_shutdown() {
    use std::io::{Read, Write};
    let log = std::env::temp_dir().join(format!("graceful-slow-http-{}", std::process::id()));
    let daemon = Daemon::start_with(&[], log.clone());
    // More half-sent requests than the daemon serves at once.
    let mut held = Vec::new();
    for _ in 0..150 {
        let mut s = std::net::TcpStream::connect(daemon.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        held.push(s);
    }
    // The server drops them at its header timeout and answers others meanwhile.
    let answered = eventually("/healthz while slow clients hold connections", || {
        http_get(daemon.addr, "/healthz").filter(|(status, _)| *status == 200)
    });
    assert_eq!(answered.1, "ok\n");
    let mut first = held.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    // Closed by the server (end of stream, or a reset when it closed with the half request
    // unread), with a 408 or nothing: a read that times out means the connection was still held.
    let read = first.read_to_end(&mut rest);
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a half-sent request was kept open for 20 s: {read:?}"
    );
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).contains("408"),
        "a half-sent request got an answer: {}",
        String::from_utf8_lossy(&rest)
    );
    // New half-sent requests, then SIGTERM: the daemon exits promptly all the same.
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(daemon.addr).unwrap();
        s.write_all(b"GET /terminations HTTP/1.1\r\n").unwrap();
        held.push(s);
    }
    let started = std::time::Instant::now();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with slow clients",
        started.elapsed()
    );
    drop(held);
    let _ = std::fs::remove_file(&log);
}
