//! A Kubernetes API server double: no real one runs on these machines, so the tests start this,
//! which speaks the real protocol over HTTP. Pods: list (field selector, resourceVersion) and
//! watch (ADDED/MODIFIED/DELETED, BOOKMARK, a 410 Gone ERROR that forces a relist).
//! events.k8s.io/v1 Events: POST, merge PATCH, list (and as core/v1 for `kubectl get events`).
//! core/v1 Events the kubelet writes (`Killing`, `Unhealthy`), listed with their field selectors
//! (`involvedObject.uid`, `involvedObject.name`, `reason`).
//! apps/v1 ReplicaSets: get (their owner is the Deployment an Event also goes on).
//! Discovery enough for the official kubectl. It can be down, slow or answer garbage.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

use crate::cri::PodSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Every answer takes this long.
    Slow(Duration),
    /// Every answer is 200 with a body that is not JSON.
    Garbage,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Pods by (namespace, name).
    pods: BTreeMap<(String, String), Value>,
    /// Watch events after `compacted`, for watches that resume from a resourceVersion.
    history: Vec<(u64, &'static str, Value)>,
    compacted: u64,
    watchers: Vec<(Option<String>, mpsc::UnboundedSender<Value>)>,
    /// events.k8s.io/v1 Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
    /// apps/v1 ReplicaSets by (namespace, name).
    replicasets: BTreeMap<(String, String), Value>,
    /// core/v1 Events as the kubelet writes them.
    kubelet_events: Vec<Value>,
    /// "METHOD path?query" of every request, in order.
    pub requests: Vec<String>,
    mode: Option<Mode>,
}

