//! `check --image REF`: the image's own entrypoint, command and STOPSIGNAL, run and stopped by
//! the node's container runtime through CRI exactly as kubelet drives it (a pod sandbox, a
//! container with its own pid namespace, StopContainer with the grace as timeout), judged from
//! the kernel's view.
use std::{collections::HashMap, path::Path, time::Duration};

use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::{
    check::{CheckError, CheckOptions, ImageCheckError},
    driver::Driver,
    engine::{self, EngineError, Readiness, Ready, READY_TIMEOUT},
    enrich::cri::{stop_signal_of, CriClient, CriError},
    enrich::ContainerInfo,
    identity::{self, Identity},
    pipeline::Session,
    probes::{ProbeOptions, DEFAULT_STOP_SIGNALS},
    record::TerminationRecord,
    signals::Signal,
};

/// A runtime call's error, named after what it did.
fn call(what: &'static str) -> impl FnOnce(tonic::Status) -> ImageCheckError {
    move |e| ImageCheckError::Call {
        what,
        error: e.message().to_string(),
    }
}

struct Runtime {
    cri: CriClient,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Which runtime answers (CRI Version), for the record.
    kind: identity::Runtime,
}

/// How often processes whose exit was lost are looked for while the record is awaited.
const SWEEP: Duration = Duration::from_secs(1);

/// Pulls are slow; everything else answers at once.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

impl Runtime {
    async fn connect(socket: Option<&Path>) -> Result<Runtime, ImageCheckError> {
        // Calls unbounded by the channel: a pull or a stop takes as long as it takes.
        let (cri, version) =
            CriClient::connect_unbounded(socket, None)
                .await
                .map_err(|e| match e {
                    CriError::NoSocket => ImageCheckError::NoSocket,
                    e => ImageCheckError::Runtime(e),
                })?;
        let kind = match version.runtime_name.as_str() {
            "containerd" => identity::Runtime::Containerd,
            "cri-o" => identity::Runtime::CriO,
            _ => identity::Runtime::Unknown,
        };
        Ok(Runtime {
            runtime: cri.runtime_service(),
            images: cri.image_service(),
            cri,
            kind,
        })
    }

    /// The image's STOPSIGNAL (SIGTERM when it names none), pulling the image if it is missing.
    async fn prepare(&mut self, image: &str) -> Result<Signal, ImageCheckError> {
        let found = self
            .cri
            .image_status(image)
            .await
            .map_err(ImageCheckError::Runtime)?;
        let found = if found.image.is_some() {
            found
        } else {
            let pull = self.images.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let no_image = |error: String| ImageCheckError::NoImage {
                image: image.into(),
                error,
            };
            tokio::time::timeout(PULL_TIMEOUT, pull)
                .await
                .map_err(|_| no_image(format!("no answer within {PULL_TIMEOUT:?}")))?
                .map_err(|e| no_image(e.message().to_string()))?;
            self.cri
                .image_status(image)
                .await
                .map_err(ImageCheckError::Runtime)?
        };
        Ok(stop_signal_of(&found.info).unwrap_or(Signal::TERM))
    }

    /// A pod sandbox as kubelet makes one (host network: no CNI needed), in a cgroup of its own.
    async fn sandbox(&mut self, config: &PodSandboxConfig) -> Result<String, ImageCheckError> {
        let run = |config: PodSandboxConfig| RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        match self.runtime.run_pod_sandbox(run(config.clone())).await {
            Ok(r) => Ok(r.into_inner().pod_sandbox_id),
            // A runtime with the systemd cgroup driver wants a slice as the parent.
            Err(e) if e.message().contains("slice") || e.message().contains("systemd") => {
                let mut config = config.clone();
                if let Some(linux) = config.linux.as_mut() {
                    let uid = config
                        .metadata
                        .as_ref()
                        .map(|m| m.uid.replace('-', "_"))
                        .unwrap_or_default();
                    linux.cgroup_parent = format!("graceful_check-pod{uid}.slice");
                }
                self.runtime
                    .run_pod_sandbox(run(config))
                    .await
                    .map(|r| r.into_inner().pod_sandbox_id)
                    .map_err(call("start a pod sandbox"))
            }
            Err(e) => Err(call("start a pod sandbox")(e)),
        }
    }

