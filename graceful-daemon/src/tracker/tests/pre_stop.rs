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

#[test]
fn a_hook_still_running_at_the_stop_is_not_the_apps() {
    let mut s = with_hook(None);
    kill_after_grace(&mut s, 6.0);
    s.at(6.0)
        .signal(Signal::KILL, 10, CG, 20, SignalResult::Delivered)
        .exit(20, None, Some(9));
    let r = s.one();
    assert_eq!(r.pre_stop.map(|h| h.ended), Some(None));
    assert!(
        r.never_received.iter().all(|p| p.pid != 20),
        "the hook is the runtime's process: {:?}",
        r.never_received
    );
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
