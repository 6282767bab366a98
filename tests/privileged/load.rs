//! The agent under load, inside the memory limit headroom recommends for it.
//!
//! 1. headroom measures its own agent: `headroom capture -- headroom agent` while 500
//!    kubepods-style containers exist, a page-fault storm runs and `/metrics` and
//!    `/api/v1/report` are hammered on loopback. The report's recommended limit is the limit.
//! 2. A fresh agent runs in a cgroup with exactly that limit, through the same storm, the
//!    same 500 containers and the same HTTP load: it must not be OOM-killed, every request
//!    must succeed, and latency percentiles are printed.
//!
//! Needs root. Without it: SKIPPED, except in CI or under `cargo xtask test`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{privileged, Agent, ChildGuard, TestCgroup};

const MIB: u64 = 1 << 20;
const CONTAINERS: usize = 500;
const LOAD_SECONDS: u64 = 20;

/// 500 containers in a kubepods-like tree, each holding one sleeping process.
struct Containers {
    cgroups: Vec<TestCgroup>,
    holders: Vec<ChildGuard>,
}

impl Containers {
    fn create(count: usize) -> Self {
        let sleep = PathBuf::from("/bin/sleep");
        let mut containers = Self {
            cgroups: Vec::new(),
            holders: Vec::new(),
        };
        for index in 0..count {
            let cgroup = TestCgroup::new(&format!("load-{index}"));
            containers
                .holders
                .push(ChildGuard(cgroup.spawn(&sleep, &["600"])));
            containers.cgroups.push(cgroup);
        }
        containers
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        // Holders first: a cgroup can only go once it is empty.
        self.holders.clear();
        for cgroup in &mut self.cgroups {
            cgroup.remove();
        }
    }
}

/// Requests against /metrics and /api/v1/report from `threads` threads until `stop`.
fn http_load(
    port: u16,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<(bool, Duration)>>> {
    (0..threads)
        .map(|index| {
            let stop = stop.clone();
            thread::spawn(move || {
                let path = if index % 2 == 0 {
                    "/metrics"
                } else {
                    "/api/v1/report"
                };
                let mut results = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = common::http_get(port, path)
                        .is_some_and(|(status, body)| status == 200 && body.len() > 100);
                    results.push((ok, started.elapsed()));
                }
                results
            })
        })
        .collect()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// A page-fault storm for the duration of the load.
fn storm() -> Child {
    Command::new("stress-ng")
        .args(["--vm", "1", "--vm-bytes", "256M", "--timeout"])
        .arg(format!("{LOAD_SECONDS}s"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stress-ng (cargo xtask setup installs it)")
}

/// Runs the storm and the HTTP load against the agent on `port`; returns (requests, errors,
/// p50, p99, max).
fn load(port: u16) -> (usize, usize, Duration, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut storm = ChildGuard(storm());
    let workers = http_load(port, 4, stop.clone());
    thread::sleep(Duration::from_secs(LOAD_SECONDS));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(bool, Duration)> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("load thread"))
        .collect();
    let _ = storm.0.wait();
    let errors = results.iter().filter(|(ok, _)| !ok).count();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, latency)| *latency).collect();
    latencies.sort_unstable();
    (
        results.len(),
        errors,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    )
}

fn wait_ready(port: u16, containers: usize) {
    common::wait_until("the agent to track every container", 60, || {
        common::http_get(port, "/metrics").is_some_and(|(_, body)| {
            body.lines()
                .filter(|l| {
                    l.starts_with("headroom_container_memory_resident_bytes{")
                        && l.contains("headroom-test-")
                        && l.contains("-load-")
                })
                .count()
                >= containers
        })
    });
}

