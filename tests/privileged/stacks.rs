//! Which code made the memory: real probes sample stacks where a workload faults memory in and
//! reserves it, and the report, the folded stacks and the flame graph must name the function.
//!
//! They need root. Without it they print SKIPPED, except in CI or under `cargo xtask test`,
//! where they fail.

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;

use common::{
    capture_with, leftover_session_cgroups, privileged, workload, workload_without_frame_pointers,
};

const MIB: u64 = 1 << 20;

/// 40 MiB base from load_base_cache, then 200 MiB for 300 ms from build_spike_cache.
const SPIKE_ARGS: [&str; 5] = ["40", "200", "300", "1500", "1500"];

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_sources_sorted(target: &serde_json::Value) {
    let bytes: Vec<u64> = target["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|source| source["bytes"].as_u64().expect("bytes"))
        .collect();
    assert!(
        bytes.windows(2).all(|pair| pair[0] >= pair[1]),
        "sources not sorted by bytes: {bytes:?}"
    );
}

/// No source or frame is an address outside a known mapping, and no source is empty.
fn assert_no_noise(target: &serde_json::Value) {
    for source in target["sources"].as_array().expect("sources") {
        let name = source["name"].as_str().expect("name");
        assert!(!name.starts_with("[unknown]"), "noise source {source}");
        assert!(
            source["bytes"].as_u64().unwrap_or(0) > 0,
            "0-byte source {source}"
        );
        for frame in strings(&source["frames"]) {
            assert!(!frame.starts_with("[unknown]"), "address frame in {source}");
        }
    }
    for stack in target["stacks"]["top"].as_array().expect("top stacks") {
        for frame in strings(&stack["frames"]) {
            assert!(!frame.starts_with("[unknown]"), "address frame in {stack}");
        }
    }
    // Whatever was dropped is counted (the fields exist, even when 0).
    assert!(target["stacks"]["dropped_frames"].is_u64());
    assert!(target["stacks"]["samples_outside_mappings"].is_u64());
}

/// The spike of the charge that is ~200 MiB above steady state.
fn big_spike(target: &serde_json::Value) -> &serde_json::Value {
    target["spikes"]
        .as_array()
        .expect("spikes")
        .iter()
        .find(|spike| spike["bytes_above_steady"].as_u64().unwrap_or(0) > 150 * MIB)
        .unwrap_or_else(|| panic!("no 200 MiB spike in {}", target["spikes"]))
}

#[test]
fn frame_pointer_workload_names_the_allocating_function_everywhere() {
    let Some(_guard) =
        privileged("frame_pointer_workload_names_the_allocating_function_everywhere")
    else {
        return;
    };
    let binary = workload("spike_source", false);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let svg = dir.join(format!("flame-{}.svg", std::process::id()));
    let folded = dir.join(format!("folded-{}.txt", std::process::id()));
    let binary = binary.to_str().expect("utf-8 path");
    let mut command = vec![binary];
    command.extend(SPIKE_ARGS);
    let captured = capture_with(
        &[
            "--flamegraph",
            svg.to_str().expect("path"),
            "--folded",
            folded.to_str().expect("path"),
        ],
        &command,
    );
    assert!(captured.output.status.success(), "{}", captured.stderr());
    let target = captured.target_json();

    // 1. The top source is the function, with about the 200 MiB it touched.
    let top = &target["sources"][0];
    assert_eq!(top["kind"], "code_path", "top source: {top}");
    assert_eq!(
        top["name"], "build_spike_cache",
        "sources: {}",
        target["sources"]
    );
    let bytes = top["bytes"].as_u64().expect("bytes");
    assert!(
        bytes.abs_diff(200 * MIB) <= 20 * MIB,
        "build_spike_cache made {bytes} bytes by the samples, expected about 200 MiB"
    );
    assert_sources_sorted(target);
    assert_no_noise(target);
    // Frame pointers unwind fully: the callers are there too.
    let frames = strings(&top["frames"]);
    assert_eq!(
        frames.first().map(String::as_str),
        Some("build_spike_cache")
    );
    assert!(
        frames.iter().any(|f| f == "serve_burst") && frames.iter().any(|f| f == "main"),
        "frames {frames:?}"
    );

    // 2. The spike names it.
    let spike = big_spike(target);
    assert_eq!(spike["source"], "build_spike_cache", "spike {spike}");
    assert!(strings(&spike["frames"]).contains(&"build_spike_cache".to_owned()));

    // 3. The flame graph and the folded stacks have it, with its callers.
    let drawn = std::fs::read_to_string(&svg).expect("flame graph written");
    assert!(drawn.starts_with("<?xml") && drawn.contains("build_spike_cache"));
    let lines = std::fs::read_to_string(&folded).expect("folded stacks written");
    let line = lines
        .lines()
        .find(|line| {
            line.starts_with("resident;") && line.contains(";serve_burst;build_spike_cache ")
        })
        .unwrap_or_else(|| panic!("no folded stack for build_spike_cache:\n{lines}"));
    let weight: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|w| w.parse().ok())
        .expect("weight");
    assert!(weight.abs_diff(200 * MIB) <= 20 * MIB, "{line}");

    let stacks = &target["stacks"];
    assert_eq!(stacks["unwinding"], "frame_pointers");
    assert!(stacks["samples"].as_u64().expect("samples") >= 400);
    assert_eq!(captured.number("/drops/ringbuf_full"), 0);
    assert_eq!(captured.report["undecodable_events"], 0);
    let _ = std::fs::remove_file(&svg);
    let _ = std::fs::remove_file(&folded);
    assert!(leftover_session_cgroups().is_empty());
}

