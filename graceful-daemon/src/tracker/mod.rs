//! The termination state machine: pure, no I/O. Fed with kernel events (and facts the
//! enrichment read from /proc), it keeps the processes of every cgroup and turns each stop of a
//! container into one [`Termination`] with an outcome, a verdict and an explanation.
//!
//! `termination`: what a stop becomes; `active`: a stop under way; `facts`, `verdict`,
//! `explanation`, `conclude`: what it left, docs/design.md's rules, the words, the record; this
//! module: the state (processes, cgroups, terminations under way) and how events change it.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::{
    events::{CgroupId, DeliverEvent, Event, ExitStatus, Handler, Mono, SignalEvent},
    signals::Signal,
};

mod active;
mod conclude;
mod connections;
pub mod explanation;
mod facts;
mod housekeeping;
mod stop;
mod termination;
mod verdict;
mod visits;

use active::Active;
use conclude::conclude;
pub use connections::Connections;
pub use termination::*;

#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// The cgroup2 root: processes there belong to no container.
    pub root_cgroup: CgroupId,
    /// A SIGKILL without a seen stop signal this soon after the tracker started, to a container
    /// that was already running, may follow a stop signal sent before: the record is `unknown`.
    /// The container's grace period plus [`GRACE_SLACK_NS`] where it is known.
    pub startup_window_ns: u64,
    /// The OOM killer's victims are seen (`oom:mark_victim` attached). Without it, a SIGKILL
    /// the kernel itself sends may be the OOM killer's: such a record is `unknown`.
    pub oom_visible: bool,
    /// Containers' TCP connections are counted (`sock:inet_sock_set_state` attached).
    pub connections_visible: bool,
    /// Connection attempts refused after a listener closed are counted (`refused_v4`/`_v6`).
    pub refusals_visible: bool,
    /// A termination with neither the container's end nor a SIGKILL for this long is abandoned
    /// without a record (the stop signal was not a stop after all). The container's grace period
    /// plus [`GRACE_SLACK_NS`] where it is known.
    pub abandon_after_ns: u64,
}

/// Slack for a record reserved before a moment but still being written when the reader found
/// the ring empty after it (a BPF program runs for microseconds).
pub const DRAIN_SLACK_NS: u64 = 10_000_000;

/// What a runtime takes beyond the grace period to send its SIGKILL (it polls, then kills).
pub const GRACE_SLACK_NS: u64 = 60 * 1_000_000_000;

/// What stops a container whose own stop signal is not known: SIGTERM (the default), and the
/// SIGQUIT and SIGINT that images name as STOPSIGNAL. SIGHUP, SIGUSR1 and the like reload.
const CONVENTIONAL_STOP_SIGNALS: [Signal; 3] = [Signal::TERM, Signal::QUIT, Signal::INT];

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            root_cgroup: 1,
            // The longest grace Kubernetes users set in practice; a longer one only makes such a
            // record `unknown`, never wrong, once the container's own grace is known.
            startup_window_ns: 600 * 1_000_000_000,
            oom_visible: true,
            connections_visible: true,
            refusals_visible: true,
            abandon_after_ns: 600 * 1_000_000_000,
        }
    }
}

/// A process as /proc shows it, for [`Tracker::seed`] and [`Tracker::fill`].
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub pid: u32,
    pub parent: Option<u32>,
    pub cgroup: CgroupId,
    pub comm: &'a str,
    /// PID 1 of a pid namespace below the host's: the container's main process.
    pub namespace_init: bool,
}

#[derive(Debug, Clone)]
struct Process {
    cgroup: CgroupId,
    comm: String,
    parent: Option<u32>,
    /// Start time from /proc (clock ticks since boot), where read: tells a reused pid apart.
    start: Option<u64>,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeSet<u32>,
    /// The process the runtime started (first exec whose parent is outside the cgroup).
    main: Option<u32>,
    /// Known from the /proc scan at start rather than from events.
    seeded: bool,
    /// The last signal from outside that was not a stop (a reload), with when and who.
    noted: Option<(Signal, Mono, Sender)>,
    /// The OOM killer's victims (pid, name) while the container ran.
    oom_victims: BTreeMap<u32, String>,
    active: Option<Active>,
    /// The last processes the runtime exec'd into the running container from outside (exec
    /// hooks and probes, `kubectl exec`): one of them may be its preStop hook.
    visits: VecDeque<HookRun>,
}

