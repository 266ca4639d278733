//! `cargo xtask image`: localhost/graceful:dev from deploy/Containerfile with podman. No image
//! registry is reachable here, so its base is made from this machine's own files: the shared
//! libraries the daemon links (as `ldd` lists them), which is what distroless/cc provides.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run};

pub const IMAGE: &str = "localhost/graceful:dev";
const BASE: &str = "localhost/graceful-base:dev";

pub fn build() -> Result<()> {
    cargo(&["build", "--release", "-p", "graceful-daemon"])?;
    let binary = root().join("target/release/graceful-daemon");
    let dir = root().join("target/image");
    let _ = std::fs::remove_dir_all(&dir);
    let (rootfs, context) = (dir.join("rootfs"), dir.join("context"));
    std::fs::create_dir_all(&context)?;
    for lib in linked_libraries(&binary)? {
        let to = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        std::fs::create_dir_all(to.parent().context("a library path")?)?;
        std::fs::copy(&lib, &to).with_context(|| format!("copy {}", lib.display()))?;
    }
    for d in ["tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/sbin/nologin\n",
    )?;
    let tarball = dir.join("base.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg("."))?;
    // The last run's images go first: rebuilt under the same names, they would stay behind
    // untagged and fill the disk run after run.
    let _ = Command::new("podman")
        .args(["rmi", "--force", "--ignore", IMAGE, BASE])
        .stdout(std::process::Stdio::null())
        .status();
    run(Command::new("podman").arg("import").arg(&tarball).arg(BASE))?;
    std::fs::copy(&binary, context.join("graceful-daemon"))?;
    run(Command::new("podman")
        .args(["build", "--pull=never", "--build-arg"])
        .arg(format!("BASE={BASE}"))
        .args(["-t", IMAGE, "-f"])
        .arg(root().join("deploy/Containerfile"))
        .arg(&context))
}

/// The shared objects `ldd` says the binary loads, the dynamic loader included.
fn linked_libraries(binary: &Path) -> Result<Vec<std::path::PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(std::path::PathBuf::from(p));
        }
    }
    Ok(libs)
}
