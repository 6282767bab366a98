//! Part `sampling`: what stack sampling costs a capture, on a page-fault storm. stress-ng
//! --vm runs under `headroom capture` with stacks off, with frame-pointer sampling and with
//! eh-frame sampling, and alone, the four in rotating order; the figure is stress-ng's own
//! bogo ops/s for the vm stressor. The section gives medians, ratios, the rounds' spread, and
//! the stack samples of one JSON capture of each sampling configuration.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use super::{medians, rotating, rounds, verdict, workloads::WORKLOADS};

/// stress-ng in `sampling`: a 512 MiB page-fault storm for 10 s, with the brief metrics table.
const SAMPLING_STRESS: [&str; 7] = [
    "--vm",
    "1",
    "--vm-bytes",
    "512M",
    "--timeout",
    "10s",
    "--metrics-brief",
];

/// The configurations of `sampling`: label, description, and `headroom capture`'s flags (None:
/// stress-ng alone).
const SAMPLING_CONFIGS: [(&str, &str, Option<&[&str]>); 4] = [
    ("A", "capture, stacks off", Some(&["--no-stacks"])),
    (
        "B",
        "capture, frame-pointer sampling (the default)",
        Some(&[]),
    ),
    (
        "C",
        "capture, eh-frame sampling",
        Some(&["--unwind", "eh-frame"]),
    ),
    ("D", "stress-ng alone, no headroom", None),
];

/// The vm stressor's bogo ops/s (real time) in stress-ng's `--metrics-brief` output: the
/// second-to-last column of its `stress-ng: metrc: [PID] vm ...` line.
fn vm_ops_per_second(text: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_vm_row = fields.len() >= 6
            && fields[0] == "stress-ng:"
            && matches!(fields[1], "metrc:" | "info:")
            && fields[2].starts_with('[')
            && fields[3] == "vm";
        if !is_vm_row {
            return None;
        }
        fields[fields.len() - 2].parse().ok()
    })
}

/// One run of [`SAMPLING_STRESS`], under `headroom capture OUTPUT_ARGS FLAGS --` when `flags`
/// is given; the vm stressor's bogo ops/s.
fn sampling_run(headroom: &Path, flags: Option<&[&str]>, output_args: &[&str]) -> Result<f64> {
    let mut command = match flags {
        Some(flags) => {
            let mut command = Command::new(headroom);
            command
                .arg("capture")
                .args(output_args)
                .args(flags)
                .args(["--", "stress-ng"]);
            command
        }
        None => Command::new("stress-ng"),
    };
    command.args(SAMPLING_STRESS).stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("running {}", crate::describe(&command)))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!(
            "`{}` failed with {}: {text}",
            crate::describe(&command),
            output.status
        );
    }
    vm_ops_per_second(&text).with_context(|| {
        format!(
            "`{}` printed no vm metrics line: {text}",
            crate::describe(&command)
        )
    })
}

/// What one JSON capture of [`SAMPLING_STRESS`] says about its stack samples.
struct StackCounts {
    samples: u64,
    shallow: u64,
    ringbuf_full: u64,
    ops: f64,
}

fn stack_counts(headroom: &Path, flags: &[&str]) -> Result<StackCounts> {
    let path = std::env::temp_dir().join(format!(
        "headroom-bench-sampling-{}.json",
        std::process::id()
    ));
    let path_text = path.to_string_lossy().into_owned();
    let ops = sampling_run(
        headroom,
        Some(flags),
        &["--format", "json", "--output", &path_text],
    );
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let ops = ops?;
    let text = text.with_context(|| format!("reading {path_text}"))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).context("parsing the capture's JSON report")?;
    let number = |pointer: &str| {
        report
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("the capture's JSON report has no {pointer}"))
    };
    Ok(StackCounts {
        samples: number("/targets/0/stacks/samples")?,
        shallow: number("/targets/0/stacks/shallow_samples")?,
        ringbuf_full: number("/drops/ringbuf_full")?,
        ops,
    })
}

