//! What /metrics encodes: the registry, shared with the HTTP server. Its families take their own
//! short locks, so a scrape never waits for the event loop nor the loop for a scrape.
use std::sync::Arc;

use prometheus_client::{encoding::text::encode, registry::Registry};

#[derive(Clone)]
pub struct Exposition(Arc<Registry>);

impl Exposition {
    /// The registry, once every family is registered.
    pub(super) fn new(registry: Registry) -> Exposition {
        Exposition(Arc::new(registry))
    }

    /// OpenMetrics text, what Prometheus asks for.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.0);
        out
    }
}
