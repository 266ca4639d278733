//! Logs on stderr: `text` for a person (coloured only on a terminal), `json` for a log
//! collector (one object per line: `timestamp`, `level`, `message` and the event's fields; a
//! termination record as an object of its own, never a string inside one).
use std::io::{IsTerminal, Write};

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process-wide logger; call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// One log line for a termination record.
pub fn termination(format: LogFormat, record: &Value, container: &str) {
    let verdict = record["verdict"].as_str().unwrap_or("unknown");
    let outcome = record["outcome"].as_str().unwrap_or("unknown");
    let explanation = record["explanation"].as_str().unwrap_or("");
    match format {
        LogFormat::Text => {
            tracing::info!(verdict, outcome, container, "{explanation}")
        }
        LogFormat::Json => {
            // tracing's JSON formatter can only carry a record as a string: write it whole.
            let line = json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "INFO",
                "message": explanation,
                "verdict": verdict,
                "outcome": outcome,
                "container": container,
                "record": record,
            });
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}
