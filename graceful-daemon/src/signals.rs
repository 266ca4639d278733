//! Signal numbers and their names (x86_64 / arm64 numbering, as the kernel reports them).
use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(pub i32);

const NAMES: [&str; 32] = [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

impl Signal {
    pub const HUP: Signal = Signal(1);
    pub const INT: Signal = Signal(2);
    pub const QUIT: Signal = Signal(3);
    pub const KILL: Signal = Signal(9);
    pub const USR1: Signal = Signal(10);
    pub const USR2: Signal = Signal(12);
    pub const TERM: Signal = Signal(15);
    pub const URG: Signal = Signal(23);
    pub const WINCH: Signal = Signal(28);

    pub fn is_valid(self) -> bool {
        (1..=SIGRTMAX).contains(&self.0)
    }
}

/// By name ("SIGTERM"), as records and events carry it.
impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n @ 1..=31 => f.write_str(NAMES[n as usize]),
            SIGRTMIN => f.write_str("SIGRTMIN"),
            SIGRTMAX => f.write_str("SIGRTMAX"),
            n @ 35..=63 => write!(f, "SIGRTMIN+{}", n - SIGRTMIN),
            n => write!(f, "SIG{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown signal `{0}` (use a name like SIGTERM or TERM, or a number 1-64)")]
pub struct UnknownSignal(String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Some(Signal(n))
                .filter(|s| s.is_valid())
                .ok_or_else(|| UnknownSignal(s.into()));
        }
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        (1..=SIGRTMAX)
            .map(Signal)
            .find(|sig| sig.to_string() == name)
            .ok_or_else(|| UnknownSignal(s.into()))
    }
}

/// Shells by process name alone, where /proc could not say what a process runs
/// ([`crate::procfs::Program::shell`] decides otherwise). `busybox` is no shell's name: busybox's
/// shell calls itself `sh`, its other applets are not shells.
pub fn is_shell(comm: &str) -> bool {
    matches!(
        comm,
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "mksh"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_are_known_by_name() {
        assert!(is_shell("bash") && !is_shell("sleep"));
    }

    #[test]
    fn names_round_trip() {
        for n in 1..=64 {
            let s = Signal(n);
            assert_eq!(s.to_string().parse::<Signal>().unwrap(), s, "{s}");
        }
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
        assert_eq!("term".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::KILL);
        assert_eq!(Signal(36).to_string(), "SIGRTMIN+2");
        assert!("SIGNOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("65".parse::<Signal>().is_err());
    }
}
