//! The preStop exec hook: a process the runtime exec'd in from outside before the stop.
use super::*;

/// `sh` (10) with `sleep` (11); the runtime execs the hook `sh` (20) in at 1 s, it exits 0 at
/// `hook_end` (None: still running at the stop), and the stop comes at 4 s.
fn with_hook(hook_end: Option<f64>) -> Seq {
    let mut s = shell_with_child();
    s.t.set_pre_stop_program(CG, "sh");
    s.t.set_grace(CG, 5.0);
    s.at(1.0).exec(20, "sh");
    if let Some(end) = hook_end {
        s.at(end).exit(20, Some(0), None);
    }
    s.at(4.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    s
}

/// The hook (20) is the runtime's process: never among the app's that missed the signal.
fn hook_is_not_the_apps(r: &Termination) {
    assert!(
        r.never_received.iter().all(|p| p.pid != 20),
        "{:?}",
        r.never_received
    );
}

#[test]
fn a_hook_that_ended_before_the_stop_is_its_pre_stop() {
    let mut s = with_hook(Some(3.0));
    kill_after_grace(&mut s, 6.0);
    let r = s.one();
    let hook = r.pre_stop.expect("the hook's run");
    assert_eq!((hook.pid, hook.comm.as_str()), (20, "sh"));
    assert_eq!(hook.ended.map(|e| e - hook.started), Some(2 * S));
    assert_eq!(hook.exit.and_then(|e| e.code), Some(0));
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
}

/// The API said the pod is terminating, so the container was marked stopping before its hook
/// came: the kernel reported the runtime's fork of the hook's process, then its exec as one that
/// entered from outside. Still the hook.
#[test]
fn a_hook_whose_fork_was_reported_is_still_the_hook() {
    let mut s = shell_with_child();
    s.t.set_pre_stop_program(CG, "sh");
    s.t.set_grace(CG, 5.0);
    // Its move into the container is reported too: a visit named from /proc first.
    s.at(1.0).fork(30, 20, "runc:[2:INIT]");
    s.t.entered(20, CG, "runc:[2:INIT]", s.now, true);
    s.exec_as(20, "sh", true);
    // `sh -c 'sleep 1'` execs sleep in place: the same run of the hook.
    s.exec(20, "sleep");
    s.at(2.0).exit(20, Some(0), None);
    s.at(4.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 6.0);
    let r = s.one();
    let hook = r.pre_stop.clone().expect("the hook's run");
    assert_eq!((hook.pid, hook.exit.and_then(|e| e.code)), (20, Some(0)));
    hook_is_not_the_apps(&r);
}

/// runc 1.1 re-execs its own init in the container before the program: that stage exits, the
/// pipeline reads cgroup.procs while runc's middle child is still there, and the init's exec of
/// the program then comes as one that entered from outside. The kernel says it is the pid
/// namespace's init: the container's main process, whose stop is the runtime's.
#[test]
fn the_namespace_init_exec_after_runcs_stages_is_no_visit() {
    let mut s = Seq::new();
    s.exec_as(5, "runc", true).exit(5, Some(0), None);
    s.t.fill(found(6, None, "runc:[1:CHILD]", false));
    s.exec_full(10, "sh", true, true);
    s.t.fill(found(10, None, "sh", true));
    s.t.fill(found(11, Some(10), "sleep", false));
    s.at(5.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    s.signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered);
    s.exit(11, None, Some(15))
        .exit(6, Some(0), None)
        .exit(10, Some(0), None);
    let r = s.one();
    assert_eq!(r.init.pid, 10);
    assert_eq!(
        r.stop.as_ref().map(|st| st.source),
        Some(StopSource::Runtime)
    );
    assert!(r.pre_stop.is_none());
    assert_eq!(r.verdict, Verdict::Graceful, "{}", r.explanation);
}

/// A container's own main process also enters from outside (moved in before its exec): its
/// exec, read after /proc showed it, is no visit, and its SIGKILL is a stop.
#[test]
fn the_main_process_entering_is_no_visit() {
    let mut s = Seq::new();
    s.t.seed(found(10, None, "sleep", true));
    s.exec_as(10, "sleep", true);
    s.at(1.0)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9));
    assert_eq!(s.one().verdict, Verdict::KilledWithoutStopSignal);
}

