//! Pod metadata from the Kubernetes API: a watch of the pods on this node (a `spec.nodeName`
//! field selector, so the agent never holds the cluster's pods), kept in a bounded cache keyed
//! by pod UID.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt as _},
    Api, Client,
};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KubernetesError {
    #[error(
        "no Kubernetes configuration: set KUBECONFIG, create ~/.kube/config, or run in a pod \
         with a service account (or use --metadata none)"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client from the configuration")]
    Client(#[source] kube::Error),
    #[error("pod {namespace}/{name} not found (check `kubectl get pod -n {namespace} {name}`)")]
    PodNotFound { namespace: String, name: String },
    #[error("asking the Kubernetes API for pod {namespace}/{name} failed")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {namespace}/{name} has no container named `{container}` (it has: {known})")]
    NoSuchContainer {
        namespace: String,
        name: String,
        container: String,
        known: String,
    },
    #[error("`{0}` is not NAMESPACE/POD")]
    BadPodName(String),
}

/// One container of a pod, with what its spec asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    /// Runtime id without the `containerd://` scheme; None until the container has started.
    pub container_id: Option<String>,
    pub request_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// What the API says about a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub qos: Option<String>,
    /// The owning workload: a ReplicaSet is reported as its Deployment.
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
    pub containers: Vec<ContainerInfo>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let metadata = &pod.metadata;
        let uid = metadata.uid.clone()?;
        let owner = metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.controller == Some(true));
        let template_hash = metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get("pod-template-hash"));
        let (workload_kind, workload_name) = match owner {
            // The Deployment controller names its ReplicaSets `<deployment>-<pod-template-hash>`,
            // so the Deployment is known without reading the ReplicaSet (and without RBAC on it).
            Some(owner) if owner.kind == "ReplicaSet" => match template_hash
                .and_then(|hash| owner.name.strip_suffix(&format!("-{hash}")))
            {
                Some(deployment) => (Some("Deployment".to_owned()), Some(deployment.to_owned())),
                None => (Some(owner.kind.clone()), Some(owner.name.clone())),
            },
            Some(owner) => (Some(owner.kind.clone()), Some(owner.name.clone())),
            None => (None, None),
        };
        let statuses = pod
            .status
            .as_ref()
            .and_then(|status| status.container_statuses.clone())
            .unwrap_or_default();
        let memory = |resources: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >| {
            resources
                .and_then(|values| values.get("memory"))
                .and_then(|quantity| parse_quantity(&quantity.0))
        };
        let containers = pod
            .spec
            .as_ref()
            .map(|spec| {
                spec.containers
                    .iter()
                    .map(|container| {
                        let resources = container.resources.as_ref();
                        ContainerInfo {
                            name: container.name.clone(),
                            container_id: statuses
                                .iter()
                                .find(|status| status.name == container.name)
                                .and_then(|status| status.container_id.as_deref())
                                .map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_owned()),
                            request_bytes: memory(resources.and_then(|r| r.requests.as_ref())),
                            limit_bytes: memory(resources.and_then(|r| r.limits.as_ref())),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            namespace: metadata.namespace.clone().unwrap_or_default(),
            name: metadata.name.clone().unwrap_or_default(),
            uid,
            qos: pod
                .status
                .as_ref()
                .and_then(|status| status.qos_class.clone()),
            workload_kind,
            workload_name,
            containers,
        })
    }

    pub fn container_by_id(&self, container_id: &str) -> Option<&ContainerInfo> {
        self.containers
            .iter()
            .find(|container| container.container_id.as_deref() == Some(container_id))
    }
}

/// Parses a Kubernetes quantity (`128Mi`, `1G`, `0.5Gi`, `1e9`, `500000k`) into bytes.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "m" => 1e-3,
        _ => return None,
    };
    let bytes = value * multiplier;
    (bytes.is_finite() && bytes >= 0.0).then(|| bytes.ceil() as u64)
}

/// Pods of this node by UID, bounded: past `capacity`, the oldest entry goes.
#[derive(Debug)]
pub struct PodCache {
    capacity: usize,
    pods: HashMap<String, PodInfo>,
    order: VecDeque<String>,
    /// Pods dropped to stay within the bound.
    pub evicted: u64,
    /// Complete lists of the node's pods applied so far (0: the watch has not synced yet).
    pub lists: u64,
}

impl PodCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            pods: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
            lists: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn get(&self, uid: &str) -> Option<&PodInfo> {
        self.pods.get(uid)
    }

    pub fn find(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods
            .values()
            .find(|pod| pod.namespace == namespace && pod.name == name)
    }

    /// Adds or updates a pod.
    pub fn upsert(&mut self, pod: PodInfo) {
        if self.pods.insert(pod.uid.clone(), pod.clone()).is_none() {
            self.order.push_back(pod.uid);
            while self.pods.len() > self.capacity {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                if self.pods.remove(&oldest).is_some() {
                    self.evicted += 1;
                }
            }
        }
    }

    pub fn remove(&mut self, uid: &str) {
        if self.pods.remove(uid).is_some() {
            self.order.retain(|known| known != uid);
        }
    }

    /// Applies one watch event. A re-list (`Init` ... `InitDone`) replaces the cache, so pods
    /// deleted while the watch was down do not linger.
    pub fn apply(&mut self, event: watcher::Event<Pod>, relisting: &mut Option<Vec<PodInfo>>) {
        match event {
            watcher::Event::Apply(pod) => {
                if let Some(info) = PodInfo::from_pod(&pod) {
                    self.upsert(info);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.remove(uid);
                }
            }
            watcher::Event::Init => *relisting = Some(Vec::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(list), Some(info)) = (relisting.as_mut(), PodInfo::from_pod(&pod)) {
                    list.push(info);
                }
            }
            watcher::Event::InitDone => {
                self.lists += 1;
                if let Some(list) = relisting.take() {
                    self.pods.clear();
                    self.order.clear();
                    for info in list {
                        self.upsert(info);
                    }
                }
            }
        }
    }
}

