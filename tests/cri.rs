//! A real containerd for the end-to-end tests: its own config, root, state and socket; images
//! built here from busybox-static (no registry is reachable); pods driven through CRI exactly
//! as kubelet drives them.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    ContainerState, ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use sha2::{Digest, Sha256};
use tokio::net::UnixStream;
use tonic::transport::Channel;

pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";
pub const APP_IMAGE: &str = "graceful.test/busybox:1";

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// This machine's architecture as OCI names it (the image holds this machine's busybox).
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI image layout tarball: one layer with busybox-static as /bin/busybox and its applets.
pub fn busybox_image(name: &str, entrypoint: &[&str]) -> Vec<u8> {
    busybox_image_stopped_by(name, entrypoint, None)
}

/// As `busybox_image`, with a STOPSIGNAL in its config.
pub fn busybox_image_stopped_by(
    name: &str,
    entrypoint: &[&str],
    stop_signal: Option<&str>,
) -> Vec<u8> {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed by `cargo xtask setup`");
    let mut layer = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    layer
        .append_data(&mut dir.clone(), "bin", std::io::empty())
        .unwrap();
    layer
        .append_data(&mut dir, "tmp", std::io::empty())
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o755);
    file.set_size(busybox.len() as u64);
    layer
        .append_data(&mut file, "bin/busybox", busybox.as_slice())
        .unwrap();
    for applet in ["sh", "sleep", "kill", "true", "echo"] {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        layer
            .append_link(&mut link, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let mut image_config = serde_json::json!({"Entrypoint": entrypoint, "Env": ["PATH=/bin"]});
    if let Some(sig) = stop_signal {
        image_config["StopSignal"] = serde_json::json!(sig);
    }
    let config = serde_json::json!({
        "architecture": oci_architecture(), "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", sha(&layer)), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name}}],
    })
    .to_string()
    .into_bytes();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        out.append_data(&mut h, path, data).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&layer, &config, &manifest] {
        add(format!("blobs/sha256/{}", sha(blob)), blob);
    }
    out.into_inner().unwrap()
}

/// containerd with its own state under a temporary directory, stopped on drop.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Child,
    /// The pod cgroups its sandboxes were given: removed on drop, whatever a test left.
    pods: PodCgroups,
}

/// Pod-level cgroups (`cgroup_parent`) of sandboxes, by sandbox id.
type PodCgroups = Arc<Mutex<HashMap<String, String>>>;

impl Containerd {
    pub async fn start() -> Containerd {
        // One per test, even for tests of one binary that run at once.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("graceful-containerd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n  sandbox_image = \"{SANDBOX_IMAGE}\"\n",
            dir.display(),
            socket.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd is installed by `cargo xtask setup`");
        let ctd = Containerd {
            dir,
            socket,
            child,
            pods: PodCgroups::default(),
        };
        ctd.wait_for_socket().await;
        ctd.import(SANDBOX_IMAGE, &["/bin/sleep", "2147483647"]);
        ctd.import(APP_IMAGE, &["/bin/sh"]);
        ctd
    }

    async fn wait_for_socket(&self) {
        for _ in 0..300 {
            if UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "containerd did not open {} in 30 s; see {}/containerd.log",
            self.socket.display(),
            self.dir.display()
        );
    }

    fn import(&self, name: &str, entrypoint: &[&str]) {
        self.import_image(name, entrypoint, None);
    }

    /// Imports a busybox image with this entrypoint (and STOPSIGNAL) into the CRI namespace.
    pub fn import_image(&self, name: &str, entrypoint: &[&str], stop_signal: Option<&str>) {
        let tarball = self.dir.join(format!("{}.tar", sha(name.as_bytes())));
        std::fs::write(
            &tarball,
            busybox_image_stopped_by(name, entrypoint, stop_signal),
        )
        .unwrap();
        let status = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tarball)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "ctr images import {name} failed");
    }

    pub async fn client(&self) -> Cri {
        let channel = graceful::enrich::cri::channel(&self.socket, None)
            .await
            .expect("connect to containerd's CRI");
        Cri {
            client: RuntimeServiceClient::new(channel),
            pods: self.pods.clone(),
        }
    }
}

