//! The preStop exec hook through the real containerd, run as kubelet runs it (CRI ExecSync with
//! the grace as its timeout, then StopContainer with what is left): a hook that eats the grace.
//! (A hook that stops the app itself from inside is tested on the tracker's event sequences
//! only: through runc 1.1 its inside signal was missed in 3 of 6 runs, see issue 23.)
//!
//! runc before 1.2 may move an exec into the container only after it exec'd: the kernel then
//! knows the hook by the name it runs when it is moved in.
use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{eventually, http_get, record_where, Daemon},
};

/// Until the daemon has the runtime's word on these pods' containers (their preStop hooks):
/// the audit names them. A pod is deleted long after it started; here the hook runs at once.
fn named_by_the_runtime(daemon: &Daemon, pods: &[&str]) {
    eventually("the containers named by the runtime", || {
        let (_, m) = http_get(daemon.addr, "/metrics")?;
        pods.iter()
            .all(|p| m.contains(&format!(r#"pod="{p}",container="app"}} "#)))
            .then_some(())
    });
}

/// A preStop hook that sleeps past the grace (a "let the endpoints converge" recipe sized
/// wrong): kubelet's ExecSync times out at the grace, SIGTERM gets the 2 s minimum, and an app
/// that needs longer is SIGKILLed. The verdict names the hook, not the app.
#[tokio::test(flavor = "multi_thread")]
async fn a_pre_stop_hook_that_takes_the_grace_is_the_verdict() {
    let ctd = Containerd::start().await;
    let daemon = Daemon::start(&ctd.socket, ctd.dir.join("daemon.log"));
    let mut cri = ctd.client().await;
    let pod = PodSpec {
        namespace: "e2e",
        name: "hook-eats-grace",
        uid: "3f6b1c2a-7d4e-4f5a-9b8c-0000000000aa",
        grace_seconds: 3,
        shared_pids: false,
    };
    // The demo's slow shutdown: every process gets SIGTERM, a worker takes a minute over it.
    let script =
        "trap 'kill -TERM -1; wait' TERM; sh -c 'trap \"sleep 60\" TERM; sleep 1000 & wait' & wait";
    let (sandbox, id) = cri
        .start_pod(&pod, "app", script, Some("sleep 10"), &ctd.dir)
        .await;
    pod.wait_for_programs(&id, &["sh", "sh", "sleep"]);
    named_by_the_runtime(&daemon, &[pod.name]);
    let hook = cri.stop_like_kubelet(&id, 3, Some("sleep 10")).await;
    assert_eq!(
        hook, None,
        "the hook outlived the grace: ExecSync timed out"
    );
    let r = record_where(daemon.addr, "/container/id", &id);
    assert_eq!(r["verdict"], "pre_stop_took_the_grace", "{r:#}");
    assert_eq!(r["outcome"], "killed_after_grace", "{r:#}");
    let why = r["explanation"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("The preStop hook (exec: /bin/sh -c sleep 10) took 3.")
            && why.contains("of the 3 s grace period"),
        "{why}"
    );
    let share = r["pre_stop"]["grace_share"].as_f64().unwrap_or_default();
    assert!(share > 0.95, "{r:#}");
    assert!(
        r["pre_stop"]["exit_code"].is_null(),
        "still running at the stop: {r:#}"
    );
    cri.remove_pod(&sandbox).await;
}