#[test]
fn the_agent_survives_load_within_the_limit_headroom_recommends_for_it() {
    let Some(_guard) =
        privileged("the_agent_survives_load_within_the_limit_headroom_recommends_for_it")
    else {
        return;
    };
    let containers = Containers::create(CONTAINERS);

    // 1. headroom measures its own agent under the load: `headroom capture ... -- headroom
    //    agent ...` (the agent at its default interval).
    let report = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-self-{}.json", std::process::id()));
    let mut measured = Agent::builder()
        .interval(None)
        .wrapped_in([
            OsStr::new(env!("CARGO_BIN_EXE_headroom")),
            OsStr::new("capture"),
            OsStr::new("--no-stacks"),
            OsStr::new("--format"),
            OsStr::new("json"),
            OsStr::new("--output"),
            report.as_os_str(),
            OsStr::new("--duration"),
            OsStr::new(&format!("{}s", LOAD_SECONDS + 25)),
            OsStr::new("--"),
        ])
        .spawn();
    wait_ready(measured.port(), CONTAINERS);
    let (requests, errors, p50, p99, max) = load(measured.port());
    eprintln!("self-measurement load: {requests} requests, {errors} errors, p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(measured.wait().success(), "capture ends");
    let text = std::fs::read_to_string(&report).expect("self-measurement report");
    let _ = std::fs::remove_file(&report);
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let target = &value["targets"][0];
    let limit = target["recommendation"]["limit_bytes"]
        .as_u64()
        .expect("a recommended limit");
    let charged_peak = target["memory"]["peak_bytes"]
        .as_u64()
        .expect("charge peak");
    let resident_peak = target["resident"]["peak_bytes"]
        .as_u64()
        .expect("resident peak");
    eprintln!(
        "agent with {CONTAINERS} containers under load: charge peak {:.1} MiB (BPF maps included), resident peak {:.1} MiB, recommended limit {:.1} MiB",
        charged_peak as f64 / MIB as f64,
        resident_peak as f64 / MIB as f64,
        limit as f64 / MIB as f64
    );
    // Sizing covers the working set (the charge less reclaimable file cache), not the cache.
    let working_set_peak = target["memory"]["working_set_peak_bytes"]
        .as_u64()
        .expect("working-set peak");
    assert!(
        limit >= working_set_peak && limit < 256 * MIB,
        "limit {limit}, working-set peak {working_set_peak}"
    );

    // 2. A fresh agent inside exactly that limit, same load.
    let agent_cgroup = TestCgroup::new("agent-limited");
    let relative = agent_cgroup.path().trim_start_matches('/').to_owned();
    let limited = [
        Path::new("/sys/fs/cgroup/memory")
            .join(&relative)
            .join("memory.limit_in_bytes"),
        Path::new("/sys/fs/cgroup")
            .join(&relative)
            .join("memory.max"),
    ]
    .iter()
    .any(|file| file.exists() && std::fs::write(file, limit.to_string()).is_ok());
    assert!(limited, "could not set the agent's memory limit");
    let mut agent = Agent::builder()
        .interval(None)
        .in_cgroup(&agent_cgroup)
        .spawn();
    wait_ready(agent.port(), CONTAINERS);
    let (requests, errors, p50, p99, max) = load(agent.port());
    eprintln!("within the limit: {requests} requests, {errors} errors, p50 {p50:?}, p99 {p99:?}, max {max:?}");
    // The kernel's own count of OOM kills in the agent's cgroup (v1 oom_control, v2 events).
    let oom_kills = ["memory.oom_control", "memory.events"]
        .iter()
        .find_map(|file| {
            let dir = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
                .iter()
                .map(|root| Path::new(root).join(agent_cgroup.path().trim_start_matches('/')))
                .find(|dir| dir.join(file).exists())?;
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    assert_eq!(
        oom_kills, 0,
        "the agent was OOM-killed within its recommended limit"
    );
    assert!(agent.is_running(), "the agent died under load");
    assert_eq!(errors, 0, "{errors} of {requests} requests failed");
    assert!(
        requests > 100,
        "only {requests} requests in {LOAD_SECONDS} s"
    );
    // A debug build of the agent serving 500 containers' reports: latency is printed, and
    // bounded only loosely here (the release agent is several times faster).
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
    assert!(agent.stop().success());
    drop(containers);
    drop(agent_cgroup);
}
