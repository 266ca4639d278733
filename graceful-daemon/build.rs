//! Builds the kernel programs (graceful-ebpf) for bpfel-unknown-none and leaves the object in
//! OUT_DIR for `include_bytes!`.
//!
//! Not aya-build: it needs `-Z build-std`, and the toolchains here have no rust-src. Debian's
//! rustc ships a precompiled `core` for the BPF target instead (see `cargo xtask setup`).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let ebpf = root.join("graceful-ebpf");
    for dir in ["graceful-ebpf/src", "graceful-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=GRACEFUL_BPF_RUSTC");

    println!("cargo:rerun-if-env-changed=GRACEFUL_NO_EBPF");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let rustc = env::var("GRACEFUL_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    // As aya-template does: `cargo check`, clippy and docs need no BPF toolchain. The empty
    // stand-in object makes the probes refuse to load, saying why.
    let stand_in = env::var_os("GRACEFUL_NO_EBPF").is_some();
    if stand_in || !Path::new(&rustc).exists() {
        if !stand_in {
            println!("cargo:warning=no eBPF-capable rustc at {rustc}: built with an empty stand-in eBPF object (run `cargo xtask setup`, or set GRACEFUL_BPF_RUSTC)");
        }
        std::fs::write(out.join("graceful"), []).expect("write the stand-in object");
        return;
    }
    // One target dir for every profile of the host build, beside the workspace's own.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("ebpf"))
        .unwrap_or_else(|| out.join("ebpf"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The benchmark's floor programs only in a test-utils build, never in the shipped object.
    if env::var_os("CARGO_FEATURE_TEST_UTILS").is_some() {
        cmd.args(["--features", "floor"]);
    }
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!("{home}/.cargo/bin:{}", env::var("PATH").unwrap_or_default());
    cmd.env("PATH", path)
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        );
    let status = cmd.status().expect("run cargo for graceful-ebpf");
    if !status.success() {
        panic!("building graceful-ebpf failed ({status}); `cargo xtask setup` installs the BPF toolchain");
    }
    let object = target_dir.join("bpfel-unknown-none/release/graceful");
    std::fs::copy(&object, out.join("graceful")).expect("copy the eBPF object");
}
