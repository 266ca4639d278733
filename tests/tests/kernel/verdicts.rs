//! One throwaway container (cgroup2 + pid namespace) per verdict, on the real kernel, stopped
//! the way runc does; the records must carry the exact verdict, outcome and who got the signal.
use std::time::Duration;

use graceful::{
    engine::{run, sh, Scenario},
    enrich::cause::{CauseKind, CauseSource},
    events::SignalResult,
    record::TerminationRecord,
    signals::Signal,
    tracker::{Outcome, StopSource, Verdict},
};

const GRACE: Duration = Duration::from_secs(2);

/// Runs one scenario; its record must carry `expect`.
async fn one(s: Scenario, expect: Verdict) -> TerminationRecord {
    let mut records = run(std::slice::from_ref(&s), GRACE)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s.name));
    let r = records.remove(0);
    assert_verdict(&s, expect, &r);
    r
}

fn assert_verdict(s: &Scenario, expect: Verdict, r: &TerminationRecord) {
    assert_eq!(
        r.termination.verdict,
        expect,
        "{}: {}",
        s.name,
        r.timeline()
    );
}

/// The demo's scenarios and the verdict each must get, in `Scenario::demo_set`'s order.
const DEMO_VERDICTS: [Verdict; 8] = [
    Verdict::SwallowedByShellPid1,
    Verdict::Pid1IgnoresStopSignal,
    Verdict::NotForwarded,
    Verdict::SlowShutdown,
    Verdict::SlowShutdown,
    Verdict::Graceful,
    Verdict::ChildrenKilledAtExit,
    Verdict::KilledWithoutStopSignal,
];

// Scenarios only the tests run.

fn shell_pid1_ignores() -> Scenario {
    Scenario::new(
        "shell-pid1-ignores",
        "the entrypoint script sets SIGTERM to SIG_IGN (`trap '' TERM`) and runs the app",
        sh("trap '' TERM; sleep 1000; true"),
        &["sh", "sleep"],
    )
}

fn stop_signal_quit() -> Scenario {
    Scenario::new(
        "stopsignal-quit",
        "STOPSIGNAL SIGQUIT, shell PID 1 without a trap",
        sh("sleep 1000; true"),
        &["sh", "sleep"],
    )
    .stop_with(Some(Signal::QUIT))
}

fn stop_signal_int_handled() -> Scenario {
    Scenario::new(
        "stopsignal-int",
        "STOPSIGNAL SIGINT, handled by PID 1",
        // The worker is stopped with SIGTERM: a background job of a shell ignores SIGINT.
        sh("trap 'kill -TERM $!; wait $!; exit 0' INT; sleep 1000 & wait"),
        &["sh", "sleep"],
    )
    .stop_with(Some(Signal::INT))
}

fn oom() -> Scenario {
    let mut s = Scenario::new(
        "oom",
        "PID 1 allocates past its 32 MiB memory limit",
        sh("x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done"),
        &["sh"],
    );
    s.spawn.memory_limit = Some(32 << 20);
    s.stopped = false;
    s
}

/// PID 1 is asked to stop from inside (`kill 1` from its own worker, no runtime involved), and
/// drains that worker. The worker sends it from its own shell, before it becomes `sleep`: a
/// signal passed on to a fork not yet exec'd would be caught by the copy of PID 1's trap and
/// lost at the exec.
fn stopped_from_inside() -> Scenario {
    let mut s = Scenario::new(
        "stopped-from-inside",
        "PID 1's worker runs `kill 1`; PID 1 stops the worker and exits",
        sh("trap 'kill -TERM $!; wait $!; exit 0' TERM; sh -c 'kill 1; exec sleep 1000' & wait"),
        &["sh", "sleep"],
    );
    s.stopped = false;
    s
}

