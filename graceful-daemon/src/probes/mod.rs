//! Loads and attaches the kernel programs and turns the ring buffer into an event stream.
pub mod btf;
mod config;
#[cfg(feature = "test-utils")]
mod floor;
mod reader;
mod stop_marks;
pub mod tracefs;
pub use stop_marks::{StopMarks, UNMARK_AFTER};

#[cfg(feature = "test-utils")]
pub use floor::{BpfStats, FloorProbe};

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::Program,
    Ebpf, EbpfLoader,
};
use graceful_common::{Config, COUNTER_ENTRIES, LOST_READ_FAILED, LOST_RING_FULL, RESULT_SLOTS};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    cgroup::Cgroup2,
    events::{Event, SignalCounts, SignalResult},
    signals::Signal,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/graceful"));

/// The programs and the tracepoints they attach to (category `fentry`: a kernel function).
/// Refused connections are seen by `refused_tp` where the kernel traces resets sent without a
/// socket (6.10 on), else by `refused_v4` and `refused_v6`; see [`Probes::programs`].
pub const PROGRAMS: [(&str, &str, &str); 11] = [
    ("signal_generate", "signal", "signal_generate"),
    ("signal_deliver", "signal", "signal_deliver"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("task_newtask", "task", "task_newtask"),
    ("cgroup_attach_task", "cgroup", "cgroup_attach_task"),
    ("mark_victim", "oom", "mark_victim"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("refused_tp", "tcp", "tcp_send_reset"),
    ("refused_v4", "fentry", "tcp_v4_send_reset"),
    ("refused_v6", "fentry", "tcp_v6_send_reset"),
];

/// Programs the daemon can do without, and what is not seen then: a kernel that lacks them
/// gets a logged degradation, not a refusal.
const OPTIONAL: [(&str, &str); 6] = [
    (
        "cgroup_attach_task",
        "processes moved between cgroups are known from their next exec only",
    ),
    (
        "mark_victim",
        "OOM kills cannot be told apart from other kernel SIGKILLs",
    ),
    (
        "inet_sock_set_state",
        "the connections a stop cut are not counted",
    ),
    (
        "refused_tp",
        "connection attempts refused after a listener closed are not counted",
    ),
    (
        "refused_v4",
        "connection attempts refused after a listener closed are not counted",
    ),
    (
        "refused_v6",
        "connection attempts refused after a listener closed are not counted",
    ),
];

fn optional(program: &str) -> Option<&'static str> {
    OPTIONAL
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, what)| *what)
}

/// The default stop-relevant signals: what runtimes and STOPSIGNAL use to stop a container.
pub const DEFAULT_STOP_SIGNALS: [Signal; 8] = [
    Signal::TERM,
    Signal::KILL,
    Signal::INT,
    Signal::QUIT,
    Signal::HUP,
    Signal::USR1,
    Signal::USR2,
    Signal::WINCH,
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
    #[error("graceful must run in the host's pid namespace (hostPID: true in Kubernetes, --pid=host in podman): the kernel reports host pids, which this /proc cannot see")]
    NotHostPidNamespace,
    #[error("this build has no eBPF programs (it was built without the BPF toolchain): run `cargo xtask setup` and build again")]
    NoObject,
    #[error("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing): build it with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    #[error("BTF: {0}")]
    Btf(String),
    #[error("tracefs is not available: {0}")]
    NoTracefs(String),
    #[error("tracepoint {tracepoint} is missing: {reason}")]
    MissingTracepoint { tracepoint: String, reason: String },
    #[error("tracepoint {tracepoint} has no field `{field}`")]
    MissingField { tracepoint: String, field: String },
    #[error("cgroup2: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error("the verifier rejected {program}: {error}\n{log}")]
    Verifier {
        program: String,
        error: String,
        log: String,
    },
    #[error("attaching {program} to {tracepoint}: {error}")]
    Attach {
        program: String,
        tracepoint: String,
        error: String,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {map}: {error}")]
    Map { map: &'static str, error: String },
}

/// What the probes report and how.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Signals that go to the ring buffer; all others are only counted.
    pub stop_signals: Vec<Signal>,
    /// Bytes of the ring buffer (a power of two, a multiple of the page size).
    pub ring_bytes: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            stop_signals: DEFAULT_STOP_SIGNALS.to_vec(),
            ring_bytes: graceful_common::RING_BYTES,
        }
    }
}

/// Loaded and attached kernel programs.
pub struct Probes {
    ebpf: Ebpf,
    counts: PerCpuArray<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
    /// Optional programs this kernel could not take.
    unavailable: Vec<&'static str>,
    /// Programs this kernel does without (another one sees the same).
    unneeded: Vec<&'static str>,
}

/// The initial pid namespace has a fixed inode number (PROC_PID_INIT_INO).
const HOST_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

