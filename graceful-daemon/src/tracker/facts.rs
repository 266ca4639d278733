//! The facts a termination left: who the main process was, who received the stop signal and who
//! never did, whether the kernel dropped it at the main process. What the verdict rules and the
//! explanations read.
use super::{Active, ExitStatus, Kill, Mono, Sender, Signal, StopSource};
use crate::{
    events::{Handler, SignalResult},
    signals::is_shell,
};

use super::termination::*;

/// What a termination left, as the rules and the explanations read it.
pub(super) struct Facts {
    pub main: u32,
    pub main_comm: String,
    /// The main process is a shell: by what it runs where /proc told, else by its name.
    pub shell: Option<Shell>,
    pub stop_signal: Option<Signal>,
    /// Who sent the stop signal from inside the container (the preStop hook, or another of
    /// its processes), when it did not come from outside.
    pub stop_from_inside: Option<(StopSource, Sender)>,
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
    /// The OOM killer's victim that ended the container: the main process, or (with no stop
    /// and no kill from outside: the container ended on its own after it) the first victim.
    pub oom_victim: Option<NamedProcess>,
    /// Every OOM victim of the container, before or during the stop, and whether it was the
    /// main process.
    pub oom_victims: Vec<(NamedProcess, bool)>,
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
pub(super) fn takes_stop_signal(a: &Active) -> Option<bool> {
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
    pub(super) fn of(a: &Active, ended: Mono) -> Facts {
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
        let oom_victims: Vec<(NamedProcess, bool)> = a
            .oom_victims
            .iter()
            .map(|(&pid, comm)| {
                let comm = Some(comm)
                    .filter(|c| !c.is_empty())
                    .or_else(|| a.alive_at_stop.get(&pid).filter(|c| !c.is_empty()))
                    .cloned()
                    .unwrap_or_default();
                (NamedProcess { pid, comm }, pid == a.main)
            })
            .collect();
        let ended_on_its_own = a.stop.is_none() && a.kill.is_none();
        let oom_victim = oom_victims
            .iter()
            .find(|(_, main)| *main)
            .or_else(|| oom_victims.first().filter(|_| ended_on_its_own))
            .map(|(p, _)| NamedProcess {
                pid: p.pid,
                comm: if p.comm.is_empty() && p.pid == a.main {
                    a.main_comm.clone()
                } else {
                    p.comm.clone()
                },
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
            stop_from_inside: a
                .stop
                .as_ref()
                .filter(|s| s.source != StopSource::Runtime)
                .map(|s| (s.source, s.sender.clone())),
            kill: a.kill.clone(),
            dropped,
            ignored_explicitly,
            received: a.received.values().cloned().collect(),
            never_received,
            never_received_killed,
            ignored_and_killed,
            oom_victim,
            oom_victims,
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
