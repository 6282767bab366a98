//! Golden-output tests of `headroom recommend` on a saved report of the demo service, and the
//! demo's recommendation from a live capture.
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test recommend`, and review the diff.

mod common;

use std::path::{Path, PathBuf};

use common::{headroom, privileged, workload};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

/// Runs `headroom recommend` in the golden directory and compares its stdout with a file.
fn check_golden(args: &[&str], golden: &str) {
    let output = headroom()
        .current_dir(golden_dir())
        .arg("recommend")
        .args(args)
        .output()
        .expect("run headroom recommend");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual = String::from_utf8(output.stdout).expect("utf-8 output");
    let path = golden_dir().join(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

#[test]
fn table_matches_the_golden_file() {
    check_golden(&["demo-report.json"], "demo.table.txt");
}

#[test]
fn json_matches_the_golden_file() {
    check_golden(
        &["demo-report.json", "--format", "json"],
        "demo.recommendation.json",
    );
}

#[test]
fn yaml_patches_match_the_golden_files() {
    check_golden(
        &["demo-report.json", "--format", "yaml"],
        "demo.resources.yaml",
    );
    check_golden(
        &["demo-report.json", "--format", "yaml", "--container", "app"],
        "demo.strategic-merge.yaml",
    );
}

#[test]
fn markdown_matches_the_golden_file() {
    check_golden(&["demo-report.json", "--format", "markdown"], "demo.md");
}

#[test]
fn replicas_merge_and_current_settings_are_compared() {
    let output = headroom()
        .current_dir(golden_dir())
        .args([
            "recommend",
            "demo-report.json",
            "demo-report.json",
            "--format",
            "json",
        ])
        .args(["--current-request", "1Gi", "--current-limit", "256Mi"])
        .output()
        .expect("run headroom recommend");
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let flags: Vec<&str> = json["recommendation"]["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|flag| flag["kind"].as_str())
        .collect();
    assert!(flags.contains(&"oom_risk"), "{flags:?}");
    assert!(flags.contains(&"over_provisioned"), "{flags:?}");
    assert!(json["target"]
        .as_str()
        .expect("name")
        .contains("2 replicas"));
}

#[test]
fn bad_reports_get_clear_errors() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let not_json = dir.join("not-a-report.txt");
    std::fs::write(&not_json, "hello").expect("write");
    let output = headroom()
        .arg("recommend")
        .arg(&not_json)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not-a-report.txt") && stderr.contains("not JSON"),
        "{stderr}"
    );
    let wrong = dir.join("wrong-schema.json");
    std::fs::write(&wrong, r#"{"schema": "other/v9"}"#).expect("write");
    let output = headroom()
        .arg("recommend")
        .arg(&wrong)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected headroom.report/v1"));
    let output = headroom()
        .args(["recommend", "/no/such/report.json"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read report"));
}

#[test]
fn the_demo_service_gets_a_limit_above_its_startup_peak_and_a_request_near_steady_state() {
    let Some(_guard) = privileged("the_demo_service_gets_a_limit_above_its_startup_peak") else {
        return;
    };
    let program = workload("demo_service", false);
    let program = program.to_str().expect("utf-8");
    let run = common::capture(&[program]);
    assert!(run.output.status.success(), "{}", run.stderr());
    let startup_peak = run.target("/memory/startup_peak_bytes") as f64;
    let steady = run.target("/memory/steady_bytes") as f64;
    let limit = run.target("/recommendation/limit_bytes") as f64;
    let request = run.target("/recommendation/request_bytes") as f64;
    assert!(
        (1.20..=1.35).contains(&(limit / startup_peak)),
        "limit {limit} vs startup peak {startup_peak}"
    );
    assert!(
        (request / steady - 1.0).abs() <= 0.30,
        "request {request} vs steady {steady}"
    );
    let reasons = run.target_json()["recommendation"]["reasons"].to_string();
    assert!(reasons.contains("startup"), "{reasons}");
    assert_eq!(
        run.target_json()["checklist"]["startup_peaks_measured"]["answer"],
        true
    );
}
