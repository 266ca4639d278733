//! `check --image`: images built here (busybox, no registry), run and stopped by the real
//! containerd through CRI with their own entrypoint and STOPSIGNAL, judged by the real kernel.
use std::process::{Command, Output};

use graceful_tests::{cri::Containerd, daemon::daemon_binary};
use serde_json::Value;

fn check(ctd: &Containerd, args: &[&str]) -> Output {
    Command::new(daemon_binary())
        .args(["check", "--grace", "2", "--cri-socket"])
        .arg(&ctd.socket)
        .args(args)
        .output()
        .expect("run graceful-daemon check")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_checked_as_kubernetes_would_stop_them() {
    let ctd = Containerd::start().await;
    ctd.import_image(
        "graceful.test/shell-form:1",
        &["/bin/sh", "-c", "sleep 1000; true"],
        None,
    );
    ctd.import_image("graceful.test/exec-form:1", &["/bin/sleep", "1000"], None);
    ctd.import_image(
        "graceful.test/usr1:1",
        &[
            "/bin/sh",
            "-c",
            "trap 'kill -USR1 $!; wait; exit 0' USR1; sleep 1000 & wait",
        ],
        Some("SIGUSR1"),
    );
    ctd.import_image(
        "graceful.test/stopsignal-kill:1",
        &["/bin/sleep", "1000"],
        Some("SIGKILL"),
    );

    let out = check(&ctd, &["--json", "--image", "graceful.test/shell-form:1"]);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["verdict"], "swallowed_by_shell_pid1", "{r:#}");
    assert_eq!(r["outcome"], "killed_after_grace", "{r:#}");
    assert_eq!(r["stop"]["signal"], "SIGTERM", "{r:#}");
    assert_eq!(r["container"]["runtime"], "containerd", "{r:#}");
    assert_eq!(r["never_received"][0]["comm"], "sleep", "{r:#}");
    assert!(
        r["explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("exec"),
        "the fix: {r:#}"
    );

    let out = check(&ctd, &["--json", "--image", "graceful.test/exec-form:1"]);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["verdict"], "pid1_ignores_stop_signal", "{r:#}");

    // The image's STOPSIGNAL is what the runtime sends, and this one handles it.
    let junit = ctd.dir.join("usr1.xml");
    let out = check(
        &ctd,
        &[
            "--json",
            "--junit",
            junit.to_str().unwrap(),
            "--image",
            "graceful.test/usr1:1",
        ],
    );
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    assert_eq!(r["stop"]["signal"], "SIGUSR1", "{r:#}");
    assert_eq!(r["outcome"], "exited", "{r:#}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("failures=\"0\"") && xml.contains("image graceful.test/usr1:1"),
        "{xml}"
    );

    // STOPSIGNAL SIGKILL: the runtime's own stop, said as such, not as a force delete.
    let out = check(
        &ctd,
        &["--json", "--image", "graceful.test/stopsignal-kill:1"],
    );
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["verdict"], "killed_without_stop_signal", "{r:#}");
    let why = r["explanation"].as_str().unwrap_or_default();
    assert!(
        why.contains("stop signal is SIGKILL") && !why.contains("force delete"),
        "{r:#}"
    );

    // A timeline for a person.
    let out = check(&ctd, &["--image", "graceful.test/shell-form:1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("verdict: swallowed_by_shell_pid1") && text.contains("why: "),
        "{text}"
    );

    // An image that is not there (and no registry to pull from): one line, exit 2.
    let out = check(&ctd, &["--image", "graceful.test/missing:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: image graceful.test/missing:1 is not on this node")
            && err.lines().count() == 1,
        "{err}"
    );

    // --stop-signal cannot override what the runtime sends.
    let out = check(
        &ctd,
        &["--stop-signal", "SIGINT", "--image", "graceful.test/usr1:1"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing is left behind: every pod sandbox the checks made is gone.
    let sandboxes = Command::new("ctr")
        .arg("-a")
        .arg(&ctd.socket)
        .args(["-n", "k8s.io", "containers", "ls", "-q"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sandboxes.stdout).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&sandboxes.stdout)
    );
}
