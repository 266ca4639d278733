//! The loop's ends and its use of the pod facts, without a kernel or a runtime.
use super::*;
use crate::{cgroup::Cgroup2, pipeline::Pipeline, tracker::TrackerConfig};
use crate::{identity::Runtime, signals::Signal};

/// Counters of a kernel where nothing happens.
struct Quiet;

impl KernelCounters for Quiet {
    fn lost_events(&self) -> Result<(u64, u64), ProbeError> {
        Ok((0, 0))
    }
    fn signal_counts(&self) -> Result<SignalCounts, ProbeError> {
        Ok(SignalCounts(Vec::new()))
    }
}

/// A daemon fed by `events`.
fn daemon(events: mpsc::Receiver<Event>) -> (Daemon, Replies) {
    let metrics = Metrics::new(Duration::from_secs(60), Duration::from_secs(3600));
    let cgroups = Cgroup2::discover().expect("a cgroup2 mount");
    let pipeline = Pipeline::new(cgroups, TrackerConfig::default());
    let driver = Driver::new(events, pipeline, SWEEP);
    Daemon::new(
        driver,
        SharedState::default(),
        metrics,
        None,
        None,
        None,
        LogFormat::Json,
    )
}

#[tokio::test]
async fn an_ended_event_stream_is_an_error() {
    let (tx, events) = mpsc::channel(1);
    drop(tx);
    let (mut d, replies) = daemon(events);
    let served = d.serve(replies, &Quiet, std::future::pending()).await;
    assert!(
        matches!(served, Err(DaemonError::EventStreamEnded)),
        "{served:?}"
    );
}

#[tokio::test]
async fn without_the_runtime_a_container_is_named_from_its_pod() {
    let (_tx, events) = mpsc::channel(1);
    let (mut d, _replies) = daemon(events);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "8dbd0d3c-4b1e-4c39-9b32-5b6b0f7a3c11",
            "deletionTimestamp": "2026-11-23T10:00:05Z", "deletionGracePeriodSeconds": 5,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "o", "controller": true}]},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "x",
            "lifecycle": {"stopSignal": "SIGQUIT"}}]},
        "status": {"containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "x", "imageID": "", "ready": true, "restartCount": 0}]},
    }))
    .expect("a Pod");
    d.on_pod(PodUpdate::Relisted(
        crate::enrich::pods::PodFacts::from_pod(&pod)
            .into_iter()
            .collect(),
    ));
    let identity = identity::Identity {
        runtime: Runtime::Containerd,
        id: "abc".into(),
        pod_uid: Some("8dbd0d3c-4b1e-4c39-9b32-5b6b0f7a3c11".into()),
        qos: None,
        namespace: None,
    };
    let info = d.info_for(&identity).expect("facts from the pod");
    assert_eq!(info.name.as_deref(), Some("app"));
    assert_eq!(info.pod.as_deref(), Some("web-1"));
    assert_eq!(info.workload.as_deref(), Some("StatefulSet/web"));
    assert_eq!(info.grace_period_seconds, Some(5.0));
    assert_eq!(d.stop_signal_of(&identity), Signal::QUIT);
    // Deleted from the API: kept a while for late records, then forgotten.
    d.on_pod(PodUpdate::Relisted(Vec::new()));
    assert!(d.info_for(&identity).is_some());
    d.forget_departed(Instant::now() + crate::enrich::pod_store::DEPARTED_KEPT);
    assert!(d.info_for(&identity).is_none());
}

#[tokio::test]
async fn shutdown_is_a_clean_end() {
    let (_tx, events) = mpsc::channel(1);
    let (mut d, replies) = daemon(events);
    let served = d.serve(replies, &Quiet, std::future::ready(())).await;
    assert!(served.is_ok(), "{served:?}");
}