impl Drop for Containerd {
    /// Leaves nothing behind, even after a failed test: every task killed, the shims gone,
    /// the mounts undone.
    fn drop(&mut self) {
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("-a")
                .arg(&self.socket)
                .args(["-n", "k8s.io"])
                .args(args)
                .stderr(Stdio::null())
                .output()
        };
        if let Ok(out) = ctr(&["tasks", "ls", "-q"]) {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(format!("[-]address {}", self.socket.display()))
            .status();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        for cgroup in pods.values() {
            graceful::cgroup::remove_everywhere(cgroup);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pod as kubelet describes it.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub grace_seconds: u64,
    /// `shareProcessNamespace: true`: the containers join the sandbox's pid namespace, whose
    /// init is the pause process.
    pub shared_pids: bool,
}

impl PodSpec<'_> {
    /// The container `id`'s `cgroup.procs`.
    fn procs(&self, id: &str) -> std::path::PathBuf {
        graceful::cgroup::Cgroup2::discover()
            .expect("cgroup2")
            .dir(&format!("/kubepods/besteffort/pod{}/{id}", self.uid))
            .join("cgroup.procs")
    }

    /// The host pid of the container `id`'s PID 1 (pid 1 in its own pid namespace).
    pub fn init_pid(&self, id: &str) -> u32 {
        let procs = std::fs::read_to_string(self.procs(id)).expect("cgroup.procs");
        procs
            .lines()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .and_then(|ids| ids.split_whitespace().last())
                        == Some("1")
                })
            })
            .and_then(|pid| pid.parse().ok())
            .expect("the container's PID 1")
    }

    /// Until the container `id` of this pod runs exactly these programs (its processes' names,
    /// from its cgroup, in any order): a forked child is a copy of its shell until it execs.
    pub fn wait_for_programs(&self, id: &str, programs: &[&str]) {
        let procs = self.procs(id);
        let mut wanted: Vec<&str> = programs.to_vec();
        wanted.sort();
        crate::daemon::eventually(&format!("{wanted:?} in {}", self.name), || {
            let mut running: Vec<String> = std::fs::read_to_string(&procs)
                .ok()?
                .lines()
                .filter_map(graceful::procfs::comm)
                .collect();
            running.sort();
            (running == wanted).then_some(())
        });
    }
}

#[derive(Clone)]
pub struct Cri {
    pub client: RuntimeServiceClient<Channel>,
    pods: PodCgroups,
}

impl Cri {
    fn sandbox_config(pod: &PodSpec<'_>, log_dir: &Path) -> PodSandboxConfig {
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.name", pod.name),
            ("io.kubernetes.pod.namespace", pod.namespace),
            ("io.kubernetes.pod.uid", pod.uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let annotations: HashMap<String, String> = [
            ("kubernetes.io/config.source".to_string(), "api".to_string()),
            (
                "io.kubernetes.pod.terminationGracePeriod".to_string(),
                pod.grace_seconds.to_string(),
            ),
        ]
        .into_iter()
        .collect();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.into(),
                uid: pod.uid.into(),
                namespace: pod.namespace.into(),
                attempt: 0,
            }),
            hostname: String::new(), // host network: no private UTS namespace
            log_directory: log_dir.display().to_string(),
            labels,
            annotations,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{}", pod.uid),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox, CreateContainer (pid namespace CONTAINER, kubelet's labels and
    /// annotations), StartContainer. Returns (pod sandbox id, container id).
    pub async fn start_pod(
        &mut self,
        pod: &PodSpec<'_>,
        container: &str,
        script: &str,
        pre_stop: Option<&str>,
        log_dir: &Path,
    ) -> (String, String) {
        let config = Cri::sandbox_config(pod, log_dir);
        let sandbox = self
            .client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        if let (Ok(mut pods), Some(linux)) = (self.pods.lock(), &config.linux) {
            pods.insert(sandbox.clone(), linux.cgroup_parent.clone());
        }
        let id = self
            .start_container(&sandbox, pod, container, 0, script, pre_stop, log_dir)
            .await;
        (sandbox, id)
    }

