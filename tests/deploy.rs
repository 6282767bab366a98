//! deploy/: every manifest of headroom.yaml parses into the typed Kubernetes API structs with no
//! field left over (an unknown or misspelt field would be silently ignored by the API server),
//! and the DaemonSet keeps the least-privilege settings it promises; the Grafana dashboard and
//! the recording rules query only metrics the agent exports; the Dockerfile's image runs what
//! the DaemonSet expects.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use profiler::exporters::{ContainerFigures, ContainerLabels, Metrics};
use prometheus::Registry;
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
            Some("NetworkPolicy") => drop(typed::<NetworkPolicy>(document)),
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
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    let seccomp = pod_security
        .seccomp_profile
        .as_ref()
        .expect("seccomp profile");
    assert_eq!(seccomp.type_, "Localhost");
    assert_eq!(
        seccomp.localhost_profile.as_deref(),
        Some("profiles/headroom.json")
    );
    assert_eq!(
        pod_security
            .app_armor_profile
            .as_ref()
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    // Off control-plane nodes by default.
    let terms = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|selector| selector.node_selector_terms.clone())
        .unwrap_or_default();
    assert!(
        !terms.is_empty()
            && terms.iter().all(|term| term
                .match_expressions
                .iter()
                .flatten()
                .any(|e| e.key == "node-role.kubernetes.io/control-plane"
                    && e.operator == "DoesNotExist")),
        "the DaemonSet may land on control-plane nodes"
    );
    let container = &pod.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_ne!(security.privileged, Some(true), "never privileged");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert!(
        security.seccomp_profile.is_none(),
        "the container must not override the pod's seccomp profile"
    );
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added = capabilities.add.clone().unwrap_or_default();
    assert_eq!(
        added,
        ["BPF", "PERFMON"],
        "SYS_PTRACE belongs in the overlay"
    );
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

