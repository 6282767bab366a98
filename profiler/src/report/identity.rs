//! Who a target belongs to: Kubernetes names and spec resources, a host service, or nothing
//! (with the reason).

use serde::{Deserialize, Serialize};

/// Names and spec resources of a container, for the report's `kubernetes` field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KubernetesMeta {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub pod_uid: String,
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    pub qos: Option<Qos>,
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
    /// The pod spec's memory request and limit for this container (sum over containers for a
    /// pod-level target).
    pub spec_request_bytes: Option<u64>,
    pub spec_limit_bytes: Option<u64>,
}

/// Who a target's memory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attribution {
    /// A Kubernetes container (or a pod, for a pod-level cgroup). `names_known` is false when
    /// the pod is not (yet) known to the metadata provider; `reason` then says why.
    Kubernetes {
        names_known: bool,
        reason: Option<String>,
    },
    /// Not Kubernetes: a host service or process, named by its systemd unit or cgroup.
    Host { name: String },
    /// Memory that cannot be put on a container, and why.
    Unattributed { reason: String },
}

impl Attribution {
    /// The label value exported for it (`kubernetes`, `host`, `unattributed`).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::Kubernetes { .. } => "kubernetes",
            Self::Host { .. } => "host",
            Self::Unattributed { .. } => "unattributed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// The cgroupfs driver names containers by bare id (containerd and docker both do).
    Unknown,
}
