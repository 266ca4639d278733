//! /proc: a process's signal dispositions (SigCgt/SigIgn/SigBlk), NSpid, parent and comm.
use std::{fs, io};

use crate::signals::Signal;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    pub comm: String,
    pub ppid: i32,
    /// The pid in each pid namespace, outermost first.
    pub nspid: Vec<i32>,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
}

fn mask_has(mask: u64, signal: Signal) -> bool {
    signal.is_valid() && mask & (1u64 << (signal.0 - 1)) != 0
}

impl ProcStatus {
    /// Parses `/proc/<pid>/status`.
    pub fn parse(text: &str) -> ProcStatus {
        let mut s = ProcStatus::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let hex = || u64::from_str_radix(value, 16).unwrap_or(0);
            match key {
                "Name" => s.comm = value.to_string(),
                "PPid" => s.ppid = value.parse().unwrap_or(0),
                "NSpid" => {
                    s.nspid = value
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                }
                "SigBlk" => s.sig_blk = hex(),
                "SigIgn" => s.sig_ign = hex(),
                "SigCgt" => s.sig_cgt = hex(),
                _ => {}
            }
        }
        s
    }

    pub fn read(pid: u32) -> io::Result<ProcStatus> {
        fs::read_to_string(format!("/proc/{pid}/status")).map(|t| ProcStatus::parse(&t))
    }

    /// The parent's pid, if it has one (not for the host's init and kernel threads).
    pub fn parent(&self) -> Option<u32> {
        u32::try_from(self.ppid).ok().filter(|p| *p > 0)
    }

    /// PID 1 of a pid namespace below the host's.
    pub fn is_namespace_init(&self) -> bool {
        self.nspid.len() > 1 && self.nspid.last() == Some(&1)
    }

    /// Has a handler for the signal.
    pub fn handles(&self, signal: Signal) -> bool {
        mask_has(self.sig_cgt, signal)
    }

    /// Set the signal to SIG_IGN.
    pub fn ignores(&self, signal: Signal) -> bool {
        mask_has(self.sig_ign, signal)
    }

    /// Whether the kernel drops this signal when it comes from outside: ignored explicitly, or
    /// a pid-namespace init without a handler (the kernel protects inits from default actions).
    pub fn drops(&self, signal: Signal) -> bool {
        signal != Signal::KILL
            && (self.ignores(signal) || (self.is_namespace_init() && !self.handles(signal)))
    }
}

/// The start time (clock ticks since boot) in a `/proc/<pid>/stat` line: field 22, counted
/// after the command name, which may itself hold spaces and parentheses.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // Fields from the 3rd (state) on: the start time is the 20th of them.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The program a process runs now (`/proc/<pid>/comm`): a forked child bears its parent's
/// name until it execs.
pub fn comm(pid: impl std::fmt::Display) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// When a process started (clock ticks since boot): a pid with another start time is another
/// process that reused the number.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A process on the host with its status and its cgroup2 path.
#[derive(Debug, Clone)]
pub struct HostProcess {
    pub pid: u32,
    pub status: ProcStatus,
    pub cgroup: String,
}

/// Every process in /proc that can still be read (processes vanish while the scan runs).
pub fn processes() -> impl Iterator<Item = HostProcess> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let status = ProcStatus::read(pid).ok()?;
            let text = fs::read_to_string(entry.path().join("cgroup")).ok()?;
            let cgroup = crate::cgroup::unified_path(&text)?;
            Some(HostProcess {
                pid,
                status,
                cgroup,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH_INIT: &str = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nPPid:\t4200\n\
NSpid:\t4242\t1\nSigQ:\t0/94000\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
SigBlk:\t0000000000000000\nSigIgn:\t0000000000000002\nSigCgt:\t0000000000010001\n";

    #[test]
    fn start_time_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "27425 (a) b (c)) R 27380 27380 1072 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 51326 3133440 380";
        assert_eq!(parse_start_time(stat), Some(51326));
        assert_eq!(parse_start_time("27425 (cat) R 1 2"), None);
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn parses_dispositions_and_namespace() {
        let s = ProcStatus::parse(SH_INIT);
        assert_eq!((s.comm.as_str(), s.ppid), ("sh", 4200));
        assert_eq!(s.nspid, vec![4242, 1]);
        assert!(s.is_namespace_init());
        assert!(s.handles(Signal::HUP)); // bit 0
        assert!(s.handles(Signal(17))); // SIGCHLD, bit 16
        assert!(!s.handles(Signal::TERM));
        assert!(s.ignores(Signal::INT)); // bit 1
        assert!(s.drops(Signal::TERM), "init without a TERM handler");
        assert!(s.drops(Signal::INT), "explicitly ignored");
        assert!(!s.drops(Signal::HUP), "handled");
        assert!(!s.drops(Signal::KILL));
    }

    #[test]
    fn host_processes_are_not_inits() {
        let s = ProcStatus::parse("Name:\tsleep\nNSpid:\t77\nSigCgt:\t0\n");
        assert!(!s.is_namespace_init());
        assert!(!s.drops(Signal::TERM), "default action: it dies");
    }
}
