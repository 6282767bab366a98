//! The node agent with the live probes: HTTP endpoints on loopback, a container's series that
//! appear while it runs and disappear when its cgroup goes, graceful shutdown that detaches
//! everything, least privilege (only the capabilities deploy/ grants), and configuration
//! errors that name the key.
//!
//! Needs root. Without it: SKIPPED, except in CI or under `cargo xtask test`, where it fails.

#[path = "../common/mod.rs"]
mod common;

use std::{path::Path, process::Stdio};

use common::{headroom, loaded_programs_named, privileged, workload, Agent};

const MIB: u64 = 1 << 20;

/// The value of the first series of `metric` whose labels contain `label`.
fn series_value(metrics: &str, metric: &str, label: &str) -> Option<f64> {
    common::series(metrics, metric, label).first().copied()
}

#[test]
fn the_agent_exports_a_container_while_it_lives_and_forgets_it_after() {
    let Some(_guard) = privileged("the_agent_exports_a_container_while_it_lives") else {
        return;
    };
    let programs_before = loaded_programs_named("rss_stat");
    // A gone container's OOM counter, limits and peaks stay 60 s by default; 1 s here.
    let mut agent = Agent::builder()
        .args(["--gone-series-retention", "1s"])
        .start();
    assert_eq!(agent.get("/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(agent.get("/nope").map(|(s, _)| s), Some(404));

    // A host cgroup with a workload: 48 MiB, held until the checks are done (BEFORE_MS -1).
    let mut cgroup = common::TestCgroup::new("agent");
    let program = workload("spike", false);
    let mut child = cgroup.spawn(&program, &["48", "8", "10", "-1", "0"]);
    let label = format!("container=\"{}\"", cgroup.path());
    let mut resident = 0.0;
    common::wait_until("the container's resident series", 20, || {
        resident = series_value(
            &agent.metrics(),
            "headroom_container_memory_resident_bytes",
            &label,
        )
        .unwrap_or(0.0);
        resident >= (48 * MIB) as f64
    });
    let metrics = agent.get("/metrics").expect("metrics").1;
    assert!(
        series_value(&metrics, "headroom_container_memory_charged_bytes", &label).unwrap_or(0.0)
            >= (48 * MIB) as f64,
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("attribution=\"host\",{label}")),
        "{metrics}"
    );
    assert_eq!(
        series_value(&metrics, "headroom_container_threads", &label),
        Some(1.0),
        "one thread alive in the container"
    );
    // Reserved: the workload's 48 MiB map plus its binary and libraries (VmSize), sampled on
    // the agent's slow ticks (every 10 intervals); the first may have come before the map.
    let mut reserved = 0.0;
    common::wait_until("the container's reserved peak", 30, || {
        reserved = series_value(
            &agent.metrics(),
            "headroom_container_memory_reserved_peak_bytes",
            &label,
        )
        .unwrap_or(0.0);
        reserved >= (48 * MIB) as f64
    });
    assert!(
        reserved >= (48 * MIB) as f64 && reserved < (120 * MIB) as f64,
        "reserved peak {reserved}"
    );
    for self_metric in [
        "headroom_agent_ring_events_total{kind=\"process_start\"}",
        "headroom_agent_resident_bytes",
        "headroom_agent_containers_tracked",
        "headroom_agent_map_fill_ratio{map=\"targets\"}",
        "headroom_agent_bpf_runs_total{program=\"rss_stat\"}",
    ] {
        assert!(metrics.contains(self_metric), "missing {self_metric}");
    }
    let agent_rss = metrics
        .lines()
        .find_map(|line| line.strip_prefix("headroom_agent_resident_bytes "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .expect("agent RSS");
    assert!(agent_rss < (64 * MIB) as f64, "agent RSS {agent_rss}");

    let (status, report) = agent
        .get(&format!(
            "/api/v1/report?cgroup=%2F{}",
            cgroup.path().trim_start_matches('/')
        ))
        .expect("report");
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["schema"], "headroom.report/v1");
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 1, "{report}");
    assert_eq!(targets[0]["cgroup"], cgroup.path());
    assert!(targets[0]["recommendation"]["limit_bytes"]
        .as_u64()
        .is_some());

    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"go\n")
        .expect("tell the workload to finish");
    assert!(child.wait().expect("workload").success());
    cgroup.remove();
    common::wait_until("the container's charge now to go", 20, || {
        agent.get("/metrics").is_some_and(|(_, body)| {
            series_value(&body, "headroom_container_memory_charged_bytes", &label).is_none()
        })
    });
    common::wait_until(
        "the container's kept series to go after the retention",
        20,
        || {
            agent
                .get("/metrics")
                .is_some_and(|(_, body)| !body.contains(&label))
        },
    );

    assert!(agent.stop().success());
    assert_eq!(
        loaded_programs_named("rss_stat"),
        programs_before,
        "probes detached"
    );
}

