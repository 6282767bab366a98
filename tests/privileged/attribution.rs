//! Node-wide attribution with the live probes: a kubepods tree with kubelet's cgroupfs naming,
//! in both hierarchies of this hybrid host, with processes inside, and a host cgroup beside it.
//!
//! Needs root. Without it: SKIPPED, except in CI or under `cargo xtask test`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use std::{
    path::{Path, PathBuf},
    thread,
};

use common::{headroom, privileged, workload};

const MIB: u64 = 1 << 20;

/// Directories the test made, removed deepest first on drop.
struct Tree {
    made: Vec<PathBuf>,
}

impl Tree {
    fn make(&mut self, dir: &Path) {
        let mut missing = Vec::new();
        let mut current = Some(dir);
        while let Some(path) = current {
            if path.exists() {
                break;
            }
            missing.push(path.to_path_buf());
            current = path.parent();
        }
        for path in missing.into_iter().rev() {
            std::fs::create_dir(&path)
                .unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
            self.made.push(path);
        }
        // On cgroup v2 a controller reaches a cgroup only when every ancestor enables it for
        // its children, as the kubelet does down its tree: the intermediate levels pass
        // `+memory` on. (v1 hierarchies and a hybrid layout's controller-less unified one have
        // nothing to enable; the write then fails and is ignored.)
        let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
        ancestors.reverse();
        for ancestor in ancestors {
            let control = ancestor.join("cgroup.subtree_control");
            if control.exists() {
                let _ = std::fs::write(control, "+memory");
            }
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for path in self.made.iter().rev() {
            let _ = std::fs::remove_dir(path);
        }
    }
}

/// The hierarchies a kubelet would make its tree in: the unified and v1 memory ones of a hybrid
/// layout, or the one cgroup2 root of a pure v2 layout (where /sys/fs/cgroup itself has
/// `cgroup.procs`; on a hybrid layout it is a tmpfs without one).
fn hierarchies() -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|root| root.join("cgroup.procs").exists())
    .collect()
}

fn procs_files(relative: &str) -> Vec<PathBuf> {
    hierarchies()
        .iter()
        .map(|root| {
            root.join(relative.trim_start_matches('/'))
                .join("cgroup.procs")
        })
        .collect()
}

/// Tells a `spike` workload started with BEFORE_MS -1 to go on.
fn go_on(workload: &mut std::process::Child) {
    use std::io::Write as _;
    let mut stdin = workload
        .stdin
        .take()
        .expect("the workload's stdin is piped");
    stdin
        .write_all(b"go\n")
        .expect("tell the workload to go on");
}

/// Starts a fake Kubernetes API on loopback (in a thread of its own, for as long as the test
/// runs) that knows pod shop/web-1 with this UID and container, and writes a kubeconfig for it.
fn fake_api_kubeconfig(pod_uid: &str, container_id: &str, tag: &str) -> PathBuf {
    let pid = std::process::id();
    // The API server, on loopback, in a thread of its own for as long as the test runs.
    let api = common::fake_api::FakeApi::new(vec![common::fake_api::pod(
        "web-1",
        pod_uid,
        Some(container_id),
    )]);
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let _ = url_tx.send(api.start().await);
            std::future::pending::<()>().await;
        });
    });
    let url = url_rx.recv().expect("API server URL");
    let kubeconfig = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-{tag}-{pid}"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    )
    .expect("kubeconfig");

    kubeconfig
}

/// Runs a workload inside `relative` in every hierarchy and waits for it.
fn run_inside(relative: &str, program: &Path, args: &[&str]) {
    let status = common::spawn_in_cgroups(procs_files(relative), program, args)
        .wait()
        .expect("wait for workload");
    assert!(status.success());
}