    /// The container's state, its main process's host pid (from the runtime's verbose info) and
    /// its exit code once exited.
    async fn status(&mut self, id: &str) -> Result<(i32, Option<u32>, i32), ImageCheckError> {
        let reply = self
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .map_err(call("read the container's status"))?
            .into_inner();
        let (state, exit_code) = reply
            .status
            .map(|s| (s.state, s.exit_code))
            .unwrap_or_default();
        let pid = reply
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        Ok((state, pid, exit_code))
    }

    async fn remove(&mut self, sandbox: &str) {
        let _ = self
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.into(),
            })
            .await;
        let _ = self
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.into(),
            })
            .await;
    }
}

fn sandbox_config(uid: &str, grace: Duration, log_dir: &Path) -> PodSandboxConfig {
    let name = format!("graceful-check-{}", std::process::id());
    let labels: HashMap<String, String> = [
        ("io.kubernetes.pod.name", name.as_str()),
        ("io.kubernetes.pod.namespace", "graceful-check"),
        ("io.kubernetes.pod.uid", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations = [(
        "io.kubernetes.pod.terminationGracePeriod".to_string(),
        grace.as_secs().to_string(),
    )]
    .into_iter()
    .collect();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name,
            uid: uid.into(),
            namespace: "graceful-check".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        labels,
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/graceful-check/pod{uid}"),
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

fn container_config(image: &str, sandbox: &PodSandboxConfig) -> ContainerConfig {
    let mut labels = sandbox.labels.clone();
    labels.insert("io.kubernetes.container.name".into(), "check".into());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "check".into(),
            attempt: 0,
        }),
        // No command or args: the image's own ENTRYPOINT and CMD.
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        labels,
        annotations: sandbox.annotations.clone(),
        log_path: "check.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                // As kubelet does by default: the app is PID 1 of its own pid namespace.
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod uid for this run: unique enough on one node, in the kubelet's format.
fn pod_uid() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pid = std::process::id();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (now >> 32) as u32,
        (now >> 16) as u16,
        now as u16 & 0xfff,
        pid & 0xfff,
        (now as u64 ^ u64::from(pid)) & 0xffff_ffff_ffff
    )
}

/// Runs `image` through the runtime at `socket` (or the first known one), stops it with its
/// STOPSIGNAL and the grace as timeout, and returns its record.
pub async fn run(
    image: &str,
    socket: Option<&Path>,
    options: &CheckOptions,
) -> Result<TerminationRecord, CheckError> {
    let mut runtime = Runtime::connect(socket).await?;
    let stop_signal = runtime.prepare(image).await?;
    let mut signals = DEFAULT_STOP_SIGNALS.to_vec();
    if !signals.contains(&stop_signal) {
        signals.push(stop_signal);
    }
    let session = Session::start(&ProbeOptions {
        stop_signals: signals,
        ..ProbeOptions::default()
    })
    .map_err(EngineError::from)?;
    let uid = pod_uid();
    let log_dir = std::env::temp_dir().join(format!("graceful-check-{uid}"));
    let _ = std::fs::create_dir_all(&log_dir);
    let config = sandbox_config(&uid, options.grace, &log_dir);
    let sandbox = runtime.sandbox(&config).await?;
    let result = run_in(
        &mut runtime,
        session,
        &sandbox,
        image,
        &config,
        stop_signal,
        options,
    )
    .await
    .map(|mut record| {
        // A check pod's cgroup is its own, not kubelet's: say whose container it is.
        if let Some(id) = record.identity.as_ref().map(|i| i.id.clone()) {
            record.identity = Some(Identity {
                runtime: runtime.kind,
                id,
                pod_uid: Some(uid.clone()),
                qos: None,
                namespace: None,
            });
        }
        record
    });
    runtime.remove(&sandbox).await;
    // As the kubelet does: the runtime removed the containers' cgroups, not their parent.
    crate::cgroup::remove_everywhere(&format!("/graceful-check/pod{uid}"));
    crate::cgroup::remove_everywhere_if_empty("/graceful-check");
    let _ = std::fs::remove_dir_all(&log_dir);
    result
}

