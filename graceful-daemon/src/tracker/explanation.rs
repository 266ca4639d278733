//! The words of graceful, in one place: one or two plain sentences per verdict naming the fix,
//! the preStop hook's share of a kill, and the audit's PID 1 risk.
use super::{facts::Facts, termination::*};
use crate::signals::Signal;

/// "was" or "were", as many as `procs` are.
fn were(procs: &[NamedProcess]) -> &'static str {
    if procs.len() == 1 {
        "was"
    } else {
        "were"
    }
}

/// The first five by name and pid, and how many more.
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

/// The verdict's words, and the fix of a known wrapper when one stood between the runtime and
/// the app.
pub(super) fn explain(verdict: Verdict, f: &Facts) -> String {
    let said = explain_verdict(verdict, f);
    // A stop the container's own preStop hook began: say so first.
    let said = match (&f.stop_from_inside, f.stop_signal) {
        (Some((StopSource::PreStop, hook)), Some(sig)) => format!(
            "The preStop hook ({} (pid {})) sent {sig} to {} (pid {}) from inside the container: that began the stop. {said}",
            hook.comm, hook.pid, f.main_comm, f.main
        ),
        (Some((_, sender)), Some(sig)) if sender.pid == f.main => format!(
            "{} (pid {}) sent {sig} to itself: the container stopped from inside, not by its runtime. {said}",
            f.main_comm, f.main
        ),
        (Some((_, sender)), Some(sig)) => format!(
            "{} (pid {}) sent {sig} to {} (pid {}) from inside the container: that began the stop, not the runtime. {said}",
            sender.comm, sender.pid, f.main_comm, f.main
        ),
        _ => said,
    };
    let wrapper_matters = matches!(
        verdict,
        Verdict::SwallowedByShellPid1
            | Verdict::Pid1IgnoresStopSignal
            | Verdict::NotForwarded
            | Verdict::SlowShutdown
            | Verdict::ChildrenKilledAtExit
    );
    let said = match wrapper(f).filter(|_| wrapper_matters) {
        Some((name, fix)) => format!("{said} {name} was in the way: {fix}"),
        None => said,
    };
    // OOM kills that did not end the container are told, never taken for its end.
    let others: Vec<NamedProcess> = f
        .oom_victims
        .iter()
        .filter(|(p, _)| f.oom_victim.as_ref().is_none_or(|v| v.pid != p.pid))
        .map(|(p, _)| p.clone())
        .collect();
    if others.is_empty() || verdict == Verdict::Unknown {
        return said;
    }
    format!(
        "{said} The OOM killer also killed {} in this container; that did not end it, though the runtime may report the container as OOMKilled. Raise its memory limit, or find what grew.",
        names(&others)
    )
}

/// Programs that start the app as their child and have their own way of not passing the stop
/// signal on (by the name the kernel knows them by), with their fix.
const WRAPPERS: [(&str, &str); 10] = [
    ("npm", "npm runs the app through a shell and does not pass SIGTERM on reliably; run the app itself as the container's command (`node server.js`), not `npm start`."),
    ("yarn", "yarn runs the app as a child and does not pass SIGTERM on reliably; run the app itself as the container's command, not `yarn start`."),
    ("pnpm", "pnpm runs the app through a shell and does not pass SIGTERM on reliably; run the app itself as the container's command, not `pnpm start`."),
    ("uv", "`uv run` starts the app as its child, and older versions do not pass SIGTERM on; run the environment's interpreter directly (`.venv/bin/python app.py`) or upgrade uv."),
    ("poetry", "`poetry run` starts the app as its child and does not pass SIGTERM on; run the environment's interpreter directly (`.venv/bin/python app.py`)."),
    ("supervisord", "supervisord stops its programs with its own stopsignal and waits stopwaitsecs (10 s by default); set both to fit the grace period, or run one process per container."),
    ("su", "su runs the command as its child; switch users without staying in between (`setpriv`, `gosu` or `su-exec` with `exec`, or runAsUser in the pod's securityContext)."),
    ("sudo", "sudo runs the command as its child; switch users without staying in between (`setpriv`, `gosu` or `su-exec` with `exec`, or runAsUser in the pod's securityContext)."),
    ("runuser", "runuser runs the command as its child; switch users without staying in between (`setpriv` or `gosu` with `exec`, or runAsUser in the pod's securityContext)."),
    ("gosu", "gosu replaces itself with the app only when it is the one that runs it: a script that runs `gosu user app` without `exec` keeps the shell in between; use `exec gosu user app`."),
];

