//! How signals open and shape a termination, and how exits end it.
use std::collections::{BTreeMap, HashMap};

use super::{
    Active, CgroupId, ExitStatus, Group, Kill, Mono, Process, Received, Sender, SignalEvent, Stop,
    StopSource, Tracker, CONVENTIONAL_STOP_SIGNALS, EXITED_KEPT_MAX, EXITED_KEPT_NS, MAIN_WALK_MAX,
    SI_KERNEL,
};
use crate::{events::Handler, signals::Signal};

/// `sender` is the container's preStop exec hook (`program`), still running, or one of its
/// descendants: the runtime exec'd it from outside, and what it signals is the stop.
fn from_hook(
    procs: &HashMap<u32, Process>,
    group: &Group,
    program: Option<&String>,
    sender: u32,
) -> bool {
    let Some(program) = program else {
        return false;
    };
    let hooks: Vec<u32> = group
        .visits
        .iter()
        .filter(|v| v.ended.is_none() && v.comm == *program)
        .map(|v| v.pid)
        .collect();
    let mut pid = Some(sender);
    for _ in 0..MAIN_WALK_MAX {
        match pid {
            Some(p) if hooks.contains(&p) => return true,
            Some(p) => pid = procs.get(&p).and_then(|p| p.parent),
            None => return false,
        }
    }
    false
}