#[test]
fn without_frame_pointers_the_limit_is_reported_and_eh_frame_unwinding_recovers() {
    let Some(_guard) =
        privileged("without_frame_pointers_the_limit_is_reported_and_eh_frame_unwinding_recovers")
    else {
        return;
    };
    let binary = workload_without_frame_pointers("spike_source");
    let binary = binary.to_str().expect("utf-8 path");
    let mut command = vec![binary];
    command.extend(SPIKE_ARGS);

    // Frame pointers only: glibc's memset has none, so the base allocation's caller is lost
    // and the report says so.
    let plain = capture_with(&[], &command);
    let target = plain.target_json();
    let limits = strings(&target["stacks"]["limits"]);
    assert!(
        limits
            .iter()
            .any(|l| l.contains("frame pointers") && l.contains("--unwind eh-frame")),
        "no documented limit in {limits:?}"
    );

    // .eh_frame unwinding names the allocating functions and their callers.
    let unwound = capture_with(&["--unwind", "eh-frame"], &command);
    assert!(unwound.output.status.success(), "{}", unwound.stderr());
    let target = unwound.target_json();
    let top = &target["sources"][0];
    assert_eq!(
        top["name"], "build_spike_cache",
        "sources: {}",
        target["sources"]
    );
    let frames = strings(&top["frames"]);
    assert!(
        frames.iter().any(|f| f == "serve_burst") && frames.iter().any(|f| f == "main"),
        "frames {frames:?}"
    );
    // load_base_cache faults inside glibc's memset: named as the code path through it.
    let base = target["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|source| source["name"] == "load_base_cache")
        .unwrap_or_else(|| panic!("load_base_cache missing from {}", target["sources"]));
    assert!(base["bytes"].as_u64().expect("bytes").abs_diff(40 * MIB) <= 8 * MIB);
    // Reservations: malloc's 200 MiB mmap is attributed through glibc to the function.
    assert!(
        top["reserved_bytes"].as_u64().expect("reserved") >= 200 * MIB,
        "{top}"
    );
    assert_eq!(big_spike(target)["source"], "build_spike_cache");
    assert!(strings(&target["stacks"]["limits"]).is_empty());
    assert_eq!(target["stacks"]["unwinding"], "eh_frame");
    assert_sources_sorted(target);
    assert_no_noise(target);
    assert!(leftover_session_cgroups().is_empty());
}

#[test]
fn no_stacks_turns_sampling_off() {
    let Some(_guard) = privileged("no_stacks_turns_sampling_off") else {
        return;
    };
    let binary = workload("spike_source", false);
    let binary = binary.to_str().expect("utf-8 path");
    let captured = capture_with(&["--no-stacks"], &[binary, "8", "16", "50", "100", "100"]);
    let target = captured.target_json();
    assert!(target["stacks"].is_null());
    assert!(target["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .all(|source| source["kind"] != "code_path"));
}

/// `go` from Debian's golang-go (installed by `cargo xtask setup`). Missing: None, or a
/// failure where privileged tests must run (CI, `cargo xtask test`).
fn go_tool(test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("go"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let required = std::env::var_os("HEADROOM_REQUIRE_PRIVILEGED").is_some()
            || std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        assert!(
            !required,
            "{test}: `go` is not on PATH: install Debian's golang-go (cargo xtask setup does)"
        );
        eprintln!("SKIPPED {test}: `go` is not on PATH (install golang-go)");
    }
    found
}

/// The function names `go tool pprof -top` lists, heaviest flat first, and its `File:` and
/// `Type:` lines.
fn pprof_top(go: &Path, profile: &Path) -> (String, String, Vec<String>) {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pprof-home");
    std::fs::create_dir_all(&home).expect("pprof home");
    let output = std::process::Command::new(go)
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(profile)
        // pprof keeps state under $HOME/pprof; keep it out of the real home.
        .env("HOME", &home)
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("run go tool pprof");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof failed: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in\n{text}"))
            .to_owned()
    };
    let (file, kind) = (line("File: "), line("Type: "));
    // Rows after the `flat  flat%  sum%  cum  cum%` header: five figures, then the name.
    let names = text
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 5).then(|| fields[5..].join(" "))
        })
        .collect();
    (file, kind, names)
}

