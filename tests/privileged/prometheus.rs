//! Cluster-wide recommendations against a real Prometheus server (Debian's `prometheus`,
//! started here on loopback) that scrapes two live agents on loopback.
//!
//! Needs root (the agents load probes). Without it: SKIPPED, except in CI or under
//! `cargo xtask test`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{free_port, headroom, privileged, workload, Agent};

const MIB: u64 = 1 << 20;

/// The Prometheus server this test started, stopped (SIGTERM, then SIGKILL) when it ends, pass
/// or fail.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn recommendations_come_from_a_real_prometheus_scraping_two_agents() {
    let Some(_guard) = privileged("recommendations_come_from_a_real_prometheus") else {
        return;
    };
    let mut agents = [Agent::builder().spawn(), Agent::builder().spawn()];
    for agent in &mut agents {
        agent.wait_ready(30);
    }
    let (agent_a, agent_b) = (agents[0].port(), agents[1].port());
    let prometheus_port = free_port();

    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: headroom\n    static_configs:\n      - targets: ['127.0.0.1:{agent_a}', '127.0.0.1:{agent_b}']\n"
        ),
    )
    .expect("prometheus config");
    let _prometheus = Started(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package, installed by cargo xtask setup)"),
    );
    common::wait_until("prometheus ready", 60, || {
        common::http_get(prometheus_port, "/-/ready").is_some_and(|(s, _)| s == 200)
    });

    // A container: 32 MiB base, a 96 MiB plateau of 1 s (the 200 ms agents see it), base again.
    let mut cgroup = common::TestCgroup::new("prometheus");
    let program = workload("spike", false);
    let status = cgroup
        .spawn(&program, &["32", "96", "1000", "3000", "3000"])
        .wait()
        .expect("workload");
    assert!(status.success());
    let kernel_peak = cgroup
        .memory_file("memory.max_usage_in_bytes")
        .or_else(|| cgroup.memory_file("memory.peak"))
        .expect("kernel high-water mark (v1 max_usage_in_bytes or v2 memory.peak)");
    // Two more scrapes after the workload, while the cgroup (and its series) still exists.
    thread::sleep(Duration::from_secs(3));

    let output = headroom()
        .args([
            "recommend",
            "--prometheus",
            &format!("http://127.0.0.1:{prometheus_port}"),
        ])
        .args(["--window", "5m", "--format", "json"])
        .output()
        .expect("run recommend");
    cgroup.remove();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let workloads = json["workloads"].as_array().expect("workloads");
    let ours = workloads
        .iter()
        .find(|w| w["container"] == cgroup.path())
        .unwrap_or_else(|| panic!("no workload for {} in {json}", cgroup.path()));
    let worst = ours["recommendation"]["worst_peak_bytes"]
        .as_u64()
        .expect("worst peak");
    let limit = ours["recommendation"]["limit_bytes"]
        .as_u64()
        .expect("limit");
    // The peak Prometheus holds (max across both agents) against the kernel's own mark.
    let tolerance = (kernel_peak / 20).max(4 * MIB);
    assert!(
        worst.abs_diff(kernel_peak) <= tolerance,
        "peak from Prometheus {worst} vs kernel high-water mark {kernel_peak}"
    );
    assert!(
        limit as f64 >= kernel_peak as f64 * 1.2,
        "limit {limit} vs {kernel_peak}"
    );
    let request = ours["recommendation"]["request_bytes"]
        .as_u64()
        .expect("request");
    assert!(request < limit, "request {request} limit {limit}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_prometheus_is_named() {
    let output = headroom()
        .args([
            "recommend",
            "--prometheus",
            "http://127.0.0.1:1",
            "--window",
            "1h",
        ])
        .output()
        .expect("run recommend");
    assert_eq!(output.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("cannot reach Prometheus at http://127.0.0.1:1"));
}

#[test]
fn the_recording_rules_pass_promtool() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/recording-rules.yaml");
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian prometheus package, installed by cargo xtask setup)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("SUCCESS: 6 rules found"));
}