impl Tracker {
    pub(super) fn on_signal(&mut self, e: &SignalEvent) {
        // A signal can overtake the exec that made its target known: `comm` changes early in
        // exec, `sched_process_exec` fires at its end. The kernel's task map knows the cgroup.
        // A target the tracker placed elsewhere moved, or is another process under a reused pid.
        let known = self.procs.get(&e.target_pid);
        let placed = known.map(|p| p.cgroup);
        // A running container's execs are not reported: the name the tracker knows may be the
        // runtime's stage (`runc:[2:INIT]`) that exec'd the program the kernel names here.
        let renamed = known.is_some_and(|p| !e.target_comm.is_empty() && p.comm != e.target_comm);
        let dead = self
            .exited
            .get(&e.target_pid)
            .is_some_and(|at| e.ts >= *at && e.ts - at < EXITED_KEPT_NS);
        if placed.is_none() && dead {
            return;
        }
        if (placed != Some(e.target_cgroup) || renamed)
            && e.target_cgroup != 0
            && e.target_cgroup != self.config.root_cgroup
        {
            self.join(e.target_pid, e.target_cgroup, &e.target_comm, None, false);
        }
        let Some(cgroup) = self.target_group(e) else {
            return;
        };
        let outside = e.sender_cgroup != cgroup;
        let startup_window = self.started + self.grace_or(cgroup, self.config.startup_window_ns);
        let comm_of = |procs: &HashMap<u32, Process>, pid: u32| {
            procs.get(&pid).map(|p| p.comm.clone()).unwrap_or_default()
        };
        let sender = Sender {
            pid: e.sender_pid,
            comm: e.sender_comm.clone(),
        };
        let own_stop_signal = self.stop_signals.get(&cgroup).copied();
        let hook_window = self.grace_or(cgroup, self.config.abandon_after_ns);
        let established = self
            .groups
            .get(&cgroup)
            .and_then(|g| self.established_at(g, e));
        let Some(group) = self.groups.get_mut(&cgroup) else {
            return;
        };
        if !group.members.contains(&e.target_pid) {
            return;
        }
        // A signal from inside that has not ended the container yet, then the runtime's: the
        // container did not stop of the first, the runtime's stop is the one to judge.
        let overtaken = group.active.as_ref().is_some_and(|a| {
            outside
                && a.stop
                    .as_ref()
                    .is_some_and(|s| s.source == StopSource::Inside)
                && !a.exits.contains_key(&a.main)
        });
        if overtaken {
            group.active = None;
        }
        if group.active.is_none() {
            // A process the runtime exec'd in (a hook, an exec probe) killed when it outlived
            // its timeout: the runtime ends its own exec, not the container.
            if group
                .visits
                .iter()
                .any(|v| v.pid == e.target_pid && v.ended.is_none())
            {
                return;
            }
            // From inside, only a signal to the main process may be a stop: the preStop hook's,
            // or anyone's that then ends the container.
            let source = if outside {
                StopSource::Runtime
            } else if group.main != Some(e.target_pid) || e.signal == Signal::KILL {
                return;
            } else if from_hook(&self.procs, group, self.hooks.get(&cgroup), e.sender_pid) {
                StopSource::PreStop
            } else {
                StopSource::Inside
            };
            let is_kill = e.signal == Signal::KILL;
            // The OOM killer's SIGKILL to a process other than the main one (sent from whoever
            // allocated, maybe outside): the container runs on, no stop begins.
            let oom_of_a_child =
                is_kill && e.code == SI_KERNEL && group.main.is_some_and(|m| m != e.target_pid);
            if oom_of_a_child {
                return;
            }
            // A hook stops the app its own way (`nginx -s quit` sends SIGQUIT whatever the
            // image's STOPSIGNAL): any conventional stop signal from it opens the stop.
            let opens = is_kill
                || own_stop_signal == Some(e.signal)
                || ((own_stop_signal.is_none() || source != StopSource::Runtime)
                    && CONVENTIONAL_STOP_SIGNALS.contains(&e.signal));
            if !opens {
                // A reload (SIGHUP), a log rotation (SIGUSR1): noted, not a stop.
                if source == StopSource::Runtime {
                    group.noted = Some((e.signal, e.ts, sender));
                }
                return;
            }
            let main = group
                .main
                .filter(|m| group.members.contains(m))
                .unwrap_or(e.target_pid);
            let alive_at_stop: BTreeMap<u32, String> = group
                .members
                .iter()
                .map(|&pid| (pid, comm_of(&self.procs, pid)))
                .collect();
            let noted = group
                .noted
                .take()
                .filter(|(_, at, _)| e.ts.saturating_sub(*at) < self.config.abandon_after_ns);
            let loss_before = self
                .last_loss
                .map(|at| e.ts.saturating_sub(at))
                .filter(|ago| *ago < self.config.abandon_after_ns);
            let unknown_because = if let (true, Some(ago)) = (is_kill, loss_before) {
                Some(format!(
                    "kernel events were lost {:.1} s before this SIGKILL: a stop signal may have been among them",
                    ago as f64 / 1e9
                ))
            } else if is_kill && group.seeded && e.ts < startup_window {
                Some(
                    "the daemon started while this container was already running and saw only its SIGKILL: \
                     a stop signal may have come before"
                        .to_string(),
                )
            } else if let (true, Some((signal, at, from))) =
                (is_kill && own_stop_signal.is_none(), &noted)
            {
                Some(format!(
                    "{signal} came from {} (pid {}) {:.1} s before the SIGKILL, and this container's stop signal is not known: \
                     if {signal} is its stop signal (STOPSIGNAL), the SIGKILL ended a stop, not a force delete",
                    from.comm,
                    from.pid,
                    e.ts.saturating_sub(*at) as f64 / 1e9
                ))
            } else if is_kill && e.code == SI_KERNEL && !self.config.oom_visible {
                Some(
                    "the kernel itself sent the SIGKILL (the OOM killer, most likely), and this kernel's \
                     oom:mark_victim tracepoint could not be attached to tell"
                        .to_string(),
                )
            } else {
                None
            };
            let stop = (!is_kill).then(|| Stop {
                signal: e.signal,
                at: e.ts,
                sender: sender.clone(),
                result: e.result,
                source,
            });
            // The preStop exec hook: the last run of its program that the runtime exec'd in
            // within the grace before this stop. Still running, it is the runtime's, not the app's.
            let pre_stop = self.hooks.get(&cgroup).and_then(|program| {
                group
                    .visits
                    .iter()
                    .rev()
                    .find(|v| {
                        v.comm == *program && v.started <= e.ts && e.ts - v.started <= hook_window
                    })
                    .cloned()
            });
            let mut alive_at_stop = alive_at_stop;
            if let Some(hook) = &pre_stop {
                alive_at_stop.remove(&hook.pid);
            }
            let mut active = Active::new(
                e.ts,
                stop,
                main,
                comm_of(&self.procs, main),
                alive_at_stop,
                &group.oom_victims,
            );
            active.unknown_because = unknown_because;
            active.connections.open_at_stop = established;
            active.connections.refused = established
                .filter(|_| self.config.refusals_visible)
                .map(|_| 0);
            active.pre_stop = pre_stop;
            active.stop_signal_is_kill = own_stop_signal == Some(Signal::KILL);
            group.active = Some(active);
        }
        let Some(a) = group.active.as_mut() else {
            return;
        };
        let stop_signal = a.stop.as_ref().map(|s| s.signal);
        if stop_signal == Some(e.signal) {
            let comm = match e.target_comm.as_str() {
                "" => a
                    .alive_at_stop
                    .get(&e.target_pid)
                    .cloned()
                    .unwrap_or_default(),
                c => c.to_string(),
            };
            a.received.entry(e.target_pid).or_insert_with(|| Received {
                pid: e.target_pid,
                comm,
                result: e.result,
            });
            if e.target_pid == a.main && a.main_disposition.is_none() {
                a.main_disposition = self
                    .dispositions
                    .remove(&e.target_pid)
                    .filter(|d| d.signal == e.signal);
            }
            if e.target_pid == a.main && a.main_at_generation.is_none() {
                a.main_at_generation = Some(e.at_generation);
            }
            // The main process signalling itself with the stop signal it already had, now with
            // the default action: it re-raised it to die of it.
            if e.target_pid == a.main
                && e.sender_pid == a.main
                && a.stop.as_ref().is_some_and(|s| e.ts > s.at)
                && e.at_generation.handler == Some(Handler::Default)
            {
                a.reraised = true;
            }
        }
        // The pid namespace ends with its init: the kernel SIGKILLs what is left, the dying
        // init as the sender, after its exit was reported.
        // The preStop hook is the runtime's process, not the app's: cut with the namespace, it
        // lost nothing of the app's.
        let the_hook = a.pre_stop.as_ref().is_some_and(|h| h.pid == e.target_pid);
        if e.signal == Signal::KILL
            && !outside
            && e.sender_pid == a.main
            && e.target_pid != a.main
            && !the_hook
            && a.exits.contains_key(&a.main)
        {
            a.torn_down.insert(e.target_pid);
        }
        if e.signal == Signal::KILL && outside {
            if a.kill.is_none() {
                a.kill = Some(Kill { at: e.ts, sender });
                a.connections.open_at_kill =
                    established.filter(|_| a.connections.open_at_stop.is_some());
            }
            if e.target_pid == a.main && !a.exits.contains_key(&a.main) {
                a.kill_hit_main = true;
            }
        }
    }

