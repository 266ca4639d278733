//! Real PID 1s through `check`, the way images run them: inits that wait for signals (tini),
//! scripts run through their `#!` line, busybox applets that are no shell, traps that signal
//! their own process group, handlers that re-raise at an init, a JVM stopped with SIGQUIT, and
//! `npm start`.
//! Each asserts the verdict and the fix the explanation names. Host only: the guests of the
//! kernel matrix have no interpreters (the kernel side of the same rules runs there, in
//! `kernel_probes`).
use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use graceful_tests::check_cli::{check, explanation, record};

/// A scratch directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("graceful-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str, executable: bool) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        if executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Python app: `handler` is the body of its SIGTERM handler (None: no handler).
fn python(handler: Option<&str>) -> Vec<String> {
    let setup = match handler {
        Some(body) => format!(
            "def on_term(signo, frame):\n    {body}\nsignal.signal(signal.SIGTERM, on_term)\n"
        ),
        None => String::new(),
    };
    vec![
        "python3".into(),
        "-c".into(),
        format!("import os, signal, sys, time\n{setup}while True:\n    time.sleep(1000)\n"),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn tini_waits_for_the_stop_signal_and_forwards_it() {
    // tini blocks SIGTERM and takes it with sigtimedwait: the kernel queues it, never drops it.
    // Its child drains for longer than the grace.
    let app = python(Some("time.sleep(30)"));
    let mut command = vec!["tini", "--"];
    command.extend(args(&app));
    let (code, r) = record(&[], &command);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "slow_shutdown", "{r:#}");
    assert_eq!(r["init"]["comm"], "tini");
    assert_eq!(r["init"]["handles_stop_signal"], true, "{r:#}");
    assert_eq!(r["init"]["shell"], false);
    assert_eq!(r["stop"]["result"], "delivered");
    assert!(r["never_received"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(
        !explanation(&r).contains("no handler") && explanation(&r).contains("longer grace"),
        "{r:#}"
    );
    // The same app without a handler dies of the forwarded signal: a clean stop.
    let app = python(None);
    let mut command = vec!["tini", "--"];
    command.extend(args(&app));
    let (code, r) = record(&[], &command);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful");
}

#[test]
fn a_program_that_blocks_the_stop_signal_and_waits_for_it() {
    let script = "import signal, sys, time\n\
                  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n\
                  signal.sigwait({signal.SIGTERM})\n\
                  sys.exit(0)\n";
    let (code, r) = record(&[], &["python3", "-c", script]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful");
    // Taken, then a drain longer than the grace: slow, not ignored.
    let script = "import signal, time\n\
                  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n\
                  signal.sigwait({signal.SIGTERM})\n\
                  time.sleep(30)\n";
    let (code, r) = record(&[], &["python3", "-c", script]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "slow_shutdown", "{r:#}");
    assert_eq!(r["init"]["handles_stop_signal"], true, "{r:#}");
}

#[test]
fn audit_sees_no_risk_in_a_running_tini_container() {
    use graceful::{cgroup::Cgroup2, throwaway::Throwaway};
    let mut cgroups = Cgroup2::discover().unwrap();
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-tests/audit-{}", std::process::id()));
    let parent = run_cgroup.path();
    let tini = Throwaway::spawn(
        &mut cgroups,
        parent,
        "tini",
        &["/usr/bin/tini", "--", "/bin/sleep", "1000"],
    )
    .unwrap();
    let shell = Throwaway::spawn(
        &mut cgroups,
        parent,
        "shell",
        &["/bin/sh", "-c", "sleep 1000; true"],
    )
    .unwrap();
    graceful_tests::wait_for_command(&tini, &["/bin/sleep", "1000"]);
    graceful_tests::wait_for_command(&shell, &["sleep", "1000"]);
    let out = std::process::Command::new(graceful_tests::daemon::daemon_binary())
        .args(["audit", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |sb: &Throwaway| {
        entries
            .iter()
            .find(|e| e["container"]["cgroup"] == sb.cgroup.as_str())
            .unwrap_or_else(|| panic!("no audit entry for {}: {entries:#?}", sb.cgroup))
            .clone()
    };
    let t = of(&tini);
    assert_eq!(t["risk"], "none", "{t:#}");
    assert_eq!(t["init"]["handles_stop_signal"], true, "{t:#}");
    let s = of(&shell);
    assert_eq!(s["risk"], "stop_signal_dropped", "{s:#}");
    assert_eq!(s["init"]["shell"], true, "{s:#}");
}

#[test]
fn a_script_run_through_its_shebang_is_a_shell_and_named() {
    let dir = Scratch::new("shebang");
    let script = dir.file(
        "docker-entrypoint.sh",
        "#!/bin/sh\necho starting\nsleep 1000\n",
        true,
    );
    let (code, r) = record(&[], &[&script]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "swallowed_by_shell_pid1", "{r:#}");
    assert_eq!(r["init"]["shell"], true);
    assert_eq!(r["init"]["comm"], "docker-entrypoi");
    assert!(
        explanation(&r).contains("docker-entrypoint.sh") && explanation(&r).contains("`exec`"),
        "{r:#}"
    );
}

#[test]
fn busybox_applets_that_are_no_shell_are_judged_as_programs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let dir = Scratch::new("httpd");
    for command in [
        vec![
            "busybox",
            "httpd",
            "-f",
            "-p",
            &listen,
            "-h",
            dir.0.to_str().unwrap(),
        ],
        vec!["busybox", "sleep", "1000"],
    ] {
        let (code, r) = record(&[], &command);
        assert_eq!(code, Some(1), "{command:?}");
        assert_eq!(
            r["verdict"], "pid1_ignores_stop_signal",
            "{command:?}: {r:#}"
        );
        assert_eq!(r["init"]["shell"], false, "{r:#}");
        assert!(
            !explanation(&r).contains("exec form") && explanation(&r).contains("tini"),
            "{r:#}"
        );
    }
}

#[test]
fn a_trap_that_signals_its_process_group_stays_inside_the_container() {
    // runc gives PID 1 a session of its own: `kill -TERM 0` reaches the container, not check.
    let script = "trap 'kill -TERM 0; wait; exit 0' TERM; sleep 1000 & wait";
    let (code, r) = record(&[], &["sh", "-c", script]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
}

#[test]
fn pid1_starts_as_a_runtime_starts_it() {
    // Default dispositions (check itself ignores SIGPIPE), its own session, a runtime's
    // environment plus --env; else the command ends at once and check says so (exit 2).
    // /proc is the host's: `self` is the shell (a builtin's read) or grep, its child.
    let script = "test \"$MODE\" = prod && test \"$HOME\" = /root && test -n \"$HOSTNAME\" \
                  && grep -q '^SigIgn:.0000000000000000$' /proc/self/status \
                  && read -r pid comm state ppid pgrp sid rest < /proc/self/stat \
                  && test \"$pid\" = \"$sid\" && exec sleep 1000";
    let (code, r) = record(&["--env", "MODE=prod"], &["sh", "-c", script]);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["verdict"], "pid1_ignores_stop_signal", "{r:#}");
    assert_eq!(r["grace_period_seconds"], 2.0, "{r:#}");
    let c = check(&["--env", "NOEQUALS"], &["sleep", "1"]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
}

#[test]
fn a_handler_that_re_raises_at_pid1_is_told_to_exit() {
    // The glibc manual's "termination in handler": clean up, restore the default, raise again.
    // As a pid-namespace init the re-raised signal is dropped: no grace would be enough.
    let app = python(Some(
        "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGTERM)",
    ));
    let (code, r) = record(&[], &args(&app));
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "pid1_ignores_stop_signal", "{r:#}");
    assert_eq!(r["init"]["handles_stop_signal"], true, "{r:#}");
    assert!(
        explanation(&r).contains("re-raised") && explanation(&r).contains("Exit instead"),
        "{r:#}"
    );
    // Node.js does the same with process.once and process.kill, and by itself for an app with
    // no listener (`CMD ["node", "server.js"]`): its own handler resets the terminal and
    // re-raises.
    let js = "process.once('SIGTERM', () => process.kill(process.pid, 'SIGTERM')); setInterval(() => {}, 1000);";
    for app in [js, "setInterval(() => {}, 1000);"] {
        let (code, r) = record(&[], &["node", "-e", app]);
        assert_eq!(code, Some(1));
        assert_eq!(r["verdict"], "pid1_ignores_stop_signal", "{app}: {r:#}");
        assert!(
            explanation(&r).contains("re-raised")
                && explanation(&r).contains("process.on('SIGTERM'"),
            "{app}: {r:#}"
        );
    }
}

#[test]
fn a_jvm_stopped_with_sigquit_is_told_the_stop_signal_is_wrong() {
    let dir = Scratch::new("jvm");
    let source = dir.file(
        "Serve.java",
        "public class Serve { public static void main(String[] a) throws Exception { Thread.sleep(1_000_000L); } }\n",
        false,
    );
    let (code, r) = record(
        &["--stop-signal", "SIGQUIT", "--ready-after", "5"],
        &["java", &source],
    );
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "slow_shutdown", "{r:#}");
    assert_eq!(r["stop"]["signal"], "SIGQUIT");
    assert!(
        explanation(&r).contains("does not stop on SIGQUIT")
            && explanation(&r).contains("usually SIGTERM"),
        "{r:#}"
    );
    // SIGTERM stops it: the JVM runs its shutdown hooks and exits 143.
    let (code, r) = record(&["--ready-after", "5"], &["java", &source]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "graceful");
}

#[test]
fn a_pid1_that_exits_before_its_workers_gets_them_killed() {
    // The trap forwards, but `wait $c` returns at the trap, the shell exits, and the kernel cuts
    // the worker mid-drain; tini exits with its child and leaves a grandchild; a Python init's
    // handler calls os._exit with a worker still busy.
    let dir = Scratch::new("drains");
    let app = dir.file("app.py", &python(Some("time.sleep(5)"))[2], false);
    let drains = format!("trap 'kill -TERM $!' TERM; python3 {app} & wait $!");
    let python_init = "import os, signal, subprocess, time\n\
                       worker = subprocess.Popen(['sleep', '1000'])\n\
                       signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n\
                       time.sleep(1000)\n";
    let cases: [(&[&str], &str); 3] = [
        (&["sh", "-c", &drains], "had SIGTERM but had not finished"),
        (
            &["tini", "--", "sh", "-c", "sleep 1000; true"],
            "never received SIGTERM",
        ),
        (&["python3", "-c", python_init], "never received SIGTERM"),
    ];
    for (command, how) in cases {
        let (code, r) = record(&[], command);
        assert_eq!(code, Some(1), "{command:?}: {r:#}");
        assert_eq!(
            r["verdict"], "children_killed_at_exit",
            "{command:?}: {r:#}"
        );
        assert_eq!(r["outcome"], "exited", "{r:#}");
        assert!(
            explanation(&r).contains(how) && explanation(&r).contains("wait for its children"),
            "{command:?}: {r:#}"
        );
    }
}

/// Wrappers that start the app as their child, as small scripts named so: the explanation
/// names the wrapper and its own fix, as PID 1 and as the child of a shell without `exec`.
#[test]
fn wrappers_are_named_with_their_fix() {
    let dir = Scratch::new("wrappers");
    // npm-style: PID 1 runs the app as its child and never passes SIGTERM on.
    let npm = dir.file(
        "npm",
        "#!/bin/sh\ntrap 'echo stopping' TERM\nsleep 1000 &\nwhile :; do wait; done\n",
        true,
    );
    let (code, r) = record(&[], &[&npm, "start"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "not_forwarded", "{r:#}");
    assert!(
        explanation(&r).contains("npm was in the way") && explanation(&r).contains("npm start"),
        "{r:#}"
    );
    // uv-style, started by a shell without `exec`: the shell swallows SIGTERM, uv is named.
    let uv = dir.file("uv", "#!/bin/sh\nsleep 1000\n", true);
    let (code, r) = record(&[], &["/bin/sh", "-c", &format!("{uv} run app.py; true")]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "swallowed_by_shell_pid1", "{r:#}");
    assert!(
        explanation(&r).contains("uv was in the way") && explanation(&r).contains("uv run"),
        "{r:#}"
    );
}

/// The real npm (`xtask setup` installs it with Node.js), as `CMD ["npm", "start"]` runs it:
/// npm passes SIGTERM to the shell it runs the script with, that shell dies of it, npm exits,
/// and the app, which handles SIGTERM, never hears it and is cut by the kernel. The record
/// names npm and its fix.
#[test]
fn the_real_npm_start_is_named_with_its_fix() {
    let dir = Scratch::new("npm");
    dir.file(
        "package.json",
        r#"{"name":"app","version":"1.0.0","scripts":{"start":"node app.js"}}"#,
        false,
    );
    dir.file(
        "app.js",
        "process.on('SIGTERM', () => setTimeout(() => process.exit(0), 200));\n\
         setInterval(() => {}, 1000);\n",
        false,
    );
    let prefix = dir.0.display().to_string();
    let (code, r) = record(&[], &["npm", "--prefix", &prefix, "start"]);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["verdict"], "children_killed_at_exit", "{r:#}");
    assert_eq!(r["init"]["comm"], "npm start", "{r:#}");
    let unheard = r["never_received"].as_array().unwrap();
    assert!(unheard.iter().any(|p| p["comm"] == "node"), "{r:#}");
    assert!(
        explanation(&r).contains("npm was in the way")
            && explanation(&r).contains("`node server.js`"),
        "{r:#}"
    );
}
