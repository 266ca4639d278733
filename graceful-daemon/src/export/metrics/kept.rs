//! A counter family whose series go a while after they last counted: bounded by what stopped
//! lately, not by everything that ever did.
use std::{
    collections::HashMap,
    fmt::Debug,
    hash::Hash,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::super::health::registered;

pub(super) struct Kept<L> {
    family: Family<L, Counter>,
    /// When each series last counted.
    seen: HashMap<L, Instant>,
}

impl<L> Kept<L>
where
    L: Clone + Debug + Hash + Eq + EncodeLabelSet + Send + Sync + 'static,
{
    pub(super) fn register(registry: &mut Registry, name: &str, help: &str) -> Kept<L> {
        Kept {
            family: registered(registry, name, help, None),
            seen: HashMap::new(),
        }
    }

    pub(super) fn inc_by(&mut self, labels: L, n: u64) {
        self.family.get_or_create(&labels).inc_by(n);
        self.seen.insert(labels, Instant::now());
    }

    /// Drops the series that have not counted for `ttl`.
    pub(super) fn prune(&mut self, now: Instant, ttl: Duration) {
        let family = &self.family;
        self.seen.retain(|labels, at| {
            let keep = now.saturating_duration_since(*at) < ttl;
            if !keep {
                family.remove(labels);
            }
            keep
        });
    }
}
