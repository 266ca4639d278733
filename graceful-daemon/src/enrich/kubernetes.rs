//! The Kubernetes API server: this node's pods, watched (list, then watch from its
//! resourceVersion, a relist on 410 Gone), reduced to [`PodFacts`] as they arrive.
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use super::pods::PodFacts;

/// What changed among this node's pods.
#[derive(Debug)]
pub enum PodUpdate {
    Applied(Box<PodFacts>),
    Deleted {
        uid: String,
    },
    /// A full list (at start, and after the watch fell too far behind): pods missing from it
    /// are gone.
    Relisted(Vec<PodFacts>),
}

/// A client from the in-cluster service account or KUBECONFIG (`~/.kube/config`); None, said
/// in one line, when there is neither or it does not work.
pub async fn client() -> Option<Client> {
    // One TLS provider for the process (rustls will not pick one when it could have two).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::info!(
                "no Kubernetes API ({e}): workloads, pod grace periods and Events are off"
            );
            None
        }
    }
}

/// Watches the pods bound to `node`, beside the loop, until the receiver is dropped. An API
/// server that is down, slow or answers garbage delays the facts, never the tracing: the
/// watch retries with backoff and catches up with a relist.
/// `up` is 1 while the watch is listed and answering, 0 while it fails.
pub fn watch_pods(client: Client, node: &str, up: Gauge) -> mpsc::Receiver<PodUpdate> {
    let (tx, rx) = mpsc::channel(256);
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let node = node.to_string();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        let mut listing: Vec<PodFacts> = Vec::new();
        let mut failing = false;
        while let Some(event) = stream.next().await {
            up.set(i64::from(event.is_ok()));
            let update = match event {
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(pod)) => {
                    listing.extend(PodFacts::from_pod(&pod));
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    if failing {
                        tracing::info!(
                            node,
                            pods = listing.len(),
                            "Kubernetes API reachable again: pods relisted"
                        );
                        failing = false;
                    }
                    PodUpdate::Relisted(std::mem::take(&mut listing))
                }
                Ok(watcher::Event::Apply(pod)) => match PodFacts::from_pod(&pod) {
                    Some(facts) => PodUpdate::Applied(Box::new(facts)),
                    None => continue,
                },
                Ok(watcher::Event::Delete(pod)) => match pod.metadata.uid {
                    Some(uid) => PodUpdate::Deleted { uid },
                    None => continue,
                },
                Err(e) => {
                    if !failing {
                        tracing::warn!(node, "watching pods: {e}; retrying (tracing goes on; records lack workloads until it answers)");
                        failing = true;
                    } else {
                        tracing::debug!("watching pods: {e}");
                    }
                    continue;
                }
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
    rx
}