/// The capabilities a line of `text` that starts with `prefix` lists (`A, B.`).
fn listed_capabilities(text: &str, prefix: &str, file: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|line| line.trim_start_matches("# ").strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{file} has no line starting {prefix:?}"));
    line.trim()
        .trim_end_matches('.')
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The capabilities the ptrace overlay adds to the DaemonSet.
fn overlay_capabilities() -> Vec<String> {
    let text = read_repository_file("deploy/overlays/ptrace/kustomization.yaml");
    let overlay: Value = serde_yaml_ng::from_str(&text).expect("overlay YAML");
    assert_eq!(
        overlay["resources"][0], "../../",
        "the overlay builds on deploy/"
    );
    let patch = overlay["patches"][0]["patch"]
        .as_str()
        .expect("a JSON patch");
    let operations: Vec<Value> = serde_yaml_ng::from_str(patch).expect("patch operations");
    operations
        .iter()
        .map(|op| {
            assert_eq!(op["op"], "add");
            assert_eq!(
                op["path"],
                "/spec/template/spec/containers/0/securityContext/capabilities/add/-"
            );
            op["value"].as_str().expect("a capability").to_owned()
        })
        .collect()
}

/// headroom.yaml, its overlay, SECURITY.md and the Dockerfile name the same capabilities; a
/// capability granted in one and not said in the others fails here.
#[test]
fn the_capability_lists_of_manifests_docs_and_image_agree() {
    let documents = manifests();
    let daemonset = find(&documents, "DaemonSet");
    let granted: Vec<String> = daemonset["spec"]["template"]["spec"]["containers"][0]
        ["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let security = read_repository_file("SECURITY.md");
    let dockerfile = read_repository_file("deploy/Dockerfile");
    assert_eq!(
        listed_capabilities(
            &security,
            "Capabilities granted by `deploy/headroom.yaml`:",
            "SECURITY.md"
        ),
        granted
    );
    assert_eq!(
        listed_capabilities(&dockerfile, "capabilities:", "deploy/Dockerfile"),
        granted
    );
    let opt_in = overlay_capabilities();
    assert_eq!(opt_in, ["SYS_PTRACE"]);
    assert_eq!(
        listed_capabilities(
            &security,
            "Capabilities added by `deploy/overlays/ptrace`:",
            "SECURITY.md"
        ),
        opt_in
    );
    assert_eq!(
        listed_capabilities(
            &dockerfile,
            "opt-in capabilities (deploy/overlays/ptrace):",
            "deploy/Dockerfile"
        ),
        opt_in
    );
    // Every capability granted anywhere is in SECURITY.md's table with its reason.
    for capability in granted.iter().chain(&opt_in) {
        assert!(
            security.contains(&format!("| `CAP_{capability}` |")),
            "SECURITY.md's table does not explain {capability}"
        );
    }
    // The base kustomization is the manifest itself.
    let base: Value =
        serde_yaml_ng::from_str(&read_repository_file("deploy/kustomization.yaml")).expect("YAML");
    assert_eq!(base["resources"][0], "headroom.yaml");
}

/// The Localhost seccomp profile the DaemonSet names: refuses what lets one process read or
/// write another's memory, allows what the probes need, and refuses by default.
#[test]
fn the_seccomp_profile_refuses_ptrace_and_allows_bpf() {
    let profile: Value =
        serde_json::from_str(&read_repository_file("deploy/seccomp/headroom.json"))
            .expect("deploy/seccomp/headroom.json is JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let rules = profile["syscalls"].as_array().expect("syscalls");
    let actions = |name: &str| -> Vec<(String, bool)> {
        rules
            .iter()
            .filter(|rule| {
                rule["names"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == name))
            })
            .map(|rule| {
                (
                    rule["action"].as_str().unwrap_or("").to_owned(),
                    rule.get("args").is_some(),
                )
            })
            .collect()
    };
    for refused in [
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "kcmp",
    ] {
        assert_eq!(
            actions(refused),
            [("SCMP_ACT_ERRNO".to_owned(), false)],
            "{refused} must be refused outright"
        );
    }
    for needed in [
        "bpf",
        "perf_event_open",
        "openat2",
        "read",
        "mmap",
        "epoll_wait",
    ] {
        assert_eq!(
            actions(needed),
            [("SCMP_ACT_ALLOW".to_owned(), false)],
            "{needed} must be allowed"
        );
    }
    for not_needed in ["mount", "setns", "unshare", "init_module", "kexec_load"] {
        assert!(actions(not_needed).is_empty(), "{not_needed} is allowed");
    }
}

/// Only the metrics port is reachable, and only by the agents' pods' selector.
#[test]
fn the_network_policy_admits_only_the_metrics_port() {
    let documents = manifests();
    let policy: NetworkPolicy = typed(find(&documents, "NetworkPolicy"));
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .map(String::as_str),
        Some("headroom")
    );
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );
    let ingress = spec.ingress.expect("ingress rules");
    for rule in &ingress {
        assert!(
            rule.from.as_ref().is_some_and(|from| !from.is_empty()),
            "a rule open to all"
        );
        let ports: Vec<_> = rule.ports.iter().flatten().collect();
        assert_eq!(ports.len(), 1);
        assert_eq!(
            ports[0].port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9400))
        );
    }
    let configmap: ConfigMap = typed(find(&documents, "ConfigMap"));
    let toml = configmap
        .data
        .as_ref()
        .and_then(|d| d.get("agent.toml"))
        .expect("agent.toml");
    let config = profiler::agent::AgentConfig::from_toml(toml, "ConfigMap").expect("valid");
    assert_eq!(config.listen.port(), 9400);
    assert!(
        !config.expose_api,
        "the API must stay on loopback in the DaemonSet"
    );
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

// ---------------------------------------------------------------------------------------------
// deploy/grafana-dashboard.json: every query names only metrics the agent exports or the
// recording rules produce, and every panel reads the `${datasource}` variable (so the dashboard
// imports into any Grafana without editing).

const DATASOURCE_VARIABLE: &str = "${datasource}";

fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read_repository_file(relative: &str) -> String {
    std::fs::read_to_string(repository_file(relative))
        .unwrap_or_else(|err| panic!("{relative}: {err}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read_repository_file("deploy/grafana-dashboard.json"))
        .expect("deploy/grafana-dashboard.json is valid JSON")
}

/// The metric names in a PromQL expression that belong to headroom: identifiers (metric names
/// may contain `:`, as recording rules' do) containing `headroom_`. Quoted strings are label
/// values, not metric names, and are skipped.
fn headroom_metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let is_name = current
            .chars()
            .next()
            .is_some_and(|first| !first.is_ascii_digit());
        if is_name && current.contains("headroom_") && !names.contains(current) {
            names.push(current.clone());
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
            continue;
        }
        flush(&mut current);
        if matches!(c, '"' | '\'' | '`') {
            // Skip to the closing quote; a backslash escapes the next character.
            while let Some(inner) = chars.next() {
                match inner {
                    '\\' => drop(chars.next()),
                    _ if inner == c => break,
                    _ => {}
                }
            }
        }
    }
    flush(&mut current);
    names
}

/// Every metric family the agent exports, read from the code: `Metrics::new` on a fresh
/// registry, one series set in each family (gather() leaves out vectors without series).
fn exported_metric_names() -> BTreeSet<String> {
    let registry = Registry::new();
    let metrics = Metrics::new(&registry).expect("metrics register");
    let labels = ContainerLabels {
        namespace: "shop".into(),
        pod: "web-1".into(),
        container: "app".into(),
        workload: "Deployment/web".into(),
        attribution: "kubernetes".into(),
    };
    let every_figure = ContainerFigures {
        charged_bytes: Some(1),
        charged_peak_bytes: Some(1),
        startup_peak_bytes: Some(1),
        steady_bytes: Some(1),
        limit_bytes: Some(1),
        resident_bytes: 1,
        resident_peak_bytes: 1,
        threads_created: 1,
        threads: Some(1),
        reserved_bytes: Some(1),
        reserved_peak_bytes: Some(1),
        thread_stack_reserved_bytes: Some(1),
        thread_stack_resident_bytes: Some(1),
        oom_kills: 1,
        limit_at_oom_bytes: Some(1),
        recommended_request_bytes: Some(1),
        recommended_limit_bytes: Some(1),
        unavailable: vec![("threads", "permission")],
    };
    metrics.set(&labels, &every_figure, &ContainerFigures::default());
    metrics.reads_skipped.with_label_values(&["file_cap"]).inc();
    metrics
        .http_connections_closed
        .with_label_values(&["timeout"])
        .inc();
    metrics
        .dropped_events
        .with_label_values(&["ringbuf_full"])
        .inc();
    metrics
        .ring_events
        .with_label_values(&["process_start"])
        .inc();
    metrics
        .containers_not_tracked
        .with_label_values(&[] as &[&str])
        .inc();
    metrics
        .map_fill_ratio
        .with_label_values(&["targets"])
        .set(0.5);
    metrics
        .bpf_run_seconds
        .with_label_values(&["program"])
        .inc_by(1.0);
    metrics.bpf_runs.with_label_values(&["program"]).inc();
    metrics
        .retired_series_dropped
        .with_label_values(&[] as &[&str])
        .inc();
    registry
        .gather()
        .iter()
        .map(|family| family.name().to_owned())
        .collect()
}

fn recording_rules() -> Value {
    let text = read_repository_file("deploy/recording-rules.yaml");
    serde_yaml_ng::from_str(&text).expect("deploy/recording-rules.yaml is valid YAML")
}

fn rules(document: &Value) -> impl Iterator<Item = &Value> {
    document["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
}

fn recording_rule_names() -> BTreeSet<String> {
    rules(&recording_rules())
        .filter_map(|rule| rule["record"].as_str().map(str::to_owned))
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    let mut pending: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = pending.pop() {
        pending.extend(panel["panels"].as_array().into_iter().flatten());
        found.push(panel);
    }
    found
}

/// A panel's title for messages, quoted (JSON), so an empty one still shows.
fn title(panel: &Value) -> &Value {
    &panel["title"]
}

/// Every PromQL expression with where it is: panel queries and template-variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let place = format!("panel {} query {}", title(panel), target["refId"]);
                queries.push((place, expr.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let expr = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .unwrap_or_default();
            queries.push((format!("variable {}", variable["name"]), expr.to_owned()));
        }
    }
    queries
}