#[test]
fn pprof_export_opens_in_go_tool_pprof_with_the_report_top_function() {
    let test = "pprof_export_opens_in_go_tool_pprof_with_the_report_top_function";
    let Some(_guard) = privileged(test) else {
        return;
    };
    let Some(go) = go_tool(test) else {
        return;
    };
    let binary = workload("spike_source", false);
    let binary = binary.to_str().expect("utf-8 path");
    let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("profile-{}.pb.gz", std::process::id()));
    let mut command = vec![binary];
    command.extend(SPIKE_ARGS);
    let captured = capture_with(&["--pprof", profile.to_str().expect("path")], &command);
    assert!(captured.output.status.success(), "{}", captured.stderr());
    let target = captured.target_json();
    let top_source = target["sources"][0]["name"]
        .as_str()
        .expect("a top source")
        .to_owned();
    // The workload faults its 200 MiB in its own frame, so the report's code path is also
    // pprof's heaviest leaf.
    assert_eq!(top_source, "build_spike_cache", "{}", target["sources"]);

    let bytes = std::fs::read(&profile).expect("pprof written");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "not gzip");
    let (file, kind, names) = pprof_top(&go, &profile);
    assert_eq!(kind, "faulted", "default sample type");
    assert_eq!(file, "spike_source", "the profiled binary");
    assert_eq!(
        names.first().map(String::as_str),
        Some(top_source.as_str()),
        "go tool pprof -top lists {names:?}"
    );
    assert!(names.iter().any(|name| name == "main"), "{names:?}");
    let _ = std::fs::remove_file(&profile);
}

/// Builds tests/workloads/rust_service as users build theirs (`cargo build --release`: lld,
/// PIE, no frame pointers, symbols kept, glibc malloc) into this test's own target directory.
fn rust_service() -> std::path::PathBuf {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/rust_service/Cargo.toml");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-service");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--offline",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // As a user builds: none of this build's flags (no forced frame pointers).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {} failed", manifest.display());
    target_dir.join("release/rust_service")
}

