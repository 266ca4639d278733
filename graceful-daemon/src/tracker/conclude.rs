//! A termination's record from what it left: the facts, the verdict the rules give, the words
//! that explain it.
use super::{
    explanation::{self, explain, unkillable},
    facts::{takes_stop_signal, Facts},
    termination::*,
    verdict::decide,
    Active, CgroupId, Mono,
};

/// Processes a record lists at most; the rest are counted (a fork bomb must not make a record
/// of megabytes).
pub const LISTED_MAX: usize = 100;

/// The first [`LISTED_MAX`] and how many more there were.
fn capped<T>(mut list: Vec<T>) -> (Vec<T>, usize) {
    let more = list.len().saturating_sub(LISTED_MAX);
    list.truncate(LISTED_MAX);
    (list, more)
}

/// The record of a termination: outcome, verdict and explanation, by the rules.
pub(super) fn conclude(cgroup: CgroupId, a: Active, ended: Mono) -> Termination {
    let f = Facts::of(&a, ended);
    let verdict = decide(&f);
    let connections = a.connections();
    let explanation = explain(verdict, &f) + &explanation::connections(connections.as_ref());
    let handles_stop_signal = takes_stop_signal(&a);
    let ended_by = f.oom_victim.as_ref().map(|v| v.pid);
    let oom = f
        .oom_victims
        .iter()
        .map(|(p, main)| OomVictim {
            pid: p.pid,
            comm: p.comm.clone(),
            main: *main,
            ended_container: verdict == Verdict::OomKilled && ended_by == Some(p.pid),
        })
        .collect();
    let (received, received_more) = capped(f.received);
    let (never_received, never_received_more) = capped(f.never_received);
    Termination {
        cgroup,
        stop: a.stop,
        init: Init {
            pid: a.main,
            comm: f.main_comm,
            shell: f.shell.is_some(),
            handles_stop_signal,
        },
        received,
        received_more,
        never_received,
        never_received_more,
        kill: a.kill,
        outcome: f.outcome,
        exit: a.exits.get(&a.main).copied(),
        started: a.started,
        ended,
        verdict,
        explanation,
        connections,
        pre_stop: a.pre_stop,
        stuck: Vec::new(),
        oom,
    }
}

/// The interim record of a termination whose processes `stuck` outlived their SIGKILL:
/// everything seen so far, outcome `stuck`, verdict `unkillable`.
pub(super) fn interim_stuck(
    cgroup: CgroupId,
    a: &Active,
    stuck: Vec<NamedProcess>,
    now: Mono,
) -> Termination {
    let f = Facts::of(a, now);
    let since_kill = a
        .kill
        .as_ref()
        .map_or(0.0, |k| now.saturating_sub(k.at) as f64 / 1e9);
    let (received, received_more) = capped(f.received);
    let (never_received, never_received_more) = capped(f.never_received);
    let (stuck, _) = capped(stuck);
    Termination {
        cgroup,
        stop: a.stop.clone(),
        init: Init {
            pid: a.main,
            comm: f.main_comm,
            shell: f.shell.is_some(),
            handles_stop_signal: takes_stop_signal(a),
        },
        received,
        received_more,
        never_received,
        never_received_more,
        kill: a.kill.clone(),
        outcome: Outcome::Stuck,
        exit: a.exits.get(&a.main).copied(),
        started: a.started,
        ended: now,
        verdict: Verdict::Unkillable,
        explanation: unkillable(&stuck, since_kill),
        pre_stop: a.pre_stop.clone(),
        stuck: stuck
            .into_iter()
            .map(|p| StuckProcess {
                pid: p.pid,
                comm: p.comm,
                state: None,
                wchan: None,
            })
            .collect(),
        oom: Vec::new(),
        connections: a.connections(),
    }
}
