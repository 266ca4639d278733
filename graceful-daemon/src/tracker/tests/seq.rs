//! The builder the tracker's tests write event sequences with, and the containers they use.
use super::super::*;
use crate::events::{
    AtGeneration, ExecEvent, ExitEvent, ForkEvent, LossReason, LostEvent, SignalResult,
};

pub(super) const HOST: CgroupId = 1;
pub(super) const CG: CgroupId = 500;
pub(super) const S: u64 = 1_000_000_000;
pub(super) const RUNC: u32 = 900;

/// A signal from (pid, comm, cgroup) to (pid, comm, cgroup).
pub(super) fn signal_event(
    ts: Mono,
    signal: Signal,
    from: (u32, &str, CgroupId),
    to: (u32, &str, CgroupId),
    result: SignalResult,
) -> SignalEvent {
    SignalEvent {
        ts,
        signal,
        code: 0,
        result,
        group: true,
        sender_pid: from.0,
        sender_tid: from.0,
        sender_comm: from.1.into(),
        sender_cgroup: from.2,
        target_pid: to.0,
        target_comm: to.1.into(),
        target_cgroup: to.2,
        at_generation: Default::default(),
        established: None,
    }
}

/// What the pipeline does when the reader finds the ring empty at `at`: the emptied
/// containers' cgroups are found empty (vacated), and a later drain ends their terminations.
pub(super) fn drain(t: &mut Tracker, at: Mono) -> Vec<Termination> {
    for cgroup in t.emptied() {
        t.vacated(cgroup, at);
    }
    t.on_event(&Event::Drained(at + DRAIN_SLACK_NS))
}

/// A process of the container `CG` as /proc shows it.
pub(super) fn found(pid: u32, parent: Option<u32>, comm: &str, namespace_init: bool) -> Found<'_> {
    Found {
        pid,
        parent,
        cgroup: CG,
        comm,
        namespace_init,
    }
}

/// `pid` of the container `CG` ends, killed by SIGKILL.
pub(super) fn killed_exit(ts: Mono, pid: u32) -> Event {
    Event::Exit(ExitEvent {
        ts,
        pid,
        tid: pid,
        status: ExitStatus {
            code: None,
            signal: Some(9),
        },
        cgroup: CG,
        comm: String::new(),
    })
}

pub(super) struct Seq {
    pub(super) t: Tracker,
    pub(super) now: Mono,
    pub(super) done: Vec<Termination>,
}

