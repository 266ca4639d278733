//! The kill(2) storm: 1M SIGURG to a child against bpftrace, sigsnoop and raw-tracepoint floors.
use super::*;

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

pub(crate) fn storm_bench() {
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
