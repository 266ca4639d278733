//! Storms inside running containers: fork+exec, USR1 and URG floods, against a floor and the
//! libbpf-tools peers, with the daemon's CPU per event and the kernel's time per signal.
use super::*;

const SPAWNS: u32 = 3000;
const FLOOD_KILLS: u32 = 200_000;
/// TCP connections of the connect/close storm (loopback, each accepted and closed at once).
const CONNECTS: u32 = 20_000;
const CONTAINER_ROUNDS: usize = 5;

/// What runs during a container storm.
enum Watcher {
    Nothing,
    /// Attached while held.
    Floor {
        _probe: FloorProbe,
    },
    Daemon(Child),
    /// The daemon while a client reads /metrics every 10 ms.
    Scraped(Child, Scraper),
    Peers(Vec<Child>),
}

/// Reads /metrics every 10 ms until stopped: a scrape must never stall the event path.
struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u32>,
}

impl Scraper {
    fn start(addr: std::net::SocketAddr) -> Scraper {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            while !stopped.load(Ordering::Relaxed) {
                if http_get(addr, "/metrics").is_some_and(|b| b.contains("graceful_build_info")) {
                    scrapes += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            scrapes
        });
        Scraper { stop, thread }
    }

    /// Scrapes answered.
    fn stop(self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the scraper")
    }
}

impl Watcher {
    fn daemon() -> Watcher {
        Watcher::Daemon(start_daemon(Stdio::null(), NO_CRI).0)
    }

    fn scraped() -> Watcher {
        let (child, addr) = start_daemon(Stdio::null(), NO_CRI);
        Watcher::Scraped(child, Scraper::start(addr))
    }

    fn cpu(&self) -> u64 {
        match self {
            Watcher::Daemon(child) | Watcher::Scraped(child, _) => cpu_ns(child.id()),
            _ => 0,
        }
    }

    /// Scrapes answered while it ran.
    fn stop(self) -> u32 {
        match self {
            Watcher::Scraped(child, scraper) => {
                let scrapes = scraper.stop();
                stop_peer(child);
                return scrapes;
            }
            Watcher::Daemon(child) => stop_peer(child),
            Watcher::Peers(children) => children.into_iter().for_each(stop_peer),
            Watcher::Floor { .. } | Watcher::Nothing => {}
        }
        0
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
pub(crate) fn container_storms() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _guard = rt.enter();
    let mut cgroups = Cgroup2::discover().expect("cgroup2");
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-bench/storms-{}", std::process::id()));
    let parent = run_cgroup.path();
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_string_lossy().into_owned();
    let spawn_script = format!("i=0; while [ $i -lt {SPAWNS} ]; do /bin/true; i=$((i+1)); done");
    let names = [
        "nothing attached",
        "floor (same hooks, return at once)",
        "graceful-daemon run",
        "libbpf-tools peers",
        "graceful, /metrics every 10 ms",
    ];
    // [config][storm] samples; storms: spawn (us/spawn), USR1 flood, URG flood (ns/kill),
    // connect/close storm (us/connection).
    let mut results = vec![vec![Vec::new(); 4]; names.len()];
    let mut daemon_cpu = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut scrapes = 0;
    let out = format!("/tmp/graceful-bench-flood-{}", std::process::id());
    let mut n = 0;
    for _ in 0..CONTAINER_ROUNDS {
        for (config, _) in names.iter().enumerate() {
            for storm in 0..4 {
                let watcher = match config {
                    0 => Watcher::Nothing,
                    1 => Watcher::Floor {
                        _probe: FloorProbe::attach().expect("floor"),
                    },
                    2 => Watcher::daemon(),
                    4 => Watcher::scraped(),
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
                            parent,
                            &name,
                            &["/bin/sh", "-c", &spawn_script],
                        );
                        secs * 1e6 / SPAWNS as f64
                    }
                    3 => {
                        let _ = std::fs::remove_file(&out);
                        run_container(
                            &mut cgroups,
                            parent,
                            &name,
                            &[&exe, "--connect-storm", &CONNECTS.to_string(), &out],
                        );
                        std::fs::read_to_string(&out)
                            .ok()
                            .and_then(|s| s.parse::<f64>().ok())
                            .expect("the connect storm's result")
                            / 1000.0
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
                            parent,
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
                    let events = match storm {
                        0 => SPAWNS,
                        3 => CONNECTS,
                        _ => FLOOD_KILLS,
                    };
                    daemon_cpu[storm].push((watcher.cpu() - cpu0) as f64 / events as f64);
                }
                scrapes += watcher.stop();
                results[config][storm].push(value);
            }
        }
    }
    // Each round's USR1 flood slowdown over its SIGURG flood's, the daemon against nothing.
    let per_round: Vec<String> = (0..CONTAINER_ROUNDS)
        .map(|r| {
            let slow = |storm: usize| (results[2][storm][r] / results[0][storm][r] - 1.0).max(1e-9);
            format!("{:.2}", slow(1) / slow(2))
        })
        .collect();
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
    for (config, name) in names.iter().enumerate() {
        println!(
            "{:<36} {:>10.2} us/connection {:>8.1}%",
            name,
            med[config][3],
            slow(config, 3) * 100.0
        );
    }
    println!("  ({CONNECTS} loopback TCP connections, each accepted and closed at once)");
    // A ratio to a floor within the noise (under 1%) says nothing: the points do.
    let ratio = |storm: usize| {
        if slow(1, storm) < 0.01 {
            "n/a (floor within noise)".to_string()
        } else {
            format!("{:.2}", slow(2, storm) / slow(1, storm))
        }
    };
    println!(
        "connect/close storm: graceful slowdown / floor slowdown: {}, {:+.1} points (target <= 1.3)",
        ratio(3),
        (slow(2, 3) - slow(1, 3)) * 100.0
    );
    println!(
        "spawn storm: graceful slowdown / floor slowdown: {}, {:+.1} points (target <= 1.3, or within a few points)",
        ratio(0),
        (slow(2, 0) - slow(1, 0)) * 100.0
    );
    println!(
        "USR1 flood: graceful slowdown / its SIGURG flood slowdown: {:.2} (target <= 1.3); each round: {}",
        slow(2, 1) / slow(2, 2),
        per_round.join(", ")
    );
    println!(
        "scraped every 10 ms ({scrapes} scrapes answered): spawn {:+.1}%, USR1 {:+.1}%, URG {:+.1}% against the unscraped daemon",
        (med[4][0] / med[2][0] - 1.0) * 100.0,
        (med[4][1] / med[2][1] - 1.0) * 100.0,
        (med[4][2] / med[2][2] - 1.0) * 100.0
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
            parent,
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