impl Seq {
    pub(super) fn new() -> Seq {
        Seq {
            t: Tracker::new(TrackerConfig::default(), 0),
            now: 1000 * S,
            done: Vec::new(),
        }
    }
    pub(super) fn at(&mut self, secs: f64) -> &mut Self {
        self.now = 1000 * S + (secs * 1e9) as u64;
        self
    }
    pub(super) fn feed(&mut self, e: Event) -> &mut Self {
        let out = self.t.on_event(&e);
        self.done.extend(out);
        self
    }
    pub(super) fn exec(&mut self, pid: u32, comm: &str) -> &mut Self {
        self.exec_as(pid, comm, false)
    }
    /// An exec the kernel saw enter the container from outside (a runtime's exec).
    pub(super) fn exec_as(&mut self, pid: u32, comm: &str, entered: bool) -> &mut Self {
        self.exec_full(pid, comm, entered, false)
    }
    /// An exec, with whether it entered from outside and is its pid namespace's init.
    pub(super) fn exec_full(
        &mut self,
        pid: u32,
        comm: &str,
        entered: bool,
        namespace_init: bool,
    ) -> &mut Self {
        let now = self.now;
        self.feed(Event::Exec(ExecEvent {
            ts: now,
            pid,
            cgroup: CG,
            comm: comm.into(),
            entered,
            namespace_init,
        }))
    }
    pub(super) fn fork(&mut self, parent: u32, child: u32, comm: &str) -> &mut Self {
        let now = self.now;
        self.feed(Event::Fork(ForkEvent {
            ts: now,
            parent_pid: parent,
            child_pid: child,
            cgroup: CG,
            comm: comm.into(),
        }))
    }
    pub(super) fn signal(
        &mut self,
        sig: Signal,
        from: u32,
        from_cg: CgroupId,
        to: u32,
        result: SignalResult,
    ) -> &mut Self {
        let now = self.now;
        let sender = if from_cg == HOST { "runc" } else { "sh" };
        self.feed(Event::Signal(signal_event(
            now,
            sig,
            (from, sender, from_cg),
            (to, "", CG),
            result,
        )))
    }
    /// A signal with the target's disposition as the kernel read it at generation.
    pub(super) fn signal_seen(
        &mut self,
        sig: Signal,
        (from, from_cg): (u32, CgroupId),
        to: u32,
        result: SignalResult,
        at_generation: AtGeneration,
    ) -> &mut Self {
        let now = self.now;
        let sender = if from_cg == HOST { "runc" } else { "app" };
        let mut e = signal_event(now, sig, (from, sender, from_cg), (to, "", CG), result);
        e.at_generation = at_generation;
        self.feed(Event::Signal(e))
    }
    /// The runtime's SIGTERM to the main process (10), as the kernel saw its target.
    pub(super) fn term_seen(
        &mut self,
        result: SignalResult,
        at_generation: AtGeneration,
    ) -> &mut Self {
        self.signal_seen(Signal::TERM, (RUNC, HOST), 10, result, at_generation)
    }
    /// `pid` took `sig`, with this handler, as the kernel delivered it.
    pub(super) fn deliver(
        &mut self,
        pid: u32,
        sig: Signal,
        handler: crate::events::Handler,
    ) -> &mut Self {
        let now = self.now;
        self.feed(Event::Deliver(crate::events::DeliverEvent {
            ts: now,
            pid,
            tid: pid,
            signal: sig,
            handler: Some(handler),
            cgroup: CG,
        }))
    }
    /// `secs` after the start, the runtime's SIGKILL ends the main process (10).
    pub(super) fn killed_at(&mut self, secs: f64) -> &mut Self {
        self.at(secs)
            .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
            .exit(10, None, Some(9))
    }
    pub(super) fn exit(&mut self, pid: u32, code: Option<i32>, signal: Option<i32>) -> &mut Self {
        let now = self.now;
        self.feed(Event::Exit(ExitEvent {
            ts: now,
            pid,
            tid: pid,
            status: ExitStatus { code, signal },
            cgroup: CG,
            comm: String::new(),
        }))
    }
    pub(super) fn lost(&mut self, count: u64) -> &mut Self {
        let now = self.now;
        self.feed(Event::Lost(LostEvent {
            ts: now,
            count,
            reason: LossReason::Kernel,
        }))
    }
    /// The pipeline found the emptied containers' cgroups empty, then the reader found the
    /// ring empty: a termination whose processes are all gone ends.
    pub(super) fn drained(&mut self) -> &mut Self {
        let at = self.now + S;
        let done = drain(&mut self.t, at);
        self.done.extend(done);
        self
    }
    pub(super) fn one(&mut self) -> Termination {
        if self.done.is_empty() {
            self.drained();
        }
        assert_eq!(self.done.len(), 1, "{:#?}", self.done);
        self.done.remove(0)
    }
}

/// sh (10) running `sleep` (11), as `sh -c 'sleep 1000; true'` does.
pub(super) fn shell_with_child() -> Seq {
    let mut s = Seq::new();
    s.exec(10, "sh").fork(10, 11, "sh").exec(11, "sleep");
    s
}

/// What /proc showed of sh (10) when SIGTERM reached it: no handler, so dropped as an init;
/// `ignores`: set to SIG_IGN.
pub(super) fn shell_init_drops_term(s: &mut Seq, ignores: bool) {
    s.t.observe(
        10,
        Disposition {
            signal: Signal::TERM,
            handles: false,
            drops: true,
            ignores,
            waits: false,
            namespace_init: true,
            program: Some(Program {
                exe: "dash".into(),
                args: vec!["/bin/sh".into(), "-c".into(), "sleep 1000; true".into()],
            }),
        },
    );
}

/// The runtime's SIGKILL after the grace, the init's death and the kernel's teardown.
pub(super) fn kill_after_grace(s: &mut Seq, grace: f64) {
    s.at(grace)
        .signal(Signal::KILL, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(10, None, Some(9))
        .signal(Signal::KILL, 10, CG, 11, SignalResult::Delivered)
        .exit(11, None, Some(9));
}
