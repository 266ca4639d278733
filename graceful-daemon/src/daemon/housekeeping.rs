//! The loop's housekeeping: the audit of running containers (its /proc scan off the loop),
//! forgetting what is gone, and the sizes behind `graceful_tracked`.
use std::collections::HashSet;

use super::{Daemon, PRUNE_EVERY, RETRY_FAILED_EVERY};
use crate::{
    audit::{self, AuditEntry, MainProcess},
    export::metric_labels::{ContainerLabels, Tracked},
    identity,
};

/// CPU time of the calling thread.
fn thread_cpu() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain clock read into a local struct.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Daemon {
    /// Scans /proc for the running containers beside the loop; `audit` gets the result.
    pub(super) fn start_audit(&mut self) {
        if self.scanning {
            return;
        }
        self.scanning = true;
        let scans = self.scans.clone();
        tokio::task::spawn_blocking(move || {
            let cpu = thread_cpu();
            let found = audit::scan();
            let _ = scans.blocking_send((found, thread_cpu().saturating_sub(cpu)));
        });
    }

    /// The PID 1 risk gauge of every running container; containers gone lose their series
    /// and are forgotten. Containers the runtime was not asked about yet (running before the
    /// daemon started) are looked up.
    pub(super) fn audit(&mut self, found: Vec<MainProcess>) {
        self.audits = self.audits.wrapping_add(1);
        let entries: Vec<AuditEntry> = found
            .into_iter()
            .map(|p| {
                let signal = self.stop_signal_of(&p.identity);
                p.against(signal)
            })
            .collect();
        self.forget_departed(std::time::Instant::now());
        if self.audits.is_multiple_of(RETRY_FAILED_EVERY) {
            self.names.retry_failed();
        }
        let tracker = &self.driver.pipeline.tracker;
        self.seen
            .retain(|cgroup| !tracker.members(*cgroup).is_empty());
        // Containers not named yet (running before the daemon started), and not being asked.
        let unnamed: Vec<&AuditEntry> = entries
            .iter()
            .filter(|e| {
                self.names.can_ask(&e.main.identity) && self.names.unasked(&e.main.identity.id)
            })
            .collect();
        for e in unnamed {
            if let Some(cgroup) = self.driver.pipeline.cgroups.remember(&e.main.cgroup) {
                self.names.ask(&e.main.identity, cgroup, None);
            }
        }
        self.forget_gone(&entries);
        let running: Vec<_> = entries
            .iter()
            .filter_map(|e| {
                let info = self.info_for(&e.main.identity);
                if info.as_ref().is_some_and(|i| i.sandbox) {
                    return None; // the pod's pause container
                }
                let workload = info.as_ref().and_then(|i| i.workload.clone());
                let labels = ContainerLabels::of(&e.main.identity, info.as_ref());
                Some((labels, workload, e.stop_signal_dropped()))
            })
            .collect();
        self.announce_risks(&entries);
        let live = self.metrics.live();
        let running_set: HashSet<_> = running.iter().map(|(l, _, _)| l.clone()).collect();
        for gone in live.iter().filter(|l| !running_set.contains(l)) {
            self.metrics.gone(gone);
        }
        self.metrics.audit(&running);
        // Sizes first: a scrape after one that saw the count sees what this audit left.
        self.report_tracked();
        self.metrics.audited();
    }

    /// Drops what is kept of containers that are gone: runtime answers (unless a termination
    /// under way or a lookup still needs them) and cgroup paths (unless the tracker does).
    fn forget_gone(&mut self, running: &[AuditEntry]) {
        let mut keep: HashSet<&str> = running
            .iter()
            .map(|e| e.main.identity.id.as_str())
            .collect();
        let stopping: Vec<String> = self
            .driver
            .pipeline
            .tracker
            .under_way()
            .filter_map(|cgroup| self.driver.pipeline.cgroups.cached_path(cgroup))
            .filter_map(identity::parse)
            .map(|i| i.id)
            .collect();
        keep.extend(stopping.iter().map(String::as_str));
        self.names.keep_only(&keep);
        if self.audits.is_multiple_of(PRUNE_EVERY) {
            self.driver.pipeline.prune();
        }
    }

    /// The sizes of everything the daemon keeps, for `graceful_tracked`.
    pub(super) fn report_tracked(&self) {
        let (processes, containers, terminations) = self.driver.pipeline.tracker.size();
        let m = &self.metrics;
        m.tracked(Tracked::Processes, processes);
        m.tracked(Tracked::Containers, containers);
        m.tracked(Tracked::Terminations, terminations);
        m.tracked(
            Tracked::CgroupPaths,
            self.driver.pipeline.cgroups.remembered(),
        );
        m.tracked(Tracked::RuntimeCache, self.names.len());
        m.tracked(Tracked::MetricSeries, m.series_count());
        m.tracked(Tracked::Pods, self.pods.len());
    }
}
