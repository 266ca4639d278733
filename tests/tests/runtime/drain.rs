//! A node drain through the real containerd, as `kubectl drain` makes the kubelet stop every
//! pod at once: every container gets its record, and the right one. What it costs (latency,
//! CPU, memory, 250 pods) is the bench's (`cargo xtask bench`, `--drain`).
use graceful_tests::{
    cri::Containerd,
    daemon::Daemon,
    drain::{drain, Watching},
};

/// A node's default pod limit (the kubelet's `maxPods`).
const PODS: usize = 110;

#[tokio::test(flavor = "multi_thread")]
async fn a_node_drain_gives_every_container_its_record() {
    let ctd = Containerd::start().await;
    let log = ctd.dir.join("daemon.log");
    let daemon = Daemon::start(&ctd.socket, log.clone());
    let watching = Watching {
        pid: daemon.child.id(),
        addr: daemon.addr,
    };
    let d = drain(&ctd, watching, "drained", PODS).await;
    // The containerd directory goes with the test: keep the log of a drain that lost a record.
    if d.missing + d.unknown > 0 {
        let _ = std::fs::copy(&log, "/tmp/drain-daemon.log");
    }
    let counts = format!(
        "{} without a record, {} unknown, {} kernel events lost (daemon log: /tmp/drain-daemon.log)",
        d.missing, d.unknown, d.events_lost
    );
    assert_eq!((d.missing, d.unknown, d.events_lost), (0, 0, 0), "{counts}");
    let verdicts = |name: &str| d.verdicts.get(name).cloned().unwrap_or_default();
    // The app's shell forwards SIGTERM to its worker and waits for it.
    let apps = verdicts("app");
    assert_eq!(apps.len(), PODS);
    assert!(apps.iter().all(|v| v == "graceful"), "apps: {apps:?}");
    // Named by the program it runs, not by runc's stage that exec'd it (a running container's
    // execs are not reported; the app's shell may be gone before /proc is read).
    let inits = d.inits.get("app").cloned().unwrap_or_default();
    assert!(inits.iter().all(|c| c == "sh"), "app inits: {inits:?}");
    // The sidecar's PID 1 has no handler: the kernel drops its SIGTERM.
    let sidecars = verdicts("sidecar");
    assert_eq!(sidecars.len(), PODS);
    assert!(
        sidecars.iter().all(|v| v == "pid1_ignores_stop_signal"),
        "sidecars: {sidecars:?}"
    );
}
