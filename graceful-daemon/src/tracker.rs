//! The termination state machine: pure, no I/O. Fed with kernel events (and facts the
//! enrichment read from /proc), it keeps the processes of every cgroup and turns each stop of a
//! container into one [`Termination`] with an outcome, a verdict and an explanation.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::{
    events::{CgroupId, Event, ExitStatus, Mono, SignalEvent, SignalResult},
    procfs::is_shell,
    signals::Signal,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Exited,
    KilledAfterGrace,
    Killed,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Graceful,
    SwallowedByShellPid1,
    Pid1IgnoresStopSignal,
    NotForwarded,
    SlowShutdown,
    KilledWithoutStopSignal,
    OomKilled,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Graceful => "graceful",
            Verdict::SwallowedByShellPid1 => "swallowed_by_shell_pid1",
            Verdict::Pid1IgnoresStopSignal => "pid1_ignores_stop_signal",
            Verdict::NotForwarded => "not_forwarded",
            Verdict::SlowShutdown => "slow_shutdown",
            Verdict::KilledWithoutStopSignal => "killed_without_stop_signal",
            Verdict::OomKilled => "oom_killed",
            Verdict::Unknown => "unknown",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::KilledAfterGrace => "killed_after_grace",
            Outcome::Killed => "killed",
            Outcome::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub signal: Signal,
    pub at: Mono,
    pub sender: Sender,
    pub result: SignalResult,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kill {
    pub at: Mono,
    pub sender: Sender,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Init {
    pub pid: u32,
    pub comm: String,
    pub shell: bool,
    pub handles_stop_signal: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub pid: u32,
    pub comm: String,
    pub result: SignalResult,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
}

/// One stopped container, as the tracker saw it end.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub cgroup: CgroupId,
    pub stop: Option<Stop>,
    pub init: Init,
    pub received: Vec<Received>,
    pub never_received: Vec<Proc>,
    pub kill: Option<Kill>,
    pub outcome: Outcome,
    pub exit: Option<ExitStatus>,
    pub started: Mono,
    pub ended: Mono,
    pub verdict: Verdict,
    pub explanation: String,
}

impl Termination {
    pub fn duration_seconds(&self) -> f64 {
        self.ended.saturating_sub(self.started) as f64 / 1e9
    }
}

/// What the enrichment read from /proc about a process when a stop signal reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    pub signal: Signal,
    /// A handler is installed for the signal.
    pub handles: bool,
    /// The kernel drops the signal (SIG_IGN, or a pid-namespace init without a handler).
    pub drops: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// The cgroup2 root: processes there belong to no container.
    pub root_cgroup: CgroupId,
    /// A SIGKILL without a seen stop signal this soon after the tracker started, to a container
    /// that was already running, may follow a stop signal sent before: the record is `unknown`.
    pub startup_window_ns: u64,
    /// The OOM killer's victims are seen (`oom:mark_victim` attached). Without it, a SIGKILL
    /// the kernel itself sends may be the OOM killer's: such a record is `unknown`.
    pub oom_visible: bool,
    /// A termination with neither the container's end nor a SIGKILL for this long is abandoned
    /// without a record (the stop signal was not a stop after all).
    pub abandon_after_ns: u64,
}

/// What stops a container whose own stop signal is not known: SIGTERM (the default), and the
/// SIGQUIT and SIGINT that images name as STOPSIGNAL. SIGHUP, SIGUSR1 and the like reload.
const CONVENTIONAL_STOP_SIGNALS: [Signal; 3] = [Signal::TERM, Signal::QUIT, Signal::INT];

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            root_cgroup: 1,
            startup_window_ns: 120 * 1_000_000_000,
            oom_visible: true,
            abandon_after_ns: 600 * 1_000_000_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Process {
    cgroup: CgroupId,
    comm: String,
    parent: Option<u32>,
}

#[derive(Debug)]
struct Active {
    started: Mono,
    stop: Option<Stop>,
    main: u32,
    main_comm: String,
    main_disposition: Option<Disposition>,
    alive_at_stop: BTreeMap<u32, String>,
    received: BTreeMap<u32, Received>,
    kill: Option<Kill>,
    /// The SIGKILL from outside reached the main process while it was alive.
    kill_hit_main: bool,
    exits: BTreeMap<u32, ExitStatus>,
    oom_victims: BTreeSet<u32>,
    unknown_because: Option<String>,
}