/// The first known wrapper of the stop: the main process, else a process alive at the stop
/// (a wrapper a shell started without `exec`). `npm start` and the like set their name with
/// their arguments: the first word counts.
fn wrapper(f: &Facts) -> Option<(&'static str, &'static str)> {
    let first_word = |comm: &str| {
        comm.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let names = std::iter::once(first_word(&f.main_comm))
        .chain(
            f.shell
                .as_ref()
                .and_then(|s| s.script.as_deref())
                .and_then(|s| {
                    let name = std::path::Path::new(s).file_name()?;
                    Some(name.to_string_lossy().into_owned())
                }),
        )
        .chain(f.received.iter().map(|r| first_word(&r.comm)))
        .chain(f.never_received.iter().map(|p| first_word(&p.comm)));
    names
        .into_iter()
        .find_map(|name| WRAPPERS.iter().find(|(w, _)| *w == name).copied())
}

fn explain_verdict(verdict: Verdict, f: &Facts) -> String {
    let sig = f.stop_signal.map(|s| s.to_string()).unwrap_or_default();
    // As a shell's `trap` names it.
    let trap_name = sig.strip_prefix("SIG").unwrap_or(&sig);
    let (main, comm, grace) = (f.main, &f.main_comm, format!("{:.1} s", f.grace));
    match verdict {
        Verdict::Unknown => format!(
            "Not enough was seen to tell why: {}.",
            f.unknown_because.as_deref().unwrap_or("events were missing")
        ),
        Verdict::OomKilled => {
            let (victim, pid) = f
                .oom_victim
                .as_ref()
                .map_or((comm.as_str(), main), |v| (v.comm.as_str(), v.pid));
            if pid == main {
                format!("The kernel OOM killer killed {victim} (pid {pid}), the main process: the container ran out of memory. Raise its memory limit, or find what grew.")
            } else {
                format!("The kernel OOM killer killed {victim} (pid {pid}), a child of {comm} (pid {main}), and the container then ended on its own{}: it ran out of memory. Raise its memory limit, or find what grew.", exit_code(f))
            }
        }
        Verdict::KilledWithoutStopSignal => {
            let (from, pid) = f
                .kill
                .as_ref()
                .map_or(("?", 0), |k| (k.sender.comm.as_str(), k.sender.pid));
            if f.stop_signal_is_kill {
                format!("The container's stop signal is SIGKILL (STOPSIGNAL SIGKILL in the image, or lifecycle.stopSignal), so {from} (pid {pid}) killed it at once and the app had no chance to shut down. Set a stop signal the app handles, such as SIGTERM.")
            } else {
                format!("SIGKILL from {from} (pid {pid}) with no stop signal before it: a force delete or kill -9, the app had no chance to shut down.")
            }
        }
        Verdict::Graceful => format!(
            "{comm} (pid {main}) got {sig} and the container exited on its own in {:.1} s{}.",
            f.duration,
            exit_code(f)
        ),
        Verdict::ChildrenKilledAtExit => {
            let cut = &f.torn_down;
            let (they, them) = if cut.len() == 1 { ("it", "it") } else { ("they", "them") };
            let how = if f.torn_down_mid_shutdown == cut.len() {
                format!("{they} had {sig} but had not finished shutting down")
            } else if f.torn_down_mid_shutdown == 0 {
                format!("{they} never received {sig}")
            } else {
                format!("some had {sig} and had not finished, the others never received it")
            };
            format!(
                "{comm} (pid {main}) exited {:.1} s after {sig}{}, while {} {} still running: a pid namespace ends with its init, so the kernel SIGKILLed {them} ({how}). Make PID 1 wait for its children before it exits (forward {sig}, then `wait` for each child again until it is gone: a trap interrupts `wait`), or `exec` the app so that it is PID 1; with dumb-init, --single-child; tini waits only for its own child.",
                f.duration,
                exit_code(f),
                names(cut),
                were(cut),
            )
        }
        // SIG_IGN survives exec, so the usual fixes (exec form, tini) would not help.
        Verdict::SwallowedByShellPid1 | Verdict::Pid1IgnoresStopSignal if f.ignored_explicitly => {
            format!(
                "PID 1 ({comm}) ignores {sig}: its disposition is SIG_IGN (set by `trap '' {trap_name}`, nohup, or inherited from whoever started it), so the kernel dropped the signal and it was SIGKILLed after {grace}.{} Remove the ignore, or handle {sig}; SIG_IGN is kept across exec, so exec form or an init alone will not help.",
                victims(f)
            )
        }
        Verdict::SwallowedByShellPid1 => match f.shell.as_ref().and_then(|sh| Some((sh.script.as_deref()?, &sh.name))) {
            Some((script, shell)) => format!(
                "PID 1 is the shell script {script} (run by {shell}) with no handler for {sig}, so the kernel dropped the signal and the container was SIGKILLed after {grace}.{} Start the app with `exec` in {script} (`exec \"$@\"`, `exec app`) so that it becomes PID 1, run the script under an init such as tini, or trap and forward {sig}.",
                victims(f)
            ),
            None => format!(
                "PID 1 is a shell ({}) with no handler for {sig}, so the kernel dropped the signal and the container was SIGKILLed after {grace}.{} Use the exec form (CMD [\"app\"]), `exec app` in the entrypoint script, an init such as tini, or trap and forward {sig}.",
                f.shell.as_ref().map_or(comm.as_str(), |sh| sh.name.as_str()),
                victims(f)
            ),
        },
        Verdict::Pid1IgnoresStopSignal if f.reraised => format!("{}{}", reraised(f), victims(f)),
        Verdict::Pid1IgnoresStopSignal => format!(
            "PID 1 ({comm}) has no handler for {sig}; as the init of its pid namespace the kernel dropped the signal, and it was SIGKILLed after {grace}.{} Handle {sig}, or run it under an init such as tini.",
            victims(f)
        ),
        // Not an init (the pod shares one pid namespace): the signal's default action ended it,
        // and its children were left for the runtime to kill.
        Verdict::NotForwarded if f.main_died_of_stop => format!(
            "{comm} (pid {main}) died of {sig} without passing it on (it is not the init of its pid namespace, as when the pod shares one), so {} never received it and {} SIGKILLed. Use `exec` so that the app itself gets {sig}, or trap it and forward it to the children, then wait.",
            names(&f.never_received_killed),
            were(&f.never_received_killed)
        ),
        Verdict::NotForwarded => format!(
            "{comm} (pid {main}) got {sig} but did not pass it on: {} never received it and {} SIGKILLed. Forward it to the children (trap, `kill -TERM` them, then wait), or run under an init that forwards signals, such as tini or dumb-init.",
            names(&f.never_received_killed),
            were(&f.never_received_killed),
        ),
        // Nothing even began to stop: the stop signal is not one this program stops on.
        Verdict::SlowShutdown
            if !f.exit_before_kill
                && f.ignored_and_killed.is_empty()
                && f.stop_signal.is_some_and(|s| s != Signal::TERM && s != Signal::INT) =>
        {
            format!(
                "{sig} is this container's stop signal and {comm} (pid {main}) took it, but no process exited in the {grace} before SIGKILL: {comm} does not stop on {sig} (a JVM prints a thread dump on SIGQUIT, many servers reload on SIGHUP or reopen logs on SIGUSR1). Set a stop signal it stops on, usually SIGTERM (STOPSIGNAL in the image, or lifecycle.stopSignal); a longer grace period will not help."
            )
        }
        // Decided on the record, where the hook's run is known (pre_stop_took_the_grace below);
        // the tracker alone words it as the slow shutdown it looks like. Unkillable is only an
        // interim record's, worded by `unkillable`.
        Verdict::SlowShutdown | Verdict::PreStopTookTheGrace | Verdict::Unkillable => {
            let ignoring = &f.ignored_and_killed;
            if ignoring.is_empty() {
                format!("Every process got {sig}, but the container was still running when the runtime sent SIGKILL after {grace}: shutdown took longer than the grace period. Make shutdown faster, or give it a longer grace period (terminationGracePeriodSeconds).")
            } else {
                // The kernel dropped it there: no grace period would have been long enough.
                format!(
                    "Every process got {sig}, but the kernel dropped it at {}: {} set to ignore it (SIG_IGN, from `trap '' {trap_name}`, nohup, or inherited from the process that started {}), so the container was still running when the runtime sent SIGKILL after {grace}. Remove the ignore or handle {sig} there; a longer grace period will not help.",
                    names(ignoring),
                    if ignoring.len() == 1 { "it is" } else { "they are" },
                    if ignoring.len() == 1 { "it" } else { "them" },
                )
            }
        }
    }
}

/// " (exit code 143: 128 + 15, it ended on SIGTERM, a clean stop, not an error)" for a clean
/// stop with a code Kubernetes shows as an error.
fn exit_code(f: &Facts) -> String {
    match f.exit_code {
        Some(code) if (129..=128 + 64).contains(&code) => format!(
            " (exit code {code}: 128 + {}, it ended on {}, a clean stop, not an error)",
            code - 128,
            Signal(code - 128)
        ),
        Some(code) if code != 0 => format!(" (exit code {code})"),
        _ => String::new(),
    }
}

/// A handler that re-raised the stop signal at an init, where the kernel drops it.
fn reraised(f: &Facts) -> String {
    let sig = f.stop_signal.map(|s| s.to_string()).unwrap_or_default();
    // Node.js's own handler for an app with no listener: it resets the terminal and re-raises.
    let fix = if f.main_comm == "node" || f.main_comm.starts_with("node ") {
        format!("Node.js does this itself when the app has no {sig} listener: add process.on('{sig}', …) that closes the server and calls process.exit(), or run it under an init such as tini (docker run --init)")
    } else {
        format!(
            "Exit instead of re-raising (exit(128 + {}), process.exit(), sys.exit()), or run it under an init such as tini",
            f.stop_signal.map_or(15, |s| s.0)
        )
    };
    format!(
        "{comm} (pid {main}) handled {sig}, then re-raised it with the default action to end itself, but the kernel never lets a pid-namespace init die of a signal it does not handle: the signal was dropped and {comm} kept running until SIGKILL after {grace:.1} s. {fix}; a longer grace period will not help.",
        comm = f.main_comm,
        main = f.main,
        grace = f.grace,
    )
}

/// " sleep (pid 11) never received it." for a dropped stop signal, when anyone was left out.
fn victims(f: &Facts) -> String {
    if f.never_received.is_empty() {
        String::new()
    } else {
        format!(" {} never received it.", names(&f.never_received))
    }
}

/// What a preStop hook took of the grace before a SIGKILL.
pub struct HookShare<'a> {
    /// The hook as people wrote it ("exec: sleep 30", "http").
    pub hook: &'a str,
    /// Seconds it ran.
    pub used: f64,
    pub grace: f64,
    pub signal: Signal,
    /// Seconds the app had between its stop signal and SIGKILL.
    pub left: f64,
}

