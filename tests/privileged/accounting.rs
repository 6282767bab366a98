//! The accounting engine against independent truth: the workloads' own figures, /proc VmHWM
//! and VmSize, and the kernel's cgroup high-water mark. Real probes, real programs (our C
//! workloads, stress-ng, redis).
//!
//! They need root. Without it they print SKIPPED, except in CI or under `cargo xtask test`,
//! where they fail.

#[path = "../common/mod.rs"]
mod common;

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{
    capture, headroom, leftover_session_cgroups, privileged, workload, Captured, TestCgroup,
};

const MIB: u64 = 1 << 20;

fn within(actual: u64, expected: u64, fraction: f64, floor: u64) -> bool {
    let tolerance = ((expected as f64 * fraction) as u64).max(floor);
    actual.abs_diff(expected) <= tolerance
}

/// A `headroom capture` running in the background, and where its JSON report goes.
struct Running {
    capture: common::BackgroundCapture,
    report: PathBuf,
}

/// Starts `headroom capture` with these flags (report to a JSON file) in the background and
/// returns once it says it is capturing (the target is tracked from that line on), however
/// long loading the probes takes on this machine.
fn start_capture(flags: &[&str], tag: &str) -> Running {
    let report =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let mut capture = common::BackgroundCapture::spawn(
        headroom()
            .arg("capture")
            .args(["--format", "json", "--output"])
            .arg(&report)
            .args(flags)
            .stdout(Stdio::null()),
    );
    capture.wait_ready(120);
    Running { capture, report }
}