fn comms(list: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = list.into_iter().collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_pid1_without_trap() {
    let r = one(Scenario::shell_pid1(), Verdict::SwallowedByShellPid1).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::KilledAfterGrace);
    assert_eq!(t.init.comm, "sh");
    assert!(t.init.shell);
    assert_eq!(t.init.handles_stop_signal, Some(false));
    // `ignored`, or `delivered` when sh had signals blocked for a moment (then dropped later).
    assert!(matches!(
        t.stop.as_ref().unwrap().result,
        SignalResult::Ignored | SignalResult::Delivered
    ));
    assert_eq!(t.stop.as_ref().unwrap().sender.comm, "demo-runtime");
    assert_eq!(
        comms(t.never_received.iter().map(|p| p.comm.clone())),
        vec!["sleep"]
    );
    assert!(
        t.explanation.contains("shell") && t.explanation.contains("sleep (pid"),
        "{}",
        t.explanation
    );
    assert!(t.duration_seconds() >= 2.0);
    let json = r.to_json(&Default::default());
    assert_eq!(json["verdict"], "swallowed_by_shell_pid1");
    assert_eq!(json["kill"]["sender"]["comm"], "demo-runtime");
    assert_eq!(json["exit"]["signal"], 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_shell_pid1_without_handler() {
    let r = one(Scenario::no_handler(), Verdict::Pid1IgnoresStopSignal).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::KilledAfterGrace);
    assert_eq!((t.init.comm.as_str(), t.init.shell), ("sleep", false));
    assert!(t.never_received.is_empty());
    assert!(t.explanation.contains("sleep") && t.explanation.contains("no handler"));
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_that_does_not_forward() {
    let r = one(Scenario::not_forwarded(), Verdict::NotForwarded).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::KilledAfterGrace);
    assert_eq!(t.init.handles_stop_signal, Some(true));
    assert_eq!(comms(t.received.iter().map(|p| p.comm.clone())), vec!["sh"]);
    assert_eq!(
        comms(t.never_received.iter().map(|p| p.comm.clone())),
        vec!["sleep"]
    );
    assert!(t.explanation.contains("did not pass it on"));
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_that_forwards_and_waits() {
    let r = one(Scenario::forwards(), Verdict::Graceful).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::Exited);
    assert!(t.kill.is_none());
    assert_eq!(
        comms(t.received.iter().map(|p| p.comm.clone())),
        vec!["sh", "sleep"]
    );
    assert!(t.never_received.is_empty());
    assert_eq!(t.exit.unwrap().code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn child_too_slow_for_the_grace() {
    let r = one(Scenario::slow_shutdown(), Verdict::SlowShutdown).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::KilledAfterGrace);
    assert!(t.never_received.is_empty(), "{:?}", t.never_received);
    assert_eq!(t.received.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_with_the_stop_signal_ignored() {
    let r = one(Scenario::child_ignores(), Verdict::SlowShutdown).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::KilledAfterGrace);
    assert!(t.never_received.is_empty(), "{:?}", t.never_received);
    let sleep = t.received.iter().find(|p| p.comm == "sleep").unwrap();
    assert_eq!(sleep.result, SignalResult::Ignored, "{}", r.timeline());
    assert!(
        t.explanation
            .contains(&format!("dropped it at sleep (pid {})", sleep.pid))
            && t.explanation.contains("will not help"),
        "{}",
        t.explanation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_pid1_that_sets_the_stop_signal_to_sig_ign() {
    let r = one(shell_pid1_ignores(), Verdict::SwallowedByShellPid1).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::KilledAfterGrace);
    assert_eq!(t.init.handles_stop_signal, Some(false));
    // `delivered` when sh had signals blocked for a moment: /proc's SIG_IGN still tells.
    assert!(matches!(
        t.stop.as_ref().unwrap().result,
        SignalResult::Ignored | SignalResult::Delivered
    ));
    assert_eq!(
        comms(t.never_received.iter().map(|p| p.comm.clone())),
        vec!["sleep"]
    );
    assert!(
        t.explanation.contains("SIG_IGN") && !t.explanation.contains("exec form (CMD"),
        "{}",
        t.explanation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_without_stop_signal() {
    let r = one(Scenario::force_delete(), Verdict::KilledWithoutStopSignal).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::Killed);
    assert!(t.stop.is_none());
    assert!(r.to_json(&Default::default())["stop"].is_null());
    assert!(t.explanation.contains("force delete"), "{}", t.explanation);
    // The same SIGKILL as the container's own stop signal is not a force delete.
    let r = one(
        Scenario::force_delete().stop_with(Some(Signal::KILL)),
        Verdict::KilledWithoutStopSignal,
    )
    .await;
    assert!(
        r.termination.explanation.contains("stop signal is SIGKILL"),
        "{}",
        r.termination.explanation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pid1_exiting_on_sigterm_leaves_children_to_the_kernel() {
    let r = one(
        Scenario::exits_leaving_children(),
        Verdict::ChildrenKilledAtExit,
    )
    .await;
    let t = &r.termination;
    assert_eq!(
        t.outcome,
        Outcome::Exited,
        "teardown SIGKILLs are not a kill"
    );
    assert!(t.kill.is_none());
    // The worker was alive at the stop, never got it, and died in the teardown: named.
    assert_eq!(
        comms(t.never_received.iter().map(|p| p.comm.clone())),
        vec!["sleep"],
        "{}",
        r.timeline()
    );
    assert!(
        t.explanation.contains("sleep (pid") && t.explanation.contains("wait for its children"),
        "{}",
        t.explanation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_signals_other_than_sigterm() {
    let r = one(stop_signal_quit(), Verdict::SwallowedByShellPid1).await;
    assert_eq!(r.termination.stop.as_ref().unwrap().signal, Signal::QUIT);
    assert!(r.termination.explanation.contains("SIGQUIT"));
    let r = one(stop_signal_int_handled(), Verdict::Graceful).await;
    assert_eq!(r.termination.stop.as_ref().unwrap().signal, Signal::INT);
    assert_eq!(r.termination.outcome, Outcome::Exited);
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_kill_in_a_memory_limited_cgroup() {
    let r = one(oom(), Verdict::OomKilled).await;
    assert_eq!(r.termination.outcome, Outcome::Killed);
    assert!(r.termination.explanation.contains("OOM"));
    let victim = &r.termination.oom[0];
    assert!(victim.main && victim.ended_container, "{victim:?}");
    // The node alone knows why: no API needed.
    let cause = r.cause();
    assert_eq!(
        (cause.kind, cause.source),
        (CauseKind::Oom, CauseSource::Kernel)
    );
}

/// A worker OOM-killed under the container's memory limit while PID 1 lives on, then a clean
/// stop: the OOM kill is on the record, not its verdict, and opened no termination of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_child_oom_killed_while_pid1_lives_on_is_noted_on_a_graceful_stop() {
    let r = one(Scenario::oom_child(), Verdict::Graceful).await;
    let t = &r.termination;
    assert_eq!(t.outcome, Outcome::Exited);
    assert_eq!(t.oom.len(), 1, "{}", r.timeline());
    assert!(!t.oom[0].main && !t.oom[0].ended_container, "{:?}", t.oom);
    assert!(
        t.explanation.contains("The OOM killer also killed sh (pid"),
        "{}",
        t.explanation
    );
    let json = r.to_json(&Default::default());
    assert_eq!(json["oom"][0]["ended_container"], false, "{json:#}");
}

/// The kernel reports a stop signal sent inside a running container to its init, and the
/// container ending of it is the stop, its sender named.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_signal_from_inside_that_ends_the_container_is_its_stop() {
    let r = one(stopped_from_inside(), Verdict::Graceful).await;
    let t = &r.termination;
    let stop = t.stop.as_ref().expect("a stop");
    assert_eq!(
        (stop.signal, stop.source, stop.sender.comm.as_str()),
        (Signal::TERM, StopSource::Inside, "sh"),
        "{}",
        r.timeline()
    );
    assert_ne!(stop.sender.pid, t.init.pid);
    assert_eq!(t.outcome, Outcome::Exited);
    let received: Vec<_> = t
        .received
        .iter()
        .map(|p| (p.pid, p.comm.as_str()))
        .collect();
    assert_eq!(received.len(), 2, "{}", r.timeline());
    assert!(received.contains(&(t.init.pid, "sh")), "{}", r.timeline());
    assert!(
        t.explanation.contains("from inside the container"),
        "{}",
        t.explanation
    );
    let json = r.to_json(&Default::default());
    assert_eq!(json["stop"]["source"], "inside", "{json:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_containers_stopped_at_once() {
    let kinds: [(fn() -> Scenario, Verdict); 5] = [
        (Scenario::shell_pid1, Verdict::SwallowedByShellPid1),
        (Scenario::forwards, Verdict::Graceful),
        (Scenario::not_forwarded, Verdict::NotForwarded),
        (Scenario::no_handler, Verdict::Pid1IgnoresStopSignal),
        (
            Scenario::exits_leaving_children,
            Verdict::ChildrenKilledAtExit,
        ),
    ];
    let (scenarios, expected): (Vec<Scenario>, Vec<Verdict>) = (0..50)
        .map(|i| {
            let (kind, verdict) = kinds[i % kinds.len()];
            let mut s = kind();
            s.name = format!("{}-{i}", s.name);
            (s, verdict)
        })
        .unzip();
    let records = run(&scenarios, GRACE).await.unwrap();
    assert_eq!(records.len(), 50);
    for ((s, r), expect) in scenarios.iter().zip(&records).zip(expected) {
        assert_verdict(s, expect, r);
        assert!(r.cgroup.as_deref().unwrap().ends_with(&s.name));
    }
}

/// Four containers flooding themselves with SIGUSR1 (an app bug, or a hostile pod) cost the
/// node nothing: the containers stopped meanwhile get exactly their records, none lost.
#[tokio::test(flavor = "multi_thread")]
async fn neighbours_flooding_themselves_cost_no_record() {
    let mut cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-tests/flood-{}", std::process::id()));
    let parent = run_cgroup.path();
    let floods: Vec<graceful::throwaway::Throwaway> = (0..4)
        .map(|i| {
            graceful::throwaway::Throwaway::spawn(
                &mut cgroups,
                parent,
                &format!("flood-{i}"),
                &[
                    "/bin/sh",
                    "-c",
                    "trap '' USR1; while :; do kill -USR1 $$; done",
                ],
            )
            .unwrap()
        })
        .collect();
    let scenarios = Scenario::demo_set();
    let records = run(&scenarios, GRACE).await.unwrap();
    for ((s, r), expect) in scenarios.iter().zip(&records).zip(DEMO_VERDICTS) {
        assert_verdict(s, expect, r);
    }
    // Still flooding all along: the floods were counted, not dropped on the floor.
    for f in &floods {
        assert!(!f.pids().is_empty(), "{} stopped flooding", f.cgroup);
    }
    drop(floods);
}

/// A ring buffer of one page, not read while a noisy container stops: the SIGTERM of another
/// container is lost with many other records. Its later SIGKILL must read as `unknown`,
/// never as a force delete, and the losses are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_stop_signal_makes_the_record_unknown_never_a_force_delete() {
    use graceful::{
        pipeline::Pipeline,
        probes::{ProbeOptions, Probes},
        throwaway::Throwaway,
        tracker::{TrackerConfig, Verdict},
    };
    use graceful_tests::wait_for_program;
    let mut cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let options = ProbeOptions {
        ring_bytes: 4096,
        ..ProbeOptions::default()
    };
    let mut probes = Probes::load(&options, &mut cgroups).unwrap();
    let run_cgroup = graceful::throwaway::Parent::new(&format!(
        "/graceful-tests/tiny-ring-{}",
        std::process::id()
    ));
    let parent = run_cgroup.path();
    let mut victim =
        Throwaway::spawn(&mut cgroups, parent, "victim", &["/bin/sleep", "1000"]).unwrap();
    let script =
        "trap 'i=0; while [ $i -lt 100 ]; do /bin/sleep 0; i=$((i+1)); done; exit 0' TERM; \
                  sleep 1000 & wait";
    let mut noisy =
        Throwaway::spawn(&mut cgroups, parent, "noisy", &["/bin/sh", "-c", script]).unwrap();
    let marker = Throwaway::spawn(&mut cgroups, parent, "marker", &["/bin/sleep", "1000"]).unwrap();
    wait_for_program(&victim, "sleep");
    wait_for_program(&noisy, "sleep");
    wait_for_program(&marker, "sleep");
    graceful_tests::wait_until_quiescent(noisy.init);
    let mut pipeline = Pipeline::new(
        cgroups,
        TrackerConfig {
            oom_visible: probes.sees_oom(),
            ..TrackerConfig::default()
        },
    );
    // Nobody reads the ring yet: the noisy stop's 300 records fill its page (about 40 fit),
    // the victim's SIGTERM finds it full.
    noisy.signal(Signal::TERM).unwrap();
    noisy
        .wait(Duration::from_secs(300))
        .unwrap()
        .expect("the noisy container exits");
    victim.signal(Signal::TERM).unwrap();
    let (ring_full, _) = probes.lost_events().unwrap();
    assert!(ring_full > 0, "nothing was lost: the test proves nothing");
    let mut events = probes.events().unwrap();
    let deadline = tokio::time::Instant::now() + graceful_tests::EVENT_TIMEOUT;
    // Once a signal to the marker is read, the reader has drained the ring. Signals sent
    // before the reader caught up are lost too: send again until one comes through. (The
    // marker is a pid-namespace init: the kernel drops its SIGHUP, it runs on.)
    'drained: loop {
        marker.signal(Signal::HUP).unwrap();
        let round = tokio::time::Instant::now() + Duration::from_millis(200);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ring never drained"
            );
            match tokio::time::timeout_at(round, events.recv()).await {
                Ok(Some(event)) => {
                    pipeline.handle(&event);
                    if matches!(&event, graceful::events::Event::Signal(s) if s.target_pid == marker.init as u32)
                    {
                        break 'drained;
                    }
                }
                Ok(None) => panic!("the event stream ended"),
                Err(_) => break,
            }
        }
    }
    victim.signal(Signal::KILL).unwrap();
    let record = loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the victim's record in time")
            .expect("the event stream");
        let found = pipeline
            .handle(&event)
            .into_iter()
            .find(|r| r.termination.cgroup == victim.cgroup_id);
        if let Some(r) = found {
            break r;
        }
    };
    assert_eq!(
        record.termination.verdict,
        Verdict::Unknown,
        "{}",
        record.timeline()
    );
    assert!(
        record.termination.explanation.contains("lost"),
        "{}",
        record.termination.explanation
    );
    victim.wait(Duration::from_secs(10)).unwrap();
    drop((victim, noisy, marker));
}