impl Active {
    fn new(
        started: Mono,
        stop: Option<Stop>,
        main: u32,
        main_comm: String,
        alive_at_stop: BTreeMap<u32, String>,
        oom_victims: &BTreeSet<u32>,
    ) -> Active {
        Active {
            started,
            stop,
            main,
            main_comm,
            main_disposition: None,
            alive_at_stop,
            received: BTreeMap::new(),
            kill: None,
            kill_hit_main: false,
            exits: BTreeMap::new(),
            oom_victims: oom_victims.clone(),
            unknown_because: None,
        }
    }
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
    oom_victims: BTreeSet<u32>,
    active: Option<Active>,
}

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
    /// When events were last lost.
    last_loss: Option<Mono>,
}

impl Tracker {
    pub fn new(config: TrackerConfig, now: Mono) -> Tracker {
        Tracker {
            config,
            started: now,
            procs: HashMap::new(),
            groups: HashMap::new(),
            dispositions: HashMap::new(),
            stop_signals: HashMap::new(),
            last_loss: None,
        }
    }

    /// A process that existed before the tracker started (from a /proc scan).
    pub fn seed(
        &mut self,
        pid: u32,
        parent: Option<u32>,
        cgroup: CgroupId,
        comm: &str,
        namespace_init: bool,
    ) {
        self.fill(pid, parent, cgroup, comm, namespace_init);
        self.groups.entry(cgroup).or_default().seeded = true;
    }

    /// A process of a container found in /proc as its stop begins: the kernel reports a running
    /// container's forks and execs only once it is being stopped. Feed these before the stop.
    pub fn fill(
        &mut self,
        pid: u32,
        parent: Option<u32>,
        cgroup: CgroupId,
        comm: &str,
        namespace_init: bool,
    ) {
        self.join(pid, cgroup, comm, parent, false);
        if namespace_init {
            self.groups.entry(cgroup).or_default().main = Some(pid);
        }
    }

    /// The container's own stop signal (Kubernetes' stopSignal, the image's STOPSIGNAL): only
    /// it begins a termination, besides SIGKILL and the OOM killer.
    pub fn set_stop_signal(&mut self, cgroup: CgroupId, signal: Signal) {
        self.stop_signals.insert(cgroup, signal);
    }

    /// Terminations that saw neither the container's end nor a SIGKILL for longer than
    /// `abandon_after_ns`: the stop signal did not stop it. Dropped without a record; returns
    /// their cgroups.
    pub fn abandon(&mut self, now: Mono) -> Vec<CgroupId> {
        let limit = self.config.abandon_after_ns;
        let mut dropped = Vec::new();
        for (cgroup, g) in self.groups.iter_mut() {
            if g.active
                .as_ref()
                .is_some_and(|a| a.kill.is_none() && now.saturating_sub(a.started) > limit)
            {
                g.active = None;
                dropped.push(*cgroup);
            }
        }
        for cgroup in &dropped {
            self.stop_signals.remove(cgroup);
        }
        dropped
    }

    /// Forgets processes of running containers that `alive` says are gone: the kernel reports a
    /// running container's exits only once it is stopping. Groups left empty go too.
    pub fn prune(&mut self, alive: impl Fn(u32) -> bool) {
        let mut gone = Vec::new();
        for g in self.groups.values_mut().filter(|g| g.active.is_none()) {
            g.members.retain(|pid| {
                let keep = alive(*pid);
                if !keep {
                    gone.push(*pid);
                }
                keep
            });
        }
        for pid in gone {
            self.procs.remove(&pid);
            self.dispositions.remove(&pid);
        }
        self.groups
            .retain(|_, g| g.active.is_some() || !g.members.is_empty());
    }

    /// How many processes and groups the tracker holds.
    pub fn size(&self) -> (usize, usize) {
        (self.procs.len(), self.groups.len())
    }

    /// The process is known (alive, as far as the tracker has heard).
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Before a stop: the processes of `cgroup` are exactly `present` (from its cgroup.procs);
    /// the ones the tracker knew that are gone ended unreported while the container ran.
    pub fn only_present(&mut self, cgroup: CgroupId, present: &[u32]) {
        let Some(g) = self.groups.get_mut(&cgroup) else {
            return;
        };
        if g.active.is_some() {
            return;
        }
        let gone: Vec<u32> = g
            .members
            .iter()
            .copied()
            .filter(|pid| !present.contains(pid))
            .collect();
        for pid in gone {
            g.members.remove(&pid);
            self.procs.remove(&pid);
            self.dispositions.remove(&pid);
        }
    }

