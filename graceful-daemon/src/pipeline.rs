//! Drives the tracker from the event stream: keeps cgroup paths known while cgroups exist,
//! reads /proc dispositions when a stop signal arrives, seeds the tracker from /proc at start,
//! sweeps for processes whose exit was lost, and turns terminations into records.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;

use crate::{
    cgroup::Cgroup2,
    clock,
    events::{CgroupId, Event, Mono},
    identity,
    probes::{ProbeError, ProbeOptions, Probes},
    procfs::{in_sigwait, processes, start_time, wchan, ProcStatus, Program},
    record::TerminationRecord,
    signals::Signal,
    tracker::{Disposition, Found, Tracker, TrackerConfig},
};

/// The kernel side of every traced run, written once: the probes attached, their event stream
/// open, and the pipeline that turns its events into records.
pub struct Session {
    pub probes: Probes,
    pub events: mpsc::Receiver<Event>,
    pub pipeline: Pipeline,
}

impl Session {
    pub fn start(options: &ProbeOptions) -> Result<Session, ProbeError> {
        let mut cgroups = Cgroup2::discover()?;
        let mut probes = Probes::load(options, &mut cgroups)?;
        let events = probes.events()?;
        let pipeline = Pipeline::new(
            cgroups,
            TrackerConfig {
                oom_visible: probes.sees_oom(),
                connections_visible: probes.sees_connections(),
                refusals_visible: probes.sees_refusals(),
                ..TrackerConfig::default()
            },
        );
        Ok(Session {
            probes,
            events,
            pipeline,
        })
    }
}

pub struct Pipeline {
    pub tracker: Tracker,
    pub cgroups: Cgroup2,
    /// Containers whose processes were read from /proc at their first reported signal.
    filled: HashSet<CgroupId>,
    /// Awaited processes a sweep found gone from /proc, and when. A reaped process's exit was
    /// written to the ring buffer before it could be reaped, but may not have been read yet:
    /// it is forgotten (its exit lost) only once the reader found the ring empty after that.
    missing: HashMap<u32, Mono>,
    /// The last prune's look (its time, and the processes of running containers it found gone
    /// from /proc), acted on at the first drain after it.
    unseen: Option<(Mono, Vec<u32>)>,
}

/// A drain says nothing of a record another CPU had reserved before it and was still writing:
/// the reader stops at a record in progress. Deciding an exit was lost waits this much past the
/// look, far beyond a BPF program's run even on a virtual CPU the host has paused for a while.
const LOST_EXIT_SLACK_NS: Mono = 250_000_000;

/// Above this many, the filled set starts afresh (a container is then read again: harmless).
const FILLED_MAX: usize = 4096;

/// What /proc says of a process, as the tracker takes it.
fn found(pid: u32, status: &ProcStatus, cgroup: CgroupId) -> Found<'_> {
    Found {
        pid,
        parent: status.parent(),
        cgroup,
        comm: &status.comm,
        namespace_init: status.is_namespace_init(),
    }
}

/// The process's start time while it is still the process the tracker knows (the start time
/// recorded, or none recorded yet); None once it is gone or its pid is another process's. Start
/// times are read here, in the sweep, not on the path of a stop.
fn still_there(pid: u32, known: Option<u64>) -> Option<u64> {
    let now = start_time(pid)?;
    known.is_none_or(|k| k == now).then_some(now)
}

impl Pipeline {
    pub fn new(mut cgroups: Cgroup2, config: TrackerConfig) -> Pipeline {
        let root = cgroups.root_id();
        let mut tracker = Tracker::new(
            TrackerConfig {
                root_cgroup: root,
                ..config
            },
            clock::monotonic_now(),
        );
        let mut seeds = Vec::new();
        for p in processes() {
            match cgroups.remember(&p.cgroup) {
                Some(id) if id != root => seeds.push((p.pid, p.status, id)),
                _ => {}
            }
        }
        // Inits and parents first, so a container's main process is the one the runtime started.
        seeds.sort_by_key(|(pid, s, _)| (!s.is_namespace_init(), *pid));
        for (pid, status, id) in seeds {
            tracker.seed(found(pid, &status, id));
        }
        Pipeline {
            tracker,
            cgroups,
            filled: HashSet::new(),
            missing: HashMap::new(),
            unseen: None,
        }
    }

