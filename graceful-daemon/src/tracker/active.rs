//! A termination under way: what the tracker has seen of a container's stop so far, from the
//! stop signal (or a kill) to its last process gone.
use std::collections::{BTreeMap, BTreeSet};

use super::{connections::Connections, termination::*};
use crate::events::{AtGeneration, ExitStatus, Mono};

#[derive(Debug)]
pub(super) struct Active {
    pub(super) started: Mono,
    pub(super) stop: Option<Stop>,
    pub(super) main: u32,
    pub(super) main_comm: String,
    pub(super) main_disposition: Option<Disposition>,
    /// The main process's disposition for the stop signal as the kernel saw it at generation.
    pub(super) main_at_generation: Option<AtGeneration>,
    /// The main process sent the stop signal to itself after taking it (a handler that
    /// cleans up and re-raises it with the default action).
    pub(super) reraised: bool,
    /// The kernel dequeued the stop signal at the main process with its default action, and
    /// the main process did not die of it: an init discarding it (it had been pending while
    /// blocked, or was re-raised).
    pub(super) default_delivered_to_main: bool,
    /// A process of the container exited before any SIGKILL from outside.
    pub(super) exit_before_kill: bool,
    /// Processes the kernel SIGKILLed when the main process, the pid namespace's init, exited.
    pub(super) torn_down: BTreeSet<u32>,
    /// When the last process the tracker knew of exited. Processes it never heard of may
    /// still be on their way (forked unseen before the stop, killed in the namespace's
    /// teardown): the record waits until the ring buffer was drained past this.
    pub(super) emptied_at: Option<Mono>,
    /// When the pipeline then found the cgroup with no process in it: every process had
    /// passed its exit tracepoint, so a drain after this has all their records.
    pub(super) vacated_at: Option<Mono>,
    pub(super) alive_at_stop: BTreeMap<u32, String>,
    pub(super) received: BTreeMap<u32, Received>,
    pub(super) kill: Option<Kill>,
    /// The SIGKILL from outside reached the main process while it was alive.
    pub(super) kill_hit_main: bool,
    /// Its interim `stuck` record is out.
    pub(super) reported_stuck: bool,
    pub(super) exits: BTreeMap<u32, ExitStatus>,
    /// The OOM killer's victims in the container (pid, name), before and during the stop.
    pub(super) oom_victims: BTreeMap<u32, String>,
    pub(super) unknown_because: Option<String>,
    /// The preStop exec hook's run before the stop signal.
    pub(super) pre_stop: Option<HookRun>,
    /// The container's own stop signal is SIGKILL (STOPSIGNAL SIGKILL, lifecycle.stopSignal): a
    /// lone SIGKILL is then its runtime's stop, not a force delete.
    pub(super) stop_signal_is_kill: bool,
    /// Its TCP connections through the stop.
    pub(super) connections: Connections,
}

impl Active {
    pub(super) fn new(
        started: Mono,
        stop: Option<Stop>,
        main: u32,
        main_comm: String,
        alive_at_stop: BTreeMap<u32, String>,
        oom_victims: &BTreeMap<u32, String>,
    ) -> Active {
        Active {
            started,
            stop,
            main,
            main_comm,
            main_disposition: None,
            main_at_generation: None,
            reraised: false,
            default_delivered_to_main: false,
            exit_before_kill: false,
            torn_down: BTreeSet::new(),
            emptied_at: None,
            vacated_at: None,
            alive_at_stop,
            received: BTreeMap::new(),
            kill: None,
            kill_hit_main: false,
            reported_stuck: false,
            exits: BTreeMap::new(),
            oom_victims: oom_victims.clone(),
            unknown_because: None,
            pre_stop: None,
            stop_signal_is_kill: false,
            connections: Connections::default(),
        }
    }
}
