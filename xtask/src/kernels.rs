//! The kernel matrix: Debian's own kernels booted under QEMU (TCG), each running the
//! real-kernel test suites inside the guest on one of the two cgroup layouts production nodes
//! have: cgroup2 alone, or hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified). Kernel images are downloaded once into `target/kernels/` with a private apt
//! configuration (the system's apt sources are not touched).
use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{root, run};

/// One kernel of the matrix: a label (`--kernel`), the apt suite, and the package name pattern
/// (the newest match is used).
pub struct Kernel {
    pub label: &'static str,
    pub suite: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    /// The guest's cgroup layout: every run tests both, whatever the host has.
    pub layout: Layout,
}

#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// cgroup2 alone at /sys/fs/cgroup.
    Unified,
    /// cgroup v1 controllers (cpu, memory, pids, ...) under a tmpfs at /sys/fs/cgroup, cgroup2
    /// at /sys/fs/cgroup/unified with no controller: systemd's "hybrid", Debian 11's default.
    Hybrid,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Unified => "unified",
            Layout::Hybrid => "hybrid",
        }
    }
}

pub const MATRIX: [Kernel; 3] = [
    Kernel {
        label: "5.10",
        suite: "bullseye",
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64-unsigned",
        layout: Layout::Hybrid,
    },
    Kernel {
        label: "6.1",
        suite: "bookworm",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
        layout: Layout::Unified,
    },
    Kernel {
        label: "6.12",
        suite: "bookworm-backports",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64-unsigned",
        layout: Layout::Hybrid,
    },
];

/// The suites of the private sources list (6.12 is in bookworm-security and -backports).
const SUITES: [(&str, &str); 4] = [
    ("debian", "bullseye"),
    ("debian", "bookworm"),
    ("debian", "bookworm-backports"),
    ("debian-security", "bookworm-security"),
];

/// The real-kernel suites the guests run.
const GUEST_TESTS: [&str; 3] = ["kernel_probes", "settled", "verdicts"];

/// How long one guest may take: TCG is slow, but a hung guest must fail the suite.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// More for each repeated round of the suites.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const RESULT_MARK: &str = "GRACEFUL-GUEST-RESULT";

fn dir() -> PathBuf {
    root().join("target/kernels")
}

/// Archive base URL of the machine's Debian mirror (from its deb822 or classic sources).
fn mirror() -> String {
    let text = fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .or_else(|_| fs::read_to_string("/etc/apt/sources.list"))
        .unwrap_or_default();
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
        .map(|w| {
            w.trim_end_matches('/')
                .trim_end_matches("/debian")
                .to_string()
        })
        .unwrap_or_else(|| "http://deb.debian.org".into())
}

fn apt(args: &[&str]) -> Command {
    let d = dir().join("apt");
    let mut cmd = Command::new(args[0]);
    cmd.arg(format!(
        "-oDir::Etc::SourceList={}",
        d.join("sources.list").display()
    ))
    .arg("-oDir::Etc::SourceParts=/dev/null")
    .arg(format!("-oDir::State::Lists={}", d.join("lists").display()))
    .arg(format!("-oDir::Cache={}", d.join("cache").display()))
    .args(&args[1..]);
    cmd
}

fn apt_update() -> Result<()> {
    let d = dir().join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(d.join(sub))?;
    }
    let base = mirror();
    let sources: String = SUITES
        .iter()
        .map(|(archive, suite)| {
            format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {base}/{archive} {suite} main\n")
        })
        .collect();
    fs::write(d.join("sources.list"), sources)?;
    run(apt(&["apt-get", "update", "-q"]).stdout(Stdio::null()))
}