    /// CreateContainer and StartContainer in a running pod sandbox; `attempt` counts restarts.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_container(
        &mut self,
        sandbox: &str,
        pod: &PodSpec<'_>,
        container: &str,
        attempt: u32,
        script: &str,
        pre_stop: Option<&str>,
        log_dir: &Path,
    ) -> String {
        let config = Cri::sandbox_config(pod, log_dir);
        let mut labels = config.labels.clone();
        labels.insert("io.kubernetes.container.name".into(), container.into());
        let mut annotations: HashMap<String, String> = HashMap::new();
        annotations.insert(
            "io.kubernetes.pod.terminationGracePeriod".into(),
            pod.grace_seconds.to_string(),
        );
        annotations.insert(
            "io.kubernetes.container.terminationMessagePath".into(),
            "/dev/termination-log".into(),
        );
        if let Some(cmd) = pre_stop {
            let handler = serde_json::json!({"exec": {"command": ["/bin/sh", "-c", cmd]}});
            annotations.insert(
                "io.kubernetes.container.preStopHandler".into(),
                handler.to_string(),
            );
        }
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: container.into(),
                    attempt,
                }),
                image: Some(ImageSpec {
                    image: APP_IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["/bin/sh".into()],
                args: vec!["-c".into(), script.into()],
                labels,
                annotations,
                log_path: format!("{container}-{attempt}.log"),
                linux: Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: NamespaceMode::Node as i32,
                            pid: if pod.shared_pids {
                                NamespaceMode::Pod
                            } else {
                                NamespaceMode::Container
                            } as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        };
        let id = self
            .client
            .create_container(request)
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        self.client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        id
    }

    /// ExecSync, as kubelet runs an exec hook: the command's exit code.
    pub async fn exec_sync(&mut self, id: &str, cmd: &[&str], timeout_seconds: i64) -> i32 {
        self.try_exec_sync(id, cmd, timeout_seconds)
            .await
            .expect("ExecSync")
    }

    /// ExecSync, or the runtime's error (a hook that outlived its timeout).
    pub async fn try_exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_seconds: i64,
    ) -> Result<i32, tonic::Status> {
        let reply = self
            .client
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| c.to_string()).collect(),
                timeout: timeout_seconds,
            })
            .await?;
        Ok(reply.into_inner().exit_code)
    }

    pub async fn stop_container(&mut self, id: &str, timeout_seconds: i64) {
        self.client
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_seconds,
            })
            .await
            .expect("StopContainer");
    }

    /// Stops a container as kubelet does for a deleted pod: the preStop exec hook (`sh -c`)
    /// through ExecSync with the grace as its timeout, then StopContainer with what is left of
    /// the grace, never less than 2 s (kubelet's minimumGracePeriodInSeconds). A hook that fails
    /// or outlives the grace is only logged by kubelet: the stop goes on; its exit code, if any.
    pub async fn stop_like_kubelet(
        &mut self,
        id: &str,
        grace: i64,
        hook: Option<&str>,
    ) -> Option<i32> {
        let started = std::time::Instant::now();
        let mut code = None;
        if let Some(cmd) = hook {
            code = self
                .try_exec_sync(id, &["/bin/sh", "-c", cmd], grace)
                .await
                .ok();
        }
        let left = grace - started.elapsed().as_secs() as i64;
        // A hook that stopped the app itself leaves a container that is exiting: StopContainer
        // can then fail (its shim gone), and kubelet goes on. It has ended either way.
        let stopped = self
            .client
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: left.max(2),
            })
            .await;
        if stopped.is_err() {
            self.wait_exited(id).await;
        }
        code
    }

    /// StopContainer as a kubelet's pod worker keeps asking for it: containerd under a storm of
    /// stops can lose its shim connection mid-kill ("ttrpc: closed"); the kubelet's next sync
    /// asks again, unless the container has ended meanwhile.
    pub async fn stop_until_exited(&mut self, id: &str, timeout_seconds: i64) {
        let mut last = None;
        for _ in 0..5 {
            let stopped = self
                .client
                .stop_container(StopContainerRequest {
                    container_id: id.into(),
                    timeout: timeout_seconds,
                })
                .await;
            match stopped {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
            if self.exited(id).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        panic!("StopContainer {id}: {last:?}");
    }

    async fn exited(&mut self, id: &str) -> bool {
        self.client
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status)
            .is_some_and(|s| s.state == ContainerState::ContainerExited as i32)
    }

    /// Until the container has ended on its own (as a Job's does), by the runtime's word.
    pub async fn wait_exited(&mut self, id: &str) {
        for _ in 0..3000 {
            if self.exited(id).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("container {id} did not exit in 30 s");
    }

    pub async fn remove_pod(&mut self, sandbox: &str) {
        self.client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.into(),
            })
            .await
            .expect("StopPodSandbox");
        self.client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.into(),
            })
            .await
            .expect("RemovePodSandbox");
        // The kubelet removes the pod's cgroup once the sandbox is gone; so do we.
        let cgroup = self.pods.lock().ok().and_then(|mut p| p.remove(sandbox));
        if let Some(cgroup) = cgroup {
            graceful::cgroup::remove_everywhere(&cgroup);
        }
    }
}
