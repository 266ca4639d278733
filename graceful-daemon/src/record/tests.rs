//! The record's JSON, its preStop span and the grace the app had.
use super::*;
use crate::events::ExitStatus;
use crate::{
    clock::monotonic_now,
    enrich::PreStopHook,
    tracker::{HookRun, Kill, Stop, StopSource},
};

const S: u64 = 1_000_000_000;

/// A slow_shutdown killed after a 30 s grace, stopped at `stop` and killed 2 s later.
fn record(hook: HookKind, run: Option<HookRun>, stop: Mono) -> TerminationRecord {
    let runc = Sender {
        pid: 9,
        comm: "runc".into(),
    };
    TerminationRecord {
        termination: Termination {
            cgroup: 5,
            stop: Some(Stop {
                signal: Signal::TERM,
                at: stop,
                sender: runc.clone(),
                result: SignalResult::Delivered,
                source: StopSource::Runtime,
            }),
            init: Init {
                pid: 10,
                comm: "app".into(),
                shell: false,
                handles_stop_signal: Some(true),
            },
            received: Vec::new(),
            received_more: 0,
            never_received: Vec::new(),
            never_received_more: 0,
            kill: Some(Kill {
                at: stop + 2 * S,
                sender: runc,
            }),
            outcome: Outcome::KilledAfterGrace,
            exit: None,
            started: stop,
            ended: stop + 2 * S,
            verdict: Verdict::SlowShutdown,
            explanation: "Every process got SIGTERM, but ...".into(),
            pre_stop: run,
            stuck: Vec::new(),
            oom: Vec::new(),
            connections: None,
        },
        cgroup: None,
        identity: None,
        info: Some(ContainerInfo {
            pre_stop: Some(PreStopHook {
                kind: hook,
                command: (hook == HookKind::Exec).then(|| "sleep 28".into()),
                program: Some("sleep".into()),
            }),
            grace_period_seconds: Some(30.0),
            ..Default::default()
        }),
        cause: None,
    }
}

#[test]
fn an_exec_hook_that_took_the_grace_explains_the_kill() {
    let stop = monotonic_now();
    let run = HookRun {
        pid: 20,
        comm: "sleep".into(),
        started: stop - 28 * S,
        ended: Some(stop),
        exit: Some(ExitStatus {
            code: Some(0),
            signal: None,
        }),
    };
    let mut r = record(HookKind::Exec, Some(run), stop);
    let clock = WallClock::default();
    let mut appended = r.clone();
    appended.termination.verdict = Verdict::NotForwarded;
    appended.judge_pre_stop(&clock);
    appended.judge_pre_stop(&clock);
    let said = &appended.termination.explanation;
    assert_eq!(
        said.matches("The preStop hook").count(),
        1,
        "said once: {said}"
    );
    r.judge_pre_stop(&clock);
    let json = r.to_json(&clock);
    assert_eq!(json["pre_stop"]["kind"], "exec", "{json:#}");
    assert_eq!(json["pre_stop"]["exit_code"], 0, "{json:#}");
    assert_eq!(json["pre_stop"]["grace_share"], 0.933, "{json:#}");
    assert_eq!(json["pre_stop"]["command"], "sleep 28", "{json:#}");
    assert_eq!(
        r.app_grace_seconds(&clock),
        Some(2.0),
        "28 s of 30 went to the hook: the app had 2"
    );
    assert_eq!(json["verdict"], "pre_stop_took_the_grace", "{json:#}");
    let why = json["explanation"].as_str().expect("an explanation");
    assert!(
        why.starts_with("The preStop hook (exec: sleep 28) took 28.0 s of the 30 s grace period, so the app got SIGTERM only 2.0 s before SIGKILL.")
            && why.contains("terminationGracePeriodSeconds must cover the hook"),
        "{why}"
    );
    // Judged twice, the same.
    let once = r.clone();
    r.judge_pre_stop(&clock);
    assert_eq!(r.termination.explanation, once.termination.explanation);
    // A forwarding bug stays what it is: the hook is only added to its explanation.
    assert_eq!(appended.termination.verdict, Verdict::NotForwarded);
    assert!(
        r.timeline().contains("preStop exec hook before it"),
        "{}",
        r.timeline()
    );
}

#[test]
fn an_http_hook_spans_the_deletion_to_the_stop_signal() {
    let stop = monotonic_now();
    let clock = WallClock::default();
    let mut r = record(HookKind::Http, None, stop);
    if let Some(info) = r.info.as_mut() {
        info.deleted_at = Some(clock.at(stop) - chrono::Duration::seconds(6));
    }
    r.judge_pre_stop(&clock);
    let json = r.to_json(&clock);
    assert_eq!(json["pre_stop"]["kind"], "http", "{json:#}");
    assert_eq!(json["pre_stop"]["grace_share"], 0.2, "{json:#}");
    let had = r.app_grace_seconds(&clock).unwrap_or_default();
    assert!((had - 24.0).abs() < 1e-6, "{had}");
    assert_eq!(json["pre_stop"]["ended"], json["stop"]["at"], "{json:#}");
    assert!(
        json["explanation"]
            .as_str()
            .is_some_and(|e| e.starts_with("Every process")),
        "a hook that took 20% is not the reason: {json:#}"
    );
    assert_eq!(json["verdict"], "slow_shutdown", "{json:#}");
    // Without the deletion time (no API server) an http hook's span is unknown.
    let r = record(HookKind::Http, None, stop);
    assert!(r.to_json(&clock)["pre_stop"].is_null());
}
