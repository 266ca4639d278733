//! Throwaway containers for `demo`, the tests and the benchmarks: a cgroup2 cgroup plus a new
//! pid namespace whose init runs a command, stopped the way runc stops a container.
use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use crate::{
    cgroup::Cgroup2,
    events::{CgroupId, ExitStatus},
    signals::Signal,
};

/// How a throwaway container starts, beyond its command.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// In bytes: cgroup2 `memory.max`, or the v1 memory controller on hybrid hosts where
    /// cgroup2 has no memory controller.
    pub memory_limit: Option<u64>,
    /// `KEY=VALUE` on top of what a runtime gives (a later one wins over an earlier key).
    pub env: Vec<String>,
}

/// What a runtime puts in a container's environment (runc: PATH, HOME; the kubelet:
/// HOSTNAME), then `extra`, each key once.
fn environment(hostname: &str, extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        format!("HOSTNAME={hostname}"),
        "HOME=/root".into(),
    ];
    for var in extra {
        let key = var.split('=').next().unwrap_or(var);
        env.retain(|v| v.split('=').next() != Some(key));
        env.push(var.clone());
    }
    env
}

/// The cgroup that holds a run's throwaway containers. Dropped after them (declare it first),
/// it removes itself and its ancestors wherever they are empty, in every hierarchy (a memory
/// limit on a hybrid host makes a v1 memory cgroup too).
#[derive(Debug)]
pub struct Parent(String);

impl Parent {
    pub fn new(path: &str) -> Parent {
        Parent(path.to_string())
    }

    pub fn path(&self) -> &str {
        &self.0
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        let mut path = self.0.trim_end_matches('/');
        while !path.is_empty() {
            crate::cgroup::remove_everywhere_if_empty(path);
            path = path.rsplit_once('/').map_or("", |(up, _)| up);
        }
    }
}

/// A running throwaway container. Dropping it kills what is left and removes its cgroup.
#[derive(Debug)]
pub struct Throwaway {
    /// Path below the cgroup2 root.
    pub cgroup: String,
    /// A cgroup v1 memory cgroup the init joined too (hybrid hosts), removed on drop.
    memory_v1: Option<PathBuf>,
    pub cgroup_id: CgroupId,
    /// Host pid of the pid namespace's init.
    pub init: i32,
    dir: PathBuf,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

struct ChildArgs {
    procs_fd: i32,
    /// cgroup v1 memory `cgroup.procs`, or -1.
    memory_procs_fd: i32,
    devnull: i32,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // Only async-signal-safe calls between clone and exec.
    // SAFETY: `arg` points to the parent's ChildArgs, copied into this address space by clone.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        if libc::write(a.procs_fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(126);
        }
        if a.memory_procs_fd >= 0 && libc::write(a.memory_procs_fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(126);
        }
        for fd in 0..3 {
            libc::dup2(a.devnull, fd);
        }
        // As runc starts a container's process: a session of its own (a `kill 0` inside stays
        // inside), every signal unblocked and at its default action (we ignore SIGPIPE, and
        // SIG_IGN would survive the exec).
        libc::setsid();
        let mut empty: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, core::ptr::null_mut());
        // The raw system call: libc's refuses the real-time signals it keeps for itself (32,
        // 33), which a parent may still have left ignored. All zero is SIG_DFL in the kernel's
        // struct sigaction (handler, flags, restorer, mask).
        let default = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    core::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        libc::execve(a.argv[0], a.argv.as_ptr(), a.envp.as_ptr());
        libc::_exit(127)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

impl Throwaway {
    /// Starts `argv` as PID 1 of a new pid namespace inside a new cgroup `parent/name`.
    pub fn spawn(
        cgroups: &mut Cgroup2,
        parent: &str,
        name: &str,
        argv: &[&str],
    ) -> io::Result<Throwaway> {
        Throwaway::spawn_with(cgroups, parent, name, argv, &SpawnOptions::default())
    }