/// Builds a client from KUBECONFIG, ~/.kube/config or the in-cluster service account.
pub async fn client() -> Result<Client, KubernetesError> {
    let config = kube::Config::infer()
        .await
        .map_err(KubernetesError::Config)?;
    Client::try_from(config).map_err(KubernetesError::Client)
}

/// Watches the pods of `node` into a shared bounded cache, until the returned task is aborted.
/// Errors of the watch are retried with backoff (kube's default) and logged.
pub fn watch_node_pods(
    client: Client,
    node: &str,
    cache: Arc<Mutex<PodCache>>,
) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    tokio::spawn(async move {
        let mut relisting = None;
        let mut stream = watcher(pods, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if let Ok(mut cache) = cache.lock() {
                        cache.apply(event, &mut relisting);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "Kubernetes pod watch failed; retrying"),
            }
        }
    })
}

/// Reads one pod.
pub async fn get_pod(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<PodInfo, KubernetesError> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = pods
        .get_opt(name)
        .await
        .map_err(|source| KubernetesError::Api {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| KubernetesError::PodNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    PodInfo::from_pod(&pod).ok_or_else(|| KubernetesError::PodNotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Splits `NAMESPACE/POD`.
pub fn parse_pod_name(text: &str) -> Result<(String, String), KubernetesError> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(KubernetesError::BadPodName(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod JSON")
    }

    fn web_pod() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "web-7d4b9c-x2x9z", "namespace": "shop", "uid": "u-1",
                "labels": {"pod-template-hash": "7d4b9c"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d4b9c", "uid": "rs-1", "controller": true}]
            },
            "spec": {"containers": [
                {"name": "app", "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}}},
                {"name": "sidecar"}
            ]},
            "status": {"qosClass": "Burstable", "containerStatuses": [
                {"name": "app", "containerID": "containerd://abc123", "ready": true, "restartCount": 0,
                 "image": "x", "imageID": "y"}
            ]}
        }))
    }

    #[test]
    fn reads_names_workload_and_spec_resources() {
        let info = PodInfo::from_pod(&web_pod()).expect("info");
        assert_eq!(info.workload_kind.as_deref(), Some("Deployment"));
        assert_eq!(info.workload_name.as_deref(), Some("web"));
        assert_eq!(info.qos.as_deref(), Some("Burstable"));
        let app = info.container_by_id("abc123").expect("app by id");
        assert_eq!(app.name, "app");
        assert_eq!(app.request_bytes, Some(256 << 20));
        assert_eq!(app.limit_bytes, Some(1 << 30));
        assert_eq!(info.containers[1].container_id, None);
    }

    #[test]
    fn other_owners_are_reported_as_they_are() {
        let mut p = web_pod();
        let owners = p.metadata.owner_references.as_mut().expect("owners");
        owners[0].kind = "StatefulSet".into();
        owners[0].name = "db".into();
        let info = PodInfo::from_pod(&p).expect("info");
        assert_eq!(info.workload_kind.as_deref(), Some("StatefulSet"));
        assert_eq!(info.workload_name.as_deref(), Some("db"));
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("128Mi"), Some(128 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("0.5Gi"), Some(512 << 20));
        assert_eq!(parse_quantity("1e9"), Some(1_000_000_000));
        assert_eq!(parse_quantity("12345"), Some(12345));
        assert_eq!(parse_quantity("1Xi"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn the_cache_is_bounded_and_follows_deletes() {
        let mut cache = PodCache::new(2);
        for uid in ["a", "b", "c"] {
            let mut info = PodInfo::from_pod(&web_pod()).expect("info");
            info.uid = uid.into();
            cache.upsert(info);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.evicted, 1);
        assert!(cache.get("a").is_none());
        cache.remove("b");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_cache() {
        let mut cache = PodCache::new(10);
        let mut relisting = None;
        cache.apply(watcher::Event::Apply(web_pod()), &mut relisting);
        assert_eq!(cache.len(), 1);
        cache.apply(watcher::Event::Init, &mut relisting);
        cache.apply(watcher::Event::InitDone, &mut relisting);
        assert!(
            cache.is_empty(),
            "a pod gone while the watch was down must go"
        );
    }

    #[test]
    fn pod_names_are_namespace_slash_name() {
        assert_eq!(
            parse_pod_name("shop/web").expect("valid"),
            ("shop".to_owned(), "web".to_owned())
        );
        for bad in ["web", "/web", "shop/", "a/b/c"] {
            assert!(parse_pod_name(bad).is_err(), "{bad}");
        }
    }
}
