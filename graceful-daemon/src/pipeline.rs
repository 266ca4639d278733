//! Drives the tracker from the event stream: keeps cgroup paths known while cgroups exist,
//! reads /proc dispositions when a stop signal arrives, seeds the tracker from /proc at start,
//! sweeps for processes whose exit was lost, and turns terminations into records.

use std::collections::HashSet;

use tokio::sync::mpsc;

use crate::{
    cgroup::Cgroup2,
    clock,
    events::{CgroupId, Event},
    identity,
    probes::{ProbeError, ProbeOptions, Probes},
    procfs::{processes, start_time, ProcStatus},
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
    /// Awaited processes the last sweep found gone from /proc: their exit may still be on its
    /// way from the kernel (reaped before its event was read), so they are forgotten only if
    /// the next sweep finds them gone too and no exit came meanwhile.
    missing: HashSet<u32>,
}

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
            missing: HashSet::new(),
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

    /// The last process the tracker knows of a stopping container is exiting: if the cgroup
    /// still holds processes it never heard of (gone unseen past the first fill, the kernel
    /// reporting them only from the stop on), they join before the termination could end.
    fn before_last_exit(&mut self, pid: u32, cgroup: CgroupId) {
        if !self.tracker.stopping(cgroup) || self.tracker.members(cgroup) != [pid] {
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
            Event::Exec(e) => {
                self.cgroups.learn(e.cgroup, e.pid);
            }
            Event::Fork(e) => {
                self.cgroups.learn(e.cgroup, e.child_pid);
            }
            Event::Attach(e) => {
                self.cgroups.learn(e.cgroup, e.tid);
            }
            Event::Signal(e)
                if e.signal != Signal::KILL
                    && e.sender_cgroup != e.target_cgroup
                    && e.target_cgroup != 0
                    && e.target_cgroup != self.cgroups.root_id() =>
            {
                // "Delivered" can still mean dropped later (it was blocked at the time): what
                // /proc says of the handlers now is the ground truth; for "ignored" it tells SIG_IGN
                // from an init without a handler. Only for containers: host processes get
                // terminal signals all day.
                // Only while the pid is still the process the signal reached (not reused).
                let same = match self.tracker.start_of(e.target_pid) {
                    Some(known) => start_time(e.target_pid) == Some(known),
                    None => true,
                };
                if let Some(status) = same.then(|| ProcStatus::read(e.target_pid).ok()).flatten() {
                    self.tracker.observe(
                        e.target_pid,
                        Disposition {
                            signal: e.signal,
                            handles: status.handles(e.signal),
                            drops: status.drops(e.signal),
                            ignores: status.ignores(e.signal),
                        },
                    );
                }
            }
            _ => {}
        }
        match event {
            Event::Signal(e) => {
                self.cgroups.learn(e.target_cgroup, e.target_pid);
                self.fill(e.target_cgroup, e.target_pid);
            }
            Event::Exit(e) => self.before_last_exit(e.pid, e.cgroup),
            _ => {}
        }
        let done = self.tracker.on_event(event);
        for t in &done {
            self.filled.remove(&t.cgroup);
        }
        done.into_iter().filter_map(|t| self.record(t)).collect()
    }

    /// Forgets the processes of running containers that /proc no longer has (their exits are
    /// not reported while a container runs): a bound on memory, not urgent.
    pub fn prune(&mut self) {
        self.tracker.prune(still_there);
    }

    /// Processes the tracker still counts that /proc no longer has, two sweeps running: their
    /// exits were lost.
    pub fn sweep(&mut self) -> Vec<TerminationRecord> {
        let checked: Vec<(u32, Option<u64>)> = self
            .tracker
            .awaited()
            .map(|(pid, known)| (pid, still_there(pid, known)))
            .collect();
        let (mut gone, mut missing) = (Vec::new(), HashSet::new());
        for (pid, now) in checked {
            match now {
                Some(start) => self.tracker.set_start(pid, start),
                None if self.missing.contains(&pid) => gone.push(pid),
                None => {
                    missing.insert(pid);
                }
            }
        }
        self.missing = missing;
        let now = clock::monotonic_now();
        for cgroup in self.tracker.abandon(now) {
            tracing::debug!(
                cgroup,
                "no end and no SIGKILL within the grace: not a stop after all"
            );
            self.filled.remove(&cgroup);
        }
        let done: Vec<_> = gone
            .into_iter()
            .flat_map(|pid| self.tracker.forget(pid, now))
            .collect();
        for t in &done {
            self.filled.remove(&t.cgroup);
        }
        done.into_iter().filter_map(|t| self.record(t)).collect()
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
            grace_period_seconds: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_gone_from_proc_is_forgotten_only_at_the_second_sweep() {
        use crate::events::{ExecEvent, SignalEvent, SignalResult};
        let cgroups = Cgroup2::discover().expect("cgroup2");
        let mut p = Pipeline::new(cgroups, TrackerConfig::default());
        // A pid above any pid_max: never in /proc.
        let (pid, cg, now) = (u32::MAX - 7, 0xC0FFEE, clock::monotonic_now());
        p.tracker.on_event(&Event::Exec(ExecEvent {
            ts: now,
            pid,
            cgroup: cg,
            comm: "app".into(),
        }));
        p.tracker.on_event(&Event::Signal(SignalEvent {
            ts: now,
            signal: Signal::TERM,
            code: 0,
            result: SignalResult::Delivered,
            group: true,
            sender_pid: 1,
            sender_tid: 1,
            sender_comm: "runc".into(),
            sender_cgroup: p.cgroups.root_id(),
            target_pid: pid,
            target_comm: "app".into(),
            target_cgroup: cg,
        }));
        assert!(p.tracker.stopping(cg));
        // Its exit may still be on its way from the kernel.
        assert!(p.sweep().is_empty());
        assert!(p.tracker.stopping(cg));
        p.sweep();
        assert!(!p.tracker.stopping(cg), "forgotten at the second sweep");
    }

    #[test]
    fn still_there_means_the_same_process_not_only_the_same_pid() {
        let me = std::process::id();
        let start = start_time(me).expect("our own start time");
        assert_eq!(still_there(me, Some(start)), Some(start));
        assert_eq!(
            still_there(me, None),
            Some(start),
            "the first look records it"
        );
        assert_eq!(still_there(me, Some(start + 1)), None, "a reused pid");
        assert_eq!(still_there(u32::MAX - 1, None), None);
    }
}