type Shared = Arc<Mutex<Store>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct ApiServer {
    pub addr: SocketAddr,
    store: Shared,
    server: Option<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "graceful-kube-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store: Shared = Arc::new(Mutex::new(Store {
            rv: 100,
            compacted: 100,
            mode: Some(Mode::Up),
            ..Default::default()
        }));
        let mut api = ApiServer {
            addr,
            store,
            server: None,
            dir,
        };
        std::fs::write(api.kubeconfig(), api.kubeconfig_text()).unwrap();
        api.serve(listener);
        api
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = router(self.store.clone());
        self.server = Some(tokio::spawn(async move {
            // Connections live in this set: stopping the server drops them all, as a crash does.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn kubeconfig_text(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{}\n\
             users:\n- name: graceful\n  user:\n    token: not-a-secret\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: graceful\n\
             current-context: double\n",
            self.addr
        )
    }

    /// `graceful-daemon run` with this server's kubeconfig, `node` as NODE_NAME and CRI at
    /// `ctd`'s socket, JSON logs into `log` under its directory, once it watches the pods.
    pub fn daemon(
        &self,
        ctd: &crate::cri::Containerd,
        node: &str,
        log: &str,
    ) -> crate::daemon::Daemon {
        let kubeconfig = self.kubeconfig().display().to_string();
        let socket = ctd.socket.display().to_string();
        let daemon = crate::daemon::Daemon::start_env(
            &[],
            &["--log-format", "json", "--cri-socket", &socket],
            // The loop's debug lines say when it has a pod's facts (tests wait for them).
            &[
                ("KUBECONFIG", &kubeconfig),
                ("NODE_NAME", node),
                ("RUST_LOG", "info,graceful::daemon=debug"),
            ],
            ctd.dir.join(log),
        );
        crate::daemon::eventually("the daemon's watch of this node's pods", || {
            (self.watching() > 0).then_some(())
        });
        daemon
    }

    /// The server goes away: the port refuses connections and open ones are cut.
    pub fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        lock(&self.store).watchers.clear();
    }

    /// Back on the same port.
    pub async fn up(&mut self) {
        self.down();
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.serve(listener.expect("the port back"));
        self.set_mode(Mode::Up);
    }

    pub fn set_mode(&self, mode: Mode) {
        let mut s = lock(&self.store);
        s.mode = Some(mode);
        if mode != Mode::Up {
            // Open watches end: the client must come back through the new behaviour.
            s.watchers.clear();
        }
    }

    /// Every open watch gets a 410 Gone and the history is compacted: the client must relist.
    pub fn expire_watches(&self) {
        let mut s = lock(&self.store);
        s.compacted = s.rv;
        s.history.clear();
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410}});
        for (_, w) in s.watchers.drain(..) {
            let _ = w.send(gone.clone());
        }
    }

    /// Creates or replaces a pod (ADDED or MODIFIED to watchers); returns it as stored.
    pub fn put_pod(&self, mut pod: Value) -> Value {
        let mut s = lock(&self.store);
        s.rv += 1;
        let rv = s.rv;
        let key = pod_key(&pod);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        pod["kind"] = json!("Pod");
        pod["apiVersion"] = json!("v1");
        let kind = if s.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.pods.insert(key, pod.clone());
        s.publish(rv, kind, pod.clone());
        pod
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut s = lock(&self.store);
        let Some(mut pod) = s.pods.remove(&(namespace.to_string(), name.to_string())) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.publish(rv, "DELETED", pod);
    }

    /// A ReplicaSet owned by a Deployment, as the Deployment controller makes it.
    pub fn put_replicaset(&self, namespace: &str, name: &str, deployment: (&str, &str)) {
        let mut s = lock(&self.store);
        s.rv += 1;
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("rs-{name}"),
                "resourceVersion": s.rv.to_string(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.0,
                    "uid": deployment.1, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"selector": {"matchLabels": {"app": deployment.0}}}});
        s.replicasets
            .insert((namespace.to_string(), name.to_string()), rs);
    }

    /// A core/v1 Event as the kubelet writes it about a container of `pod` (`Killing` with
    /// "Container app failed liveness probe, will be restarted", `Unhealthy`, ...).
    pub fn put_kubelet_event(&self, pod: &Value, container: &str, reason: &str, message: &str) {
        let mut s = lock(&self.store);
        s.rv += 1;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let meta = &pod["metadata"];
        let name = format!("{}.{:x}", meta["name"].as_str().unwrap_or_default(), s.rv);
        let event = json!({"kind": "Event", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": meta["namespace"], "resourceVersion": s.rv.to_string()},
            "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                "uid": meta["uid"], "apiVersion": "v1", "fieldPath": format!("spec.containers{{{container}}}")},
            "reason": reason, "message": message, "type": if reason == "Killing" { "Normal" } else { "Warning" },
            "source": {"component": "kubelet", "host": pod["spec"]["nodeName"]},
            "firstTimestamp": at, "lastTimestamp": at, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": pod["spec"]["nodeName"]});
        s.kubelet_events.push(event);
    }

    /// Events as stored (events.k8s.io/v1), in name order.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.store).events.values().cloned().collect()
    }

    pub fn requests(&self) -> Vec<String> {
        lock(&self.store).requests.clone()
    }

    /// Watches open now (with their field selector).
    pub fn watching(&self) -> usize {
        let mut s = lock(&self.store);
        s.watchers.retain(|(_, w)| !w.is_closed());
        s.watchers.len()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Store {
    fn publish(&mut self, rv: u64, kind: &'static str, pod: Value) {
        self.history.push((rv, kind, pod.clone()));
        let event = json!({"type": kind, "object": pod});
        self.watchers.retain(|(selector, w)| {
            !selected(selector.as_deref(), &event["object"]) || w.send(event.clone()).is_ok()
        });
    }
}

fn pod_key(pod: &Value) -> (String, String) {
    let m = &pod["metadata"];
    (
        m["namespace"].as_str().unwrap_or("default").to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// Field selectors as the API server takes them for pods: `a=b,c!=d`; an unknown field is an error.
fn selected(selector: Option<&str>, pod: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (field, want, negate) = match term.split_once("!=") {
            Some((f, v)) => (f, v, true),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, false),
                None => return false,
            },
        };
        let got = match field {
            "spec.nodeName" => &pod["spec"]["nodeName"],
            "metadata.name" => &pod["metadata"]["name"],
            "metadata.namespace" => &pod["metadata"]["namespace"],
            _ => return false,
        };
        (got.as_str().unwrap_or_default() == want) != negate
    })
}

