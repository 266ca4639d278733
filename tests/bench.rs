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
    sandbox::Sandbox,
    signals::Signal,
};

const KILLS: u32 = 1_000_000;
const ROUNDS: usize = 5;

/// Nanoseconds per kill(2) of one storm.
fn storm() -> f64 {
    let mut child = Command::new("/bin/sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id() as i32;
    let start = Instant::now();
    for _ in 0..KILLS {
        // SAFETY: our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGURG) };
    }
    let ns = start.elapsed().as_nanos() as f64 / KILLS as f64;
    let _ = child.kill();
    let _ = child.wait();
    ns
}

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

fn main() {
    if std::env::args().all(|a| a != "--daemon-only") {
        storm_bench();
    }
    daemon_bench();
}

fn storm_bench() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _guard = rt.enter();
    let mut cgroups = Cgroup2::discover().expect("cgroup2");
    let floor_prog = "tracepoint:signal:signal_generate /args->sig == 9999/ {}";
    let counter_prog = "tracepoint:signal:signal_generate { @[args->sig] = count(); }";

    let names = [
        "nothing attached",
        "graceful",
        "bpftrace floor (compare only)",
        "bpftrace counter",
        "sigsnoop",
        "raw-tracepoint floor (compare only)",
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut bpf_ns_per_run = Vec::new();
    for _ in 0..ROUNDS {
        results[0].push(storm());

        let probes =
            Probes::load(&ProbeOptions::default(), &mut cgroups).expect("load graceful probes");
        results[1].push(storm());
        // Run-time stats cost two clock reads per program run: a storm of their own.
        let stats = BpfStats::enable().expect("enable BPF stats");
        let before = run_stats(&probes);
        storm();
        let after = run_stats(&probes);
        drop(stats);
        drop(probes);
        let (dt, dn) = (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        );
        if dn > 0 {
            bpf_ns_per_run.push(dt.as_nanos() as f64 / dn as f64);
        }

        let floor = start_peer(
            Command::new("bpftrace").args(["-e", floor_prog]),
            "Attaching",
        );
        results[2].push(storm());
        stop_peer(floor);

        let counter = start_peer(
            Command::new("bpftrace").args(["-e", counter_prog]),
            "Attaching",
        );
        results[3].push(storm());
        stop_peer(counter);

        let snoop = start_peer(Command::new("stdbuf").args(["-oL", "sigsnoop"]), "TPID");
        results[4].push(storm());
        stop_peer(snoop);

        let floor = FloorProbe::attach().expect("attach the raw-tracepoint floor");
        results[5].push(storm());
        drop(floor);
    }

    let med: Vec<f64> = results.into_iter().map(median).collect();
    let base = med[0];
    println!("kill(2) storm: {KILLS} SIGURG to a child, median of {ROUNDS} interleaved rounds");
    println!(
        "{:<32} {:>10} {:>10}",
        "configuration", "ns/kill", "slowdown"
    );
    for (name, ns) in names.iter().zip(&med) {
        println!(
            "{:<32} {:>10.1} {:>9.1}%",
            name,
            ns,
            (ns / base - 1.0) * 100.0
        );
    }
    let slow = |i: usize| (med[i] / base - 1.0).max(1e-9);
    println!();
    println!(
        "graceful slowdown / bpftrace floor slowdown: {:.2} (target <= 1.3)",
        slow(1) / slow(2)
    );
    println!("graceful slowdown / raw-tracepoint floor slowdown: {:.2} (the same kind of program: the honest floor)", slow(1) / slow(5));
    println!(
        "graceful slowdown / sigsnoop slowdown: {:.2} (target < 0.25)",
        slow(1) / slow(4)
    );
    println!(
        "signal_generate run time per event (kernel BPF stats): {:.1} ns (target < 100 ns)",
        median(bpf_ns_per_run)
    );
}

/// Run time and run count of the signal_generate program.
fn run_stats(probes: &Probes) -> (Duration, u64) {
    probes
        .program_stats()
        .into_iter()
        .find(|(name, _, _)| name == "signal_generate")
        .map(|(_, t, n)| (t, n))
        .unwrap_or_default()
}

const LATENCY_SAMPLES: usize = 100;
const IDLE_CONTAINERS: usize = 200;
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    graceful_tests::daemon::http_get(addr, path).map(|(_, body)| body)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The real daemon binary: SIGKILL -> record on /terminations, and its footprint at rest.
fn daemon_bench() {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.parent().expect("target dir").join("graceful-daemon");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut daemon = Command::new(&bin)
        .args([
            "run",
            "--metrics-addr",
            &addr.to_string(),
            "--cri-socket",
            "/nonexistent.sock",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create("/tmp/graceful-bench-daemon.log").expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let ready_by = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/readyz").is_none_or(|b| !b.starts_with("ready")) {
        assert!(
            Instant::now() < ready_by,
            "the daemon was not ready in 30 s: /tmp/graceful-bench-daemon.log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cgroups = Cgroup2::discover().expect("cgroup2");
    let parent = format!("/graceful-bench/{}", std::process::id());

    let mut latencies = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let sb = Sandbox::spawn(
            &mut cgroups,
            &parent,
            &format!("lat-{i}"),
            &["/bin/sleep", "1000"],
        )
        .expect("sandbox");
        // Running as its own init (comm sleep) before the kill.
        let started = Instant::now();
        while std::fs::read_to_string(format!("/proc/{}/comm", sb.init))
            .unwrap_or_default()
            .trim()
            != "sleep"
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} never ran sleep",
                sb.cgroup
            );
            std::thread::yield_now();
        }
        let needle = format!("\"cgroup\":\"{}\"", sb.cgroup);
        let start = Instant::now();
        sb.signal(Signal::KILL).expect("kill");
        loop {
            if http_get(addr, "/terminations").is_some_and(|b| b.contains(&needle)) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no record for {}",
                sb.cgroup
            );
        }
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        drop(sb);
    }
    latencies.sort_by(f64::total_cmp);
    println!();
    println!(
        "SIGKILL -> record on /terminations ({LATENCY_SAMPLES} containers, polling /terminations):"
    );
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms (target p99 < 50 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    let mut idle = Vec::new();
    for i in 0..IDLE_CONTAINERS {
        idle.push(
            Sandbox::spawn(
                &mut cgroups,
                &parent,
                &format!("idle-{i}"),
                &["/bin/sh", "-c", "sleep 100000; true"],
            )
            .expect("sandbox"),
        );
    }
    // Let the daemon see them start and audit them once, then measure a quiet window.
    std::thread::sleep(Duration::from_secs(6));
    let pid = daemon.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(IDLE_WINDOW);
    let (t1, c1) = (Instant::now(), cpu_ticks(pid));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (c1 - c0) as f64 / hz / (t1 - t0).as_secs_f64() * 100.0;
    println!();
    println!(
        "graceful-daemon with {IDLE_CONTAINERS} running containers, over {:?} at rest:",
        IDLE_WINDOW
    );
    println!(
        "  RSS {:.1} MiB (target < 40 MiB)   CPU {:.2}% of one core (target < 0.5%)",
        rss_kib(pid) as f64 / 1024.0,
        cpu
    );

    let stop = Instant::now();
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = daemon.wait().expect("wait for the daemon");
    println!(
        "  shutdown on SIGTERM: {:.0} ms, {status}",
        stop.elapsed().as_secs_f64() * 1000.0
    );
    drop(idle);
    let _ = std::fs::remove_dir(cgroups.dir(&parent));
}
