//! Capabilities: which the probes need, checked before loading, and dropping every one once
//! the programs are attached (the open map and link fds keep working without any).
use std::io;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("graceful needs CAP_BPF and CAP_PERFMON to load and attach its eBPF programs (root has them); this process has neither CAP_SYS_ADMIN nor {missing}")]
    Missing { missing: String },
    #[error("dropping capabilities: {0}")]
    Drop(io::Error),
}

fn effective() -> u64 {
    crate::procfs::ProcStatus::own().map_or(0, |s| s.cap_eff)
}

fn has(set: u64, cap: u32) -> bool {
    set & (1u64 << cap) != 0
}

/// Loading and attaching tracepoint programs: CAP_BPF and CAP_PERFMON (5.8 on), or
/// CAP_SYS_ADMIN, which holds both.
pub fn check_can_trace() -> Result<(), PrivilegeError> {
    let set = effective();
    if has(set, CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(set, *cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(" and "),
        })
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability (effective, permitted, inheritable, ambient) for good.
pub fn drop_all() -> Result<(), PrivilegeError> {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: a v3 header and the two data structs it requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Drop(io::Error::last_os_error()));
    }
    if effective() != 0 {
        return Err(PrivilegeError::Drop(io::Error::other(
            "capabilities are still effective after capset",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000004\n";
        let set = crate::procfs::ProcStatus::parse(status).cap_eff;
        assert!(has(set, CAP_BPF) && has(set, CAP_PERFMON) && has(set, CAP_DAC_READ_SEARCH));
        assert!(!has(set, CAP_SYS_ADMIN));
        let garbage = crate::procfs::ProcStatus::parse("CapEff:\tzz\nUid:\tx\n");
        assert_eq!((garbage.cap_eff, garbage.euid), (0, None));
    }
}