fn known_selector(selector: Option<&str>) -> bool {
    selector
        .unwrap_or_default()
        .split(',')
        .filter(|t| !t.is_empty())
        .all(|t| {
            let field = t.split(['!', '=']).next().unwrap_or_default();
            matches!(
                field,
                "spec.nodeName" | "metadata.name" | "metadata.namespace"
            )
        })
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn router(store: Shared) -> Router {
    Router::new().fallback(handle).with_state(store)
}

type Params = BTreeMap<String, String>;

/// `a=b&c=d%3De` decoded.
fn query(q: &str) -> Params {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 3;
                            continue;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b'+' => out.push(b' '),
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Every request: the mode first (slow, garbage), then the route.
async fn handle(State(store): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let params = query(uri.query().unwrap_or_default());
    let mode = {
        let mut s = lock(&store);
        s.requests.push(format!("{method} {uri}"));
        s.mode.unwrap_or(Mode::Up)
    };
    match mode {
        Mode::Up => {}
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Garbage => {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                "}{ not json \u{0}",
            )
                .into_response()
        }
    }
    let path: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.clone(), path.as_slice()) {
        (Method::GET, ["version"]) => ok(
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        ),
        (Method::GET, ["api"]) => ok(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        (Method::GET, ["apis"]) => ok(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "events.k8s.io", "versions": [{"groupVersion": "events.k8s.io/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "events.k8s.io/v1", "version": "v1"}}]}),
        ),
        (Method::GET, ["api", "v1"]) => ok(
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list", "watch"], "shortNames": ["po"]},
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": ["get", "list"], "shortNames": ["ev"]}]}),
        ),
        (Method::GET, ["apis", "events.k8s.io", "v1"]) => ok(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1", "resources": [
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": ["create", "get", "list", "patch"], "shortNames": ["ev"]}]}),
        ),
        (Method::GET, ["api", "v1", "pods"]) => pods(&store, None, &params),
        (Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => pods(&store, Some(ns), &params),
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            match lock(&store).pods.get(&(ns.to_string(), name.to_string())) {
                Some(p) => ok(p.clone()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                ),
            }
        }
        (Method::GET, ["apis", "apps", "v1", "namespaces", ns, "replicasets", name]) => {
            match lock(&store)
                .replicasets
                .get(&(ns.to_string(), name.to_string()))
            {
                Some(rs) => ok(rs.clone()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("replicasets.apps \"{name}\" not found"),
                ),
            }
        }
        (Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => {
            create_event(&store, ns, &body)
        }
        (Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", name]) => {
            patch_event(&store, ns, name, &body)
        }
        (Method::GET, ["apis", "events.k8s.io", "v1", "events"]) => {
            list_events(&store, None, false, &params)
        }
        (Method::GET, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => {
            list_events(&store, Some(ns), false, &params)
        }
        (Method::GET, ["api", "v1", "events"]) => list_events(&store, None, true, &params),
        (Method::GET, ["api", "v1", "namespaces", ns, "events"]) => {
            list_events(&store, Some(ns), true, &params)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the server could not find the requested resource ({method} {})",
                uri.path()
            ),
        ),
    }
}

fn pods(store: &Shared, namespace: Option<&str>, params: &Params) -> Response {
    let selector = params.get("fieldSelector").map(String::as_str);
    if !known_selector(selector) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "\"{}\" is not a known field selector",
                selector.unwrap_or_default()
            ),
        );
    }
    let in_namespace = |p: &Value| namespace.is_none_or(|ns| pod_key(p).0 == ns);
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        let s = lock(store);
        let items: Vec<Value> = s
            .pods
            .values()
            .filter(|p| in_namespace(p) && selected(selector, p))
            .cloned()
            .collect();
        return ok(
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        );
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(290u64);
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    {
        let mut s = lock(store);
        if from != 0 && from < s.compacted {
            let _ = tx.send(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("too old resource version: {from} ({})", s.compacted), "reason": "Expired", "code": 410}}));
        } else {
            for (rv, kind, pod) in s.history.iter().filter(|(rv, _, _)| *rv > from) {
                let _ = rv;
                if in_namespace(pod) && selected(selector, pod) {
                    let _ = tx.send(json!({"type": kind, "object": pod}));
                }
            }
            s.watchers.push((selector.map(String::from), tx.clone()));
        }
    }
    if bookmarks {
        let store = store.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let rv = lock(&store).rv;
                let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
                if tx.send(bookmark).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    let lines = tokio_stream_lines(rx).take_until(deadline);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .unwrap_or_default()
}

/// One JSON object per line, as the API server streams a watch.
fn tokio_stream_lines(
    rx: mpsc::UnboundedReceiver<Value>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let end = event["type"] == "ERROR";
        let line = format!("{event}\n");
        if end {
            rx.close();
        }
        Some((Ok(line), rx))
    })
}

fn create_event(store: &Shared, ns: &str, body: &[u8]) -> Response {
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not an Event",
        );
    };
    let Some(name) = event["metadata"]["name"].as_str().map(String::from) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    };
    if event["reportingController"].is_null() || event["eventTime"].is_null() {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "reportingController and eventTime are required",
        );
    }
    let mut s = lock(store);
    if s.events.contains_key(&(ns.to_string(), name.clone())) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("events.events.k8s.io \"{name}\" already exists"),
        );
    }
    s.rv += 1;
    event["metadata"]["namespace"] = json!(ns);
    event["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    event["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", s.rv));
    event["kind"] = json!("Event");
    event["apiVersion"] = json!("events.k8s.io/v1");
    s.events.insert((ns.to_string(), name), event.clone());
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        event.to_string(),
    )
        .into_response()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn patch_event(store: &Shared, ns: &str, name: &str, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not a merge patch",
        );
    };
    let mut s = lock(store);
    s.rv += 1;
    let rv = s.rv;
    let Some(event) = s.events.get_mut(&(ns.to_string(), name.to_string())) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("events.events.k8s.io \"{name}\" not found"),
        );
    };
    merge(event, &patch);
    event["metadata"]["resourceVersion"] = json!(rv.to_string());
    ok(event.clone())
}

