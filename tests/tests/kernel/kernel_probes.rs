//! The kernel programs on the real kernel: verifier, attach, and what each tracepoint reports.
use std::time::Duration;

use graceful::{
    events::{AtGeneration, Event, ExitStatus, Handler, SignalResult},
    procfs,
    signals::Signal,
    throwaway::Throwaway,
};
use graceful_tests::{wait_for_command, wait_for_program, wait_until_quiescent, Kernel};

const KILLED: ExitStatus = ExitStatus {
    code: None,
    signal: Some(9),
};
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn every_program_passes_the_verifier_and_attaches() {
    let k = Kernel::start("attach").await;
    let stats = k.probes.program_stats();
    // One way to see refused connections per kernel (its tracepoint from 6.10, else fentry).
    let programs = k.probes.programs();
    assert!(programs.contains(&"refused_tp") != programs.contains(&"refused_v4"));
    for name in programs {
        assert!(
            stats.iter().any(|(n, _, _)| n == name),
            "{name} not loaded: {stats:?}"
        );
    }
    // A required program that fails to attach fails the load; an optional one only warns:
    // every kernel of the matrix has all of them, so none may be missing here.
    assert!(
        k.probes.unavailable().is_empty(),
        "not attached on {}: {:?}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
        k.probes.unavailable()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_init_ignores_sigterm_then_sigkill_tears_the_namespace_down() {
    let mut k = Kernel::start("shell-init").await;
    let parent = k.parent.clone();
    let mut sb = Throwaway::spawn(
        &mut k.cgroups,
        &parent,
        "sh",
        &["/bin/sh", "-c", "sleep 1000; true"],
    )
    .unwrap();
    let (id, init) = (sb.cgroup_id, sb.init as u32);
    let exec = k.expect_exec(id, "sh").await;
    // The kernel says it is its pid namespace's init: the container's main process, whatever
    // moved it in from outside.
    assert!(exec.namespace_init && exec.entered, "{exec:?}");
    let sleep = wait_for_program(&sb, "sleep");
    wait_until_quiescent(sb.init);

    sb.signal(Signal::TERM).unwrap();
    let term = k.expect_signal(Signal::TERM, init).await;
    assert_eq!(term.result, SignalResult::Ignored, "{term:?}");
    assert_eq!((term.target_comm.as_str(), term.target_cgroup), ("sh", id));
    assert_eq!(term.sender_pid, std::process::id());

    sb.signal(Signal::KILL).unwrap();
    assert_eq!(
        k.expect_signal(Signal::KILL, init).await.result,
        SignalResult::Delivered
    );
    let teardown = k.expect_signal(Signal::KILL, sleep).await;
    assert_eq!(
        teardown.sender_pid, init,
        "the dying init sends the teardown SIGKILLs"
    );
    assert_eq!(teardown.sender_cgroup, id);
    let exit = k.expect_exit(init).await;
    assert_eq!((exit.status, exit.cgroup), (KILLED, id));
    assert_eq!(sb.wait(WAIT).unwrap(), Some(KILLED));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_makes_sigterm_delivered_and_exit_code_3_is_reported() {
    let mut k = Kernel::start("handler").await;
    let parent = k.parent.clone();
    let script = "trap 'exit 3' TERM; sleep 1000 & wait";
    let mut sb =
        Throwaway::spawn(&mut k.cgroups, &parent, "trap", &["/bin/sh", "-c", script]).unwrap();
    let init = sb.init as u32;
    wait_for_program(&sb, "sleep");
    sb.signal(Signal::TERM).unwrap();
    assert_eq!(
        k.expect_signal(Signal::TERM, init).await.result,
        SignalResult::Delivered
    );
    let exited = ExitStatus {
        code: Some(3),
        signal: None,
    };
    assert_eq!(k.expect_exit(init).await.status, exited);
    assert_eq!(sb.wait(WAIT).unwrap(), Some(exited));
}

/// What the kernel program reads of the target's disposition when SIGTERM is generated, on
/// each kernel's own layout of task_struct and sighand_struct (BTF).
#[tokio::test(flavor = "multi_thread")]
async fn the_targets_handler_and_blocked_mask_are_read_at_generation() {
    let mut k = Kernel::start("disposition").await;
    let parent = k.parent.clone();
    // tini from the PATH: the host's package, or the guest's static copy.
    let tini = graceful::check::resolve("tini").expect("tini is installed by `cargo xtask setup`");
    let tini = tini.to_string_lossy().into_owned();
    // (name, command, the command line it settles on, what the kernel saw, its result)
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        &'a [&'a str],
        AtGeneration,
        SignalResult,
    );
    let cases: [Case; 4] = [
        (
            "default",
            vec!["/bin/sleep", "1000"],
            &["/bin/sleep", "1000"],
            AtGeneration {
                handler: Some(Handler::Default),
                blocked: false,
            },
            SignalResult::Ignored,
        ),
        (
            "ignore",
            vec!["/bin/sh", "-c", "trap '' TERM; sleep 1000; true"],
            &["sleep", "1000"],
            AtGeneration {
                handler: Some(Handler::Ignore),
                blocked: false,
            },
            SignalResult::Ignored,
        ),
        (
            "handler",
            vec!["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
            &["sleep", "1000"],
            AtGeneration {
                handler: Some(Handler::Function),
                blocked: false,
            },
            SignalResult::Delivered,
        ),
        (
            // Blocked, and waited for in sigtimedwait (real_blocked): queued, not dropped.
            "sigwait",
            vec![tini.as_str(), "--", "/bin/sleep", "1000"],
            &["/bin/sleep", "1000"],
            AtGeneration {
                handler: Some(Handler::Default),
                blocked: true,
            },
            SignalResult::Delivered,
        ),
    ];
    for (name, argv, settled, expected, result) in cases {
        let mut sb = Throwaway::spawn(&mut k.cgroups, &parent, name, &argv).unwrap();
        let init = sb.init as u32;
        wait_for_command(&sb, settled);
        wait_until_quiescent(sb.init);
        sb.signal(Signal::TERM).unwrap();
        let term = k.expect_signal(Signal::TERM, init).await;
        assert_eq!(
            (term.at_generation, term.result),
            (expected, result),
            "{name}: {term:?}"
        );
        if name == "handler" {
            // And the kernel's delivery of it to the handler, in the receiving process.
            let deliver = k
                .expect_some("the delivery of SIGTERM to the trap", |e| match e {
                    Event::Deliver(d) if d.pid == init && d.signal == Signal::TERM => {
                        Some(d.clone())
                    }
                    _ => None,
                })
                .await;
            assert_eq!(deliver.handler, Some(Handler::Function), "{deliver:?}");
        }
        sb.stop(Signal::KILL, WAIT).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn target_cgroup_is_known_after_the_process_and_its_cgroup_are_gone() {
    let mut k = Kernel::start("gone").await;
    let parent = k.parent.clone();
    let mut sb =
        Throwaway::spawn(&mut k.cgroups, &parent, "gone", &["/bin/sleep", "1000"]).unwrap();
    let (id, init) = (sb.cgroup_id, sb.init as u32);
    k.expect_exec(id, "sleep").await;
    sb.signal(Signal::KILL).unwrap();
    sb.wait(WAIT).unwrap();
    drop(sb); // the process is reaped and its cgroup removed before the event is read
    assert!(!k.cgroups.dir(&format!("{parent}/gone")).exists());
    assert_eq!(k.expect_signal(Signal::KILL, init).await.target_cgroup, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_older_than_the_probes_have_their_cgroup() {
    let mut cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let run_cgroup =
        graceful::throwaway::Parent::new(&format!("/graceful-tests/old-{}", std::process::id()));
    let parent = run_cgroup.path();
    let sb = Throwaway::spawn(&mut cgroups, parent, "old", &["/bin/sleep", "1000"]).unwrap();
    // The init has joined its cgroup and exec'd before the probes exist.
    let deadline = std::time::Instant::now() + graceful_tests::EVENT_TIMEOUT;
    while sb.pids() != vec![sb.init] || procfs::comm(sb.init).as_deref() != Some("sleep") {
        assert!(
            std::time::Instant::now() < deadline,
            "the init never ran sleep in its cgroup"
        );
        std::thread::yield_now();
    }
    let mut k = Kernel::start("old").await;
    wait_until_quiescent(sb.init);
    sb.signal(Signal::TERM).unwrap();
    let term = k.expect_signal(Signal::TERM, sb.init as u32).await;
    assert_eq!(term.target_cgroup, sb.cgroup_id);
    assert_eq!(
        term.result,
        SignalResult::Ignored,
        "a non-shell init without a handler too"
    );
    drop(sb);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigurg_storm_is_counted_in_kernel_and_never_reaches_the_ring_buffer() {
    let mut k = Kernel::start("sigurg").await;
    let parent = k.parent.clone();
    let mut sb = Throwaway::spawn(&mut k.cgroups, &parent, "urg", &["/bin/sleep", "1000"]).unwrap();
    let pid = sb.init;
    wait_for_program(&sb, "sleep");
    let before = k
        .probes
        .signal_counts()
        .unwrap()
        .get(Signal::URG, SignalResult::Ignored);
    for _ in 0..100_000 {
        // SAFETY: the sandbox's init, our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGURG) }, 0);
    }
    let after = k
        .probes
        .signal_counts()
        .unwrap()
        .get(Signal::URG, SignalResult::Ignored);
    assert!(
        after - before >= 100_000,
        "counted {} SIGURGs",
        after - before
    );
    // A stop signal after the storm: everything the storm produced is in the ring before it.
    sb.signal(Signal::KILL).unwrap();
    k.expect_signal(Signal::KILL, pid as u32).await;
    sb.wait(WAIT).unwrap();
    let urgs = k
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Signal(s) if s.signal == Signal::URG))
        .count();
    assert_eq!(urgs, 0, "SIGURG reached the ring buffer");
    assert_eq!(k.probes.lost_events().unwrap(), (0, 0));
}

/// A running container costs the ring buffer nothing but its first exec: its forks, execs,
/// exits and the signals among its own processes are only counted until a stop reaches it
/// from outside; from then on everything of it is reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_container_reaches_userspace_only_once_it_is_stopped() {
    let mut k = Kernel::start("quiet").await;
    let parent = k.parent.clone();
    let script = "trap '' USR1; i=0; while [ $i -lt 2000 ]; do kill -USR1 $$; i=$((i+1)); done; \
                  for i in 1 2 3 4 5 6 7 8 9 10; do /bin/sleep 0; done; sleep 1000";
    let usr1_before = k
        .probes
        .signal_counts()
        .unwrap()
        .get(Signal::USR1, SignalResult::Ignored);
    let mut sb =
        Throwaway::spawn(&mut k.cgroups, &parent, "quiet", &["/bin/sh", "-c", script]).unwrap();
    let (id, init) = (sb.cgroup_id, sb.init as u32);
    // The last sleep, not one of the loop's: a loop's exec after the stop would be reported.
    wait_for_command(&sb, &["sleep", "1000"]);
    wait_until_quiescent(sb.init);
    sb.signal(Signal::TERM).unwrap();
    k.expect_signal(Signal::TERM, init).await;
    let of_it = |e: &Event| match e {
        Event::Signal(s) => s.target_cgroup == id,
        Event::Exec(x) => x.cgroup == id,
        Event::Fork(f) => f.cgroup == id,
        Event::Exit(x) => x.cgroup == id,
        Event::Attach(a) => a.cgroup == id,
        Event::Deliver(d) => d.cgroup == id,
        Event::Conn(c) => c.cgroup == id,
        Event::Refused(r) => r.cgroup == id,
        Event::Oom(_) | Event::Lost(_) | Event::Drained(_) => false,
    };
    let before_stop: Vec<&Event> = k.seen.iter().filter(|e| of_it(e)).collect();
    // Everything up to and including the stop: the first exec (sh) and the stop itself.
    assert!(
        matches!(before_stop.as_slice(), [Event::Exec(x), Event::Signal(_)] if x.comm == "sh"),
        "{before_stop:#?}"
    );
    let usr1 = k
        .probes
        .signal_counts()
        .unwrap()
        .get(Signal::USR1, SignalResult::Ignored)
        - usr1_before;
    assert!(usr1 >= 2000, "counted {usr1} SIGUSR1");
    // Being stopped: its end is reported.
    sb.signal(Signal::KILL).unwrap();
    k.expect_exit(init).await;
    sb.wait(WAIT).unwrap();
}

/// The API says a pod is terminating: userspace marks its containers stopping, and from then on
/// the kernel reports what their processes signal among themselves (a preStop hook whose
/// program nobody knew, `pkill -QUIT nginx`), which it only counted before.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_attempt_after_a_stopping_containers_listener_closed_is_refused_on_its_account(
) {
    let mut k = Kernel::start("refused").await;
    let parent = k.parent.clone();
    // busybox's nc: the guests have it at /bbin (they have no other TCP server).
    let busybox = ["/bbin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox-static");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut sb = Throwaway::spawn(
        &mut k.cgroups,
        &parent,
        "listener",
        &[busybox, "nc", "-l", "-p", &port],
    )
    .unwrap();
    let (id, init) = (sb.cgroup_id, sb.init as u32);
    // nc listens on IPv6's any address where the kernel has IPv6 (it takes IPv4 too).
    let listening = format!(":{:04X}", port.parse::<u16>().unwrap());
    graceful_tests::daemon::eventually("nc listening", || {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .any(|table| {
                table.lines().any(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.len() > 3 && fields[1].ends_with(&listening) && fields[3] == "0A"
                })
            })
            .then_some(())
    });
    // Only a container being stopped has its closed listeners remembered.
    k.probes.stop_marks().unwrap().mark_stopping(id);
    sb.signal(Signal::KILL).unwrap();
    let closed = k
        .expect(
            "its listener closed",
            |e| matches!(e, Event::Conn(c) if c.cgroup == id && (c.old, c.new) == (10, 7)),
        )
        .await;
    k.expect_exit(init).await;
    sb.wait(WAIT).unwrap();
    for _ in 0..3 {
        let refused = std::net::TcpStream::connect(format!("127.0.0.1:{port}"));
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
    }
    for _ in 0..3 {
        let r = k
            .expect_some("a refused attempt", |e| match e {
                Event::Refused(r) if r.cgroup == id => Some(r.clone()),
                _ => None,
            })
            .await;
        assert_eq!(r.port.to_string(), port);
        assert!(r.ts > closed.ts());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_marked_stopping_by_userspace_reports_its_inside_signals() {
    let mut k = Kernel::start("marked").await;
    let parent = k.parent.clone();
    let fifo = graceful_tests::fifo("marked");
    // SIGHUP to itself while running, then (once the fifo says so) SIGUSR1 to itself.
    let script = format!(
        "trap '' HUP USR1; kill -HUP $$; read go < {0}; kill -USR1 $$; exec sleep 1000",
        fifo.display()
    );
    let mut sb = Throwaway::spawn(
        &mut k.cgroups,
        &parent,
        "marked",
        &["/bin/sh", "-c", &script],
    )
    .unwrap();
    let (id, init) = (sb.cgroup_id, sb.init as u32);
    // Opening the fifo waits for the script to be at its `read`: its SIGHUP is behind it.
    let mut go = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    k.probes.stop_marks().unwrap().mark_stopping(id);
    std::io::Write::write_all(&mut go, b"go\n").unwrap();
    drop(go);
    let usr1 = k.expect_signal(Signal::USR1, init).await;
    assert_eq!((usr1.sender_cgroup, usr1.target_cgroup), (id, id));
    let hup = k
        .seen
        .iter()
        .any(|e| matches!(e, Event::Signal(s) if s.target_cgroup == id && s.signal == Signal::HUP));
    assert!(!hup, "a signal inside before the mark reached userspace");
    sb.signal(Signal::KILL).unwrap();
    k.expect_exit(init).await;
    sb.wait(WAIT).unwrap();
    let _ = std::fs::remove_file(&fifo);
}