/// Metric names the dashboard uses that are neither exported nor recorded, with where.
fn unknown_metric_references(dashboard: &Value, known: &BTreeSet<String>) -> Vec<String> {
    dashboard_queries(dashboard)
        .into_iter()
        .flat_map(|(place, expr)| {
            headroom_metric_names(&expr)
                .into_iter()
                .filter(|name| !known.contains(name))
                .map(move |name| format!("{place}: {name}"))
        })
        .collect()
}

fn uses_datasource_variable(datasource: &Value) -> bool {
    datasource["uid"] == DATASOURCE_VARIABLE && datasource["type"] == "prometheus"
}

/// Panels, queries and variables that do not read the `${datasource}` variable.
fn fixed_datasources(dashboard: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    for panel in panels(dashboard) {
        if !uses_datasource_variable(&panel["datasource"]) {
            wrong.push(format!("panel {}", title(panel)));
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let datasource = &target["datasource"];
            if !datasource.is_null() && !uses_datasource_variable(datasource) {
                wrong.push(format!("panel {} query {}", title(panel), target["refId"]));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" && !uses_datasource_variable(&variable["datasource"]) {
            wrong.push(format!("variable {}", variable["name"]));
        }
    }
    wrong
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let expr = r#"sum by (namespace) (rate(headroom_container_oom_kills_total{pod=~"headroom_not_a_metric", x='headroom_quoted'}[5m]))
        / workload:headroom_memory_charged_bytes:max > 0.9 * headroom_container_oom_kills_total"#;
    assert_eq!(
        headroom_metric_names(expr),
        [
            "headroom_container_oom_kills_total",
            "workload:headroom_memory_charged_bytes:max"
        ]
    );
    assert!(headroom_metric_names("up{job=\"headroom_x\\\"headroom_y\"}").is_empty());
    assert!(headroom_metric_names("label_values(container_memory_rss, pod)").is_empty());
}

#[test]
fn exported_names_come_from_the_agents_registry() {
    let exported = exported_metric_names();
    // Spot checks that the registry was filled: a container gauge, a labelled counter with
    // `_total`, and an unlabelled self metric.
    for name in [
        "headroom_container_memory_charged_peak_bytes",
        "headroom_agent_dropped_events_total",
        "headroom_agent_containers_not_tracked_total",
        "headroom_agent_resident_bytes",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }
    assert!(exported.iter().all(|name| name.starts_with("headroom_")));
}

#[test]
fn the_recording_rules_read_only_exported_metrics() {
    let exported = exported_metric_names();
    let document = recording_rules();
    for rule in rules(&document) {
        let expr = rule["expr"].as_str().expect("every rule has an expr");
        let names = headroom_metric_names(expr);
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "recording rule reads {name}, which the agent does not export"
            );
        }
    }
}

#[test]
fn the_dashboard_queries_only_metrics_the_agent_exports_or_rules_record() {
    let dashboard = dashboard();
    let known: BTreeSet<String> = exported_metric_names()
        .into_iter()
        .chain(recording_rule_names())
        .collect();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (place, expr) in &queries {
        assert!(
            !headroom_metric_names(expr).is_empty(),
            "{place} reads no headroom metric: {expr}"
        );
    }
    let unknown = unknown_metric_references(&dashboard, &known);
    assert!(unknown.is_empty(), "unknown metrics: {unknown:#?}");

    // The check can fail: one misspelt name in one query is reported with its place.
    let mut broken = dashboard.clone();
    let target = broken["panels"]
        .as_array_mut()
        .and_then(|panels| panels.iter_mut().find(|p| p["targets"].is_array()))
        .and_then(|panel| panel["targets"][0].as_object_mut())
        .expect("a query");
    target.insert(
        "expr".into(),
        Value::from("rate(headroom_container_oom_kill_total[5m])"),
    );
    let unknown = unknown_metric_references(&broken, &known);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].ends_with("headroom_container_oom_kill_total"));
}