/// Part: the cost of stack sampling in captures, on a page-fault storm.
pub(super) fn sampling(headroom: &Path, machine: &str) -> Result<String> {
    let rounds = rounds(5);
    let results = rotating(rounds, SAMPLING_CONFIGS.len(), |round, index| {
        let (label, what, flags) = SAMPLING_CONFIGS[index];
        let rate = sampling_run(headroom, flags, &["--output", "/dev/null"])?;
        eprintln!(
            "[bench] sampling round {}/{rounds}, {label} ({what}): {rate:.0} bogo ops/s",
            round + 1
        );
        Ok(rate)
    })?;
    let rates = Rates::of(results);
    let counts = count_stacks(headroom)?;

    let table = rate_table(&rates);
    let samples = sample_table(&counts);
    let verdicts = verdict_lines(&rates.medians);
    Ok(format!(
        "## Stack sampling cost\n\n\
         On {machine}, {rounds} rounds per configuration, medians. Each run is `stress-ng {}` \
         (a page-fault storm: one worker writing 512 MiB over and over), either under the \
         release `headroom capture --output /dev/null FLAGS -- stress-ng ...` or alone; the \
         figure is stress-ng's own *bogo ops/s (real time)* for the vm stressor, so the \
         capture's start-up and its report after the workload exits are not in it. The four \
         configurations alternate in rotating order (A B C D, B C D A, ...). A capture loads \
         more probes than the agent (the syscall tracepoints for regions), and with stacks on \
         its programs take one user stack per {} faulted per process and per reservation above \
         the threshold; frame pointers are walked in the kernel \
         (`bpf_get_stack`); eh-frame also copies the user registers and 8 KiB of stack per \
         sample (a 9 KiB ring-buffer record) and unwinds them in user space.\n\n{table}\n\
         {verdicts}\n\
         Noise: the rounds of one configuration span up to {:.0} % of its median, lowest to \
         highest ({}), and up to {:.0} % without each configuration's lowest and highest round. \
         A single slow round (this machine is shared) moves a median little, but differences of \
         a few percent between medians are at the edge of what {rounds} rounds resolve here \
         (HEADROOM_BENCH_ROUNDS=N for more).\n\n\
         Stack samples of one more capture of each, with `--format json --output FILE` \
         (`targets[0].stacks`; stress-ng and Debian's glibc have no frame pointers, hence the \
         short stacks with frame pointers):\n\n{samples}\n\
         Reproduce: `sudo cargo xtask bench --only sampling` (HEADROOM_BENCH_ROUNDS=N for more \
         rounds).\n",
        SAMPLING_STRESS.join(" "),
        "512 KiB",
        rates.spread * 100.0,
        SAMPLING_CONFIGS[rates.widest].0,
        rates.inner_spread * 100.0,
    ))
}

/// The rounds of each configuration of [`SAMPLING_CONFIGS`], summed up.
struct Rates {
    medians: Vec<f64>,
    /// Each configuration's lowest and highest rate.
    ranges: Vec<(f64, f64)>,
    /// The configuration whose rounds span the widest, lowest to highest, over its median...
    widest: usize,
    /// ... and that span.
    spread: f64,
    /// The widest span without each configuration's lowest and highest round.
    inner_spread: f64,
}

impl Rates {
    fn of(mut results: Vec<Vec<f64>>) -> Self {
        let ranges: Vec<(f64, f64)> = results
            .iter()
            .map(|r| {
                (
                    r.iter().copied().fold(f64::INFINITY, f64::min),
                    r.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                )
            })
            .collect();
        let medians = medians(&mut results);
        let (widest, spread) = ranges
            .iter()
            .zip(&medians)
            .map(|((low, high), median)| (high - low) / median)
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        // The same without each configuration's lowest and highest round (`median` sorted each
        // configuration's rates): what one slow or fast round does not decide.
        let inner_spread = results
            .iter()
            .zip(&medians)
            .filter(|(rates, _)| rates.len() >= 3)
            .map(|(rates, median)| (rates[rates.len() - 2] - rates[1]) / median)
            .fold(0.0, f64::max);
        Self {
            medians,
            ranges,
            widest,
            spread,
            inner_spread,
        }
    }
}

