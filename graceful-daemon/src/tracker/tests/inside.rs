//! Stops from inside a container with no hook to tell: a signal to PID 1 from one of its own
//! processes is the stop only if it ends the container.
use super::*;

#[test]
fn a_signal_from_inside_that_ends_the_container_is_its_stop() {
    // The app's own child asks PID 1 to quit (`kill 1`); PID 1 passes it on, both exit.
    let mut s = shell_with_child();
    s.at(2.0)
        .signal(Signal::TERM, 11, CG, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .at(2.5)
        .exit(11, Some(0), None)
        .exit(10, Some(0), None);
    let r = s.one();
    let stop = r.stop.clone().expect("a stop");
    assert_eq!(
        (stop.signal, stop.source, stop.sender.pid),
        (Signal::TERM, StopSource::Inside, 11)
    );
    assert_eq!(r.verdict, Verdict::Graceful, "{}", r.explanation);
    assert!(
        r.explanation
            .starts_with("sh (pid 11) sent SIGTERM to sh (pid 10) from inside the container"),
        "{}",
        r.explanation
    );
}

#[test]
fn the_main_process_signalling_itself_is_said_so() {
    let mut s = Seq::new();
    s.exec(10, "app");
    s.at(1.0)
        .signal(Signal::INT, 10, CG, 10, SignalResult::Delivered)
        .exit(10, None, Some(2));
    let r = s.one();
    assert_eq!(r.stop.map(|s| s.source), Some(StopSource::Inside));
    assert!(
        r.explanation
            .starts_with("app (pid 10) sent SIGINT to itself"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_signal_from_inside_that_did_not_end_it_gives_way_to_the_runtimes_stop() {
    // `kill 1` swallowed by a shell PID 1; the runtime's own stop comes 3 s later.
    let mut s = shell_with_child();
    s.t.set_grace(CG, 5.0);
    s.at(1.0)
        .signal(Signal::TERM, 11, CG, 10, SignalResult::Ignored);
    assert!(s.t.stopping(CG), "tentatively a stop");
    s.at(4.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    shell_init_drops_term(&mut s, false);
    kill_after_grace(&mut s, 9.0);
    let r = s.one();
    let stop = r.stop.clone().expect("a stop");
    assert_eq!((stop.source, stop.sender.pid), (StopSource::Runtime, RUNC));
    assert_eq!(
        r.verdict,
        Verdict::SwallowedByShellPid1,
        "{}",
        r.explanation
    );
}

#[test]
fn a_signal_from_inside_that_changed_nothing_leaves_no_record() {
    let mut s = shell_with_child();
    s.t.set_grace(CG, 5.0);
    s.t.set_stop_signal(CG, Signal::TERM);
    s.at(1.0)
        .signal(Signal::TERM, 11, CG, 10, SignalResult::Ignored);
    let later = s.now + 5 * S + GRACE_SLACK_NS + S;
    assert_eq!(s.t.abandon(later), vec![CG]);
    assert!(!s.t.stopping(CG));
    s.drained();
    assert!(s.done.is_empty(), "{:#?}", s.done);
    // The container runs on as it was: its own stop signal is still known.
    assert_eq!(s.t.stop_signals.get(&CG), Some(&Signal::TERM));
}

#[test]
fn signals_inside_to_other_processes_or_not_a_stops_are_no_stop() {
    let mut s = shell_with_child();
    // To a process other than PID 1.
    s.signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered);
    // A reload, and SIGKILL (which an init ignores from inside its own namespace).
    s.signal(Signal::HUP, 11, CG, 10, SignalResult::Delivered)
        .signal(Signal::KILL, 11, CG, 10, SignalResult::Ignored);
    assert!(!s.t.stopping(CG));
}
