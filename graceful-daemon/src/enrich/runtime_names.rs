//! What the container runtime said of each container (names, grace, the image's STOPSIGNAL),
//! asked over CRI beside the event loop and kept while the container runs or its record waits.
//! A container the runtime could not name is not asked again until the next retry.
use std::collections::{HashMap, HashSet};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use super::cri::{CriClient, CriError};
use super::ContainerInfo;
use crate::{
    events::CgroupId,
    identity::{Identity, Runtime},
};

/// Waits before asking the runtime again about a container it did not know at its first exec.
const CREATION_RETRIES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(300),
    std::time::Duration::from_secs(1),
];
/// Containers whose runtime answers are kept at most (running ones, and stopped ones whose
/// record is not out yet): far above what one node runs.
const KEPT_MAX: usize = 8192;

/// A CRI answer, with what waited for it (the daemon's record), if anything did.
pub struct Lookup<W> {
    pub id: String,
    pub cgroup: CgroupId,
    pub info: Result<ContainerInfo, CriError>,
    pub waiting: Option<W>,
}

/// `W`: what may wait for an answer (the daemon's records), carried along and handed back.
pub struct RuntimeNames<W> {
    cri: Option<CriClient>,
    known: HashMap<String, ContainerInfo>,
    pending: HashSet<String>,
    /// Not asked again by the audit until the next retry.
    failed: HashSet<String>,
    warned: bool,
    answers: mpsc::Sender<Lookup<W>>,
    /// `graceful_cri_up`.
    up: Gauge,
}

impl<W: Send + 'static> RuntimeNames<W> {
    /// The names, and where the answers to its questions come back to the loop.
    pub fn new(cri: Option<CriClient>, up: Gauge) -> (RuntimeNames<W>, mpsc::Receiver<Lookup<W>>) {
        let (answers, rx) = mpsc::channel(1024);
        let names = RuntimeNames {
            cri,
            known: HashMap::new(),
            pending: HashSet::new(),
            failed: HashSet::new(),
            warned: false,
            answers,
            up,
        };
        (names, rx)
    }

    /// A CRI runtime is there to ask, and it names containers of this runtime.
    pub fn can_ask(&self, identity: &Identity) -> bool {
        self.cri.is_some() && matches!(identity.runtime, Runtime::Containerd | Runtime::CriO)
    }

    /// Asks the runtime beside the loop; the answer comes back as a [`Lookup`] carrying
    /// `waiting`. Returns `waiting` at once when there is nobody to ask.
    pub fn ask(&mut self, identity: &Identity, cgroup: CgroupId, waiting: Option<W>) -> Option<W> {
        let Some(cri) = self.cri.clone().filter(|_| self.can_ask(identity)) else {
            return waiting;
        };
        if self.pending.contains(&identity.id) && waiting.is_none() {
            return waiting;
        }
        self.pending.insert(identity.id.clone());
        let (id, tx, up) = (identity.id.clone(), self.answers.clone(), self.up.clone());
        let first_sight = waiting.is_none();
        tokio::spawn(async move {
            let mut cri = cri;
            let mut info = cri.container(&id).await;
            // A container seen at its first exec may not be in the runtime's store yet (a pod
            // sandbox's pause runs inside RunPodSandbox): ask again shortly before giving up.
            for wait in CREATION_RETRIES.iter().filter(|_| first_sight) {
                if !matches!(info, Err(CriError::Call { .. })) {
                    break;
                }
                tokio::time::sleep(*wait).await;
                info = cri.container(&id).await;
            }
            up.set(i64::from(match &info {
                Ok(_) => true,
                Err(e) => e.runtime_answered(),
            }));
            let _ = tx
                .send(Lookup {
                    id,
                    cgroup,
                    info,
                    waiting,
                })
                .await;
        });
        None
    }

    /// Takes an answer in; true when the runtime named the container.
    pub fn answered(
        &mut self,
        id: &str,
        info: Result<ContainerInfo, CriError>,
        awaited: bool,
    ) -> bool {
        self.pending.remove(id);
        match info {
            Ok(info) => {
                if self.known.len() < KEPT_MAX || awaited {
                    self.known.insert(id.to_string(), info);
                }
                true
            }
            Err(e) => {
                // A runtime too busy to answer in time is asked again at the next audit; one
                // that does not know the container, only at the next retry.
                if !matches!(e, CriError::Timeout { .. }) {
                    self.failed.insert(id.to_string());
                }
                if self.warned {
                    tracing::debug!("{e}");
                } else {
                    tracing::warn!(
                        "{e}; records keep the cgroup identity (further CRI errors at debug level)"
                    );
                    self.warned = true;
                }
                false
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&ContainerInfo> {
        self.known.get(id)
    }

    /// The names of the pod's containers the runtime told of (not its sandbox).
    pub fn siblings(&self, pod_uid: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .known
            .values()
            .filter(|i| !i.sandbox && i.pod_uid.as_deref() == Some(pod_uid))
            .filter_map(|i| i.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn forget(&mut self, id: &str) {
        self.known.remove(id);
    }

    /// Neither known, nor being asked, nor failed since the last retry.
    pub fn unasked(&self, id: &str) -> bool {
        !self.known.contains_key(id) && !self.failed.contains(id) && !self.pending.contains(id)
    }

    /// The containers the runtime could not name may be asked again.
    pub fn retry_failed(&mut self) {
        self.failed.clear();
    }

    /// Keeps the answers of these containers (and of those being asked) only.
    pub fn keep_only(&mut self, keep: &HashSet<&str>) {
        let pending = &self.pending;
        self.known
            .retain(|id, _| keep.contains(id.as_str()) || pending.contains(id));
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}
