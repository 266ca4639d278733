//! The request to stop: SIGTERM (a supervisor, kubelet) or SIGINT (Ctrl-C).
use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Watches SIGTERM and SIGINT from now on and resolves at the first of them. Create it once,
/// before the loop that selects on it, and poll it by reference: a watcher made anew on every
/// turn can take a signal and be dropped with it.
pub fn requested() -> impl Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                tracing::warn!("cannot watch both SIGTERM and SIGINT ({e})");
                one.recv().await;
            }
            (Err(e), Err(_)) => {
                tracing::warn!("cannot watch SIGTERM or SIGINT ({e}); stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
