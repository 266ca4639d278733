//! The engine of `demo` and `check`: throwaway containers started, awaited until ready,
//! stopped the way runc stops them (stop signal to PID 1 from outside, a grace, SIGKILL) and
//! watched by the real probes and tracker until each has its record.
use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    driver::{Driver, Step, StreamEnded},
    pipeline::Session,
    probes::{ProbeError, ProbeOptions, DEFAULT_STOP_SIGNALS},
    record::TerminationRecord,
    signals::Signal,
    throwaway::{Parent, SpawnOptions, Throwaway},
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
        .filter_map(|&pid| {
            let status = crate::procfs::ProcStatus::read(u32::try_from(pid).ok()?).ok()?;
            Some((pid, status.comm, status.state))
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
    /// Scenarios (by index) that must be gone before its stop signal, as a kubelet stops a
    /// pod's native sidecars after its app containers; if the grace ends first, SIGKILL.
    pub after: Vec<usize>,
}

/// `sh -c script`.
pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

impl Scenario {
    pub fn new(
        name: &str,
        what: &'static str,
        argv: Vec<String>,
        programs: &[&'static str],
    ) -> Scenario {
        Scenario {
            name: name.into(),
            what,
            argv,
            stop_signal: Some(Signal::TERM),
            ready: Ready::Programs(programs.to_vec()),
            spawn: SpawnOptions::default(),
            stopped: true,
            after: Vec::new(),
        }
    }

    pub fn stop_with(mut self, signal: Option<Signal>) -> Scenario {
        self.stop_signal = signal;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
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
    #[error(transparent)]
    StreamEnded(#[from] StreamEnded),
}

pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often processes whose exit was not seen are looked for while records are awaited.
const SWEEP: Duration = Duration::from_secs(1);
/// How soon /proc is looked at again while no event comes.
pub(crate) const READY_POLL: Duration = Duration::from_millis(10);

/// Runs the scenarios at once and returns one record per scenario, in the same order.
pub async fn run(
    scenarios: &[Scenario],
    grace: Duration,
) -> Result<Vec<TerminationRecord>, EngineError> {
    let mut signals = DEFAULT_STOP_SIGNALS.to_vec();
    signals.extend(
        scenarios
            .iter()
            .filter_map(|s| s.stop_signal)
            .filter(|s| !DEFAULT_STOP_SIGNALS.contains(s)),
    );
    let session = Session::start(&ProbeOptions {
        stop_signals: signals,
        ..ProbeOptions::default()
    })?;
    let (_probes, mut driver) = Driver::start(session, SWEEP);
    // One parent per run: runs in one process (tests in parallel) never share a cgroup.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Declared before the containers, so dropped after them: however the run ends.
    let run_cgroup = Parent::new(&format!("/graceful-demo/{}-{run}", std::process::id()));
    let parent = run_cgroup.path();

    let mut sandboxes = Vec::new();
    for s in scenarios {
        let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
        let sb = Throwaway::spawn_with(
            &mut driver.pipeline.cgroups,
            parent,
            &s.name,
            &argv,
            &s.spawn,
        )
        .map_err(|error| EngineError::Spawn {
            name: s.name.clone(),
            error,
        })?;
        if let Some(signal) = s.stop_signal {
            driver
                .pipeline
                .tracker
                .set_stop_signal(sb.cgroup_id, signal);
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
            if let Some(status) = sb
                .wait(Duration::ZERO)
                .map_err(|error| EngineError::Spawn {
                    name: s.name.clone(),
                    error,
                })?
            {
                return Err(EngineError::ExitedEarly {
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
            return Err(EngineError::NotReady(slow));
        }
        feed_a_while(&mut driver, &ids, &mut records).await?;
    }

    // Stop them all at once, each like runc does, or once those it comes after are gone;
    // one grace for all, as a pod has.
    let mut stops = Vec::new();
    let gone = Arc::new((Mutex::new(vec![false; scenarios.len()]), Condvar::new()));
    let end_of_grace = std::time::Instant::now() + grace;
    for (i, (s, mut sb)) in scenarios.iter().zip(sandboxes).enumerate() {
        let (signal, stopped, after) = (s.stop_signal, s.stopped, s.after.clone());
        let gone = gone.clone();
        // A named thread: the stop signal's sender comm, as `runc` is for a real runtime.
        let stop = std::thread::Builder::new()
            .name("demo-runtime".into())
            .spawn(move || {
                if stopped {
                    let in_time = wait_gone(&gone, &after, end_of_grace);
                    // A container stopped at once has the whole grace from its own signal, as
                    // `runc kill` then a timer gives it; the thread may start late on a busy host.
                    let left = if after.is_empty() {
                        grace
                    } else {
                        end_of_grace.saturating_duration_since(std::time::Instant::now())
                    };
                    let _ = match (signal, in_time) {
                        (Some(sig), true) => sb.stop(sig, left).map(|_| ()),
                        _ => sb.signal(Signal::KILL),
                    };
                }
                let _ = sb.wait(READY_TIMEOUT);
                let (flags, changed) = &*gone;
                if let Ok(mut flags) = flags.lock() {
                    flags[i] = true;
                }
                changed.notify_all();
                sb
            });
        stops.push(stop.map_err(|error| EngineError::Spawn {
            name: s.name.clone(),
            error,
        })?);
    }

    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    let deadline = Instant::now() + grace + READY_TIMEOUT;
    let awaited = await_records(&mut driver, (&ids, &names), &mut records, deadline).await;
    // Every init is reaped by now (its record needed all processes gone): the joins are quick.
    // Joined whatever came of the wait, so that each container is gone before its parent.
    for stop in stops {
        let _ = stop.join();
    }
    awaited?;
    Ok(records.into_iter().flatten().collect())
}

/// Until every scenario of `after` is gone (true), or `until` (false).
fn wait_gone(
    gone: &(Mutex<Vec<bool>>, Condvar),
    after: &[usize],
    until: std::time::Instant,
) -> bool {
    let (flags, changed) = gone;
    let Ok(mut flags) = flags.lock() else {
        return false;
    };
    loop {
        if after.iter().all(|&i| flags.get(i).copied().unwrap_or(true)) {
            return true;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        flags = match changed.wait_timeout(flags, left) {
            Ok((f, _)) => f,
            Err(_) => return false,
        };
    }
}

fn describe(status: &crate::events::ExitStatus) -> String {
    match (status.code, status.signal) {
        (Some(127), _) => "exit code 127: the command was not found".into(),
        (Some(code), _) => format!("exit code {code}"),
        _ => status.meaning(),
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

/// Keeps the records a step brought of the containers `ids` (by position), the first one each
/// (an interim `stuck` record, when the kernel holds a process past its SIGKILL).
fn keep(step: Step, ids: &[u64], records: &mut [Option<TerminationRecord>]) {
    let (Step::Event(_, done) | Step::Swept(done)) = step;
    for record in done {
        if let Some(i) = ids.iter().position(|id| *id == record.termination.cgroup) {
            records[i].get_or_insert(record);
        }
    }
}

/// While waiting for containers to be ready: what the driver brings in one `READY_POLL`, fed
/// on, since a container may already end meanwhile.
pub(crate) async fn feed_a_while(
    driver: &mut Driver,
    ids: &[u64],
    records: &mut [Option<TerminationRecord>],
) -> Result<(), EngineError> {
    if let Ok(step) = tokio::time::timeout(READY_POLL, driver.next()).await {
        keep(step?, ids, records);
    }
    Ok(())
}

/// Until every container of `(ids, names)` has its record, or the deadline (then the first one
/// missing is named, with the processes it still waits for). The driver's sweep ends the
/// record of a process gone without its exit event (as unknown) rather than holding it until
/// the deadline.
pub(crate) async fn await_records(
    driver: &mut Driver,
    (ids, names): (&[u64], &[&str]),
    records: &mut [Option<TerminationRecord>],
    deadline: Instant,
) -> Result<(), EngineError> {
    while let Some(missing) = records.iter().position(Option::is_none) {
        match tokio::time::timeout_at(deadline, driver.next()).await {
            Ok(step) => keep(step?, ids, records),
            Err(_) => {
                return Err(EngineError::NoRecord {
                    name: names.get(missing).copied().unwrap_or_default().to_string(),
                    waiting_for: driver.pipeline.tracker.members(ids[missing]),
                })
            }
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests;