#[test]
fn a_rust_release_build_is_unwound_to_main_and_named_by_its_own_functions() {
    let Some(_guard) =
        privileged("a_rust_release_build_is_unwound_to_main_and_named_by_its_own_functions")
    else {
        return;
    };
    let binary = rust_service();
    let binary = binary.to_str().expect("utf-8 path");
    let captured = capture_with(
        &["--unwind", "eh-frame"],
        &[binary, "64", "200", "300", "1000", "1000"],
    );
    assert!(captured.output.status.success(), "{}", captured.stderr());
    let target = captured.target_json();
    let sources = target["sources"].as_array().expect("sources");
    let source = |name: &str| {
        sources
            .iter()
            .find(|source| source["name"] == name)
            .unwrap_or_else(|| panic!("no source {name} in {}", target["sources"]))
    };
    // The service's own functions name the sources (demangled, no hash), not alloc or libc.
    let burst = source("rust_service::build_burst_index");
    let catalog = source("rust_service::load_catalog");
    assert_eq!(sources[0]["name"], "rust_service::build_burst_index");
    let burst_bytes = burst["bytes"].as_u64().expect("bytes");
    assert!(
        burst_bytes.abs_diff(200 * MIB) <= 20 * MIB,
        "build_burst_index made {burst_bytes} bytes by the samples, expected about 200 MiB"
    );
    let catalog_bytes = catalog["bytes"].as_u64().expect("bytes");
    assert!(
        catalog_bytes.abs_diff(64 * MIB) <= 8 * MIB,
        "load_catalog made {catalog_bytes} bytes by the samples, expected about 64 MiB"
    );
    for source in sources.iter().filter(|s| s["kind"] == "code_path") {
        let name = source["name"].as_str().expect("name");
        assert!(
            !name.starts_with("alloc::") && !name.starts_with("<alloc::"),
            "source named by alloc internals: {name}"
        );
        assert!(
            !name.starts_with("_ZN") && !name.starts_with("_R"),
            "mangled: {name}"
        );
    }
    // The whole stack is kept: through alloc, the service's callers, to main.
    let frames = strings(&burst["frames"]);
    let position = |name: &str| frames.iter().position(|frame| frame == name);
    let (Some(index), Some(serve), Some(main)) = (
        position("rust_service::build_burst_index"),
        position("rust_service::serve_burst"),
        position("rust_service::main"),
    ) else {
        panic!("stack does not reach main: {frames:?}");
    };
    assert!(index < serve && serve < main, "{frames:?}");
    // Legacy mangling ends in `::h` and 16 hex digits; demangled names have none.
    let hashed = |frame: &String| {
        frame.rsplit("::").next().is_some_and(|last| {
            last.len() == 17
                && last.starts_with('h')
                && last[1..].chars().all(|c| c.is_ascii_hexdigit())
        })
    };
    assert!(!frames.iter().any(hashed), "hash suffix left in {frames:?}");
    assert!(strings(&catalog["frames"]).contains(&"rust_service::main".to_owned()));
    assert_no_noise(target);
    assert_eq!(
        big_spike(target)["source"],
        "rust_service::build_burst_index"
    );
}

/// A copy of `binary` whose `.gnu_debuglink` names `target` (an absolute path, as a hostile
/// container image can write it; objcopy --add-gnu-debuglink would keep the base name only).
fn with_debug_link(binary: &Path, target: &Path, out: &Path) {
    let mut section = target.as_os_str().as_encoded_bytes().to_vec();
    section.push(0);
    while !section.len().is_multiple_of(4) {
        section.push(0);
    }
    // The CRC of the linked file; never checked here, since nothing may open it.
    section.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    let section_file = out.with_extension("debuglink");
    std::fs::write(&section_file, section).expect("section contents");
    let status = std::process::Command::new("objcopy")
        .arg(format!(
            "--add-section=.gnu_debuglink={}",
            section_file.display()
        ))
        .arg(binary)
        .arg(out)
        .status()
        .expect("run objcopy (binutils)");
    assert!(status.success(), "objcopy failed");
    let _ = std::fs::remove_file(&section_file);
}

#[test]
fn a_debug_link_to_a_fifo_does_not_block_symbolization() {
    let Some(_guard) = privileged("a_debug_link_to_a_fifo_does_not_block_symbolization") else {
        return;
    };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debuglink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let fifo = dir.join("debug.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    let linked = dir.join("spike_source_linked");
    with_debug_link(&workload("spike_source", false), &fifo, &linked);
    let report = dir.join("report.json");
    let mut child = common::headroom()
        .args([
            "capture", "--format", "json", "--unwind", "eh-frame", "--output",
        ])
        .arg(&report)
        .arg("--")
        .arg(&linked)
        .args(["8", "64", "200", "300", "300"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run headroom");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("the capture hung for 60 s: symbolization opened the debug link's FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "capture failed: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    // Symbols still come from the binary's own symbol table.
    let target = &report["targets"][0];
    assert_eq!(
        target["sources"][0]["name"], "build_spike_cache",
        "{}",
        target["sources"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
