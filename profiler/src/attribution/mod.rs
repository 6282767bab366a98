//! Who a cgroup belongs to: cgroup id to path (a bounded inode walk), path to container
//! identity (pod UID, container id, runtime, QoS), and identity to names (namespace, pod,
//! container, owning workload) through a metadata provider.
//!
//! Nothing is dropped silently: memory that cannot be attributed is reported as an
//! `unattributed` target with the reason.

pub mod kubernetes;
pub mod paths;

use std::{
    collections::{HashMap, VecDeque},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use crate::report::{Attribution, KubernetesMeta, Qos, Runtime};
pub use kubernetes::{ContainerInfo, PodCache, PodInfo};
pub use paths::{parse_cgroup_path, CgroupDriver, PathError, PathIdentity};

/// Where pod names come from. Also the value of `headroom capture --metadata`: the variants'
/// doc comments are its `--help` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetadataSource {
    /// The Kubernetes API if a configuration is found, else none.
    Auto,
    /// The Kubernetes API; fail without a configuration.
    Kubernetes,
    /// No names: containers are identified by pod UID and container id only.
    None,
}

/// A shared, bounded cache of this node's pods and the task that keeps it current.
pub type PodWatch = (
    std::sync::Arc<std::sync::Mutex<PodCache>>,
    tokio::task::JoinHandle<()>,
);

/// Starts the pod metadata watch `source` asks for; None when there is to be none. Must run
/// inside a tokio runtime.
pub async fn start_metadata(
    source: MetadataSource,
    node: Option<&str>,
    capacity: usize,
) -> Result<Option<PodWatch>, kubernetes::KubernetesError> {
    let client = match (source, kubernetes::client().await) {
        (MetadataSource::None, _) => return Ok(None),
        (MetadataSource::Auto, Err(err)) => {
            tracing::info!(error = %err, "no Kubernetes configuration; pods are named by cgroup path only");
            return Ok(None);
        }
        (MetadataSource::Kubernetes, Err(err)) => return Err(err),
        (_, Ok(client)) => client,
    };
    let node_name = match node {
        Some(name) => name.to_owned(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_default(),
    };
    let cache = std::sync::Arc::new(std::sync::Mutex::new(PodCache::new(capacity)));
    let task = kubernetes::watch_node_pods(client, &node_name, cache.clone());
    Ok(Some((cache, task)))
}

/// How long a failed id-to-path resolution is remembered before it is retried.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// How deep the inode walk goes below the cgroup2 root (kubepods trees are 4-5 deep; kind and
/// docker-in-docker add a few).
const MAX_WALK_DEPTH: usize = 10;

/// Resolves cgroup v2 ids (directory inode numbers) to paths, with a bounded cache. A miss walks
/// the hierarchy once and caches every directory it sees (up to the bound), so new cgroups are
/// resolved on first sight and a node's worth costs one walk; failures are cached for a while.
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    capacity: usize,
    known: HashMap<u64, String>,
    order: VecDeque<u64>,
    failed: HashMap<u64, Instant>,
    /// Walks done (for tests and self-metrics).
    pub walks: u64,
}

impl CgroupResolver {
    /// `root` is the cgroup2 mount.
    pub fn new(root: &Path, capacity: usize) -> Self {
        Self {
            root: root.to_path_buf(),
            capacity: capacity.max(1),
            known: HashMap::new(),
            order: VecDeque::new(),
            failed: HashMap::new(),
            walks: 0,
        }
    }

    /// The path of a cgroup id, as /proc/PID/cgroup shows it (`/` for the root).
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.known.get(&id) {
            return Some(path.clone());
        }
        if self
            .failed
            .get(&id)
            .is_some_and(|when| when.elapsed() < NEGATIVE_TTL)
        {
            return None;
        }
        self.walk();
        match self.known.get(&id) {
            Some(path) => Some(path.clone()),
            None => {
                if self.failed.len() >= self.capacity {
                    self.failed.clear();
                }
                self.failed.insert(id, Instant::now());
                None
            }
        }
    }

    fn remember(&mut self, id: u64, path: String) {
        if self.known.insert(id, path).is_none() {
            self.order.push_back(id);
            while self.known.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.known.remove(&oldest);
                }
            }
        }
    }

    fn walk(&mut self) {
        self.walks += 1;
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let relative = dir
                .strip_prefix(&self.root)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_else(|_| "/".to_owned());
            self.remember(meta.ino(), relative);
            if depth >= MAX_WALK_DEPTH {
                continue;
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((entry.path(), depth + 1));
                    }
                }
            }
        }
    }
}

