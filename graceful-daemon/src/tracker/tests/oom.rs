//! The OOM killer's victims: named on the record, the verdict only when one ended the
//! container, never a termination for a child taken while the container runs on.
use super::*;

fn oom(s: &mut Seq, pid: u32) {
    let now = s.now;
    s.feed(Event::Oom(OomEvent {
        ts: now,
        pid,
        cgroup: CG,
    }));
}

/// The kernel's own SIGKILL (si_code SI_KERNEL), sent from whatever task allocated.
fn kernel_kill(s: &mut Seq, from_cgroup: CgroupId, pid: u32) {
    let mut e = signal_event(
        s.now,
        Signal::KILL,
        (77, "allocator", from_cgroup),
        (pid, "", CG),
        SignalResult::Delivered,
    );
    e.code = SI_KERNEL;
    s.feed(Event::Signal(e));
}

/// sh forwards SIGTERM to its worker, both exit: a clean stop.
fn graceful_stop(s: &mut Seq, worker: u32) {
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, worker, SignalResult::Delivered)
        .at(0.5)
        .exit(worker, Some(0), None)
        .exit(10, Some(0), None);
}

#[test]
fn a_child_taken_by_the_oom_killer_while_the_container_runs_is_noted_not_the_verdict() {
    let mut s = shell_with_child();
    s.fork(10, 12, "sh").exec(12, "worker");
    // The worker is OOM-killed (the SIGKILL comes from outside: a global OOM's allocator).
    kernel_kill(&mut s, HOST, 12);
    oom(&mut s, 12);
    s.exit(12, None, Some(9));
    assert!(!s.t.stopping(CG), "no stop began: the container runs on");
    assert!(s.done.is_empty());
    // Later, a clean stop.
    s.at(60.0);
    graceful_stop(&mut s, 11);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Graceful, "{}", r.explanation);
    assert_eq!(
        r.oom,
        vec![OomVictim {
            pid: 12,
            comm: "worker".into(),
            main: false,
            ended_container: false
        }]
    );
    assert!(
        r.explanation
            .contains("The OOM killer also killed worker (pid 12)")
            && r.explanation.contains("did not end it"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_child_taken_during_a_stop_that_otherwise_went_well_is_noted() {
    let mut s = shell_with_child();
    s.fork(10, 12, "sh").exec(12, "worker");
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 11, SignalResult::Delivered)
        .signal(Signal::TERM, 10, CG, 12, SignalResult::Delivered);
    // Flushing its buffers on the way out, the worker is OOM-killed from inside.
    s.at(0.2);
    kernel_kill(&mut s, CG, 12);
    oom(&mut s, 12);
    s.exit(12, None, Some(9))
        .at(0.5)
        .exit(11, Some(0), None)
        .exit(10, Some(0), None);
    let r = s.one();
    assert_ne!(r.verdict, Verdict::OomKilled, "{}", r.explanation);
    assert_eq!(r.oom.len(), 1);
    assert!(!r.oom[0].ended_container && !r.oom[0].main);
    assert!(r.explanation.contains("also killed worker (pid 12)"));
}

#[test]
fn the_main_process_taken_is_the_verdict_and_said_so() {
    let mut s = shell_with_child();
    oom(&mut s, 10);
    s.signal(Signal::KILL, 11, CG, 10, SignalResult::Delivered)
        .exit(10, None, Some(9))
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
    let r = s.one();
    assert_eq!(r.verdict, Verdict::OomKilled);
    assert_eq!(
        r.oom,
        vec![OomVictim {
            pid: 10,
            comm: "sh".into(),
            main: true,
            ended_container: true
        }]
    );
    assert!(
        r.explanation.contains("the main process"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_container_that_ends_on_its_own_after_its_child_was_taken_is_oom_killed() {
    let mut s = shell_with_child();
    kernel_kill(&mut s, CG, 11);
    oom(&mut s, 11);
    // sh's `wait` returns and the script ends: the container ended because of the OOM.
    s.exit(11, None, Some(9)).at(0.1).exit(10, Some(137), None);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::OomKilled, "{}", r.explanation);
    assert!(r.oom[0].ended_container && !r.oom[0].main);
    assert!(
        r.explanation
            .contains("sleep (pid 11), a child of sh (pid 10)"),
        "{}",
        r.explanation
    );
}
