//! The tracker from event sequences, as the kernel produces them (and reordered or lost).
use super::*;
use crate::events::{
    ExecEvent, ExitEvent, ForkEvent, LossReason, LostEvent, OomEvent, SignalResult,
};
use seq::*;

#[test]
fn shell_pid1_swallows_sigterm() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 30.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert_eq!(r.outcome, Outcome::KilledAfterGrace);
    assert_eq!(
        r.init,
        Init {
            pid: 10,
            comm: "sh".into(),
            shell: true,
            handles_stop_signal: Some(false)
        }
    );
    assert_eq!(r.received.len(), 1);
    assert_eq!(r.received[0].result, SignalResult::Ignored);
    assert_eq!(
        r.never_received,
        vec![NamedProcess {
            pid: 11,
            comm: "sleep".into()
        }]
    );
    assert_eq!(
        r.exit,
        Some(ExitStatus {
            code: None,
            signal: Some(9)
        })
    );
    assert!(
        r.explanation.contains("sleep (pid 11)") && r.explanation.contains("30.0 s"),
        "{}",
        r.explanation
    );
    assert!((r.duration_seconds() - 30.0).abs() < 1e-6);
    assert_eq!(r.kill.unwrap().sender.comm, "runc");
}

#[test]
fn a_signal_that_overtakes_the_exec_of_its_target() {
    // The runtime kills the init while it is still finishing exec: signal, then exec.
    let mut s = Seq::new();
    s.signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exec(10, "sleep")
        .exit(10, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::KilledWithoutStopSignal);
    assert_eq!(r.init.pid, 10);
}

#[test]
fn the_main_process_is_named_by_the_kernel_at_the_stop_not_by_the_runtimes_stage() {
    // The container's first reported exec was runc's own stage; it exec'd sh unreported, and
    // sh exited of the stop before /proc could be read.
    let mut s = Seq::new();
    s.exec(10, "runc:[2:INIT]");
    let now = s.now;
    s.feed(Event::Signal(signal_event(
        now,
        Signal::TERM,
        (RUNC, "runc", HOST),
        (10, "sh", CG),
        SignalResult::Delivered,
    )));
    s.exit(10, Some(0), None);
    let r = s.one();
    assert_eq!(r.init.comm, "sh");
    assert!(
        r.explanation.starts_with("sh (pid 10)"),
        "{}",
        r.explanation
    );
}

#[test]
fn signals_to_processes_outside_any_container_are_ignored() {
    let mut s = Seq::new();
    let now = s.now;
    s.feed(Event::Signal(signal_event(
        now,
        Signal::TERM,
        (1, "systemd", CG),
        (77, "bash", HOST),
        SignalResult::Delivered,
    )));
    s.exit(77, Some(0), None);
    assert!(s.done.is_empty());
}

#[test]
fn a_child_that_execs_after_the_stop_is_named_by_its_program() {
    let mut s = Seq::new();
    s.exec(10, "sh").fork(10, 11, "sh");
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored)
        .exec(11, "sleep");
    kill_after_grace(&mut s, 2.0);
    assert_eq!(
        s.one().never_received,
        vec![NamedProcess {
            pid: 11,
            comm: "sleep".into()
        }]
    );
}

#[test]
fn non_shell_pid1_without_handler() {
    let mut s = Seq::new();
    s.exec(10, "myapp")
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    s.at(5.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Pid1IgnoresStopSignal);
    assert!(r.explanation.contains("myapp"));
    assert!(r.never_received.is_empty());
}

#[test]
fn handler_that_does_not_forward() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::NotForwarded);
    assert_eq!(r.outcome, Outcome::KilledAfterGrace);
    assert_eq!(
        r.never_received,
        vec![NamedProcess {
            pid: 11,
            comm: "sleep".into()
        }]
    );
    assert!(
        r.explanation.contains("sleep (pid 11)"),
        "{}",
        r.explanation
    );
}

#[test]
fn forwarding_handler_is_graceful() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .at(0.2)
        .exit(11, None, Some(15))
        .exit(10, Some(0), None);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Graceful);
    assert_eq!(r.outcome, Outcome::Exited);
    assert_eq!(
        r.received.iter().map(|x| x.pid).collect::<Vec<_>>(),
        vec![10, 11]
    );
    assert!(r.never_received.is_empty());
    assert_eq!(
        r.exit,
        Some(ExitStatus {
            code: Some(0),
            signal: None
        })
    );
}

#[test]
fn everyone_received_but_too_slow() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown);
    assert_eq!(r.outcome, Outcome::KilledAfterGrace);
}

#[test]
fn sigkill_without_stop_signal() {
    let mut s = shell_with_child();
    kill_after_grace(&mut s, 0.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::KilledWithoutStopSignal);
    assert_eq!(r.outcome, Outcome::Killed);
    assert!(r.stop.is_none() && r.never_received.is_empty());
}

