//! `demo`: throwaway containers with the usual PID 1 mistakes and a correct one, stopped the
//! way runc stops them (stop signal to PID 1 from outside, a short grace, SIGKILL), watched by
//! the real probes and tracker. The tests run the same scenarios.
use std::time::Duration;

use tokio::{sync::mpsc, time::Instant};

use crate::{
    events::Event,
    pipeline::{Pipeline, Session},
    probes::{ProbeError, ProbeOptions, DEFAULT_STOP_SIGNALS},
    record::TerminationRecord,
    signals::Signal,
    throwaway::{Parent, SpawnOptions, Throwaway},
    tracker::Verdict,
};

/// When a throwaway container has started and may be stopped.
#[derive(Debug, Clone)]
pub enum Ready {
    /// It runs these programs, one name per process (a forked child is still a copy of its
    /// parent until it execs: a count of processes is not enough).
    Programs(Vec<&'static str>),
    /// Its processes, their names and states have not changed for a while and none is
    /// running (all wait for something), or `READY_TIMEOUT` passed.
    Settled,
    /// This long after it started.
    After(Duration),
}

/// How long a container's processes must stay the same to count as settled.
pub(crate) const SETTLE: Duration = Duration::from_millis(500);

/// What /proc shows of a container's processes: (pid, name, state).
fn snapshot(pids: &[i32]) -> Vec<(i32, String, char)> {
    let mut v: Vec<(i32, String, char)> = pids
        .iter()
        .copied()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let state = field("State:")?.chars().next()?;
            Some((pid, field("Name:")?, state))
        })
        .collect();
    v.sort();
    v
}

/// Tracks one container towards readiness.
pub(crate) struct Readiness {
    started: Instant,
    last: Vec<(i32, String, char)>,
    since: Instant,
}

impl Readiness {
    pub(crate) fn new() -> Readiness {
        let now = Instant::now();
        Readiness {
            started: now,
            last: Vec::new(),
            since: now,
        }
    }

    /// `pids`: the container's processes now (its cgroup.procs).
    pub(crate) fn ready(&mut self, how: &Ready, pids: &[i32]) -> bool {
        match how {
            Ready::Programs(programs) => {
                let running: Vec<String> = snapshot(pids).into_iter().map(|(_, n, _)| n).collect();
                runs_all(&running, programs)
            }
            Ready::After(d) => self.started.elapsed() >= *d,
            Ready::Settled => {
                let now = snapshot(pids);
                if now != self.last {
                    self.last = now;
                    self.since = Instant::now();
                    return false;
                }
                let quiet = !self.last.is_empty()
                    && self
                        .last
                        .iter()
                        .all(|(_, _, state)| matches!(state, 'S' | 'D' | 'I'));
                (quiet && self.since.elapsed() >= SETTLE) || self.started.elapsed() >= READY_TIMEOUT
            }
        }
    }
}

/// How a throwaway container behaves and how it is stopped.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub what: &'static str,
    pub argv: Vec<String>,
    /// None: SIGKILL straight away, as a force delete does.
    pub stop_signal: Option<Signal>,
    /// When the container is ready to be stopped.
    pub ready: Ready,
    /// Memory limit and environment.
    pub spawn: SpawnOptions,
    /// Stopped by the test, or (false) ends by itself (the OOM killer).
    pub stopped: bool,
    pub expect: Verdict,
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

