//! What the kernel saw of the target at the stop signal's generation decides whether it was
//! dropped; /proc, read later, only fills in what the kernel could not say.
use super::*;
use crate::events::{AtGeneration, Handler};

const HANDLER: AtGeneration = AtGeneration {
    handler: Some(Handler::Function),
    blocked: false,
};
const DEFAULT_BLOCKED: AtGeneration = AtGeneration {
    handler: Some(Handler::Default),
    blocked: true,
};
const DEFAULT: AtGeneration = AtGeneration {
    handler: Some(Handler::Default),
    blocked: false,
};

/// /proc's view of pid 10, an init, running `exe args`: no handler; `waits` when it blocks
/// the signal or sits in sigtimedwait.
fn init_seen(s: &mut Seq, waits: bool, exe: &str, args: &[&str]) {
    s.t.observe(
        10,
        Disposition {
            signal: Signal::TERM,
            handles: false,
            drops: !waits,
            ignores: false,
            waits,
            namespace_init: true,
            program: Some(Program {
                exe: exe.into(),
                args: args.iter().map(|a| a.to_string()).collect(),
            }),
        },
    );
}

#[test]
fn an_init_that_waits_for_the_stop_signal_is_not_said_to_drop_it() {
    // tini: SIGTERM blocked, taken with sigtimedwait and forwarded to its child, which drains
    // longer than the grace.
    let mut s = Seq::new();
    s.exec(10, "tini").fork(10, 11, "tini").exec(11, "app");
    init_seen(&mut s, true, "tini", &["tini", "--", "app"]);
    s.term_seen(SignalResult::Delivered, DEFAULT_BLOCKED)
        .signal_seen(Signal::TERM, (10, CG), 11, SignalResult::Delivered, HANDLER);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown, "{}", r.explanation);
    assert_eq!(r.init.handles_stop_signal, Some(true));
    assert!(!r.init.shell);
    assert!(!r.explanation.contains("no handler"), "{}", r.explanation);
}

#[test]
fn a_shell_init_that_had_signals_blocked_for_a_fork_drops_it_when_it_unblocks() {
    let mut s = shell_with_child();
    init_seen(
        &mut s,
        false,
        "dash",
        &["/bin/sh", "-c", "sleep 1000; true"],
    );
    s.term_seen(SignalResult::Delivered, DEFAULT_BLOCKED)
        // Unblocked: the kernel takes it to the default action, which an init never dies of.
        .deliver(10, Signal::TERM, Handler::Default);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert_eq!(r.init.handles_stop_signal, Some(false));
}

#[test]
fn a_handler_at_the_signal_wins_over_a_later_proc_without_one() {
    // Node's process.once('SIGTERM'): the handler is gone by the time /proc is read.
    let mut s = Seq::new();
    s.exec(10, "node");
    init_seen(&mut s, false, "node", &["node", "server.js"]);
    s.term_seen(SignalResult::Delivered, HANDLER);
    s.killed_at(2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown, "{}", r.explanation);
    assert_eq!(r.init.handles_stop_signal, Some(true));
}

#[test]
fn a_handler_that_re_raises_at_an_init_is_told_to_exit_instead() {
    let mut s = Seq::new();
    s.exec(10, "python3");
    s.term_seen(SignalResult::Delivered, HANDLER)
        .at(0.1)
        .signal_seen(Signal::TERM, (10, CG), 10, SignalResult::Delivered, DEFAULT);
    s.killed_at(2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Pid1IgnoresStopSignal);
    assert_eq!(r.init.handles_stop_signal, Some(true));
    assert!(
        r.explanation.contains("re-raised") && r.explanation.contains("Exit instead"),
        "{}",
        r.explanation
    );
    assert!(!r
        .explanation
        .contains("longer grace period (terminationGracePeriodSeconds)"));
}

#[test]
fn a_re_raise_that_ends_a_process_that_is_no_init_is_graceful() {
    let mut s = Seq::new();
    s.exec(10, "python3");
    s.term_seen(SignalResult::Delivered, HANDLER)
        .signal_seen(Signal::TERM, (10, CG), 10, SignalResult::Delivered, DEFAULT)
        .exit(10, None, Some(15));
    assert_eq!(s.one().verdict, Verdict::Graceful);
}

#[test]
fn a_stop_signal_the_program_does_not_stop_on_is_named() {
    // A JVM stopped with SIGQUIT prints a thread dump and runs on.
    let mut s = Seq::new();
    s.exec(10, "java");
    s.t.set_stop_signal(CG, Signal::QUIT);
    s.signal_seen(
        Signal::QUIT,
        (RUNC, HOST),
        10,
        SignalResult::Delivered,
        HANDLER,
    );
    s.killed_at(2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SlowShutdown);
    assert!(
        r.explanation.contains("does not stop on SIGQUIT")
            && r.explanation.contains("usually SIGTERM"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_script_run_through_its_shebang_is_a_shell_and_named() {
    let mut s = Seq::new();
    s.exec(10, "docker-entrypoi")
        .fork(10, 11, "docker-entrypoi")
        .exec(11, "app");
    init_seen(
        &mut s,
        false,
        "dash",
        &["/bin/sh", "/docker-entrypoint.sh", "app"],
    );
    s.term_seen(SignalResult::Ignored, DEFAULT);
    kill_after_grace(&mut s, 2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::SwallowedByShellPid1);
    assert!(r.init.shell);
    assert!(
        r.explanation
            .contains("shell script docker-entrypoint.sh (run by dash)")
            && r.explanation.contains("`exec` in docker-entrypoint.sh"),
        "{}",
        r.explanation
    );
}

#[test]
fn busybox_that_is_no_shell_is_judged_as_a_program() {
    let mut s = Seq::new();
    s.exec(10, "busybox");
    init_seen(&mut s, false, "busybox", &["busybox", "httpd", "-f"]);
    s.term_seen(SignalResult::Ignored, DEFAULT);
    s.killed_at(2.0);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Pid1IgnoresStopSignal);
    assert!(!r.init.shell);
}