/// containerd and CRI-O start every container on cgroup v2 (the agent's too) in a private
/// cgroup namespace, where /proc/PID/cgroup shows the other containers as `/../..`. A
/// container that faulted its memory in before the agent started, and is idle since, is
/// known only from the agent's seeding: it must place that path under the host's mount.
#[test]
fn an_idle_container_is_seeded_by_an_agent_in_a_private_cgroup_namespace() {
    let Some(_guard) = privileged("an_idle_container_is_seeded_by_an_agent_in_a_private") else {
        return;
    };
    // The container first: 48 MiB touched and held, then no page fault until stdin says go.
    let mut cgroup = common::TestCgroup::new("seeded");
    let program = workload("spike", false);
    // Killed on a failed assertion, before its cgroup is removed.
    let mut child = common::ChildGuard(cgroup.spawn(&program, &["48", "8", "10", "-1", "0"]));
    common::wait_until("the workload to hold its 48 MiB", 20, || {
        common::status_bytes(child.0.id(), "VmRSS") >= 48 * MIB
    });
    let held = common::status_bytes(child.0.id(), "VmRSS");

    let mut agent_cgroup = common::TestCgroup::new("agent-ns");
    let mut agent = Agent::builder()
        .in_cgroup(&agent_cgroup)
        .wrapped_in(["unshare", "--cgroup", "--"])
        .start();
    // The agent really sees the workload's cgroup from outside: `/../headroom-test-...`.
    let seen = std::process::Command::new("nsenter")
        .arg(format!("--cgroup=/proc/{}/ns/cgroup", agent.pid()))
        .args(["cat", &format!("/proc/{}/cgroup", child.0.id())])
        .output()
        .expect("nsenter");
    let seen = String::from_utf8_lossy(&seen.stdout).into_owned();
    let unified = seen
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {seen:?}"));
    assert_eq!(unified, format!("/..{}", cgroup.path()), "{seen}");

    let label = format!("container=\"{}\"", cgroup.path());
    let mut resident = 0.0;
    common::wait_until("the idle container's seeded resident series", 20, || {
        resident = series_value(
            &agent.metrics(),
            "headroom_container_memory_resident_bytes",
            &label,
        )
        .unwrap_or(0.0);
        resident >= (48 * MIB) as f64
    });
    // From /proc, so within a page or two of what the kernel said before the agent started.
    assert!(
        resident <= held as f64 * 1.05,
        "seeded {resident} for VmRSS {held}"
    );

    std::io::Write::write_all(&mut child.0.stdin.take().expect("stdin"), b"go\n")
        .expect("tell the workload to finish");
    assert!(child.0.wait().expect("workload").success());
    assert!(agent.stop().success());
    cgroup.remove();
    agent_cgroup.remove();
}

