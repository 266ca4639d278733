//! docs/design.md's verdict rules, one function each, in their order: the first that matches
//! decides.
use super::{facts::Facts, termination::*};

/// Rule 7, checked first (a lost event never yields any other verdict): events lost inside the
/// window, or the daemon started mid-termination.
fn unknown(f: &Facts) -> Option<Verdict> {
    f.unknown_because.as_ref().map(|_| Verdict::Unknown)
}

/// Rule 1: The kernel OOM killer killed the container's process that ended it.
fn oom_killed(f: &Facts) -> Option<Verdict> {
    f.oom_victim.as_ref().map(|_| Verdict::OomKilled)
}

/// Rule 2: SIGKILL from outside with no stop signal before it (a force delete).
fn killed_without_stop_signal(f: &Facts) -> Option<Verdict> {
    (f.kill.is_some() && f.stop_signal.is_none()).then_some(Verdict::KilledWithoutStopSignal)
}

/// Everything exited with no SIGKILL from outside, but PID 1 exited while other processes still
/// ran, and the kernel's teardown of the pid namespace SIGKILLed them.
fn children_killed_at_exit(f: &Facts) -> Option<Verdict> {
    (f.outcome == Outcome::Exited && f.stop_signal.is_some() && !f.torn_down.is_empty())
        .then_some(Verdict::ChildrenKilledAtExit)
}

/// Rule 3: Everything exited with no SIGKILL from outside: graceful (a main process that dies of
/// the stop signal's default action counts).
fn exited(f: &Facts) -> Option<Verdict> {
    (f.outcome == Outcome::Exited).then_some(Verdict::Graceful)
}

/// Rule 4: The kernel dropped the stop signal at the main process: a shell, or another program;
/// or the main process handled it and re-raised it with the default action, which the kernel
/// drops at an init just the same (Node.js does this itself for an app without a listener).
fn dropped_at_pid1(f: &Facts) -> Option<Verdict> {
    if f.dropped && f.shell.is_some() {
        Some(Verdict::SwallowedByShellPid1)
    } else {
        (f.dropped || f.reraised).then_some(Verdict::Pid1IgnoresStopSignal)
    }
}

/// Rule 5: Processes alive at the stop never received it and were SIGKILLed.
fn not_forwarded(f: &Facts) -> Option<Verdict> {
    (!f.never_received_killed.is_empty()).then_some(Verdict::NotForwarded)
}

/// docs/design.md's rules in the order they are tried; the first that matches decides. When
/// none does, rule 6: everyone received it and the runtime still had to kill (slow_shutdown).
const RULES: [fn(&Facts) -> Option<Verdict>; 7] = [
    unknown,
    oom_killed,
    killed_without_stop_signal,
    children_killed_at_exit,
    exited,
    dropped_at_pid1,
    not_forwarded,
];

/// The verdict the facts call for.
pub(super) fn decide(f: &Facts) -> Verdict {
    RULES
        .iter()
        .find_map(|rule| rule(f))
        .unwrap_or(Verdict::SlowShutdown)
}
