//! Typed events decoded from the kernel programs' ring-buffer records.
use std::mem::size_of;

use graceful_common::{
    AttachRecord, ConnRecord, DeliverRecord, ExecRecord, ExitRecord, ForkRecord, Header, Kind,
    OomRecord, RefusedRecord, SignalRecord, DISPOSITION_BLOCKED, DISPOSITION_DEFAULT,
    DISPOSITION_HANDLER, DISPOSITION_HANDLER_MASK, DISPOSITION_IGNORE,
};
use serde::Serialize;

use crate::signals::Signal;

/// Per-(signal, result) counts summed over CPUs, since the programs were attached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalCounts(pub Vec<(Signal, SignalResult, u64)>);

impl SignalCounts {
    pub fn get(&self, signal: Signal, result: SignalResult) -> u64 {
        self.0
            .iter()
            .find(|(s, r, _)| *s == signal && *r == result)
            .map_or(0, |e| e.2)
    }
}

/// CLOCK_MONOTONIC nanoseconds, as `bpf_ktime_get_ns` reports them.
pub type Mono = u64;

/// The kernel's verdict on a generated signal (`signal_generate`'s `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalResult {
    Delivered,
    Ignored,
    AlreadyPending,
    Overflow,
    LoseInfo,
    Unknown,
}

serialize_by_name!(SignalResult);

impl SignalResult {
    pub fn from_raw(v: i32) -> SignalResult {
        match v {
            0 => SignalResult::Delivered,
            1 => SignalResult::Ignored,
            2 => SignalResult::AlreadyPending,
            3 => SignalResult::Overflow,
            4 => SignalResult::LoseInfo,
            _ => SignalResult::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignalResult::Delivered => "delivered",
            SignalResult::Ignored => "ignored",
            SignalResult::AlreadyPending => "already_pending",
            SignalResult::Overflow => "overflow",
            SignalResult::LoseInfo => "lose_info",
            SignalResult::Unknown => "unknown",
        }
    }
}

/// What the target had set for a signal when the kernel generated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    /// SIG_DFL: the default action (which a pid-namespace init never takes from outside).
    Default,
    /// SIG_IGN.
    Ignore,
    /// A handler function.
    Function,
}

/// The target's disposition for a signal at its generation, read by the kernel program: the
/// ground truth of what the kernel did with it, whatever /proc shows later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtGeneration {
    /// None when the kernel program could not read it.
    pub handler: Option<Handler>,
    /// Blocked (or waited for in sigtimedwait): it stays pending until the process takes it.
    pub blocked: bool,
}

impl Handler {
    /// None when the kernel program could not read it.
    fn from_raw(raw: u32) -> Option<Handler> {
        match raw & DISPOSITION_HANDLER_MASK {
            DISPOSITION_DEFAULT => Some(Handler::Default),
            DISPOSITION_IGNORE => Some(Handler::Ignore),
            DISPOSITION_HANDLER => Some(Handler::Function),
            _ => None,
        }
    }
}

impl AtGeneration {
    pub fn from_raw(raw: u32) -> AtGeneration {
        AtGeneration {
            handler: Handler::from_raw(raw),
            blocked: raw & DISPOSITION_BLOCKED != 0,
        }
    }
}

/// A cgroup2 id (the cgroup directory's inode number); 0 = unknown.
pub type CgroupId = u64;

#[derive(Debug, Clone, PartialEq)]
pub struct SignalEvent {
    pub ts: Mono,
    pub signal: Signal,
    pub code: i32,
    pub result: SignalResult,
    /// Sent to the whole thread group (kill) rather than one thread (tgkill).
    pub group: bool,
    pub sender_pid: u32,
    pub sender_tid: u32,
    pub sender_comm: String,
    pub sender_cgroup: CgroupId,
    pub target_pid: u32,
    pub target_comm: String,
    pub target_cgroup: CgroupId,
    pub at_generation: AtGeneration,
    /// The target cgroup's TCP connections established at this moment (None: never counted).
    pub established: Option<u64>,
}