/// Execs into a running container remembered per container: a preStop hook is among the last.
const VISITS_KEPT: usize = 4;

/// `si_code` of a signal the kernel sends on its own behalf (the OOM killer's SIGKILL).
const SI_KERNEL: i32 = 0x80;

/// The termination tracker. Time is whatever the events carry (CLOCK_MONOTONIC ns).
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    started: Mono,
    procs: HashMap<u32, Process>,
    groups: HashMap<CgroupId, Group>,
    dispositions: HashMap<u32, Disposition>,
    /// Containers' own stop signals, where known; forgotten when their termination ends.
    stop_signals: HashMap<CgroupId, Signal>,
    /// Containers' grace periods (ns), where known; forgotten with their processes.
    graces: HashMap<CgroupId, u64>,
    /// The program (`comm`) of containers' preStop exec hooks, where they have one.
    hooks: HashMap<CgroupId, String>,
    /// When events were last lost.
    last_loss: Option<Mono>,
    /// The latest event time seen.
    now: Mono,
    /// Terminations completed outside `on_event` (their last process moved away during a
    /// /proc fill), handed out with the next event's.
    finished: Vec<Termination>,
    /// Processes whose exit was seen, and when: a signal that reaches one later reached a
    /// zombie (a pid namespace's teardown SIGKILLs those too) and must not bring it back.
    exited: HashMap<u32, Mono>,
}

/// How long an exited pid is remembered, and how many: past either, a signal to it is taken
/// as one to a new process under the same pid.
const EXITED_KEPT_NS: u64 = 60 * 1_000_000_000;
const EXITED_KEPT_MAX: usize = 8192;

/// How long after its exit a process may still be listed in its cgroup (do_exit leaves the
/// cgroup well after the exit tracepoint); a pid reused that soon is not to be expected.
const JUST_EXITED_NS: u64 = 5 * 1_000_000_000;

/// Bounds the walk from a process up to its container's main one (parents could loop in a
/// tracker that missed events; trees are shallow).
const MAIN_WALK_MAX: usize = 32;

impl Tracker {
    pub fn new(config: TrackerConfig, now: Mono) -> Tracker {
        Tracker {
            config,
            started: now,
            procs: HashMap::new(),
            groups: HashMap::new(),
            dispositions: HashMap::new(),
            stop_signals: HashMap::new(),
            graces: HashMap::new(),
            hooks: HashMap::new(),
            last_loss: None,
            now,
            finished: Vec::new(),
            exited: HashMap::new(),
        }
    }

    /// A process that existed before the tracker started (from a /proc scan).
    pub fn seed(&mut self, p: Found<'_>) {
        let cgroup = p.cgroup;
        self.fill(p);
        self.groups.entry(cgroup).or_default().seeded = true;
    }

    /// A process of a container found in /proc as its stop begins: the kernel reports a running
    /// container's forks and execs only once it is being stopped. Feed these before the stop.
    pub fn fill(&mut self, p: Found<'_>) {
        // The kernel reports an exit before the process leaves its cgroup: cgroup.procs can
        // still list a process whose exit was just read. It does not come back.
        let just_exited = self
            .exited
            .get(&p.pid)
            .is_some_and(|at| self.now.saturating_sub(*at) < JUST_EXITED_NS);
        if just_exited {
            return;
        }
        self.join(p.pid, p.cgroup, p.comm, p.parent, false);
        if p.namespace_init {
            self.groups.entry(p.cgroup).or_default().main = Some(p.pid);
        }
    }

    /// The cgroup a signal's target belongs to: the kernel's word at the signal, else what the
    /// tracker knows of the process.
    fn target_group(&self, e: &SignalEvent) -> Option<CgroupId> {
        (e.target_cgroup != 0)
            .then_some(e.target_cgroup)
            .or_else(|| self.procs.get(&e.target_pid).map(|p| p.cgroup))
    }

