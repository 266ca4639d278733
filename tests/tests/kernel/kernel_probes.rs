//! The kernel programs on the real kernel: verifier, attach, and what each tracepoint reports.
use std::time::Duration;

use graceful::{
    events::{AtGeneration, Event, ExitStatus, Handler, SignalResult},
    probes::PROGRAMS,
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
    for (name, _, _) in PROGRAMS {
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
    k.expect_exec(id, "sh").await;
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
