//! This node's pods as the API server last said, reduced to [`PodFacts`]; a pod deleted from the
//! API is kept a while, for its containers' records that come after.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::{kubernetes::PodUpdate, pods::PodFacts};

/// How long a pod deleted from the API is kept.
pub const DEPARTED_KEPT: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct PodStore {
    /// By uid.
    pods: HashMap<String, PodFacts>,
    /// Deleted from the API, and when.
    departed: HashMap<String, Instant>,
}

impl PodStore {
    /// Takes an update in; returns the uids of the pods it brought (whose containers may need
    /// their settings again).
    pub fn apply(&mut self, update: PodUpdate, now: Instant) -> HashSet<String> {
        match update {
            PodUpdate::Applied(pod) => {
                let uid = pod.uid.clone();
                self.departed.remove(&uid);
                self.pods.insert(uid.clone(), *pod);
                HashSet::from([uid])
            }
            PodUpdate::Deleted { uid } => {
                self.departed.insert(uid, now);
                HashSet::new()
            }
            PodUpdate::Relisted(pods) => {
                let listed: HashSet<String> = pods.iter().map(|p| p.uid.clone()).collect();
                for uid in self.pods.keys().filter(|u| !listed.contains(*u)) {
                    self.departed.entry(uid.clone()).or_insert(now);
                }
                for pod in pods {
                    self.departed.remove(&pod.uid);
                    self.pods.insert(pod.uid.clone(), pod);
                }
                listed
            }
        }
    }

    /// Forgets pods deleted [`DEPARTED_KEPT`] ago or more.
    pub fn forget_departed(&mut self, now: Instant) {
        let pods = &mut self.pods;
        self.departed.retain(|uid, at| {
            let keep = now.saturating_duration_since(*at) < DEPARTED_KEPT;
            if !keep {
                pods.remove(uid);
            }
            keep
        });
    }

    pub fn get(&self, uid: &str) -> Option<&PodFacts> {
        self.pods.get(uid)
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(uid: &str) -> PodFacts {
        PodFacts {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("pod-{uid}"),
            workload: None,
            owner: None,
            grace_period_seconds: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_deleted_pod_is_kept_a_while_then_forgotten() {
        let mut store = PodStore::default();
        let t0 = Instant::now();
        let changed = store.apply(PodUpdate::Relisted(vec![facts("a"), facts("b")]), t0);
        assert_eq!(changed.len(), 2);
        assert!(store
            .apply(PodUpdate::Deleted { uid: "a".into() }, t0)
            .is_empty());
        // Missing from a relist is deleted too.
        store.apply(PodUpdate::Relisted(vec![facts("c")]), t0);
        store.forget_departed(t0 + DEPARTED_KEPT / 2);
        assert!(
            store.get("a").is_some() && store.get("b").is_some(),
            "kept for late records"
        );
        store.forget_departed(t0 + DEPARTED_KEPT);
        assert!(store.get("a").is_none() && store.get("b").is_none());
        assert_eq!(store.len(), 1);
        // Back in the API before it was forgotten: not departed any more.
        store.apply(PodUpdate::Deleted { uid: "c".into() }, t0);
        store.apply(PodUpdate::Applied(Box::new(facts("c"))), t0);
        store.forget_departed(t0 + DEPARTED_KEPT * 2);
        assert!(store.get("c").is_some());
    }
}
