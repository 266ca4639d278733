use super::*;
use crate::tracker::DRAIN_SLACK_NS;

use crate::events::{ExecEvent, ExitEvent, ExitStatus, SignalEvent, SignalResult};

/// A pipeline that saw one container's process `pid` start; `pid` is in no /proc (above any
/// pid_max), as if it had been reaped.
fn running_one(pid: u32, cg: CgroupId) -> (Pipeline, Mono) {
    let mut p = pipeline();
    let now = clock::monotonic_now();
    p.handle(&exec(pid, cg, "app", now));
    (p, now)
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        Cgroup2::discover().expect("cgroup2"),
        TrackerConfig::default(),
    )
}

/// A pipeline, and a real cgroup named `name` under the root: its path, directory and id.
fn with_cgroup(name: &str) -> (Pipeline, String, std::path::PathBuf, CgroupId) {
    let p = pipeline();
    let path = format!("/graceful-unit-{name}-{}", std::process::id());
    let dir = p.cgroups.dir(&path);
    std::fs::create_dir_all(&dir).expect("a cgroup (the unit tests run as root)");
    let id = p.cgroups.id_of(&path).expect("its id");
    (p, path, dir, id)
}

/// The first exec reported in `cg`, by `pid`.
fn exec(pid: u32, cg: CgroupId, comm: &str, ts: Mono) -> Event {
    Event::Exec(ExecEvent {
        ts,
        pid,
        cgroup: cg,
        comm: comm.into(),
        entered: false,
        namespace_init: false,
    })
}

/// The runtime's SIGTERM to `pid`, delivered.
fn term(p: &Pipeline, pid: u32, cg: CgroupId, ts: Mono) -> Event {
    Event::Signal(SignalEvent {
        ts,
        signal: Signal::TERM,
        code: 0,
        result: SignalResult::Delivered,
        group: true,
        sender_pid: 1,
        sender_tid: 1,
        sender_comm: "runc".into(),
        sender_cgroup: p.cgroups.root_id(),
        target_pid: pid,
        target_comm: "app".into(),
        target_cgroup: cg,
        at_generation: Default::default(),
        established: None,
    })
}

/// The exit of `pid` of a SIGTERM.
fn exit(pid: u32, cg: CgroupId, ts: Mono) -> Event {
    Event::Exit(ExitEvent {
        ts,
        pid,
        tid: pid,
        cgroup: cg,
        status: ExitStatus {
            code: None,
            signal: Some(Signal::TERM.0),
        },
        comm: "app".into(),
    })
}

/// As [`running_one`], with the runtime's SIGTERM read: the container is under a stop.
fn stopping_one(pid: u32, cg: CgroupId) -> (Pipeline, Mono) {
    let (mut p, now) = running_one(pid, cg);
    p.handle(&term(&p, pid, cg, now));
    assert!(p.tracker.stopping(cg));
    (p, now)
}

/// The drains that end a termination whose last exit was read by now.
fn drain_out(p: &mut Pipeline, after: Mono) -> Vec<TerminationRecord> {
    let drained = clock::monotonic_now().max(after);
    let mut records = p.handle(&Event::Drained(drained));
    records.extend(p.handle(&Event::Drained(
        clock::monotonic_now().max(drained) + DRAIN_SLACK_NS + 1,
    )));
    records
}

/// One record, and a graceful stop.
fn assert_one_graceful(records: &[TerminationRecord]) {
    assert_eq!(records.len(), 1);
    let t = &records[0].termination;
    assert_eq!(
        t.verdict,
        crate::tracker::Verdict::Graceful,
        "{}",
        t.explanation
    );
}

#[test]
fn a_cgroup_whose_first_exec_is_gone_is_looked_up_in_the_tree() {
    // runc's own exec in a new container's cgroup, before its program: gone when read.
    let (mut p, path, dir, id) = with_cgroup("first-exec");
    p.handle(&exec(u32::MAX - 17, id, "runc", clock::monotonic_now()));
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(p.cgroups.cached_path(id), Some(path.as_str()));
}

#[test]
fn a_record_ended_by_the_drain_that_prunes_still_names_its_removed_cgroup() {
    // A drain: the container's cgroup is removed right after its end, and the drain that ends
    // its termination is also the first past a prune's look, which forgets the paths of
    // removed cgroups no termination holds.
    let (mut p, path, dir, cg) = with_cgroup("pruned");
    let (pid, started) = (u32::MAX - 23, clock::monotonic_now());
    p.handle(&exec(pid, cg, "app", started));
    assert!(p.handle(&term(&p, pid, cg, started + 1_000)).is_empty());
    assert!(p.handle(&exit(pid, cg, started + 2_000)).is_empty());
    let _ = std::fs::remove_dir(&dir);
    assert!(p.handle(&Event::Drained(started + 3_000)).is_empty());
    p.prune();
    let records = p.handle(&Event::Drained(
        clock::monotonic_now() + LOST_EXIT_SLACK_NS + DRAIN_SLACK_NS + 1,
    ));
    assert_one_graceful(&records);
    assert_eq!(records[0].cgroup.as_deref(), Some(path.as_str()));
    assert_eq!(
        p.cgroups.cached_path(cg),
        None,
        "forgotten after its record"
    );
}

