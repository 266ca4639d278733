//! The ring buffer's reader: decodes records into events as they come, places the kernel's
//! lost-record count where the loss happened, and says each time it found the ring empty
//! (`Event::Drained`), at least every [`IDLE_LOOK`].
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::ProbeError;
use crate::events::{decode, Event, LossPlacer, LossReason, LostEvent};

/// Starts reading `ring` beside the caller; events arrive on the returned channel until the
/// receiver is dropped.
pub(super) fn start(ring: RingBuf<MapData>) -> Result<mpsc::Receiver<Event>, ProbeError> {
    // SAFETY: the ring buffer owns its map fd for as long as it lives.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(|e| ProbeError::Map {
        map: "EVENTS",
        error: e.to_string(),
    })?;
    let (tx, rx) = mpsc::channel(1 << 16);
    let mut placer = LossPlacer::default();
    tokio::spawn(async move {
        loop {
            // A wake-up can be missed (data that lands between the last read and clearing
            // readiness): an idle reader looks again, and says the ring is drained.
            let drained = match tokio::time::timeout(IDLE_LOOK, fd.readable_mut()).await {
                Ok(Ok(mut guard)) => {
                    let drained = drain(guard.get_inner_mut(), &mut placer, &tx).await;
                    guard.clear_ready();
                    drained
                }
                Ok(Err(_)) => return,
                Err(_) => drain(fd.get_mut(), &mut placer, &tx).await,
            };
            // Records wait for it (a stop ends once nothing more of it can come), and so
            // do decisions that an exit was lost.
            let Some(at) = drained else { return };
            if tx.send(Event::Drained(at)).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// How long the reader waits for the ring to say it is readable before it looks anyway.
const IDLE_LOOK: std::time::Duration = std::time::Duration::from_millis(100);

/// Reads the ring until it is empty, sending what it holds. Returns when it was found empty
/// (the clock read before the read that found nothing), None once the receiver is gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    placer: &mut LossPlacer,
    tx: &mpsc::Sender<Event>,
) -> Option<crate::events::Mono> {
    loop {
        let at = crate::clock::monotonic_now();
        let Some(item) = ring.next() else {
            return Some(at);
        };
        let lost = placer.newly_lost(&item);
        let events = match decode(&item) {
            Ok(event) => {
                let placed = (lost > 0).then(|| {
                    Event::Lost(LostEvent {
                        ts: event.ts(),
                        count: lost,
                        reason: LossReason::Kernel,
                    })
                });
                [placed, Some(event)]
            }
            Err(e) => {
                tracing::warn!("dropping a malformed ring-buffer record: {e}");
                let ts = crate::clock::monotonic_now();
                let kernel = (lost > 0).then_some(Event::Lost(LostEvent {
                    ts,
                    count: lost,
                    reason: LossReason::Kernel,
                }));
                let decode = Event::Lost(LostEvent {
                    ts,
                    count: 1,
                    reason: LossReason::Decode,
                });
                [kernel, Some(decode)]
            }
        };
        drop(item);
        for event in events.into_iter().flatten() {
            tx.send(event).await.ok()?;
        }
    }
}
