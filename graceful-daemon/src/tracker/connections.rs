//! A stop's TCP connections, as the kernel counted them: established when the stop signal came
//! and when the SIGKILL came (the kernel's per-container count, carried by those signals), and
//! what the state changes between the two say (closed in order by the app, reset, the last
//! listener closed), and the connection attempts refused once it had closed its listeners.
use serde::Serialize;

use super::{Active, Group, Mono, Tracker};
use crate::events::{ConnEvent, RefusedEvent, SignalEvent};

/// TCP states as the kernel numbers them.
const ESTABLISHED: i32 = 1;
const FIN_WAIT1: i32 = 4;
const CLOSE: i32 = 7;
const LISTEN: i32 = 10;

/// What a stop did to its container's connections; `None` counts were not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Connections {
    /// Established when the stop signal came.
    pub open_at_stop: Option<u64>,
    /// Closed in order (FIN) by the container after the stop signal, before any SIGKILL.
    pub closed_by_app: u64,
    /// Still established when the SIGKILL came: cut.
    pub open_at_kill: Option<u64>,
    /// Aborted (reset) after the stop signal, before any SIGKILL.
    pub reset: u64,
    /// Connection attempts refused on a port whose listener the container closed after the
    /// stop signal, until its last process was gone (the kill does not end them: clients keep
    /// coming).
    pub refused: Option<u64>,
    /// When the container's last listening socket closed.
    #[serde(skip)]
    pub listener_closed: Option<Mono>,
}

impl Tracker {
    /// The kernel's count carried by a signal, when it means something for this container: it
    /// is counted from the daemon's start, so a container that ran before then is not measured.
    pub(super) fn established_at(&self, group: &Group, e: &SignalEvent) -> Option<u64> {
        (self.config.connections_visible && !group.seeded).then(|| e.established.unwrap_or(0))
    }

    /// A state change of a socket of a container being stopped.
    pub(super) fn on_conn(&mut self, e: &ConnEvent) {
        let Some(a) = self
            .groups
            .get_mut(&e.cgroup)
            .and_then(|g| g.active.as_mut())
        else {
            return;
        };
        // After the SIGKILL, the kernel closes what the dead processes held: the kill's doing.
        if a.kill.as_ref().is_some_and(|k| e.ts >= k.at) {
            return;
        }
        a.connections.changed(e);
    }

    /// A connection attempt refused on a port the container closed while being stopped.
    pub(super) fn on_refused(&mut self, e: &RefusedEvent) {
        let active = self
            .groups
            .get_mut(&e.cgroup)
            .and_then(|g| g.active.as_mut());
        // Until its last process is gone: after that the container has no record to pay.
        let Some(a) = active.filter(|a| a.emptied_at.is_none_or(|end| e.ts <= end)) else {
            return;
        };
        if let Some(n) = a.connections.refused.as_mut() {
            *n += 1;
        }
    }
}

impl Connections {
    /// The cut connections, when measured.
    pub fn cut(&self) -> Option<u64> {
        self.open_at_kill
    }

    fn changed(&mut self, e: &ConnEvent) {
        match (e.old, e.new) {
            (ESTABLISHED, FIN_WAIT1) => self.closed_by_app += 1,
            (ESTABLISHED, CLOSE) => self.reset += 1,
            (LISTEN, CLOSE) => self.listener_closed = Some(e.ts),
            _ => {}
        }
    }
}

impl Active {
    /// The ledger as the record gives it (None: not measured).
    pub(super) fn connections(&self) -> Option<Connections> {
        self.connections
            .open_at_stop
            .map(|_| self.connections.clone())
    }
}
