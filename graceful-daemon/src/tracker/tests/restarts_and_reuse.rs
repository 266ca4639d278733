//! Grace periods that bound a termination and a restart's doubt, and pids that are reused.
use super::*;

/// A daemon started while sh (10) and sleep (11) ran: the SIGKILL comes `after` seconds later.
fn seeded_then_killed(grace: Option<f64>, after: u64) -> Termination {
    let mut t = Tracker::new(TrackerConfig::default(), 1000 * S);
    t.seed(found(10, None, "sh", true));
    t.seed(found(11, Some(10), "sleep", false));
    if let Some(g) = grace {
        t.set_grace(CG, g);
    }
    let at = (1000 + after) * S;
    let kill = signal_event(
        at,
        Signal::KILL,
        (RUNC, "runc", HOST),
        (10, "sh", CG),
        SignalResult::Delivered,
    );
    t.on_event(&Event::Signal(kill));
    assert!(t.on_event(&killed_exit(at, 10)).is_empty());
    assert!(
        t.on_event(&killed_exit(at, 11)).is_empty(),
        "not before the ring is drained"
    );
    let mut done = drain(&mut t, at + S);
    assert_eq!(done.len(), 1, "{done:#?}");
    done.remove(0)
}

#[test]
fn started_mid_termination_is_unknown() {
    let r = seeded_then_killed(None, 1);
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(
        r.explanation.contains("already running"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_restart_during_a_long_grace_is_not_a_force_delete() {
    // A 300 s grace: the stop signal came before the daemon; its SIGKILL 299 s after the start.
    let r = seeded_then_killed(None, 299);
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explanation);
    let r = seeded_then_killed(Some(300.0), 299);
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explanation);
}

#[test]
fn a_known_grace_ends_the_restart_doubt() {
    // A 30 s grace: a lone SIGKILL 200 s after the start cannot end a stop the daemon missed.
    let r = seeded_then_killed(Some(30.0), 200);
    assert_eq!(
        r.verdict,
        Verdict::KilledWithoutStopSignal,
        "{}",
        r.explanation
    );
}

#[test]
fn a_stop_outlasting_its_known_grace_is_abandoned() {
    let mut s = shell_with_child();
    s.t.set_grace(CG, 30.0);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    let limit = 30 * S + GRACE_SLACK_NS;
    assert!(s.t.abandon(s.now + limit - S).is_empty());
    assert_eq!(s.t.abandon(s.now + limit + S), vec![CG]);
    // The grace goes with the container, at the housekeeping's look after its processes end.
    s.exit(11, Some(0), None).exit(10, Some(0), None);
    let gone = s.t.look_at_running(|_, _| None);
    s.t.forget_gone(&gone);
    assert_eq!(s.t.size(), (0, 0, 0));
    assert!(s.t.graces.is_empty());
}

#[test]
fn a_reused_pid_does_not_keep_a_termination_open() {
    let mut s = shell_with_child();
    s.t.set_start(10, 5000);
    s.t.set_start(11, 5001);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    let awaited: Vec<_> = s.t.awaited().collect();
    assert_eq!(awaited, vec![(10, Some(5000)), (11, Some(5001))]);
    // The sweep finds pid 11 in /proc but started at another time: its exit was lost.
    let now = s.now;
    assert!(s.t.forget(11, now).is_empty());
    s.exit(10, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explanation);
    assert!(r.explanation.contains("pid 11"), "{}", r.explanation);
}

#[test]
fn a_fork_forgets_the_start_time_of_the_pid_it_reuses() {
    let mut s = shell_with_child();
    s.t.set_start(11, 5001);
    s.exit(11, Some(0), None);
    s.fork(10, 11, "sh");
    assert_eq!(s.t.start_of(11), None);
    s.t.set_start(11, 6000);
    assert_eq!(s.t.start_of(11), Some(6000));
}

#[test]
fn pruning_tells_a_reused_pid_from_the_process_it_knew() {
    let mut s = shell_with_child();
    s.t.set_start(10, 5000);
    s.t.set_start(11, 5001);
    // /proc has both pids, but 11 now started at another time.
    let proc_starts = |pid: u32| if pid == 10 { 5000 } else { 7777 };
    let gone = s.t.look_at_running(|pid, start| {
        let now = proc_starts(pid);
        start.is_none_or(|known| known == now).then_some(now)
    });
    assert_eq!(gone, vec![11]);
    s.t.forget_gone(&gone);
    assert_eq!(s.t.members(CG), vec![10]);
    assert_eq!(s.t.start_of(10), Some(5000));
}
