//! `graceful-daemon`: the command line. Errors become one line on stderr and a non-zero exit.
use std::{io::Write, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};
use graceful::check_probe::{Probe, ProbeTarget};
use graceful::{
    clock::WallClock,
    engine::Scenario,
    export::events::{AuditEvents, EventOptions},
    export::log::{self, LogFormat},
    flags::{
        env_var, events_per_second, namespace_name, node_name, parse_duration, seconds_between,
        seconds_up_to,
    },
    probes::{ProbeOptions, DEFAULT_STOP_SIGNALS},
    signals::Signal,
};

#[derive(Parser)]
#[command(
    name = "graceful-daemon",
    version,
    about = "Why were my containers SIGKILLed? eBPF-based answers."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The node daemon: metrics, /terminations and logs for every container stopped on the node.
    Run(RunArgs),
    /// Live view of stop-relevant signals with the kernel's verdict on each, and a
    /// termination record for every container that stops.
    Trace(TraceArgs),
    /// PID 1 stop-signal risk of every running container.
    Audit(AuditArgs),
    /// Start throwaway containers with the usual PID 1 mistakes and a correct one, stop them
    /// like a runtime does, and print what graceful says about each.
    Demo(DemoArgs),
    /// Run COMMAND as PID 1 of a throwaway container, stop it like a runtime, print its record.
    /// Exit 0 when it shut down gracefully, 1 for any other verdict, 2 for a usage error.
    Check(CheckArgs),
}

#[derive(Parser)]
struct CheckArgs {
    /// Seconds between the stop signal and SIGKILL.
    #[arg(long, default_value_t = 10.0, value_parser = seconds_up_to(3600.0))]
    grace: f64,
    /// The stop signal (the image's STOPSIGNAL, Kubernetes' lifecycle.stopSignal); default
    /// SIGTERM. With --image, the runtime sends the image's own.
    #[arg(long, conflicts_with = "image")]
    stop_signal: Option<Signal>,
    /// Stop it this many seconds after the start (default: once its processes have settled).
    #[arg(long, value_parser = seconds_up_to(3600.0))]
    ready_after: Option<f64>,
    /// The record as one JSON object instead of a timeline.
    #[arg(long)]
    json: bool,
    /// Also write a JUnit report to this file (for CI systems).
    #[arg(long)]
    junit: Option<std::path::PathBuf>,
    /// An environment variable for the command, KEY=VALUE (repeat it); PATH, HOSTNAME and
    /// HOME are set as a runtime sets them.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = env_var, conflicts_with = "image")]
    env: Vec<String>,
    /// Check this image instead of a command: its own entrypoint, command and STOPSIGNAL, run
    /// and stopped by the node's container runtime through CRI, as Kubernetes would.
    #[arg(long, value_name = "REF", conflicts_with = "command")]
    image: Option<String>,
    /// The container runtime's CRI socket for --image (default: containerd's or CRI-O's).
    #[arg(long, requires = "image")]
    cri_socket: Option<std::path::PathBuf>,
    /// Probe the server through its stop, as its users would: keep-alive connections and a
    /// stream of new requests to http://HOST:PORT/PATH; prints what failed from the stop signal
    /// on beside the kernel's counts.
    #[arg(long, value_name = "URL", conflicts_with_all = ["image", "pod", "probe_port"])]
    probe_url: Option<String>,
    /// The same as --probe-url http://127.0.0.1:PORT/.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["image", "pod"])]
    probe_port: Option<u16>,
    /// Check a Pod manifest instead: each container's command (images are not pulled) in its
    /// own throwaway container of one pod, stopped as a kubelet stops the pod (native sidecars
    /// after the app containers), within its terminationGracePeriodSeconds (else --grace);
    /// prints the pod record. Exit 1 for any pod verdict but graceful.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["command", "image", "stop_signal"])]
    pod: Option<std::path::PathBuf>,
    /// The command and its arguments (after `--`).
    #[arg(
        required_unless_present_any = ["image", "pod"],
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

#[derive(Parser)]
struct RunArgs {
    /// Address of /metrics, /healthz, /readyz and /terminations.
    #[arg(long, default_value = "0.0.0.0:9402")]
    metrics_addr: std::net::SocketAddr,
    /// CRI socket of the container runtime (default: the first of containerd's and CRI-O's that exists).
    #[arg(long)]
    cri_socket: Option<std::path::PathBuf>,
    /// Name of this node.
    #[arg(long, env = "NODE_NAME", value_parser = node_name)]
    node_name: Option<String>,
    /// `text` for a person, `json` (one object per line) for a log collector.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Drop the series of containers gone for longer than this (e.g. 30s, 10m, 1h; at most 30 days).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    series_ttl: Duration,
    /// Keep a workload's stop counts this long after its last stop: what a dashboard's time
    /// range and the alerts look back over (e.g. 6h; at most 30 days).
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    workload_series_ttl: Duration,
    /// Signals reported one by one (comma-separated names or numbers).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_STOP_SIGNALS)]
    stop_signals: Vec<Signal>,
    /// Kubernetes Events written per second by this node on average (kubelet's default).
    #[arg(long, default_value_t = 50.0, value_parser = events_per_second)]
    event_qps: f64,
    /// Kubernetes Events this node may write at once before --event-qps applies.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    event_burst: u32,
    /// The audit's PID1IgnoresStopSignal Events (once per workload, container and image):
    /// `warning`, `normal` or `off`.
    #[arg(long, value_enum, default_value = "warning")]
    audit_events: AuditEvents,
    /// Publish Events only for pods in these namespaces (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', value_parser = namespace_name)]
    event_namespaces: Vec<String>,
    /// Never publish Events for pods in these namespaces (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = namespace_name)]
    event_exclude_namespaces: Vec<String>,
}

#[derive(Parser)]
struct AuditArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// The stop signal to check against (the image's STOPSIGNAL).
    #[arg(long, default_value = "SIGTERM")]
    stop_signal: Signal,
}