#[test]
fn kubepods_processes_are_attributed_to_their_pod_and_container_and_others_to_the_host() {
    let Some(_guard) = privileged("kubepods_processes_are_attributed") else {
        return;
    };
    let pid = std::process::id();
    let pod_uid = format!("1b2c3d4e-5f60-4a7b-8c9d-{pid:012x}");
    let container_id = format!("{:064x}", u128::from(pid) * 0x9e37_79b9_7f4a_7c15);
    let container = format!("/kubepods/burstable/pod{pod_uid}/{container_id}");
    let host = format!("/headroom-host-{pid}");
    let mut tree = Tree { made: Vec::new() };
    for root in hierarchies() {
        tree.make(&root.join(container.trim_start_matches('/')));
        tree.make(&root.join(host.trim_start_matches('/')));
    }

    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("node-{pid}.json"));
    let mut capture = common::BackgroundCapture::spawn(
        headroom()
            // Ended by SIGINT once both workloads are done, however long that takes here.
            .args([
                "capture",
                "--all",
                "--metadata",
                "none",
                "--duration",
                "300s",
            ])
            .args(["--format", "json", "--output"])
            .arg(&report),
    );
    capture.wait_ready(120);
    let program = workload("threads_and_maps", true);
    // In the container: 5 threads, 2 x 32 MiB touched. On the host: 2 threads, 16 MiB.
    run_inside(&container, &program, &["5", "2", "32", "0"]);
    run_inside(&host, &program, &["2", "1", "16", "0"]);
    capture.interrupt();
    let output = capture.wait_with_output();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    let targets = report["targets"].as_array().expect("targets");
    let find = |path: &str| {
        targets
            .iter()
            .find(|t| t["cgroup"] == path)
            .unwrap_or_else(|| panic!("no target {path} in {targets:?}"))
    };

    let pod = find(&container);
    assert_eq!(pod["attribution"]["kind"], "kubernetes");
    assert_eq!(pod["attribution"]["names_known"], false);
    assert!(pod["attribution"]["reason"]
        .as_str()
        .expect("reason")
        .contains("no metadata provider"));
    assert_eq!(pod["kubernetes"]["pod_uid"], pod_uid.as_str());
    assert_eq!(pod["kubernetes"]["container_id"], container_id.as_str());
    assert_eq!(pod["kubernetes"]["qos"], "burstable");
    assert_eq!(pod["activity"]["threads_created"], 5);
    let resident = pod["resident"]["peak_bytes"].as_u64().expect("resident");
    // Before 6.2 each thread caches up to 64 pages of RSS changes before rss_stat sees them
    // (6 tasks here: 1.5 MiB); from 6.2 the counters are exact per event.
    assert!(
        (62 * MIB..80 * MIB).contains(&resident),
        "container resident peak {resident}"
    );
    let charged = pod["memory"]["peak_bytes"].as_u64().expect("charged");
    assert!(charged >= 64 * MIB, "container charge peak {charged}");

    let host_target = find(&host);
    assert_eq!(host_target["attribution"]["kind"], "host");
    assert!(host_target["kubernetes"].is_null());
    assert_eq!(host_target["activity"]["threads_created"], 2);
    let host_resident = host_target["resident"]["peak_bytes"]
        .as_u64()
        .expect("resident");
    assert!(
        (16 * MIB..32 * MIB).contains(&host_resident),
        "host resident peak {host_resident}"
    );

    // Every target carries an attribution; none is dropped silently.
    assert!(targets.iter().all(|t| t["attribution"]["kind"].is_string()));
}