#[test]
fn a_hook_still_running_at_the_stop_is_not_the_apps() {
    let mut s = with_hook(None);
    kill_after_grace(&mut s, 6.0);
    s.at(6.0)
        .signal(Signal::KILL, 10, CG, 20, SignalResult::Delivered)
        .exit(20, None, Some(9));
    let r = s.one();
    assert_eq!(r.pre_stop.as_ref().map(|h| h.ended), Some(None));
    hook_is_not_the_apps(&r);
}

#[test]
fn no_hook_without_one_configured_or_of_another_program() {
    let mut s = shell_with_child();
    s.at(1.0).exec(20, "sh").at(2.0).exit(20, Some(0), None);
    s.at(4.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 6.0);
    assert_eq!(s.one().pre_stop, None, "no preStop hook configured");

    let mut s = shell_with_child();
    s.t.set_pre_stop_program(CG, "drain");
    s.at(1.0).exec(20, "probe").at(2.0).exit(20, Some(0), None);
    s.at(4.0)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 6.0);
    assert_eq!(s.one().pre_stop, None, "an exec probe is not the hook");
}

/// The runtime execs the hook `sh` (20) in at 1 s; it signals PID 1 from inside at 1.1 s.
fn hook_signals_pid1(sig: Signal, result: SignalResult) -> Seq {
    let mut s = shell_with_child();
    s.t.set_pre_stop_program(CG, "sh");
    s.at(1.0).exec(20, "sh");
    s.at(1.1).signal(sig, 20, CG, 10, result);
    s
}

#[test]
fn a_hook_that_stops_the_app_from_inside_begins_the_stop() {
    // `kill -QUIT 1`: sh traps QUIT, passes it on and exits with its worker.
    let mut s = hook_signals_pid1(Signal::QUIT, SignalResult::Delivered);
    assert!(s.t.stopping(CG), "the hook's signal began the stop");
    // The app is done before its hook: the namespace's teardown cuts the hook, not the app.
    s.signal(Signal::QUIT, 10, CG, 11, SignalResult::Delivered)
        .at(1.5)
        .exit(11, Some(0), None)
        .exit(10, Some(0), None)
        .signal(Signal::KILL, 10, CG, 20, SignalResult::Delivered)
        .exit(20, None, Some(9));
    let r = s.one();
    let stop = r.stop.clone().expect("a stop");
    assert_eq!(
        (stop.signal, stop.source, stop.sender.pid),
        (Signal::QUIT, StopSource::PreStop, 20)
    );
    assert_eq!(r.verdict, Verdict::Graceful, "{}", r.explanation);
    assert!(
        r.explanation
            .starts_with("The preStop hook (sh (pid 20)) sent SIGQUIT to sh (pid 10)"),
        "{}",
        r.explanation
    );
    hook_is_not_the_apps(&r);
}

#[test]
fn a_hooks_kill_1_swallowed_by_a_shell_pid1_is_swallowed() {
    let mut s = hook_signals_pid1(Signal::TERM, SignalResult::Ignored);
    s.at(1.2).exit(20, Some(0), None);
    // The runtime's own SIGTERM after the hook, dropped too, then SIGKILL.
    s.at(1.3)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 3.3);
    let r = s.one();
    assert_eq!(
        r.verdict,
        Verdict::SwallowedByShellPid1,
        "{}",
        r.explanation
    );
    assert_eq!(r.stop.map(|s| s.source), Some(StopSource::PreStop));
    assert!(r.explanation.contains("The preStop hook (sh (pid 20))"));
}

#[test]
fn a_hook_or_probe_killed_at_its_timeout_is_no_stop() {
    // Kubelet's ExecSync timed out: the shim SIGKILLs the exec'd process, the container runs on.
    let mut s = shell_with_child();
    s.t.set_pre_stop_program(CG, "sh");
    s.at(1.0).exec(20, "sh");
    s.at(4.0)
        .signal(Signal::KILL, RUNC, HOST, 20, SignalResult::Delivered)
        .exit(20, None, Some(9));
    assert!(
        !s.t.stopping(CG),
        "the runtime ended its exec, not the container"
    );
    // The stop that follows is judged with the hook's run in it.
    s.at(4.1)
        .signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 6.1);
    let r = s.one();
    assert_eq!(
        r.verdict,
        Verdict::SwallowedByShellPid1,
        "{}",
        r.explanation
    );
    let hook = r.pre_stop.expect("the hook's run");
    assert_eq!(hook.exit.and_then(|e| e.signal), Some(9));
}