async fn run_in(
    runtime: &mut Runtime,
    session: Session,
    sandbox: &str,
    image: &str,
    config: &PodSandboxConfig,
    stop_signal: Signal,
    options: &CheckOptions,
) -> Result<TerminationRecord, CheckError> {
    let (_probes, mut driver) = Driver::start(session, SWEEP);
    let id = runtime
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(container_config(image, config)),
            sandbox_config: Some(config.clone()),
        })
        .await
        .map_err(call("create the container"))?
        .into_inner()
        .container_id;
    runtime
        .runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(call("start the container"))?;
    let (mut state, pid, mut exit_code) = runtime.status(&id).await?;
    let pid = pid.ok_or_else(|| ImageCheckError::NoProcess(image.into()))?;
    let path = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| crate::cgroup::unified_path(&t))
        .ok_or_else(|| ImageCheckError::NoProcess(image.into()))?;
    let cgroup = driver
        .pipeline
        .cgroups
        .remember(&path)
        .ok_or_else(|| ImageCheckError::NoProcess(image.into()))?;
    driver.pipeline.tracker.set_stop_signal(cgroup, stop_signal);
    let dir = driver.pipeline.cgroups.dir(&path);
    let pids = || crate::cgroup::procs(&dir);
    let ids = [cgroup];
    let mut records: Vec<Option<TerminationRecord>> = vec![None];

    // Until it is ready (settled, or --ready-after), feeding the events that come meanwhile.
    let ready = match options.ready_after {
        Some(d) => Ready::After(d),
        None => Ready::Settled,
    };
    let mut readiness = Readiness::new();
    let deadline = Instant::now() + READY_TIMEOUT + engine::SETTLE;
    while !readiness.ready(&ready, &pids()) && Instant::now() < deadline {
        if state == ContainerState::ContainerExited as i32 {
            break;
        }
        engine::feed_a_while(&mut driver, &ids, &mut records).await?;
        (state, _, exit_code) = runtime.status(&id).await?;
    }
    if state == ContainerState::ContainerExited as i32 || pids().is_empty() {
        return Err(EngineError::ExitedEarly {
            name: image.into(),
            status: crate::events::ExitStatus {
                code: Some(exit_code),
                signal: None,
            },
        }
        .into());
    }

    // StopContainer: the image's STOPSIGNAL, then SIGKILL after the grace, by the runtime.
    let mut stopper = runtime.runtime.clone();
    let (stop_id, timeout) = (id.clone(), options.grace.as_secs_f64().ceil() as i64);
    let stop = tokio::spawn(async move {
        stopper
            .stop_container(StopContainerRequest {
                container_id: stop_id,
                timeout,
            })
            .await
    });
    let deadline = Instant::now() + options.grace + READY_TIMEOUT;
    engine::await_records(&mut driver, (&ids, &[image]), &mut records, deadline).await?;
    let _ = stop.await;
    let mut record = records.remove(0).ok_or_else(|| EngineError::NoRecord {
        name: image.into(),
        waiting_for: Vec::new(),
    })?;
    let pod = config.metadata.as_ref();
    record.info = Some(ContainerInfo {
        namespace: pod.map(|m| m.namespace.clone()),
        pod: pod.map(|m| m.name.clone()),
        pod_uid: pod.map(|m| m.uid.clone()),
        name: Some("check".into()),
        image: Some(image.into()),
        stop_signal: Some(stop_signal),
        // The runtime's timeout is whole seconds.
        grace_period_seconds: Some(options.grace.as_secs_f64().ceil()),
        ..Default::default()
    });
    Ok(record)
}
