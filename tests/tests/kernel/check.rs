//! `graceful-daemon check`, the real binary: each kind of PID 1 through it, its exit codes,
//! `--json` and `--junit`.
use std::process::Command;

use graceful_tests::{
    check_cli::{check, record},
    daemon::daemon_binary,
};

#[test]
fn a_shell_wrapper_without_exec_fails() {
    let (code, r) = record(&[], &["sh", "-c", "sleep 1000; true"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "swallowed_by_shell_pid1", "{r:#}");
    assert!(r["explanation"].as_str().unwrap().contains("exec"), "{r:#}");
}

#[test]
fn an_interpreter_without_a_handler_fails() {
    // perl as PID 1 with no SIGTERM handler: the kernel drops the signal.
    let (code, r) = record(&[], &["perl", "-e", "sleep 1000"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "pid1_ignores_stop_signal", "{r:#}");
    assert_eq!(r["init"]["comm"], "perl");
    assert!(r["explanation"].as_str().unwrap().contains("tini"), "{r:#}");
}

#[test]
fn a_forwarding_trap_passes() {
    let script = "trap 'kill -TERM $!; wait $!; exit 0' TERM; sleep 1000 & wait";
    let (code, r) = record(&[], &["sh", "-c", script]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful");
    assert_eq!(r["outcome"], "exited");
}

#[test]
fn a_handler_that_exits_passes() {
    let (code, r) = record(&[], &["sh", "-c", graceful_tests::GRACEFUL_SCRIPT]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful");
    // Exiting while the worker still runs: the kernel kills the worker with the namespace.
    let (code, r) = record(&[], &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["verdict"], "children_killed_at_exit", "{r:#}");
    assert_eq!(r["outcome"], "exited");
}

#[test]
fn a_trap_that_never_forwards_fails() {
    let script = "trap 'echo stopping' TERM; sleep 1000 & while :; do wait; done";
    let (code, r) = record(&[], &["sh", "-c", script]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "not_forwarded", "{r:#}");
}

#[test]
fn another_stop_signal_is_sent_and_judged() {
    let (code, r) = record(
        &["--stop-signal", "SIGQUIT", "--ready-after", "0.5"],
        // A background job of a shell ignores SIGQUIT: the worker is stopped with SIGTERM.
        &[
            "sh",
            "-c",
            "trap 'kill -TERM $!; wait $!; exit 0' QUIT; sleep 1000 & wait",
        ],
    );
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["stop"]["signal"], "SIGQUIT");
    let (code, r) = record(
        &["--stop-signal", "SIGQUIT"],
        &["sh", "-c", "sleep 1000; true"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "swallowed_by_shell_pid1");
    assert!(r["explanation"].as_str().unwrap().contains("SIGQUIT"));
}

#[test]
fn a_missing_binary_is_a_usage_error() {
    for command in [
        &["no-such-program-anywhere"][..],
        &["/nonexistent/app", "--serve"],
    ] {
        let c = check(&[], command);
        assert_eq!(c.code, Some(2), "{command:?}: {}", c.stderr);
        assert!(c.error_line().contains("cannot start"), "{}", c.stderr);
    }
    let c = check(&["--grace", "nope"], &["sleep", "1"]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    let c = Command::new(daemon_binary()).arg("check").output().unwrap();
    assert_eq!(c.status.code(), Some(2), "no command");
}

#[test]
fn a_command_that_ends_by_itself_is_a_usage_error_that_leaves_nothing() {
    let c = check(&["--grace", "2"], &["sh", "-c", "exit 3"]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(
        c.error_line().contains("before it was stopped") && c.error_line().contains("exit code 3"),
        "{}",
        c.stderr
    );
    let cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let run = cgroups.dir(&format!("/graceful-demo/{}-0", c.pid));
    assert!(!run.exists(), "{} was left behind", run.display());
}

#[test]
fn junit_reports_for_ci() {
    let dir = std::env::temp_dir();
    let failing = dir.join(format!("graceful-junit-fail-{}.xml", std::process::id()));
    let c = check(
        &["--grace", "1", "--junit", failing.to_str().unwrap()],
        &["sh", "-c", "sleep 1000; true"],
    );
    assert_eq!(c.code, Some(1));
    assert!(
        c.stdout.contains("swallowed_by_shell_pid1"),
        "the timeline: {}",
        c.stdout
    );
    let xml = std::fs::read_to_string(&failing).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("<testsuite name=\"graceful\" tests=\"1\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"swallowed_by_shell_pid1\""),
        "{xml}"
    );
    assert!(xml.contains("name=\"sh -c sleep 1000; true\""), "{xml}");

    let passing = dir.join(format!("graceful-junit-pass-{}.xml", std::process::id()));
    let c = check(
        &["--grace", "2", "--junit", passing.to_str().unwrap()],
        &["sh", "-c", graceful_tests::GRACEFUL_SCRIPT],
    );
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    let xml = std::fs::read_to_string(&passing).unwrap();
    assert!(
        xml.contains("failures=\"0\"") && !xml.contains("<failure"),
        "{xml}"
    );
    let _ = std::fs::remove_file(failing);
    let _ = std::fs::remove_file(passing);
}

/// A Pod manifest in a scratch file of this test's own.
fn pod_file(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("graceful-pod-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The app drains for `drain` s on SIGTERM; the proxy exits at once on it.
fn pod_manifest(name: &str, grace: u32, drain: u32, native: bool) -> String {
    let app = format!(
        "  - name: app\n    command: [sh, -c, \"trap 'kill -TERM $!; sleep {drain}; wait $!; exit 0' TERM; sleep 1000 & wait\"]\n"
    );
    let proxy =
        "command: [sh, -c, \"trap 'kill -TERM $!; wait $!; exit 0' TERM; sleep 1000 & wait\"]\n";
    let (init, sidecar) = if native {
        (
            format!("  initContainers:\n  - name: proxy\n    restartPolicy: Always\n    {proxy}"),
            String::new(),
        )
    } else {
        (String::new(), format!("  - name: istio-proxy\n    {proxy}"))
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: {grace}\n{init}  containers:\n{app}{sidecar}"
    )
}

/// `check --pod` stops a pod as a kubelet does and judges its order: a classic proxy gone while
/// the app drains; a native one stopped after the app; a native one the grace ran out on.
#[test]
fn check_pod_judges_the_order_of_a_pods_containers() {
    for (name, grace, drain, native, verdict, code) in [
        ("classic", 6, 3, false, "sidecar_stopped_first", 1),
        ("native", 6, 3, true, "graceful", 0),
        ("late", 3, 8, true, "sidecar_not_stopped", 1),
    ] {
        let path = pod_file(name, &pod_manifest(name, grace, drain, native));
        let c = check(&["--pod", &path.display().to_string(), "--json"], &[]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(c.code, Some(code), "{name}: {}{}", c.stdout, c.stderr);
        let lines: Vec<serde_json::Value> = c
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let pod = lines.last().unwrap();
        assert_eq!(pod["kind"], "pod_termination", "{name}: {pod:#}");
        assert_eq!(pod["verdict"], verdict, "{name}: {pod:#}");
        assert_eq!(
            lines.len(),
            3,
            "two container records and the pod's: {}",
            c.stdout
        );
        if native {
            // The sidecar's stop signal (if any) came only once the app was gone.
            let at = |n: &str, k: &str| {
                pod["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == n)
                    .map(|c| c[k].clone())
                    .unwrap()
            };
            let proxy_stop = at("proxy", "stop_at");
            assert!(
                proxy_stop.is_null() || proxy_stop.as_f64() >= at("app", "ended_at").as_f64(),
                "{name}: {pod:#}"
            );
        }
    }
}

#[test]
fn check_pod_says_what_it_cannot_check_in_one_line_and_runs_nothing() {
    for (text, said) in [
        ("apiVersion: apps/v1\nkind: Deployment\n", "is not a Pod (kind: Deployment)"),
        (
            "kind: Pod\nspec:\n  containers:\n  - name: app\n    image: nginx\n",
            "container app has no command",
        ),
        (
            "kind: Pod\nspec:\n  initContainers:\n  - name: p\n    restartPolicy: Sometimes\n    command: [sh]\n  containers:\n  - name: app\n    command: [sh]\n",
            "unknown restartPolicy \"Sometimes\"",
        ),
    ] {
        let path = pod_file("bad", text);
        let c = check(&["--pod", &path.display().to_string()], &[]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(c.code, Some(2), "{text}: {}", c.stderr);
        assert!(c.error_line().contains(said), "{text}: {}", c.stderr);
        let cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
        let run = cgroups.dir(&format!("/graceful-demo/{}-0", c.pid));
        assert!(!run.exists(), "{} was left behind", run.display());
    }
}
