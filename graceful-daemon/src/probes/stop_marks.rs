//! What userspace tells the kernel programs about containers about to stop: the program of each
//! container's preStop exec hook (its exec marks the container stopping), and containers the
//! Kubernetes API says are terminating. Either way the signals sent inside them from then on
//! (`kill -QUIT 1`, `nginx -s quit`) are reported. And the marks' end: a container no longer
//! being stopped is unmarked, and once none is, the kernel is told that nothing on the node is
//! being stopped (its signals inside containers are then only counted).
use std::{
    collections::HashMap as Map,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData};
use graceful_common::{SETTLED, STOPPING_ENTRIES};

use super::{map_err, ProbeError, Probes};
use crate::events::CgroupId;

/// A mark with no termination under way for this long is removed: long enough for the stop
/// signal that made it to have reached the tracker through the ring buffer.
pub const UNMARK_AFTER: Duration = Duration::from_secs(10);

/// Written by the loop as it learns each container's hook and its pod's deletion.
pub struct StopMarks {
    pre_stop: HashMap<MapData, u64, [u8; 16]>,
    stopping: HashMap<MapData, u64, u8>,
    stops: Array<MapData, u64>,
    /// Marks found with no termination under way, since when.
    idle: Map<CgroupId, Instant>,
}

/// A program's name as the kernel keeps it in `comm`: 15 bytes at most, NUL-padded.
fn comm(program: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = program.as_bytes();
    let n = bytes.len().min(15);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

impl StopMarks {
    pub fn set_hook(&mut self, cgroup: CgroupId, program: &str) {
        if let Err(e) = self.pre_stop.insert(cgroup, comm(program), 0) {
            tracing::debug!(cgroup, "the kernel's preStop list: {e}");
        }
    }

    /// The container is being stopped from now on (its pod is terminating), as a stop signal
    /// from outside would mark it.
    pub fn mark_stopping(&mut self, cgroup: CgroupId) {
        if self.stopping.get(&cgroup, 0).is_ok() {
            return;
        }
        if let Err(e) = self.stopping.insert(cgroup, 1, 0) {
            tracing::debug!(cgroup, "the kernel's stopping list: {e}");
            return;
        }
        // Moves the generation on, so that no CPU keeps the container as "not stopping" in its
        // cache. Userspace has no atomic add on a map: a kernel mark at the same instant may
        // cost one increment, and the container's next mark anywhere moves it on again.
        let next = self.stops.get(&0, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = self.stops.set(0, next, 0) {
            tracing::debug!("the kernel's stop generation: {e}");
        }
    }

    /// Removes the marks of containers no longer being stopped (`under_way` false for
    /// [`UNMARK_AFTER`]: their record is out, or the stop was abandoned); when none is left, tells
    /// the kernel the generation at which the node was found settled. Returns the marks left.
    pub fn sweep(&mut self, now: Instant, under_way: impl Fn(CgroupId) -> bool) -> usize {
        // Read before the marks: a mark made after this read moves the generation past it.
        let Ok(generation) = self.stops.get(&0, 0) else {
            return usize::MAX;
        };
        // Bounded: a key removed under the walk restarts it.
        let marked: Vec<CgroupId> = self
            .stopping
            .keys()
            .take(STOPPING_ENTRIES as usize)
            .filter_map(Result::ok)
            .collect();
        self.idle.retain(|cgroup, _| marked.contains(cgroup));
        let mut left = 0;
        for cgroup in marked {
            if under_way(cgroup) {
                self.idle.remove(&cgroup);
                left += 1;
                continue;
            }
            let since = *self.idle.entry(cgroup).or_insert(now);
            if now.saturating_duration_since(since) < UNMARK_AFTER
                || self.stopping.remove(&cgroup).is_err()
            {
                left += 1;
            } else {
                self.idle.remove(&cgroup);
            }
        }
        if left == 0 {
            if let Err(e) = self.stops.set(SETTLED, generation, 0) {
                tracing::debug!("the kernel's settled generation: {e}");
            }
        }
        left
    }
}

impl Probes {
    /// The handle on the kernel's stop marks (once: its maps are taken out of the probes).
    pub fn stop_marks(&mut self) -> Result<StopMarks, ProbeError> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(ProbeError::MissingMap(name));
        let (pre_stop, stopping, stops) = (take("PRE_STOP")?, take("STOPPING")?, take("STOPS")?);
        Ok(StopMarks {
            pre_stop: HashMap::try_from(pre_stop).map_err(map_err("PRE_STOP"))?,
            stopping: HashMap::try_from(stopping).map_err(map_err("STOPPING"))?,
            stops: Array::try_from(stops).map_err(map_err("STOPS"))?,
            idle: Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_cut_as_the_kernel_cuts_comm() {
        assert_eq!(&super::comm("sh")[..3], b"sh\0");
        let long = super::comm("a-very-long-program-name");
        assert_eq!(&long[..15], b"a-very-long-pro");
        assert_eq!(long[15], 0);
    }
}
