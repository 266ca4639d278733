//! The real `graceful-daemon` binary as the end-to-end tests, the CLI tests and the benchmark
//! run it, and the HTTP client that reads its endpoints back.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon binary next to this test's target dir (`cargo xtask test` builds it first).
pub fn daemon_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("graceful-daemon");
    assert!(bin.exists(), "{} is missing: build it first (`cargo build -p graceful-daemon`, as `cargo xtask test` does)", bin.display());
    // A test must run the code it sits beside, never a binary older than the daemon's sources.
    let built = modified(&bin).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for crate_src in [
        "graceful-daemon/src",
        "graceful-common/src",
        "graceful-ebpf/src",
    ] {
        if let Some(newer) = newest(&root.join(crate_src)).filter(|(at, _)| *at > built) {
            panic!(
                "{} is older than {}: rebuild it (`cargo build -p graceful-daemon`, as `cargo xtask test` does)",
                bin.display(),
                newer.1.display()
            );
        }
    }
    bin
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// The most recently modified file under `dir`, and when.
fn newest(dir: &std::path::Path) -> Option<(std::time::SystemTime, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            if path.is_dir() {
                newest(&path)
            } else {
                Some((modified(&path)?, path))
            }
        })
        .max_by_key(|(at, _)| *at)
}

/// A loopback address with a port free at the time of asking.
pub fn free_loopback() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The records `/terminations` holds, newest first (none while it does not answer).
pub fn terminations(addr: SocketAddr) -> Vec<serde_json::Value> {
    http_get(addr, "/terminations")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

/// Waits for the record whose JSON at `pointer` (e.g. `/container/id`) is `value`.
pub fn record_where(addr: SocketAddr, pointer: &str, value: &str) -> serde_json::Value {
    eventually(&format!("the record with {pointer} {value}"), || {
        terminations(addr)
            .into_iter()
            .find(|r| r.pointer(pointer).and_then(|v| v.as_str()) == Some(value))
    })
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls until `f` gives Some (a bounded wait on the daemon's own state, not a sleep).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Daemon {
    /// `run` with CRI at `socket`, JSON logs into `log` and a 3 s TTL for container and workload
    /// series, once `/readyz` answers.
    pub fn start(socket: &Path, log: PathBuf) -> Daemon {
        let socket = socket.to_string_lossy();
        Daemon::start_with(
            &[
                "--series-ttl",
                "3s",
                "--workload-series-ttl",
                "3s",
                "--log-format",
                "json",
                "--cri-socket",
                &socket,
            ],
            log,
        )
    }

    /// `run` with these flags (and a free loopback port), stderr into `log`, once `/readyz` answers.
    pub fn start_with(flags: &[&str], log: PathBuf) -> Daemon {
        Daemon::start_under(&[], flags, log)
    }

    /// As `start_with`, through a wrapper command (`setpriv ...`) that then execs the daemon.
    pub fn start_under(wrapper: &[&str], flags: &[&str], log: PathBuf) -> Daemon {
        Daemon::start_env(wrapper, flags, &[], log)
    }

    /// As `start_under`, with these environment variables (`KUBECONFIG`, `NODE_NAME`).
    pub fn start_env(
        wrapper: &[&str],
        flags: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Daemon {
        // A free port can be taken by another test between our probe and the daemon's bind:
        // then the daemon exits at once, saying so, and gets another port.
        for _ in 0..5 {
            let addr = free_loopback();
            let mut command = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(daemon_binary());
                    c
                }
                None => Command::new(daemon_binary()),
            };
            let child = command
                .args(["run", "--metrics-addr", &addr.to_string()])
                .args(flags)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut d = Daemon { child, addr };
            let ready = eventually("/readyz or an exit", || {
                if let Ok(Some(status)) = d.child.try_wait() {
                    return Some(Err(status));
                }
                http_get(addr, "/readyz")
                    .filter(|(s, _)| *s == 200)
                    .map(|_| Ok(()))
            });
            match ready {
                Ok(()) => return d,
                Err(status) => {
                    let said = std::fs::read_to_string(&log).unwrap_or_default();
                    std::mem::forget(d);
                    assert!(
                        said.contains("Address already in use"),
                        "the daemon exited ({status}): {said}"
                    );
                }
            }
        }
        panic!("no free port for the daemon in 5 tries");
    }

    /// SIGTERM, then the exit status (bounded by TIMEOUT).
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = eventually("the daemon to exit", || {
            self.child.try_wait().ok().flatten()
        });
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