    /// `forked`: the process is new (a fork event), not one that was there unseen.
    fn join(&mut self, pid: u32, cgroup: CgroupId, comm: &str, parent: Option<u32>, forked: bool) {
        if let Some(old) = self.procs.get(&pid).map(|p| p.cgroup) {
            if old != cgroup {
                self.leave(pid, old);
            }
        }
        self.exited.remove(&pid);
        let known = self.procs.get(&pid);
        let parent = parent.or_else(|| known.and_then(|p| p.parent));
        // A fork is a new process: a start time recorded under its pid was another's.
        let start = known.and_then(|p| p.start).filter(|_| !forked);
        self.procs.insert(
            pid,
            Process {
                cgroup,
                comm: comm.into(),
                parent,
                start,
            },
        );
        let group = self.groups.entry(cgroup).or_default();
        let newly = group.members.insert(pid);
        if group.main.is_none_or(|m| !group.members.contains(&m))
            && parent.is_none_or(|p| !group.members.contains(&p))
        {
            group.main = Some(pid);
        }
        // The main process is the root of the container's tree: its parent is outside. A child
        // can become known before its parent (an exec reported before a /proc fill, pids that
        // wrapped around), and with a shared pid namespace no init marks the root: walk up.
        if let Some(mut main) = group.main {
            for _ in 0..MAIN_WALK_MAX {
                match self.procs.get(&main).and_then(|p| p.parent) {
                    Some(up) if up != main && group.members.contains(&up) => main = up,
                    _ => break,
                }
            }
            group.main = Some(main);
        }
        // A process that execs during a stop is named by what it runs now. One first heard of
        // during a stop but not born in it (the kernel reports a running container's forks only
        // once it is stopping) was there at the stop; one whose fork comes after the stop was
        // not, even if /proc showed it before its fork event was read.
        if let Some(a) = group.active.as_mut() {
            if newly {
                a.emptied_at = None;
                a.vacated_at = None;
            }
            if forked {
                a.alive_at_stop.remove(&pid);
            } else if newly {
                a.alive_at_stop.insert(pid, comm.to_string());
            }
            if let Some(name) = a.alive_at_stop.get_mut(&pid) {
                *name = comm.to_string();
            }
            if a.main == pid {
                a.main_comm = comm.to_string();
            }
        }
    }

    /// A process is no longer in `cgroup` without having exited there: it moved, or its pid
    /// is another process's now (its exit was lost). A stop it leaves cannot be judged.
    fn leave(&mut self, pid: u32, cgroup: CgroupId) {
        let Some(g) = self.groups.get_mut(&cgroup) else {
            return;
        };
        g.members.remove(&pid);
        if let Some(a) = g.active.as_mut() {
            if !a.exits.contains_key(&pid) {
                a.unknown_because.get_or_insert_with(|| {
                    format!("pid {pid} left the container while it was stopping (its exit was not seen, or it was moved out)")
                });
            }
            if g.members.is_empty() {
                if let Some(a) = g.active.take() {
                    self.finished.push(conclude(cgroup, a, self.now));
                }
            }
        }
        if g.members.is_empty() && g.active.is_none() {
            self.forget_group(cgroup);
        }
    }

    /// A container with no process left and no stop under way: what was known of it goes.
    fn forget_group(&mut self, cgroup: CgroupId) {
        self.groups.remove(&cgroup);
        self.graces.remove(&cgroup);
        self.stop_signals.remove(&cgroup);
        self.hooks.remove(&cgroup);
    }

    /// Feeds one event; returns the terminations it completed.
    pub fn on_event(&mut self, event: &Event) -> Vec<Termination> {
        self.now = self.now.max(event.ts());
        let mut done = self.handle(event);
        done.append(&mut self.finished);
        done
    }

    fn handle(&mut self, event: &Event) -> Vec<Termination> {
        match event {
            Event::Exec(e) => {
                // A running container hears only of execs that entered it from outside (after
                // its first): the runtime exec'd it, as it does a preStop hook.
                if e.namespace_init {
                    self.init_exec(e.pid, e.cgroup, &e.comm);
                } else {
                    self.entered(e.pid, e.cgroup, &e.comm, e.ts, e.entered);
                }
                Vec::new()
            }
            Event::Fork(e) => {
                self.join(e.child_pid, e.cgroup, &e.comm, Some(e.parent_pid), true);
                Vec::new()
            }
            Event::Attach(e) => {
                // Only moves processes already known: attach reports threads too.
                if let Some(p) = self.procs.get(&e.tid).cloned() {
                    self.join(e.tid, e.cgroup, &p.comm, p.parent, false);
                }
                Vec::new()
            }
            Event::Signal(e) => {
                self.on_signal(e);
                Vec::new()
            }
            Event::Conn(e) => {
                self.on_conn(e);
                Vec::new()
            }
            Event::Refused(e) => {
                self.on_refused(e);
                Vec::new()
            }
            Event::Oom(e) => {
                let known = self.procs.get(&e.pid);
                let cgroup = known.map(|p| p.cgroup).unwrap_or(e.cgroup);
                let comm = known.map(|p| p.comm.clone()).unwrap_or_default();
                if let Some(g) = self.groups.get_mut(&cgroup) {
                    g.oom_victims.insert(e.pid, comm.clone());
                    if let Some(a) = g.active.as_mut() {
                        a.oom_victims.insert(e.pid, comm);
                    }
                }
                Vec::new()
            }
            Event::Exit(e) => {
                self.on_exit(e.pid, e.cgroup, e.status, e.ts, &e.comm);
                Vec::new()
            }
            Event::Lost(e) => {
                self.lost(e.ts, e.count);
                Vec::new()
            }
            Event::Deliver(e) => {
                self.on_deliver(e);
                Vec::new()
            }
            Event::Drained(at) => self.drained(*at),
        }
    }

