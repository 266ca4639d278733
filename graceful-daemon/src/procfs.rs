//! /proc: a process's signal dispositions (SigCgt/SigIgn/SigBlk), NSpid, parent and comm.
use std::{fs, io};

use crate::signals::Signal;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    pub comm: String,
    /// `State`'s letter: R running, S sleeping, D uninterruptible, Z zombie...
    pub state: char,
    /// The effective uid.
    pub euid: Option<u32>,
    /// The effective capability set (`CapEff`).
    pub cap_eff: u64,
    pub ppid: i32,
    /// The pid in each pid namespace, outermost first.
    pub nspid: Vec<i32>,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    /// Resident memory (`VmRSS`), in KiB; 0 for a kernel thread.
    pub rss_kib: u64,
}

fn mask_has(mask: u64, signal: Signal) -> bool {
    signal.is_valid() && mask & (1u64 << (signal.0 - 1)) != 0
}

/// The kernel function a sleeping process waits in (`/proc/<pid>/wchan`); None when it runs, is
/// gone, or the kernel hides it from us.
pub fn wchan(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    let name = text.trim();
    (!name.is_empty() && name != "0").then(|| name.to_string())
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
                "State" => s.state = value.chars().next().unwrap_or_default(),
                "Uid" => s.euid = value.split_whitespace().nth(1).and_then(|u| u.parse().ok()),
                "CapEff" => s.cap_eff = hex(),
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
                "VmRSS" => s.rss_kib = value.trim_end_matches("kB").trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        s
    }

    pub fn read(pid: u32) -> io::Result<ProcStatus> {
        fs::read_to_string(format!("/proc/{pid}/status")).map(|t| ProcStatus::parse(&t))
    }

    /// This process's own.
    pub fn own() -> io::Result<ProcStatus> {
        fs::read_to_string("/proc/self/status").map(|t| ProcStatus::parse(&t))
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

    /// Blocked: it stays pending until the process takes it (sigwait) or unblocks it.
    pub fn blocks(&self, signal: Signal) -> bool {
        mask_has(self.sig_blk, signal)
    }

    /// Whether the kernel drops this signal when it comes from outside: ignored explicitly, or
    /// a pid-namespace init without a handler (the kernel protects inits from default actions).
    /// A blocked signal is not dropped: it waits, pending (signal(7)).
    pub fn drops(&self, signal: Signal) -> bool {
        signal != Signal::KILL
            && !self.blocks(signal)
            && (self.ignores(signal) || (self.is_namespace_init() && !self.handles(signal)))
    }
}

/// The process sits in sigtimedwait/sigwaitinfo: the signals it waits for are unblocked for
/// the wait (the mask in /proc lacks them), yet it takes them there, as tini does.
pub fn in_sigwait(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<i64>().ok())
        == Some(libc::SYS_rt_sigtimedwait)
}

/// Shells that, as PID 1, neither handle nor forward signals unless told to (`trap`).
const SHELLS: [&str; 10] = [
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "hush", "yash", "posh",
];

/// A shell, as what a process runs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    /// The shell's name (`dash`, `bash`, busybox's `sh`).
    pub name: String,
    /// The script it runs, when run as `shell script` or through a script's `#!` line.
    pub script: Option<String>,
}