/// Digit groups of a version, compared as numbers.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The kernel image of `k`, downloaded and extracted once.
fn vmlinuz(k: &Kernel) -> Result<PathBuf> {
    let kdir = dir().join(k.label);
    let image = kdir.join("vmlinuz");
    if image.exists() {
        return Ok(image);
    }
    fs::create_dir_all(&kdir)?;
    if !dir()
        .join("apt/lists")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        apt_update()?;
    }
    let out = apt(&["apt-cache", "search", "--names-only", k.prefix])
        .output()
        .context("apt-cache search")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(k.prefix) && n.ends_with(k.suffix))
        .filter(|n| {
            let middle = &n[k.prefix.len()..n.len() - k.suffix.len()];
            middle.chars().all(|c| c.is_ascii_digit())
        })
        .max_by_key(|n| version_key(n))
        .with_context(|| format!("no {}*{} package in {}", k.prefix, k.suffix, k.suite))?
        .to_string();
    eprintln!("xtask: downloading {package}");
    run(apt(&["apt-get", "download", "-q", &package]).current_dir(&kdir))?;
    let deb = fs::read_dir(&kdir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("the downloaded package is missing")?;
    // Only the image: `boot/vmlinuz-*`, or `usr/lib/modules/*/vmlinuz*` in newer packages.
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*' './usr/lib/modules/*/vmlinuz*' 2>/dev/null; true",
        deb.display(),
        kdir.display()
    );
    run(Command::new("sh").arg("-c").arg(script))?;
    let found = ["boot", "usr/lib/modules"]
        .iter()
        .flat_map(|sub| walk(&kdir.join(sub)))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .with_context(|| format!("no vmlinuz in {}", deb.display()))?;
    fs::rename(&found, &image)?;
    fs::write(kdir.join("package"), &package)?;
    let _ = fs::remove_file(&deb);
    Ok(image)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Builds the guest test binaries and returns their paths.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "test",
        "-p",
        "graceful-tests",
        "--no-run",
        "--message-format=json",
    ])
    .current_dir(root())
    .stderr(Stdio::inherit());
    for t in GUEST_TESTS {
        cmd.args(["--test", t]);
    }
    let out = cmd.output().context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the guest tests failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        if GUEST_TESTS.contains(&name) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if found.len() != GUEST_TESTS.len() {
        bail!("expected test binaries {GUEST_TESTS:?}, cargo built {found:?}");
    }
    Ok(found)
}

/// Shared libraries `exe` loads (from ldd), the loader included.
fn libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(exe).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

fn copy_into(root: &Path, file: &Path) -> Result<()> {
    let dest = root.join(file.strip_prefix("/").unwrap_or(file));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(file, &dest).with_context(|| format!("copy {}", file.display()))?;
    Ok(())
}

/// The guest's /init: the cgroup layout the kernel command line names (`graceful.cgroups=`),
/// tracefs, then every suite.
fn init_script(tests: &[(String, PathBuf)], repeat: u32) -> String {
    let mut s = String::from(
        "#!/bbin/busybox sh\n\
         /bbin/busybox --install -s /bbin\n\
         export PATH=/bin:/bbin\n\
         mkdir -p /proc /sys /dev /tmp /run\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\n\
         if grep -q graceful.cgroups=hybrid /proc/cmdline; then\n\
           mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup\n\
           for c in cpu cpuacct cpuset memory devices freezer blkio pids; do\n\
             mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c\n\
           done\n\
           mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified\n\
         else\n\
           mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         fi\n\
         echo \"cgroup layout: $(grep cgroup /proc/mounts | cut -d' ' -f2,3 | tr '\\n' ' ')\"\n\
         mount -t tracefs tracefs /sys/kernel/tracing\n\
         mount -t bpf bpf /sys/fs/bpf 2>/dev/null\n\
         ip link set lo up\n\
         ulimit -n 65536\n\
         echo \"guest kernel $(uname -r)\"\n\
         rc=0\n",
    );
    // One test at a time: under TCG a guest oopsed once (int3 in __send_signal_locked) when one
    // test attached the signal tracepoint (live code patching) while another flooded signals.
    s += &format!("for round in $(seq 1 {repeat}); do\n");
    for (name, _) in tests {
        s += &format!(
            "echo \"== {name} (round $round of {repeat})\"\n\
             RUST_BACKTRACE=1 /tests/{name} --test-threads=1 || rc=1\n"
        );
    }
    s += "done\n";
    s += &format!("echo \"{RESULT_MARK} rc=$rc\"\nsync\npoweroff -f\n");
    s
}

/// Programs the suites run in their containers, as the host has them: busybox runs applets
/// without exec, so its `sh` would not behave as the host's does.
const GUEST_PROGRAMS: [(&str, &str); 3] = [
    ("/bin/sh", "sh"),
    ("/bin/sleep", "sleep"),
    // an init that blocks the stop signal and waits for it (Debian's tini, static build)
    ("/usr/bin/tini-static", "tini"),
];

/// Packs the guest's root: busybox (for the init), the host's sh and sleep, the test binaries
/// (debug info stripped) and their libraries.
fn initramfs(tests: &[(String, PathBuf)], repeat: u32) -> Result<PathBuf> {
    let work = dir().join("initramfs");
    let _ = fs::remove_dir_all(&work);
    for sub in [
        "bin",
        "bbin",
        "tests",
        "sys/fs/cgroup",
        "sys/kernel/tracing",
    ] {
        fs::create_dir_all(work.join(sub))?;
    }
    fs::copy("/bin/busybox", work.join("bbin/busybox")).context("busybox-static")?;
    let mut libs = Vec::new();
    for (program, name) in GUEST_PROGRAMS {
        let real = fs::canonicalize(program).with_context(|| format!("{program} on the host"))?;
        fs::copy(&real, work.join("bin").join(name))?;
        libs.extend(libraries(&real)?);
    }
    for (name, exe) in tests {
        let dest = work.join("tests").join(name);
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(exe))?;
        libs.extend(libraries(exe)?);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        copy_into(&work, lib)?;
    }
    let init = work.join("init");
    fs::write(&init, init_script(tests, repeat))?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    let cpio = dir().join("initramfs.cpio");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
        work.display(),
        cpio.display()
    )))?;
    Ok(cpio)
}

/// Boots `k` and runs the suites in it; fails unless every suite passed.
fn boot(k: &Kernel, image: &Path, cpio: &Path, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let log_path = dir().join(format!("{}.log", k.label));
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            // One host thread runs both vCPUs in turn: with a thread per vCPU, a 6.12 guest once
            // oopsed on the int3 of a half-patched tracepoint call while probes attached.
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(image)
        .arg("-initrd")
        .arg(cpio)
        .args([
            "-append",
            &format!(
                "console=ttyS0 panic=-1 quiet graceful.cgroups={}",
                k.layout.name()
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let stdout = child.stdout.take().context("qemu's output")?;
    let pid = child.id();
    // A guest that hangs is killed at the deadline; its output so far tells where.
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
        true
    });
    let mut log = String::new();
    let mut rc = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let line = line.replace('\r', "");
        println!("[{}] {line}", k.label);
        if let Some(r) = line.split(&format!("{RESULT_MARK} rc=")).nth(1) {
            rc = r.trim().parse::<i32>().ok();
        }
        log += &line;
        log.push('\n');
    }
    let _ = child.wait();
    let timed_out = watchdog.join().unwrap_or(false);
    fs::write(&log_path, &log)?;
    match rc {
        Some(0) => Ok(started.elapsed()),
        Some(_) => bail!(
            "kernel {}: the real-kernel suites failed in the guest (log: {})",
            k.label,
            log_path.display()
        ),
        None if timed_out => bail!(
            "kernel {}: the guest did not finish in {timeout:?} (log: {})",
            k.label,
            log_path.display()
        ),
        None => bail!(
            "kernel {}: the guest stopped before the suites finished (log: {})",
            k.label,
            log_path.display()
        ),
    }
}

/// Runs the real-kernel suites on each kernel of `labels` (all of the matrix when empty).
pub fn test(labels: &[String], repeat: u32) -> Result<()> {
    let chosen: Vec<&Kernel> = if labels.is_empty() {
        MATRIX.iter().collect()
    } else {
        labels
            .iter()
            .map(|l| {
                MATRIX.iter().find(|k| k.label == l).with_context(|| {
                    format!(
                        "unknown kernel {l}: choose from {:?}",
                        MATRIX.iter().map(|k| k.label).collect::<Vec<_>>()
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let images: Vec<PathBuf> = chosen.iter().map(|k| vmlinuz(k)).collect::<Result<_>>()?;
    let cpio = initramfs(&test_binaries()?, repeat)?;
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for (k, image) in chosen.iter().zip(&images) {
        let timeout = GUEST_TIMEOUT + ROUND_TIMEOUT * repeat.saturating_sub(1);
        match boot(k, image, &cpio, timeout) {
            Ok(t) => times.push(format!(
                "{} ({}) {:.0} s",
                k.label,
                k.layout.name(),
                t.as_secs_f64()
            )),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    eprintln!("xtask: kernel matrix passed on: {}", times.join(", "));
    if !failures.is_empty() {
        bail!("kernel matrix failed:\n{}", failures.join("\n"));
    }
    Ok(())
}
