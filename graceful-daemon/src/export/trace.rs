//! The `trace` view: one line per stop-relevant signal, for a person or (`--json`) a program.
use serde_json::{json, Value};

use crate::{clock::WallClock, events::SignalCounts, events::SignalEvent, signals::Signal};

/// A signal event with its cgroups resolved to paths below the cgroup2 root.
pub struct ResolvedSignal<'a> {
    pub event: &'a SignalEvent,
    pub sender_cgroup: Option<String>,
    pub target_cgroup: Option<String>,
}

pub fn signal_json(clock: &WallClock, s: &ResolvedSignal<'_>) -> Value {
    let e = s.event;
    json!({
        "kind": "signal",
        "ts": clock.rfc3339(e.ts),
        "signal": e.signal.to_string(),
        "signo": e.signal.0,
        "code": e.code,
        "result": e.result.as_str(),
        "sender": {"pid": e.sender_pid, "tid": e.sender_tid, "comm": e.sender_comm, "cgroup": s.sender_cgroup},
        "target": {"pid": e.target_pid, "comm": e.target_comm, "cgroup": s.target_cgroup},
    })
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

/// Counts of the counted-only signals that grew since `before`.
pub fn count_deltas(before: &SignalCounts, now: &SignalCounts, stop: &[Signal]) -> Vec<Value> {
    now.0
        .iter()
        .filter(|(sig, _, _)| !stop.contains(sig))
        .filter_map(|&(sig, result, n)| {
            let delta = n.saturating_sub(before.get(sig, result));
            (delta > 0).then(
                || json!({"signal": sig.to_string(), "result": result.as_str(), "count": delta}),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SignalResult;

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
            d,
            vec![json!({"signal": "SIGURG", "result": "ignored", "count": 3})]
        );
    }
}
