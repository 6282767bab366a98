//! Sizing scenarios: real programs with known memory behaviour (tests/workloads/sizing.c) run
//! through `headroom capture`, and the recommendation checked against what each program says
//! it did (its own VmRSS / VmHWM, bursts counted, MiB leaked) and the kernel's cgroup files.
//! Ranges, not exact values: each assertion fails if the rule it is about is broken.
//!
//! They need root. Without it they print SKIPPED, except in CI or under `cargo xtask test`,
//! where they fail.

#[path = "../common/mod.rs"]
mod common;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
};

use common::{capture_with, headroom, privileged, workload, Captured, TestCgroup};

const MIB: u64 = 1 << 20;

fn key_value(stdout: &str, key: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("workload printed no {key}: {stdout}"))
}

fn stdout(run: &Captured) -> String {
    String::from_utf8_lossy(&run.output.stdout).into_owned()
}

fn recommendation(run: &Captured) -> &serde_json::Value {
    &run.target_json()["recommendation"]
}

fn flag_kinds(run: &Captured) -> Vec<String> {
    recommendation(run)["flags"]
        .as_array()
        .map(|flags| {
            flags
                .iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn reasons(run: &Captured) -> String {
    recommendation(run)["reasons"].to_string()
}

fn program() -> String {
    workload("sizing", false).display().to_string()
}

/// A file on a disk-backed filesystem (page cache, not tmpfs/shmem), removed on drop. In
/// /var/tmp, not the target dir: the kernel-matrix guests see the checkout through a tmpfs
/// overlay, where a written file is shmem, which no kernel reclaims.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn new(tag: &str) -> Self {
        let dir = Path::new("/var/tmp");
        let kind = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir)
            .output()
            .expect("stat -f");
        let kind = String::from_utf8_lossy(&kind.stdout).trim().to_owned();
        assert!(
            kind != "tmpfs" && kind != "ramfs",
            "{} is on {kind}: the page-cache scenario needs a disk-backed filesystem",
            dir.display()
        );
        Self(dir.join(format!("headroom-sizing-{tag}-{}.data", std::process::id())))
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// 40 MiB of anonymous memory, then 320 MiB written to a file: the charge holds the cache,
/// the working set does not. The limit is sized from the working set (within 2× what the
/// program holds), the cache has its own line, and a second capture under the recommended
/// limit gives the same limit (no ratchet) without an `oom_risk` flag.
#[test]
fn a_page_cache_writer_is_sized_from_its_working_set_and_does_not_ratchet() {
    let Some(_guard) = privileged("a_page_cache_writer_is_sized_from_its_working_set") else {
        return;
    };
    let file = ScratchFile::new("cache");
    let path = file.0.display().to_string();
    let program = program();
    let command = [program.as_str(), "cache", "40", &path, "320", "1500"];
    let run = capture_with(&["--memory-limit", "1Gi"], &command);
    let held = key_value(&stdout(&run), "hwm_bytes");
    let charge_peak = run.target("/memory/peak_bytes");
    assert!(
        charge_peak > 300 * MIB,
        "the file's cache should be charged: peak {charge_peak}"
    );
    let limit = run.target("/recommendation/limit_bytes");
    assert!(
        limit <= 2 * held.max(32 * MIB),
        "limit {limit} vs the program's own VmHWM {held}: {}",
        reasons(&run)
    );
    assert!(
        limit as f64 >= held as f64 * 1.2,
        "limit {limit} below what the program held {held}"
    );
    assert!(
        run.target("/recommendation/page_cache_peak_bytes") > 200 * MIB,
        "{}",
        recommendation(&run)
    );
    assert!(
        reasons(&run).contains("page cache: up to"),
        "{}",
        reasons(&run)
    );

    // Under the recommended limit, the cache fills the charge to the limit: still no risk,
    // and no ratchet (a charge-based rule would recommend the limit × 1.25 every time). Pages
    // waiting for writeback under the tighter limit are working set, so the answer may move
    // by a few MiB, but stays in the range of what the program holds.
    let limit_flag = format!("{limit}");
    let again = capture_with(&["--memory-limit", &limit_flag], &command);
    assert_eq!(again.target("/oom_kills"), 0, "{}", again.stderr());
    let charge_again = again.target("/memory/peak_bytes");
    assert!(
        charge_again as f64 >= limit as f64 * 0.9,
        "the cache should fill the charge to the limit {limit}: {charge_again}"
    );
    let second = again.target("/recommendation/limit_bytes");
    assert!(
        (second as f64) < limit as f64 * 1.2 && second <= 2 * held.max(32 * MIB),
        "a capture under the recommended {limit} recommends {second}: {}",
        reasons(&again)
    );
    assert!(
        !flag_kinds(&again).contains(&"oom_risk".to_owned()),
        "{:?}",
        recommendation(&again)["flags"]
    );
}

/// 60 MiB held, an 80 MiB burst held 300 ms every 1.5 s: a steady state at the base (within
/// 10 % of what the program holds between bursts), the bursts as spikes, and a limit over the
/// burst peak. The burst is 80 MiB, not more, so that the kernel-matrix guests (emulated,
/// about 60 µs a page fault) touch it in about a second and still spend most of each cycle at
/// the base.
#[test]
fn recurring_bursts_leave_a_steady_state_and_a_limit_over_the_burst_peak() {
    let Some(_guard) = privileged("recurring_bursts_leave_a_steady_state") else {
        return;
    };
    let program = program();
    let run = capture_with(
        &[],
        &[&program, "bursts", "60", "80", "1500", "300", "15000"],
    );
    let out = stdout(&run);
    let quiet = key_value(&out, "quiet_rss_bytes");
    let burst_peak = key_value(&out, "hwm_bytes");
    let bursts = key_value(&out, "bursts");
    let steady = run.target("/recommendation/steady_bytes");
    assert!(
        steady.abs_diff(quiet) as f64 <= quiet as f64 * 0.10,
        "steady {steady} vs the program's {quiet} between bursts: {}",
        reasons(&run)
    );
    let limit = run.target("/recommendation/limit_bytes");
    assert!(
        limit as f64 >= burst_peak as f64 * 1.2,
        "limit {limit} vs burst peak {burst_peak}: {}",
        reasons(&run)
    );
    // Every burst after startup is a spike (the first may fall in startup).
    let spikes = run.target("/recommendation/spikes");
    assert!(
        spikes + 1 >= bursts && spikes <= bursts,
        "{spikes} spikes for {bursts} bursts: {}",
        reasons(&run)
    );
    let request = run.target("/recommendation/request_bytes");
    assert!(
        request < burst_peak,
        "request {request} should be near the steady state, not the bursts {burst_peak}"
    );
}

/// 50 MiB, then 100 MiB more once at 3 s, kept flat for 12 s: a step, not a leak.
#[test]
fn a_one_time_step_is_not_a_leak() {
    let Some(_guard) = privileged("a_one_time_step_is_not_a_leak") else {
        return;
    };
    let program = program();
    let run = capture_with(&[], &[&program, "step", "50", "100", "3000", "15000"]);
    let after = key_value(&stdout(&run), "rss_after_step_bytes");
    assert!(after > 140 * MIB, "the step happened: {after}");
    assert!(
        !flag_kinds(&run).contains(&"leak".to_owned()),
        "{:?}",
        recommendation(&run)["flags"]
    );
    let limit = run.target("/recommendation/limit_bytes");
    assert!(
        limit as f64 >= after as f64 * 1.2,
        "limit {limit} vs {after}"
    );
}

/// 20 MiB, then 4 MiB more every second for 20 s, never freed: a leak, with its rate and the
/// time it takes to reach the limit at that rate.
#[test]
fn a_real_leak_is_flagged_with_its_time_to_limit() {
    let Some(_guard) = privileged("a_real_leak_is_flagged_with_its_time_to_limit") else {
        return;
    };
    let program = program();
    // 1 MiB every 250 ms.
    let run = capture_with(&[], &[&program, "leak", "20", "4", "20000"]);
    let leaked = key_value(&stdout(&run), "leaked_mib");
    assert!(leaked >= 40, "leaked {leaked} MiB");
    assert!(
        flag_kinds(&run).contains(&"leak".to_owned()),
        "{}",
        recommendation(&run)
    );
    let rate = recommendation(&run)["leak_bytes_per_hour"]
        .as_f64()
        .expect("a leak rate");
    // The program's own rate: what it leaked over the 20 s it ran.
    let own = leaked as f64 / 20.0;
    let per_second = rate / 3600.0 / MIB as f64;
    assert!(
        (per_second - own).abs() <= own * 0.3,
        "{per_second:.2} MiB/s measured, the program leaked {own:.2} MiB/s"
    );
    let seconds = recommendation(&run)["seconds_to_limit"]
        .as_f64()
        .expect("time to limit");
    let limit = run.target("/recommendation/limit_bytes");
    let rss = key_value(&stdout(&run), "rss_bytes");
    let expected = limit.saturating_sub(rss) as f64 / (rate / 3600.0);
    assert!(
        (seconds - expected).abs() <= expected * 0.5 + 5.0,
        "time to limit {seconds} s vs {expected:.0} s from the program's own figures"
    );
    assert_eq!(recommendation(&run)["confidence"], "low");
}

/// Touches 200 MiB under a 64 MiB limit: killed. The recommendation is a lower bound: Low
/// confidence, a floor above the limit that stopped it, and the advice to re-run without it.
#[test]
fn an_oom_kill_under_a_limit_is_a_lower_bound() {
    let Some(_guard) = privileged("an_oom_kill_under_a_limit_is_a_lower_bound") else {
        return;
    };
    let program = program();
    let run = capture_with(
        &["--memory-limit", "64Mi"],
        &[&program, "peak", "200", "200", "1000"],
    );
    assert!(run.target("/oom_kills") >= 1, "{}", run.stderr());
    let r = recommendation(&run);
    assert_eq!(r["confidence"], "low", "{r}");
    assert_eq!(r["worst_peak_source"], "oom", "{r}");
    let floor = run.target("/recommendation/oom_floor_bytes");
    // The kill showed a demand above the 64 MiB limit: the floor is at least that + 100 MiB.
    assert!(floor >= 164 * MIB, "floor {floor}");
    assert!(run.target("/recommendation/limit_bytes") >= floor);
    assert!(
        reasons(&run).contains("re-run the capture without the limit"),
        "{}",
        reasons(&run)
    );
}

/// A program in a cgroup peaks at 300 MiB and settles at 40 MiB before `capture --cgroup`
/// starts: the kernel's high-water mark from before is reported as the peak before the
/// capture and the limit covers it by at least 1.2×.
#[test]
fn a_late_cgroup_capture_covers_the_peak_before_it() {
    let Some(_guard) = privileged("a_late_cgroup_capture_covers_the_peak_before_it") else {
        return;
    };
    let cgroup = TestCgroup::new("late");
    let program = workload("sizing", false);
    let mut child = cgroup.spawn(&program, &["peak", "300", "40", "8000"]);
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut hwm = 0;
    for line in lines.by_ref() {
        let line = line.expect("workload output");
        if let Some(value) = line.strip_prefix("hwm_bytes ") {
            hwm = value.trim().parse().expect("a number");
        }
        if line.starts_with("settled") {
            break;
        }
    }
    let kernel_mark = cgroup
        .memory_file("memory.max_usage_in_bytes")
        .or_else(|| cgroup.memory_file("memory.peak"))
        .expect("kernel high-water mark");
    assert!(
        hwm >= 300 * MIB && kernel_mark >= 300 * MIB,
        "{hwm} {kernel_mark}"
    );
    let report = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sizing-late-{}.json", std::process::id()));
    let output = headroom()
        .args(["capture", "--format", "json", "--output"])
        .arg(&report)
        .args(["--cgroup", &cgroup.path(), "--duration", "4s"])
        .stdin(Stdio::null())
        .output()
        .expect("run headroom");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|err| {
        panic!(
            "no report ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&report);
    let run = Captured {
        output,
        report: serde_json::from_str(&text).expect("JSON"),
    };
    let before = run.target("/memory/peak_before_capture/bytes");
    assert!(
        before >= kernel_mark,
        "reported {before}, the kernel's mark was {kernel_mark} before the capture"
    );
    let limit = run.target("/recommendation/limit_bytes");
    assert!(
        limit as f64 >= 1.2 * hwm as f64,
        "limit {limit} vs the program's earlier peak {hwm}: {}",
        reasons(&run)
    );
    assert_eq!(recommendation(&run)["worst_peak_source"], "before_capture");
}

/// Runs `headroom capture -- sizing ARGS` with the report kept at `path` (for `recommend`).
fn capture_to(path: &Path, args: &[&str]) -> std::process::Output {
    let program = workload("sizing", false);
    let output = headroom()
        .args(["capture", "--format", "json", "--output"])
        .arg(path)
        .arg("--")
        .arg(&program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run headroom");
    assert!(path.exists(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Two replicas: one holds 50 MiB for 20 s, the other 160 MiB for about a second. Each counts
/// the same, so the request covers the second (pooling their buckets would let the long one
/// outvote it: 160 MiB would be under 5 % of the buckets).
#[test]
fn the_worst_of_two_replicas_governs() {
    let Some(_guard) = privileged("the_worst_of_two_replicas_governs") else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let long = dir.join(format!("sizing-replica-long-{}.json", std::process::id()));
    let short = dir.join(format!("sizing-replica-short-{}.json", std::process::id()));
    capture_to(&long, &["peak", "50", "50", "20000"]);
    let output = capture_to(&short, &["peak", "160", "160", "1200"]);
    let held = key_value(&String::from_utf8_lossy(&output.stdout), "hwm_bytes");
    let recommended = headroom()
        .args(["recommend", "--format", "json"])
        .arg(&long)
        .arg(&short)
        .output()
        .expect("run headroom recommend");
    let _ = std::fs::remove_file(&long);
    let _ = std::fs::remove_file(&short);
    assert!(
        recommended.status.success(),
        "{}",
        String::from_utf8_lossy(&recommended.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&recommended.stdout).expect("JSON");
    let request = json["recommendation"]["request_bytes"]
        .as_u64()
        .expect("a request");
    assert!(
        request as f64 >= held as f64 * 0.9,
        "request {request} vs the short replica's {held}: {}",
        json["recommendation"]["reasons"]
    );
}

/// A program that holds 8 MiB for 0.6 s: too little to size from. Both values stand at the
/// 32 MiB floor, and confidence is Low.
#[test]
fn a_too_short_capture_gets_the_floors_and_low_confidence() {
    let Some(_guard) = privileged("a_too_short_capture_gets_the_floors_and_low_confidence") else {
        return;
    };
    let program = program();
    let run = capture_with(&[], &[&program, "peak", "8", "8", "600"]);
    let held = key_value(&stdout(&run), "hwm_bytes");
    assert!(held < 20 * MIB, "{held}");
    assert_eq!(
        run.target("/recommendation/limit_bytes"),
        32 * MIB,
        "{}",
        reasons(&run)
    );
    assert_eq!(run.target("/recommendation/request_bytes"), 32 * MIB);
    assert_eq!(recommendation(&run)["confidence"], "low");
    assert!(
        reasons(&run).contains("to the 32Mi floor"),
        "{}",
        reasons(&run)
    );
}

/// The same for a process tree: a program peaks at 200 MiB resident and settles at 40 MiB
/// before `capture --pid` starts; its VmHWM is the peak before the capture, and the limit
/// covers it.
#[test]
fn a_late_pid_capture_covers_the_peak_before_it() {
    let Some(_guard) = privileged("a_late_pid_capture_covers_the_peak_before_it") else {
        return;
    };
    let program = workload("sizing", false);
    let mut child = common::ChildGuard(
        std::process::Command::new(&program)
            .args(["peak", "200", "40", "30000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload"),
    );
    let mut hwm = 0;
    for line in BufReader::new(child.0.stdout.take().expect("piped stdout")).lines() {
        let line = line.expect("workload output");
        if let Some(value) = line.strip_prefix("hwm_bytes ") {
            hwm = value.trim().parse().expect("a number");
        }
        if line.starts_with("settled") {
            break;
        }
    }
    assert!(hwm >= 200 * MIB, "{hwm}");
    let pid = child.0.id().to_string();
    let report = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sizing-late-pid-{}.json", std::process::id()));
    let output = headroom()
        .args(["capture", "--format", "json", "--output"])
        .arg(&report)
        .args(["--pid", &pid, "--duration", "3s"])
        .stdin(Stdio::null())
        .output()
        .expect("run headroom");
    let _ = child.0.kill();
    let _ = child.0.wait();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|err| {
        panic!(
            "no report ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&report);
    let run = Captured {
        output,
        report: serde_json::from_str(&text).expect("JSON"),
    };
    assert_eq!(run.target("/resident/peak_before_capture/bytes"), hwm);
    let limit = run.target("/recommendation/limit_bytes");
    assert!(
        limit as f64 >= 1.2 * hwm as f64,
        "limit {limit} vs the program's earlier peak {hwm}: {}",
        reasons(&run)
    );
    assert_eq!(recommendation(&run)["worst_peak_source"], "before_capture");
}

/// tests/workloads/jvm_like.c behind a link named `java` (so its argv[0] is a JVM's), in a
/// directory of its own under the test's temporary directory.
fn java_link() -> PathBuf {
    let binary = workload("jvm_like", false);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jvm-like-bin");
    std::fs::create_dir_all(&dir).expect("link dir");
    let link = dir.join("java");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&binary, &link).expect("link named java");
    link
}

fn runtime_flag(run: &Captured) -> String {
    recommendation(run)["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["kind"] == "runtime_reservation")
        .and_then(|f| f["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no runtime_reservation flag: {}", recommendation(run)))
}

/// A JVM-like reservation: `java -Xmx2g` that reserves its 2 GiB heap PROT_NONE and touches
/// 50 MiB of it, for 4 s. The capture reads the JVM and its -Xmx from /proc while it runs; the
/// limit holds the max heap + 25 % non-heap (2560Mi, not the ~70Mi the touched memory calls
/// for), the runtime_reservation flag names the ceiling and the fix, and the allocator item
/// says the heap fits the limit, in numbers.
#[test]
fn a_jvm_like_reservation_sets_the_limit_and_is_flagged() {
    let Some(_guard) = privileged("a_jvm_like_reservation_sets_the_limit_and_is_flagged") else {
        return;
    };
    let java = java_link().display().to_string();
    let run = capture_with(&[], &[&java, "-Xmx2g", "-Xss1m", "Main", "50", "4000"]);
    let out = stdout(&run);
    assert_eq!(
        key_value(&out, "reserved_bytes"),
        2 << 30,
        "{}",
        run.stderr()
    );
    let touched = key_value(&out, "hwm_bytes");
    let process = &run.target_json()["runtime"]["processes"][0];
    assert_eq!(process["runtime"], "jvm", "{process}");
    assert_eq!(process["command"], "java", "{process}");
    assert_eq!(process["runtime_from"], "argv[0] is java", "{process}");
    assert_eq!(process["jvm"]["max_heap_bytes"], 2u64 << 30, "{process}");
    assert_eq!(
        process["jvm"]["max_heap_from"], "-Xmx2g on the command line",
        "{process}"
    );
    // Read again after the loader mapped libc: glibc malloc, from the mapping.
    assert_eq!(process["allocator"], "glibc", "{process}");
    let limit = run.target("/recommendation/limit_bytes");
    // Policy: at least the max heap + 25 % for non-heap memory, rounded up to a MiB.
    assert_eq!(limit, 2560 * MIB, "{}", reasons(&run));
    assert!(
        reasons(&run).contains("limit raised from ")
            && reasons(&run).contains(
                "to 2560Mi to hold the JVM max heap 2.0 GiB (-Xmx2g on the command line, pid "
            ),
        "{}",
        reasons(&run)
    );
    let flag = runtime_flag(&run);
    assert!(
        flag.starts_with("JVM max heap 2.0 GiB (-Xmx2g on the command line, pid ")
            && flag.contains("the observed peak calls for: the limit was raised to 2560Mi")
            && flag.contains("lower -Xmx to at most"),
        "{flag}"
    );
    // What the observation alone calls for is about the 50 MiB touched × 1.25, far below.
    let observed: u64 = flag
        .split("lies beyond the ")
        .nth(1)
        .and_then(|rest| rest.split("Mi").next())
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("no observed limit in {flag}"));
    assert!(
        observed * MIB >= touched && observed * MIB < 4 * touched.max(32 * MIB),
        "observed limit {observed}Mi vs {touched} touched: {flag}"
    );
    let item = &run.target_json()["checklist"]["allocator_reserved_memory_included"];
    assert_eq!(item["answer"], true, "{item}");
    assert!(
        item["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("JVM max heap 2.0 GiB + 25 % = 2.5 GiB within the limit")),
        "{item}"
    );
    eprintln!(
        "jvm-like: limit {limit} bytes ({}), flag: {flag}",
        recommendation(&run)["limit"]
    );
}

/// The same program as a Go-like process: GOMEMLIMIT=1GiB with GOGC=off is a ceiling the heap
/// grows into (the limit holds it + 10 %: 1127Mi); with the collector on it is a soft target,
/// so the limit stays with what was observed, and the flag and the failed allocator item say
/// to lower GOMEMLIMIT.
#[test]
fn a_go_memory_limit_is_held_with_gogc_off_and_flagged_when_soft() {
    let Some(_guard) = privileged("a_go_memory_limit_is_held_with_gogc_off_and_flagged_when_soft")
    else {
        return;
    };
    let program = workload("jvm_like", false).display().to_string();
    let run = capture_with(
        &[],
        &[
            "/usr/bin/env",
            "GOMEMLIMIT=1GiB",
            "GOGC=off",
            &program,
            "Main",
            "50",
            "3000",
        ],
    );
    let process = &run.target_json()["runtime"]["processes"][0];
    assert_eq!(process["runtime"], "go", "{process}");
    assert_eq!(process["go"]["memory_limit_bytes"], 1u64 << 30, "{process}");
    assert_eq!(process["go"]["gc_off"], true, "{process}");
    assert_eq!(
        run.target("/recommendation/limit_bytes"),
        1127 * MIB,
        "{}",
        reasons(&run)
    );
    assert!(runtime_flag(&run)
        .starts_with("GOMEMLIMIT 1.0 GiB (GOMEMLIMIT=1GiB in the environment, pid "));

    let soft = capture_with(
        &[],
        &[
            "/usr/bin/env",
            "GOMEMLIMIT=1GiB",
            &program,
            "Main",
            "50",
            "3000",
        ],
    );
    let limit = soft.target("/recommendation/limit_bytes");
    assert!(
        limit < 256 * MIB,
        "a soft target is not sized: {}",
        reasons(&soft)
    );
    let flag = runtime_flag(&soft);
    assert!(
        flag.contains("lies beyond the limit") && flag.contains("Set GOMEMLIMIT to at most"),
        "{flag}"
    );
    assert!(
        reasons(&soft).contains("the limit is not raised for the GOMEMLIMIT 1.0 GiB"),
        "{}",
        reasons(&soft)
    );
    let item = &soft.target_json()["checklist"]["allocator_reserved_memory_included"];
    assert_eq!(item["answer"], false, "{item}");
}
