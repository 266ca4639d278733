//! `check --pod FILE`: a Pod manifest's containers, each command as PID 1 of its own throwaway
//! container of one pod, stopped as a kubelet stops a pod (app containers and classic sidecars
//! at once, then native sidecars in reverse order, all within the pod's grace), judged as a pod.
use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::{
    check::{resolve, CheckError, PodFileError},
    engine::{self, EngineError, Ready, Scenario},
    enrich::pods::{sidecar_names, Role, SIDECARS_ANNOTATION},
    pod_termination::{Expected, Member, PodAssembler, PodOf, PodTermination},
    record::TerminationRecord,
    signals::Signal,
};

/// One container of the pod, as `check` runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodContainerPlan {
    pub name: String,
    pub argv: Vec<String>,
    pub role: Role,
    pub native: bool,
    pub stop_signal: Signal,
}

/// The pod as the manifest gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub name: String,
    pub containers: Vec<PodContainerPlan>,
    /// `terminationGracePeriodSeconds`, when the manifest sets it.
    pub grace: Option<Duration>,
}

/// Reads and checks the manifest; nothing runs yet.
pub fn parse(path: &Path) -> Result<PodPlan, PodFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| PodFileError::Read {
        path: shown.clone(),
        error,
    })?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| PodFileError::Yaml {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("none")
        .to_string();
    if kind != "Pod" {
        return Err(PodFileError::NotAPod { path: shown, kind });
    }
    let pod: Pod = serde_yaml::from_value(value).map_err(|e| PodFileError::Invalid {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let spec = pod.spec.as_ref().ok_or(PodFileError::NoContainers {
        path: shown.clone(),
    })?;
    if spec.containers.is_empty() {
        return Err(PodFileError::NoContainers { path: shown });
    }
    let sidecars = sidecar_names(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIDECARS_ANNOTATION))
            .map(String::as_str),
    );
    let mut containers = Vec::new();
    for c in &spec.containers {
        let role = if sidecars.contains(&c.name) {
            Role::Sidecar
        } else {
            Role::App
        };
        containers.push(plan(c, role, false)?);
    }
    // Regular init containers ran to completion before the pod started: not part of its stop.
    for c in spec.init_containers.iter().flatten() {
        match c.restart_policy.as_deref() {
            None => {}
            Some("Always") => containers.push(plan(c, Role::Sidecar, true)?),
            Some(other) => {
                return Err(PodFileError::Value {
                    container: c.name.clone(),
                    field: "restartPolicy",
                    value: other.into(),
                    expected: "only Always, which makes a native sidecar",
                })
            }
        }
    }
    Ok(PodPlan {
        name: pod.metadata.name.clone().unwrap_or_else(|| "pod".into()),
        containers,
        grace: spec
            .termination_grace_period_seconds
            .filter(|g| *g >= 0)
            .map(|g| Duration::from_secs(g as u64)),
    })
}

fn plan(c: &Container, role: Role, native: bool) -> Result<PodContainerPlan, PodFileError> {
    let mut argv = c.command.clone().unwrap_or_default();
    if argv.is_empty() {
        return Err(PodFileError::NoCommand(c.name.clone()));
    }
    argv.extend(c.args.iter().flatten().cloned());
    let stop_signal = match c.lifecycle.as_ref().and_then(|l| l.stop_signal.as_deref()) {
        None => Signal::TERM,
        Some(s) => s.parse().map_err(|_| PodFileError::Value {
            container: c.name.clone(),
            field: "lifecycle.stopSignal",
            value: s.into(),
            expected: "a signal name such as SIGTERM",
        })?,
    };
    Ok(PodContainerPlan {
        name: c.name.clone(),
        argv,
        role,
        native,
        stop_signal,
    })
}

