//! `capture --pod`: a pod (or one of its containers) found through the Kubernetes API, then
//! its cgroup on this node.

use std::path::Path;

use super::CaptureError;
use crate::{
    attribution::{
        self,
        kubernetes::{self as k8s, KubernetesError},
        KubernetesMeta,
    },
    cgroups,
};

/// Finds a pod (or one of its containers) through the API, then its cgroup on this node.
pub(super) async fn resolve(
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(String, KubernetesMeta), CaptureError> {
    let client = k8s::client().await?;
    let pod = k8s::get_pod(client, namespace, name).await?;
    let container_id =
        match container {
            None => None,
            Some(wanted) => {
                let info = pod
                    .containers
                    .iter()
                    .find(|c| c.name == wanted)
                    .ok_or_else(|| KubernetesError::NoSuchContainer {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        container: wanted.to_owned(),
                        known: pod
                            .containers
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                Some(info.container_id.clone().ok_or_else(|| {
                    CaptureError::ContainerNotStarted {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        container: wanted.to_owned(),
                    }
                })?)
            }
        };
    let root = Path::new("/");
    let unified = cgroups::Hierarchies::discover(root)?.unified;
    let path = attribution::find_pod_cgroup(&unified, &pod.uid, container_id.as_deref())
        .ok_or_else(|| CaptureError::PodNotOnThisNode {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: pod.uid.clone(),
            root: unified.clone(),
        })?;
    let identity = attribution::parse_cgroup_path(&path).ok();
    let mut meta = KubernetesMeta {
        pod_uid: pod.uid.clone(),
        container_id: container_id.clone(),
        runtime: identity.as_ref().and_then(|i| i.runtime),
        qos: identity.as_ref().map(|i| i.qos),
        ..KubernetesMeta::default()
    };
    attribution::fill_from_pod(&mut meta, &pod, container_id.as_deref());
    Ok((path, meta))
}
