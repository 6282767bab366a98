//! Reliability under faults and bad input, with the real probes: a ring buffer that overflows,
//! process churn, pid reuse, a cgroup deleted mid-capture, SIGTERM, containers that restart,
//! agent restarts, least privilege, and every kind of bad input getting a named error, never a
//! panic.
//!
//! They need root. Without it they print SKIPPED, except in CI or under `cargo xtask test`,
//! where they fail.

#[path = "../common/mod.rs"]
mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use common::{
    capture_with, headroom, leftover_session_cgroups, loaded_programs_named, privileged, series,
    workload, Agent, Captured, ChildGuard, TestCgroup,
};

const MIB: u64 = 1 << 20;

fn report_path(tag: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}.json", std::process::id()))
}

fn read_report(capture: common::BackgroundCapture, report: &Path) -> Captured {
    let output = capture.wait_with_output();
    let text = std::fs::read_to_string(report).unwrap_or_else(|err| {
        panic!(
            "no report ({err}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(report);
    Captured {
        output,
        report: serde_json::from_str(&text).expect("report is JSON"),
    }
}

fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    common::wait_until(what, seconds, &mut check);
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, signal).expect("send signal");
}

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "headroom panicked:\n{stderr}");
}

#[test]
fn an_overflowing_ring_buffer_counts_its_drops_and_kernel_totals_stay_exact() {
    let Some(_guard) =
        privileged("an_overflowing_ring_buffer_counts_its_drops_and_kernel_totals_stay_exact")
    else {
        return;
    };
    // 200 000 mmap/munmap pairs into a one-page ring buffer: the consumer cannot keep up
    // (how many are lost depends on scheduling; that some are, and are counted, does not).
    let storm = workload("map_storm", false);
    let run = capture_with(
        &["--ring-buffer", "4Ki", "--no-stacks"],
        &[storm.to_str().expect("path"), "200000"],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let dropped = run.number("/drops/ringbuf_full");
    assert!(dropped > 0, "a one-page ring buffer lost nothing");
    // Counters live in kernel maps: every call is counted whatever the ring buffer lost.
    let mmaps = run.target("/activity/mmap_calls");
    let munmaps = run.target("/activity/munmap_calls");
    assert!(
        (200_000..200_100).contains(&mmaps),
        "mmap calls {mmaps} (200 000 by the workload, plus the loader's)"
    );
    assert!(
        (200_000..200_100).contains(&munmaps),
        "munmap calls {munmaps}"
    );
    // And the report says its per-region figures are not exact.
    assert_eq!(run.target_json()["reserved"]["exact"], false);
}

#[test]
fn twenty_thousand_short_lived_processes_leave_no_kernel_state_behind() {
    let Some(_guard) =
        privileged("twenty_thousand_short_lived_processes_leave_no_kernel_state_behind")
    else {
        return;
    };
    let started = Instant::now();
    let script = "i=0; while [ $i -lt 20000 ]; do /bin/true; i=$((i+1)); done";
    let run = capture_with(&["--no-stacks"], &["sh", "-c", script]);
    let elapsed = started.elapsed();
    assert!(run.output.status.success(), "{}", run.stderr());
    assert!(
        run.target("/activity/processes_created") >= 20_000,
        "{}",
        run.target_json()["activity"]
    );
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
    // Every per-process, per-call and owner entry of the kernel maps is gone again.
    for entry in [
        "processes",
        "pending_calls",
        "followed_processes",
        "address_space_owners",
    ] {
        assert_eq!(
            run.target(&format!("/kernel_entries_at_end/{entry}")),
            0,
            "{entry} left in the kernel"
        );
    }
    assert_eq!(run.number("/drops/process_map_full"), 0);
    // The report stays bounded: the table lists up to its bound and counts the rest.
    let listed = run.target_json()["processes"]
        .as_array()
        .expect("processes")
        .len() as u64;
    assert!(listed + run.target("/processes_not_listed") >= 20_000);
}

#[test]
fn a_reused_pid_is_two_processes_with_their_own_figures() {
    let Some(_guard) = privileged("a_reused_pid_is_two_processes_with_their_own_figures") else {
        return;
    };
    let program = workload("pid_reuse", false);
    // Another process on the machine can take the pid in between; a few tries are enough.
    for _attempt in 0..5 {
        let run = capture_with(
            &["--no-stacks"],
            &[program.to_str().expect("path"), "48", "8"],
        );
        assert!(run.output.status.success(), "{}", run.stderr());
        let stdout = String::from_utf8_lossy(&run.output.stdout).into_owned();
        let pid_of = |key: &str| -> u64 {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {stdout}"))
        };
        let (first, second) = (pid_of("first "), pid_of("second "));
        if first != second {
            continue;
        }
        let records: Vec<&serde_json::Value> = run.target_json()["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter(|p| p["pid"].as_u64() == Some(first))
            .collect();
        assert_eq!(records.len(), 2, "one record per process: {records:?}");
        let mut peaks: Vec<u64> = records
            .iter()
            .map(|p| p["resident_peak_bytes"].as_u64().expect("peak"))
            .collect();
        peaks.sort_unstable();
        assert!(
            peaks[0] >= 8 * MIB && peaks[0] < 24 * MIB,
            "second process {peaks:?}"
        );
        assert!(
            peaks[1] >= 48 * MIB && peaks[1] < 64 * MIB,
            "first process {peaks:?}"
        );
        return;
    }
    panic!("the kernel never handed out the same pid twice in five tries");
}

#[test]
fn a_cgroup_deleted_mid_capture_ends_the_capture_with_its_report() {
    let Some(_guard) = privileged("a_cgroup_deleted_mid_capture_ends_the_capture_with_its_report")
    else {
        return;
    };
    let mut cgroup = TestCgroup::new("deleted");
    let program = workload("spike", false);
    let mut child = cgroup.spawn(&program, &["24", "8", "10", "60000", "0"]);
    let report = report_path("deleted");
    let mut capture = common::BackgroundCapture::spawn(
        headroom()
            .args(["capture", "--no-stacks", "--cgroup", &cgroup.path()])
            .args(["--format", "json", "--output"])
            .arg(&report),
    );
    capture.wait_ready(120);
    thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    cgroup.remove();
    let started = Instant::now();
    let run = read_report(capture, &report);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "capture did not notice"
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    no_panic(&run.stderr());
    assert!(run.target("/resident/peak_bytes") >= 24 * MIB);
}

#[test]
fn a_followed_process_that_exits_ends_the_capture_with_its_report() {
    let Some(_guard) = privileged("a_followed_process_that_exits_ends_the_capture_with_its_report")
    else {
        return;
    };
    let program = workload("spike", false);
    // BEFORE_MS -1: it holds its 32 MiB until told to go on, once the capture is tracking it.
    let mut target = std::process::Command::new(&program)
        .args(["32", "8", "10", "-1", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn workload");
    let report = report_path("exits");
    let mut capture = common::BackgroundCapture::spawn(
        headroom()
            .args(["capture", "--no-stacks", "--pid", &target.id().to_string()])
            .args(["--format", "json", "--output"])
            .arg(&report),
    );
    capture.wait_ready(120);
    std::io::Write::write_all(&mut target.stdin.take().expect("stdin"), b"go\n")
        .expect("tell the workload to go on");
    let _ = target.wait();
    let run = read_report(capture, &report);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert!(run.target("/resident/peak_bytes") >= 32 * MIB);
}

#[test]
fn sigterm_during_a_capture_writes_the_report_and_cleans_up() {
    let Some(_guard) = privileged("sigterm_during_a_capture_writes_the_report_and_cleans_up")
    else {
        return;
    };
    let programs_before = loaded_programs_named("rss_stat");
    let program = workload("spike", false);
    let report = report_path("sigterm");
    let capture = common::BackgroundCapture::spawn(
        headroom()
            .args(["capture", "--format", "json", "--output"])
            .arg(&report)
            .arg("--")
            .arg(&program)
            .args(["16", "8", "10", "60000", "0"])
            .stdout(Stdio::null()),
    );
    wait_for("the session to start", 90, || {
        loaded_programs_named("rss_stat") > programs_before && !common::session_cgroups().is_empty()
    });
    thread::sleep(Duration::from_millis(1000));
    signal(capture.id(), nix::sys::signal::Signal::SIGTERM);
    let run = read_report(capture, &report);
    // The command died of the forwarded SIGTERM; the report is there, everything is gone.
    assert_eq!(run.output.status.code(), Some(128 + 15));
    assert!(run.target("/resident/peak_bytes") >= 16 * MIB);
    assert!(leftover_session_cgroups().is_empty());
    assert_eq!(loaded_programs_named("rss_stat"), programs_before);
}

#[test]
fn a_restarted_container_is_counted_afresh_and_an_agent_restart_keeps_the_kernel_peak() {
    let Some(_guard) = privileged(
        "a_restarted_container_is_counted_afresh_and_an_agent_restart_keeps_the_kernel_peak",
    ) else {
        return;
    };
    let mut agent = Agent::start();
    let port = agent.port();
    let program = workload("spike", false);

    // First life: 96 MiB.
    let mut cgroup = TestCgroup::new("restart");
    let label = format!("container=\"{}\"", cgroup.path());
    let mut child = cgroup.spawn(&program, &["96", "8", "10", "60000", "0"]);
    wait_for("the first life's series", 20, || {
        series(
            &agent.metrics(),
            "headroom_container_memory_charged_peak_bytes",
            &label,
        )
        .first()
        .is_some_and(|&peak| peak >= (96 * MIB) as f64)
    });
    let _ = child.kill();
    let _ = child.wait();
    cgroup.remove();
    wait_for("the first life's series to go", 20, || {
        series(
            &agent.metrics(),
            "headroom_container_memory_resident_bytes",
            &label,
        )
        .is_empty()
    });

    // Second life, same path, a new cgroup: 16 MiB, nothing carried over.
    let mut cgroup = TestCgroup::new("restart");
    let mut child = cgroup.spawn(&program, &["16", "8", "10", "60000", "0"]);
    wait_for("the second life's series", 20, || {
        series(
            &agent.metrics(),
            "headroom_container_memory_resident_bytes",
            &label,
        )
        .first()
        .is_some_and(|&resident| resident >= (16 * MIB) as f64)
    });
    thread::sleep(Duration::from_millis(600));
    let text = agent.metrics();
    let peaks = series(
        &text,
        "headroom_container_memory_charged_peak_bytes",
        &label,
    );
    assert_eq!(peaks.len(), 1, "one series per container: {peaks:?}");
    assert!(
        peaks[0] < (40 * MIB) as f64,
        "the old life leaked in: {peaks:?}"
    );

    // The agent restarts: the new one starts from the kernel's high-water mark of the
    // cgroup, with no double counting.
    let kernel_peak = cgroup
        .memory_file("memory.max_usage_in_bytes")
        .or_else(|| cgroup.memory_file("memory.peak"))
        .expect("kernel peak");
    assert!(agent.stop().success());
    let mut agent = Agent::builder().port(port).start();
    wait_for("the restarted agent's series", 20, || {
        series(
            &agent.metrics(),
            "headroom_container_memory_charged_peak_bytes",
            &label,
        )
        .first()
        .is_some_and(|&peak| peak >= kernel_peak as f64 * 0.99)
    });
    let peaks = series(
        &agent.metrics(),
        "headroom_container_memory_charged_peak_bytes",
        &label,
    );
    assert_eq!(peaks.len(), 1);
    assert!(
        peaks[0] <= kernel_peak as f64 * 1.05,
        "{peaks:?} vs {kernel_peak}"
    );
    let _ = child.kill();
    let _ = child.wait();
    cgroup.remove();
    assert!(agent.stop().success());
}

#[test]
fn capture_works_with_only_the_capabilities_deploy_grants() {
    let Some(_guard) = privileged("capture_works_with_only_the_capabilities_deploy_grants") else {
        return;
    };
    // Symbol names of another user's process (this root workload has every capability) need
    // the ptrace overlay's SYS_PTRACE (SECURITY.md): the test checks names, so it adds it.
    let capabilities: Vec<String> = common::deployed_capabilities()
        .into_iter()
        .chain(common::overlay_capabilities())
        .map(|c| format!("+{c}"))
        .collect();
    assert!(
        capabilities.contains(&"+bpf".to_owned()),
        "{capabilities:?}"
    );
    assert!(
        capabilities.contains(&"+sys_ptrace".to_owned()),
        "{capabilities:?}"
    );
    // A command capture also creates a cgroup, which needs write access to the cgroup
    // filesystem (SECURITY.md); in the cluster, captures watch existing cgroups and pods.
    let program = workload("spike_source", false);
    let mut cgroup = TestCgroup::new("least-privilege");
    let report = report_path("least-privilege");
    let _paranoid = common::PerfParanoidAtTwo::after_checking_the_refusal(|| {
        let output = std::process::Command::new("setpriv")
            .args([
                "--bounding-set",
                &format!("-all,{}", capabilities.join(",")),
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_headroom"))
            .args(["capture", "--standalone", "--cgroup", &cgroup.path()])
            .args(["--duration", "1s"])
            .output()
            .expect("setpriv runs headroom");
        assert!(!output.status.success(), "the capture started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    });
    let mut capture = common::BackgroundCapture::spawn(
        std::process::Command::new("setpriv")
            .args([
                "--bounding-set",
                &format!("-all,{}", capabilities.join(",")),
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_headroom"))
            .args(["capture", "--standalone", "--format", "json", "--output"])
            .arg(&report)
            .args(["--cgroup", &cgroup.path(), "--duration", "6s"]),
    );
    // The workload starts once the capture tracks its cgroup, and is done in about 1.5 s.
    capture.wait_ready(120);
    let mut child = ChildGuard(cgroup.spawn(&program, &["16", "32", "100", "300", "1000"]));
    let output = capture.wait_with_output();
    let _ = child.0.wait();
    cgroup.remove();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    let _ = std::fs::remove_file(report_path("least-privilege"));
    assert_eq!(
        report["targets"][0]["sources"][0]["name"],
        "build_spike_cache"
    );
}

/// Runs headroom with these arguments and returns (exit code, stderr).
fn run_headroom(args: &[&str]) -> (Option<i32>, String) {
    let output = headroom()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run headroom");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    no_panic(&stderr);
    (output.status.code(), stderr)
}

#[test]
fn bad_input_gets_an_error_that_names_the_problem_and_the_fix() {
    // Flag values: exit 2 (usage), with what is wrong and what to write instead.
    for (args, expected) in [
        (
            &["capture", "--duration", "0s", "--", "true"][..],
            "more than 0",
        ),
        (&["capture", "--duration", "soon", "--", "true"], "soon"),
        (&["capture", "--duration=-5s", "--", "true"], "-5s"),
        (
            &["capture", "--sample-bytes", "1Ki", "--", "true"],
            "out of range",
        ),
        (
            &["capture", "--ring-buffer", "1Ki", "--", "true"],
            "out of range",
        ),
        (
            &["capture", "--ring-buffer", "96Ki", "--", "true"],
            "power of two",
        ),
        (
            &["capture", "--memory-limit", "12parsecs", "--", "true"],
            "unknown unit",
        ),
        (&["capture", "--max-stacks", "3", "--", "true"], "3"),
        (
            &["capture", "--unwind", "magic", "--", "true"],
            "frame-pointers",
        ),
        (&["capture", "--pid", "0"], "0"),
        (&["capture", "--pod", "no-slash"], "NAMESPACE/POD"),
        (&["agent", "--interval", "1ms"], "at least 100ms"),
        (&["agent", "--socket", "relative"], "absolute"),
        (&["recommend", "--window=-1d"], "-1d"),
    ] {
        let (code, stderr) = run_headroom(args);
        assert!(
            matches!(code, Some(2) | Some(125)),
            "{args:?}: {code:?} {stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn runtime_failures_are_named_without_panics() {
    let Some(_guard) = privileged("runtime_failures_are_named_without_panics") else {
        return;
    };
    // An unknown pid and an unknown cgroup.
    let (code, stderr) = run_headroom(&["capture", "--pid", "4194303"]);
    assert_eq!(code, Some(125));
    assert!(stderr.contains("4194303"), "{stderr}");
    let (code, stderr) = run_headroom(&["capture", "--cgroup", "/no/such/cgroup"]);
    assert_eq!(code, Some(125));
    assert!(stderr.contains("/no/such/cgroup"), "{stderr}");
    let (code, stderr) = run_headroom(&["capture", "--cgroup", "relative/path"]);
    assert_eq!(code, Some(125));
    assert!(stderr.contains("must start with `/`"), "{stderr}");

    // A full disk when writing the report: the capture ran, the write fails with the reason.
    let (code, stderr) = run_headroom(&[
        "capture",
        "--no-stacks",
        "--output",
        "/dev/full",
        "--",
        "true",
    ]);
    assert_eq!(code, Some(125), "{stderr}");
    assert!(
        stderr.contains("/dev/full") && stderr.contains("room"),
        "{stderr}"
    );
    // A flame graph into a directory that does not exist fails before capturing anything.
    let started = Instant::now();
    let (code, stderr) = run_headroom(&[
        "capture",
        "--flamegraph",
        "/no/such/dir/flame.svg",
        "--",
        "sleep",
        "5",
    ]);
    assert_eq!(code, Some(125));
    assert!(
        stderr.contains("/no/such/dir") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it captured first"
    );

    // Not root: the missing capabilities are named with the fix.
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_headroom"))
        .args(["capture", "--", "true"])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("setcap"),
        "{stderr}"
    );
    no_panic(&stderr);
}

#[test]
fn metrics_and_reports_carry_no_command_lines_or_environment() {
    let Some(_guard) = privileged("metrics_and_reports_carry_no_command_lines_or_environment")
    else {
        return;
    };
    const SECRET: &str = "hunter2-Z9q";
    const MARKER: &str = "marker-arg-Q7x";
    let mut agent = Agent::start();
    let cgroup = TestCgroup::new("private");
    // Processes whose environment and command line carry secrets; they run a short pipeline
    // (so the container has series) and sleep.
    // `exec`: the spawned pid becomes the sleep, so killing it empties the cgroup.
    let script = "head -c 8000000 /dev/zero | tail -c 1 >/dev/null; exec sleep 8";
    let mut child = ChildGuard(cgroup.spawn(
        Path::new("/usr/bin/env"),
        &[
            &format!("HEADROOM_SECRET={SECRET}"),
            "sh",
            "-c",
            script,
            MARKER,
        ],
    ));
    let label = format!("container=\"{}\"", cgroup.path());
    wait_for("the container's series", 20, || {
        !series(
            &agent.metrics(),
            "headroom_container_memory_resident_bytes",
            &label,
        )
        .is_empty()
    });
    let exported = agent.metrics();
    let report = agent
        .get(&format!("/api/v1/report?cgroup={}", cgroup.path()))
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(
        report.contains(&cgroup.path()),
        "no report for the container: {report}"
    );
    // A capture report of the same cgroup, stacks included.
    let captured = capture_with(
        &[
            "--standalone",
            "--cgroup",
            &cgroup.path(),
            "--duration",
            "2s",
        ],
        &[],
    );
    let captured = captured.report.to_string();
    for (what, text) in [
        ("/metrics", &exported),
        ("/api/v1/report", &report),
        ("capture report", &captured),
    ] {
        assert!(!text.contains(SECRET), "{what} carries the environment");
        assert!(!text.contains(MARKER), "{what} carries the command line");
    }
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut cgroup = cgroup;
    cgroup.remove();
    let leftover = Path::new("/sys/fs/cgroup/unified").join(cgroup.path().trim_start_matches('/'));
    assert!(!leftover.exists(), "{} left behind", leftover.display());
    assert!(agent.stop().success());
}
