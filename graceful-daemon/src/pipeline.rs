//! Drives the tracker from the event stream: keeps cgroup paths known while cgroups exist,
//! reads /proc dispositions when a stop signal arrives, seeds the tracker from /proc at start,
//! sweeps for processes whose exit was lost, and turns terminations into records.

use std::collections::HashSet;

use crate::{
    cgroup::Cgroup2,
    clock,
    events::{CgroupId, Event, SignalResult},
    export::record::Record,
    identity,
    procfs::{processes, ProcStatus},
    signals::Signal,
    tracker::{Disposition, Tracker, TrackerConfig},
};

pub struct Pipeline {
    pub tracker: Tracker,
    pub cgroups: Cgroup2,
    /// Containers whose processes were read from /proc at their first reported signal.
    filled: HashSet<CgroupId>,
}

/// Above this many, the filled set starts afresh (a container is then read again: harmless).
const FILLED_MAX: usize = 4096;

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
            tracker.seed(
                pid,
                status.parent(),
                id,
                &status.comm,
                status.is_namespace_init(),
            );
        }
        Pipeline {
            tracker,
            cgroups,
            filled: HashSet::new(),
        }
    }

    /// The kernel reports a running container's processes only once it is being stopped: at
    /// the first signal it reports for a container, the tracker learns who is there from the
    /// cgroup and /proc, before the signal itself.
    fn fill(&mut self, cgroup: CgroupId) {
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
        let pids: Vec<u32> = present.iter().map(|(pid, _)| *pid).collect();
        self.tracker.only_present(cgroup, &pids);
        for (pid, status) in present {
            self.tracker.fill(
                pid,
                status.parent(),
                cgroup,
                &status.comm,
                status.is_namespace_init(),
            );
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
                self.tracker.fill(
                    pid,
                    status.parent(),
                    cgroup,
                    &status.comm,
                    status.is_namespace_init(),
                );
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
    pub fn handle(&mut self, event: &Event) -> Vec<Record> {
        match event {
            Event::Exec(e) => {
                self.cgroups.path_of(e.cgroup);
            }
            Event::Fork(e) => {
                self.cgroups.path_of(e.cgroup);
            }
            Event::Attach(e) => {
                self.cgroups.path_of(e.cgroup);
            }
            Event::Signal(e)
                if e.signal != Signal::KILL
                    && e.sender_cgroup != e.target_cgroup
                    && e.result != SignalResult::Ignored
                    && e.target_cgroup != 0
                    && e.target_cgroup != self.cgroups.root_id() =>
            {
                // "Delivered" can still mean dropped later (it was blocked at the time): what
                // /proc says of the handlers now is the ground truth. Only for containers: host
                // processes get terminal signals all day.
                if let Ok(status) = ProcStatus::read(e.target_pid) {
                    self.tracker.observe(
                        e.target_pid,
                        Disposition {
                            signal: e.signal,
                            handles: status.handles(e.signal),
                            drops: status.drops(e.signal),
                        },
                    );
                }
            }
            _ => {}
        }
        match event {
            Event::Signal(e) => self.fill(e.target_cgroup),
            Event::Exit(e) => self.before_last_exit(e.pid, e.cgroup),
            _ => {}
        }
        let done = self.tracker.on_event(event);
        for t in &done {
            self.filled.remove(&t.cgroup);
        }
        done.into_iter().filter_map(|t| self.record(t)).collect()
    }

    /// Processes the tracker still counts that /proc no longer has: their exits were lost.
    pub fn sweep(&mut self) -> Vec<Record> {
        let gone: Vec<u32> = self
            .tracker
            .awaited_pids()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        let now = clock::monotonic_now();
        for cgroup in self.tracker.abandon(now) {
            tracing::debug!(
                cgroup,
                "no end and no SIGKILL within the grace: not a stop after all"
            );
            self.filled.remove(&cgroup);
        }
        self.tracker
            .prune(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
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
    fn record(&mut self, termination: crate::tracker::Termination) -> Option<Record> {
        let cgroup = self.cgroups.path_of(termination.cgroup);
        let identity = cgroup.as_deref().and_then(identity::parse);
        if let (Some(path), None) = (&cgroup, &identity) {
            tracing::debug!(cgroup = %path, "not a container or service: no record");
            return None;
        }
        // An unknown path (a cgroup gone before it was ever seen) still gets its record.
        Some(Record {
            termination,
            cgroup,
            identity,
            info: None,
            grace_period_seconds: None,
        })
    }
}
