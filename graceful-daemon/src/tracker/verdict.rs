//! Outcome, verdict and explanation of a termination, by the rules of DESIGN.md in their order.
use super::{Active, CgroupId, ExitStatus, Mono, Signal};
use crate::{events::SignalResult, signals::is_shell};

use super::termination::*;

/// "was" or "were", as many as `procs` are.
fn were(procs: &[NamedProcess]) -> &'static str {
    if procs.len() == 1 {
        "was"
    } else {
        "were"
    }
}

fn names(procs: &[NamedProcess]) -> String {
    let list: Vec<String> = procs
        .iter()
        .take(5)
        .map(|p| format!("{} (pid {})", p.comm, p.pid))
        .collect();
    let more = procs.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", list.join(", "))
    } else {
        list.join(", ")
    }
}

/// Processes a record lists at most; the rest are counted (a fork bomb must not make a record
/// of megabytes).
pub const LISTED_MAX: usize = 100;

/// The first [`LISTED_MAX`] and how many more there were.
fn capped<T>(mut list: Vec<T>) -> (Vec<T>, usize) {
    let more = list.len().saturating_sub(LISTED_MAX);
    list.truncate(LISTED_MAX);
    (list, more)
}

/// Outcome, verdict and explanation, by the rules of DESIGN.md (first match wins).
pub(super) fn conclude(cgroup: CgroupId, a: Active, ended: Mono) -> Termination {
    let main_exit = a.exits.get(&a.main).copied();
    let main_comm = a.main_comm.clone();
    let shell = is_shell(&main_comm);
    let stop_signal = a.stop.as_ref().map(|s| s.signal);
    let main_result = a.received.get(&a.main).map(|r| r.result);
    let died_of =
        |status: Option<ExitStatus>, sig: Signal| status.is_some_and(|s| s.signal == Some(sig.0));
    // The kernel dropped the stop signal at the main process: it said so at generation, or /proc
    // showed no handler on an init and the signal did not end it.
    let dropped = main_result == Some(SignalResult::Ignored)
        || (a.main_disposition.is_some_and(|d| d.drops)
            && !stop_signal.is_some_and(|s| died_of(main_exit, s)));
    let handles_stop_signal = match (a.main_disposition, main_result) {
        (Some(d), _) => Some(d.handles),
        (None, Some(SignalResult::Ignored)) => Some(false),
        _ => None,
    };
    let received: Vec<Received> = a.received.values().cloned().collect();
    let never_received: Vec<NamedProcess> = a
        .alive_at_stop
        .iter()
        .filter(|(pid, _)| a.stop.is_some() && !a.received.contains_key(pid))
        .map(|(&pid, comm)| NamedProcess {
            pid,
            comm: comm.clone(),
        })
        .collect();
    let never_received_killed: Vec<NamedProcess> = never_received
        .iter()
        .filter(|p| p.pid != a.main && died_of(a.exits.get(&p.pid).copied(), Signal::KILL))
        .cloned()
        .collect();
    let oom = a
        .oom_victims
        .iter()
        .find(|v| **v == a.main || a.exits.get(v).is_some_and(|s| s.signal == Some(9)));
    let duration = ended.saturating_sub(a.started) as f64 / 1e9;
    let sig = stop_signal.map(|s| s.to_string()).unwrap_or_default();
    let grace = match (&a.stop, &a.kill) {
        (Some(s), Some(k)) => format!("{:.1} s", k.at.saturating_sub(s.at) as f64 / 1e9),
        _ => format!("{duration:.1} s"),
    };

    let outcome = if a.unknown_because.is_some() {
        Outcome::Unknown
    } else if a.kill.is_some() && a.stop.is_some() && a.kill_hit_main {
        Outcome::KilledAfterGrace
    } else if a.kill.is_some() || oom.is_some() {
        Outcome::Killed
    } else {
        Outcome::Exited
    };
    let (verdict, explanation) = if let Some(reason) = &a.unknown_because {
        (
            Verdict::Unknown,
            format!("Not enough was seen to tell why: {reason}."),
        )
    } else if let Some(victim) = oom {
        let comm = a
            .alive_at_stop
            .get(victim)
            .filter(|c| !c.is_empty())
            .cloned()
            .unwrap_or(main_comm.clone());
        (
            Verdict::OomKilled,
            format!("The kernel OOM killer killed {comm} (pid {victim}): the container ran out of memory."),
        )
    } else if let (Some(k), None) = (&a.kill, &a.stop) {
        (
            Verdict::KilledWithoutStopSignal,
            format!(
                "SIGKILL from {} (pid {}) with no stop signal before it: a force delete or kill -9, the app had no chance to shut down.",
                k.sender.comm, k.sender.pid
            ),
        )
    } else if outcome == Outcome::Exited {
        // PID 1 of a pid namespace exited and the kernel SIGKILLed what was left: still a clean
        // stop of the container, but those processes had no chance to shut down.
        let torn_down = if never_received_killed.is_empty() {
            String::new()
        } else {
            format!(
                " When it exited, the kernel killed {} without {sig}: {} never received the signal.",
                names(&never_received_killed),
                if never_received_killed.len() == 1 { "it" } else { "they" }
            )
        };
        (
            Verdict::Graceful,
            format!("{main_comm} (pid {}) got {sig} and the container exited on its own in {duration:.1} s.{torn_down}", a.main),
        )
    } else if dropped {
        let victims = if never_received.is_empty() {
            String::new()
        } else {
            format!(" {} never received it.", names(&never_received))
        };
        if shell {
            (
                Verdict::SwallowedByShellPid1,
                format!(
                    "PID 1 is a shell ({main_comm}) with no handler for {sig}, so the kernel dropped the signal and the container was SIGKILLed after {grace}.{victims} Use the exec form (CMD [\"app\"]), `exec app` in the entrypoint script, an init such as tini, or trap and forward {sig}."
                ),
            )
        } else {
            (
                Verdict::Pid1IgnoresStopSignal,
                format!(
                    "PID 1 ({main_comm}) has no handler for {sig}; as the init of its pid namespace the kernel dropped the signal, and it was SIGKILLed after {grace}.{victims} Handle {sig}, or run it under an init such as tini."
                ),
            )
        }
    } else if !never_received_killed.is_empty() {
        (
            Verdict::NotForwarded,
            format!(
                "{main_comm} (pid {}) got {sig} but did not pass it on: {} never received it and {} SIGKILLed. Forward it to the children (trap, `kill -TERM` them, then wait), or run under an init that forwards signals, such as tini or dumb-init.",
                a.main,
                names(&never_received_killed),
                were(&never_received_killed)
            ),
        )
    } else {
        (Verdict::SlowShutdown, {
            let ignoring: Vec<NamedProcess> = received
                .iter()
                .filter(|r| r.pid != a.main && r.result == SignalResult::Ignored)
                .map(|r| NamedProcess {
                    pid: r.pid,
                    comm: r.comm.clone(),
                })
                .collect();
            let ignored = if ignoring.is_empty() {
                String::new()
            } else {
                format!(" {} ignored it.", names(&ignoring))
            };
            format!(
                    "Every process got {sig}, but the container was still running when the runtime sent SIGKILL after {grace}: shutdown took longer than the grace period.{ignored} Make shutdown faster, or give it a longer grace period (terminationGracePeriodSeconds)."
                )
        })
    };
    let (received, received_more) = capped(received);
    let (never_received, never_received_more) = capped(never_received);
    Termination {
        cgroup,
        stop: a.stop,
        init: Init {
            pid: a.main,
            comm: main_comm,
            shell,
            handles_stop_signal,
        },
        received,
        received_more,
        never_received,
        never_received_more,
        kill: a.kill,
        outcome,
        exit: main_exit,
        started: a.started,
        ended,
        verdict,
        explanation,
    }
}
