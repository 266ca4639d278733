//! A stopped container as the tracker saw it end, and its parts.
use serde::Serialize;

use crate::{
    events::{CgroupId, ExitStatus, Mono, SignalResult},
    signals::Signal,
};

pub use crate::procfs::{Program, Shell};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited,
    KilledAfterGrace,
    Killed,
    Unknown,
    /// An interim record: processes outlived their SIGKILL (held in the kernel).
    Stuck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Graceful,
    ChildrenKilledAtExit,
    SwallowedByShellPid1,
    Pid1IgnoresStopSignal,
    NotForwarded,
    PreStopTookTheGrace,
    SlowShutdown,
    KilledWithoutStopSignal,
    OomKilled,
    Unknown,
    /// The interim record of a stop whose processes outlived their SIGKILL.
    Unkillable,
}

serialize_by_name!(Outcome, Verdict, StopSource);

impl Verdict {
    /// The verdicts of a final record (what the stop counters are made of); `unkillable` is
    /// only ever an interim record's.
    pub const ALL: [Verdict; 10] = [
        Verdict::Graceful,
        Verdict::ChildrenKilledAtExit,
        Verdict::SwallowedByShellPid1,
        Verdict::Pid1IgnoresStopSignal,
        Verdict::NotForwarded,
        Verdict::PreStopTookTheGrace,
        Verdict::SlowShutdown,
        Verdict::KilledWithoutStopSignal,
        Verdict::OomKilled,
        Verdict::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Graceful => "graceful",
            Verdict::ChildrenKilledAtExit => "children_killed_at_exit",
            Verdict::SwallowedByShellPid1 => "swallowed_by_shell_pid1",
            Verdict::Pid1IgnoresStopSignal => "pid1_ignores_stop_signal",
            Verdict::NotForwarded => "not_forwarded",
            Verdict::PreStopTookTheGrace => "pre_stop_took_the_grace",
            Verdict::SlowShutdown => "slow_shutdown",
            Verdict::KilledWithoutStopSignal => "killed_without_stop_signal",
            Verdict::OomKilled => "oom_killed",
            Verdict::Unknown => "unknown",
            Verdict::Unkillable => "unkillable",
        }
    }
}

impl Outcome {
    /// The outcomes of a final record; `stuck` is only ever an interim record's.
    pub const ALL: [Outcome; 4] = [
        Outcome::Exited,
        Outcome::KilledAfterGrace,
        Outcome::Killed,
        Outcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::KilledAfterGrace => "killed_after_grace",
            Outcome::Killed => "killed",
            Outcome::Unknown => "unknown",
            Outcome::Stuck => "stuck",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sender {
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub signal: Signal,
    pub at: Mono,
    pub sender: Sender,
    pub result: SignalResult,
    pub source: StopSource,
}

/// Where a stop signal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSource {
    /// From outside the container: the runtime (or anyone outside).
    Runtime,
    /// From inside, sent by the container's preStop exec hook (or its children) to the main
    /// process: `kill -QUIT 1`, `nginx -s quit`.
    PreStop,
    /// From inside, by another process of the container (or the main one itself) to the main
    /// process: the stop only if it ends the container; a stop from outside before that
    /// takes its place.
    Inside,
}

impl StopSource {
    pub fn as_str(self) -> &'static str {
        match self {
            StopSource::Runtime => "runtime",
            StopSource::PreStop => "pre_stop",
            StopSource::Inside => "inside",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kill {
    pub at: Mono,
    pub sender: Sender,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Init {
    pub pid: u32,
    pub comm: String,
    pub shell: bool,
    pub handles_stop_signal: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Received {
    pub pid: u32,
    pub comm: String,
    pub result: SignalResult,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedProcess {
    pub pid: u32,
    pub comm: String,
}

/// One stopped container, as the tracker saw it end.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub cgroup: CgroupId,
    pub stop: Option<Stop>,
    pub init: Init,
    pub received: Vec<Received>,
    /// Processes that received it beyond the first [`super::conclude::LISTED_MAX`].
    pub received_more: usize,
    pub never_received: Vec<NamedProcess>,
    pub never_received_more: usize,
    pub kill: Option<Kill>,
    pub outcome: Outcome,
    pub exit: Option<ExitStatus>,
    pub started: Mono,
    pub ended: Mono,
    pub verdict: Verdict,
    pub explanation: String,
    /// The preStop exec hook's run, when the container has one and it ran before the stop.
    pub pre_stop: Option<HookRun>,
    /// In an interim `stuck` record: the processes still there after their SIGKILL.
    pub stuck: Vec<StuckProcess>,
    /// The OOM killer's victims in the container, before or during the stop.
    pub oom: Vec<OomVictim>,
    /// Its TCP connections through the stop (None: not measured).
    pub connections: Option<super::Connections>,
}

/// A process the OOM killer took, and whether that ended the container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomVictim {
    pub pid: u32,
    pub comm: String,
    /// It was the container's main process.
    pub main: bool,
    /// Its kill ended the container (the verdict is `oom_killed`).
    pub ended_container: bool,
}

/// A process that outlived its SIGKILL: where the kernel holds it, as /proc tells.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StuckProcess {
    pub pid: u32,
    pub comm: String,
    /// /proc's state letter (`D`: an uninterruptible wait).
    pub state: Option<char>,
    /// The kernel function it waits in (`/proc/<pid>/wchan`).
    pub wchan: Option<String>,
}

/// A process the runtime exec'd into a running container (a preStop exec hook).
#[derive(Debug, Clone, PartialEq)]
pub struct HookRun {
    pub pid: u32,
    pub comm: String,
    pub started: Mono,
    /// Its exit, when it ended before the stop signal.
    pub ended: Option<Mono>,
    pub exit: Option<ExitStatus>,
}

impl Termination {
    pub fn duration_seconds(&self) -> f64 {
        self.ended.saturating_sub(self.started) as f64 / 1e9
    }
}

/// What the enrichment read from /proc about a process when a stop signal reached it. The
/// kernel's view at the signal's generation ([`crate::events::AtGeneration`]) wins over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub signal: Signal,
    /// A handler is installed for the signal.
    pub handles: bool,
    /// The kernel drops the signal (SIG_IGN, or a pid-namespace init without a handler).
    pub drops: bool,
    /// Set to SIG_IGN: dropped however the process is started (exec keeps SIG_IGN).
    pub ignores: bool,
    /// Blocks it, or sits in sigtimedwait: it takes the signal when it asks for it (tini).
    pub waits: bool,
    /// PID 1 of a pid namespace below the host's.
    pub namespace_init: bool,
    /// What it runs, when /proc could tell: whether it is a shell.
    pub program: Option<Program>,
}
