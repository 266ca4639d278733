//! The image (localhost/graceful:dev, built by `cargo xtask image`) run with podman under exactly
//! the DaemonSet's security settings, read from the rendered manifest: capabilities, hostPID,
//! read-only root filesystem, seccomp, the same host mounts read-only. It must become ready and
//! record a container's stop: the manifest's least privilege is proven by running it.
use std::{net::SocketAddr, process::Command};

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, free_loopback, http_get, record_where},
    manifests::{of_kind, output, rendered},
};
use serde_json::Value;

const IMAGE: &str = "localhost/graceful:dev";

/// `podman run` arguments for the DaemonSet's pod, its runtime socket directory mount pointed at
/// `socket_dir` (this machine's test containerd listens in its own directory, on a socket named
/// as the manifest's), its port published on `port`.
fn run_args(pod: &Value, socket_dir: &str, port: u16, seccomp_as_manifest: bool) -> Vec<String> {
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    if pod["hostPID"] == true {
        args.push("--pid=host".into());
    }
    if sc["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if let Some(uid) = sc["runAsUser"].as_i64() {
        args.push(format!("--user={uid}"));
    }
    if sc["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    if sc["privileged"] == true {
        args.push("--privileged".into());
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        args.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        args.push(format!("--cap-add={}", cap.as_str().unwrap()));
    }
    if seccomp_as_manifest && sc["seccompProfile"]["type"] == "Unconfined" {
        args.push("--security-opt=seccomp=unconfined".into());
    }
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("the mount's volume");
        let host = volume["hostPath"]["path"]
            .as_str()
            .expect("a hostPath volume");
        let host = if volume["name"] == "runtime-socket" {
            socket_dir
        } else {
            host
        };
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        args.push(format!(
            "--volume={host}:{}{ro}",
            m["mountPath"].as_str().unwrap()
        ));
    }
    for e in c["env"].as_array().into_iter().flatten() {
        if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            args.push(format!(
                "--env={}=image-test-node",
                e["name"].as_str().unwrap()
            ));
        }
    }
    // These machines lack CAP_SYS_RESOURCE: podman cannot raise limits past the current ones.
    let nofile = rlimit_nofile();
    args.push(format!("--ulimit=nofile={nofile}:{nofile}"));
    args.push("--ulimit=nproc=1000:1000".into());
    let container_port = c["ports"][0]["containerPort"].as_i64().unwrap();
    args.push(format!("--publish=127.0.0.1:{port}:{container_port}"));
    args.push(IMAGE.into());
    args.extend(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    args
}

fn rlimit_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_max
}

fn free_port() -> u16 {
    free_loopback().port()
}

fn podman(args: &[&str]) -> String {
    output(Command::new("podman").args(args))
}

/// Removes the container however the test ends.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_with_exactly_the_daemonsets_privileges() {
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.contains(IMAGE),
        "{IMAGE} is missing: `cargo xtask image` builds it ({images})"
    );
    let (_, docs) = rendered();
    let pod = &of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let ctd = Containerd::start().await;
    assert_eq!(
        ctd.socket.file_name().and_then(|n| n.to_str()),
        Some("containerd.sock"),
        "the manifest's --cri-socket names containerd.sock"
    );
    let socket = ctd.socket.parent().unwrap().display().to_string();

    // The runtime's default seccomp profile refuses bpf() without CAP_SYS_ADMIN: why the
    // manifest says Unconfined. The daemon says so in one line and exits.
    let args = run_args(pod, &socket, free_port(), false);
    let id = podman(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .trim()
        .to_string();
    let refused = Running(id);
    let code = podman(&["wait", &refused.0]);
    let log = podman(&["logs", &refused.0]);
    assert_eq!(code.trim(), "1", "{log}");
    assert!(log.contains("bpf() refused"), "{log}");
    drop(refused);

    let port = free_port();
    let args = run_args(pod, &socket, port, true);
    let id = podman(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .trim()
        .to_string();
    let daemon = Running(id);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("/readyz of the image", || {
        if podman(&["inspect", "--format", "{{.State.Running}}", &daemon.0]).trim() != "true" {
            panic!("the image exited: {}", podman(&["logs", &daemon.0]));
        }
        http_get(addr, "/readyz").filter(|(s, _)| *s == 200)
    });

    // A container's stop through the real containerd, named through the read-only CRI socket.
    let mut cri = ctd.client().await;
    let spec = PodSpec {
        namespace: "image",
        name: "shell",
        uid: "9b2c1d3e-4f5a-4b6c-8d7e-0f1a2b3c4d5e",
        grace_seconds: 1,
        shared_pids: false,
    };
    let (sandbox, container) = cri
        .start_pod(&spec, "app", "sleep 1000; true", None, &ctd.dir)
        .await;
    eventually("the container known to the image", || {
        let (_, m) = http_get(addr, "/metrics")?;
        m.contains(
            r#"graceful_pid1_ignores_stop_signal{namespace="image",workload_type="",workload="",pod="shell",container="app"} 1"#,
        )
        .then_some(())
    });
    cri.stop_container(&container, 1).await;
    let record = record_where(addr, "/container/id", &container);
    assert_eq!(record["verdict"], "swallowed_by_shell_pid1", "{record:#}");
    assert_eq!(record["container"]["pod"], "shell", "{record:#}");
    cri.remove_pod(&sandbox).await;

    // It honours its own grace: SIGTERM, a clean exit well within it.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap()
        .to_string();
    podman(&["stop", "-t", &grace, &daemon.0]);
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &daemon.0]);
    assert_eq!(code.trim(), "0", "{}", podman(&["logs", &daemon.0]));
    let log = podman(&["logs", &daemon.0]);
    assert!(log.contains("all capabilities dropped"), "{log}");
}
