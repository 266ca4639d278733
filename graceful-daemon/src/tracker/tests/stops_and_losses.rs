//! Sequences as the kernel reports them since it filters (a running container is silent until
//! its stop), stops that are not stops, losses placed in the stream, and the wording.
use super::*;

#[test]
fn explanations_agree_in_number() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    let one = s.one().explanation;
    assert!(
        one.contains("sleep (pid 11) never received it and was SIGKILLed"),
        "{one}"
    );

    let mut s = shell_with_child();
    s.fork(10, 12, "sh").exec(12, "cat");
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    s.signal(Signal::KILL, 10, CG, 12, SignalResult::Delivered)
        .exit(12, None, Some(9));
    let two = s.one().explanation;
    assert!(
        two.contains("sleep (pid 11), cat (pid 12) never received it and were SIGKILLed"),
        "{two}"
    );
}

#[test]
fn an_exit_that_leaves_a_child_running_says_what_the_kernel_killed() {
    // `trap 'exit 0' TERM; sleep 1000 & wait`: PID 1 exits, the kernel tears down its child.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .at(0.1)
        .exit(10, Some(0), None)
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::ChildrenKilledAtExit);
    assert!(
        r.explanation
            .contains("while sleep (pid 11) was still running")
            && r.explanation
                .contains("kernel SIGKILLed it (it never received SIGTERM)")
            && r.explanation.contains("wait for its children"),
        "{}",
        r.explanation
    );
    // The child had the signal and was still draining: cut mid-shutdown.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .at(0.2)
        .exit(10, Some(0), None)
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::ChildrenKilledAtExit);
    assert!(
        r.explanation.contains("had SIGTERM but had not finished"),
        "{}",
        r.explanation
    );

    // A clean stop where everyone got the signal says nothing of the kind.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(15))
        .exit(10, Some(0), None);
    let r = s.one();
    assert!(
        !r.explanation.contains("kernel killed"),
        "{}",
        r.explanation
    );
}

/// A SIGKILL the kernel sends itself, from a process outside the container (a global OOM).
fn kernel_kill(t: &mut Tracker, now: Mono) -> Vec<Termination> {
    let mut kill = signal_event(
        now,
        Signal::KILL,
        (700, "java", 42),
        (10, "sh", CG),
        SignalResult::Delivered,
    );
    kill.code = SI_KERNEL;
    let mut done = t.on_event(&Event::Signal(kill));
    for pid in [10, 11] {
        done.extend(t.on_event(&killed_exit(now, pid)));
    }
    done.extend(drain(t, now + S));
    done
}

#[test]
fn a_kernel_sigkill_without_oom_tracing_is_unknown_not_a_force_delete() {
    let mut blind = shell_with_child();
    blind.t.config.oom_visible = false;
    let now = blind.now;
    let r = kernel_kill(&mut blind.t, now);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].verdict, Verdict::Unknown);
    assert!(
        r[0].explanation.contains("oom:mark_victim"),
        "{}",
        r[0].explanation
    );

    // Where the OOM tracepoint is attached, the same kill without a victim is a plain kill.
    let mut seeing = shell_with_child();
    let now = seeing.now;
    let r = kernel_kill(&mut seeing.t, now);
    assert_eq!(r[0].verdict, Verdict::KilledWithoutStopSignal);
}

/// As the kernel reports a running container: nothing until its stop; the pipeline fills in
/// what /proc shows at the first signal, and may miss a process that is already gone.
#[test]
fn processes_first_seen_during_a_stop_were_there_at_the_stop() {
    // The app (10) handles SIGTERM and does not forward it; after the grace the runtime kills
    // it and its child (11), which the tracker first hears of through that SIGKILL.
    let mut s = Seq::new();
    s.t.fill(found(10, Some(1), "app", true));
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .at(2.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::KILL, RUNC, HOST, 11, SignalResult::Delivered)
        .exit(10, None, Some(9))
        .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::NotForwarded, "{}", r.explanation);
    assert_eq!(
        r.never_received.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![11]
    );

    // A process seen only at its exit was there too, and a forked one was not.
    let mut s = Seq::new();
    s.t.fill(found(10, Some(1), "app", true));
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .fork(10, 12, "app")
        .exit(12, Some(0), None)
        .exit(13, None, Some(15))
        .exit(13, None, Some(15))
        .exit(10, Some(0), None);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Graceful);
    assert_eq!(
        r.never_received.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![13]
    );
}