/// Names the target behind a cgroup path, with what the metadata provider knows.
pub fn attribute(
    path: Option<&str>,
    pods: Option<&PodCache>,
) -> (Attribution, Option<KubernetesMeta>) {
    let Some(path) = path else {
        return (
            Attribution::Unattributed {
                reason:
                    "no cgroup: its id could not be resolved to a path (deleted before it was seen)"
                        .to_owned(),
            },
            None,
        );
    };
    let identity = match parse_cgroup_path(path) {
        Ok(identity) => identity,
        Err(PathError::NotKubernetes { .. }) => {
            return (
                Attribution::Host {
                    name: host_name(path),
                },
                None,
            )
        }
        Err(err @ PathError::UnknownRuntime { .. }) => {
            return (
                Attribution::Unattributed {
                    reason: format!("unknown runtime: {err}"),
                },
                None,
            )
        }
        Err(err) => {
            return (
                Attribution::Unattributed {
                    reason: err.to_string(),
                },
                None,
            )
        }
    };
    let mut meta = KubernetesMeta {
        pod_uid: identity.pod_uid.clone(),
        container_id: identity.container_id.clone(),
        runtime: identity.runtime,
        qos: Some(identity.qos),
        ..KubernetesMeta::default()
    };
    let pod = pods.and_then(|pods| pods.get(&identity.pod_uid));
    let Some(pod) = pod else {
        let reason = match pods {
            None => "pod names not looked up: no metadata provider (--metadata none)",
            Some(_) => "pod not (yet) known to the Kubernetes API watch",
        };
        return (
            Attribution::Kubernetes {
                names_known: false,
                reason: Some(reason.to_owned()),
            },
            Some(meta),
        );
    };
    fill_from_pod(&mut meta, pod, identity.container_id.as_deref());
    (
        Attribution::Kubernetes {
            names_known: true,
            reason: None,
        },
        Some(meta),
    )
}

/// Adds names and spec resources from the API's view of the pod.
pub fn fill_from_pod(meta: &mut KubernetesMeta, pod: &PodInfo, container_id: Option<&str>) {
    meta.namespace = Some(pod.namespace.clone());
    meta.pod = Some(pod.name.clone());
    meta.workload_kind = pod.workload_kind.clone();
    meta.workload_name = pod.workload_name.clone();
    match container_id.and_then(|id| pod.container_by_id(id)) {
        Some(container) => {
            meta.container = Some(container.name.clone());
            meta.spec_request_bytes = container.request_bytes;
            meta.spec_limit_bytes = container.limit_bytes;
        }
        None if container_id.is_none() => {
            let sum = |pick: fn(&ContainerInfo) -> Option<u64>| {
                pod.containers.iter().map(pick).sum::<Option<u64>>()
            };
            meta.spec_request_bytes = sum(|c| c.request_bytes);
            meta.spec_limit_bytes = sum(|c| c.limit_bytes);
        }
        None => {}
    }
}

/// A host target's name: its systemd unit when the path ends in one, else the path.
pub fn host_name(path: &str) -> String {
    path.rsplit('/')
        .find(|component| {
            [".service", ".scope", ".slice"]
                .iter()
                .any(|suffix| component.ends_with(suffix))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            }
        })
}

