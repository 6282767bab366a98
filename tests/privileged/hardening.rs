//! A tenant cannot kill or blind the agent (issue #16). Each test runs the agent inside a
//! cgroup at the DaemonSet's memory limit (read from deploy/headroom.yaml) and checks it
//! against the kernel's own figures:
//!
//! - a process with 60,000 mappings and two threads in a watched cgroup: the agent stays
//!   alive and under its limit, counts what it skipped, and another container's figures stay
//!   fresh (its thread count is the kernel's cgroup.threads);
//! - 200 stalled HTTP connections and two slow readers of /api/v1/report: the agent stays
//!   alive, /healthz answers in under a second, and the stalled sockets are closed after the
//!   header timeout;
//! - more connections than the cap: the extra ones are closed at once, and the agent serves
//!   again once the stalled ones time out;
//! - under the DaemonSet's seccomp profile (loaded with libseccomp by
//!   `apply_seccomp.py`): the agent works; PTRACE_ATTACH is refused even with SYS_PTRACE;
//! - listening on every address: /api/v1/report answers only loopback connections;
//! - with only the DaemonSet's capabilities (no SYS_PTRACE): every figure of another
//!   container's root process is still exported.
//!
//! Needs root. Without it: SKIPPED, except in CI or under `cargo xtask test`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use common::{privileged, workload, Agent, ChildGuard, TestCgroup};

