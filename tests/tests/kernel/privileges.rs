//! Least privilege, proven by running: `graceful-daemon run` as a non-root user holding only
//! the capabilities the README lists becomes ready, drops them all, and records a stop.
use graceful::{cgroup::Cgroup2, procfs::ProcStatus, signals::Signal, throwaway::Throwaway};
use graceful_tests::daemon::{record_where, Daemon};

/// What `run` needs as a non-root user: BPF and PERFMON load and attach the programs,
/// DAC_READ_SEARCH reads tracefs (root-only, mode 0700). As uid 0, BPF and PERFMON suffice.
const NON_ROOT_CAPS: &str = "+bpf,+perfmon,+dac_read_search";
const ROOT_CAPS: &str = "+bpf,+perfmon";

fn setpriv(caps: &str, non_root: bool) -> Vec<String> {
    let mut args = vec!["setpriv".to_string()];
    if non_root {
        args.extend(["--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from));
    }
    args.extend([
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
    ]);
    args
}

/// The effective capabilities and uid of a running process.
fn capabilities_of(pid: u32) -> (u64, Option<u32>) {
    let status = ProcStatus::read(pid).unwrap();
    (status.cap_eff, status.euid)
}

fn records_a_stop_with_no_capability_left(caps: &str, non_root: bool, name: &str) {
    let log = std::env::temp_dir().join(format!("graceful-{name}-{}", std::process::id()));
    let wrapper = setpriv(caps, non_root);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let daemon = Daemon::start_under(&wrapper, &["--log-format", "json"], log.clone());
    let (eff, uid) = capabilities_of(daemon.child.id());
    assert_eq!(eff, 0, "capabilities left once ready (CapEff {eff:016x})");
    assert_eq!(uid == Some(65534), non_root, "euid {uid:?}");

    let mut cgroups = Cgroup2::discover().unwrap();
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-tests/{name}-{}", std::process::id()));
    let parent = run_cgroup.path();
    let mut sb = Throwaway::spawn(&mut cgroups, parent, "victim", &["/bin/sleep", "1000"]).unwrap();
    graceful_tests::wait_for_program(&sb, "sleep");
    sb.stop(Signal::TERM, std::time::Duration::from_millis(300))
        .unwrap();
    let record = record_where(daemon.addr, "/container/cgroup", &sb.cgroup);
    assert_eq!(record["verdict"], "pid1_ignores_stop_signal", "{record:#}");
    drop(sb);
    assert!(daemon.stop().success());
    let _ = std::fs::remove_file(&log);
}

#[test]
fn non_root_with_bpf_perfmon_and_dac_read_search() {
    records_a_stop_with_no_capability_left(NON_ROOT_CAPS, true, "nonroot");
}

#[test]
fn uid_0_with_bpf_and_perfmon_only() {
    records_a_stop_with_no_capability_left(ROOT_CAPS, false, "rootcaps");
}

/// One capability short: a clear one-line error naming what is missing, never a panic.
#[test]
fn a_missing_capability_is_named() {
    for (caps, non_root, says) in [
        ("+perfmon,+dac_read_search", true, "CAP_BPF"),
        ("+bpf,+dac_read_search", true, "CAP_PERFMON"),
        ("+bpf,+perfmon", true, "CAP_DAC_READ_SEARCH"),
    ] {
        let wrapper = setpriv(caps, non_root);
        let out = std::process::Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(graceful_tests::daemon::daemon_binary())
            .args(["run", "--metrics-addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{caps}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{caps}: {err}");
        assert!(errors[0].contains(says), "{caps}: {err}");
        assert!(!err.contains("panicked"), "{caps}: {err}");
    }
}

/// In a pid namespace of its own every pid the kernel reports would be wrong: refuse, clearly.
#[test]
fn refuses_a_private_pid_namespace() {
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(graceful_tests::daemon::daemon_binary())
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("host's pid namespace"), "{err}");
}

/// In a cgroup namespace of its own (a container's view) the daemon still names cgroups by
/// their place in the host's tree.
#[test]
fn works_in_a_private_cgroup_namespace() {
    let log = std::env::temp_dir().join(format!("graceful-cgroupns-{}", std::process::id()));
    let mut cgroups = Cgroup2::discover().unwrap();
    let run_cgroup = graceful::throwaway::Parent::new(&format!(
        "/graceful-tests/cgroupns-{}",
        std::process::id()
    ));
    let parent = run_cgroup.path();
    // Running before the daemon starts, so it is known from /proc (paths relative to the
    // daemon's namespace), not from the kernel's events.
    let mut sb = Throwaway::spawn(&mut cgroups, parent, "victim", &["/bin/sleep", "1000"]).unwrap();
    graceful_tests::wait_for_program(&sb, "sleep");
    // The daemon's namespace is rooted at a cgroup of its own, as a container's is.
    let home = cgroups.dir(&format!("{parent}/daemon"));
    std::fs::create_dir_all(&home).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --cgroup \"$0\" \"$@\"",
        home.display()
    );
    let daemon = Daemon::start_under(&["sh", "-c", &script], &[], log.clone());
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", daemon.child.id())).unwrap();
    sb.stop(Signal::TERM, std::time::Duration::from_millis(300))
        .unwrap();
    let record = record_where(daemon.addr, "/container/cgroup", &sb.cgroup);
    assert_eq!(record["verdict"], "pid1_ignores_stop_signal", "{record:#}");
    assert!(
        own.contains(&format!("0::{parent}/daemon")),
        "the daemon sits below the sandbox's parent: {own}"
    );
    drop(sb);
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir(&home);
    let _ = std::fs::remove_file(&log);
}