    pub(super) fn on_exit(
        &mut self,
        pid: u32,
        cgroup: CgroupId,
        status: ExitStatus,
        ts: Mono,
        comm: &str,
    ) {
        let known = self.procs.remove(&pid);
        let cgroup = known.as_ref().map(|p| p.cgroup).unwrap_or(cgroup);
        self.dispositions.remove(&pid);
        if self.exited.len() >= EXITED_KEPT_MAX {
            self.exited
                .retain(|_, at| ts.saturating_sub(*at) < EXITED_KEPT_NS);
            if self.exited.len() >= EXITED_KEPT_MAX {
                self.exited.clear();
            }
        }
        self.exited.insert(pid, ts);
        let Some(group) = self.groups.get_mut(&cgroup) else {
            return;
        };
        // Never seen before its exit, during a stop: it was there, unseen, at the stop.
        if let (None, Some(a)) = (&known, group.active.as_mut()) {
            if a.exits.contains_key(&pid) {
                // Two threads that end together may both report the process's end.
                return;
            }
            a.alive_at_stop
                .entry(pid)
                .or_insert_with(|| comm.to_string());
        }
        group.members.remove(&pid);
        if group.active.is_none() {
            if let Some(v) = group
                .visits
                .iter_mut()
                .find(|v| v.pid == pid && v.ended.is_none())
            {
                v.ended = Some(ts);
                v.exit = Some(status);
            }
        }
        // A main process that dies after the OOM killer hit the container, with no stop under
        // way: that is a termination too.
        if group.active.is_none() && group.main == Some(pid) && !group.oom_victims.is_empty() {
            // The name it had while it ran (an exit's comm can be empty or a thread's).
            let comm = known
                .as_ref()
                .map(|p| p.comm.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| comm.to_string());
            let mut alive: BTreeMap<u32, String> =
                group.members.iter().map(|&p| (p, String::new())).collect();
            alive.insert(pid, comm.clone());
            group.active = Some(Active::new(ts, None, pid, comm, alive, &group.oom_victims));
        }
        if let Some(a) = group.active.as_mut() {
            a.exits.insert(pid, status);
            if a.kill.is_none() {
                a.exit_before_kill = true;
            }
            // Ends once the ring buffer is drained past this exit (see `emptied_at`).
            if group.members.is_empty() {
                a.emptied_at = Some(ts);
            }
        }
        // A running container's reported exits are of processes the runtime exec'd in (runc's
        // own stage is often its first reported exec, then its program runs unreported): the
        // last known one ending is not the container's end. The housekeeping forgets a group
        // that stays empty, with what userspace told of it.
    }
}