/// When a preStop hook took (nearly) the whole grace before a SIGKILL; `verdict`: it is the
/// record's verdict (`pre_stop_took_the_grace`), not a note beside another.
pub fn pre_stop_took_the_grace(h: &HookShare<'_>, verdict: bool) -> String {
    let (hook, used, grace, signal, left) = (h.hook, h.used, h.grace, h.signal, h.left);
    let got = if left < 0.5 {
        format!("the app got {signal} and SIGKILL together")
    } else {
        format!("the app got {signal} only {left:.1} s before SIGKILL")
    };
    let said = format!(
        "The preStop hook ({hook}) took {used:.1} s of the {grace:.0} s grace period, so {got}."
    );
    if verdict {
        format!(
            "{said} The app was not too slow: it had {left:.1} s, and the kubelet gives it at least 2 s whatever the hook took. \
             terminationGracePeriodSeconds must cover the hook, the drain and a margin (a preStop `sleep` of N s needs a grace of at least N + the drain time)."
        )
    } else {
        format!("{said} Make the hook return sooner or raise terminationGracePeriodSeconds.")
    }
}

/// What a running container's PID 1 would do with its stop signal, as the audit finds it.
pub enum Pid1Risk {
    Receives,
    /// The signal is set to SIG_IGN.
    Ignores,
    /// A shell, with no handler.
    Shell(String),
    /// Another program, with no handler.
    NoHandler,
}