/// The stored Events, as events.k8s.io/v1 or converted to core/v1 as the API server does (with
/// the kubelet's own core/v1 Events), through the core API's field selectors.
fn list_events(store: &Shared, ns: Option<&str>, core: bool, params: &Params) -> Response {
    let selector = params
        .get("fieldSelector")
        .map(String::as_str)
        .unwrap_or_default();
    let mut terms = Vec::new();
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let Some((field, want)) = term.split_once("==").or_else(|| term.split_once('=')) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid selector: '{term}'"),
            );
        };
        let path: &[&str] = match (core, field) {
            (true, "involvedObject.uid") => &["involvedObject", "uid"],
            (true, "involvedObject.name") => &["involvedObject", "name"],
            (true, "reason") => &["reason"],
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("field label not supported: {field}"),
                )
            }
        };
        terms.push((path, want.to_string()));
    }
    let s = lock(store);
    let kubelet = s.kubelet_events.iter().filter(|_| core).cloned();
    let items: Vec<Value> = s
        .events
        .iter()
        .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
        .map(|(_, e)| if core { to_core(e) } else { e.clone() })
        .chain(kubelet.filter(|e| ns.is_none_or(|ns| e["metadata"]["namespace"] == ns)))
        .filter(|e| {
            terms.iter().all(|(path, want)| {
                path.iter().fold(e, |v, k| &v[*k]).as_str() == Some(want.as_str())
            })
        })
        .collect();
    let (kind, api_version) = if core {
        ("EventList", "v1")
    } else {
        ("EventList", "events.k8s.io/v1")
    };
    ok(
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
    )
}

fn to_core(e: &Value) -> Value {
    let count = e["series"]["count"].as_i64().unwrap_or(1);
    let last = e["series"]["lastObservedTime"]
        .as_str()
        .or(e["eventTime"].as_str())
        .unwrap_or_default();
    json!({
        "kind": "Event", "apiVersion": "v1", "metadata": e["metadata"],
        "involvedObject": e["regarding"], "reason": e["reason"], "message": e["note"], "type": e["type"],
        "action": e["action"], "eventTime": e["eventTime"], "reportingComponent": e["reportingController"],
        "reportingInstance": e["reportingInstance"], "count": count,
        "firstTimestamp": null, "lastTimestamp": last,
        "source": {"component": e["reportingController"], "host": e["reportingInstance"]},
    })
}

/// A pod of one container `app` as the API serves it, bound to `node`, owned by `owner`.
pub fn pod_json(
    pod: &PodSpec<'_>,
    node: &str,
    owner: (&str, &str),
    hash: Option<&str>,
    hook: Option<&str>,
) -> Value {
    let mut labels = json!({"app": "web"});
    if let Some(h) = hash {
        labels["pod-template-hash"] = json!(h);
    }
    let mut container = json!({"name": "app", "image": "graceful.test/busybox:1"});
    if let Some(cmd) = hook {
        container["lifecycle"] = json!({"preStop": {"exec": {"command": ["/bin/sh", "-c", cmd]}}});
    }
    json!({
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "labels": labels,
            "creationTimestamp": "2026-11-23T10:00:00Z",
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1"}],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                "uid": "0a1b2c3d-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": pod.grace_seconds, "containers": [container]},
        "status": {"phase": "Running", "containerStatuses": []},
    })
}

/// The pod with its container `app` running as `id`.
pub fn with_container(mut pod: Value, id: &str) -> Value {
    pod["status"]["containerStatuses"] = json!([{"name": "app", "containerID": format!("containerd://{id}"),
        "image": "graceful.test/busybox:1", "imageID": "", "ready": true, "restartCount": 0,
        "started": true, "state": {"running": {"startedAt": "2026-11-23T10:00:01Z"}}}]);
    pod
}

/// The pod as the API server shows it once deleted with `grace` seconds.
pub fn deleted(mut pod: Value, grace: i64) -> Value {
    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
    pod["metadata"]["deletionTimestamp"] =
        json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    pod
}
