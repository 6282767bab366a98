//! A local HTTP server that speaks the Kubernetes API's wire format for pods: a list, a
//! chunked watch stream, and single-pod reads (200 or a 404 Status). Loopback only.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

pub const NODE: &str = "node-1";

pub fn pod(name: &str, uid: &str, container_id: Option<&str>) -> Value {
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
pub struct FakeApi {
    pods: Arc<Mutex<Vec<Value>>>,
    events: broadcast::Sender<String>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    pub fn new(pods: Vec<Value>) -> Self {
        Self {
            pods: Arc::new(Mutex::new(pods)),
            events: broadcast::channel(256).0,
            requests: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn send(&self, kind: &str, object: Value) {
        let _ = self
            .events
            .send(json!({"type": kind, "object": object}).to_string());
    }

    pub async fn start(self) -> String {
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