    /// As `spawn`, with a memory limit and more environment.
    pub fn spawn_with(
        cgroups: &mut Cgroup2,
        parent: &str,
        name: &str,
        argv: &[&str],
        options: &SpawnOptions,
    ) -> io::Result<Throwaway> {
        let memory_limit = options.memory_limit;
        let cgroup = format!("{}/{}", parent.trim_end_matches('/'), name);
        let dir = cgroups.dir(&cgroup);
        fs::create_dir_all(&dir)?;
        let memory_v1 = match memory_limit {
            Some(limit) => limit_memory(cgroups, &cgroup, limit)?,
            None => None,
        };
        let memory_procs = match &memory_v1 {
            Some(d) => Some(
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))?,
            ),
            None => None,
        };
        let cgroup_id = cgroups
            .remember(&cgroup)
            .ok_or_else(|| io::Error::other(format!("cgroup {cgroup} vanished")))?;
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        let devnull = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        let args: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<io::Result<_>>()?;
        let env: Vec<CString> = environment(name, &options.env)
            .iter()
            .map(|v| cstr(v))
            .collect::<io::Result<_>>()?;
        let mut child = ChildArgs {
            procs_fd: procs.as_raw_fd(),
            memory_procs_fd: memory_procs.as_ref().map_or(-1, |f| f.as_raw_fd()),
            devnull: devnull.as_raw_fd(),
            argv: args
                .iter()
                .map(|a| a.as_ptr())
                .chain([std::ptr::null()])
                .collect(),
            envp: env
                .iter()
                .map(|a| a.as_ptr())
                .chain([std::ptr::null()])
                .collect(),
        };
        let mut stack = vec![0u8; 256 * 1024];
        // SAFETY: the stack outlives the call (the child gets a copy: no CLONE_VM); child_main
        // only makes async-signal-safe calls before execve.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
            libc::clone(
                child_main,
                top,
                libc::CLONE_NEWPID | libc::SIGCHLD,
                (&mut child as *mut ChildArgs).cast(),
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain syscall on our own child.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Throwaway {
            cgroup,
            memory_v1,
            cgroup_id,
            init: pid,
            dir,
            // SAFETY: a fresh fd we own.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            status: None,
        })
    }

    /// Sends a signal to the init from outside the container, as a runtime does.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: the pid is our unreaped child, so it cannot have been reused.
        if unsafe { libc::kill(self.init, signal.0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the init to exit (and reaps it), up to `timeout`; None if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(None);
        }
        let mut raw = 0;
        // SAFETY: our child; reaps it.
        if unsafe { libc::waitpid(self.init, &mut raw, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let status = if libc::WIFSIGNALED(raw) {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(raw)),
            }
        } else {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(raw)),
                signal: None,
            }
        };
        self.status = Some(status);
        Ok(Some(status))
    }

    /// Stops the container like runc: the stop signal to the init, up to `grace` for it to
    /// exit, then SIGKILL. Returns the init's exit status.
    pub fn stop(&mut self, stop_signal: Signal, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(stop_signal)?;
        if let Some(status) = self.wait(grace)? {
            return Ok(status);
        }
        self.signal(Signal::KILL)?;
        self.wait(Duration::from_secs(30))?
            .ok_or_else(|| io::Error::other("init survived SIGKILL for 30 s"))
    }

    /// Host pids of the processes in the container's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        crate::cgroup::procs(&self.dir)
    }

    /// The programs its processes run now (`/proc/<pid>/comm`): a forked child bears its
    /// parent's name until it execs, or until a busybox applet names itself without exec.
    pub fn programs(&self) -> Vec<String> {
        self.pids()
            .into_iter()
            .filter_map(crate::procfs::comm)
            .collect()
    }

    /// Waits until the cgroup has no process left (cgroup.events `populated 0`).
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let events = self.dir.join("cgroup.events");
        loop {
            let populated = fs::read_to_string(&events)
                .map(|t| t.contains("populated 1"))
                .unwrap_or(false);
            if !populated {
                return true;
            }
            let Ok(file) = fs::File::open(&events) else {
                return true;
            };
            // cgroup.events signals changes with POLLPRI; re-read after each.
            let mut pfd = libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 1000) as i32) };
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        if self.status.is_none() {
            let _ = self.signal(Signal::KILL);
            let _ = self.wait(Duration::from_secs(10));
        }
        self.wait_empty(Duration::from_secs(10));
        let _ = fs::remove_dir(&self.dir);
        if let Some(d) = &self.memory_v1 {
            let _ = fs::remove_dir(d);
        }
    }
}

const MEMORY_V1: &str = "/sys/fs/cgroup/memory";

/// Sets a memory limit on `cgroup`; returns the v1 memory cgroup the init must join, if any.
fn limit_memory(cgroups: &Cgroup2, cgroup: &str, limit: u64) -> io::Result<Option<PathBuf>> {
    let root_controllers =
        fs::read_to_string(cgroups.dir("/").join("cgroup.controllers")).unwrap_or_default();
    if root_controllers.split_whitespace().any(|c| c == "memory") {
        // Enable the controller on every ancestor, then limit the leaf.
        let mut path = String::new();
        for part in cgroup
            .trim_start_matches('/')
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, a)| a)
        {
            fs::write(cgroups.dir(&path).join("cgroup.subtree_control"), "+memory")?;
            path = format!("{path}/{part}");
        }
        fs::write(cgroups.dir(&path).join("cgroup.subtree_control"), "+memory")?;
        fs::write(cgroups.dir(cgroup).join("memory.max"), limit.to_string())?;
        return Ok(None);
    }
    let dir = PathBuf::from(MEMORY_V1).join(cgroup.trim_start_matches('/'));
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::environment;

    #[test]
    fn the_environment_is_a_runtimes_and_extra_keys_win() {
        let env = environment("web", &["HOME=/app".into(), "MODE=prod".into()]);
        assert!(env.iter().any(|v| v.starts_with("PATH=/usr/local/sbin:")));
        assert!(env.contains(&"HOSTNAME=web".to_string()));
        assert!(env.contains(&"HOME=/app".to_string()) && !env.contains(&"HOME=/root".to_string()));
        assert!(env.contains(&"MODE=prod".to_string()));
    }
}
