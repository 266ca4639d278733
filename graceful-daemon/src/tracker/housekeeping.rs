//! What the tracker is told from outside the event stream (stop signals, grace periods, start
//! times, dispositions), the sweep's housekeeping, and what the pipeline asks of it.
use super::{
    conclude::interim_stuck, CgroupId, Disposition, Mono, NamedProcess, StopSource, Termination,
    Tracker, EXITED_KEPT_NS, GRACE_SLACK_NS,
};
use crate::signals::Signal;

/// How long a process may outlive the SIGKILL it got before its stop is reported stuck: a
/// killed process normally ends within milliseconds; seconds mean the kernel holds it.
pub const STUCK_AFTER_NS: u64 = 10 * 1_000_000_000;

impl Tracker {
    /// The container's own stop signal (Kubernetes' stopSignal, the image's STOPSIGNAL): only
    /// it begins a termination, besides SIGKILL and the OOM killer.
    pub fn set_stop_signal(&mut self, cgroup: CgroupId, signal: Signal) {
        self.stop_signals.insert(cgroup, signal);
    }

    /// The container's grace period, as its runtime knows it: bounds how long a termination
    /// may wait for its end and how long after a restart a lone SIGKILL may still end a stop.
    /// The container has a preStop exec hook running `program` (its process's `comm`).
    pub fn set_pre_stop_program(&mut self, cgroup: CgroupId, program: &str) {
        self.hooks.insert(cgroup, program.to_string());
    }