const MIB: u64 = 1 << 20;
/// The agent's header timeout (profiler/src/agent/http.rs `HEADER_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The memory limit of the DaemonSet's container in deploy/headroom.yaml.
fn daemonset_memory_limit() -> u64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/headroom.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/headroom.yaml");
    let limit = serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|document| {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(document).ok()?;
            (value["kind"] == "DaemonSet").then_some(value)
        })
        .find_map(|daemonset| {
            daemonset["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("a memory limit on the DaemonSet's container");
    profiler::attribution::kubernetes::parse_quantity(&limit).expect("a Kubernetes quantity")
}

/// A cgroup for the agent with the DaemonSet's memory limit (v1 memory.limit_in_bytes or v2
/// memory.max, whichever this host has).
fn limited_cgroup(tag: &str) -> (TestCgroup, u64) {
    let cgroup = TestCgroup::new(tag);
    let limit = daemonset_memory_limit();
    let relative = cgroup.path().trim_start_matches('/').to_owned();
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
    (cgroup, limit)
}

/// The kernel's count of OOM kills in a test cgroup (v1 oom_control, v2 memory.events).
fn oom_kills(cgroup: &TestCgroup) -> u64 {
    let relative = cgroup.path().trim_start_matches('/').to_owned();
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .flat_map(|root| {
            ["memory.oom_control", "memory.events"]
                .map(|file| Path::new(root).join(&relative).join(file))
        })
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .find_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// The unified hierarchy's directory of a test cgroup.
fn unified_dir(cgroup: &TestCgroup) -> PathBuf {
    let relative = cgroup.path().trim_start_matches('/').to_owned();
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| Path::new(root).join(&relative))
        .find(|dir| dir.join("cgroup.threads").exists())
        .expect("the cgroup in the unified hierarchy")
}

/// Starts `many_mappings` in `cgroup` and waits for its "ready".
fn spawn_mappings(cgroup: &TestCgroup, mappings: u32, threads: u32) -> ChildGuard {
    let program = workload("many_mappings", false);
    let mut child: Child = cgroup.spawn(
        &program,
        &[&mappings.to_string(), &threads.to_string(), "120"],
    );
    let mut ready = [0u8; 6];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut ready)
        .expect("the workload's ready line");
    assert_eq!(&ready, b"ready\n");
    ChildGuard(child)
}

fn counter(metrics: &str, metric: &str, label: &str) -> f64 {
    common::series(metrics, metric, label).iter().sum()
}

#[test]
fn a_process_with_60000_mappings_is_skipped_and_counted_and_other_containers_stay_fresh() {
    let Some(_guard) = privileged("a_process_with_60000_mappings_is_skipped") else {
        return;
    };
    let (agent_cgroup, limit) = limited_cgroup("hardening-agent");
    let hostile_cgroup = TestCgroup::new("hardening-mappings");
    let quiet_cgroup = TestCgroup::new("hardening-quiet");
    let hostile = spawn_mappings(&hostile_cgroup, 60_000, 2);
    let quiet = spawn_mappings(&quiet_cgroup, 16, 3);
    let maps_lines = std::fs::read_to_string(format!("/proc/{}/maps", hostile.0.id()))
        .expect("the hostile process's maps")
        .lines()
        .count();
    assert!(maps_lines >= 60_000, "only {maps_lines} mappings");
    let mut agent = Agent::builder().in_cgroup(&agent_cgroup).start();
    let hostile_label = format!("container=\"{}\"", hostile_cgroup.path());
    let quiet_label = format!("container=\"{}\"", quiet_cgroup.path());
    // Slow reads run every 10 ticks (2 s at 200 ms): wait for two rounds of them.
    common::wait_until(
        "a file_cap skip counted for the hostile process",
        30,
        || {
            counter(
                &agent.metrics(),
                "headroom_agent_reads_skipped_total",
                "reason=\"file_cap\"",
            ) >= 2.0
        },
    );
    let metrics = agent.metrics();
    // The hostile container's thread stacks are a gap with its reason, not a zero.
    assert!(
        metrics.lines().any(
            |line| line.starts_with("headroom_container_figure_unavailable{")
                && line.contains(&hostile_label)
                && line.contains("figure=\"thread_stack_bytes\"")
                && line.contains("reason=\"file_cap\"")
        ),
        "{metrics}"
    );
    assert!(
        common::series(
            &metrics,
            "headroom_container_thread_stack_reserved_bytes",
            &hostile_label
        )
        .is_empty(),
        "{metrics}"
    );
    // What could be read still is: its thread count is the kernel's.
    assert_eq!(
        common::series(&metrics, "headroom_container_threads", &hostile_label),
        vec![2.0]
    );
    // The other container's figures are fresh: its thread count is cgroup.threads now, and its
    // two pthread stacks (8 MiB each by default) are measured.
    let quiet_threads = std::fs::read_to_string(unified_dir(&quiet_cgroup).join("cgroup.threads"))
        .expect("cgroup.threads")
        .lines()
        .count() as f64;
    assert_eq!(quiet_threads, 3.0);
    assert_eq!(
        common::series(&metrics, "headroom_container_threads", &quiet_label),
        vec![quiet_threads]
    );
    let stacks = common::series(
        &metrics,
        "headroom_container_thread_stack_reserved_bytes",
        &quiet_label,
    );
    assert!(
        stacks.first().is_some_and(|&s| s >= (16 * MIB) as f64),
        "quiet container's thread stacks: {stacks:?}"
    );
    assert!(agent.is_running(), "the agent died");
    assert_eq!(oom_kills(&agent_cgroup), 0, "the agent was OOM-killed");
    let peak = common::status_bytes(agent.pid(), "VmHWM") / 1024;
    eprintln!(
        "agent beside a 60,000-mapping process: peak RSS {:.1} MiB (VmHWM), limit {:.0} MiB",
        peak as f64 / 1024.0,
        limit as f64 / MIB as f64
    );
    assert!(peak * 1024 < limit, "peak RSS {peak} KiB over the limit");
    assert!(agent.stop().success());
    drop(hostile);
    drop(quiet);
}

/// What SECURITY.md says works without SYS_PTRACE: with only the DaemonSet's capabilities,
/// every figure of another container's root process (whose capabilities are not a subset of
/// the agent's) is exported: threads, reserved address space (VmSize of /proc/PID/status, the
/// kernel's truth), and thread stacks (the kernel lets CAP_PERFMON read /proc/PID/maps and
/// smaps; only /proc/PID/root, which symbolization reads, needs SYS_PTRACE). No figure of it
/// is marked unavailable.
#[test]
fn without_sys_ptrace_every_container_figure_is_still_exported() {
    let Some(_guard) = privileged("without_sys_ptrace_every_container_figure") else {
        return;
    };
    let capabilities = common::deployed_capabilities();
    assert!(
        !capabilities.iter().any(|c| c == "sys_ptrace"),
        "the DaemonSet grants SYS_PTRACE: {capabilities:?}"
    );
    let (agent_cgroup, _) = limited_cgroup("hardening-noptrace");
    let workload_cgroup = TestCgroup::new("hardening-noptrace-workload");
    let child = spawn_mappings(&workload_cgroup, 16, 3);
    let mut agent = Agent::builder()
        .in_cgroup(&agent_cgroup)
        .capabilities(&capabilities)
        .start();
    let label = format!("container=\"{}\"", workload_cgroup.path());
    let vm_size = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmSize")
        * 1024;
    common::wait_until("the workload's thread stacks", 30, || {
        !common::series(
            &agent.metrics(),
            "headroom_container_thread_stack_reserved_bytes",
            &label,
        )
        .is_empty()
    });
    let metrics = agent.metrics();
    let stacks = common::series(
        &metrics,
        "headroom_container_thread_stack_reserved_bytes",
        &label,
    );
    assert!(stacks[0] >= (16 * MIB) as f64, "{stacks:?}");
    assert_eq!(
        common::series(&metrics, "headroom_container_threads", &label),
        vec![3.0]
    );
    assert_eq!(
        common::series(&metrics, "headroom_container_memory_reserved_bytes", &label),
        vec![vm_size as f64]
    );
    assert!(
        !metrics.lines().any(
            |line| line.starts_with("headroom_container_figure_unavailable{")
                && line.contains(&label)
        ),
        "{metrics}"
    );
    assert!(agent.stop().success());
    drop(child);
}

/// `python3 tests/privileged/apply_seccomp.py deploy/seccomp/headroom.json`: a prefix that
/// runs what follows under the DaemonSet's seccomp profile, loaded with libseccomp as a
/// container runtime loads a Localhost profile.
fn under_the_seccomp_profile() -> Vec<String> {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    vec![
        "python3".to_owned(),
        repository
            .join("tests/privileged/apply_seccomp.py")
            .display()
            .to_string(),
        repository
            .join("deploy/seccomp/headroom.json")
            .display()
            .to_string(),
    ]
}

/// PTRACE_ATTACH (then detach) on `pid` from a process started with `prefix`: "ok" or the
/// errno.
fn ptrace_attach(prefix: &[String], pid: u32) -> String {
    let script = "import ctypes,sys\nlibc=ctypes.CDLL(None,use_errno=True)\npid=int(sys.argv[1])\nr=libc.ptrace(16,pid,0,0)\nprint('ok' if r==0 else 'errno %d' % ctypes.get_errno())\nif r==0: libc.ptrace(17,pid,0,0)\n";
    let (program, rest) = prefix.split_first().expect("a prefix");
    let output = std::process::Command::new(program)
        .args(rest)
        .args(["python3", "-c", script, &pid.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The agent under the DaemonSet's seccomp profile with only its capabilities: ready, and its
/// metrics and report answer. Under the same profile, even with SYS_PTRACE, PTRACE_ATTACH is
/// refused (EPERM), where without the profile it succeeds.
#[test]
fn under_the_seccomp_profile_the_agent_works_and_ptrace_is_refused() {
    let Some(_guard) = privileged("under_the_seccomp_profile") else {
        return;
    };
    let mut target = ChildGuard(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep"),
    );
    let profile = under_the_seccomp_profile();
    let mut with_ptrace = vec![
        "setpriv".to_owned(),
        "--bounding-set".to_owned(),
        "-all,+bpf,+perfmon,+sys_ptrace".to_owned(),
        "--".to_owned(),
    ];
    with_ptrace.extend(profile.iter().cloned());
    assert_eq!(ptrace_attach(&with_ptrace, target.0.id()), "errno 1");
    assert_eq!(
        ptrace_attach(&["env".to_owned()], target.0.id()),
        "ok",
        "without the profile root may attach: the check above would prove nothing"
    );
    let _ = target.0.kill();
    let (agent_cgroup, _) = limited_cgroup("hardening-seccomp");
    let mut agent = Agent::builder()
        .in_cgroup(&agent_cgroup)
        .capabilities(&common::deployed_capabilities())
        .wrapped_in(&profile)
        .start();
    let seccomp = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:").map(|v| v.trim().to_owned()));
    assert_eq!(
        seccomp.as_deref(),
        Some("2"),
        "the agent runs under a filter"
    );
    let metrics = agent.metrics();
    assert!(
        metrics.contains("headroom_container_memory_resident_bytes{"),
        "{metrics}"
    );
    assert_eq!(agent.get("/api/v1/report").map(|(s, _)| s), Some(200));
    assert!(agent.stop().success());
}

/// A GET to `ip:port` that reads the status line only.
fn status_via(ip: std::net::IpAddr, port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect((ip, port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

/// The host's first non-loopback IPv4 address (what a pod IP is to Prometheus), if any.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    // A UDP "connect" picks the source address of the default route without sending.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Listening on every address as in the DaemonSet: /metrics answers on the host's own
/// address, /api/v1/report only on loopback (403 elsewhere), unless --expose-api.
#[test]
fn the_report_answers_only_loopback_connections_unless_exposed() {
    let Some(_guard) = privileged("the_report_answers_only_loopback_connections") else {
        return;
    };
    let Some(outside) = non_loopback_address() else {
        panic!("this host has no non-loopback IPv4 address to test from");
    };
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let agent = Agent::builder().address("0.0.0.0").start();
    assert_eq!(status_via(outside, agent.port(), "/metrics"), 200);
    assert_eq!(status_via(outside, agent.port(), "/healthz"), 200);
    assert_eq!(status_via(outside, agent.port(), "/api/v1/report"), 403);
    assert_eq!(status_via(loopback, agent.port(), "/api/v1/report"), 200);
    drop(agent);
    let exposed = Agent::builder()
        .address("0.0.0.0")
        .args(["--expose-api"])
        .start();
    assert_eq!(status_via(outside, exposed.port(), "/api/v1/report"), 200);
}

/// Opens a connection that sends half a request head and then nothing.
fn stalled(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
        .expect("half a request");
    stream
}

/// Whether the agent closed this connection (EOF or reset) within `wait`.
fn closed_within(mut stream: &TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine: keep reading to the end.
            Ok(_) => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// The slowest of `count` /healthz round trips.
fn slowest_healthz(agent: &Agent, count: usize) -> Duration {
    (0..count)
        .map(|_| {
            let started = Instant::now();
            let answer = agent.get("/healthz");
            let took = started.elapsed();
            assert_eq!(answer.map(|(s, _)| s), Some(200), "/healthz did not answer");
            took
        })
        .max()
        .unwrap_or_default()
}

#[test]
fn stalled_connections_and_slow_readers_neither_kill_nor_block_the_agent() {
    let Some(_guard) = privileged("stalled_connections_and_slow_readers") else {
        return;
    };
    let (agent_cgroup, _) = limited_cgroup("hardening-http");
    let mut agent = Agent::builder().in_cgroup(&agent_cgroup).start();
    let port = agent.port();
    let opened = Instant::now();
    let stalled: Vec<TcpStream> = (0..200).map(|_| stalled(port)).collect();
    // Two readers that ask for the whole report and then read it one byte a time.
    let slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .write_all(b"GET /api/v1/report HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .expect("request");
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).expect("the report starts");
            stream
        })
        .collect();
    let slowest = slowest_healthz(&agent, 20);
    eprintln!(
        "/healthz under 200 stalled connections and 2 slow readers: slowest of 20 {slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );
    assert!(agent.is_running(), "the agent died");
    // After the header timeout every stalled socket is closed by the agent.
    let wait = (HEADER_TIMEOUT + Duration::from_secs(3)).saturating_sub(opened.elapsed());
    std::thread::sleep(wait);
    let still_open = stalled
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(200)))
        .count();
    assert_eq!(still_open, 0, "{still_open} stalled connections still open");
    let metrics = agent.metrics();
    assert!(
        counter(
            &metrics,
            "headroom_agent_http_connections_closed_total",
            "reason=\"timeout\""
        ) >= 200.0,
        "{metrics}"
    );
    assert_eq!(oom_kills(&agent_cgroup), 0, "the agent was OOM-killed");
    drop(slow);
    assert!(agent.stop().success());
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let Some(_guard) = privileged("connections_past_the_cap_are_closed_at_once") else {
        return;
    };
    let (agent_cgroup, _) = limited_cgroup("hardening-cap");
    let mut agent = Agent::builder()
        .in_cgroup(&agent_cgroup)
        .args(["--max-connections", "64"])
        .start();
    let port = agent.port();
    let held: Vec<TcpStream> = (0..64).map(|_| stalled(port)).collect();
    // Let the agent accept all 64 before the extra ones arrive.
    std::thread::sleep(Duration::from_millis(300));
    let extra: Vec<TcpStream> = (0..16).map(|_| stalled(port)).collect();
    let refused = extra
        .iter()
        .filter(|s| closed_within(s, Duration::from_secs(1)))
        .count();
    assert_eq!(refused, 16, "connections past the cap stayed open");
    let metrics_after_timeout = {
        let closed = held
            .iter()
            .filter(|s| closed_within(s, HEADER_TIMEOUT + Duration::from_secs(3)))
            .count();
        assert_eq!(closed, 64, "held connections outlived the header timeout");
        agent.metrics()
    };
    assert!(
        counter(
            &metrics_after_timeout,
            "headroom_agent_http_connections_closed_total",
            "reason=\"connection_cap\""
        ) >= 16.0,
        "{metrics_after_timeout}"
    );
    assert!(agent.stop().success());
}