#[test]
fn a_target_gone_before_its_signal_was_read_still_opens_the_stop() {
    // The first exec reported was runc's own (gone since); the program exits at once on its
    // stop signal, before the signal is read: it joins as the kernel named it.
    let (runc, pid, cg) = (u32::MAX - 19, u32::MAX - 21, 0xC0FFF3);
    let (mut p, started) = running_one(runc, cg);
    assert!(p.handle(&term(&p, pid, cg, started + 1_000)).is_empty());
    assert!(p.tracker.stopping(cg), "its stop opened");
    assert!(p.handle(&exit(pid, cg, started + 2_000)).is_empty());
    assert_one_graceful(&drain_out(&mut p, started + 2_000));
}

#[test]
fn a_process_found_gone_before_its_stop_was_read_keeps_its_record() {
    // A drain's backlog: the runtime's SIGTERM and the exit it caused are still in the ring
    // when the prune looks and finds the process gone. It stays until a drain after the look.
    let (pid, cg) = (u32::MAX - 13, 0xC0FFF1);
    let (mut p, started) = running_one(pid, cg);
    p.prune();
    assert!(p.handle(&term(&p, pid, cg, started + 1_000)).is_empty());
    assert!(p.tracker.stopping(cg), "its stop opened");
    assert!(p.handle(&exit(pid, cg, started + 2_000)).is_empty());
    let records = drain_out(&mut p, started + 2_000);
    assert_one_graceful(&records);
}

#[test]
fn a_process_gone_unseen_while_its_container_runs_is_forgotten_after_a_drain() {
    let (pid, cg) = (u32::MAX - 15, 0xC0FFF2);
    let (mut p, _) = running_one(pid, cg);
    p.prune();
    let looked = clock::monotonic_now();
    p.handle(&Event::Drained(looked - 1));
    // Only this container: the pipeline also seeds whatever runs on the machine.
    assert!(
        p.tracker.knows(pid) && p.tracker.tracks(cg),
        "a drain before the look decides nothing"
    );
    p.handle(&Event::Drained(looked + LOST_EXIT_SLACK_NS + 1));
    assert!(!p.tracker.knows(pid) && !p.tracker.tracks(cg));
}

#[test]
fn a_process_gone_from_proc_is_forgotten_once_the_ring_was_drained_after_the_look() {
    let (pid, cg) = (u32::MAX - 7, 0xC0FFEE);
    let (mut p, _) = stopping_one(pid, cg);
    // However many sweeps look, its exit may still be queued behind them.
    p.sweep();
    p.sweep();
    assert!(p.tracker.stopping(cg));
    let looked = clock::monotonic_now();
    // A drain that began before the look says nothing of it.
    assert!(p.handle(&Event::Drained(looked - 1)).is_empty());
    assert!(p.tracker.stopping(cg));
    assert!(p
        .handle(&Event::Drained(looked + LOST_EXIT_SLACK_NS + 1))
        .is_empty());
    // Forgotten: its cgroup (unknown here) counts as empty, and the next drain ends it.
    let records = p.handle(&Event::Drained(
        clock::monotonic_now().max(looked + LOST_EXIT_SLACK_NS) + DRAIN_SLACK_NS + 1,
    ));
    assert_eq!(
        records.len(),
        1,
        "forgotten once the ring was empty after the look"
    );
    assert_eq!(
        records[0].termination.verdict,
        crate::tracker::Verdict::Unknown
    );
    assert!(!p.tracker.stopping(cg));
}

#[test]
fn a_drain_during_a_slow_look_says_nothing_of_what_the_look_found_gone() {
    // The process is reaped while the sweep looks (slowly, on a busy node); a drain the
    // reader made before the reap, but after the look began, must not decide it was lost.
    let (pid, cg) = (u32::MAX - 11, 0xC0FFF0);
    let (mut p, _) = stopping_one(pid, cg);
    let began = clock::monotonic_now();
    p.sweep_with(|_, _| {
        // A look that takes longer than the slack (a spin: the clock must really move).
        while clock::monotonic_now() < began + LOST_EXIT_SLACK_NS + 20_000_000 {}
        None
    });
    let during = began + LOST_EXIT_SLACK_NS + 10_000_000;
    assert!(p.handle(&Event::Drained(during)).is_empty());
    assert!(
        p.tracker.stopping(cg),
        "a drain from before the look ended decides nothing"
    );
}

#[test]
fn an_exit_read_after_the_sweeps_found_the_process_gone_is_not_lost() {
    // The ordering that made a false `unknown`: the process is reaped, two sweeps run
    // back to back (a busy loop's missed ticks), and only then is its exit read.
    let (pid, cg) = (u32::MAX - 9, 0xC0FFEF);
    let (mut p, started) = stopping_one(pid, cg);
    p.sweep();
    p.sweep();
    let records = p.handle(&exit(pid, cg, started + 1_000_000));
    assert!(records.is_empty(), "not before the ring is drained");
    // A drain finds its cgroup empty; the next one ends the record.
    let records = drain_out(&mut p, started + 1_000_000);
    assert_one_graceful(&records);
}

#[test]
fn still_there_means_the_same_process_not_only_the_same_pid() {
    let me = std::process::id();
    let start = start_time(me).expect("our own start time");
    assert_eq!(still_there(me, Some(start)), Some(start));
    assert_eq!(
        still_there(me, None),
        Some(start),
        "the first look records it"
    );
    assert_eq!(still_there(me, Some(start + 1)), None, "a reused pid");
    assert_eq!(still_there(u32::MAX - 1, None), None);
}