    /// The cgroup2 tree it knows, for callers that read the raw event stream themselves.
    pub fn into_cgroups(self) -> Cgroup2 {
        self.cgroups
    }

    /// The kernel reports a running container's processes only once it is being stopped: at
    /// the first signal it reports for a container, the tracker learns who is there from the
    /// cgroup and /proc, before the signal itself.
    /// `target`: the process a signal just reached, alive then. If it is gone from
    /// cgroup.procs already, it died of that signal and its exit is on its way: it stays.
    fn fill(&mut self, cgroup: CgroupId, target: u32) {
        if cgroup == 0 || cgroup == self.cgroups.root_id() || self.tracker.stopping(cgroup) {
            return;
        }
        if self.filled.len() >= FILLED_MAX {
            self.filled.clear();
        }
        if !self.filled.insert(cgroup) {
            return;
        }
        // Inits and parents first, so the main process is the one the runtime started; the
        // processes it knew that are gone ended unreported while the container ran.
        let present = self.cgroup_processes(cgroup);
        let pids: Vec<u32> = present
            .iter()
            .map(|(pid, _)| *pid)
            .chain([target])
            .collect();
        self.tracker.only_present(cgroup, &pids);
        for (pid, status) in present {
            self.tracker.fill(found(pid, &status, cgroup));
        }
    }

    /// Terminations whose known processes are all gone end once their cgroup holds no process
    /// (the kernel reports an exit before the process leaves its cgroup, so all records are
    /// written by then); the processes still in it that the tracker never heard of (children
    /// of an init, killed in the namespace's teardown) join, and their exits are awaited.
    fn look_at_emptied(&mut self) {
        for cgroup in self.tracker.emptied() {
            let dir = self.cgroups.path_of(cgroup).map(|p| self.cgroups.dir(&p));
            let populated = dir
                .and_then(|d| std::fs::read_to_string(d.join("cgroup.events")).ok())
                .is_some_and(|events| events.lines().any(|l| l == "populated 1"));
            if !populated {
                self.tracker.vacated(cgroup, clock::monotonic_now());
                continue;
            }
            for (pid, status) in self.cgroup_processes(cgroup) {
                if !self.tracker.knows(pid) {
                    self.tracker.fill(found(pid, &status, cgroup));
                }
            }
        }
    }

    /// A running container whose only known process was one the runtime exec'd in (runc's
    /// own stage is often its first reported exec): who runs in it is read when that one ends.
    fn refill(&mut self, cgroup: CgroupId) {
        let t = &self.tracker;
        if !t.tracks(cgroup) || t.stopping(cgroup) || !t.members(cgroup).is_empty() {
            return;
        }
        for (pid, status) in self.cgroup_processes(cgroup) {
            if !self.tracker.knows(pid) {
                self.tracker.fill(found(pid, &status, cgroup));
            }
        }
    }

    /// The processes of a cgroup now, from its `cgroup.procs` and /proc, inits then by pid.
    fn cgroup_processes(&mut self, cgroup: CgroupId) -> Vec<(u32, ProcStatus)> {
        let Some(path) = self.cgroups.path_of(cgroup) else {
            return Vec::new();
        };
        let procs = std::fs::read_to_string(self.cgroups.dir(&path).join("cgroup.procs"))
            .unwrap_or_default();
        let mut found: Vec<(u32, ProcStatus)> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter_map(|pid| ProcStatus::read(pid).ok().map(|s| (pid, s)))
            .collect();
        found.sort_by_key(|(pid, s)| (!s.is_namespace_init(), *pid));
        found
    }

