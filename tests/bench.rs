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
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, signo, count, out] = args.as_slice() {
        if mode == "--flood" {
            flood(signo, count, out);
            return;
        }
    }
    // One part alone: --kill-storm, --container-storms or --daemon-only.
    let only = |part: &str| args.iter().any(|a| a == part);
    let all = !["--kill-storm", "--container-storms", "--daemon-only"]
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

/// Run time and run count of the signal_generate program.
fn run_stats(probes: &Probes) -> (Duration, u64) {
    probes
        .program_stats()
        .into_iter()
        .find(|(name, _, _)| name == "signal_generate")
        .map(|(_, t, n)| (t, n))
        .unwrap_or_default()
}

const SPAWNS: u32 = 3000;
const FLOOD_KILLS: u32 = 200_000;
const CONTAINER_ROUNDS: usize = 5;

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

/// What runs during a container storm.
enum Watcher {
    Nothing,
    /// Attached while held.
    Floor {
        _probe: FloorProbe,
    },
    Daemon(Child),
    Peers(Vec<Child>),
}

impl Watcher {
    fn daemon() -> Watcher {
        let exe = std::env::current_exe().expect("own path");
        let bin = exe.parent().expect("target dir").join("graceful-daemon");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let child = Command::new(&bin)
            .args([
                "run",
                "--metrics-addr",
                &addr.to_string(),
                "--cri-socket",
                "/nonexistent.sock",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let ready_by = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/readyz").is_none_or(|b| !b.starts_with("ready")) {
            assert!(
                Instant::now() < ready_by,
                "the daemon was not ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Watcher::Daemon(child)
    }

    fn cpu(&self) -> u64 {
        match self {
            Watcher::Daemon(child) => cpu_ns(child.id()),
            _ => 0,
        }
    }

    fn stop(self) {
        match self {
            Watcher::Daemon(child) => stop_peer(child),
            Watcher::Peers(children) => children.into_iter().for_each(stop_peer),
            Watcher::Floor { .. } | Watcher::Nothing => {}
        }
    }
}

/// Runs `argv` as a throwaway container to its end; the seconds it took.
fn run_container(cgroups: &mut Cgroup2, parent: &str, name: &str, argv: &[&str]) -> f64 {
    let start = Instant::now();
    let mut sb = Throwaway::spawn(cgroups, parent, name, argv).expect("sandbox");
    sb.wait(Duration::from_secs(600))
        .expect("wait")
        .expect("the storm ended");
    start.elapsed().as_secs_f64()
}

/// Storms inside running containers (not being stopped): fork+exec, and floods of signals
/// among a container's own processes. Each against nothing, the floor (programs on the same
/// hooks that return at once), the daemon and the libbpf-tools peers, alternating.
fn container_storms() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _guard = rt.enter();
    let mut cgroups = Cgroup2::discover().expect("cgroup2");
    let parent = format!("/graceful-bench/storms-{}", std::process::id());
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_string_lossy().into_owned();
    let spawn_script = format!("i=0; while [ $i -lt {SPAWNS} ]; do /bin/true; i=$((i+1)); done");
    let names = [
        "nothing attached",
        "floor (same hooks, return at once)",
        "graceful-daemon run",
        "libbpf-tools peers",
    ];
    // [config][storm] samples; storms: spawn (us/spawn), USR1 flood, URG flood (ns/kill).
    let mut results = vec![vec![Vec::new(); 3]; names.len()];
    let mut daemon_cpu = [Vec::new(), Vec::new(), Vec::new()];
    let out = format!("/tmp/graceful-bench-flood-{}", std::process::id());
    let mut n = 0;
    for _ in 0..CONTAINER_ROUNDS {
        for (config, _) in names.iter().enumerate() {
            for storm in 0..3 {
                let watcher = match config {
                    0 => Watcher::Nothing,
                    1 => Watcher::Floor {
                        _probe: FloorProbe::attach().expect("floor"),
                    },
                    2 => Watcher::daemon(),
                    _ => Watcher::Peers(match storm {
                        0 => vec![
                            start_peer(Command::new("stdbuf").args(["-oL", "execsnoop"]), "PCOMM"),
                            start_peer(Command::new("stdbuf").args(["-oL", "exitsnoop"]), "PCOMM"),
                        ],
                        _ => vec![start_peer(
                            Command::new("stdbuf").args(["-oL", "sigsnoop"]),
                            "TPID",
                        )],
                    }),
                };
                let cpu0 = watcher.cpu();
                n += 1;
                let name = format!("storm-{n}");
                let value = match storm {
                    0 => {
                        let secs = run_container(
                            &mut cgroups,
                            &parent,
                            &name,
                            &["/bin/sh", "-c", &spawn_script],
                        );
                        secs * 1e6 / SPAWNS as f64
                    }
                    _ => {
                        let signo = if storm == 1 {
                            libc::SIGUSR1
                        } else {
                            libc::SIGURG
                        };
                        let _ = std::fs::remove_file(&out);
                        run_container(
                            &mut cgroups,
                            &parent,
                            &name,
                            &[
                                &exe,
                                "--flood",
                                &signo.to_string(),
                                &FLOOD_KILLS.to_string(),
                                &out,
                            ],
                        );
                        std::fs::read_to_string(&out)
                            .ok()
                            .and_then(|s| s.parse::<f64>().ok())
                            .expect("the flood's result")
                    }
                };
                if config == 2 {
                    let events = if storm == 0 { SPAWNS } else { FLOOD_KILLS };
                    daemon_cpu[storm].push((watcher.cpu() - cpu0) as f64 / events as f64);
                }
                watcher.stop();
                results[config][storm].push(value);
            }
        }
    }
    let med: Vec<Vec<f64>> = results
        .into_iter()
        .map(|per_storm| per_storm.into_iter().map(median).collect())
        .collect();
    let slow = |config: usize, storm: usize| (med[config][storm] / med[0][storm] - 1.0).max(1e-9);
    println!();
    println!("Inside running containers (not being stopped), median of {CONTAINER_ROUNDS} alternating rounds:");
    println!(
        "{:<36} {:>14} {:>9} {:>14} {:>9} {:>14} {:>9}",
        "configuration",
        "spawn us",
        "slowdown",
        "USR1 ns/kill",
        "slowdown",
        "URG ns/kill",
        "slowdown"
    );
    for (config, name) in names.iter().enumerate() {
        println!(
            "{:<36} {:>14.1} {:>8.1}% {:>14.1} {:>8.1}% {:>14.1} {:>8.1}%",
            name,
            med[config][0],
            slow(config, 0) * 100.0,
            med[config][1],
            slow(config, 1) * 100.0,
            med[config][2],
            slow(config, 2) * 100.0
        );
    }
    println!("  ({SPAWNS} x fork+exec of /bin/true; {FLOOD_KILLS} kill(2) of an ignored signal to itself)");
    println!(
        "spawn storm: graceful slowdown / floor slowdown: {:.2}, {:+.1} points (target <= 1.3, or within a few points)",
        slow(2, 0) / slow(1, 0),
        (slow(2, 0) - slow(1, 0)) * 100.0
    );
    println!(
        "USR1 flood: graceful slowdown / its SIGURG flood slowdown: {:.2} (target <= 1.3)",
        slow(2, 1) / slow(2, 2)
    );
    println!(
        "daemon CPU: {:.2} us per spawn (target < 5), {:.1} ns per USR1, {:.1} ns per URG",
        median(daemon_cpu[0].clone()) / 1000.0,
        median(daemon_cpu[1].clone()),
        median(daemon_cpu[2].clone())
    );
    // The kernel's own clock on the program, without the noise of wall-clock runs.
    let _stats = BpfStats::enable().expect("BPF run-time stats");
    let mut per_signal = Vec::new();
    for (config, signo) in [
        (1, libc::SIGUSR1),
        (1, libc::SIGURG),
        (2, libc::SIGUSR1),
        (2, libc::SIGURG),
    ] {
        let watcher = match config {
            1 => Watcher::Floor {
                _probe: FloorProbe::attach().expect("floor"),
            },
            _ => Watcher::daemon(),
        };
        let before = signal_programs_stats();
        let _ = std::fs::remove_file(&out);
        n += 1;
        run_container(
            &mut cgroups,
            &parent,
            &format!("storm-{n}"),
            &[
                &exe,
                "--flood",
                &signo.to_string(),
                &FLOOD_KILLS.to_string(),
                &out,
            ],
        );
        let after = signal_programs_stats();
        watcher.stop();
        let runs = after.1.saturating_sub(before.1).max(1);
        per_signal.push((after.0.saturating_sub(before.0)).as_nanos() as f64 / runs as f64);
    }
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_dir(cgroups.dir(&parent));
    println!(
        "signal_generate run time per signal (kernel BPF stats): floor {:.1} ns (USR1) / {:.1} ns (URG), \
         graceful {:.1} ns (USR1) / {:.1} ns (URG): USR1 costs {:.2}x URG",
        per_signal[0],
        per_signal[1],
        per_signal[2],
        per_signal[3],
        per_signal[2] / per_signal[3]
    );
}

const LATENCY_SAMPLES: usize = 100;
const IDLE_CONTAINERS: usize = 200;
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    graceful_tests::daemon::http_get(addr, path).map(|(_, body)| body)
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

    // 100 containers SIGKILLed at once; each record's latency from its kill.
    let batch: Vec<Throwaway> = (0..LATENCY_SAMPLES)
        .map(|i| {
            Throwaway::spawn(
                &mut cgroups,
                &parent,
                &format!("lat-{i}"),
                &["/bin/sleep", "1000"],
            )
            .expect("sandbox")
        })
        .collect();
    let started = Instant::now();
    for sb in &batch {
        // Running as its own init (comm sleep) before the kill.
        while std::fs::read_to_string(format!("/proc/{}/comm", sb.init))
            .unwrap_or_default()
            .trim()
            != "sleep"
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} never ran sleep",
                sb.cgroup
            );
            std::thread::yield_now();
        }
    }
    let mut killed_at = Vec::new();
    for sb in &batch {
        killed_at.push(Instant::now());
        sb.signal(Signal::KILL).expect("kill");
    }
    let cgroups_killed: Vec<&str> = batch.iter().map(|sb| sb.cgroup.as_str()).collect();
    let mut seen_at: Vec<Option<Instant>> = vec![None; batch.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen_at.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "records missing after 30 s");
        let body = http_get(addr, "/terminations").unwrap_or_default();
        // The answer's arrival bounds each record's latency from above.
        let now = Instant::now();
        let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        let present: std::collections::HashSet<&str> = records
            .iter()
            .filter_map(|r| r["container"]["cgroup"].as_str())
            .collect();
        for (i, cgroup) in cgroups_killed.iter().enumerate() {
            if seen_at[i].is_none() && present.contains(cgroup) {
                seen_at[i] = Some(now);
            }
        }
    }
    let mut latencies: Vec<f64> = seen_at
        .iter()
        .zip(&killed_at)
        .filter_map(|(seen, killed)| {
            Some((seen.as_ref()?.duration_since(*killed)).as_secs_f64() * 1000.0)
        })
        .collect();
    drop(batch);
    latencies.sort_by(f64::total_cmp);
    println!();
    println!(
        "SIGKILL -> record on /terminations ({LATENCY_SAMPLES} containers killed at once, polling /terminations):"
    );
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms (target p99 < 10 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    let mut idle = Vec::new();
    for i in 0..IDLE_CONTAINERS {
        idle.push(
            Throwaway::spawn(
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
    let (t0, c0) = (Instant::now(), cpu_ns(pid));
    std::thread::sleep(IDLE_WINDOW);
    let (t1, c1) = (Instant::now(), cpu_ns(pid));
    let cpu = (c1 - c0) as f64 / 1e9 / (t1 - t0).as_secs_f64() * 100.0;
    println!();
    println!(
        "graceful-daemon with {IDLE_CONTAINERS} running containers, over {:?} at rest:",
        IDLE_WINDOW
    );
    println!(
        "  RSS {:.1} MiB (target < 40 MiB)   CPU {:.2}% of one core (target < 0.3%)",
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