#[test]
fn init_exiting_on_sigterm_while_its_child_runs_gets_the_child_killed() {
    let mut s = shell_with_child();
    // As the kernel orders them: the init's exit, then its teardown SIGKILL, then the child.
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, Some(0), None)
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::ChildrenKilledAtExit);
    assert_eq!(r.outcome, Outcome::Exited);
    assert!(r.kill.is_none(), "teardown is not a kill");
}

#[test]
fn a_child_killed_by_its_own_parent_before_the_init_exits_is_no_teardown() {
    // The app SIGKILLs a worker of its own, then exits: nothing was left for the kernel.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9))
        .exit(10, Some(0), None);
    assert_eq!(s.one().verdict, Verdict::Graceful);
}

#[test]
fn other_stop_signals_are_followed() {
    let mut s = shell_with_child();
    s.signal(Signal::QUIT, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 10.0);
    let r = s.one();
    assert_eq!(r.stop.as_ref().unwrap().signal, Signal::QUIT);
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert!(r.explanation.contains("SIGQUIT"));
}

#[test]
fn oom_kill_of_the_main_process() {
    let mut s = shell_with_child();
    s.feed(Event::Oom(OomEvent {
        ts: s.now,
        pid: 10,
        cgroup: CG,
    }))
    .signal(Signal::KILL, 11, CG, 10, SignalResult::Delivered)
    .exit(10, None, Some(9))
    .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
    .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::OomKilled);
    assert_eq!(r.outcome, Outcome::Killed);
}

#[test]
fn lost_events_make_the_record_unknown() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    s.lost(3);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!((r.verdict, r.outcome), (Verdict::Unknown, Outcome::Unknown));
    assert!(r.explanation.contains("3 kernel events were lost"));
}

#[test]
fn a_lost_exit_found_by_the_sweep_ends_the_record_as_unknown() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, Some(0), None);
    assert!(s.done.is_empty(), "sleep is still a member");
    assert!(s.t.forget(11, s.now).is_empty(), "ends at the next drain");
    assert_eq!(s.one().verdict, Verdict::Unknown);
}

#[test]
fn blocked_stop_signal_on_a_shell_init_is_still_swallowed() {
    // The shell had every signal blocked for a moment: the kernel queued SIGTERM ("delivered")
    // and dropped it when unblocked. /proc showed no handler on the init.
    let mut s = shell_with_child();
    shell_init_drops_term(&mut s, false);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert_eq!(r.init.handles_stop_signal, Some(false));
}

#[test]
fn shared_pid_namespace_shell_dies_and_runtime_kills_its_children() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(15))
        .signal(Signal::KILL, RUNC, HOST, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.outcome, Outcome::Killed);
    assert_eq!(r.verdict, Verdict::NotForwarded);
}

#[test]
fn two_containers_stopped_at_once_are_kept_apart() {
    let mut t = Tracker::new(TrackerConfig::default(), 0);
    for (cg, pid) in [(600, 20), (700, 30)] {
        t.on_event(&Event::Exec(ExecEvent {
            ts: 1,
            pid,
            cgroup: cg,
            comm: "app".into(),
            entered: false,
            namespace_init: false,
        }));
    }
    for (cg, pid, result) in [
        (600, 20, SignalResult::Delivered),
        (700, 30, SignalResult::Ignored),
    ] {
        t.on_event(&Event::Signal(signal_event(
            2,
            Signal::TERM,
            (RUNC, "runc", HOST),
            (pid, "app", cg),
            result,
        )));
    }
    let exit = |pid, cg, sig: Option<i32>| {
        Event::Exit(ExitEvent {
            ts: 3,
            pid,
            tid: pid,
            status: ExitStatus {
                code: sig.is_none().then_some(0),
                signal: sig,
            },
            cgroup: cg,
            comm: String::new(),
        })
    };
    assert!(t.on_event(&exit(20, 600, None)).is_empty());
    let a = drain(&mut t, 3 + S);
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].verdict, Verdict::Graceful);
    assert_eq!(a[0].cgroup, 600);
    let kill = signal_event(
        3,
        Signal::KILL,
        (RUNC, "runc", HOST),
        (30, "app", 700),
        SignalResult::Delivered,
    );
    assert!(t.on_event(&Event::Signal(kill)).is_empty());
    assert!(t.on_event(&exit(30, 700, Some(9))).is_empty());
    let b = drain(&mut t, 3 + S);
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(b[0].cgroup, 700);
    assert_eq!(b[0].verdict, Verdict::Pid1IgnoresStopSignal);
}