#[test]
fn every_dashboard_panel_reads_the_datasource_variable() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["namespace", "workload", "pod", "container"] {
        let variable = variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        let query = variable["query"]["query"].as_str().unwrap_or_default();
        assert!(
            query.starts_with("label_values(headroom_") && query.ends_with(&format!(", {name})")),
            "{name}: {query}"
        );
    }
    let all = panels(&dashboard);
    assert!(all.len() >= 10, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for panel in &all {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{} has no gridPos",
            title(panel)
        );
    }
    let wrong = fixed_datasources(&dashboard);
    assert!(wrong.is_empty(), "not on ${{datasource}}: {wrong:?}");

    // The check can fail: a panel pinned to one datasource is reported.
    let mut pinned = dashboard.clone();
    pinned["panels"][1]["datasource"]["uid"] = Value::from("P1809F7CD0C75ACF3");
    assert_eq!(fixed_datasources(&pinned).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// deploy/Dockerfile: the image runs what the DaemonSet expects, and builds from paths that exist.

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuations joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                let (keyword, arguments) = pending.split_once(' ').unwrap_or((&pending, ""));
                instructions.push((keyword.to_ascii_uppercase(), arguments.trim().to_owned()));
                pending.clear();
            }
        }
    }
    instructions
}

/// The instructions of each stage, in order.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read_repository_file("deploy/Dockerfile");
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for instruction in dockerfile_instructions(&text) {
        if instruction.0 == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    stages
}

fn instruction<'a>(stage: &'a [(String, String)], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|(k, _)| k == keyword)
        .map(|(_, arguments)| arguments.as_str())
}

fn exec_form(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments)
        .unwrap_or_else(|err| panic!("{arguments} is not the exec (JSON) form: {err}"))
}

/// `--flag=value` and `--flag value` are the same to clap: compare them split.
fn split_flags(arguments: &[String]) -> Vec<String> {
    arguments
        .iter()
        .flat_map(|argument| match argument.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                vec![flag.to_owned(), value.to_owned()]
            }
            _ => vec![argument.clone()],
        })
        .collect()
}

/// COPY's flags, sources and destination.
fn copy_parts(arguments: &str) -> (Vec<&str>, Vec<&str>, &str) {
    let words: Vec<&str> = arguments.split_whitespace().collect();
    let (flags, rest): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.starts_with("--"));
    let (destination, sources) = rest.split_last().expect("COPY has a destination");
    (flags, sources.to_vec(), destination)
}

fn profiler_manifest() -> toml::Table {
    read_repository_file("profiler/Cargo.toml")
        .parse()
        .expect("profiler/Cargo.toml")
}

