//! Properties of the tracker over random event sequences: reordered, duplicated and lost, as
//! a ring buffer shared by CPUs and a flooded kernel can produce them.
use proptest::prelude::*;

use super::*;

const CGROUPS: [CgroupId; 2] = [500, 501];
const PIDS: std::ops::Range<u32> = 10..18;
const SIGNALS: [Signal; 5] = [
    Signal::TERM,
    Signal::KILL,
    Signal::HUP,
    Signal::USR1,
    Signal::INT,
];

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Exec(u32, usize),
    Fork(u32, u32, usize),
    /// (signal, from outside, target, kernel said ignored)
    Signal(usize, bool, u32, bool),
    Exit(u32, Option<i32>),
    Oom(u32),
    Lost,
}

fn step() -> impl Strategy<Value = Step> {
    let pid = PIDS;
    prop_oneof![
        (pid.clone(), 0..CGROUPS.len()).prop_map(|(p, c)| Step::Exec(p, c)),
        (pid.clone(), pid.clone(), 0..CGROUPS.len()).prop_map(|(p, c, g)| Step::Fork(p, c, g)),
        (0..SIGNALS.len(), any::<bool>(), pid.clone(), any::<bool>())
            .prop_map(|(s, o, t, i)| Step::Signal(s, o, t, i)),
        (pid.clone(), prop::option::of(0..3i32)).prop_map(|(p, c)| Step::Exit(p, c)),
        pid.prop_map(Step::Oom),
        Just(Step::Lost),
    ]
}

/// The cgroup a step's process is in, as far as the history said (exec/fork place it).
fn events(steps: &[Step]) -> Vec<Event> {
    let mut place: HashMap<u32, CgroupId> = HashMap::new();
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let ts = 1000 * S + i as u64 * S / 10;
        let cg = |pid: u32, place: &HashMap<u32, CgroupId>| *place.get(&pid).unwrap_or(&CGROUPS[0]);
        out.push(match s {
            Step::Exec(pid, c) => {
                place.insert(*pid, CGROUPS[*c]);
                Event::Exec(ExecEvent {
                    ts,
                    pid: *pid,
                    cgroup: CGROUPS[*c],
                    comm: "app".into(),
                    entered: false,
                    namespace_init: false,
                })
            }
            Step::Fork(parent, child, c) => {
                place.insert(*child, CGROUPS[*c]);
                Event::Fork(ForkEvent {
                    ts,
                    parent_pid: *parent,
                    child_pid: *child,
                    cgroup: CGROUPS[*c],
                    comm: "sh".into(),
                })
            }
            Step::Signal(sig, outside, target, ignored) => {
                let target_cg = cg(*target, &place);
                let from = if *outside {
                    (RUNC, "runc", HOST)
                } else {
                    (PIDS.start, "sh", target_cg)
                };
                let result = if *ignored {
                    SignalResult::Ignored
                } else {
                    SignalResult::Delivered
                };
                Event::Signal(signal_event(
                    ts,
                    SIGNALS[*sig],
                    from,
                    (*target, "app", target_cg),
                    result,
                ))
            }
            Step::Exit(pid, code) => Event::Exit(ExitEvent {
                ts,
                pid: *pid,
                tid: *pid,
                status: ExitStatus {
                    code: *code,
                    signal: code.is_none().then_some(9),
                },
                cgroup: cg(*pid, &place),
                comm: "app".into(),
            }),
            Step::Oom(pid) => Event::Oom(OomEvent {
                ts,
                pid: *pid,
                cgroup: cg(*pid, &place),
            }),
            Step::Lost => Event::Lost(LostEvent {
                ts,
                count: 1,
                reason: LossReason::Kernel,
            }),
        });
    }
    out
}

/// Reorders neighbours (events of different CPUs), duplicates some and drops some.
fn perturb(mut events: Vec<Event>, swaps: &[usize], dups: &[usize], drops: &[usize]) -> Vec<Event> {
    let n = events.len();
    if n < 2 {
        return events;
    }
    for &i in swaps {
        events.swap(i % (n - 1), i % (n - 1) + 1);
    }
    for &i in dups {
        let e = events[i % events.len()].clone();
        events.insert(i % events.len(), e);
    }
    for &i in drops {
        if !events.is_empty() {
            events.remove(i % events.len());
        }
    }
    events
}

fn opens(e: &Event) -> Option<CgroupId> {
    match e {
        Event::Signal(s)
            if s.sender_cgroup != s.target_cgroup
                && [Signal::TERM, Signal::KILL, Signal::INT].contains(&s.signal) =>
        {
            Some(s.target_cgroup)
        }
        // From inside to the main process: a stop if it ends the container.
        Event::Signal(s) if [Signal::TERM, Signal::INT, Signal::QUIT].contains(&s.signal) => {
            Some(s.target_cgroup)
        }
        Event::Oom(o) => Some(o.cgroup),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_histories(
        steps in prop::collection::vec(step(), 0..60),
        swaps in prop::collection::vec(any::<usize>(), 0..8),
        dups in prop::collection::vec(any::<usize>(), 0..3),
        drops in prop::collection::vec(any::<usize>(), 0..3),
    ) {
        let fed = perturb(events(&steps), &swaps, &dups, &drops);
        let mut t = Tracker::new(TrackerConfig::default(), 0);
        let mut done: Vec<Termination> = Vec::new();
        // Per cgroup: how many events could open a termination, and whether a loss came while
        // one was under way.
        let mut openings: HashMap<CgroupId, usize> = HashMap::new();
        let mut lost_during: HashMap<CgroupId, bool> = HashMap::new();
        for e in &fed {
            if let Some(cg) = opens(e) {
                *openings.entry(cg).or_default() += 1;
            }
            if matches!(e, Event::Lost(_)) {
                for cg in CGROUPS {
                    if t.stopping(cg) {
                        lost_during.insert(cg, true);
                    }
                }
            }
            let out = t.on_event(e);
            for r in &out {
                // A loss while it was under way: never any verdict but unknown.
                if lost_during.remove(&r.cgroup).unwrap_or(false) {
                    prop_assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explanation);
                }
            }
            done.extend(out);
        }
        done.extend(drain(&mut t, 1000 * S));
        // At most one record per stop (a stop signal or SIGKILL from outside, a stop signal
        // from inside, or the OOM killer; which cgroup an event hits is the tracker's call, as
        // pids move).
        let openings: usize = openings.values().sum();
        prop_assert!(done.len() <= openings, "{} records from {openings} openings", done.len());
        // Every process gone: nothing left behind.
        let end = 2000 * S;
        for pid in PIDS {
            for cg in CGROUPS {
                t.on_event(&Event::Exit(ExitEvent {
                    ts: end,
                    pid,
                    tid: pid,
                    status: ExitStatus { code: Some(0), signal: None },
                    cgroup: cg,
                    comm: String::new(),
                }));
            }
        }
        drain(&mut t, end + S);
        // And the housekeeping's look at running containers (a running container's last known
        // process ending is not its end: its group waits for the look).
        let gone = t.look_at_running(|_, _| None);
        t.forget_gone(&gone);
        prop_assert_eq!(t.size(), (0, 0, 0), "left behind: {:#?}", t);
        prop_assert!(t.dispositions.is_empty() && t.stop_signals.is_empty() && t.graces.is_empty());
    }
}
