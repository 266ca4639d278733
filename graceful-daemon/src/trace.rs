//! `trace`: the live view. Every stop-relevant signal with the kernel's verdict on it, the
//! counted-only signals as periodic counts, and a record for every container that stops.
use std::{future::Future, io::Write, time::Duration};

use crate::{
    clock::WallClock,
    driver::{Driver, Step, StreamEnded},
    events::Event,
    export::trace::{
        count_deltas, signal_json, signal_line, ResolvedSignal, SignalCountsJson, SIGNAL_HEADER,
    },
    pipeline::Session,
    probes::{ProbeError, ProbeOptions},
    record::TerminationRecord,
    signals::Signal,
};

#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// One JSON object per line instead of a table.
    pub json: bool,
    /// Also the counted-only signals, every `interval`.
    pub all_signals: bool,
    pub interval: Duration,
    /// Signals reported one by one.
    pub stop_signals: Vec<Signal>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("{0}: tracing stopped")]
    StreamEnded(#[from] StreamEnded),
    #[error("writing the trace: {0}")]
    Write(#[from] std::io::Error),
    #[error("encoding the trace: {0}")]
    Json(#[from] serde_json::Error),
}

/// How often processes whose exit was lost are looked for, and the clock read again.
const SWEEP: Duration = Duration::from_secs(5);

/// Traces until `shutdown`, writing to `out`.
pub async fn run(
    options: &TraceOptions,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TraceError> {
    tokio::pin!(shutdown);
    let session = Session::start(&ProbeOptions {
        stop_signals: options.stop_signals.clone(),
        ..ProbeOptions::default()
    })?;
    let (probes, mut driver) = Driver::start(session, SWEEP);
    if !options.json {
        writeln!(out, "{SIGNAL_HEADER}")?;
    }
    let mut counting = tokio::time::interval(options.interval);
    let mut last_counts = probes.signal_counts()?;
    tracing::info!("probes attached: tracing (Ctrl-C to stop)");
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            step = driver.next() => match step? {
                Step::Event(event, records) => {
                    if let Event::Signal(e) = &event {
                        let cgroups = &mut driver.pipeline.cgroups;
                        let resolved = ResolvedSignal {
                            event: e,
                            sender_cgroup: cgroups.learn(e.sender_cgroup, e.sender_pid).map(str::to_string),
                            target_cgroup: cgroups.learn(e.target_cgroup, e.target_pid).map(str::to_string),
                        };
                        if options.json {
                            writeln!(out, "{}", signal_json(&driver.clock, &resolved))?;
                        } else {
                            writeln!(out, "{}", signal_line(&driver.clock, &resolved))?;
                        }
                    }
                    print_records(out, &driver.clock, &records, options.json)?;
                }
                Step::Swept(records) => {
                    print_records(out, &driver.clock, &records, options.json)?;
                    // Nothing else forgets processes of running containers that /proc lost.
                    driver.pipeline.prune();
                }
            },
            _ = counting.tick(), if options.all_signals => {
                let now = probes.signal_counts()?;
                let counts = count_deltas(&last_counts, &now, &options.stop_signals);
                last_counts = now;
                if counts.is_empty() {
                    continue;
                }
                if options.json {
                    let line = SignalCountsJson {
                        kind: "signal_counts",
                        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        counts: &counts,
                    };
                    writeln!(out, "{}", serde_json::to_string(&line)?)?;
                } else {
                    for c in &counts {
                        writeln!(out, "{:<16} {:<9} {:<16} x{} (counted only)", "", c.signal.to_string(), c.result.as_str(), c.count)?;
                    }
                }
            }
        }
        out.flush()?;
    }
    Ok(())
}

fn print_records(
    out: &mut impl Write,
    clock: &WallClock,
    records: &[TerminationRecord],
    json: bool,
) -> std::io::Result<()> {
    for r in records {
        if json {
            writeln!(out, "{}", r.to_json(clock))?;
        } else {
            write!(out, "{}", r.timeline())?;
        }
    }
    Ok(())
}
