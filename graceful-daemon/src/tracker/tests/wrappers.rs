//! Known wrappers between the runtime and the app are named with their own fix.
use super::*;

#[test]
fn npm_as_pid1_that_does_not_forward_is_named_with_its_fix() {
    // `CMD npm start`: npm (node) is PID 1, names itself with its arguments, runs the app.
    let mut s = Seq::new();
    s.exec(10, "npm start")
        .fork(10, 11, "npm start")
        .exec(11, "node");
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::NotForwarded);
    assert!(
        r.explanation.contains("npm was in the way") && r.explanation.contains("not `npm start`"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_wrapper_a_shell_started_without_exec_is_named_too() {
    // `sh -c 'uv run app.py'`: the shell swallows SIGTERM, uv and the app never hear of it.
    let mut s = Seq::new();
    s.exec(10, "sh")
        .fork(10, 11, "sh")
        .exec(11, "uv")
        .fork(11, 12, "uv")
        .exec(12, "python3");
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Ignored);
    kill_after_grace(&mut s, 2.0);
    s.signal(Signal::KILL, 10, CG, 12, SignalResult::Delivered)
        .exit(12, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert!(
        r.explanation.contains("uv was in the way") && r.explanation.contains("uv run"),
        "{}",
        r.explanation
    );
}

#[test]
fn no_wrapper_no_word_and_a_graceful_stop_names_none() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered);
    kill_after_grace(&mut s, 2.0);
    assert!(!s.one().explanation.contains("in the way"));
    // A wrapper that forwarded and waited: nothing to fix.
    let mut s = Seq::new();
    s.exec(10, "supervisord")
        .fork(10, 11, "supervisord")
        .exec(11, "app");
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .exit(11, Some(0), None)
        .exit(10, Some(0), None);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Graceful);
    assert!(!r.explanation.contains("in the way"), "{}", r.explanation);
}