    /// Feeds one event; returns the records it completed.
    pub fn handle(&mut self, event: &Event) -> Vec<TerminationRecord> {
        match event {
            // Paths are learnt while the cgroups exist, from a process in them (no tree walk).
            // The first exec reported in a cgroup may be a process gone by now (runc's own
            // re-exec, moved in before it, whose stage ends), and the container's program that
            // follows is not reported: look the cgroup up in the tree while it exists.
            Event::Exec(e) if self.cgroups.learn(e.cgroup, e.pid).is_none() => {
                self.cgroups.path_of(e.cgroup);
            }
            Event::Fork(e) => {
                self.cgroups.learn(e.cgroup, e.child_pid);
            }
            Event::Attach(e) => {
                self.cgroups.learn(e.cgroup, e.tid);
                // Moved in after its exec (the kernel reports such a move when the name it runs
                // is the container's preStop hook's): a visit, named from /proc.
                if !self.tracker.knows(e.tid) {
                    if let Some(comm) = crate::procfs::comm(e.tid as i32) {
                        self.tracker.entered(e.tid, e.cgroup, &comm, e.ts, true);
                    }
                }
            }
            Event::Signal(e)
                if e.signal != Signal::KILL
                    && e.sender_cgroup != e.target_cgroup
                    && e.target_cgroup != 0
                    && e.target_cgroup != self.cgroups.root_id() =>
            {
                // The kernel's disposition at generation comes with the event; /proc adds what
                // it cannot say: whether a blocked signal is waited for (sigwait) or will be
                // dropped once unblocked, SIG_IGN from no handler, and what the process runs.
                // Only for containers: host processes get terminal signals all day.
                // Only while the pid is still the process the signal reached (not reused).
                let same = match self.tracker.start_of(e.target_pid) {
                    Some(known) => start_time(e.target_pid) == Some(known),
                    None => true,
                };
                if let Some(status) = same.then(|| ProcStatus::read(e.target_pid).ok()).flatten() {
                    let sigwait = in_sigwait(e.target_pid);
                    self.tracker.observe(
                        e.target_pid,
                        Disposition {
                            signal: e.signal,
                            handles: status.handles(e.signal),
                            drops: status.drops(e.signal) && !sigwait,
                            ignores: status.ignores(e.signal),
                            waits: status.blocks(e.signal) || sigwait,
                            namespace_init: status.is_namespace_init(),
                            program: Program::read(e.target_pid),
                        },
                    );
                }
            }
            _ => {}
        }
        if let Event::Signal(e) = event {
            self.cgroups.learn(e.target_cgroup, e.target_pid);
            self.fill(e.target_cgroup, e.target_pid);
        }
        let mut done = self.tracker.on_event(event);
        if let Event::Exit(x) = event {
            self.refill(x.cgroup);
        }
        if let Event::Drained(at) = event {
            done.extend(self.forget_missing(*at));
            self.look_at_emptied();
        }
        for t in &done {
            self.filled.remove(&t.cgroup);
        }
        let records = done.into_iter().filter_map(|t| self.record(t)).collect();
        // After the records: a termination this drain ended is no longer tracked, and the prune
        // would forget its removed cgroup's path before its record named it.
        if let Event::Drained(at) = event {
            self.forget_unseen(*at);
        }
        records
    }

    /// Forgets the processes of running containers that /proc no longer has (their exits are
    /// not reported while a container runs), and the paths of cgroups gone and no longer
    /// tracked: a bound on memory, not urgent. Only at the first drain past the look: a
    /// container's stop signal and the exits it caused may still be in the ring, and a
    /// container forgotten before its stop was read would lose its record.
    pub fn prune(&mut self) {
        let gone = self.tracker.look_at_running(still_there);
        let now = clock::monotonic_now();
        match &mut self.unseen {
            Some((_, pids)) => pids.extend(gone),
            None => self.unseen = Some((now, gone)),
        }
    }