/// /proc, read when the stop event is handled, can already show a child forked after the stop;
/// its fork event, later in the stream, says it was not there at the stop.
#[test]
fn a_child_forked_after_the_stop_was_not_there_at_the_stop() {
    let mut s = Seq::new();
    s.t.fill(found(10, Some(1), "sh", true));
    s.t.fill(found(12, Some(10), "sh", false)); // the trap's `sleep 60`, read from /proc early
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .fork(10, 12, "sh")
        .exec(12, "sleep")
        .at(2.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9))
        .signal(Signal::KILL, 10, CG, 12, SignalResult::Delivered)
        .exit(12, None, Some(9));
    let r = s.one();
    assert!(r.never_received.is_empty(), "{:?}", r.never_received);
    assert_eq!(r.verdict, Verdict::SlowShutdown, "{}", r.explanation);
}

#[test]
fn a_reload_signal_is_not_a_stop() {
    // SIGHUP from outside (a reload), SIGTERM 8 s later: the stop is the SIGTERM.
    let mut s = shell_with_child();
    s.signal(Signal::HUP, RUNC, HOST, 10, SignalResult::Delivered)
        .at(8.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .at(8.5)
        .exit(11, None, Some(15))
        .exit(10, Some(0), None);
    let r = s.one();
    assert_eq!(r.stop.as_ref().unwrap().signal, Signal::TERM);
    assert!(
        (r.duration_seconds() - 0.5).abs() < 1e-6,
        "{}",
        r.duration_seconds()
    );
    assert_eq!(r.verdict, Verdict::Graceful);
}

#[test]
fn a_known_stop_signal_is_the_only_stop() {
    // STOPSIGNAL SIGUSR1 (known): a SIGTERM from outside does not stop it, SIGUSR1 does.
    let mut s = shell_with_child();
    s.t.set_stop_signal(CG, Signal::USR1);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .at(1.0)
        .signal(Signal::USR1, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 3.0);
    let r = s.one();
    assert_eq!(r.stop.as_ref().unwrap().signal, Signal::USR1);
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
}

#[test]
fn a_sigkill_after_an_unknown_stop_signal_is_no_force_delete() {
    // SIGWINCH (httpd's STOPSIGNAL, not known here), then SIGKILL after the grace: not a force
    // delete, and not a guess either.
    let mut s = shell_with_child();
    s.signal(Signal::WINCH, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 30.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explanation);
    assert!(r.explanation.contains("SIGWINCH"), "{}", r.explanation);
}

#[test]
fn a_stop_that_never_ends_is_abandoned_without_a_record() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    assert!(s.t.stopping(CG));
    assert!(s.t.abandon(s.now + 599 * S).is_empty());
    assert_eq!(s.t.abandon(s.now + 601 * S), vec![CG]);
    assert!(!s.t.stopping(CG));
    s.at(700.0).exit(11, Some(0), None).exit(10, Some(0), None);
    assert!(s.done.is_empty(), "{:#?}", s.done);
}

#[test]
fn pruning_forgets_processes_gone_unseen() {
    let mut s = shell_with_child();
    assert_eq!(s.t.size(), (2, 1, 0));
    let gone = s.t.look_at_running(|pid, _| (pid == 10).then_some(1));
    assert_eq!(s.t.size(), (2, 1, 0), "only looked at");
    s.t.forget_gone(&gone);
    assert_eq!(s.t.size(), (1, 1, 0));
    let gone = s.t.look_at_running(|_, _| None);
    s.t.forget_gone(&gone);
    assert_eq!(s.t.size(), (0, 0, 0));
}

#[test]
fn a_process_found_gone_is_kept_once_its_container_began_to_stop() {
    // The look found it gone, but its container's stop was read before the forgetting: its
    // exit (still in the ring) is awaited.
    let mut s = shell_with_child();
    let gone = s.t.look_at_running(|_, _| None);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    s.t.forget_gone(&gone);
    assert_eq!(s.t.size(), (2, 1, 1));
    assert!(s.t.stopping(CG));
}

#[test]
fn processes_gone_unreported_before_the_stop_are_forgotten_at_it() {
    // A runtime's exec helper (runc, pid 9) was seen entering, then ended while the container
    // ran (unreported); /proc at the stop shows only sh and sleep.
    let mut s = shell_with_child();
    s.exec(9, "runc");
    s.t.only_present(CG, &[10, 11]);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.init.pid, 10);
    assert_eq!(
        r.verdict,
        Verdict::SwallowedByShellPid1,
        "{}",
        r.explanation
    );
    assert!(r.never_received.iter().all(|p| p.pid != 9));
}