impl std::fmt::Display for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.script {
            Some(script) => write!(f, "{script}, run by {}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What a process runs: its executable and command line (a script's is its interpreter's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The executable's file name, from `/proc/<pid>/exe`.
    pub exe: String,
    pub args: Vec<String>,
}

fn base_name(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

impl Program {
    /// None when /proc cannot tell (the process is gone, or its executable is hidden).
    pub fn read(pid: u32) -> Option<Program> {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Program {
            exe: base_name(&exe.to_string_lossy()).to_string(),
            args,
        })
    }

    /// A busybox's applet: the name it was called by (`sh`, `httpd`, `sleep`).
    fn applet(&self) -> Option<&str> {
        let first = base_name(self.args.first()?);
        if first == "busybox" {
            self.args.get(1).map(|a| base_name(a))
        } else {
            Some(first)
        }
    }

    /// The shell it is, by what it runs, not by its name: a script run through its `#!` line
    /// is named after the script, and `busybox httpd` is busybox but no shell.
    pub fn shell(&self) -> Option<Shell> {
        let name = if self.exe == "busybox" {
            self.applet().filter(|a| SHELLS.contains(a))?
        } else if SHELLS.contains(&self.exe.as_str()) {
            self.exe.as_str()
        } else {
            return None;
        };
        // `sh -c 'cmd'` runs a command string; `sh [options] script args` a script.
        let mut rest = self.args.iter().skip(1);
        let script = loop {
            match rest.next().map(String::as_str) {
                Some("-c") | None => break None,
                Some(a) if a.starts_with('-') || a.starts_with('+') => continue,
                Some(a) => break Some(base_name(a).to_string()),
            }
        };
        Some(Shell {
            name: name.to_string(),
            script,
        })
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
SigBlk:\t0000000000000000\nSigIgn:\t0000000000000002\nSigCgt:\t0000000000010001\nVmRSS:\t    1536 kB\n";

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
        assert_eq!(s.rss_kib, 1536);
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

    fn program(exe: &str, args: &[&str]) -> Program {
        Program {
            exe: exe.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn shells_are_known_by_what_they_run() {
        let shell = |exe, args: &[&str]| program(exe, args).shell();
        assert_eq!(
            shell("dash", &["/bin/sh", "-c", "sleep 1"])
                .unwrap()
                .to_string(),
            "dash"
        );
        // A `#!/bin/sh` script run directly: comm is the script's name, exe the shell.
        let script = shell("dash", &["/bin/sh", "./docker-entrypoint.sh", "nginx"]).unwrap();
        assert_eq!(script.to_string(), "docker-entrypoint.sh, run by dash");
        assert_eq!(
            shell("bash", &["bash", "-e", "-x", "/entry.sh"])
                .unwrap()
                .script
                .as_deref(),
            Some("entry.sh")
        );
        assert_eq!(shell("busybox", &["sh", "-c", "x"]).unwrap().name, "sh");
        assert_eq!(
            shell("busybox", &["/bin/busybox", "ash"]).unwrap().name,
            "ash"
        );
        assert!(shell("busybox", &["busybox", "httpd", "-f"]).is_none());
        assert!(shell("busybox", &["sleep", "1000"]).is_none());
        assert!(shell("python3.11", &["python3", "app.py"]).is_none());
        assert!(shell("tini", &["tini", "--", "sh", "-c", "x"]).is_none());
        assert_eq!(base_name("/usr/bin/dash (deleted)"), "dash");
    }

    #[test]
    fn our_own_program_is_read() {
        let me = Program::read(std::process::id()).expect("our own /proc");
        assert!(!me.exe.is_empty() && !me.args.is_empty());
        assert!(me.shell().is_none());
    }

    #[test]
    fn a_blocked_signal_is_not_dropped() {
        let waiting = ProcStatus::parse(
            "Name:\ttini\nNSpid:\t77\t1\nSigBlk:\t0000000000004000\nSigCgt:\t0\n",
        );
        assert!(waiting.blocks(Signal::TERM));
        assert!(
            !waiting.drops(Signal::TERM),
            "pending until sigwait takes it"
        );
        assert!(
            waiting.drops(Signal::INT),
            "not blocked, no handler, an init"
        );
    }

    #[test]
    fn host_processes_are_not_inits() {
        let s = ProcStatus::parse("Name:\tsleep\nNSpid:\t77\nSigCgt:\t0\n");
        assert!(!s.is_namespace_init());
        assert!(!s.drops(Signal::TERM), "default action: it dies");
    }
}