/// How a process ended, decoded from `task_struct.exit_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitStatus {
    /// Exit status when it exited (null when a signal killed it).
    pub code: Option<i32>,
    /// Terminating signal number when a signal killed it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// In words, so that nobody reads 143 as an error: "exited 0", "terminated by SIGKILL
    /// (137)", "exited 143 (128 + 15: it ended on SIGTERM)".
    pub fn meaning(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) if (129..=128 + 64).contains(&code) => format!(
                "exited {code} (128 + {}: it ended on {})",
                code - 128,
                crate::signals::Signal(code - 128)
            ),
            (Some(code), _) => format!("exited {code}"),
            (None, Some(sig)) => format!(
                "terminated by {} ({})",
                crate::signals::Signal(sig),
                128 + sig
            ),
            (None, None) => "unknown".into(),
        }
    }

    pub fn from_raw(raw: i32) -> ExitStatus {
        match raw & 0x7f {
            0 => ExitStatus {
                code: Some((raw >> 8) & 0xff),
                signal: None,
            },
            sig => ExitStatus {
                code: None,
                signal: Some(sig),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExitEvent {
    pub ts: Mono,
    pub pid: u32,
    pub tid: u32,
    pub status: ExitStatus,
    pub cgroup: CgroupId,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecEvent {
    pub ts: Mono,
    pub pid: u32,
    pub cgroup: CgroupId,
    pub comm: String,
    /// It entered the container from outside (a runtime's exec): a visit, even when its fork
    /// was reported (a container marked stopping reports every fork).
    pub entered: bool,
    /// It is its pid namespace's init: the container's own main process.
    pub namespace_init: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForkEvent {
    pub ts: Mono,
    pub parent_pid: u32,
    pub child_pid: u32,
    pub cgroup: CgroupId,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttachEvent {
    pub ts: Mono,
    pub tid: u32,
    pub cgroup: CgroupId,
}

/// A process of a container being stopped took a stop-relevant signal: the kernel acts now
/// on `handler` (an init's default action: the signal is discarded).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverEvent {
    pub ts: Mono,
    pub pid: u32,
    pub tid: u32,
    pub signal: Signal,
    pub handler: Option<Handler>,
    pub cgroup: CgroupId,
}

/// A TCP state change of a socket of a container being stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnEvent {
    pub ts: Mono,
    pub cgroup: CgroupId,
    /// The socket's address: a connection's identity while it lives.
    pub sk: u64,
    /// Its inode, as its fd shows in /proc (0 without a file).
    pub inode: u64,
    pub old: i32,
    pub new: i32,
    pub sport: u16,
}

/// A connection attempt refused (answered with a reset: nobody listened) on a port that a
/// container being stopped had closed.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedEvent {
    pub ts: Mono,
    pub cgroup: CgroupId,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OomEvent {
    pub ts: Mono,
    pub pid: u32,
    pub cgroup: CgroupId,
}

/// Why events went missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The kernel could not write them (ring buffer full, or a read it needed failed).
    Kernel,
    /// A record came but could not be decoded.
    Decode,
}

/// Events lost at this point of the stream (placed by the CPU's lost count going up).
#[derive(Debug, Clone, PartialEq)]
pub struct LostEvent {
    pub ts: Mono,
    pub count: u64,
    pub reason: LossReason,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Signal(SignalEvent),
    Exit(ExitEvent),
    Exec(ExecEvent),
    Fork(ForkEvent),
    Attach(AttachEvent),
    Oom(OomEvent),
    Deliver(DeliverEvent),
    Conn(ConnEvent),
    Refused(RefusedEvent),
    Lost(LostEvent),
    /// Not the kernel's: the reader found the ring buffer empty at `ts`, so every record the
    /// kernel wrote before then has come (a process gone from /proc has had its exit reported).
    Drained(Mono),
}

impl Event {
    pub fn ts(&self) -> Mono {
        match self {
            Event::Signal(e) => e.ts,
            Event::Exit(e) => e.ts,
            Event::Exec(e) => e.ts,
            Event::Fork(e) => e.ts,
            Event::Attach(e) => e.ts,
            Event::Oom(e) => e.ts,
            Event::Deliver(e) => e.ts,
            Event::Conn(e) => e.ts,
            Event::Refused(e) => e.ts,
            Event::Lost(e) => e.ts,
            Event::Drained(ts) => *ts,
        }
    }
}

/// Places the kernel's losses in the stream: every record carries the node's lost count at
/// its writing, so a count above any seen before says records were lost just before it.
#[derive(Debug, Default)]
pub struct LossPlacer {
    seen: u32,
}

impl LossPlacer {
    /// Records lost since the highest count seen so far (0 for a short record; records of
    /// different CPUs may arrive slightly out of order, so a lower count says nothing).
    pub fn newly_lost(&mut self, bytes: &[u8]) -> u64 {
        if bytes.len() < size_of::<Header>() {
            return 0;
        }
        // SAFETY: length checked; Header is plain integers.
        let h: Header = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let new = h.lost.saturating_sub(self.seen);
        self.seen = self.seen.max(h.lost);
        u64::from(new)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {len} bytes, expected {want}")]
    Truncated { kind: Kind, len: usize, want: usize },
}

fn read<T: Copy>(bytes: &[u8], kind: Kind) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            want: size_of::<T>(),
        });
    }
    // SAFETY: length checked; T is a #[repr(C)] record of integers valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A kernel `comm`: NUL-terminated, at most 16 bytes.
pub fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked above; Header is plain integers.
    let header: Header = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = Kind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    Ok(match kind {
        Kind::Signal => Event::Signal(read::<SignalRecord>(bytes, kind)?.into()),
        Kind::Exit => Event::Exit(read::<ExitRecord>(bytes, kind)?.into()),
        Kind::Exec => Event::Exec(read::<ExecRecord>(bytes, kind)?.into()),
        Kind::Fork => Event::Fork(read::<ForkRecord>(bytes, kind)?.into()),
        Kind::Attach => Event::Attach(read::<AttachRecord>(bytes, kind)?.into()),
        Kind::Oom => Event::Oom(read::<OomRecord>(bytes, kind)?.into()),
        Kind::Deliver => Event::Deliver(read::<DeliverRecord>(bytes, kind)?.into()),
        Kind::Conn => Event::Conn(read::<ConnRecord>(bytes, kind)?.into()),
        Kind::Refused => {
            let r = read::<RefusedRecord>(bytes, kind)?;
            Event::Refused(RefusedEvent {
                ts: r.header.ts_ns,
                cgroup: r.cgroup,
                port: r.port,
            })
        }
    })
}