#[test]
fn a_pod_is_captured_by_name_through_the_kubernetes_api() {
    let Some(_guard) = privileged("a_pod_is_captured_by_name_through_the_kubernetes_api") else {
        return;
    };
    let pid = std::process::id();
    let pod_uid = format!("2c3d4e5f-6071-4a7b-8c9d-{pid:012x}");
    let container_id = format!("{:064x}", u128::from(pid) * 0x2545_f491_4f6c_dd1d);
    let container = format!("/kubepods/burstable/pod{pod_uid}/{container_id}");
    let mut tree = Tree { made: Vec::new() };
    for root in hierarchies() {
        tree.make(&root.join(container.trim_start_matches('/')));
    }

    let kubeconfig = fake_api_kubeconfig(&pod_uid, &container_id, "pod");
    // The container's process: 48 MiB held until the capture is over (and a 4 MiB blip).
    let program = workload("spike", false);
    // BEFORE_MS -1: it holds its 48 MiB until told to go on, after the capture: loading the
    // probes takes seconds on an emulated machine.
    let mut workload_process = common::spawn_in_cgroups(
        procs_files(&container),
        &program,
        &["48", "4", "10", "-1", "0"],
    );

    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pod-{pid}.json"));
    let output = headroom()
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "capture",
            "--pod",
            "shop/web-1",
            "--container",
            "app",
            "--duration",
            "2s",
        ])
        .args(["--format", "json", "--output"])
        .arg(&report)
        .output()
        .expect("run headroom");
    go_on(&mut workload_process);
    assert!(workload_process.wait().expect("workload").success());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    let target = &report["targets"][0];
    assert_eq!(target["kind"], "pod");
    assert_eq!(target["cgroup"], container.as_str());
    let k = &target["kubernetes"];
    assert_eq!(k["namespace"], "shop");
    assert_eq!(k["pod"], "web-1");
    assert_eq!(k["container"], "app");
    assert_eq!(k["pod_uid"], pod_uid.as_str());
    assert_eq!(k["container_id"], container_id.as_str());
    assert_eq!(k["workload_kind"], "Deployment");
    assert_eq!(k["workload_name"], "web");
    assert_eq!(k["spec_limit_bytes"], 256 * MIB);
    assert_eq!(k["spec_request_bytes"], 128 * MIB);
    let resident = target["resident"]["peak_bytes"].as_u64().expect("resident");
    assert!(
        (48 * MIB..64 * MIB).contains(&resident),
        "pod resident peak {resident}"
    );
    let _ = std::fs::remove_file(&kubeconfig);

    // A pod the API does not know is named in the error.
    let output = headroom()
        .env(
            "KUBECONFIG",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-kubeconfig"),
        )
        .args(["capture", "--pod", "shop/web-1", "--duration", "1s"])
        .output()
        .expect("run headroom");
    assert_eq!(output.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Kubernetes configuration"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `capture --cgroup PATH` of a container's cgroup carries the attribution `capture --all`
/// gives it: pod UID, container id, QoS from the path, and the pod's names from the API.
#[test]
fn a_container_captured_by_cgroup_path_is_named_like_a_node_capture_names_it() {
    let Some(_guard) = privileged("a_container_captured_by_cgroup_path_is_named") else {
        return;
    };
    let pid = std::process::id();
    let pod_uid = format!("3d4e5f60-7182-4a7b-8c9d-{pid:012x}");
    let container_id = format!("{:064x}", u128::from(pid) * 0x3c6e_f372_fe94_f82b);
    let container = format!("/kubepods/burstable/pod{pod_uid}/{container_id}");
    let mut tree = Tree { made: Vec::new() };
    for root in hierarchies() {
        tree.make(&root.join(container.trim_start_matches('/')));
    }
    let kubeconfig = fake_api_kubeconfig(&pod_uid, &container_id, "cgroup");
    let program = workload("spike", false);
    let mut workload_process = common::spawn_in_cgroups(
        procs_files(&container),
        &program,
        &["32", "4", "10", "-1", "0"],
    );
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cgroup-{pid}.json"));
    let output = headroom()
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "capture",
            "--standalone",
            "--cgroup",
            &container,
            "--duration",
            "2s",
        ])
        .args(["--format", "json", "--output"])
        .arg(&report)
        .output()
        .expect("run headroom");
    go_on(&mut workload_process);
    assert!(workload_process.wait().expect("workload").success());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    let target = &report["targets"][0];
    assert_eq!(target["kind"], "cgroup");
    assert_eq!(target["attribution"]["kind"], "kubernetes", "{target}");
    assert_eq!(target["attribution"]["names_known"], true, "{target}");
    let k = &target["kubernetes"];
    assert_eq!(k["pod_uid"], pod_uid.as_str());
    assert_eq!(k["container_id"], container_id.as_str());
    assert_eq!(k["qos"], "burstable");
    assert_eq!(k["namespace"], "shop");
    assert_eq!(k["pod"], "web-1");
    assert_eq!(k["container"], "app");
    assert_eq!(k["workload_kind"], "Deployment");
    let _ = std::fs::remove_file(&kubeconfig);
}
