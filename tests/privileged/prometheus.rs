//! Cluster-wide recommendations against a real Prometheus server (Debian's `prometheus`,
//! started here on loopback) that scrapes two live agents on loopback.
//!
//! Needs root (the agents load probes). Without it: SKIPPED, except in CI or under
//! `cargo xtask test`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use std::{
    path::{Path, PathBuf},
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

/// A real Prometheus on a loopback port, scraping these agents every `scrape_interval`; its
/// data directory is removed when it stops.
struct Prometheus {
    port: u16,
    dir: PathBuf,
    server: Option<Started>,
}

impl Prometheus {
    fn start(agents: &[u16], scrape_interval: &str) -> Self {
        let port = free_port();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let targets = agents
            .iter()
            .map(|port| format!("'127.0.0.1:{port}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\nscrape_configs:\n  - job_name: headroom\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .expect("prometheus config");
        let server = Started(
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("prometheus (Debian package, installed by cargo xtask setup)"),
        );
        common::wait_until("prometheus ready", 60, || {
            common::http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
        Self {
            port,
            dir,
            server: Some(server),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The time of the last scrape of every target (`timestamp(up)`: a selector's sample
    /// time; on an expression such as `up == 1` it would be the query's time), the oldest of
    /// them; None before the first.
    fn last_scrape(&self) -> Option<f64> {
        let (status, body) = common::http_get(self.port, "/api/v1/query?query=timestamp(up)")?;
        if status != 200 {
            return None;
        }
        let json = &body[body.find('{')?..=body.rfind('}')?];
        let answer: serde_json::Value = serde_json::from_str(json).ok()?;
        answer["data"]["result"]
            .as_array()?
            .iter()
            .filter_map(|series| series["value"][1].as_str()?.parse::<f64>().ok())
            .reduce(f64::min)
    }

    /// Waits for the next scrape after the last one, and returns its time.
    fn next_scrape(&self, seconds: u64) -> f64 {
        let before = self.last_scrape();
        let mut now = None;
        common::wait_until("a scrape", seconds, || {
            now = self.last_scrape().filter(|t| Some(*t) != before);
            now.is_some()
        });
        now.unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // The server stops first, then its data goes.
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
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
    let prometheus = Prometheus::start(&[agent_a, agent_b], "1s");

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
        .args(["recommend", "--prometheus", &prometheus.url()])
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
}

/// Sets a test cgroup's memory limit (v1 memory.limit_in_bytes or v2 memory.max, whichever
/// this host has).
fn set_memory_limit(cgroup: &common::TestCgroup, bytes: u64) {
    let relative = cgroup.path().trim_start_matches('/').to_owned();
    let set = [
        Path::new("/sys/fs/cgroup/memory")
            .join(&relative)
            .join("memory.limit_in_bytes"),
        Path::new("/sys/fs/cgroup")
            .join(&relative)
            .join("memory.max"),
    ]
    .iter()
    .any(|file| file.exists() && std::fs::write(file, bytes.to_string()).is_ok());
    assert!(set, "could not set the memory limit of {}", cgroup.path());
}

/// `headroom recommend --prometheus URL --window WINDOW --format json`: the workload of this
/// cgroup (its container label is the cgroup's path without pod metadata).
fn recommended(prometheus: &Prometheus, window: &str, container: &str) -> serde_json::Value {
    let output = headroom()
        .args(["recommend", "--prometheus", &prometheus.url()])
        .args(["--window", window, "--format", "json"])
        .output()
        .expect("run recommend");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    json["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .find(|w| w["container"] == container)
        .cloned()
        .unwrap_or_else(|| panic!("no workload for {container} in {json}"))
}

/// The confidence reasons of a workload's recommendation, one string.
fn confidence_reasons(workload: &serde_json::Value) -> String {
    workload["recommendation"]["confidence_reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The number before `marker` in `text` (e.g. the 42 of "observed 42 s").
fn number_before(text: &str, marker: &str) -> Option<f64> {
    let end = text.find(marker)?;
    let digits: String = text[..end]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// A container OOM-killed under a 64 MiB limit and its cgroup removed between two scrapes
/// (5 s apart): Prometheus never sees it alive, yet the agent keeps its OOM counter and the
/// limit at the kill for a while, so the next scrape carries them. The cgroup then comes back
/// at the same path (a restart) under a 512 MiB limit: the floor is built on the limit the
/// kill hit, not today's.
#[test]
fn a_container_killed_and_removed_between_two_scrapes_counts_with_the_limit_at_the_kill() {
    let Some(_guard) = privileged("a_container_killed_and_removed_between_two_scrapes") else {
        return;
    };
    let agent = Agent::start();
    let prometheus = Prometheus::start(&[agent.port()], "5s");
    prometheus.next_scrape(30);
    let program = workload("spike", false);

    // Right after a scrape: 16 MiB, then 200 MiB more after 500 ms (the agent, every 200 ms,
    // has seen the container by then) under 64 MiB: killed, and the cgroup removed at once.
    let scraped = prometheus.next_scrape(30);
    eprintln!("scrape at {scraped}");
    let mut cgroup = common::TestCgroup::new("oom");
    set_memory_limit(&cgroup, 64 * MIB);
    let status = cgroup
        .spawn(&program, &["16", "200", "60", "500", "200"])
        .wait()
        .expect("workload");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the workload must be OOM-killed: {status}"
    );
    let path = cgroup.path();
    cgroup.remove();
    assert_eq!(
        prometheus.last_scrape(),
        Some(scraped),
        "the container lived and went between two scrapes 5 s apart"
    );

    // The next scrape carries its kept series (no charge: it was never scraped alive).
    prometheus.next_scrape(30);
    let label = format!("container=\"{path}\"");
    let metrics = agent.metrics();
    assert_eq!(
        common::series(
            &metrics,
            "headroom_container_memory_limit_at_oom_bytes",
            &label
        ),
        vec![(64 * MIB) as f64],
        "the agent keeps the limit at the kill after the cgroup went"
    );
    assert!(
        common::series(&metrics, "headroom_container_memory_charged_bytes", &label).is_empty(),
        "the charge now goes with the cgroup"
    );
    let gone = recommended(&prometheus, "5m", &path);
    let floor_gone = assert_killed_under_64_mib(&gone);

    // The same cgroup again, a live process in it, under 512 MiB.
    let cgroup = common::TestCgroup::new("oom");
    assert_eq!(cgroup.path(), path);
    set_memory_limit(&cgroup, 512 * MIB);
    let mut again = common::ChildGuard(cgroup.spawn(&program, &["16", "1", "1", "-1", "0"]));
    for _ in 0..3 {
        prometheus.next_scrape(30);
    }
    let back = recommended(&prometheus, "5m", &path);
    {
        use std::io::Write as _;
        let stdin = again.0.stdin.as_mut().expect("stdin");
        let _ = writeln!(stdin, "go");
    }
    let _ = again.0.wait();
    // Today's 512 MiB would have made the floor 614 MiB.
    let floor_back = assert_killed_under_64_mib(&back);
    eprintln!(
        "gone: kills {}, floor {} MiB; back under 512 MiB: kills {}, floor {} MiB, limit {} MiB",
        gone["oom_kills"],
        floor_gone / MIB,
        back["oom_kills"],
        floor_back / MIB,
        back["recommendation"]["limit_bytes"].as_u64().unwrap_or(0) / MIB,
    );
}

/// At least one OOM kill counted, confidence Low, and the floor max(64 MiB + 100 MiB,
/// 64 MiB × 1.2) = 164 MiB, built on the 64 MiB limit the kill hit. Returns the floor.
fn assert_killed_under_64_mib(ours: &serde_json::Value) -> u64 {
    let reasons = confidence_reasons(ours);
    let kills = number_before(&reasons, " OOM kill").unwrap_or(0.0);
    assert!(kills >= 1.0, "no OOM kill counted: {reasons}");
    assert_eq!(ours["oom_kills"].as_u64(), Some(kills as u64));
    assert_eq!(ours["recommendation"]["confidence"], "low", "{reasons}");
    let floor = ours["recommendation"]["oom_floor_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no OOM floor: {ours}"));
    assert!(
        floor >= 64 * MIB,
        "floor {floor} below the limit at the kill"
    );
    assert_eq!(floor, 164 * MIB, "floor {floor}");
    let limit = ours["recommendation"]["limit_bytes"]
        .as_u64()
        .expect("limit");
    assert!(limit >= floor, "limit {limit} floor {floor}");
    floor
}

/// Some 40 s of data, scraped every second, asked about with `--window 1h`: the confidence is
/// that of 40 s (Medium: under a minute), not of an hour, and the reasons name the span
/// Prometheus holds and the hour asked for.
#[test]
fn confidence_comes_from_the_data_prometheus_holds_not_the_window_asked() {
    let Some(_guard) = privileged("confidence_comes_from_the_data_prometheus_holds") else {
        return;
    };
    let agent = Agent::start();
    let cgroup = common::TestCgroup::new("span");
    let program = workload("spike", false);
    let mut running = common::ChildGuard(cgroup.spawn(&program, &["16", "1", "1", "-1", "0"]));
    let prometheus = Prometheus::start(&[agent.port()], "1s");
    let started = Instant::now();
    prometheus.next_scrape(30);
    thread::sleep(Duration::from_secs(40));
    let ours = recommended(&prometheus, "1h", &cgroup.path());
    let held = started.elapsed().as_secs_f64();
    {
        use std::io::Write as _;
        let stdin = running.0.stdin.as_mut().expect("stdin");
        let _ = writeln!(stdin, "go");
    }
    let _ = running.0.wait();

    let reasons = confidence_reasons(&ours);
    assert_eq!(ours["recommendation"]["confidence"], "medium", "{reasons}");
    let observed = number_before(&reasons, " s (").expect("observed N s");
    assert!(
        (30.0..=held).contains(&observed),
        "observed {observed} s; Prometheus held at most {held:.0} s: {reasons}"
    );
    assert!(
        reasons.contains(&format!(
            "the data covers {observed:.0} s of the 60 min asked for"
        )),
        "{reasons}"
    );
    let buckets = number_before(&reasons, " buckets").expect("points");
    assert!(buckets >= 20.0, "{reasons}");
    assert_eq!(
        ours["observed_seconds"].as_f64().map(f64::round),
        Some(observed)
    );
    eprintln!(
        "observed {observed} s, {buckets} points, confidence {}",
        ours["recommendation"]["confidence"]
    );
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
