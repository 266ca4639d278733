//! One driver for every traced run (the daemon, `trace`, `demo` and `check`): the kernel's
//! events fed to the pipeline, the sweep for lost exits and the wall clock's refresh on one
//! cadence, and lost events warned of in one place.
use std::time::Duration;

use tokio::{sync::mpsc, time::Interval};

use crate::{
    clock::WallClock,
    events::Event,
    pipeline::{Pipeline, Session},
    probes::Probes,
    record::TerminationRecord,
};

/// What one step of the driver did.
pub enum Step {
    /// An event from the kernel, and the records it completed.
    Event(Event, Vec<TerminationRecord>),
    /// The periodic sweep ran and the wall clock was read again; the interim records of stops
    /// whose processes outlived their SIGKILL.
    Swept(Vec<TerminationRecord>),
}

#[derive(Debug, thiserror::Error)]
#[error("the kernel event stream ended")]
pub struct StreamEnded;

pub struct Driver {
    events: mpsc::Receiver<Event>,
    pub pipeline: Pipeline,
    /// Kernel times to wall-clock times; read again at every sweep.
    pub clock: WallClock,
    sweep: Interval,
}

impl Driver {
    /// A session's probes, and the driver of its events sweeping every `sweep_every`.
    pub fn start(session: Session, sweep_every: Duration) -> (Probes, Driver) {
        let driver = Driver::new(session.events, session.pipeline, sweep_every);
        (session.probes, driver)
    }

    /// `sweep_every`: how often processes whose exit was not seen are looked for.
    pub fn new(events: mpsc::Receiver<Event>, pipeline: Pipeline, sweep_every: Duration) -> Driver {
        let mut sweep = tokio::time::interval(sweep_every);
        // A loop held up (a slow stdout) sweeps once when it comes back, not once per miss.
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Driver {
            events,
            pipeline,
            clock: WallClock::default(),
            sweep,
        }
    }

    /// The next event or sweep. Cancel-safe: nothing is lost when another branch of a
    /// `select!` wins (an event is handled in the same poll that received it).
    pub async fn next(&mut self) -> Result<Step, StreamEnded> {
        tokio::select! {
            biased;
            // First: a stream that never runs dry (the reader's drained looks every 2 ms while
            // records wait) must not starve the sweep for lost exits.
            _ = self.sweep.tick() => {
                // An NTP step or a resumed VM moves the wall clock: follow it.
                self.clock = WallClock::default();
                Ok(Step::Swept(self.pipeline.sweep()))
            }
            event = self.events.recv() => {
                let event = event.ok_or(StreamEnded)?;
                if let Event::Lost(l) = &event {
                    tracing::warn!(lost = l.count, reason = ?l.reason, "events lost: terminations under way will be reported as unknown");
                }
                let records = self.pipeline.handle(&event);
                Ok(Step::Event(event, records))
            }
        }
    }
}