impl From<SignalRecord> for SignalEvent {
    fn from(r: SignalRecord) -> SignalEvent {
        SignalEvent {
            ts: r.header.ts_ns,
            signal: Signal(r.signo),
            code: r.code,
            result: SignalResult::from_raw(r.result),
            group: r.group != 0,
            sender_pid: r.sender_tgid,
            sender_tid: r.sender_tid,
            sender_comm: comm(&r.sender_comm),
            sender_cgroup: r.sender_cgroup,
            target_pid: r.target_pid as u32,
            target_comm: comm(&r.target_comm),
            target_cgroup: r.target_cgroup,
            at_generation: AtGeneration::from_raw(r.disposition),
            established: u64::try_from(r.established).ok(),
        }
    }
}

impl From<ExitRecord> for ExitEvent {
    fn from(r: ExitRecord) -> ExitEvent {
        ExitEvent {
            ts: r.header.ts_ns,
            pid: r.tgid,
            tid: r.tid,
            status: ExitStatus::from_raw(r.exit_code),
            cgroup: r.cgroup,
            comm: comm(&r.comm),
        }
    }
}

impl From<ExecRecord> for ExecEvent {
    fn from(r: ExecRecord) -> ExecEvent {
        let (ts, pid, cgroup) = (r.header.ts_ns, r.tgid, r.cgroup);
        ExecEvent {
            comm: comm(&r.comm),
            ts,
            pid,
            cgroup,
            entered: r.flags & graceful_common::EXEC_ENTERED != 0,
            namespace_init: r.flags & graceful_common::EXEC_NAMESPACE_INIT != 0,
        }
    }
}

impl From<ForkRecord> for ForkEvent {
    fn from(r: ForkRecord) -> ForkEvent {
        ForkEvent {
            comm: comm(&r.comm),
            cgroup: r.cgroup,
            child_pid: r.child_pid,
            parent_pid: r.parent_tgid,
            ts: r.header.ts_ns,
        }
    }
}

impl From<AttachRecord> for AttachEvent {
    fn from(r: AttachRecord) -> AttachEvent {
        let (ts, tid, cgroup) = (r.header.ts_ns, r.tid, r.cgroup);
        AttachEvent { ts, tid, cgroup }
    }
}

impl From<DeliverRecord> for DeliverEvent {
    fn from(r: DeliverRecord) -> DeliverEvent {
        DeliverEvent {
            ts: r.header.ts_ns,
            pid: r.tgid,
            tid: r.tid,
            signal: Signal(r.signo),
            handler: Handler::from_raw(r.handler),
            cgroup: r.cgroup,
        }
    }
}

impl From<ConnRecord> for ConnEvent {
    fn from(r: ConnRecord) -> ConnEvent {
        ConnEvent {
            ts: r.header.ts_ns,
            cgroup: r.cgroup,
            sk: r.sk,
            inode: r.inode,
            old: r.oldstate,
            new: r.newstate,
            sport: r.sport,
        }
    }
}

impl From<OomRecord> for OomEvent {
    fn from(r: OomRecord) -> OomEvent {
        let (ts, pid, cgroup) = (r.header.ts_ns, r.pid, r.cgroup);
        OomEvent { ts, pid, cgroup }
    }
}

#[cfg(test)]
mod tests;