    pub fn set_grace(&mut self, cgroup: CgroupId, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.graces.insert(cgroup, (seconds.min(1e9) * 1e9) as u64);
        }
    }

    /// The container's grace period plus slack, else `default`.
    pub(super) fn grace_or(&self, cgroup: CgroupId, default: u64) -> u64 {
        self.graces
            .get(&cgroup)
            .map_or(default, |g| g.saturating_add(GRACE_SLACK_NS))
    }

    /// The /proc start time of a process (clock ticks since boot), telling a reused pid apart.
    pub fn set_start(&mut self, pid: u32, start: u64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.start = Some(start);
        }
    }

    /// The /proc start time recorded for a process.
    pub fn start_of(&self, pid: u32) -> Option<u64> {
        self.procs.get(&pid).and_then(|p| p.start)
    }

    /// Terminations that saw neither the container's end nor a SIGKILL for longer than its
    /// grace period (`abandon_after_ns` when unknown): the stop signal did not stop it. Dropped
    /// without a record; returns their cgroups.
    pub fn abandon(&mut self, now: Mono) -> Vec<CgroupId> {
        let mut dropped = Vec::new();
        for (cgroup, g) in self.groups.iter() {
            let limit = self.grace_or(*cgroup, self.config.abandon_after_ns);
            if g.active
                .as_ref()
                .is_some_and(|a| a.kill.is_none() && now.saturating_sub(a.started) > limit)
            {
                dropped.push(*cgroup);
            }
        }
        for cgroup in &dropped {
            // A signal from inside that did not end the container: it runs on as it was.
            let inside = self
                .groups
                .get_mut(cgroup)
                .and_then(|g| g.active.take())
                .is_some_and(|a| a.stop.is_some_and(|s| s.source == StopSource::Inside));
            if !inside {
                self.stop_signals.remove(cgroup);
            }
        }
        dropped
    }

    /// Terminations whose processes outlived their SIGKILL by [`STUCK_AFTER_NS`]: each gets
    /// one interim record (outcome `stuck`, verdict `unkillable`, the processes still there);
    /// the final record follows if they ever end.
    pub fn stuck(&mut self, now: Mono) -> Vec<Termination> {
        let procs = &self.procs;
        let mut out = Vec::new();
        for (cgroup, g) in self.groups.iter_mut() {
            let Some(a) = g.active.as_mut() else {
                continue;
            };
            let killed_long_ago = a
                .kill
                .as_ref()
                .is_some_and(|k| now.saturating_sub(k.at) >= STUCK_AFTER_NS);
            if a.reported_stuck || !killed_long_ago || g.members.is_empty() {
                continue;
            }
            a.reported_stuck = true;
            let stuck = g
                .members
                .iter()
                .map(|&pid| NamedProcess {
                    pid,
                    comm: procs.get(&pid).map(|p| p.comm.clone()).unwrap_or_default(),
                })
                .collect();
            out.push(interim_stuck(*cgroup, a, stuck, now));
        }
        out
    }

    /// Looks at the processes of running containers: records the start time `alive` (pid,
    /// recorded start time) gives, and returns those it finds gone (None). The kernel reports
    /// a running container's exits only once it is stopping, so they may have ended unseen; or
    /// their container's stop and their exits may still be in the ring: the caller forgets them
    /// ([`Tracker::forget_gone`]) only once the ring was drained after the look.
    pub fn look_at_running(&mut self, alive: impl Fn(u32, Option<u64>) -> Option<u64>) -> Vec<u32> {
        let mut gone = Vec::new();
        let mut starts = Vec::new();
        for g in self.groups.values().filter(|g| g.active.is_none()) {
            for &pid in &g.members {
                let known = self.procs.get(&pid).and_then(|p| p.start);
                match alive(pid, known) {
                    Some(start) => starts.push((pid, start)),
                    None => gone.push(pid),
                }
            }
        }
        for (pid, start) in starts {
            self.set_start(pid, start);
        }
        gone
    }

    /// Forgets processes a look found gone while their container ran, unless a stop of their
    /// container has begun since (then their exit is awaited as any other). Groups left empty
    /// go too, with what was known of them.
    pub fn forget_gone(&mut self, pids: &[u32]) {
        for &pid in pids {
            let Some(cgroup) = self.procs.get(&pid).map(|p| p.cgroup) else {
                continue;
            };
            if self
                .groups
                .get(&cgroup)
                .is_some_and(|g| g.active.is_none() && g.members.contains(&pid))
            {
                if let Some(g) = self.groups.get_mut(&cgroup) {
                    g.members.remove(&pid);
                }
                self.procs.remove(&pid);
                self.dispositions.remove(&pid);
            }
        }
        self.groups
            .retain(|_, g| g.active.is_some() || !g.members.is_empty());
        let groups = &self.groups;
        self.graces.retain(|cgroup, _| groups.contains_key(cgroup));
        self.stop_signals
            .retain(|cgroup, _| groups.contains_key(cgroup));
        let now = self.now;
        self.exited
            .retain(|_, at| now.saturating_sub(*at) < EXITED_KEPT_NS);
    }

    /// What the tracker holds: (processes, containers, terminations under way).
    pub fn size(&self) -> (usize, usize, usize) {
        let active = self.groups.values().filter(|g| g.active.is_some()).count();
        (self.procs.len(), self.groups.len(), active)
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

    /// The tracker holds state about this cgroup (processes or a termination).
    pub fn tracks(&self, cgroup: CgroupId) -> bool {
        self.groups.contains_key(&cgroup)
    }

    /// The cgroups whose termination is under way.
    pub fn under_way(&self) -> impl Iterator<Item = CgroupId> + '_ {
        self.groups
            .iter()
            .filter(|(_, g)| g.active.is_some())
            .map(|(cgroup, _)| *cgroup)
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

    /// Processes a termination under way still waits for, with their recorded start times.
    pub fn awaited(&self) -> impl Iterator<Item = (u32, Option<u64>)> + '_ {
        self.groups
            .values()
            .filter(|g| g.active.is_some())
            .flat_map(|g| g.members.iter().copied())
            .map(|pid| (pid, self.start_of(pid)))
    }

    /// What /proc said about a process just as a stop signal reached it.
    pub fn observe(&mut self, pid: u32, disposition: Disposition) {
        self.dispositions.insert(pid, disposition);
    }
}
