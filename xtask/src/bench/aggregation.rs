//! Part `aggregation`: the throughput of the user-space event path. Runs the criterion bench
//! `profiler/benches/aggregation.rs` (decoding ring-buffer records, and decoding plus
//! accounting them as a capture does) and reads criterion's own estimates back: the median
//! time per pass of the stream and its confidence interval, turned into events per second on
//! one core and judged against the aggregator's target.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};

use crate::run;

/// Target of the aggregator: events per second on one core.
const AGGREGATION_TARGET: f64 = 2_000_000.0;

/// Part 3: the criterion bench `profiler/benches/aggregation.rs`, read back from criterion's
/// own estimates (median time per pass of the stream, and the stream's element count).
pub(super) fn aggregation(target: &Path, machine: &str) -> Result<String> {
    let home = target.join("criterion");
    // Stale estimates from an earlier run must never be read as this run's.
    let _ = std::fs::remove_dir_all(home.join("aggregation"));
    let mut bench = crate::cargo();
    bench
        .args([
            "bench",
            "--locked",
            "-p",
            "profiler",
            "--bench",
            "aggregation",
        ])
        .env("CRITERION_HOME", &home);
    run(bench)?;
    let mut table = String::from(
        "| path | records per pass | median time per pass | events/s per core (median) | 95 % interval of the median | target |\n|---|---|---|---|---|---|\n",
    );
    for (id, what, judged) in [
        ("decode", "ring-buffer record → `decode_event`", false),
        (
            "decode_and_account",
            "record → `decode_event` → `RegionTracker` + `ProcessTable` (capture's per-event path)",
            true,
        ),
    ] {
        let dir = home.join("aggregation").join(id).join("new");
        let estimate = CriterionEstimate::read(&dir)?;
        let rate = estimate.rate(estimate.median_ns);
        let verdict = if !judged {
            "—".to_owned()
        } else if rate >= AGGREGATION_TARGET {
            format!("≥ 2 M/s: met ({:.1}×)", rate / AGGREGATION_TARGET)
        } else {
            format!("≥ 2 M/s: missed ({:.2}×)", rate / AGGREGATION_TARGET)
        };
        let _ = writeln!(
            table,
            "| {what} | {} | {:.2} ms | {:.2} M/s | {:.2}–{:.2} M/s | {verdict} |",
            estimate.elements,
            estimate.median_ns / 1e6,
            rate / 1e6,
            estimate.rate(estimate.median_upper_ns) / 1e6,
            estimate.rate(estimate.median_lower_ns) / 1e6,
        );
    }
    Ok(format!(
        "## Aggregator throughput\n\n\
         On {machine}: `profiler/benches/aggregation.rs` under criterion, one thread, so events \
         per second are per core. The stream is 100000 ring-buffer records built from the wire \
         structs of `profiler-ebpf/common` and laid out as the BPF ring buffer holds them (8-byte \
         record header, 8-byte alignment): 200 live processes with churn (start and exit events \
         with full counters), malloc-style anonymous mmap and munmap (some partial), arena \
         mprotect, brk up and down, thread stacks mapped, guarded and unmapped, file maps and \
         mremap. Each pass decodes the records in batches of 256, as `EventStream` drains the \
         ring, and applies them as a capture session does (`RegionTracker`, `ProcessTable`), \
         starting from empty state. Stack samples (on by default in captures) are not in the \
         stream: their cost is unwinding and symbolization in `StackCollector`, which needs a \
         bench of its own.\n\n{table}\n\
         Reproduce: `cargo bench --locked -p profiler --bench aggregation` (or `sudo cargo xtask \
         bench --only aggregation`).\n\n\
         Not benched here: the agent's per-tick path (reading `TARGET_COUNTERS`, then charge \
         files, timeline, phases, sizing and Prometheus series per container) lives in \
         `Agent::tick`, which owns the loaded probes and cannot run without BPF. Its real cost is \
         the idle CPU in the footprint section, measured on the running agent.\n"
    ))
}

/// What criterion wrote for one benchmark.
struct CriterionEstimate {
    elements: u64,
    median_ns: f64,
    median_lower_ns: f64,
    median_upper_ns: f64,
}

impl CriterionEstimate {
    fn read(dir: &Path) -> Result<Self> {
        let json = |file: &str| -> Result<serde_json::Value> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading criterion's {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let estimates = json("estimates.json")?;
        let benchmark = json("benchmark.json")?;
        let number = |value: &serde_json::Value, pointer: &str| {
            value
                .pointer(pointer)
                .and_then(serde_json::Value::as_f64)
                .with_context(|| {
                    format!("criterion's output in {} has no {pointer}", dir.display())
                })
        };
        let elements = benchmark
            .pointer("/throughput/Elements")
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("{} has no element throughput", dir.display()))?;
        Ok(Self {
            elements,
            median_ns: number(&estimates, "/median/point_estimate")?,
            median_lower_ns: number(&estimates, "/median/confidence_interval/lower_bound")?,
            median_upper_ns: number(&estimates, "/median/confidence_interval/upper_bound")?,
        })
    }

    /// Elements per second for a time per pass.
    fn rate(&self, ns: f64) -> f64 {
        self.elements as f64 * 1e9 / ns.max(f64::MIN_POSITIVE)
    }
}
