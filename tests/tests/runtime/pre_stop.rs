//! The preStop exec hook through the real containerd, run as kubelet runs it (CRI ExecSync with
//! the grace as its timeout, then StopContainer with what is left): a hook that eats the grace,
//! and hooks that stop the app themselves from inside.
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

/// A preStop hook that stops the app itself from inside, as `nginx -s quit` and `kill -QUIT 1`
/// recipes do, run by the runtime as kubelet runs it (CRI ExecSync): the hook's signal is the
/// stop, judged by the usual rules. The kernel reports a stop signal to PID 1 from inside
/// whether or not it saw the hook come in (runc 1.1 may move the hook's process in after it
/// ran): `source` is `pre_stop` when it did, else `inside`; the verdict is the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_pre_stop_hook_that_signals_pid1_is_the_stop() {
    let ctd = Containerd::start().await;
    let daemon = Daemon::start(&ctd.socket, ctd.dir.join("daemon.log"));
    let mut cri = ctd.client().await;
    let pod = |name: &'static str, uid: &'static str| PodSpec {
        namespace: "e2e",
        name,
        uid,
        grace_seconds: 5,
        shared_pids: false,
    };
    let quits = pod("quits-on-hook", "3f6b1c2a-7d4e-4f5a-9b8c-0000000000b1");
    let shell = pod("shell-pid1-hook", "3f6b1c2a-7d4e-4f5a-9b8c-0000000000b2");
    // Handles SIGQUIT as nginx does: stops its worker, waits, exits 0.
    let quitting = "trap 'kill -TERM $!; wait $!; exit 0' QUIT; sleep 1000 & wait";
    let (quits_sandbox, quits_id) = cri
        .start_pod(&quits, "app", quitting, Some("kill -QUIT 1"), &ctd.dir)
        .await;
    let (shell_sandbox, shell_id) = cri
        .start_pod(&shell, "app", "sleep 1000; true", Some("kill 1"), &ctd.dir)
        .await;
    quits.wait_for_programs(&quits_id, &["sh", "sleep"]);
    shell.wait_for_programs(&shell_id, &["sh", "sleep"]);
    named_by_the_runtime(&daemon, &[quits.name, shell.name]);
    cri.stop_like_kubelet(&quits_id, 5, Some("kill -QUIT 1"))
        .await;
    cri.stop_like_kubelet(&shell_id, 3, Some("kill 1")).await;

    let r = record_where(daemon.addr, "/container/id", &quits_id);
    let source = r["stop"]["source"].as_str().unwrap_or_default();
    assert!(["pre_stop", "inside"].contains(&source), "{r:#}");
    assert_eq!(r["stop"]["signal"], "SIGQUIT", "{r:#}");
    assert_eq!(r["stop"]["sender"]["comm"], "sh", "{r:#}");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    assert_eq!(r["outcome"], "exited", "{r:#}");
    let why = r["explanation"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("The preStop hook (sh (pid") || why.contains("from inside the container"),
        "{r:#}"
    );
    // `kill 1` dropped by a shell PID 1: a hook known to the kernel is the stop; otherwise the
    // inside signal changed nothing and the runtime's SIGTERM is the stop. Swallowed either way.
    let r = record_where(daemon.addr, "/container/id", &shell_id);
    let source = r["stop"]["source"].as_str().unwrap_or_default();
    assert!(["pre_stop", "runtime"].contains(&source), "{r:#}");
    assert_eq!(r["stop"]["signal"], "SIGTERM", "{r:#}");
    assert_eq!(r["verdict"], "swallowed_by_shell_pid1", "{r:#}");
    cri.remove_pod(&quits_sandbox).await;
    cri.remove_pod(&shell_sandbox).await;
}