    /// A termination of this cgroup is under way.
    pub fn stopping(&self, cgroup: CgroupId) -> bool {
        self.groups.get(&cgroup).is_some_and(|g| g.active.is_some())
    }

    /// The processes of a cgroup the tracker knows.
    pub fn members(&self, cgroup: CgroupId) -> Vec<u32> {
        self.groups
            .get(&cgroup)
            .map(|g| g.members.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Processes a termination under way still waits for.
    pub fn awaited_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups
            .values()
            .filter(|g| g.active.is_some())
            .flat_map(|g| g.members.iter().copied())
    }

    /// What /proc said about a process just as a stop signal reached it.
    pub fn observe(&mut self, pid: u32, disposition: Disposition) {
        self.dispositions.insert(pid, disposition);
    }

    /// The cgroup a signal's target belongs to.
    fn target_group(&self, e: &SignalEvent) -> Option<CgroupId> {
        self.procs
            .get(&e.target_pid)
            .map(|p| p.cgroup)
            .or((e.target_cgroup != 0).then_some(e.target_cgroup))
    }

    /// `forked`: the process is new (a fork event), not one that was there unseen.
    fn join(&mut self, pid: u32, cgroup: CgroupId, comm: &str, parent: Option<u32>, forked: bool) {
        if let Some(old) = self.procs.get(&pid).map(|p| p.cgroup) {
            if old != cgroup {
                if let Some(g) = self.groups.get_mut(&old) {
                    g.members.remove(&pid);
                }
            }
        }
        let parent = parent.or_else(|| self.procs.get(&pid).and_then(|p| p.parent));
        self.procs.insert(
            pid,
            Process {
                cgroup,
                comm: comm.into(),
                parent,
            },
        );
        let group = self.groups.entry(cgroup).or_default();
        let newly = group.members.insert(pid);
        if group.main.is_none_or(|m| !group.members.contains(&m))
            && parent.is_none_or(|p| !group.members.contains(&p))
        {
            group.main = Some(pid);
        }
        // A process that execs during a stop is named by what it runs now. One first heard of
        // during a stop but not born in it (the kernel reports a running container's forks only
        // once it is stopping) was there at the stop; one whose fork comes after the stop was
        // not, even if /proc showed it before its fork event was read.
        if let Some(a) = group.active.as_mut() {
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

    /// Feeds one event; returns the terminations it completed.
    pub fn on_event(&mut self, event: &Event) -> Vec<Termination> {
        match event {
            Event::Exec(e) => {
                self.join(e.pid, e.cgroup, &e.comm, None, false);
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
            Event::Oom(e) => {
                let cgroup = self.procs.get(&e.pid).map(|p| p.cgroup).unwrap_or(e.cgroup);
                if let Some(g) = self.groups.get_mut(&cgroup) {
                    g.oom_victims.insert(e.pid);
                    if let Some(a) = g.active.as_mut() {
                        a.oom_victims.insert(e.pid);
                    }
                }
                Vec::new()
            }
            Event::Exit(e) => self.on_exit(e.pid, e.cgroup, e.status, e.ts, &e.comm),
            Event::Lost(e) => {
                self.lost(e.ts, e.count);
                Vec::new()
            }
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
        self.on_exit(pid, p.cgroup, status, now, &p.comm)
    }

    fn on_signal(&mut self, e: &SignalEvent) {
        // A signal can overtake the exec that made its target known: `comm` changes early in
        // exec, `sched_process_exec` fires at its end. The kernel's task map knows the cgroup.
        if !self.procs.contains_key(&e.target_pid)
            && e.target_cgroup != 0
            && e.target_cgroup != self.config.root_cgroup
        {
            self.join(e.target_pid, e.target_cgroup, &e.target_comm, None, false);
        }
        let Some(cgroup) = self.target_group(e) else {
            return;
        };
        let outside = e.sender_cgroup != cgroup;
        let startup_window = self.started + self.config.startup_window_ns;
        let comm_of = |procs: &HashMap<u32, Process>, pid: u32| {
            procs.get(&pid).map(|p| p.comm.clone()).unwrap_or_default()
        };
        let sender = Sender {
            pid: e.sender_pid,
            comm: e.sender_comm.clone(),
        };
        let own_stop_signal = self.stop_signals.get(&cgroup).copied();
        let Some(group) = self.groups.get_mut(&cgroup) else {
            return;
        };
        if !group.members.contains(&e.target_pid) {
            return;
        }
        if group.active.is_none() {
            if !outside {
                return;
            }
            let is_kill = e.signal == Signal::KILL;
            let opens = is_kill
                || match own_stop_signal {
                    Some(known) => e.signal == known,
                    None => CONVENTIONAL_STOP_SIGNALS.contains(&e.signal),
                };
            if !opens {
                // A reload (SIGHUP), a log rotation (SIGUSR1): noted, not a stop.
                group.noted = Some((e.signal, e.ts, sender));
                return;
            }
            let main = group
                .main
                .filter(|m| group.members.contains(m))
                .unwrap_or(e.target_pid);
            let alive_at_stop = group
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
            });
            let mut active = Active::new(
                e.ts,
                stop,
                main,
                comm_of(&self.procs, main),
                alive_at_stop,
                &group.oom_victims,
            );
            active.unknown_because = unknown_because;
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
        }
        if e.signal == Signal::KILL && outside {
            if a.kill.is_none() {
                a.kill = Some(Kill { at: e.ts, sender });
            }
            if e.target_pid == a.main && !a.exits.contains_key(&a.main) {
                a.kill_hit_main = true;
            }
        }
    }

    fn on_exit(
        &mut self,
        pid: u32,
        cgroup: CgroupId,
        status: ExitStatus,
        ts: Mono,
        comm: &str,
    ) -> Vec<Termination> {
        let known = self.procs.remove(&pid);
        let cgroup = known.as_ref().map(|p| p.cgroup).unwrap_or(cgroup);
        self.dispositions.remove(&pid);
        let Some(group) = self.groups.get_mut(&cgroup) else {
            return Vec::new();
        };
        // Never seen before its exit, during a stop: it was there, unseen, at the stop.
        if let (None, Some(a)) = (&known, group.active.as_mut()) {
            if a.exits.contains_key(&pid) {
                // Two threads that end together may both report the process's end.
                return Vec::new();
            }
            a.alive_at_stop
                .entry(pid)
                .or_insert_with(|| comm.to_string());
        }
        group.members.remove(&pid);
        // A main process that dies after the OOM killer hit the container, with no stop under
        // way: that is a termination too.
        if group.active.is_none() && group.main == Some(pid) && !group.oom_victims.is_empty() {
            let mut alive: BTreeMap<u32, String> =
                group.members.iter().map(|&p| (p, String::new())).collect();
            alive.insert(pid, comm.to_string());
            group.active = Some(Active::new(
                ts,
                None,
                pid,
                comm.to_string(),
                alive,
                &group.oom_victims,
            ));
        }
        let mut done = Vec::new();
        if let Some(a) = group.active.as_mut() {
            a.exits.insert(pid, status);
            if group.members.is_empty() {
                if let Some(a) = group.active.take() {
                    done.push(conclude(cgroup, a, ts));
                    self.stop_signals.remove(&cgroup);
                }
            }
        }
        if group.members.is_empty() && group.active.is_none() {
            self.groups.remove(&cgroup);
        }
        done
    }
}

/// "was" or "were", as many as `procs` are.
fn were(procs: &[Proc]) -> &'static str {
    if procs.len() == 1 {
        "was"
    } else {
        "were"
    }
}

fn names(procs: &[Proc]) -> String {
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

/// Outcome, verdict and explanation, by the rules of DESIGN.md (first match wins).
fn conclude(cgroup: CgroupId, a: Active, ended: Mono) -> Termination {
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
    let never_received: Vec<Proc> = a
        .alive_at_stop
        .iter()
        .filter(|(pid, _)| a.stop.is_some() && !a.received.contains_key(pid))
        .map(|(&pid, comm)| Proc {
            pid,
            comm: comm.clone(),
        })
        .collect();
    let never_received_killed: Vec<Proc> = never_received
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
            let ignoring: Vec<Proc> = received
                .iter()
                .filter(|r| r.pid != a.main && r.result == SignalResult::Ignored)
                .map(|r| Proc {
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
        never_received,
        kill: a.kill,
        outcome,
        exit: main_exit,
        started: a.started,
        ended,
        verdict,
        explanation,
    }
}

#[cfg(test)]
mod tests;
