//! deploy/headroom.yaml: every manifest parses into the typed Kubernetes API structs with no
//! field left over (an unknown or misspelt field would be silently ignored by the API server),
//! and the DaemonSet keeps the least-privilege settings it promises.

use std::path::Path;

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use serde::{de::DeserializeOwned, Deserialize as _, Serialize};
use serde_json::Value;

fn manifests() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/headroom.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/headroom.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("valid YAML document"))
        .filter(|document| !document.is_null())
        .collect()
}

/// Every field path of `original` must survive a round trip through the typed struct.
fn assert_no_unknown_fields(original: &Value, typed: &Value, path: &str) {
    match (original, typed) {
        (Value::Object(original), Value::Object(typed)) => {
            for (key, value) in original {
                let here = format!("{path}.{key}");
                let Some(kept) = typed.get(key) else {
                    panic!("unknown field {here}");
                };
                assert_no_unknown_fields(value, kept, &here);
            }
        }
        (Value::Array(original), Value::Array(typed)) => {
            assert_eq!(original.len(), typed.len(), "{path}");
            for (index, (a, b)) in original.iter().zip(typed).enumerate() {
                assert_no_unknown_fields(a, b, &format!("{path}[{index}]"));
            }
        }
        _ => {}
    }
}

fn typed<T: DeserializeOwned + Serialize>(document: &Value) -> T {
    let kind = document["kind"].as_str().unwrap_or("?");
    let value: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|err| panic!("{kind} does not parse: {err}"));
    let round_trip = serde_json::to_value(&value).expect("serialize");
    assert_no_unknown_fields(document, &round_trip, kind);
    value
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/headroom.yaml"))
}

#[test]
fn every_manifest_parses_into_its_typed_struct_without_unknown_fields() {
    let documents = manifests();
    for document in &documents {
        match document["kind"].as_str() {
            Some("Namespace") => drop(typed::<Namespace>(document)),
            Some("ServiceAccount") => drop(typed::<ServiceAccount>(document)),
            Some("ClusterRole") => drop(typed::<ClusterRole>(document)),
            Some("ClusterRoleBinding") => drop(typed::<ClusterRoleBinding>(document)),
            Some("ConfigMap") => drop(typed::<ConfigMap>(document)),
            Some("DaemonSet") => drop(typed::<DaemonSet>(document)),
            Some("PodMonitor") => {
                // A CRD: no typed struct in k8s-openapi; check what the operator reads.
                assert_eq!(document["apiVersion"], "monitoring.coreos.com/v1");
                assert_eq!(
                    document["spec"]["podMetricsEndpoints"][0]["port"],
                    "metrics"
                );
            }
            other => panic!("unexpected manifest kind {other:?}"),
        }
    }
}

#[test]
fn the_daemonset_runs_with_least_privilege() {
    let documents = manifests();
    let daemonset: DaemonSet = typed(find(&documents, "DaemonSet"));
    let pod = daemonset
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    assert_eq!(pod.host_pid, Some(true));
    let pod_seccomp = pod
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.clone());
    let container = &pod.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_ne!(security.privileged, Some(true), "never privileged");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let container_seccomp = security.seccomp_profile.as_ref().map(|p| p.type_.clone());
    assert_eq!(
        container_seccomp.or(pod_seccomp).as_deref(),
        Some("RuntimeDefault")
    );
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added = capabilities.add.clone().unwrap_or_default();
    for needed in ["BPF", "PERFMON"] {
        assert!(added.iter().any(|c| c == needed), "{needed} missing");
    }
    for capability in &added {
        assert!(
            [
                "BPF",
                "PERFMON",
                "SYS_RESOURCE",
                "SYS_PTRACE",
                "DAC_READ_SEARCH"
            ]
            .contains(&capability.as_str()),
            "capability {capability} is more than the agent needs"
        );
    }
    let node_name = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(node_name.as_deref(), Some("spec.nodeName"));
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for needed in ["/sys/kernel/tracing", "/sys/fs/cgroup", "/etc/headroom"] {
        assert!(mounts.contains(&needed), "mount {needed} missing");
    }
    let resources = container.resources.as_ref().expect("resources");
    let memory = |map: &Option<std::collections::BTreeMap<String, Quantity>>| {
        map.as_ref()
            .and_then(|m| m.get("memory"))
            .and_then(|q| profiler::attribution::kubernetes::parse_quantity(&q.0))
    };
    let request = memory(&resources.requests).expect("memory request");
    let limit = memory(&resources.limits).expect("memory limit");
    assert!(request <= limit);
    // Sized by headroom's own rule from its own measurement (README): the limit must cover
    // the measured 24.5 MiB peak with 20-30 % headroom.
    let measured_peak = 24.5 * 1024.0 * 1024.0;
    assert!(limit as f64 >= measured_peak * 1.2, "limit {limit}");
}

#[test]
fn rbac_reads_pods_and_nothing_else() {
    let documents = manifests();
    let role: ClusterRole = typed(find(&documents, "ClusterRole"));
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    let mut verbs = rules[0].verbs.clone();
    verbs.sort();
    assert_eq!(verbs, ["get", "list", "watch"]);
}

#[test]
fn the_configmap_holds_a_valid_agent_configuration() {
    let documents = manifests();
    let config: ConfigMap = typed(find(&documents, "ConfigMap"));
    let toml = config
        .data
        .as_ref()
        .and_then(|data| data.get("agent.toml"))
        .expect("agent.toml");
    let agent = profiler::agent::AgentConfig::from_toml(toml, "ConfigMap agent.toml")
        .expect("valid agent configuration");
    assert_eq!(agent.listen.port(), 9400);
}

#[test]
fn a_misspelt_field_is_caught() {
    let documents = manifests();
    let mut daemonset = find(&documents, "DaemonSet").clone();
    daemonset["spec"]["template"]["spec"]["hostPid"] = Value::Bool(true);
    let caught = std::panic::catch_unwind(|| drop(typed::<DaemonSet>(&daemonset)));
    assert!(
        caught.is_err(),
        "hostPid (for hostPID) must be reported as unknown"
    );
}