    /// The ring was empty at `drained`: processes of running containers the last prune found
    /// gone, whose container has not begun to stop meanwhile, ended unseen.
    fn forget_unseen(&mut self, drained: Mono) {
        let Some((looked, _)) = self.unseen else {
            return;
        };
        if looked.saturating_add(LOST_EXIT_SLACK_NS) > drained {
            return;
        }
        let (_, pids) = self.unseen.take().unwrap_or_default();
        // A pid another process has taken since is that one's now.
        let still_gone: Vec<u32> = pids
            .into_iter()
            .filter(|pid| still_there(*pid, self.tracker.start_of(*pid)).is_none())
            .collect();
        self.tracker.forget_gone(&still_gone);
        let tracker = &self.tracker;
        self.cgroups.prune(|cgroup| tracker.tracks(cgroup));
    }

    /// Looks for processes the tracker still awaits that /proc no longer has (their exit may
    /// have been lost; [`Event::Drained`] settles it), and drops stops that never ended.
    /// Returns the interim records of stops whose processes outlived their SIGKILL (with where
    /// the kernel holds each, from /proc).
    pub fn sweep(&mut self) -> Vec<TerminationRecord> {
        self.sweep_with(still_there);
        let stuck = self.tracker.stuck(clock::monotonic_now());
        stuck
            .into_iter()
            .filter_map(|mut t| {
                for p in &mut t.stuck {
                    p.state = ProcStatus::read(p.pid).ok().map(|s| s.state);
                    p.wchan = wchan(p.pid);
                }
                self.record(t)
            })
            .collect()
    }

    /// The sweep, with `look` telling whether a process is still the one the tracker knows.
    fn sweep_with(&mut self, look: impl Fn(u32, Option<u64>) -> Option<u64>) {
        let checked: Vec<(u32, Option<u64>)> = self
            .tracker
            .awaited()
            .map(|(pid, known)| (pid, look(pid, known)))
            .collect();
        // Taken after the look, not before: a process reaped while the look ran (it may be
        // slow on a busy node) wrote its exit before then, so a drain past this time has it.
        let now = clock::monotonic_now();
        for (pid, start) in checked {
            match start {
                Some(start) => {
                    self.tracker.set_start(pid, start);
                    self.missing.remove(&pid);
                }
                None => {
                    self.missing.entry(pid).or_insert(now);
                }
            }
        }
        for cgroup in self.tracker.abandon(now) {
            tracing::debug!(
                cgroup,
                "no end and no SIGKILL within the grace: not a stop after all"
            );
            self.filled.remove(&cgroup);
        }
    }

    /// The ring buffer was empty at `drained`: processes found gone from /proc before then
    /// whose exit has still not come had it lost.
    fn forget_missing(&mut self, drained: Mono) -> Vec<crate::tracker::Termination> {
        let due: Vec<u32> = self
            .missing
            .iter()
            .filter(|(_, at)| at.saturating_add(LOST_EXIT_SLACK_NS) <= drained)
            .map(|(pid, _)| *pid)
            .collect();
        let mut done = Vec::new();
        for pid in due {
            self.missing.remove(&pid);
            // Its exit came meanwhile, or the pid is a new process's now: nothing was lost.
            let awaited = self.tracker.awaited().any(|(p, _)| p == pid);
            if awaited && still_there(pid, self.tracker.start_of(pid)).is_none() {
                done.extend(self.tracker.forget(pid, drained));
            }
        }
        done
    }

    /// A record for containers and services; the ends of other cgroups (login sessions,
    /// slices) are no one's finding.
    fn record(&mut self, termination: crate::tracker::Termination) -> Option<TerminationRecord> {
        let cgroup = self.cgroups.path_of(termination.cgroup);
        let identity = cgroup.as_deref().and_then(identity::parse);
        if let (Some(path), None) = (&cgroup, &identity) {
            tracing::debug!(cgroup = %path, "not a container or service: no record");
            return None;
        }
        // An unknown path (a cgroup gone before it was ever seen) still gets its record.
        Some(TerminationRecord {
            termination,
            cgroup,
            identity,
            info: None,
            cause: None,
        })
    }
}

#[cfg(test)]
mod tests;