#[test]
fn a_process_still_listed_in_its_cgroup_after_its_exit_is_not_brought_back() {
    // The slow-shutdown ordering that made a false `unknown`: in the teardown the child's exit
    // is read while cgroup.procs still lists it (do_exit leaves the cgroup after the exit
    // tracepoint), and the last known process's exit makes the pipeline read cgroup.procs.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .at(2.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(11, None, Some(9));
    s.t.fill(found(11, Some(10), "sleep", false));
    s.exit(10, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown, "{}", r.explanation);
    assert_eq!(r.outcome, Outcome::KilledAfterGrace);
}

mod connections;
mod dispositions;
mod exit_codes;
mod inside;
mod oom;
mod pre_stop;
mod properties;
mod restarts_and_reuse;
mod seq;
mod stops_and_losses;
mod wrappers;

#[test]
fn a_shell_init_set_to_sig_ign_is_told_apart_from_one_without_a_handler() {
    // `trap '' TERM`: exec form or tini would not help (SIG_IGN is kept across exec), so the
    // explanation must not suggest them.
    let mut s = shell_with_child();
    shell_init_drops_term(&mut s, true);
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert_eq!(r.init.handles_stop_signal, Some(false));
    assert!(
        r.explanation.contains("SIG_IGN")
            && r.explanation.contains("trap '' TERM")
            && r.explanation.contains("sleep (pid 11) never received it")
            && !r.explanation.contains("exec form (CMD"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_child_that_ignores_the_forwarded_signal_is_named() {
    // sh forwards SIGTERM; sleep has it set to SIG_IGN (the kernel says "ignored").
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Ignored);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown);
    assert!(r.never_received.is_empty());
    assert!(
        r.explanation.contains("dropped it at sleep (pid 11)")
            && r.explanation
                .contains("a longer grace period will not help"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_child_that_ignored_the_signal_but_exited_is_not_blamed() {
    // sleep ignored SIGTERM, then ended on its own; sh was the slow one.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Ignored);
    s.at(1.0).exit(11, Some(0), None);
    s.at(2.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown);
    assert!(
        r.explanation
            .contains("shutdown took longer than the grace period"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_stop_signal_of_sigkill_is_not_called_a_force_delete() {
    let mut s = shell_with_child();
    s.t.set_stop_signal(CG, Signal::KILL);
    kill_after_grace(&mut s, 0.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::KilledWithoutStopSignal);
    assert!(
        r.explanation.contains("stop signal is SIGKILL") && !r.explanation.contains("force delete"),
        "{}",
        r.explanation
    );
}

#[test]
fn shared_pid_namespace_main_is_the_root_of_the_tree_whatever_order_it_is_learnt_in() {
    // shareProcessNamespace: pause (pid 1, outside) is the init. The first exec reported is the
    // child's; the shell the runtime started is found in /proc only at the stop.
    for shell_first in [true, false] {
        let mut s = Seq::new();
        s.exec(11, "sleep");
        if shell_first {
            s.t.fill(found(10, Some(5), "sh", false));
            s.t.fill(found(11, Some(10), "sleep", false));
        } else {
            s.t.fill(found(11, Some(10), "sleep", false));
            s.t.fill(found(10, Some(5), "sh", false));
        }
        s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
            .exit(10, None, Some(15));
        // The runtime kills what the dead shell left.
        s.signal(Signal::KILL, RUNC, HOST, 11, SignalResult::Delivered)
            .exit(11, None, Some(9));
        let r = s.one();
        assert_eq!((r.init.pid, r.init.comm.as_str()), (10, "sh"));
        assert_eq!(r.verdict, Verdict::NotForwarded);
        assert_eq!(r.outcome, Outcome::Killed);
        assert!(
            r.explanation
                .contains("sh (pid 10) died of SIGTERM without passing it on")
                && r.explanation.contains("sleep (pid 11) never received it"),
            "{}",
            r.explanation
        );
    }
}

#[test]
fn a_signal_to_a_zombie_does_not_bring_it_back() {
    // A process whose exit was seen is SIGKILLed as a zombie when the pid namespace's init
    // dies later (its parent never reaped it): no second termination.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(11, None, Some(15))
        .exit(10, Some(0), None);
    assert_eq!(s.one().verdict, Verdict::Graceful);
    s.at(3.0)
        .signal(Signal::KILL, 1, HOST, 11, SignalResult::Delivered);
    assert!(!s.t.stopping(CG) && s.t.members(CG).is_empty());
    assert!(s.done.is_empty(), "{:#?}", s.done);
    // Once a pid is born again it is a process like any other.
    s.at(61.0).exec(11, "sleep");
    s.signal(Signal::KILL, RUNC, HOST, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    assert_eq!(s.one().verdict, Verdict::KilledWithoutStopSignal);
}