    /// Events were lost at `ts`: every termination under way can no longer be trusted, and a
    /// SIGKILL soon after may have had its stop signal among them.
    fn lost(&mut self, ts: Mono, count: u64) {
        self.last_loss = Some(ts);
        for g in self.groups.values_mut() {
            if let Some(a) = g.active.as_mut() {
                a.unknown_because.get_or_insert_with(|| {
                    format!("{count} kernel events were lost while this container was stopping")
                });
            }
        }
    }

    /// A process of a stopping container took a stop-relevant signal.
    fn on_deliver(&mut self, e: &DeliverEvent) {
        let cgroup = self.procs.get(&e.pid).map_or(e.cgroup, |p| p.cgroup);
        let Some(a) = self.groups.get_mut(&cgroup).and_then(|g| g.active.as_mut()) else {
            return;
        };
        if e.pid == a.main
            && a.stop.as_ref().is_some_and(|s| s.signal == e.signal)
            && e.handler == Some(Handler::Default)
        {
            a.default_delivered_to_main = true;
        }
    }

    /// Terminations whose every known process has exited, waiting for their cgroup to be
    /// found empty (processes never heard of may still be in it: killed in the teardown).
    pub fn emptied(&self) -> Vec<CgroupId> {
        self.groups
            .iter()
            .filter(|(_, g)| {
                g.members.is_empty()
                    && g.active
                        .as_ref()
                        .is_some_and(|a| a.emptied_at.is_some() && a.vacated_at.is_none())
            })
            .map(|(cgroup, _)| *cgroup)
            .collect()
    }

    /// The cgroup of an emptied termination was found with no process in it at `at`.
    pub fn vacated(&mut self, cgroup: CgroupId, at: Mono) {
        if let Some(a) = self.groups.get_mut(&cgroup).and_then(|g| g.active.as_mut()) {
            if a.emptied_at.is_some() {
                a.vacated_at.get_or_insert(at);
            }
        }
    }

    /// The ring buffer was empty at `at`: terminations whose cgroup was found empty before
    /// then have heard all there was to hear, and end (at their last exit).
    fn drained(&mut self, at: Mono) -> Vec<Termination> {
        let due: Vec<CgroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.members.is_empty()
                    && g.active.as_ref().is_some_and(|a| {
                        a.vacated_at
                            .is_some_and(|v| v.saturating_add(DRAIN_SLACK_NS) <= at)
                    })
            })
            .map(|(cgroup, _)| *cgroup)
            .collect();
        let mut done = Vec::new();
        for cgroup in due {
            if let Some(a) = self.groups.get_mut(&cgroup).and_then(|g| g.active.take()) {
                let ended = a.emptied_at.unwrap_or(at);
                done.push(conclude(cgroup, a, ended));
            }
            self.stop_signals.remove(&cgroup);
            self.forget_group(cgroup);
        }
        done
    }

    /// A process vanished without an exit event (found gone in /proc): its exit was lost.
    pub fn forget(&mut self, pid: u32, now: Mono) -> Vec<Termination> {
        let Some(p) = self.procs.get(&pid).cloned() else {
            return Vec::new();
        };
        if let Some(a) = self
            .groups
            .get_mut(&p.cgroup)
            .and_then(|g| g.active.as_mut())
        {
            a.unknown_because
                .get_or_insert_with(|| format!("the exit of {} (pid {pid}) was not seen", p.comm));
        }
        let status = ExitStatus {
            code: None,
            signal: None,
        };
        self.on_exit(pid, p.cgroup, status, now, &p.comm);
        std::mem::take(&mut self.finished)
    }
}

#[cfg(test)]
mod tests;