#[test]
fn bad_configuration_names_the_key() {
    let config = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-agent.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:9400\"\nintervall = \"1s\"\n").expect("write");
    let output = headroom()
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .expect("run agent");
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("intervall"), "{stderr}");
    let output = headroom()
        .args(["agent", "--interval", "5ms"])
        .output()
        .expect("run agent");
    assert_eq!(output.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 100ms"));
}

/// What headroom prints when it refuses to start with only these capabilities.
fn refusal_with_deployed_capabilities(capabilities: &[String]) -> String {
    let bounding: Vec<String> = capabilities.iter().map(|c| format!("+{c}")).collect();
    let output = std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            &format!("-all,{}", bounding.join(",")),
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_headroom"))
        .args([
            "agent",
            "--listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .expect("setpriv runs headroom");
    assert!(!output.status.success(), "the agent started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_agent_works_with_only_the_capabilities_deploy_grants() {
    let Some(_guard) = privileged("the_agent_works_with_only_the_capabilities_deploy_grants")
    else {
        return;
    };
    let capabilities = common::deployed_capabilities();
    assert!(
        !capabilities.is_empty(),
        "no capabilities found in deploy/headroom.yaml"
    );
    let _paranoid = common::PerfParanoidAtTwo::after_checking_the_refusal(|| {
        refusal_with_deployed_capabilities(&capabilities)
    });
    // setpriv (util-linux) runs the agent with only the deployed capabilities.
    let mut agent = Agent::builder().capabilities(&capabilities).start();
    let metrics = agent.get("/metrics").expect("metrics").1;
    assert!(
        metrics.contains("headroom_container_memory_resident_bytes{"),
        "{metrics}"
    );
    assert!(agent.stop().success());
}

#[test]
fn capture_through_the_running_agent_returns_a_report_with_stacks() {
    let Some(_guard) = privileged("capture_through_the_running_agent_returns_a_report_with_stacks")
    else {
        return;
    };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sessions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let socket = dir.join("run/agent.sock");
    let programs_before = loaded_programs_named("rss_stat");
    // The agent runs with only the capabilities deploy/ grants with the ptrace overlay (the
    // one that symbolizes other users' stacks, which this test checks by name); it is stopped
    // on every path, a failed assertion included.
    let mut capabilities = common::deployed_capabilities();
    capabilities.extend(common::overlay_capabilities());
    let _paranoid = common::PerfParanoidAtTwo::after_checking_the_refusal(|| {
        refusal_with_deployed_capabilities(&capabilities)
    });
    let mut agent = Agent::builder()
        .capabilities(&capabilities)
        .socket(&socket)
        .start();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&socket), 0o600, "socket must be private");
    assert_eq!(mode(socket.parent().expect("dir")), 0o700);

    // Another user cannot use the socket.
    let refused = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_headroom"))
        .args([
            "capture",
            "--cgroup",
            "/",
            "--duration",
            "1s",
            "--agent-socket",
        ])
        .arg(&socket)
        .output()
        .expect("run capture as nobody");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no headroom agent answers"), "{stderr}");
    assert!(stderr.contains("ermission denied"), "{stderr}");

    // A workload with a named spike function, in a container-like cgroup.
    let mut cgroup = common::TestCgroup::new("session");
    let program = workload("spike_source", false);
    // BEFORE_MS -1: the spike comes once the session says it is capturing.
    let mut child = cgroup.spawn(&program, &["40", "200", "300", "-1", "1500"]);
    let report = dir.join("report.json");
    let svg = dir.join("flame.svg");
    let mut capture = common::BackgroundCapture::spawn(
        headroom()
            // Ended by SIGINT once the workload is done, however long that takes here.
            .args(["capture", "--cgroup", &cgroup.path(), "--duration", "300s"])
            .args(["--format", "json", "--output"])
            .arg(&report)
            .arg("--flamegraph")
            .arg(&svg)
            .arg("--agent-socket")
            .arg(&socket),
    );
    capture.wait_ready(60);
    // 1.5 s of the base first: a spike stands above a steady state the session saw.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"go\n")
        .expect("tell the workload to spike");
    // The session runs in the agent: no second copy of the probes.
    assert_eq!(loaded_programs_named("rss_stat"), programs_before + 1);
    assert!(child.wait().expect("workload").success());
    capture.interrupt();
    let output = capture.wait_with_output();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("JSON report");
    let target = &report["targets"][0];
    assert_eq!(target["cgroup"], cgroup.path().as_str());
    // One sample per 512 KiB faulted, or per fault when a fault maps more: with transparent
    // huge pages (the Debian guests' default) each is 2 MiB, so about 100 samples, not 400.
    let samples = target["stacks"]["samples"].as_u64().expect("samples");
    assert!(samples >= 90, "{samples} samples: {}", target["stacks"]);
    let sampled = target["stacks"]["sampled_fault_bytes"]
        .as_u64()
        .expect("sampled bytes");
    // At least 95 % of the 200 MiB: one sample per 512 KiB of 4 KiB faults leaves up to
    // 512 KiB unsampled at each edge of the region where huge pages cannot start.
    assert!(
        sampled >= 190 * MIB,
        "{sampled} bytes sampled: {}",
        target["stacks"]
    );
    assert_eq!(
        target["sources"][0]["name"], "build_spike_cache",
        "{}",
        target["sources"]
    );
    let sampled = target["sources"][0]["bytes"].as_u64().expect("bytes");
    assert!(sampled.abs_diff(200 * MIB) <= 20 * MIB, "{sampled}");
    // The charge the agent sampled every 10 ms saw the spike, and the spike names its source.
    let peak = target["memory"]["peak_bytes"].as_u64().expect("peak");
    assert!(peak >= 235 * MIB, "charged peak {peak}");
    let spike = target["spikes"]
        .as_array()
        .expect("spikes")
        .iter()
        .find(|s| s["bytes_above_steady"].as_u64().unwrap_or(0) > 150 * MIB)
        .unwrap_or_else(|| panic!("no spike in {}", target["spikes"]));
    assert_eq!(spike["source"], "build_spike_cache");
    assert!(std::fs::read_to_string(&svg)
        .expect("flame graph")
        .contains("build_spike_cache"));

    // Ctrl-C ends a session early and the report is still written.
    let early = dir.join("early.json");
    let capture = headroom()
        .args(["capture", "--cgroup", &cgroup.path(), "--duration", "60s"])
        .args(["--format", "json", "--output"])
        .arg(&early)
        .arg("--agent-socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run capture");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let client = nix::unistd::Pid::from_raw(i32::try_from(capture.id()).expect("pid"));
    nix::sys::signal::kill(client, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let output = capture.wait_with_output().expect("capture finishes");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let early: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&early).expect("report after Ctrl-C"))
            .expect("JSON report");
    let seconds = early["duration_seconds"].as_f64().expect("duration");
    assert!((1.0..10.0).contains(&seconds), "session lasted {seconds} s");
    cgroup.remove();

    assert!(agent.stop().success());
    assert!(
        !socket.exists(),
        "the agent removes its socket on the way out"
    );
    assert_eq!(loaded_programs_named("rss_stat"), programs_before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_agent_reports_thread_stacks_of_a_container() {
    let Some(_guard) = privileged("the_agent_reports_thread_stacks_of_a_container") else {
        return;
    };
    let mut agent = Agent::start();
    // 8 threads with 1 MiB stacks, each touching 256 KiB of it, held 6 s.
    let mut cgroup = common::TestCgroup::new("agent-stacks");
    let program = workload("stacks", false);
    let mut child = common::ChildGuard(cgroup.spawn(&program, &["8", "1024", "256", "6000"]));
    let label = format!("container=\"{}\"", cgroup.path());
    let (mut reserved, mut resident) = (0.0, 0.0);
    common::wait_until("the container's thread stacks", 20, || {
        let metrics = agent.metrics();
        reserved = series_value(
            &metrics,
            "headroom_container_thread_stack_reserved_bytes",
            &label,
        )
        .unwrap_or(0.0);
        resident = series_value(
            &metrics,
            "headroom_container_thread_stack_resident_bytes",
            &label,
        )
        .unwrap_or(0.0);
        resident >= (8 * 256 * 1024) as f64
    });
    // Reserved: 8 x (1 MiB + guard page); resident: the 8 x 256 KiB touched, and a little more.
    let expected_reserved = (8 * (1024 + 4) * 1024) as f64;
    assert!(
        (reserved - expected_reserved).abs() <= expected_reserved * 0.02,
        "reserved {reserved}, expected {expected_reserved}"
    );
    assert!(
        resident < (8 * 320 * 1024) as f64,
        "resident {resident} for 8 x 256 KiB touched"
    );
    let _ = child.0.wait();
    cgroup.remove();
    assert!(agent.stop().success());
}

/// (request, limit) the agent exports for the container with this label, once it has them.
fn exported_recommendation(metrics: &str, label: &str) -> Option<(u64, u64)> {
    let request = series_value(
        metrics,
        "headroom_container_memory_recommended_request_bytes",
        label,
    )?;
    let limit = series_value(
        metrics,
        "headroom_container_memory_recommended_limit_bytes",
        label,
    )?;
    Some((request as u64, limit as u64))
}

#[test]
fn the_exported_recommendation_is_what_headroom_recommend_makes_of_the_agents_report() {
    let Some(_guard) = privileged("the_exported_recommendation_is_what_headroom_recommend_makes")
    else {
        return;
    };
    let mut agent = Agent::start();
    // The demo service: a 300 MiB startup cache released to about 100 MiB, then steady for
    // 10 minutes (its one burst comes half way, long after this test is done).
    let mut cgroup = common::TestCgroup::new("agent-recommend");
    let program = workload("demo_service", false);
    let mut child = common::ChildGuard(cgroup.spawn(&program, &["600"]));
    let label = format!("container=\"{}\"", cgroup.path());
    // The agent exports a recommendation only once it found a steady state.
    common::wait_until("the container's exported recommendation", 60, || {
        exported_recommendation(&agent.metrics(), &label).is_some()
    });

    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-report-{}.json", std::process::id()));
    let path = format!(
        "/api/v1/report?cgroup=%2F{}",
        cgroup.path().trim_start_matches('/')
    );
    // Metrics, report, metrics: the report is the state both metric reads saw only when they
    // agree (a tick in between could change the recommendation); otherwise read again. The
    // export is refreshed every slow tick (2 s here) while the report is built when asked, so
    // while the recommendation still moves (startup just settled, the steady state is a few
    // buckets long) the two can differ for a refresh: compare again until they agree, for at
    // most 20 s, and fail with the last pair.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (exported_request, exported_limit, request, limit, recommended, in_report) = loop {
        let mut compared = None;
        for _attempt in 0..50 {
            let before = exported_recommendation(&agent.metrics(), &label).expect("exported");
            let (status, report) = agent.get(&path).expect("report");
            assert_eq!(status, 200, "{report}");
            let after = exported_recommendation(&agent.metrics(), &label).expect("exported");
            if before == after {
                compared = Some((before, report));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        let ((exported_request, exported_limit), report) =
            compared.expect("two metric reads around a report never agreed in 50 tries");
        let parsed: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
        assert_eq!(
            parsed["targets"].as_array().map(Vec::len),
            Some(1),
            "{report}"
        );
        std::fs::write(&file, &report).expect("write the report");
        let output = headroom()
            .arg("recommend")
            .arg(&file)
            .args(["--format", "json"])
            .output()
            .expect("run headroom recommend");
        let _ = std::fs::remove_file(&file);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let recommended = json["recommendation"].clone();
        let request = recommended["request_bytes"].as_u64().expect("request");
        let limit = recommended["limit_bytes"].as_u64().expect("limit");
        let in_report = parsed["targets"][0]["recommendation"].clone();
        eprintln!(
            "exported: request {exported_request} limit {exported_limit}; \
             headroom recommend on /api/v1/report: request {request} limit {limit}; \
             the report's own recommendation: request {} limit {}",
            in_report["request_bytes"], in_report["limit_bytes"]
        );
        if (request, limit) == (exported_request, exported_limit)
            || std::time::Instant::now() >= deadline
        {
            break (
                exported_request,
                exported_limit,
                request,
                limit,
                recommended,
                in_report,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };

    let _ = child.0.kill();
    let _ = child.0.wait();
    cgroup.remove();
    assert!(agent.stop().success());
    assert_eq!(
        (request, limit),
        (exported_request, exported_limit),
        "(request, limit) of `headroom recommend` on the agent's report vs the agent's metrics;\n\
         recommend said: {recommended}\nthe report's own recommendation: {in_report}"
    );
}

/// A spike far shorter than the agent's interval, after the agent first saw the container:
/// the exported charge peak is the kernel's own high-water mark (v1 `max_usage_in_bytes`, v2
/// `memory.peak`), not a sample that missed it.
#[test]
fn a_spike_between_two_ticks_is_exported_at_the_kernels_high_water_mark() {
    let Some(_guard) =
        privileged("a_spike_between_two_ticks_is_exported_at_the_kernels_high_water_mark")
    else {
        return;
    };
    let mut agent = Agent::builder().interval(Some("2s")).start();
    let cgroup = common::TestCgroup::new("agent-spike");
    let label = format!("container=\"{}\"", cgroup.path());
    // 16 MiB base; on "go", 100 MiB more held 100 ms, then the base for 5 s (two ticks).
    let mut command = std::process::Command::new(workload("spike", false));
    command
        .args(["16", "100", "100", "-1", "5000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    common::enter_cgroups(&mut command, cgroup.procs_files());
    let mut child = command.spawn().expect("spawn the workload in its cgroup");
    // First sight: the container's series exist, with the base but not the spike.
    let mut first_seen = 0.0;
    common::wait_until("the container's first sight", 60, || {
        first_seen = series_value(
            &agent.metrics(),
            "headroom_container_memory_charged_peak_bytes",
            &label,
        )
        .unwrap_or(0.0);
        first_seen >= (16 * MIB) as f64
    });
    assert!(first_seen < (100 * MIB) as f64, "first sight {first_seen}");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"go\n")
        .expect("tell the workload to spike");
    // The spike is over 100 ms (plus faulting) later; the next tick or two export it. While it
    // is still rising a tick can export a value on the way up: wait until the exported peak
    // and the kernel's agree, or give up and show both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (exported, kernel_peak) = loop {
        let kernel_peak = cgroup
            .memory_file("memory.max_usage_in_bytes")
            .or_else(|| cgroup.memory_file("memory.peak"))
            .expect("the cgroup's high-water mark");
        let exported = series_value(
            &agent.metrics(),
            "headroom_container_memory_charged_peak_bytes",
            &label,
        )
        .unwrap_or(0.0);
        let agree = (exported - kernel_peak as f64).abs() <= kernel_peak as f64 * 0.02;
        if (exported >= (100 * MIB) as f64 && agree) || std::time::Instant::now() > deadline {
            break (exported, kernel_peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("workload");
    assert!(output.status.success());
    let lasted = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "measured: exported charge peak {exported} vs kernel high-water mark {kernel_peak}; {}",
        lasted.replace('\n', " ")
    );
    let kernel_peak = kernel_peak as f64;
    assert!(
        (exported - kernel_peak).abs() <= kernel_peak * 0.02,
        "exported {exported} vs the kernel's {kernel_peak}"
    );
    assert!(agent.stop().success());
}