/// Finds the cgroup (path relative to `root`) of a pod, or of one of its containers, by walking
/// the kubepods tree for the pod UID (dashes or, for the systemd driver, underscores).
pub fn find_pod_cgroup(root: &Path, pod_uid: &str, container_id: Option<&str>) -> Option<String> {
    let underscored = pod_uid.replace('-', "_");
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.contains(pod_uid) || name.contains(&underscored) {
                let target = match container_id {
                    None => Some(path),
                    Some(id) => fs::read_dir(&path).ok().and_then(|children| {
                        children.flatten().map(|child| child.path()).find(|child| {
                            child.file_name().is_some_and(|n| {
                                n.to_string_lossy().contains(id)
                                    && !n.to_string_lossy().contains("conmon")
                            })
                        })
                    }),
                };
                return target.and_then(|found| {
                    found
                        .strip_prefix(root)
                        .ok()
                        .map(|relative| format!("/{}", relative.display()))
                });
            }
            if depth < MAX_WALK_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
    const ID: &str = "8f3c1a2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    fn pod_info() -> PodInfo {
        PodInfo {
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: UID.into(),
            qos: Some("Burstable".into()),
            workload_kind: Some("Deployment".into()),
            workload_name: Some("web".into()),
            containers: vec![
                ContainerInfo {
                    name: "app".into(),
                    container_id: Some(ID.into()),
                    request_bytes: Some(256 << 20),
                    limit_bytes: Some(512 << 20),
                },
                ContainerInfo {
                    name: "sidecar".into(),
                    container_id: None,
                    request_bytes: Some(64 << 20),
                    limit_bytes: None,
                },
            ],
        }
    }

    #[test]
    fn a_known_container_gets_its_names_and_spec() {
        let mut cache = PodCache::new(8);
        cache.upsert(pod_info());
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        let (attribution, meta) = attribute(Some(&path), Some(&cache));
        assert_eq!(
            attribution,
            Attribution::Kubernetes {
                names_known: true,
                reason: None
            }
        );
        let meta = meta.expect("meta");
        assert_eq!(meta.container.as_deref(), Some("app"));
        assert_eq!(meta.workload_name.as_deref(), Some("web"));
        assert_eq!(meta.spec_limit_bytes, Some(512 << 20));
        assert_eq!(meta.qos, Some(Qos::Burstable));
    }

    #[test]
    fn a_pod_level_cgroup_sums_the_spec_where_every_container_has_it() {
        let mut cache = PodCache::new(8);
        cache.upsert(pod_info());
        let (_, meta) = attribute(Some(&format!("/kubepods/burstable/pod{UID}")), Some(&cache));
        let meta = meta.expect("meta");
        assert_eq!(meta.spec_request_bytes, Some(320 << 20));
        assert_eq!(meta.spec_limit_bytes, None, "the sidecar has no limit");
    }

    #[test]
    fn unknown_pods_host_paths_and_failures_say_why() {
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        let (attribution, meta) = attribute(Some(&path), Some(&PodCache::new(1)));
        assert!(
            matches!(attribution, Attribution::Kubernetes { names_known: false, reason: Some(ref r) } if r.contains("not (yet) known"))
        );
        assert_eq!(meta.expect("ids").container_id.as_deref(), Some(ID));
        let (attribution, _) = attribute(Some(&path), None);
        assert!(
            matches!(attribution, Attribution::Kubernetes { reason: Some(ref r), .. } if r.contains("no metadata provider"))
        );
        assert_eq!(
            attribute(Some("/system.slice/sshd.service"), None).0,
            Attribution::Host {
                name: "sshd.service".into()
            }
        );
        assert!(
            matches!(attribute(None, None).0, Attribution::Unattributed { ref reason } if reason.starts_with("no cgroup"))
        );
        assert!(matches!(
            attribute(Some(&format!("/kubepods/pod{UID}/gvisor-x")), None).0,
            Attribution::Unattributed { ref reason } if reason.starts_with("unknown runtime")
        ));
    }

    #[test]
    fn the_resolver_walks_once_and_caches_failures() {
        let root = std::env::temp_dir().join(format!("headroom-resolver-{}", std::process::id()));
        let leaf = root.join(format!("kubepods/burstable/pod{UID}/{ID}"));
        fs::create_dir_all(&leaf).expect("fixture");
        let id = fs::metadata(&leaf).expect("stat").ino();
        let mut resolver = CgroupResolver::new(&root, 100);
        assert_eq!(
            resolver.resolve(id).as_deref(),
            Some(format!("/kubepods/burstable/pod{UID}/{ID}").as_str())
        );
        let root_id = fs::metadata(&root).expect("stat").ino();
        assert_eq!(resolver.resolve(root_id).as_deref(), Some("/"));
        assert_eq!(resolver.walks, 1, "the second lookup came from the cache");
        assert_eq!(resolver.resolve(u64::MAX), None);
        assert_eq!(resolver.resolve(u64::MAX), None);
        assert_eq!(resolver.walks, 2, "the failure is cached");
        assert_eq!(
            find_pod_cgroup(&root, UID, Some(ID)).as_deref(),
            Some(format!("/kubepods/burstable/pod{UID}/{ID}").as_str())
        );
        assert_eq!(
            find_pod_cgroup(&root, UID, None).as_deref(),
            Some(format!("/kubepods/burstable/pod{UID}").as_str())
        );
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn the_resolver_is_bounded() {
        let root = std::env::temp_dir().join(format!("headroom-resolver-b-{}", std::process::id()));
        for i in 0..20 {
            fs::create_dir_all(root.join(format!("c{i}"))).expect("fixture");
        }
        let mut resolver = CgroupResolver::new(&root, 5);
        let _ = resolver.resolve(1);
        assert!(resolver.known.len() <= 5);
        fs::remove_dir_all(&root).expect("cleanup");
    }

    /// The same paths as the kernel shows them in /proc/PID/cgroup: on a cgroup v2 host in the
    /// `0::` line, on a v1 (or hybrid) host in the memory controller's line.
    #[test]
    fn real_world_paths_parse_from_proc_cgroup_on_v1_and_v2() {
        for (path, expected) in paths::tests::real_world_paths() {
            let v2 = format!("0::{path}\n");
            let v1 = format!("12:pids:{path}\n11:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n");
            let from_v2 = crate::cgroups::parse_proc_cgroup(&v2, Path::new("v2")).expect("v2");
            assert_eq!(
                parse_cgroup_path(&from_v2.unified).as_ref(),
                Ok(&expected),
                "{v2}"
            );
            let from_v1 = crate::cgroups::parse_proc_cgroup(&v1, Path::new("v1")).expect("v1");
            let memory = from_v1.memory_v1.expect("memory line");
            assert_eq!(parse_cgroup_path(&memory).as_ref(), Ok(&expected), "{v1}");
        }
    }

    #[test]
    fn host_targets_are_named_by_unit() {
        assert_eq!(
            host_name("/system.slice/containerd.service"),
            "containerd.service"
        );
        assert_eq!(
            host_name("/user.slice/user-0.slice/session-3.scope"),
            "session-3.scope"
        );
        assert_eq!(host_name("/"), "/");
        assert_eq!(host_name("/headroom-test"), "/headroom-test");
    }
}
