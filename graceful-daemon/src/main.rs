//! `graceful-daemon`: the command line. Errors become one line on stderr and a non-zero exit.
use std::{io::Write, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use graceful::{
    cgroup::Cgroup2,
    clock::WallClock,
    events::Event,
    export::trace::{count_deltas, signal_json, signal_line, ResolvedSignal, SIGNAL_HEADER},
    probes::{ProbeOptions, Probes, DEFAULT_STOP_SIGNALS},
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
    /// Live view of stop-relevant signals with the kernel's verdict on each.
    Trace(TraceArgs),
}

#[derive(Parser)]
struct TraceArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also print the counted-only signals (e.g. SIGURG, SIGCHLD) as periodic counts.
    #[arg(long)]
    all_signals: bool,
    /// Seconds between counts with --all-signals.
    #[arg(long, default_value_t = 1.0, value_parser = positive_seconds)]
    interval: f64,
    /// Signals reported one by one (comma-separated names or numbers).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_STOP_SIGNALS.map(|s| s.to_string()))]
    stop_signals: Vec<String>,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => trace(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn trace(args: TraceArgs) -> Result<()> {
    let stop_signals = args
        .stop_signals
        .iter()
        .map(|s| s.parse::<Signal>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut cgroups = Cgroup2::discover()?;
    let mut probes = Probes::load(
        &ProbeOptions {
            stop_signals: stop_signals.clone(),
        },
        &mut cgroups,
    )?;
    let mut events = probes.events()?;
    let clock = WallClock::default();
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "{SIGNAL_HEADER}")?;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    let mut last_counts = probes.signal_counts()?;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                if let Event::Signal(e) = &event {
                    let resolved = ResolvedSignal {
                        event: e,
                        sender_cgroup: cgroups.path_of(e.sender_cgroup),
                        target_cgroup: cgroups.path_of(e.target_cgroup),
                    };
                    if args.json {
                        writeln!(out, "{}", signal_json(&clock, &resolved))?;
                    } else {
                        writeln!(out, "{}", signal_line(&clock, &resolved))?;
                    }
                }
            }
            _ = ticker.tick(), if args.all_signals => {
                let now = probes.signal_counts()?;
                let counts = count_deltas(&last_counts, &now, &stop_signals);
                last_counts = now;
                if !counts.is_empty() {
                    let v = serde_json::json!({"kind": "signal_counts", "ts": chrono::Utc::now().to_rfc3339(), "counts": counts});
                    if args.json {
                        writeln!(out, "{v}")?;
                    } else {
                        for c in &counts {
                            writeln!(out, "{:<16} {:<9} {:<16} x{} (counted only)", "", c["signal"].as_str().unwrap_or("?"), c["result"].as_str().unwrap_or("?"), c["count"])?;
                        }
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        out.flush().context("writing to stdout")?;
    }
    Ok(())
}