fn in_host_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == HOST_PID_NAMESPACE)
}

fn check_prerequisites() -> Result<(), ProbeError> {
    if OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    if !in_host_pid_namespace() {
        return Err(ProbeError::NotHostPidNamespace);
    }
    crate::privileges::check_can_trace()?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(ProbeError::NoBtf);
    }
    Ok(())
}

/// Before 5.11 BPF maps are charged to RLIMIT_MEMLOCK (later kernels charge the memory
/// cgroup): raise it where allowed. Without CAP_SYS_RESOURCE this fails, which is fine from
/// 5.11 on; on older kernels map creation then fails and says so.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "memlock limit not raised ({}): only kernels before 5.11 need it",
            std::io::Error::last_os_error()
        );
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        error: e.to_string(),
    }
}

/// The loader's error with its causes (the errno is in the last), and what a refused bpf()
/// usually means.
fn object_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if text.contains("Operation not permitted") {
        text += " (bpf() refused: it needs CAP_BPF and CAP_PERFMON, and a seccomp profile that allows bpf(); \
                 container runtimes' default profiles allow it only with CAP_SYS_ADMIN)";
    }
    text
}

impl Probes {
    /// Loads every program through the verifier and attaches it. Needs a tokio runtime (logger).
    pub fn load(options: &ProbeOptions, cgroup: &mut Cgroup2) -> Result<Probes, ProbeError> {
        check_prerequisites()?;
        raise_memlock();
        let config = config::config(options, cgroup)?;
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", options.ring_bytes)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(object_error(&e)))?;
        start_kernel_logger(&mut ebpf);
        let mut unavailable = Vec::new();
        let mut unneeded = Vec::new();
        let resets_traced = config::socketless_resets_traced();
        for (program, category, name) in PROGRAMS {
            let needed = match program {
                "refused_tp" => resets_traced,
                "refused_v4" | "refused_v6" => !resets_traced,
                _ => true,
            };
            if !needed {
                unneeded.push(program);
                continue;
            }
            match attach(&mut ebpf, program, category, name, &config) {
                Ok(()) => {}
                Err(e) => match optional(program) {
                    Some(what) => {
                        tracing::warn!("{e}; carrying on without it: {what}");
                        unavailable.push(program);
                    }
                    None => return Err(e),
                },
            }
        }
        let counts = PerCpuArray::try_from(
            ebpf.take_map("COUNTS")
                .ok_or(ProbeError::MissingMap("COUNTS"))?,
        )
        .map_err(map_err("COUNTS"))?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map("LOST")
                .ok_or(ProbeError::MissingMap("LOST"))?,
        )
        .map_err(map_err("LOST"))?;
        let probes = Probes {
            ebpf,
            counts,
            lost,
            unavailable,
            unneeded,
        };
        Ok(probes)
    }

    /// The programs this kernel needs (of [`PROGRAMS`]: one way to see refused connections).
    pub fn programs(&self) -> Vec<&'static str> {
        PROGRAMS
            .iter()
            .map(|(program, _, _)| *program)
            .filter(|p| !self.unneeded.contains(p))
            .collect()
    }

    /// Optional programs this kernel could not take (attached: all the others needed).
    pub fn unavailable(&self) -> &[&'static str] {
        &self.unavailable
    }

    /// Whether the OOM killer's victims are seen (`oom:mark_victim` attached).
    pub fn sees_oom(&self) -> bool {
        !self.unavailable.contains(&"mark_victim")
    }

    /// Containers' TCP connections are counted (`sock:inet_sock_set_state` attached).
    pub fn sees_connections(&self) -> bool {
        !self.unavailable.contains(&"inet_sock_set_state")
    }

    /// Connection attempts refused after a stopping container's listener closed are counted
    /// (the `refused_*` programs it needs attached, with the TCP-state program that knows the
    /// listeners).
    pub fn sees_refusals(&self) -> bool {
        self.sees_connections() && !self.unavailable.iter().any(|p| p.starts_with("refused_"))
    }

    /// Per-(signal, result) totals over all CPUs.
    pub fn signal_counts(&self) -> Result<SignalCounts, ProbeError> {
        let mut out = Vec::new();
        for index in 0..COUNTER_ENTRIES {
            let total: u64 = self
                .counts
                .get(&index, 0)
                .map_err(map_err("COUNTS"))?
                .iter()
                .sum();
            if total > 0 {
                let signo = index / RESULT_SLOTS as u32;
                let result = SignalResult::from_raw((index % RESULT_SLOTS as u32) as i32);
                out.push((Signal(signo as i32), result, total));
            }
        }
        Ok(SignalCounts(out))
    }

    /// Records the kernel could not write, since attach: (ring buffer full, read failed).
    pub fn lost_events(&self) -> Result<(u64, u64), ProbeError> {
        let total = |slot| -> Result<u64, ProbeError> {
            Ok(self
                .lost
                .get(&slot, 0)
                .map_err(map_err("LOST"))?
                .iter()
                .sum())
        };
        Ok((total(LOST_RING_FULL)?, total(LOST_READ_FAILED)?))
    }

    /// Starts reading the ring buffer; decoded events arrive on the returned channel until the
    /// receiver is dropped.
    pub fn events(&mut self) -> Result<mpsc::Receiver<Event>, ProbeError> {
        let ring = RingBuf::try_from(
            self.ebpf
                .take_map("EVENTS")
                .ok_or(ProbeError::MissingMap("EVENTS"))?,
        )
        .map_err(map_err("EVENTS"))?;
        reader::start(ring)
    }

    /// Kernel-side run time and run count of each program (needs BPF stats enabled).
    #[cfg(feature = "test-utils")]
    pub fn program_stats(&self) -> Vec<(String, std::time::Duration, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                p.info()
                    .ok()
                    .map(|i| (name.to_string(), i.run_time(), i.run_count()))
            })
            .collect()
    }
}