#[test]
fn a_lost_stop_signal_never_makes_a_force_delete() {
    // The SIGTERM's record was lost (the loss shows in the stream where it happened); the
    // runtime's SIGKILL 30 s later must not read as a force delete.
    let mut s = shell_with_child();
    s.lost(1);
    kill_after_grace(&mut s, 30.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explanation);
    assert!(
        r.explanation.contains("lost 30.0 s before"),
        "{}",
        r.explanation
    );

    // A loss long before (beyond the longest grace) says nothing about this SIGKILL.
    let mut s = shell_with_child();
    s.lost(1);
    s.at(700.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9))
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    assert_eq!(s.one().verdict, Verdict::KilledWithoutStopSignal);
}

#[test]
fn a_record_lists_at_most_a_hundred_processes_and_counts_the_rest() {
    let mut s = Seq::new();
    s.exec(10, "app");
    for child in 100..250 {
        s.fork(10, child, "worker");
    }
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    s.at(30.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9));
    for child in 100..250 {
        s.signal(Signal::KILL, 10, CG, child, SignalResult::Delivered)
            .exit(child, None, Some(9));
    }
    let r = s.one();
    assert_eq!(r.verdict, Verdict::NotForwarded);
    assert_eq!((r.never_received.len(), r.never_received_more), (100, 50));
    assert_eq!((r.received.len(), r.received_more), (1, 0));
    assert!(r.explanation.contains("and 145 more"), "{}", r.explanation);
}

#[test]
fn a_process_that_outlives_its_sigkill_gets_one_interim_record_then_the_final_one() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    // PID 1 dies of the runtime's SIGKILL; its child is held in the kernel (a hung mount).
    s.at(2.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9))
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered);
    let killed = s.now;
    assert!(s.t.stuck(killed + 9 * S).is_empty(), "not yet");
    let interim = s.t.stuck(killed + 10 * S);
    assert_eq!(interim.len(), 1, "{interim:#?}");
    let r = &interim[0];
    assert_eq!(
        (r.outcome, r.verdict),
        (Outcome::Stuck, Verdict::Unkillable)
    );
    assert_eq!(
        r.stuck
            .iter()
            .map(|p| (p.pid, p.comm.as_str()))
            .collect::<Vec<_>>(),
        vec![(11, "sleep")]
    );
    assert!(
        r.explanation.contains("sleep (pid 11) has not exited")
            && r.explanation.contains("The final record follows"),
        "{}",
        r.explanation
    );
    assert!(s.t.stuck(killed + 60 * S).is_empty(), "once");
    assert!(s.t.stopping(CG), "the termination goes on");
    // Released at last: the final record, as the rules say.
    s.at(40.0).exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.outcome, Outcome::KilledAfterGrace);
    assert_eq!(r.verdict, Verdict::NotForwarded);
    assert!(r.stuck.is_empty());
}

#[test]
fn a_stop_that_ends_in_time_is_never_stuck() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    // No SIGKILL yet: a slow shutdown, not a stuck one.
    assert!(s.t.stuck(s.now + 60 * S).is_empty());
    kill_after_grace(&mut s, 2.0);
    assert!(s.t.stuck(s.now + 60 * S).is_empty(), "all gone");
}

#[test]
fn a_runtime_exec_that_was_all_the_tracker_knew_ends_without_taking_the_container_along() {
    // runc's own stage is the first exec reported (it entered from outside); the container's
    // program that follows is not. Its end must not take the image's STOPSIGNAL with it.
    let mut s = Seq::new();
    s.exec_as(9, "runc", true);
    s.t.set_stop_signal(CG, Signal::USR1);
    s.at(1.0).exit(9, Some(0), None);
    assert!(s.t.tracks(CG), "the container is still known");
    s.at(5.0)
        .signal(Signal::USR1, RUNC, HOST, 10, SignalResult::Delivered);
    assert!(s.t.stopping(CG), "its own stop signal opened the stop");
    s.at(5.5).exit(10, Some(0), None).drained();
    let t = s.one();
    assert_eq!(t.verdict, Verdict::Graceful, "{}", t.explanation);
}
