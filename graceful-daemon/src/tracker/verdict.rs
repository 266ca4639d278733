//! Outcome and verdict of a termination: the facts a stop left, then docs/design.md's rules, one
//! function each, in their order. The words are `explanation`'s.
use super::{explanation::explain, Active, CgroupId, ExitStatus, Kill, Mono, Signal};
use crate::{
    events::{Handler, SignalResult},
    signals::is_shell,
};

use super::termination::*;

/// Processes a record lists at most; the rest are counted (a fork bomb must not make a record
/// of megabytes).
pub const LISTED_MAX: usize = 100;

/// The first [`LISTED_MAX`] and how many more there were.
fn capped<T>(mut list: Vec<T>) -> (Vec<T>, usize) {
    let more = list.len().saturating_sub(LISTED_MAX);
    list.truncate(LISTED_MAX);
    (list, more)
}

/// What a termination left, as the rules and the explanations read it.
pub(super) struct Facts {
    pub main: u32,
    pub main_comm: String,
    /// The main process is a shell: by what it runs where /proc told, else by its name.
    pub shell: Option<Shell>,
    pub stop_signal: Option<Signal>,
    pub kill: Option<Kill>,
    /// The kernel dropped the stop signal at the main process: it said so at generation, or
    /// /proc showed no handler on an init and the signal did not end it.
    pub dropped: bool,
    /// The main process had the stop signal set to SIG_IGN (not merely no handler).
    pub ignored_explicitly: bool,
    pub received: Vec<Received>,
    /// Alive at the stop, never got the stop signal.
    pub never_received: Vec<NamedProcess>,
    /// Of those, the ones that died of SIGKILL (the main process aside).
    pub never_received_killed: Vec<NamedProcess>,
    /// Got it with the kernel's "ignored" (SIG_IGN) and died of SIGKILL (the main process aside).
    pub ignored_and_killed: Vec<NamedProcess>,
    /// The OOM killer's victim that ended the container, with its name.
    pub oom_victim: Option<NamedProcess>,
    pub outcome: Outcome,
    pub unknown_because: Option<String>,
    /// Stop to last process gone, in seconds.
    pub duration: f64,
    /// Stop to SIGKILL (else the duration), in seconds: the grace the runtime gave.
    pub grace: f64,
    pub stop_signal_is_kill: bool,
    /// The main process died of the stop signal's default action.
    pub main_died_of_stop: bool,
    /// The main process's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// The main process re-raised the stop signal with its default action.
    pub reraised: bool,
    /// A process exited between the stop signal and the SIGKILL.
    pub exit_before_kill: bool,
    /// Killed by the kernel's teardown of the pid namespace when the main process exited.
    pub torn_down: Vec<NamedProcess>,
    /// Of those, the ones that had received the stop signal (they were cut mid-shutdown).
    pub torn_down_mid_shutdown: usize,
}

/// Whether the kernel dropped the stop signal at the main process. The kernel's view at
/// generation decides; /proc's (read as the event was handled) only where it is silent.
fn dropped_at_main(a: &Active, died_of_it: bool) -> bool {
    let proc_view = a.main_disposition.as_ref();
    let result = a.received.get(&a.main).map(|r| r.result);
    let at_generation = a
        .main_at_generation
        .and_then(|g| g.handler.map(|h| (h, g.blocked)));
    match (result, at_generation) {
        (Some(SignalResult::Ignored), _) => true,
        // A handler had it, whatever it did with its handler since (re-raised, reset).
        (Some(_), Some((Handler::Function, _))) => false,
        // SIG_IGN while blocked: discarded once unblocked.
        (Some(_), Some((Handler::Ignore, _))) => !died_of_it,
        // Blocked with the default action: pending until taken by sigwait (tini: no delivery
        // follows), or until unblocked, when the kernel delivers it to the default action and
        // an init discards it (a shell that blocks every signal while it forks).
        (Some(_), Some((Handler::Default, true))) => !died_of_it && a.default_delivered_to_main,
        // Not blocked, the default action, and not ignored: it was no init, and dies of it.
        (Some(_), Some((Handler::Default, false))) => false,
        _ => !died_of_it && proc_view.is_some_and(|d| d.drops),
    }
}

/// Whether the main process takes the stop signal: a handler, or a wait for it (sigwait).
fn takes_stop_signal(a: &Active) -> Option<bool> {
    let proc_view = a.main_disposition.as_ref();
    match a
        .main_at_generation
        .and_then(|g| g.handler.map(|h| (h, g.blocked)))
    {
        Some((Handler::Function, _)) => Some(true),
        Some((Handler::Ignore, _)) => Some(false),
        // Taken by a wait when it was blocked and never went to the default action.
        Some((Handler::Default, blocked)) => Some(blocked && !a.default_delivered_to_main),
        None => match (proc_view, a.received.get(&a.main)) {
            (Some(d), _) => Some(d.handles || d.waits),
            (None, Some(r)) if r.result == SignalResult::Ignored => Some(false),
            _ => None,
        },
    }
}

fn died_of(status: Option<ExitStatus>, sig: Signal) -> bool {
    status.is_some_and(|s| s.signal == Some(sig.0))
}

