//! The `trace` view: one line per stop-relevant signal, for a person or (`--json`) a program.
use serde::Serialize;
use serde_json::Value;

use crate::{
    clock::WallClock,
    events::{SignalCounts, SignalEvent, SignalResult},
    signals::Signal,
};

/// A signal event with its cgroups resolved to paths below the cgroup2 root.
pub struct ResolvedSignal<'a> {
    pub event: &'a SignalEvent,
    pub sender_cgroup: Option<String>,
    pub target_cgroup: Option<String>,
}

/// The signal event of docs/design.md (`trace --json`).
#[derive(Serialize)]
struct SignalJson<'a> {
    kind: &'static str,
    ts: String,
    signal: Signal,
    signo: i32,
    code: i32,
    result: SignalResult,
    sender: SenderJson<'a>,
    target: TargetJson<'a>,
}

#[derive(Serialize)]
struct SenderJson<'a> {
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup: Option<&'a str>,
}

#[derive(Serialize)]
struct TargetJson<'a> {
    pid: u32,
    comm: &'a str,
    cgroup: Option<&'a str>,
}

pub fn signal_json(clock: &WallClock, s: &ResolvedSignal<'_>) -> Value {
    let e = s.event;
    let json = SignalJson {
        kind: "signal",
        ts: clock.rfc3339(e.ts),
        signal: e.signal,
        signo: e.signal.0,
        code: e.code,
        result: e.result,
        sender: SenderJson {
            pid: e.sender_pid,
            tid: e.sender_tid,
            comm: &e.sender_comm,
            cgroup: s.sender_cgroup.as_deref(),
        },
        target: TargetJson {
            pid: e.target_pid,
            comm: &e.target_comm,
            cgroup: s.target_cgroup.as_deref(),
        },
    };
    // Plain data with string keys: serializing it cannot fail.
    serde_json::to_value(json).unwrap_or(Value::Null)
}

pub const SIGNAL_HEADER: &str =
    "TIME             SIGNAL    RESULT           SENDER                 TARGET                 TARGET CGROUP";

pub fn signal_line(clock: &WallClock, s: &ResolvedSignal<'_>) -> String {
    let e = s.event;
    format!(
        "{:<16} {:<9} {:<16} {:<22} {:<22} {}",
        clock.at(e.ts).format("%H:%M:%S%.6f"),
        e.signal.to_string(),
        e.result.as_str(),
        format!("{}/{}", e.sender_pid, e.sender_comm),
        format!("{}/{}", e.target_pid, e.target_comm),
        s.target_cgroup.as_deref().unwrap_or("?"),
    )
}

/// How often a counted-only signal was generated with one result (`trace --all-signals`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalCount {
    pub signal: Signal,
    pub result: SignalResult,
    pub count: u64,
}

/// The periodic `signal_counts` line of `trace --json --all-signals`.
#[derive(Serialize)]
pub struct SignalCountsJson<'a> {
    pub kind: &'static str,
    pub ts: String,
    pub counts: &'a [SignalCount],
}

/// Counts of the counted-only signals that grew since `before`.
pub fn count_deltas(
    before: &SignalCounts,
    now: &SignalCounts,
    stop: &[Signal],
) -> Vec<SignalCount> {
    now.0
        .iter()
        .filter(|(sig, _, _)| !stop.contains(sig))
        .filter_map(|&(signal, result, n)| {
            let count = n.saturating_sub(before.get(signal, result));
            (count > 0).then_some(SignalCount {
                signal,
                result,
                count,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_json_has_the_contract_fields() {
        let e = SignalEvent {
            ts: 1,
            signal: Signal::TERM,
            code: 0,
            result: SignalResult::Ignored,
            group: true,
            sender_pid: 10,
            sender_tid: 11,
            sender_comm: "runc".into(),
            sender_cgroup: 1,
            target_pid: 20,
            target_comm: "sh".into(),
            target_cgroup: 0,
            at_generation: Default::default(),
            established: None,
        };
        let r = ResolvedSignal {
            event: &e,
            sender_cgroup: Some("/".into()),
            target_cgroup: None,
        };
        let v = signal_json(&WallClock::default(), &r);
        assert_eq!(v["kind"], "signal");
        assert_eq!(v["signal"], "SIGTERM");
        assert_eq!(v["signo"], 15);
        assert_eq!(v["result"], "ignored");
        assert_eq!(v["sender"]["tid"], 11);
        assert_eq!(v["target"]["comm"], "sh");
        assert!(v["target"]["cgroup"].is_null());
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(signal_line(&WallClock::default(), &r).contains("20/sh"));
    }

    #[test]
    fn deltas_skip_stop_signals_and_unchanged() {
        let before = SignalCounts(vec![(Signal::URG, SignalResult::Ignored, 5)]);
        let now = SignalCounts(vec![
            (Signal::URG, SignalResult::Ignored, 8),
            (Signal::TERM, SignalResult::Delivered, 3),
            (Signal(17), SignalResult::Delivered, 0),
        ]);
        let d = count_deltas(&before, &now, &[Signal::TERM]);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!([{"signal": "SIGURG", "result": "ignored", "count": 3}])
        );
    }
}
