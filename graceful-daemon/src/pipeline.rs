//! Drives the tracker from the event stream: keeps cgroup paths known while cgroups exist,
//! reads /proc dispositions when a stop signal arrives, seeds the tracker from /proc at start,
//! sweeps for processes whose exit was lost, and turns terminations into records.

use std::collections::HashSet;

use tokio::sync::mpsc;

use crate::{
    cgroup::Cgroup2,
    clock,
    events::{CgroupId, Event, SignalResult},
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
}

/// Above this many, the filled set starts afresh (a container is then read again: harmless).
const FILLED_MAX: usize = 4096;

/// What /proc says of a process, as the tracker takes it.
fn found(pid: u32, status: &ProcStatus, cgroup: CgroupId, start: Option<u64>) -> Found<'_> {
    Found {
        pid,
        parent: status.parent(),
        cgroup,
        comm: &status.comm,
        namespace_init: status.is_namespace_init(),
        start,
    }
}

/// The process is in /proc and, where its start time was recorded, is still that process
/// rather than a later one that reused its pid.
fn alive(pid: u32, start: Option<u64>) -> bool {
    match (start_time(pid), start) {
        (None, _) => false,
        (Some(now), Some(known)) => now == known,
        (Some(_), None) => true,
    }
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
            tracker.seed(found(pid, &status, id, start_time(pid)));
        }
        Pipeline {
            tracker,
            cgroups,
            filled: HashSet::new(),
        }
    }

    /// The cgroup2 tree it knows, for callers that read the raw event stream themselves.
    pub fn into_cgroups(self) -> Cgroup2 {
        self.cgroups
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
        let pids: Vec<u32> = present.iter().map(|(pid, ..)| *pid).collect();
        self.tracker.only_present(cgroup, &pids);
        for (pid, status, start) in present {
            self.tracker.fill(found(pid, &status, cgroup, start));
        }
    }

    /// The last process the tracker knows of a stopping container is exiting: if the cgroup
    /// still holds processes it never heard of (gone unseen past the first fill, the kernel
    /// reporting them only from the stop on), they join before the termination could end.
    fn before_last_exit(&mut self, pid: u32, cgroup: CgroupId) {
        if !self.tracker.stopping(cgroup) || self.tracker.members(cgroup) != [pid] {
            return;
        }
        for (pid, status, start) in self.cgroup_processes(cgroup) {
            if !self.tracker.knows(pid) {
                self.tracker.fill(found(pid, &status, cgroup, start));
            }
        }
    }

    /// The processes of a cgroup now, from its `cgroup.procs` and /proc (status and start
    /// time), inits then by pid.
    fn cgroup_processes(&mut self, cgroup: CgroupId) -> Vec<(u32, ProcStatus, Option<u64>)> {
        let Some(path) = self.cgroups.path_of(cgroup) else {
            return Vec::new();
        };
        let procs = std::fs::read_to_string(self.cgroups.dir(&path).join("cgroup.procs"))
            .unwrap_or_default();
        let mut found: Vec<(u32, ProcStatus, Option<u64>)> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter_map(|pid| {
                let status = ProcStatus::read(pid).ok()?;
                Some((pid, status, start_time(pid)))
            })
            .collect();
        found.sort_by_key(|(pid, s, _)| (!s.is_namespace_init(), *pid));
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
                    && e.result != SignalResult::Ignored
                    && e.target_cgroup != 0
                    && e.target_cgroup != self.cgroups.root_id() =>
            {
                // "Delivered" can still mean dropped later (it was blocked at the time): what
                // /proc says of the handlers now is the ground truth. Only for containers: host
                // processes get terminal signals all day.
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
                        },
                    );
                }
            }
            _ => {}
        }
        match event {
            Event::Signal(e) => {
                self.cgroups.learn(e.target_cgroup, e.target_pid);
                self.fill(e.target_cgroup);
            }
            Event::Exit(e) => self.before_last_exit(e.pid, e.cgroup),
            _ => {}
        }
        let done = self.tracker.on_event(event);
        // A process born during a stop: its start time tells it apart from a later one that
        // reuses its pid (the kernel reports only stopping containers' forks).
        if let Event::Fork(e) = event {
            if self.tracker.stopping(e.cgroup) {
                if let Some(start) = start_time(e.child_pid) {
                    self.tracker.set_start(e.child_pid, start);
                }
            }
        }
        for t in &done {
            self.filled.remove(&t.cgroup);
        }
        done.into_iter().filter_map(|t| self.record(t)).collect()
    }

    /// Processes the tracker still counts that /proc no longer has: their exits were lost.
    pub fn sweep(&mut self) -> Vec<TerminationRecord> {
        let gone: Vec<u32> = self
            .tracker
            .awaited()
            .filter(|(pid, start)| !alive(*pid, *start))
            .map(|(pid, _)| pid)
            .collect();
        let now = clock::monotonic_now();
        for cgroup in self.tracker.abandon(now) {
            tracing::debug!(
                cgroup,
                "no end and no SIGKILL within the grace: not a stop after all"
            );
            self.filled.remove(&cgroup);
        }
        self.tracker.prune(alive);
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
    fn alive_means_the_same_process_not_only_the_same_pid() {
        let me = std::process::id();
        let start = start_time(me).expect("our own start time");
        assert!(alive(me, Some(start)));
        assert!(alive(me, None));
        assert!(!alive(me, Some(start + 1)), "a reused pid");
        assert!(!alive(u32::MAX - 1, None));
    }
}