impl Scenario {
    pub fn new(
        name: &str,
        what: &'static str,
        argv: Vec<String>,
        programs: &[&'static str],
        expect: Verdict,
    ) -> Scenario {
        Scenario {
            name: name.into(),
            what,
            argv,
            stop_signal: Some(Signal::TERM),
            ready: Ready::Programs(programs.to_vec()),
            spawn: SpawnOptions::default(),
            stopped: true,
            expect,
        }
    }

    pub fn stop_with(mut self, signal: Option<Signal>) -> Scenario {
        self.stop_signal = signal;
        self
    }

    pub fn shell_pid1() -> Scenario {
        Scenario::new(
            "shell-pid1",
            "CMD in shell form: sh is PID 1 and runs the app as a child",
            sh("sleep 1000; true"),
            &["sh", "sleep"],
            Verdict::SwallowedByShellPid1,
        )
    }
    pub fn no_handler() -> Scenario {
        Scenario::new(
            "no-handler",
            "the app is PID 1 and has no SIGTERM handler",
            vec!["/bin/sleep".into(), "1000".into()],
            &["sleep"],
            Verdict::Pid1IgnoresStopSignal,
        )
    }
    pub fn not_forwarded() -> Scenario {
        Scenario::new(
            "not-forwarded",
            "PID 1 traps SIGTERM but never passes it to its child",
            sh("trap 'echo stopping' TERM; sleep 1000 & while :; do wait; done"),
            &["sh", "sleep"],
            Verdict::NotForwarded,
        )
    }
    pub fn slow_shutdown() -> Scenario {
        Scenario::new(
            "slow-shutdown",
            "PID 1 forwards SIGTERM, but the worker needs longer than the grace period",
            sh("trap 'kill -TERM -1; wait' TERM; sh -c 'trap \"sleep 60\" TERM; sleep 1000 & wait' & wait"),
            &["sh", "sh", "sleep"],
            Verdict::SlowShutdown,
        )
    }
    pub fn child_ignores() -> Scenario {
        Scenario::new(
            "child-ignores",
            "PID 1 forwards SIGTERM, but the worker was started with SIGTERM ignored",
            sh("trap 'kill -TERM -1; wait; exit 0' TERM; sh -c \"trap '' TERM; exec sleep 1000\" & wait"),
            &["sh", "sleep"],
            Verdict::SlowShutdown,
        )
    }
    pub fn shell_pid1_ignores() -> Scenario {
        Scenario::new(
            "shell-pid1-ignores",
            "the entrypoint script sets SIGTERM to SIG_IGN (`trap '' TERM`) and runs the app",
            sh("trap '' TERM; sleep 1000; true"),
            &["sh", "sleep"],
            Verdict::SwallowedByShellPid1,
        )
    }
    pub fn forwards() -> Scenario {
        Scenario::new(
            "forwards",
            "correct: PID 1 forwards SIGTERM and waits for its child",
            sh("trap 'kill -TERM -1; wait; exit 0' TERM; sleep 1000 & wait"),
            &["sh", "sleep"],
            Verdict::Graceful,
        )
    }
    pub fn exits_leaving_children() -> Scenario {
        Scenario::new(
            "exits-on-term",
            "PID 1 exits on SIGTERM while its worker still runs; the kernel kills the worker",
            sh("trap 'exit 0' TERM; sleep 1000 & wait"),
            &["sh", "sleep"],
            Verdict::ChildrenKilledAtExit,
        )
    }
    pub fn force_delete() -> Scenario {
        Scenario::new(
            "force-delete",
            "a force delete: SIGKILL with no stop signal",
            sh("trap 'exit 0' TERM; sleep 1000 & wait"),
            &["sh", "sleep"],
            Verdict::KilledWithoutStopSignal,
        )
        .stop_with(None)
    }
    pub fn stop_signal_quit() -> Scenario {
        Scenario::new(
            "stopsignal-quit",
            "STOPSIGNAL SIGQUIT, shell PID 1 without a trap",
            sh("sleep 1000; true"),
            &["sh", "sleep"],
            Verdict::SwallowedByShellPid1,
        )
        .stop_with(Some(Signal::QUIT))
    }
    pub fn stop_signal_int_handled() -> Scenario {
        Scenario::new(
            "stopsignal-int",
            "STOPSIGNAL SIGINT, handled by PID 1",
            // The worker is stopped with SIGTERM: a background job of a shell ignores SIGINT.
            sh("trap 'kill -TERM $w; wait $w; exit 0' INT; sleep 1000 & w=$!; wait"),
            &["sh", "sleep"],
            Verdict::Graceful,
        )
        .stop_with(Some(Signal::INT))
    }
    pub fn oom() -> Scenario {
        let mut s = Scenario::new(
            "oom",
            "PID 1 allocates past its 32 MiB memory limit",
            sh("x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done"),
            &["sh"],
            Verdict::OomKilled,
        );
        s.spawn.memory_limit = Some(32 << 20);
        s.stopped = false;
        s
    }

    /// What `graceful-daemon demo` shows.
    pub fn demo_set() -> Vec<Scenario> {
        vec![
            Scenario::shell_pid1(),
            Scenario::no_handler(),
            Scenario::not_forwarded(),
            Scenario::slow_shutdown(),
            Scenario::child_ignores(),
            Scenario::forwards(),
            Scenario::exits_leaving_children(),
            Scenario::force_delete(),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("starting container {name}: {error}")]
    Spawn { name: String, error: std::io::Error },
    #[error("container {0} did not start its programs in time")]
    NotReady(String),
    #[error("{name} ended by itself before it was stopped ({})", describe(.status))]
    ExitedEarly {
        name: String,
        status: crate::events::ExitStatus,
    },
    #[error("no termination record for {name} in time (still waiting for pids {waiting_for:?})")]
    NoRecord { name: String, waiting_for: Vec<u32> },
    #[error("the event stream ended")]
    StreamEnded,
}

pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often processes whose exit was not seen are looked for while records are awaited.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);
/// How soon /proc is looked at again while no event comes.
pub(crate) const READY_POLL: Duration = Duration::from_millis(10);

/// Runs the scenarios at once and returns one record per scenario, in the same order.
pub async fn run(
    scenarios: &[Scenario],
    grace: Duration,
) -> Result<Vec<TerminationRecord>, DemoError> {
    let mut signals = DEFAULT_STOP_SIGNALS.to_vec();
    signals.extend(
        scenarios
            .iter()
            .filter_map(|s| s.stop_signal)
            .filter(|s| !DEFAULT_STOP_SIGNALS.contains(s)),
    );
    let Session {
        probes: _probes,
        mut events,
        mut pipeline,
    } = Session::start(&ProbeOptions {
        stop_signals: signals,
        ..ProbeOptions::default()
    })?;
    // One parent per run: runs in one process (tests in parallel) never share a cgroup.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Declared before the containers, so dropped after them: however the run ends.
    let run_cgroup = Parent::new(&format!("/graceful-demo/{}-{run}", std::process::id()));
    let parent = run_cgroup.path();

    let mut sandboxes = Vec::new();
    for s in scenarios {
        let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
        let sb = Throwaway::spawn_with(&mut pipeline.cgroups, parent, &s.name, &argv, &s.spawn)
            .map_err(|error| DemoError::Spawn {
                name: s.name.clone(),
                error,
            })?;
        if let Some(signal) = s.stop_signal {
            pipeline.tracker.set_stop_signal(sb.cgroup_id, signal);
        }
        sandboxes.push(sb);
    }
    let ids: Vec<u64> = sandboxes.iter().map(|s| s.cgroup_id).collect();
    let mut records: Vec<Option<TerminationRecord>> = vec![None; scenarios.len()];

    // Wait until every container is ready. A busybox applet names itself without an exec, so
    // no event says so: look at /proc between events.
    let deadline = Instant::now() + READY_TIMEOUT + SETTLE;
    let mut readiness: Vec<Readiness> = scenarios.iter().map(|_| Readiness::new()).collect();
    loop {
        let mut slow = None;
        for ((s, sb), r) in scenarios
            .iter()
            .zip(sandboxes.iter_mut())
            .zip(&mut readiness)
        {
            if !s.stopped {
                continue;
            }
            if let Some(status) = sb.wait(Duration::ZERO).map_err(|error| DemoError::Spawn {
                name: s.name.clone(),
                error,
            })? {
                return Err(DemoError::ExitedEarly {
                    name: s.name.clone(),
                    status,
                });
            }
            if slow.is_none() && !r.ready(&s.ready, &sb.pids()) {
                slow = Some(s.name.clone());
            }
        }
        let Some(slow) = slow else { break };
        if Instant::now() >= deadline {
            return Err(DemoError::NotReady(slow));
        }
        feed_a_while(&mut events, &mut pipeline, &ids, &mut records).await?;
    }

    // Stop them all at once, each like runc does.
    let mut stops = Vec::new();
    for (s, mut sb) in scenarios.iter().zip(sandboxes) {
        let (signal, stopped) = (s.stop_signal, s.stopped);
        // A named thread: the stop signal's sender comm, as `runc` is for a real runtime.
        let stop = std::thread::Builder::new()
            .name("demo-runtime".into())
            .spawn(move || {
                if stopped {
                    let _ = match signal {
                        Some(sig) => sb.stop(sig, grace).map(|_| ()),
                        None => sb.signal(Signal::KILL),
                    };
                }
                let _ = sb.wait(READY_TIMEOUT);
                sb
            });
        stops.push(stop.map_err(|error| DemoError::Spawn {
            name: s.name.clone(),
            error,
        })?);
    }

    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    let deadline = Instant::now() + grace + READY_TIMEOUT;
    let awaited = await_records(
        &mut events,
        &mut pipeline,
        (&ids, &names),
        &mut records,
        deadline,
    )
    .await;
    // Every init is reaped by now (its record needed all processes gone): the joins are quick.
    // Joined whatever came of the wait, so that each container is gone before its parent.
    for stop in stops {
        let _ = stop.join();
    }
    awaited?;
    Ok(records.into_iter().flatten().collect())
}

fn describe(status: &crate::events::ExitStatus) -> String {
    match (status.code, status.signal) {
        (Some(127), _) => "exit code 127: the command was not found".into(),
        (Some(code), _) => format!("exit code {code}"),
        (_, Some(sig)) => format!("killed by {}", Signal(sig)),
        _ => "unknown status".into(),
    }
}

/// Every wanted program runs, one process each (`running` may hold more).
fn runs_all(running: &[String], wanted: &[&str]) -> bool {
    let mut left: Vec<&str> = running.iter().map(String::as_str).collect();
    wanted
        .iter()
        .all(|w| match left.iter().position(|r| r == w) {
            Some(i) => {
                left.swap_remove(i);
                true
            }
            None => false,
        })
}

/// Keeps the records of the containers `ids` (by position), the first one each.
fn keep(done: Vec<TerminationRecord>, ids: &[u64], records: &mut [Option<TerminationRecord>]) {
    for record in done {
        if let Some(i) = ids.iter().position(|id| *id == record.termination.cgroup) {
            records[i].get_or_insert(record);
        }
    }
}

/// While waiting for containers to be ready: the events of one `READY_POLL`, fed on, since a
/// container may already end meanwhile.
pub(crate) async fn feed_a_while(
    events: &mut mpsc::Receiver<Event>,
    pipeline: &mut Pipeline,
    ids: &[u64],
    records: &mut [Option<TerminationRecord>],
) -> Result<(), DemoError> {
    if let Ok(event) = tokio::time::timeout(READY_POLL, events.recv()).await {
        let event = event.ok_or(DemoError::StreamEnded)?;
        keep(pipeline.handle(&event), ids, records);
    }
    Ok(())
}

/// Until every container of `(ids, names)` has its record, or the deadline (then the first one
/// missing is named, with the processes it still waits for).
pub(crate) async fn await_records(
    events: &mut mpsc::Receiver<Event>,
    pipeline: &mut Pipeline,
    (ids, names): (&[u64], &[&str]),
    records: &mut [Option<TerminationRecord>],
    deadline: Instant,
) -> Result<(), DemoError> {
    let mut sweep = tokio::time::interval(SWEEP);
    while let Some(missing) = records.iter().position(Option::is_none) {
        tokio::select! {
            event = tokio::time::timeout_at(deadline, events.recv()) => {
                let event = match event {
                    Ok(Some(e)) => e,
                    Ok(None) => return Err(DemoError::StreamEnded),
                    Err(_) => return Err(DemoError::NoRecord {
                        name: names.get(missing).copied().unwrap_or_default().to_string(),
                        waiting_for: pipeline.tracker.members(ids[missing]),
                    }),
                };
                keep(pipeline.handle(&event), ids, records);
            }
            // A process gone without its exit event ends its record (as unknown) rather than
            // holding it until the deadline, as the daemon's sweep does.
            _ = sweep.tick() => pipeline.sweep(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
