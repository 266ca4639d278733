//! The kubelet's word on a container it stopped without a deletion (a failed liveness or startup
//! probe, a changed definition): its `Killing` Event, looked up on that one pod's Events (a field
//! selector on the involved object's uid), once per such stop. No daemon watches Events.
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::{api::ListParams, Api, Client};

use super::cause::KubeletKill;

/// How long a record may wait for the API's answer before it goes out with what the node knows.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("listing the pod's Events: {0}")]
    Api(#[from] kube::Error),
    #[error("listing the pod's Events: no answer within {0:?}")]
    Timeout(Duration),
}

/// The latest `Killing` Event the kubelet wrote for `container` of the pod `uid`.
pub async fn kubelet_kill(
    client: Client,
    namespace: &str,
    uid: &str,
    container: &str,
) -> Result<Option<KubeletKill>, LookupError> {
    let api: Api<Event> = Api::namespaced(client, namespace);
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    let events = tokio::time::timeout(LOOKUP_TIMEOUT, api.list(&params))
        .await
        .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))??;
    Ok(latest_kill(&events.items, container))
}

/// The kubelet's `Killing` Events name the container in the involved object's fieldPath
/// (`spec.containers{app}`, `spec.initContainers{proxy}` for a native sidecar).
fn latest_kill(events: &[Event], container: &str) -> Option<KubeletKill> {
    let paths = [
        format!("spec.containers{{{container}}}"),
        format!("spec.initContainers{{{container}}}"),
    ];
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.first_timestamp.as_ref().map(|t| t.0))
    };
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Killing"))
        .filter(|e| {
            e.involved_object
                .field_path
                .as_ref()
                .is_some_and(|p| paths.contains(p))
        })
        .max_by_key(|e| when(e))
        .and_then(|e| e.message.clone())
        .map(|message| KubeletKill { message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, path: &str, message: &str, at: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "uid": "u", "fieldPath": path},
            "reason": reason, "message": message, "lastTimestamp": at,
            "source": {"component": "kubelet", "host": "node-a"}, "type": "Normal",
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_killing_event_of_the_container_is_the_kubelets_word() {
        let events = [
            event(
                "Killing",
                "spec.containers{app}",
                "Container app failed liveness probe, will be restarted",
                "2026-11-30T10:00:00Z",
            ),
            event(
                "Killing",
                "spec.containers{app}",
                "Container app definition changed, will be restarted",
                "2026-11-30T09:00:00Z",
            ),
            event(
                "Unhealthy",
                "spec.containers{app}",
                "Liveness probe failed: HTTP probe failed with statuscode: 500",
                "2026-11-30T10:00:01Z",
            ),
            event(
                "Killing",
                "spec.containers{proxy}",
                "Stopping container proxy",
                "2026-11-30T11:00:00Z",
            ),
        ];
        assert_eq!(
            latest_kill(&events, "app").map(|k| k.message),
            Some("Container app failed liveness probe, will be restarted".into())
        );
        assert_eq!(latest_kill(&events, "db"), None);
    }
}
