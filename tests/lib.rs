//! Test harness for the real kernel (after Exein pulsar's TestRunner): load the probes, do
//! something to real processes, then await the events it must cause.
//!
//! The tests need root and a BPF-capable kernel; when either is missing they fail, loudly.
pub mod check_cli;
pub mod cri;
pub mod daemon;
pub mod drain;
pub mod kube_api;
pub mod manifests;

use std::time::Duration;

use graceful::{
    cgroup::Cgroup2,
    events::{CgroupId, Event, ExecEvent, ExitEvent, SignalEvent},
    pipeline::Session,
    probes::{ProbeOptions, Probes},
    signals::Signal,
    throwaway::Throwaway,
};
use tokio::sync::mpsc::Receiver;

/// A PID 1 that stops cleanly: it forwards the stop signal to its worker and waits for it.
/// The trap reads `$!`, never a variable assigned after the `&`: a stop signal sent as soon as
/// the worker runs can come before that assignment, and the trap would then kill nobody.
pub const GRACEFUL_SCRIPT: &str = "trap 'kill -TERM $!; wait $!; exit 0' TERM; sleep 1000 & wait";

/// How long an expected event may take before the test fails (a bound, not a synchronisation).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Kernel {
    pub probes: Probes,
    pub cgroups: Cgroup2,
    events: Receiver<Event>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
    /// Indexes in `seen` that an `expect` already returned.
    taken: std::collections::HashSet<usize>,
    /// cgroup (below the cgroup2 root) that holds this test's sandboxes.
    pub parent: String,
    /// Removes it once the test's sandboxes are gone.
    _run_cgroup: graceful::throwaway::Parent,
}

impl Kernel {
    pub async fn start(test: &str) -> Kernel {
        Kernel::start_with(test, ProbeOptions::default()).await
    }

    pub async fn start_with(test: &str, options: ProbeOptions) -> Kernel {
        let Session {
            probes,
            events,
            pipeline,
        } = Session::start(&options).unwrap_or_else(|e| {
            panic!("kernel tests need root, BPF and cgroup2; loading the probes failed: {e}")
        });
        // These tests read the raw event stream themselves.
        let cgroups = pipeline.into_cgroups();
        let parent = format!("/graceful-tests/{test}-{}", std::process::id());
        Kernel {
            _run_cgroup: graceful::throwaway::Parent::new(&parent),
            probes,
            cgroups,
            events,
            seen: Vec::new(),
            taken: Default::default(),
            parent,
        }
    }

    /// The first matching event not returned before, among those already received or still
    /// to come; panics with `what` and the events seen if none comes in time.
    pub async fn expect(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        if let Some(i) =
            (0..self.seen.len()).find(|i| !self.taken.contains(i) && matches(&self.seen[*i]))
        {
            self.taken.insert(i);
            return self.seen[i].clone();
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    if matches(&event) {
                        self.taken.insert(self.seen.len() - 1);
                        return event;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {EVENT_TIMEOUT:?}; last events seen: {:#?}",
                    &self.seen[self.seen.len().saturating_sub(20)..]
                ),
            }
        }
    }
}

impl Kernel {
    /// The first event `pick` accepts, as `expect` finds it, turned into what `pick` returns.
    pub async fn expect_some<T>(&mut self, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let event = self.expect(what, |e| pick(e).is_some()).await;
        pick(&event).unwrap_or_else(|| panic!("{what}: matched {event:?}"))
    }

    /// The next `signal` to `target` (a process id).
    pub async fn expect_signal(&mut self, signal: Signal, target: u32) -> SignalEvent {
        self.expect_some(&format!("{signal} to {target}"), |e| match e {
            Event::Signal(s) if s.signal == signal && s.target_pid == target => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// The exit of process `pid`.
    pub async fn expect_exit(&mut self, pid: u32) -> ExitEvent {
        self.expect_some(&format!("exit of {pid}"), |e| match e {
            Event::Exit(x) if x.pid == pid => Some(x.clone()),
            _ => None,
        })
        .await
    }

    /// An exec of `comm` in the cgroup `cgroup` (the kernel reports a running container's
    /// first exec, and every exec once it is being stopped).
    pub async fn expect_exec(&mut self, cgroup: CgroupId, comm: &str) -> ExecEvent {
        self.expect_some(&format!("exec of {comm} in cgroup {cgroup}"), |e| match e {
            Event::Exec(x) if x.cgroup == cgroup && x.comm == comm => Some(x.clone()),
            _ => None,
        })
        .await
    }
}

/// Waits until a process of the sandbox runs `program` (its comm, from /proc) and is done
/// exec'ing it, and returns its pid: a running container's forks and execs do not reach the
/// event stream.
pub fn wait_for_program(sb: &Throwaway, program: &str) -> u32 {
    wait_for_process(sb, program, |pid| {
        graceful::procfs::comm(pid).is_some_and(|comm| comm == program)
    })
}

/// As [`wait_for_program`], for the process whose command line is exactly `argv` (several
/// runs of one program tell apart only by their arguments).
pub fn wait_for_command(sb: &Throwaway, argv: &[&str]) -> u32 {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    wait_for_process(sb, &argv.join(" "), |pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted)
    })
}

/// The comm and the command line change inside execve, before the kernel's exec tracepoint
/// fires: a process that matched is only done exec'ing once it is seen, after matching,
/// blocked in some other system call (`/proc/<pid>/syscall` says "running" while it runs).
fn wait_for_process(sb: &Throwaway, what: &str, matches: impl Fn(i32) -> bool) -> u32 {
    let past_exec = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
            .is_some_and(|nr| nr != libc::SYS_execve && nr != libc::SYS_execveat)
    };
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        if let Some(pid) = sb.pids().into_iter().find(|&p| matches(p) && past_exec(p)) {
            return pid as u32;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never ran {what}: {:?}",
            sb.cgroup,
            sb.programs()
        );
        std::thread::yield_now();
    }
}

/// Waits until `pid` sleeps with no signal blocked. A shell blocks every signal for a moment
/// around each wait, and a blocked signal is never "ignored" at generation (it is queued and
/// dropped later): the kernel's `result` is only deterministic once the shell sleeps.
pub fn wait_until_quiescent(pid: i32) {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let status = u32::try_from(pid)
            .ok()
            .and_then(|pid| graceful::procfs::ProcStatus::read(pid).ok())
            .unwrap_or_default();
        if status.state == 'S' && status.sig_blk == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never settled: {status:?}"
        );
        std::thread::yield_now();
    }
}

/// A fresh fifo in the temp dir, for a script to wait on.
pub fn fifo(name: &str) -> std::path::PathBuf {
    let fifo = std::env::temp_dir().join(format!("graceful-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    fifo
}

/// Writes a line to `fifo` once a script has it open at its `read` (a dead script fails the
/// test instead of blocking it). The script must read in a loop (`until read a < F; do :;
/// done`): it may reopen the fifo before this writer is closed, and that read ends empty.
pub fn release(fifo: &std::path::Path) {
    let mut w = daemon::eventually("the script at its read", || {
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            std::fs::OpenOptions::new().write(true),
            libc::O_NONBLOCK,
        )
        .open(fifo)
        .ok()
    });
    std::io::Write::write_all(&mut w, b"go\n").unwrap();
}