#[derive(Parser)]
struct DemoArgs {
    /// Print the termination records as JSON, one per line.
    #[arg(long)]
    json: bool,
    /// Seconds between the stop signal and SIGKILL (at most 3600).
    #[arg(long, default_value_t = 2.0, value_parser = seconds_up_to(3600.0))]
    grace: f64,
}

#[derive(Parser)]
struct TraceArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also print the counted-only signals (e.g. SIGURG, SIGCHLD) as periodic counts.
    #[arg(long)]
    all_signals: bool,
    /// Seconds between counts with --all-signals (0.01 to 3600).
    #[arg(long, default_value_t = 1.0, value_parser = seconds_between(0.01, 3600.0))]
    interval: f64,
    /// Signals reported one by one (comma-separated names or numbers).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_STOP_SIGNALS)]
    stop_signals: Vec<Signal>,
}

fn main() {
    let cli = Cli::parse();
    log::init(match &cli.command {
        Command::Run(args) => args.log_format,
        _ => LogFormat::Text,
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        let result = match cli.command {
            // `check` has its own exit codes (0 graceful, 1 another verdict, 2 usage).
            Command::Check(args) => return check(args).await,
            Command::Run(args) => run(args).await,
            Command::Trace(args) => trace(args).await,
            Command::Audit(args) => audit(args),
            Command::Demo(args) => demo(args).await,
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn trace(args: TraceArgs) -> Result<()> {
    let options = graceful::trace::TraceOptions {
        json: args.json,
        all_signals: args.all_signals,
        interval: Duration::from_secs_f64(args.interval),
        stop_signals: args.stop_signals,
    };
    let mut out = std::io::stdout().lock();
    graceful::trace::run(&options, &mut out, graceful::shutdown::requested()).await?;
    Ok(())
}

/// `check`: 0 graceful, 1 another verdict, 2 a command that cannot start (or a usage error,
/// which clap reports), 1 for anything else that went wrong.
async fn check(args: CheckArgs) -> i32 {
    if let Some(file) = &args.pod {
        return check_pod(file, &args).await;
    }
    let options = graceful::check::CheckOptions {
        grace: Duration::from_secs_f64(args.grace),
        stop_signal: args.stop_signal.unwrap_or(Signal::TERM),
        ready_after: args.ready_after.map(Duration::from_secs_f64),
        env: args.env.clone(),
    };
    let target = match (&args.probe_url, args.probe_port) {
        (Some(url), _) => match ProbeTarget::url(url) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        (None, Some(port)) => Some(ProbeTarget::port(port)),
        (None, None) => None,
    };
    let probe = target.map(Probe::start);
    let checked = match &args.image {
        Some(image) => {
            graceful::check_image::run(image, args.cri_socket.as_deref(), &options).await
        }
        None => graceful::check::run(&args.command, &options).await,
    };
    let record = match checked {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = probe {
                let _ = p.finish(0, 0);
            }
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    // What the client saw from the stop signal (or the kill) to the container's end.
    let t = &record.termination;
    let since = t
        .stop
        .as_ref()
        .map(|s| s.at)
        .or(t.kill.as_ref().map(|k| k.at))
        .unwrap_or(t.started);
    let probed = match probe.map(|p| p.finish(since, t.ended)) {
        Some(Ok(counts)) => Some(counts),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return 2;
        }
        None => None,
    };
    let clock = WallClock::default();
    let printed = if args.json {
        let mut json = record.to_json(&clock);
        if let (Some(c), Some(o)) = (&probed, json.as_object_mut()) {
            o.insert("probe".into(), serde_json::json!(c));
        }
        writeln!(std::io::stdout(), "{json}")
    } else {
        let said = probed.as_ref().map_or(String::new(), |c| {
            format!(
                "   probe {}: {} requests from the stop signal on, {} failed ({} refused before the end, {} cut)\n",
                c.url, c.requests, c.failed, c.refused, c.cut
            )
        });
        write!(std::io::stdout(), "{}{said}", record.timeline())
    };
    if let Err(e) = printed {
        eprintln!("error: writing the record: {e}");
        return 1;
    }
    if let Some(path) = &args.junit {
        let name = match &args.image {
            Some(image) => vec!["image".to_string(), image.clone()],
            None => args.command.clone(),
        };
        if let Err(e) = std::fs::write(path, graceful::check::junit(&name, &record)) {
            eprintln!("error: writing {}: {e}", path.display());
            return 1;
        }
    }
    i32::from(record.termination.verdict != graceful::tracker::Verdict::Graceful)
}

/// `check --pod`: the containers' records, then the pod's; the exit code by the pod verdict.
async fn check_pod(file: &std::path::Path, args: &CheckArgs) -> i32 {
    let checked = match graceful::check_pod::parse(file) {
        Ok(plan) => {
            let grace = plan
                .grace
                .unwrap_or_else(|| Duration::from_secs_f64(args.grace));
            graceful::check_pod::run(&plan, grace, &args.env).await
        }
        Err(e) => Err(e.into()),
    };
    let (records, pod) = match checked {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let clock = WallClock::default();
    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        records
            .iter()
            .map(|r| r.to_json(&clock))
            .chain([pod.to_json(&clock)])
            .try_for_each(|j| writeln!(out, "{j}"))
    } else {
        records
            .iter()
            .map(|r| r.timeline())
            .chain([pod.timeline()])
            .try_for_each(|t| write!(out, "{t}"))
    };
    if let Err(e) = printed {
        eprintln!("error: writing the records: {e}");
        return 1;
    }
    i32::from(pod.verdict.is_bad())
}

fn audit(args: AuditArgs) -> Result<()> {
    let entries: Vec<_> = graceful::audit::scan()
        .into_iter()
        .map(|p| p.against(args.stop_signal))
        .collect();
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:<24} {:<12} {:>8} {:<16} {:<20} WHY",
            "CONTAINER", "RUNTIME", "PID", "PID 1", "RISK"
        )?;
    }
    for e in &entries {
        if args.json {
            writeln!(out, "{}", e.to_json())?;
        } else {
            let risk = if e.stop_signal_dropped() {
                "stop_signal_dropped"
            } else {
                "none"
            };
            writeln!(
                out,
                "{:<24} {:<12} {:>8} {:<16} {:<20} {}",
                e.main.identity.short_id(),
                e.main.identity.runtime.as_str(),
                e.main.pid,
                e.main.status.comm,
                risk,
                e.explanation()
            )?;
        }
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let scenarios = Scenario::demo_set();
    let grace = Duration::from_secs_f64(args.grace);
    if !args.json {
        println!("Starting {} throwaway containers (cgroup2 + pid namespace), then stopping them like a runtime:", scenarios.len());
        println!(
            "stop signal to PID 1 from outside, {:.1} s grace, then SIGKILL.\n",
            args.grace
        );
    }
    let records = graceful::engine::run(&scenarios, grace).await?;
    let clock = WallClock::default();
    let mut out = std::io::stdout().lock();
    for (s, r) in scenarios.iter().zip(&records) {
        if args.json {
            writeln!(out, "{}", r.to_json(&clock))?;
        } else {
            writeln!(out, "# {}: {}", s.name, s.what)?;
            writeln!(out, "{}", r.timeline())?;
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    let options = graceful::daemon::RunOptions {
        metrics_addr: args.metrics_addr,
        cri_socket: args.cri_socket,
        node_name: args.node_name,
        series_ttl: args.series_ttl,
        workload_series_ttl: args.workload_series_ttl,
        log_format: args.log_format,
        events: EventOptions {
            qps: args.event_qps,
            burst: args.event_burst,
            audit: args.audit_events,
            namespaces: args.event_namespaces,
            exclude_namespaces: args.event_exclude_namespaces,
        },
        probes: ProbeOptions {
            stop_signals: args.stop_signals,
            ..ProbeOptions::default()
        },
    };
    graceful::daemon::run(options, graceful::shutdown::requested()).await?;
    Ok(())
}
