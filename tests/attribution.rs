//! Node-wide attribution with the live probes: a kubepods tree with kubelet's cgroupfs naming,
//! in both hierarchies of this hybrid host, with processes inside, and a host cgroup beside it.
//!
//! Needs root. Without it: SKIPPED, except in CI or under `cargo xtask test`, where it fails.

mod common;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{headroom, loaded_programs_named, privileged, workload};

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
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for path in self.made.iter().rev() {
            let _ = std::fs::remove_dir(path);
        }
    }
}

fn hierarchies() -> Vec<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory"]
        .iter()
        .map(PathBuf::from)
        .filter(|root| root.join("cgroup.procs").exists())
        .collect()
}

/// Runs a workload inside `relative` in every hierarchy and waits for it.
fn run_inside(relative: &str, program: &Path, args: &[&str]) {
    let procs: Vec<PathBuf> = hierarchies()
        .iter()
        .map(|root| {
            root.join(relative.trim_start_matches('/'))
                .join("cgroup.procs")
        })
        .collect();
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::null());
    // SAFETY: between fork and exec the child only writes its pid into cgroup.procs files.
    unsafe {
        command.pre_exec(move || {
            for file in &procs {
                std::fs::write(file, "0")?;
            }
            Ok(())
        });
    }
    let status = command.status().expect("run workload");
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
    let before = loaded_programs_named("rss_stat");
    let capture = headroom()
        .args(["capture", "--all", "--metadata", "none", "--duration", "4s"])
        .args(["--format", "json", "--output"])
        .arg(&report)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn headroom");
    let deadline = Instant::now() + Duration::from_secs(20);
    while loaded_programs_named("rss_stat") <= before {
        assert!(Instant::now() < deadline, "probes never attached");
        thread::sleep(Duration::from_millis(10));
    }
    let program = workload("threads_and_maps", true);
    // In the container: 5 threads, 2 x 32 MiB touched. On the host: 2 threads, 16 MiB.
    run_inside(&container, &program, &["5", "2", "32", "0"]);
    run_inside(&host, &program, &["2", "1", "16", "0"]);
    let output = capture.wait_with_output().expect("wait for headroom");
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
    assert!(
        (64 * MIB..80 * MIB).contains(&resident),
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
