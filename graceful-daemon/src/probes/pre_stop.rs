//! The kernel's list of containers' preStop exec hook programs: a hook's exec marks its
//! container stopping, so that what the hook does inside (`kill -QUIT 1`) is seen.
use aya::maps::{HashMap, MapData};

use super::{map_err, ProbeError, Probes};
use crate::events::CgroupId;

/// Written by the loop as it learns each container's hook (CRI annotation, the API's pod).
pub struct PreStopHooks {
    map: HashMap<MapData, u64, [u8; 16]>,
}

/// A program's name as the kernel keeps it in `comm`: 15 bytes at most, NUL-padded.
fn comm(program: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = program.as_bytes();
    let n = bytes.len().min(15);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

impl PreStopHooks {
    pub fn set(&mut self, cgroup: CgroupId, program: &str) {
        if let Err(e) = self.map.insert(cgroup, comm(program), 0) {
            tracing::debug!(cgroup, "the kernel's preStop list: {e}");
        }
    }

    pub fn forget(&mut self, cgroup: CgroupId) {
        let _ = self.map.remove(&cgroup);
    }
}

impl Probes {
    /// The handle on the kernel's preStop list (once: it is taken out of the probes).
    pub fn pre_stop_hooks(&mut self) -> Result<PreStopHooks, ProbeError> {
        let map = self
            .ebpf
            .take_map("PRE_STOP")
            .ok_or(ProbeError::MissingMap("PRE_STOP"))?;
        Ok(PreStopHooks {
            map: HashMap::try_from(map).map_err(map_err("PRE_STOP"))?,
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