#[test]
fn the_image_runs_what_the_daemonset_expects() {
    let stages = dockerfile_stages();
    let runtime = stages.last().expect("a runtime stage");
    let entrypoint = exec_form(instruction(runtime, "ENTRYPOINT").expect("ENTRYPOINT"));
    let cmd = exec_form(instruction(runtime, "CMD").expect("CMD"));

    let documents = manifests();
    let daemonset: DaemonSet = typed(find(&documents, "DaemonSet"));
    let pod = daemonset
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let container = &pod.containers[0];
    // No `command` keeps the image's ENTRYPOINT; if one is set it must be the same binary.
    if let Some(command) = &container.command {
        assert_eq!(command, &entrypoint, "DaemonSet command vs ENTRYPOINT");
    }
    let args = split_flags(container.args.as_deref().expect("DaemonSet args"));
    let cmd = split_flags(&cmd);
    assert!(
        args.starts_with(&cmd),
        "DaemonSet args {args:?} do not start with the image's CMD {cmd:?}"
    );

    // The binary ENTRYPOINT runs is the one the runtime stage copies in.
    let copies: Vec<(Vec<&str>, Vec<&str>, &str)> = runtime
        .iter()
        .filter(|(k, _)| k == "COPY")
        .map(|(_, arguments)| copy_parts(arguments))
        .collect();
    assert!(
        copies
            .iter()
            .any(|(_, _, destination)| *destination == entrypoint[0]),
        "nothing copied to {}",
        entrypoint[0]
    );

    // The configuration CMD names is where the DaemonSet mounts the ConfigMap's agent.toml.
    let config = cmd
        .iter()
        .position(|a| a == "--config")
        .map(|i| cmd[i + 1].clone())
        .expect("CMD passes --config");
    let config = Path::new(&config);
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Some(Path::new(&m.mount_path)) == config.parent())
        .expect("the config directory is mounted");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("mounted volume");
    assert!(
        volume.config_map.is_some(),
        "the config comes from the ConfigMap"
    );
    let configmap: ConfigMap = typed(find(&documents, "ConfigMap"));
    let key = config
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    assert!(configmap.data.expect("data").contains_key(key));

    // Image tag, image label and package version agree.
    let version = profiler_manifest()["package"]["version"]
        .as_str()
        .expect("package version")
        .to_owned();
    assert_eq!(
        container.image.as_deref(),
        Some(format!("headroom:{version}").as_str())
    );
    let label = instruction(runtime, "LABEL").expect("LABEL");
    assert!(
        label.contains(&format!("org.opencontainers.image.version=\"{version}\"")),
        "{label}"
    );
}

#[test]
fn the_dockerfile_copies_paths_that_exist_and_builds_the_headroom_binary() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let images: Vec<&str> = stages
        .iter()
        .map(|stage| instruction(stage, "FROM").expect("FROM"))
        .collect();
    // The binary links the builder's glibc: both stages on the same Debian release.
    for image in &images {
        assert!(image.contains("bookworm"), "{image}");
    }
    let builder = &stages[0];
    let builder_name = images[0]
        .split_whitespace()
        .last()
        .expect("a named builder stage");
    let workdir = instruction(builder, "WORKDIR").expect("builder WORKDIR");
    let runs: Vec<&str> = builder
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(runs.contains(&"cargo xtask setup"), "{runs:?}");
    assert!(
        runs.contains(&"cargo build --release --locked -p profiler"),
        "{runs:?}"
    );

    let manifest = profiler_manifest();
    let binary = manifest["bin"][0]["name"].as_str().expect("[[bin]] name");
    let built = format!("{workdir}/target/release/{binary}");

    let mut copied_from_context = Vec::new();
    for stage in &stages {
        for (_, arguments) in stage.iter().filter(|(k, _)| k == "COPY") {
            let (flags, sources, _) = copy_parts(arguments);
            match flags.iter().find_map(|f| f.strip_prefix("--from=")) {
                Some(stage) => {
                    assert_eq!(stage, builder_name);
                    assert_eq!(sources, [built.as_str()], "copies the built binary");
                }
                None => {
                    for source in sources {
                        assert!(
                            repository_file(source).exists(),
                            "COPY {source}: no such path in the repository"
                        );
                        copied_from_context.push(source.trim_end_matches('/').to_owned());
                    }
                }
            }
        }
    }

    // Every workspace member is in the build context the builder copies, or cargo --locked fails.
    let workspace: toml::Table = read_repository_file("Cargo.toml")
        .parse()
        .expect("Cargo.toml");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    for member in members {
        let member = member.as_str().expect("member path");
        assert!(
            copied_from_context
                .iter()
                .any(|copied| member == copied || member.starts_with(&format!("{copied}/"))),
            "workspace member {member} is not copied into the builder"
        );
    }

    let ignored = read_repository_file(".dockerignore");
    assert!(
        ignored
            .lines()
            .any(|line| line.trim().trim_end_matches('/') == "target"),
        ".dockerignore must leave target/ out of the build context"
    );
}