/// The audit's sentence on a running container's PID 1 (`comm`) and its stop signal.
pub fn pid1_risk(comm: &str, sig: Signal, risk: Pid1Risk) -> String {
    match risk {
        Pid1Risk::Receives => format!("PID 1 ({comm}) will receive {sig}."),
        Pid1Risk::Ignores => format!("PID 1 ({comm}) ignores {sig}: a stop will wait out the whole grace period and end in SIGKILL."),
        Pid1Risk::Shell(shell) => format!("PID 1 is a shell ({shell}) with no handler for {sig}: the kernel will drop it and the container will be SIGKILLed after the grace period. Use `exec` or trap and forward {sig}."),
        Pid1Risk::NoHandler => format!("PID 1 ({comm}) has no handler for {sig}: as a pid-namespace init the kernel will drop it and the container will be SIGKILLed after the grace period."),
    }
}

/// The interim record of processes that outlived their SIGKILL by `since_kill` seconds.
pub(super) fn unkillable(stuck: &[NamedProcess], since_kill: f64) -> String {
    format!(
        "The runtime sent SIGKILL {since_kill:.0} s ago and {} {} not exited: the kernel holds {} in an uninterruptible wait (a hung NFS or FUSE mount, a stuck storage or device driver), where no signal reaches. The pod stays Terminating until what {} waits for answers; the record lists each process's state and the kernel function it waits in (wchan). Fix or force-unmount what it waits on; a node reboot clears it. The final record follows if it ever ends.",
        names(stuck),
        if stuck.len() == 1 { "has" } else { "have" },
        if stuck.len() == 1 { "it" } else { "them" },
        if stuck.len() == 1 { "it" } else { "they" },
    )
}

/// What the stop did to the container's connections, when it cut, reset or refused any: " The
/// SIGKILL cut 37 open connections. 212 new connections were refused after its listener closed."
pub(super) fn connections(c: Option<&super::Connections>) -> String {
    let Some(c) = c else {
        return String::new();
    };
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            one.to_string()
        } else {
            format!("{n} {many}")
        }
    };
    let mut said = String::new();
    if let Some(cut) = c.cut().filter(|n| *n > 0) {
        said += &format!(
            " The SIGKILL cut {}.",
            plural(cut, "one open connection", "open connections")
        );
    }
    if c.reset > 0 {
        said += &format!(
            " {} reset after the stop signal.",
            plural(c.reset, "One connection was", "connections were")
        );
    }
    if let Some(refused) = c.refused.filter(|n| *n > 0) {
        said += &format!(
            " {} refused after the container closed its listener.",
            plural(refused, "One new connection was", "new connections were")
        );
    }
    said
}