/// One more capture of each configuration with stacks on, `--format json`: its stack samples.
fn count_stacks(headroom: &Path) -> Result<Vec<(&'static str, &'static str, StackCounts)>> {
    let mut counts = Vec::new();
    for (label, what, flags) in &SAMPLING_CONFIGS[1..3] {
        let flags = flags.unwrap_or_default();
        let counted = stack_counts(headroom, flags)?;
        eprintln!(
            "[bench] sampling, {label} ({what}) with --format json: {} stack samples, {} \
             ringbuf_full drops, {:.0} bogo ops/s",
            counted.samples, counted.ringbuf_full, counted.ops
        );
        counts.push((*label, *what, counted));
    }
    Ok(counts)
}

/// The section's main table: each configuration's median, range and ratios.
fn rate_table(rates: &Rates) -> String {
    let Rates {
        medians, ranges, ..
    } = rates;
    let flags_text = |flags: Option<&[&str]>| match flags {
        None => "— (no headroom)".to_owned(),
        Some([]) => "(none)".to_owned(),
        Some(flags) => format!("`{}`", flags.join(" ")),
    };
    let mut table = String::from(
        "| configuration | `headroom capture` flags | bogo ops/s (median) | lowest–highest | / A (stacks off) | / D (alone) |\n|---|---|---|---|---|---|\n",
    );
    for (index, (label, what, flags)) in SAMPLING_CONFIGS.iter().enumerate() {
        let _ = writeln!(
            table,
            "| {label}: {what} | {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3} |",
            flags_text(*flags),
            medians[index],
            ranges[index].0,
            ranges[index].1,
            medians[index] / medians[0],
            medians[index] / medians[3],
        );
    }
    table
}

/// The stack samples of the JSON captures.
fn sample_table(counts: &[(&str, &str, StackCounts)]) -> String {
    let mut samples = String::from(
        "| configuration | stack samples | of them ending within 3 frames | events lost, ring buffer full (`drops.ringbuf_full`) | bogo ops/s of that run |\n|---|---|---|---|---|\n",
    );
    for (label, what, counted) in counts {
        let _ = writeln!(
            samples,
            "| {label}: {what} | {} | {} | {} | {:.0} |",
            counted.samples, counted.shallow, counted.ringbuf_full, counted.ops
        );
    }
    samples
}

/// The cost of each kind of sampling, and the page-fault storm's target applied to captures.
fn verdict_lines(medians: &[f64]) -> String {
    let loss = |ratio: f64| (1.0 - ratio) * 100.0;
    let storm_target = WORKLOADS[0].target_loss;
    let mut verdicts = String::new();
    for (index, what) in [(1, "frame-pointer sampling"), (2, "eh-frame sampling")] {
        let ratio = medians[index] / medians[0];
        let _ = writeln!(
            verdicts,
            "- Cost of {what}: {}/A = {ratio:.3}, {:.1} % of the throughput with stacks off.",
            SAMPLING_CONFIGS[index].0,
            loss(ratio)
        );
    }
    for (index, what) in [
        (0, "stacks off"),
        (1, "frame-pointer sampling"),
        (2, "eh-frame sampling"),
    ] {
        let ratio = medians[index] / medians[3];
        let _ = writeln!(
            verdicts,
            "- Page-fault storm, at most {:.0} % throughput loss (the issue-8 target, set for the \
             agent; applied here to a capture with {what}): {}/D = {ratio:.3}, {:.1} % lost: \
             **{}**.",
            storm_target * 100.0,
            SAMPLING_CONFIGS[index].0,
            loss(ratio),
            verdict(1.0 - ratio <= storm_target)
        );
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vm_rate_from_metrics_brief() {
        let text = "\
stress-ng: info:  [16527] dispatching hogs: 1 vm
stress-ng: metrc: [16527] stressor       bogo ops real time  usr time  sys time   bogo ops/s     bogo ops/s
stress-ng: metrc: [16527]                           (secs)    (secs)    (secs)   (real time) (usr+sys time)
stress-ng: metrc: [16527] vm                69632      3.07      1.07      2.00     22650.44       22651.23
stress-ng: info:  [16527] successful run completed in 3.08s
";
        assert_eq!(vm_ops_per_second(text), Some(22650.44));
        assert_eq!(vm_ops_per_second("stress-ng: info: [1] vm\n"), None);
    }
}
