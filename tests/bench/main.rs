//! `cargo xtask bench`: what the attached probes cost, measured against peers in one run.
//!
//! The workload is a kill(2) storm: 1M SIGURG to a child (SIGURG's default action is to ignore
//! it, as Go runtimes send it thousands of times a second). Each configuration runs the storm
//! in several interleaved rounds; the median is reported.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use graceful::{
    cgroup::Cgroup2,
    probes::{BpfStats, FloorProbe, ProbeOptions, Probes},
    signals::Signal,
    throwaway::Throwaway,
};

/// Starts a peer tracer and returns once it printed `ready` (it is attached by then).
fn start_peer(cmd: &mut Command, ready: &str) -> Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(ready) => break,
            Some(Ok(_)) => continue,
            _ => panic!("{cmd:?} exited before it was attached"),
        }
    }
    // Keep draining what it prints so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    child
}

fn stop_peer(mut child: Child) {
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

mod container_storms;
mod daemon_bench;
mod kill_storm;

use container_storms::container_storms;
use daemon_bench::daemon_bench;
use kill_storm::storm_bench;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, signo, count, out] = args.as_slice() {
        if mode == "--flood" {
            flood(signo, count, out);
            return;
        }
    }
    if let [_, mode, count, out] = args.as_slice() {
        if mode == "--connect-storm" {
            connect_storm(count, out);
            return;
        }
    }
    // One part alone: --kill-storm, --container-storms, --daemon-only or --drain.
    let only = |part: &str| args.iter().any(|a| a == part);
    let all = ![
        "--kill-storm",
        "--container-storms",
        "--daemon-only",
        "--drain",
    ]
    .into_iter()
    .any(only);
    if all || only("--kill-storm") {
        storm_bench();
    }
    if all || only("--container-storms") {
        container_storms();
    }
    if all || only("--daemon-only") {
        daemon_bench();
    }
    if all || only("--drain") {
        drain_bench();
    }
}

/// `kubectl drain` of a full node through the real containerd: 250 pods of two containers
/// stopped at once with a 2 s grace (`graceful_tests::drain`).
fn drain_bench() {
    // A smaller drain on request, to repeat it quickly (GRACEFUL_DRAIN_PODS).
    let pods: usize = std::env::var("GRACEFUL_DRAIN_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let ctd = graceful_tests::cri::Containerd::start().await;
        let log = std::fs::File::create(ctd.dir.join("daemon.log")).expect("log file");
        let (mut daemon, addr) = start_daemon(log, &ctd.socket.to_string_lossy());
        let watching = graceful_tests::drain::Watching {
            pid: daemon.id(),
            addr,
        };
        let d = graceful_tests::drain::drain(&ctd, watching, "drained", pods).await;
        if d.missing > 0 {
            let _ = std::fs::copy(ctd.dir.join("daemon.log"), "/tmp/drain-daemon.log");
        }
        // SAFETY: our own child.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let _ = daemon.wait();
        let right = |c: &str, v: &str| {
            d.verdicts
                .get(c)
                .map_or(0, |got| got.iter().filter(|g| *g == v).count())
        };
        println!();
        println!(
            "Drain: {pods} pods x 2 containers through containerd, all stopped at once, {} s grace \
             (pods started in {:.0} s):",
            graceful_tests::drain::GRACE,
            d.started_in
        );
        println!(
            "  records: {} of {} apps graceful, {} of {} sidecars pid1_ignores_stop_signal, {} unknown, {} missing; events lost {}; containers containerd left running (killed by the bench) {}",
            right("app", "graceful"),
            pods,
            right("sidecar", "pid1_ignores_stop_signal"),
            pods,
            d.unknown,
            d.missing,
            d.events_lost,
            d.runtime_failures
        );
        println!(
            "  record latency from the container's end: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; last record {:.1} s after the first stop",
            d.latency_ms(0.5),
            d.latency_ms(0.99),
            d.latency_ms(1.0),
            d.drained_in
        );
        println!(
            "  daemon: {:.2} CPU seconds over the drain, peak RSS {:.1} MiB",
            d.cpu_seconds,
            d.peak_rss_kib as f64 / 1024.0
        );
    });
}

/// Inside a throwaway container: `count` kill(2) of `signo` to itself (ignored), the ns per
/// kill written to `out`. Sender and target share the container's cgroup.
fn flood(signo: &str, count: &str, out: &str) {
    let (Ok(signo), Ok(count)) = (signo.parse::<i32>(), count.parse::<u32>()) else {
        std::process::exit(2);
    };
    // SAFETY: ignoring a signal in our own process.
    unsafe { libc::signal(signo, libc::SIG_IGN) };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let start = Instant::now();
    for _ in 0..count {
        // SAFETY: a signal we ignore, to ourselves.
        unsafe { libc::kill(me, signo) };
    }
    let ns = start.elapsed().as_nanos() as f64 / count as f64;
    let _ = std::fs::write(out, format!("{ns}"));
}

/// Inside a throwaway container: `count` TCP connections to its own listener on loopback,
/// each accepted and closed at once; the ns per connection written to `out`.
fn connect_storm(count: &str, out: &str) {
    let Ok(count) = count.parse::<u32>() else {
        std::process::exit(2);
    };
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
        std::process::exit(1);
    };
    let Ok(addr) = listener.local_addr() else {
        std::process::exit(1);
    };
    let start = Instant::now();
    for _ in 0..count {
        let Ok(client) = std::net::TcpStream::connect(addr) else {
            std::process::exit(1);
        };
        let Ok((server, _)) = listener.accept() else {
            std::process::exit(1);
        };
        drop(client);
        drop(server);
    }
    let ns = start.elapsed().as_nanos() as f64 / count as f64;
    let _ = std::fs::write(out, format!("{ns}"));
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    graceful_tests::daemon::http_get(addr, path).map(|(_, body)| body)
}

/// Run time and run count of every loaded program named signal_generate (the kernel keeps
/// 15 characters of a name), whoever loaded it.
fn signal_programs_stats() -> (Duration, u64) {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some("signal_generate"))
        .fold((Duration::ZERO, 0), |(t, n), p| {
            (t + p.run_time(), n + p.run_count())
        })
}

/// CPU time of every thread of a process, in ns (schedstat: exact, unlike clock ticks).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// No container runtime: the storms' throwaway containers are named from their cgroups.
const NO_CRI: &str = "/nonexistent.sock";

/// The release daemon beside this binary (`run`, CRI at `cri`, a free loopback port), once
/// `/readyz` says ready; stderr goes to `stderr`.
fn start_daemon(stderr: impl Into<Stdio>, cri: &str) -> (Child, std::net::SocketAddr) {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.parent().expect("target dir").join("graceful-daemon");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let child = Command::new(&bin)
        .args(["run", "--metrics-addr", &addr.to_string()])
        .args(["--cri-socket", cri])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let ready_by = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/readyz").is_none_or(|b| !b.starts_with("ready")) {
        assert!(
            Instant::now() < ready_by,
            "the daemon was not ready in 30 s (its log: /tmp/graceful-bench-daemon.log)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}