impl Facts {
    fn of(a: &Active, ended: Mono) -> Facts {
        let main_exit = a.exits.get(&a.main).copied();
        let stop_signal = a.stop.as_ref().map(|s| s.signal);
        let dropped = dropped_at_main(a, stop_signal.is_some_and(|s| died_of(main_exit, s)));
        let never_received: Vec<NamedProcess> = a
            .alive_at_stop
            .iter()
            .filter(|(pid, _)| a.stop.is_some() && !a.received.contains_key(pid))
            .map(|(&pid, comm)| NamedProcess {
                pid,
                comm: comm.clone(),
            })
            .collect();
        let never_received_killed = never_received
            .iter()
            .filter(|p| p.pid != a.main && died_of(a.exits.get(&p.pid).copied(), Signal::KILL))
            .cloned()
            .collect();
        let ignored_and_killed = a
            .received
            .values()
            .filter(|r| {
                r.pid != a.main
                    && r.result == SignalResult::Ignored
                    && died_of(a.exits.get(&r.pid).copied(), Signal::KILL)
            })
            .map(|r| NamedProcess {
                pid: r.pid,
                comm: r.comm.clone(),
            })
            .collect();
        let oom_victim = a
            .oom_victims
            .iter()
            .find(|v| **v == a.main || died_of(a.exits.get(v).copied(), Signal::KILL))
            .map(|&pid| NamedProcess {
                pid,
                comm: a
                    .alive_at_stop
                    .get(&pid)
                    .filter(|c| !c.is_empty())
                    .cloned()
                    .unwrap_or(a.main_comm.clone()),
            });
        let torn_down: Vec<NamedProcess> = a
            .torn_down
            .iter()
            .filter(|pid| died_of(a.exits.get(pid).copied(), Signal::KILL))
            .map(|&pid| NamedProcess {
                pid,
                comm: a
                    .alive_at_stop
                    .get(&pid)
                    .or_else(|| a.received.get(&pid).map(|r| &r.comm))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let torn_down_mid_shutdown = torn_down
            .iter()
            .filter(|p| a.received.contains_key(&p.pid))
            .count();
        let duration = ended.saturating_sub(a.started) as f64 / 1e9;
        let grace = match (&a.stop, &a.kill) {
            (Some(s), Some(k)) => k.at.saturating_sub(s.at) as f64 / 1e9,
            _ => duration,
        };
        let outcome = if a.unknown_because.is_some() {
            Outcome::Unknown
        } else if a.kill.is_some() && a.stop.is_some() && a.kill_hit_main {
            Outcome::KilledAfterGrace
        } else if a.kill.is_some() || oom_victim.is_some() {
            Outcome::Killed
        } else {
            Outcome::Exited
        };
        let shell = match a.main_disposition.as_ref().and_then(|d| d.program.as_ref()) {
            Some(program) => program.shell(),
            None => is_shell(&a.main_comm).then(|| Shell {
                name: a.main_comm.clone(),
                script: None,
            }),
        };
        let ignored_explicitly = dropped
            && (a.main_at_generation.and_then(|g| g.handler) == Some(Handler::Ignore)
                || a.main_disposition.as_ref().is_some_and(|d| d.ignores));
        Facts {
            main: a.main,
            main_comm: a.main_comm.clone(),
            shell,
            stop_signal,
            kill: a.kill.clone(),
            dropped,
            ignored_explicitly,
            received: a.received.values().cloned().collect(),
            never_received,
            never_received_killed,
            ignored_and_killed,
            oom_victim,
            outcome,
            unknown_because: a.unknown_because.clone(),
            duration,
            grace,
            stop_signal_is_kill: a.stop_signal_is_kill,
            main_died_of_stop: stop_signal.is_some_and(|s| died_of(main_exit, s)),
            exit_code: main_exit.and_then(|s| s.code),
            reraised: a.reraised,
            exit_before_kill: a.exit_before_kill,
            torn_down,
            torn_down_mid_shutdown,
        }
    }
}

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

/// Rule 4: The kernel dropped the stop signal at the main process: a shell, or another program.
fn dropped_at_pid1(f: &Facts) -> Option<Verdict> {
    f.dropped.then_some(if f.shell.is_some() {
        Verdict::SwallowedByShellPid1
    } else {
        Verdict::Pid1IgnoresStopSignal
    })
}

/// Rule 5: Processes alive at the stop never received it and were SIGKILLed.
fn not_forwarded(f: &Facts) -> Option<Verdict> {
    (!f.never_received_killed.is_empty()).then_some(Verdict::NotForwarded)
}

/// Rule 6: Everyone received it and the runtime still had to kill.
fn slow_shutdown(_: &Facts) -> Option<Verdict> {
    Some(Verdict::SlowShutdown)
}

/// docs/design.md's rules in the order they are tried; the first that matches decides.
const RULES: [fn(&Facts) -> Option<Verdict>; 8] = [
    unknown,
    oom_killed,
    killed_without_stop_signal,
    children_killed_at_exit,
    exited,
    dropped_at_pid1,
    not_forwarded,
    slow_shutdown,
];

/// The record of a termination: outcome, verdict and explanation, by the rules.
pub(super) fn conclude(cgroup: CgroupId, a: Active, ended: Mono) -> Termination {
    let f = Facts::of(&a, ended);
    let verdict = RULES
        .iter()
        .find_map(|rule| rule(&f))
        .unwrap_or(Verdict::SlowShutdown);
    let explanation = explain(verdict, &f);
    let handles_stop_signal = takes_stop_signal(&a);
    let (received, received_more) = capped(f.received);
    let (never_received, never_received_more) = capped(f.never_received);
    Termination {
        cgroup,
        stop: a.stop,
        init: Init {
            pid: a.main,
            comm: f.main_comm,
            shell: f.shell.is_some(),
            handles_stop_signal,
        },
        received,
        received_more,
        never_received,
        never_received_more,
        kill: a.kill,
        outcome: f.outcome,
        exit: a.exits.get(&a.main).copied(),
        started: a.started,
        ended,
        verdict,
        explanation,
        pre_stop: a.pre_stop,
    }
}