fn finish_capture(running: Running) -> Captured {
    let output = running.capture.wait_with_output();
    let text = std::fs::read_to_string(&running.report).unwrap_or_else(|err| {
        panic!(
            "no report ({err}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Captured {
        output,
        report: serde_json::from_str(&text).expect("report is JSON"),
    }
}

fn key_value(stdout: &str, key: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("workload printed no {key}: {stdout}"))
}

#[test]
fn a_60_ms_spike_is_caught_and_matches_the_kernel_high_water_mark() {
    let Some(_guard) = privileged("a_60_ms_spike_is_caught_and_matches_the_kernel_high_water_mark")
    else {
        return;
    };
    let program = workload("spike", false);
    let cgroup = TestCgroup::new("spike");
    // Ended by SIGINT once the workload is done, however long that takes on this machine.
    let headroom = start_capture(&["--cgroup", &cgroup.path(), "--duration", "300s"], "spike");
    // 40 MiB base for 2.5 s, a 200 MiB spike held 60 ms, then 1.5 s of base again.
    let workload = cgroup.spawn(&program, &["40", "200", "60", "2500", "1500"]);
    let workload = workload.wait_with_output().expect("workload");
    assert!(workload.status.success());
    let lasted_ms = key_value(
        &String::from_utf8_lossy(&workload.stdout),
        "spike_lasted_ms",
    );
    let kernel_peak = cgroup
        .memory_file("memory.max_usage_in_bytes")
        .or_else(|| cgroup.memory_file("memory.peak"))
        .expect("kernel high-water mark");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(headroom.capture.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("end the capture");
    let run = finish_capture(headroom);
    assert!(run.output.status.success(), "{}", run.stderr());

    // The cgroup existed before the capture, so its lifetime mark is not used: this is the
    // 10 ms sampler's own figure, checked against the kernel's.
    let peak = run.target("/memory/peak_bytes");
    assert!(
        within(peak, kernel_peak, 0.05, 4 * MIB),
        "peak {peak} vs kernel high-water mark {kernel_peak}: {}",
        run.target_json()["memory"]
    );
    let spikes = run.target_json()["spikes"]
        .as_array()
        .expect("spikes")
        .clone();
    assert_eq!(
        spikes.len(),
        1,
        "{spikes:?}\n{}",
        run.target_json()["memory"]
    );
    let above = spikes[0]["bytes_above_steady"].as_u64().expect("height");
    assert!(
        within(above, 200 * MIB, 0.1, 4 * MIB),
        "spike height {above}"
    );
    // The spike lasted 60 ms plus the time to fault in 200 MiB; the 50 ms buckets can add up to
    // one bucket at each edge.
    let duration = spikes[0]["duration_ms"].as_u64().expect("duration");
    eprintln!(
        "measured: peak {peak} vs kernel {kernel_peak}; spike {above} above steady for {duration} ms (workload: {lasted_ms} ms)"
    );
    // On an emulated machine faulting the 200 MiB takes seconds: allow 5 % of that too.
    assert!(
        duration.abs_diff(lasted_ms) <= 150.max(lasted_ms / 20),
        "spike duration {duration} ms vs {lasted_ms} ms the workload measured"
    );
    let steady = run.target("/memory/steady_bytes");
    assert!(within(steady, 40 * MIB, 0.1, 4 * MIB), "steady {steady}");
    // Resident memory (rss_stat, aggregated in the kernel) saw the same spike.
    let resident = run.target("/resident/peak_bytes");
    assert!(
        within(resident, 240 * MIB, 0.05, 4 * MIB),
        "resident peak {resident}"
    );
}

#[test]
fn a_process_tree_is_followed_by_pid_and_its_peak_matches_vmhwm() {
    let Some(_guard) = privileged("a_process_tree_is_followed_by_pid_and_its_peak_matches_vmhwm")
    else {
        return;
    };
    let program = workload("spike", false);
    // BEFORE_MS -1: the workload holds its base until it reads a line, sent once the capture
    // says it is tracking the process.
    let mut child = Command::new(&program)
        .args(["16", "96", "200", "-1", "500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let pid = child.id().to_string();
    let headroom = start_capture(&["--pid", &pid], "pid");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell the workload to go on");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read workload output");
    assert!(child.wait().expect("workload").success());
    // The capture ends by itself when the process tree is gone.
    let run = finish_capture(headroom);
    let vm_hwm = key_value(&stdout, "vm_hwm_kib") * 1024;
    let resident = run.target("/resident/peak_bytes");
    eprintln!("measured: resident peak {resident} vs VmHWM {vm_hwm}");
    assert!(
        within(resident, vm_hwm, 0.05, 2 * MIB),
        "resident peak {resident} vs VmHWM {vm_hwm}"
    );
    assert_eq!(run.target_json()["kind"], "pid");
    assert!(run.target_json()["memory"].is_null());
}

#[test]
fn thread_stacks_reserved_and_resident_match_what_the_threads_did() {
    let Some(_guard) = privileged("thread_stacks_reserved_and_resident_match_what_the_threads_did")
    else {
        return;
    };
    let program = workload("stacks", false);
    let program = program.to_str().expect("utf-8");
    // 8 threads, 1 MiB stacks, 256 KiB touched in each, held 1.5 s for the smaps sampler.
    let run = capture(&[program, "8", "1024", "256", "1500"]);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert_eq!(run.target("/threads/created"), 8);
    assert_eq!(run.target("/threads/peak"), 9);
    let reserved = run.target("/threads/stack_reserved_bytes");
    assert!(
        within(reserved, 8 * MIB, 0.05, 0),
        "stack reserved {reserved}"
    );
    let resident = run.target("/threads/stack_resident_bytes");
    let touched = 8 * 256 * 1024;
    eprintln!("measured: stacks reserved {reserved} (8 MiB asked), resident {resident} (touched {touched})");
    assert!(
        within(resident, touched, 0.1, MIB),
        "stack resident {resident} vs touched {touched}"
    );
    assert_no_leak(&run);
}

#[test]
fn many_malloc_arenas_reserve_far_more_than_they_use() {
    let Some(_guard) = privileged("many_malloc_arenas_reserve_far_more_than_they_use") else {
        return;
    };
    let program = workload("arenas", false);
    let program = program.to_str().expect("utf-8");
    let run = capture(&[program, "16", "1000"]);
    assert!(run.output.status.success(), "{}", run.stderr());
    let vm_size = key_value(&String::from_utf8_lossy(&run.output.stdout), "vm_size_kib") * 1024;
    let reserved = run.target("/reserved/peak_bytes");
    assert!(
        reserved as f64 >= 0.8 * vm_size as f64,
        "reserved peak {reserved} vs VmSize {vm_size}"
    );
    let resident = run.target("/resident/peak_bytes");
    assert!(
        resident * 10 < reserved,
        "resident {resident} vs reserved {reserved}"
    );
    assert!(run.target("/reserved/peak_by_kind/no_access") >= 8 * 64 * MIB);
    assert_eq!(run.target("/threads/created"), 16);
    assert_no_leak(&run);
}

fn assert_no_leak(run: &Captured) {
    let entries = &run.target_json()["kernel_entries_at_end"];
    for key in [
        "processes",
        "pending_calls",
        "followed_processes",
        "address_space_owners",
    ] {
        assert_eq!(entries[key], 0, "kernel entries left: {entries}");
    }
    assert!(
        leftover_session_cgroups().is_empty(),
        "session cgroup left behind"
    );
}

/// The sampled charge peak against the kernel's own high-water mark of the session cgroup.
fn assert_peak_matches_kernel(run: &Captured, what: &str) {
    let kernel = run.target("/memory/peak_bytes");
    let sampled = run.target("/memory/sampled_peak_bytes");
    eprintln!(
        "measured {what}: sampled peak {sampled} vs kernel {kernel} ({:.3}); resident {}",
        sampled as f64 / kernel as f64,
        run.target("/resident/peak_bytes")
    );
    assert!(
        within(sampled, kernel, 0.05, 2 * MIB),
        "{what}: sampled peak {sampled} vs kernel high-water mark {kernel}"
    );
    assert!(
        run.target("/resident/peak_bytes") > 0,
        "{what}: no resident memory seen"
    );
    assert_no_leak(run);
}

#[test]
fn stress_ng_stressors_peaks_match_the_kernel() {
    let Some(_guard) = privileged("stress_ng_stressors_peaks_match_the_kernel") else {
        return;
    };
    for (what, args) in [
        ("vm", &["--vm", "1", "--vm-bytes", "96M", "--vm-keep"][..]),
        ("mmap", &["--mmap", "1", "--mmap-bytes", "64M"]),
        ("pthread", &["--pthread", "2", "--pthread-max", "16"]),
    ] {
        let mut command = vec!["stress-ng", "--timeout", "3s", "--quiet"];
        command.extend_from_slice(args);
        let run = capture(&command);
        assert!(run.output.status.success(), "{what}: {}", run.stderr());
        assert_peak_matches_kernel(&run, what);
        if what == "pthread" {
            assert!(run.target("/threads/created") > 10, "{what}: threads");
        }
    }
}

#[test]
fn redis_under_redis_benchmark_peak_matches_the_kernel() {
    let Some(_guard) = privileged("redis_under_redis_benchmark_peak_matches_the_kernel") else {
        return;
    };
    let port = common::free_port().to_string();
    let report =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{}.json", std::process::id()));
    let server = Running {
        capture: common::BackgroundCapture::spawn(
            headroom()
                .args(["capture", "--format", "json", "--output"])
                .arg(&report)
                .args(["--", "redis-server", "--port", &port, "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
                .stdout(Stdio::null()),
        ),
        report,
    };
    // Loading the probes takes seconds on a slow (emulated) machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).is_err() {
        assert!(Instant::now() < deadline, "redis-server never listened");
        thread::sleep(Duration::from_millis(50));
    }
    let benchmark = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "-n",
            "50000",
            "-c",
            "20",
            "-d",
            "4096",
        ])
        .args(["-t", "set,get,lpush"])
        .output()
        .expect("redis-benchmark (redis-tools) is installed");
    assert!(benchmark.status.success());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.capture.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("stop redis");
    let run = finish_capture(server);
    assert_peak_matches_kernel(&run, "redis");
    assert!(
        run.target("/memory/peak_bytes") > 100 * MIB,
        "50000 x 4 KiB values and more"
    );
}

#[test]
fn an_oom_kill_is_reported_with_the_timeline_before_it() {
    let Some(_guard) = privileged("an_oom_kill_is_reported_with_the_timeline_before_it") else {
        return;
    };
    let program = workload("spike", false);
    let program = program.to_str().expect("utf-8");
    // A 200 MiB spike under a 64 MiB limit: the kernel kills it.
    let run = common::capture_with(
        &["--memory-limit", "64Mi"],
        &[program, "16", "200", "60", "500", "200"],
    );
    assert_eq!(run.output.status.code(), Some(128 + 9), "{}", run.stderr());
    assert_eq!(run.target("/oom_kills"), 1);
    assert_eq!(
        run.target("/oom_kills_cgroup"),
        1,
        "the cgroup's own count agrees"
    );
    assert_eq!(run.target("/memory/limit_bytes"), 64 * MIB);
    let event = &run.target_json()["oom_events"][0];
    assert_eq!(event["pid"].as_u64(), Some(run.target("/pids/0")));
    assert_eq!(event["command"], "spike");
    let anon = event["anon_rss_bytes"].as_u64().expect("anon rss");
    assert!(
        (32 * MIB..=64 * MIB).contains(&anon),
        "anon at the kill {anon}"
    );
    let before = event["timeline_before"]["buckets"]
        .as_array()
        .expect("timeline");
    assert!(!before.is_empty());
    let highest = before
        .iter()
        .filter_map(|bucket| bucket["charged"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        highest >= 48 * MIB,
        "the climb to the limit is in the timeline: {highest}"
    );
    assert_no_leak(&run);
}

/// One address space, two processes: posix_spawn (glibc: clone with CLONE_VM | CLONE_VFORK)
/// and vfork children run on their parent's memory until they exec, and a fork child on a
/// copy of it that shares every page copy-on-write. rss_stat counts each address space, so
/// the children must not add the parent's 200 MiB again.
#[test]
fn spawned_vforked_and_forked_children_do_not_count_their_parents_memory_again() {
    let Some(_guard) =
        privileged("spawned_vforked_and_forked_children_do_not_count_their_parents_memory_again")
    else {
        return;
    };
    let program = workload("spawn_children", false);
    let program = program.to_str().expect("utf-8");
    let run = capture(&[program, "200", "10", "/bin/true"]);
    assert!(run.output.status.success(), "{}", run.stderr());
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert_eq!(key_value(&stdout, "spawned"), 30, "{stdout}");
    let vm_hwm = key_value(&stdout, "vm_hwm_kib") * 1024;
    let resident = run.target("/resident/peak_bytes");
    eprintln!("measured: resident peak {resident} vs the parent's VmHWM {vm_hwm}");
    assert!(
        resident as f64 <= vm_hwm as f64 * 1.1,
        "resident peak {resident} vs VmHWM {vm_hwm}: a child counted its parent's memory"
    );
    assert!(resident >= vm_hwm * 9 / 10, "resident peak {resident}");
    assert_eq!(run.target("/activity/processes_created"), 30);
    assert_no_leak(&run);
}
