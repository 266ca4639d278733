//! The daemon itself: SIGKILL -> record latency with 100 containers at once, and its footprint
//! at rest with up to 1000 running containers.
use super::*;

const LATENCY_SAMPLES: usize = 100;
/// Running containers the footprint is measured at.
const IDLE_STEPS: [usize; 3] = [0, 500, 1000];
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn rss_kib(pid: u32) -> u64 {
    graceful::procfs::ProcStatus::read(pid).map_or(0, |s| s.rss_kib)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The real daemon binary: SIGKILL -> record on /terminations, and its footprint at rest.
pub(crate) fn daemon_bench() {
    let log = std::fs::File::create("/tmp/graceful-bench-daemon.log").expect("log file");
    let (mut daemon, addr) = start_daemon(log, NO_CRI);
    let mut cgroups = Cgroup2::discover().expect("cgroup2");
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-bench/{}", std::process::id()));
    let parent = run_cgroup.path();

    // 100 containers SIGKILLed at once; each record's latency from its kill.
    let batch: Vec<Throwaway> = (0..LATENCY_SAMPLES)
        .map(|i| {
            Throwaway::spawn(
                &mut cgroups,
                parent,
                &format!("lat-{i}"),
                &["/bin/sleep", "1000"],
            )
            .expect("sandbox")
        })
        .collect();
    let started = Instant::now();
    for sb in &batch {
        // Running as its own init (comm sleep) before the kill.
        while graceful::procfs::comm(sb.init).as_deref() != Some("sleep") {
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

    // At rest with 0, 500 and 1000 running containers (a shell and its sleep each): RSS and CPU
    // at each, and the cost of one container more.
    let pid = daemon.id();
    let mut idle = Vec::new();
    let mut footprint = Vec::new();
    println!();
    println!("graceful-daemon at rest, each over {IDLE_WINDOW:?} after its first audit:");
    for target in IDLE_STEPS {
        while idle.len() < target {
            let i = idle.len();
            idle.push(
                Throwaway::spawn(
                    &mut cgroups,
                    parent,
                    &format!("idle-{i}"),
                    &["/bin/sh", "-c", "sleep 100000; true"],
                )
                .expect("sandbox"),
            );
        }
        // The daemon's audit (every 10 s) sees them all before the window.
        std::thread::sleep(Duration::from_secs(12));
        let (t0, c0) = (Instant::now(), cpu_ns(pid));
        std::thread::sleep(IDLE_WINDOW);
        let (t1, c1) = (Instant::now(), cpu_ns(pid));
        let cpu = (c1 - c0) as f64 / 1e9 / (t1 - t0).as_secs_f64() * 100.0;
        let rss = rss_kib(pid) as f64 / 1024.0;
        println!("  {target:>5} containers: RSS {rss:.1} MiB   CPU {cpu:.2}% of one core");
        footprint.push((target, rss, cpu));
    }
    if let (Some(first), Some(last)) = (footprint.first(), footprint.last()) {
        let per = (last.1 - first.1) * 1024.0 / (last.0 - first.0) as f64;
        println!(
            "  targets at {}: RSS < 60 MiB ({}), CPU < 0.5% ({}); {per:.1} KiB and {:.4}% of a core per running container",
            last.0,
            if last.1 < 60.0 { "met" } else { "MISSED" },
            if last.2 < 0.5 { "met" } else { "MISSED" },
            (last.2 - first.2) / (last.0 - first.0) as f64,
        );
    }

    let stop = Instant::now();
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = daemon.wait().expect("wait for the daemon");
    println!(
        "  shutdown on SIGTERM: {:.0} ms, {status}",
        stop.elapsed().as_secs_f64() * 1000.0
    );
    drop(idle);
}
