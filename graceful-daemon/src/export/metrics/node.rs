//! Node-wide families: created at start, so that `increase()` sees the first event.
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::super::{health::registered, metric_labels::*};
use crate::tracker::{Outcome, Verdict};

/// Node-wide: every signal by the kernel's result, every stop by outcome and verdict, lost
/// events, what the daemon holds.
pub(super) struct NodeMetrics {
    pub(super) signals: Family<SignalLabels, Counter>,
    pub(super) terminations: Family<OutcomeVerdictLabels, Counter>,
    pub(super) events_lost: Family<LossLabels, Counter>,
    pub(super) tracked: Family<KindLabels, Gauge>,
    pub(super) unkillable: Counter,
    pub(super) audits: Counter,
}

impl NodeMetrics {
    pub(super) fn register(registry: &mut Registry) -> NodeMetrics {
        let m = NodeMetrics {
            signals: registered(
                registry,
                "signals",
                "Signals generated on the node, by signal and the kernel's result",
                None,
            ),
            terminations: registered(
                registry,
                "node_terminations",
                "Containers stopped on the node, by outcome and verdict (every pair exists from the start)",
                None,
            ),
            events_lost: registered(
                registry,
                "events_lost",
                "Events lost on their way from the kernel, by reason",
                None,
            ),
            tracked: registered(
                registry,
                "tracked",
                "Entries the daemon holds in memory, by kind",
                None,
            ),
            unkillable: registered(
                registry,
                "unkillable_stops",
                "Stops whose processes outlived their SIGKILL by 10 s, held in the kernel (one interim record each)",
                None,
            ),
            audits: registered(
                registry,
                "audits",
                "Audits of the node's containers from /proc (PID 1 risks, what is gone), each counted after its tracked sizes are set",
                None,
            ),
        };
        for kind in [
            LossKind::RingFull,
            LossKind::ReadFailed,
            LossKind::DecodeFailed,
        ] {
            let _ = m.events_lost.get_or_create(&kind.labels());
        }
        // At 0 from the start: a graph's increase() counts the node's first stop of a kind.
        for outcome in Outcome::ALL {
            for verdict in Verdict::ALL {
                let _ = m.terminations.get_or_create(&OutcomeVerdictLabels {
                    outcome: outcome.as_str().into(),
                    verdict: verdict.as_str().into(),
                });
            }
        }
        let build_info: Family<VersionLabels, Gauge> =
            registered(registry, "build_info", "Version of graceful", None);
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        m
    }
}
