//! A process the kernel holds past its SIGKILL, as a hung FUSE mount holds it: a FUSE server
//! of our own answers the mount's INIT and then reads every request and answers none. A
//! container's PID 1 opening a file there waits for the answer; once SIGKILLed it waits on,
//! uninterruptibly (state D), and the daemon must say so in an interim `stuck` record, then
//! write the final record when the server goes away and the process ends.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use graceful::{cgroup::Cgroup2, signals::Signal, throwaway::Throwaway};
use graceful_tests::daemon::{eventually, http_get, terminations, Daemon};

const FUSE_INIT: u32 = 26;
/// `struct fuse_in_header`: len, opcode, unique, nodeid, uid, gid, pid, padding.
const IN_HEADER: usize = 40;

/// A FUSE mount whose server answers INIT and nothing else. Dropping it aborts the connection
/// (closing the device fails every request in flight) and detaches the mount.
struct HungMount {
    dir: PathBuf,
    /// Written to (closed) to stop the server, which holds the only device fd.
    stop: Option<OwnedFd>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl HungMount {
    fn new(name: &str) -> HungMount {
        let dir = std::env::temp_dir().join(format!("graceful-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let path = CString::new("/dev/fuse").expect("path");
        // SAFETY: a valid C string; the fd is owned below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(
            fd >= 0,
            "/dev/fuse: {} (this test needs the kernel's FUSE)",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd of ours.
        let device = unsafe { OwnedFd::from_raw_fd(fd) };
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
        let options =
            CString::new(format!("fd={fd},rootmode=40000,user_id=0,group_id=0")).expect("options");
        let (source, fstype) = (c"graceful-hung", c"fuse");
        // SAFETY: valid C strings; `options` is the data FUSE's mount reads.
        let mounted = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            mounted,
            0,
            "mount fuse: {}",
            std::io::Error::last_os_error()
        );
        let mut pipe = [0; 2];
        // SAFETY: a two-int array for pipe2.
        assert_eq!(
            unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: fresh fds of ours.
        let (stopped, stop) =
            unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let server = std::thread::spawn(move || serve_init_only(device, stopped));
        HungMount {
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }
}

/// Answers FUSE_INIT; reads every other request and never answers it. Returns when `stopped`
/// is closed, dropping the device, the last fd of the connection, which aborts it.
fn serve_init_only(device: OwnedFd, stopped: OwnedFd) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: device.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stopped.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds of ours.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0 || fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
        if fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(device.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                _ => return, // ENODEV: aborted
            }
        }
        let n = n as usize;
        if n < IN_HEADER + 8 {
            continue;
        }
        let word = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4]));
        if word(4) != FUSE_INIT {
            continue; // held: the requester waits for an answer that never comes
        }
        let unique = u64::from_ne_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
        let minor = word(IN_HEADER + 4);
        // fuse_out_header (len, error, unique) + fuse_init_out (64 bytes): major, minor,
        // max_readahead, flags, max_background, congestion_threshold, max_write, ...
        let mut reply = Vec::with_capacity(16 + 64);
        reply.extend_from_slice(&(16u32 + 64).to_ne_bytes());
        reply.extend_from_slice(&0i32.to_ne_bytes());
        reply.extend_from_slice(&unique.to_ne_bytes());
        let mut init_out = [0u8; 64];
        init_out[0..4].copy_from_slice(&7u32.to_ne_bytes());
        init_out[4..8].copy_from_slice(&minor.min(31).to_ne_bytes());
        init_out[8..12].copy_from_slice(&65536u32.to_ne_bytes());
        init_out[24..28].copy_from_slice(&4096u32.to_ne_bytes());
        reply.extend_from_slice(&init_out);
        // SAFETY: writing our own buffer.
        unsafe { libc::write(device.as_raw_fd(), reply.as_ptr().cast(), reply.len()) };
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        // The server drops the device, the connection's last fd: every request in flight fails.
        drop(self.stop.take());
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        if let Ok(target) = CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The records of a cgroup on /terminations, oldest first.
fn records_of(addr: std::net::SocketAddr, cgroup: &str) -> Vec<serde_json::Value> {
    let mut list: Vec<serde_json::Value> = terminations(addr)
        .into_iter()
        .filter(|r| r["container"]["cgroup"] == cgroup)
        .collect();
    list.reverse();
    list
}

#[test]
fn a_process_held_past_its_sigkill_gets_an_interim_stuck_record_then_its_final_one() {
    let log = std::env::temp_dir().join(format!("graceful-unkillable-{}", std::process::id()));
    let daemon = Daemon::start_with(&[], log.clone());
    let mount = HungMount::new("hung-fuse");
    let mut cgroups = Cgroup2::discover().unwrap();
    let run_cgroup = graceful::throwaway::Parent::new(&format!(
        "/graceful-tests/unkillable-{}",
        std::process::id()
    ));
    let file = mount.dir.join("data").display().to_string();
    let mut sb = Throwaway::spawn(
        &mut cgroups,
        run_cgroup.path(),
        "held",
        &["/bin/cat", &file],
    )
    .unwrap();
    // Waiting for the server's answer: in the kernel, in FUSE's request wait.
    let init = sb.init;
    eventually("cat waiting in FUSE", || {
        let status = graceful::procfs::ProcStatus::read(init as u32).ok()?;
        (status.comm == "cat" && graceful::procfs::wchan(init as u32).is_some()).then_some(())
    });
    sb.signal(Signal::TERM).unwrap();
    assert!(
        sb.wait(Duration::from_secs(1)).unwrap().is_none(),
        "cat has no way to end"
    );
    sb.signal(Signal::KILL).unwrap();
    let interim = eventually("the interim stuck record", || {
        records_of(daemon.addr, &sb.cgroup).into_iter().next()
    });
    assert_eq!(interim["outcome"], "stuck", "{interim:#}");
    assert_eq!(interim["verdict"], "unkillable", "{interim:#}");
    let held = &interim["stuck"][0];
    assert_eq!(held["pid"], init, "{interim:#}");
    assert_eq!(held["comm"], "cat", "{interim:#}");
    assert_eq!(held["state"], "D", "uninterruptible: {interim:#}");
    // The kernel shows a process's wchan only to a reader that may ptrace it: the daemon,
    // which keeps no capability, gets null (the test, as root, sees it).
    assert!(held["wchan"].is_null(), "{interim:#}");
    assert!(graceful::procfs::wchan(init as u32).is_some_and(|w| !w.is_empty()));
    assert!(
        interim["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("cat (pid") && e.contains("has not exited")),
        "{interim:#}"
    );
    // Counted once per node, the interim record only.
    let (_, metrics) = http_get(daemon.addr, "/metrics").expect("/metrics");
    assert!(
        metrics.contains("\ngraceful_unkillable_stops_total 1\n"),
        "{metrics}"
    );
    // The server goes away: the request fails, the SIGKILL ends cat, the record is final.
    drop(mount);
    assert!(
        sb.wait(Duration::from_secs(30)).unwrap().is_some(),
        "cat ended once its mount was gone"
    );
    let last = eventually("the final record", || {
        records_of(daemon.addr, &sb.cgroup)
            .into_iter()
            .find(|r| r["outcome"] != "stuck")
    });
    assert_eq!(last["outcome"], "killed_after_grace", "{last:#}");
    assert_eq!(last["exit"]["signal"], 9, "{last:#}");
    assert!(last.get("stuck").is_none(), "{last:#}");
    drop(sb);
    drop(daemon);
    let _ = std::fs::remove_file(&log);
}
