//! For the benchmark: the floor (programs on the same hooks that return at once) and the
//! kernel's BPF run-time statistics.
use aya::{programs::Program, Ebpf, EbpfLoader};
use graceful_common::Config;

use super::{check_prerequisites, load_error, ProbeError, OBJECT};

/// The benchmark's floor: programs on the daemon's signal, exit, exec, fork and TCP state hooks
/// that return at once (`signal_generate_floor` reads the signal number and compares), the least
/// any program there can cost. Detached when dropped.
pub struct FloorProbe {
    _ebpf: Ebpf,
}

impl FloorProbe {
    pub fn attach() -> Result<FloorProbe, ProbeError> {
        check_prerequisites()?;
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &Config::default(), true)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(e.to_string()))?;
        let name = "signal_generate_floor";
        let Some(Program::RawTracePoint(p)) = ebpf.program_mut(name) else {
            return Err(ProbeError::Load(format!(
                "{name} is missing or not a raw tracepoint"
            )));
        };
        p.load().map_err(|e| load_error(name, e))?;
        p.attach("signal_generate")
            .map_err(|e| ProbeError::Attach {
                program: name.into(),
                tracepoint: "signal:signal_generate".into(),
                error: e.to_string(),
            })?;
        for (name, category, tracepoint) in [
            ("sched_process_exit_floor", "sched", "sched_process_exit"),
            ("sched_process_exec_floor", "sched", "sched_process_exec"),
            ("task_newtask_floor", "task", "task_newtask"),
            ("inet_sock_set_state_floor", "sock", "inet_sock_set_state"),
        ] {
            let Some(Program::TracePoint(p)) = ebpf.program_mut(name) else {
                return Err(ProbeError::Load(format!(
                    "{name} is missing or not a tracepoint"
                )));
            };
            p.load().map_err(|e| load_error(name, e))?;
            p.attach(category, tracepoint)
                .map_err(|e| ProbeError::Attach {
                    program: name.into(),
                    tracepoint: format!("{category}:{tracepoint}"),
                    error: e.to_string(),
                })?;
        }
        Ok(FloorProbe { _ebpf: ebpf })
    }
}

/// Keeps `kernel.bpf_stats_enabled` on while held.
pub struct BpfStats {
    _fd: std::os::fd::OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats, ProbeError> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(|fd| BpfStats { _fd: fd })
            .map_err(|e| ProbeError::Load(format!("enable BPF run-time stats: {e}")))
    }
}