/// Runs the pod, stops it as a kubelet does within `grace` and returns its containers' records
/// (in the manifest's order: containers, then native sidecars) and the pod record.
pub async fn run(
    plan: &PodPlan,
    grace: Duration,
    env: &[String],
) -> Result<(Vec<TerminationRecord>, PodTermination), CheckError> {
    let apps: Vec<usize> = (0..plan.containers.len())
        .filter(|&i| !plan.containers[i].native)
        .collect();
    let natives: Vec<usize> = (0..plan.containers.len())
        .filter(|&i| plan.containers[i].native)
        .collect();
    let mut scenarios = Vec::new();
    for (i, c) in plan.containers.iter().enumerate() {
        let mut argv = c.argv.clone();
        if let Some(program) = argv.first_mut() {
            *program = resolve(program)?.to_string_lossy().into_owned();
        }
        let mut s = Scenario::new(&c.name, "check --pod", argv, &[]).stop_with(Some(c.stop_signal));
        s.ready = Ready::Settled;
        s.spawn.env = env.to_vec();
        // Native sidecars after the app containers, in reverse order of the manifest.
        if c.native {
            s.after = apps.clone();
            s.after.extend(natives.iter().copied().filter(|&j| j > i));
        }
        scenarios.push(s);
    }
    let mut records = engine::run(&scenarios, grace).await?;
    let expected: Vec<Expected> = plan
        .containers
        .iter()
        .map(|c| Expected {
            name: c.name.clone(),
            role: c.role,
            native: c.native,
        })
        .collect();
    let pod = PodOf {
        uid: format!("check-{}", std::process::id()),
        namespace: String::new(),
        name: plan.name.clone(),
        workload: None,
        containers: expected,
        grace_ns: Some(grace.as_nanos() as u64),
    };
    let mut assembler = PodAssembler::default();
    let mut whole = None;
    for (record, c) in records.iter_mut().zip(&plan.containers) {
        let info = record.info.get_or_insert_with(Default::default);
        info.grace_period_seconds = Some(grace.as_secs_f64());
        info.name = Some(c.name.clone());
        info.pod = Some(plan.name.clone());
        let member = Member::of(record, c.name.clone(), c.role, c.native);
        let cause = Some(record.cause());
        whole = assembler.add(pod.clone(), member, cause).or(whole);
    }
    let whole = whole.ok_or_else(|| {
        CheckError::Run(EngineError::NoRecord {
            name: plan.name.clone(),
            waiting_for: Vec::new(),
        })
    })?;
    Ok((records, whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("graceful-pod-{}-{n}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_pod_with_a_native_and_a_named_sidecar() {
        let path = file(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 5\n  \
             initContainers:\n  - name: proxy\n    restartPolicy: Always\n    command: [sh, -c, 'sleep 1000']\n  \
             containers:\n  - name: app\n    command: [sh, -c]\n    args: ['sleep 1000']\n    lifecycle:\n      stopSignal: SIGQUIT\n  \
             - name: istio-proxy\n    command: [sleep, '1000']\n",
        );
        let plan = parse(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(plan.grace, Some(Duration::from_secs(5)));
        let roles: Vec<(&str, Role, bool)> = plan
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.role, c.native))
            .collect();
        assert_eq!(
            roles,
            [
                ("app", Role::App, false),
                ("istio-proxy", Role::Sidecar, false),
                ("proxy", Role::Sidecar, true)
            ]
        );
        assert_eq!(plan.containers[0].argv, ["sh", "-c", "sleep 1000"]);
        assert_eq!(plan.containers[0].stop_signal, Signal::QUIT);
    }

    #[test]
    fn what_cannot_be_checked_is_said_in_one_line() {
        let cases = [
            ("apiVersion: apps/v1\nkind: Deployment\n", "is not a Pod (kind: Deployment)"),
            ("kind: Pod\nspec:\n  containers:\n  - name: app\n    image: nginx\n", "container app has no command"),
            (
                "kind: Pod\nspec:\n  initContainers:\n  - name: p\n    restartPolicy: Sometimes\n    command: [sh]\n  containers:\n  - name: app\n    command: [sh]\n",
                "container p: unknown restartPolicy \"Sometimes\"",
            ),
            (
                "kind: Pod\nspec:\n  containers:\n  - name: app\n    command: [sh]\n    lifecycle:\n      stopSignal: SIGNOPE\n",
                "container app: unknown lifecycle.stopSignal \"SIGNOPE\"",
            ),
            ("kind: Pod\nspec:\n  containers: 3\n", "is not a valid Pod"),
            ("kind: Pod\nspec:\n  containers: []\n", "has no containers"),
            ("{ not yaml", "is not YAML"),
        ];
        for (text, said) in cases {
            let path = file(text);
            let e = parse(&path).unwrap_err().to_string();
            let _ = std::fs::remove_file(&path);
            assert!(e.contains(said), "{text}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