impl Drop for Probes {
    /// Detaches every program at once: each detach waits out a kernel RCU grace period (80 ms
    /// on the test machines), which detaches in parallel share, so SIGTERM ends the daemon in
    /// one period instead of one per program.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for (_, program) in self.ebpf.programs_mut() {
                s.spawn(move || {
                    let _ = match program {
                        Program::RawTracePoint(p) => p.unload(),
                        Program::TracePoint(p) => p.unload(),
                        Program::FEntry(p) => p.unload(),
                        _ => Ok(()),
                    };
                });
            }
        });
    }
}

/// Loads one program through the verifier and attaches it to its tracepoint.
fn attach(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
    config: &Config,
) -> Result<(), ProbeError> {
    let missing_offsets = match program {
        "cgroup_attach_task" => config.attach_size == 0,
        "mark_victim" => config.oom_size == 0,
        "inet_sock_set_state" => config.conn_size == 0 || config.conn_protocol == 0,
        // Listeners are known from the tracepoint above; a packet's namespace from BTF.
        "refused_tp" | "refused_v4" | "refused_v6" => [
            config.conn_size,
            config.sock_net,
            config.net_inum,
            config.skb_head,
            config.skb_transport_header,
            config.skb_dev,
            config.netdev_net,
        ]
        .contains(&0),
        _ => false,
    };
    if missing_offsets {
        return Err(ProbeError::MissingTracepoint {
            tracepoint: format!("{category}:{name}"),
            reason: match category {
                "fentry" => "sock:inet_sock_set_state or a member it reads in BTF is missing",
                _ => "its format file is missing or lacks a field",
            }
            .into(),
        });
    }
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| ProbeError::Load(format!("program {program} is missing")))?;
    let attach_err = |e: aya::programs::ProgramError| ProbeError::Attach {
        program: program.into(),
        tracepoint: format!("{category}:{name}"),
        error: e.to_string(),
    };
    match prog {
        Program::RawTracePoint(p) => {
            p.load().map_err(|e| load_error(program, e))?;
            p.attach(name).map_err(attach_err)?;
        }
        Program::TracePoint(p) => {
            p.load().map_err(|e| load_error(program, e))?;
            p.attach(category, name).map_err(attach_err)?;
        }
        Program::FEntry(p) => {
            let btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Btf(e.to_string()))?;
            p.load(name, &btf).map_err(|e| load_error(program, e))?;
            p.attach().map_err(attach_err)?;
        }
        _ => {
            return Err(ProbeError::Load(format!(
                "{program} has an unexpected program type"
            )))
        }
    }
    Ok(())
}

fn load_error(program: &str, e: aya::programs::ProgramError) -> ProbeError {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => ProbeError::Verifier {
            program: program.into(),
            error: io_error.to_string(),
            log: verifier_log.to_string(),
        },
        other => ProbeError::Load(format!("{program}: {}", object_error(&other))),
    }
}

/// Forwards aya-log records of the kernel programs to the logs: aya-log writes to the `log`
/// facade, which tracing-subscriber bridges (its `tracing-log` feature) into our one logger.
fn start_kernel_logger(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        // SAFETY: the logger owns its ring-buffer fd for as long as it lives.
        Ok(logger) => match unsafe { AsyncFd::register(logger) } {
            Ok(mut fd) => {
                tokio::spawn(async move {
                    loop {
                        let Ok(mut guard) = fd.readable_mut().await else {
                            return;
                        };
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(e) => tracing::warn!("kernel-side logs unavailable: {e}"),
        },
        Err(e) => tracing::warn!("kernel-side logs unavailable: {e}"),
    }
}
