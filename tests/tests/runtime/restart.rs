//! A daemon (re)started while pods already run, as after every rollout of its DaemonSet: their
//! containers get their Kubernetes names from CRI, and a stop seen whole is judged as usual.
use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, http_get, record_where, Daemon},
};

#[tokio::test(flavor = "multi_thread")]
async fn containers_running_before_the_daemon_get_their_names() {
    let ctd = Containerd::start().await;
    let mut cri = ctd.client().await;
    let pod = PodSpec {
        namespace: "restart",
        name: "early",
        uid: "5e1f0c2a-7b3d-4e4f-9a8b-0c1d2e3f4a5b",
        grace_seconds: 1,
        shared_pids: false,
    };
    let (sandbox, id) = cri
        .start_pod(&pod, "app", "sleep 1000; true", None, &ctd.dir)
        .await;
    // Running, with its shell and its child, before the daemon starts.
    pod.wait_for_programs(&id, &["sh", "sleep"]);
    let daemon = Daemon::start(&ctd.socket, ctd.dir.join("daemon.log"));
    eventually("the audit gauge with the pod's CRI names", || {
        let (_, m) = http_get(daemon.addr, "/metrics")?;
        m.contains(r#"graceful_pid1_ignores_stop_signal{namespace="restart",workload_type="",workload="",pod="early",container="app"} 1"#)
            .then_some(())
    });
    cri.stop_container(&id, 1).await;
    let record = record_where(daemon.addr, "/container/id", &id);
    assert_eq!(record["verdict"], "swallowed_by_shell_pid1", "{record:#}");
    assert_eq!(record["container"]["pod"], "early", "{record:#}");
    assert_eq!(record["grace_period_seconds"], 1.0, "{record:#}");
    cri.remove_pod(&sandbox).await;
    assert!(daemon.stop().success());
}
