//! The Kubernetes metadata provider against a local HTTP server that speaks the API server's
//! wire format: a pod list, then a chunked watch stream of ADDED, MODIFIED and DELETED events.
//! Real HTTP, real JSON, the real kube client; loopback only.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use profiler::attribution::kubernetes::{get_pod, watch_node_pods, KubernetesError, PodCache};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

const NODE: &str = "node-1";

fn pod(name: &str, uid: &str, container_id: Option<&str>) -> Value {
    let mut statuses = Vec::new();
    if let Some(id) = container_id {
        statuses.push(
            json!({"name": "app", "containerID": format!("containerd://{id}"),
            "ready": true, "restartCount": 0, "image": "app:1", "imageID": "sha256:1"}),
        );
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "5",
            "labels": {"pod-template-hash": "abc12"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc12",
                "uid": "rs", "controller": true}]},
        "spec": {"nodeName": NODE, "containers": [{"name": "app",
            "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]},
        "status": {"qosClass": "Burstable", "containerStatuses": statuses}
    })
}

/// What the fake API server serves and saw.
#[derive(Clone)]
struct FakeApi {
    pods: Arc<Mutex<Vec<Value>>>,
    events: broadcast::Sender<String>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn new(pods: Vec<Value>) -> Self {
        Self {
            pods: Arc::new(Mutex::new(pods)),
            events: broadcast::channel(256).0,
            requests: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    fn send(&self, kind: &str, object: Value) {
        let _ = self
            .events
            .send(json!({"type": kind, "object": object}).to_string());
    }

    async fn start(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(self.clone().connection(stream));
            }
        });
        url
    }

    async fn connection(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                return;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_owned();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let watching = query
                .split('&')
                .any(|pair| pair == "watch=true" || pair == "watch=1");
            let mut events = self.events.subscribe();
            self.requests.lock().expect("lock").push(target.clone());
            if path == "/api/v1/pods" && watching {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if write.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while let Ok(event) = events.recv().await {
                    let line = format!("{event}\n");
                    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                    if write.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let (status, body) = if path == "/api/v1/pods" {
                let items = self.pods.lock().expect("lock").clone();
                (
                    "200 OK",
                    json!({"apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": "10"}, "items": items}),
                )
            } else if let Some(name) = path.strip_prefix("/api/v1/namespaces/shop/pods/") {
                let found = self
                    .pods
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|p| p["metadata"]["name"] == name)
                    .cloned();
                match found {
                    Some(pod) => ("200 OK", pod),
                    None => (
                        "404 Not Found",
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": format!("pods \"{name}\" not found"), "reason": "NotFound", "code": 404}),
                    ),
                }
            } else {
                (
                    "404 Not Found",
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}),
                )
            };
            let body = body.to_string();
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if write.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

async fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

/// Waits (bounded) until `check` holds on the cache.
async fn eventually(cache: &Arc<Mutex<PodCache>>, what: &str, check: impl Fn(&PodCache) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if check(&cache.lock().expect("lock")) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn names_follow_the_pods_lifecycle_through_list_and_watch() {
    let api = FakeApi::new(vec![pod("web-1", "uid-1", Some("c1"))]);
    let url = api.clone().start().await;
    let cache = Arc::new(Mutex::new(PodCache::new(10)));
    let watch = watch_node_pods(client(&url).await, NODE, cache.clone());

    eventually(&cache, "the listed pod", |c| c.get("uid-1").is_some()).await;
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "every list and watch is scoped to the node: {requests:?}"
    );
    {
        let cache = cache.lock().expect("lock");
        let web = cache.get("uid-1").expect("web-1");
        assert_eq!(web.workload_kind.as_deref(), Some("Deployment"));
        assert_eq!(web.workload_name.as_deref(), Some("web"));
        let app = web.container_by_id("c1").expect("container by id");
        assert_eq!(app.limit_bytes, Some(256 << 20));
    }

    // The watch is open once its request arrived.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !api.requests().iter().any(|r| r.contains("watch=true")) {
        assert!(Instant::now() < deadline, "no watch request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.send("ADDED", pod("web-2", "uid-2", None));
    eventually(&cache, "web-2 added", |c| c.get("uid-2").is_some()).await;
    assert!(cache
        .lock()
        .expect("lock")
        .get("uid-2")
        .expect("web-2")
        .containers[0]
        .container_id
        .is_none());

    api.send("MODIFIED", pod("web-2", "uid-2", Some("c2")));
    eventually(&cache, "web-2's container started", |c| {
        c.get("uid-2")
            .and_then(|p| p.container_by_id("c2"))
            .is_some()
    })
    .await;

    api.send("DELETED", pod("web-1", "uid-1", Some("c1")));
    eventually(&cache, "web-1 deleted", |c| c.get("uid-1").is_none()).await;

    // A node with more pods than the cache holds: it stays bounded.
    for i in 0..30 {
        api.send(
            "ADDED",
            pod(&format!("batch-{i}"), &format!("batch-uid-{i}"), None),
        );
    }
    eventually(&cache, "the last batch pod", |c| {
        c.get("batch-uid-29").is_some()
    })
    .await;
    {
        let cache = cache.lock().expect("lock");
        assert_eq!(cache.len(), 10);
        assert!(cache.evicted >= 21, "evicted {}", cache.evicted);
    }
    watch.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn a_single_pod_is_read_and_an_unknown_one_is_named() {
    let api = FakeApi::new(vec![pod("web-1", "uid-1", Some("c1"))]);
    let url = api.clone().start().await;
    let info = get_pod(client(&url).await, "shop", "web-1")
        .await
        .expect("web-1");
    assert_eq!(info.uid, "uid-1");
    let err = get_pod(client(&url).await, "shop", "nope")
        .await
        .expect_err("no such pod");
    assert!(matches!(err, KubernetesError::PodNotFound { .. }), "{err}");
    assert!(err.to_string().contains("kubectl get pod -n shop nope"));
}
