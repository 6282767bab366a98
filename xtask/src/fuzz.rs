//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/` for a bounded time and prints
//! how many inputs each one executed.
//!
//! The targets feed arbitrary bytes to the parsers of untrusted input (cgroup paths, /proc and
//! cgroup files, the agent's TOML configuration, ring-buffer records). A panic, a sanitizer
//! report or a timeout is a crash: libFuzzer writes the input to `fuzz/artifacts/<target>/`
//! and this task exits non-zero after running the other targets.
//!
//! cargo-fuzz needs nightly (`-Z sanitizer`); it uses the machine's `nightly` toolchain and
//! never updates it. Builds go to `fuzz/target` (git-ignored), new corpus entries to
//! `fuzz/target/corpus/<target>`, so the seeds in `fuzz/corpus/<target>` stay as committed.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{describe, run, setup, workspace_root};

const TOOLCHAIN: &str = "nightly";
/// The newest cargo-fuzz at the time of writing; it builds with the stable 1.95 toolchain.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// A single input taking this long is a hang in a parser: reported as a crash.
const UNIT_TIMEOUT_SECONDS: u64 = 10;

fn step(message: &str) {
    eprintln!("[fuzz] {message}");
}

/// What one libFuzzer run printed, as far as the summary needs it.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    /// libFuzzer started fuzzing (an `INFO: Seed:` line): a failure after it is a crash,
    /// before it a build or launch failure.
    started: bool,
    executions: Option<u64>,
    seconds: Option<u64>,
    /// Inputs libFuzzer saved (crash-, leak-, oom-, timeout- files).
    artifacts: Vec<String>,
}

impl RunStats {
    fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if line.starts_with("INFO: Seed:") {
            self.started = true;
        } else if let Some(count) = line.strip_prefix("stat::number_of_executed_units:") {
            self.executions = count.trim().parse().ok().or(self.executions);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // `Done 123456 runs in 61 second(s)`
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", seconds, ..] = words.as_slice() {
                self.executions = self.executions.or(runs.parse().ok());
                self.seconds = seconds.parse().ok();
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifacts.push(path.trim().to_owned());
        }
    }
}

struct TargetResult {
    name: String,
    seconds: f64,
    executions: u64,
    crashes: usize,
    log: PathBuf,
}

pub fn fuzz(seconds: u64) -> Result<()> {
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    ensure_toolchain()?;
    ensure_cargo_fuzz()?;
    // profiler's build.rs compiles the eBPF programs, which needs bpf-linker.
    if Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |status| !status.success())
    {
        step("bpf-linker missing (profiler's build embeds the eBPF programs): running setup");
        setup::run()?;
    }

    let targets = targets(&fuzz_dir)?;
    step(&format!(
        "{} targets, {seconds} s each: {}",
        targets.len(),
        targets.join(", ")
    ));
    // One build for all targets, so that build time is not taken from any target's budget.
    let mut build = cargo_fuzz();
    build
        .arg("build")
        .arg("--target-dir")
        .arg(fuzz_dir.join("target"));
    run(build)?;

    let mut results = Vec::new();
    for target in &targets {
        results.push(run_target(&fuzz_dir, target, seconds)?);
    }

    println!();
    println!(
        "{:<14} {:>8} {:>14} {:>10} {:>8}",
        "TARGET", "SECONDS", "EXECUTIONS", "EXEC/S", "CRASHES"
    );
    for result in &results {
        let rate = if result.seconds > 0.0 {
            result.executions as f64 / result.seconds
        } else {
            0.0
        };
        println!(
            "{:<14} {:>8.0} {:>14} {:>10.0} {:>8}",
            result.name, result.seconds, result.executions, rate, result.crashes
        );
    }
    let crashed: Vec<&TargetResult> = results.iter().filter(|r| r.crashes > 0).collect();
    if !crashed.is_empty() {
        for result in &crashed {
            eprintln!(
                "[fuzz] {} crashed; full output in {}",
                result.name,
                result.log.display()
            );
        }
        bail!(
            "{} of {} fuzz targets crashed; reproduce with `cargo +{TOOLCHAIN} fuzz run TARGET \
             fuzz/artifacts/TARGET/FILE`, fix the parser and add the input as a unit test",
            crashed.len(),
            results.len()
        );
    }
    Ok(())
}

/// `rustup run nightly cargo fuzz`: the `cargo` xtask runs under is the stable one.
fn cargo_fuzz() -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", TOOLCHAIN, "cargo", "fuzz"]);
    command
}

/// The targets, from the file names in fuzz/fuzz_targets (what `cargo fuzz list` reads).
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    targets.sort();
    if targets.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(targets)
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<TargetResult> {
    let target_dir = fuzz_dir.join("target");
    // New inputs go to the first corpus directory; the committed seeds are only read.
    let work_corpus = target_dir.join("corpus").join(target);
    let log_dir = target_dir.join("logs");
    for dir in [&work_corpus, &log_dir] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_path = log_dir.join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;

    let mut command = cargo_fuzz();
    command
        .arg("run")
        .arg("--target-dir")
        .arg(&target_dir)
        .arg(target)
        .arg(&work_corpus)
        .arg(fuzz_dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    step(&format!(
        "{target}: fuzzing for {seconds} s (log: {})",
        log_path.display()
    ));
    eprintln!("[xtask] $ {}", describe(&command));
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", describe(&command)))?;
    let mut stats = RunStats::default();
    if let Some(stderr) = child.stderr.take() {
        use std::io::Write as _;
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz output")?;
            writeln!(log, "{line}").with_context(|| format!("writing {}", log_path.display()))?;
            stats.add_line(&line);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let elapsed = started.elapsed().as_secs_f64();
    if !status.success() && !stats.started {
        bail!(
            "`{}` failed with {status} before fuzzing started; see {}",
            describe(&command),
            log_path.display()
        );
    }
    for artifact in &stats.artifacts {
        step(&format!("{target}: crashing input saved to {artifact}"));
    }
    // A failure without a saved input (e.g. the sanitizer killed it first) still counts.
    let crashes = if status.success() {
        stats.artifacts.len()
    } else {
        stats.artifacts.len().max(1)
    };
    Ok(TargetResult {
        name: target.to_owned(),
        seconds: stats.seconds.map_or(elapsed, |s| s as f64),
        executions: stats.executions.unwrap_or(0),
        crashes,
        log: log_path,
    })
}

/// The nightly toolchain must already be there (never installed or updated here: see
/// setup.rs); its rust-src is added if missing (the nested eBPF build uses build-std).
fn ensure_toolchain() -> Result<()> {
    let version = Command::new("rustc")
        .arg(format!("+{TOOLCHAIN}"))
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(version) = version else {
        bail!(
            "the `{TOOLCHAIN}` Rust toolchain is missing; cargo-fuzz needs it. Use the one this \
             machine image ships (see `cargo xtask setup`); do not run `rustup update`"
        );
    };
    step(&format!("{version}: present"));
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", TOOLCHAIN])
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        step(&format!("rust-src for {TOOLCHAIN}: already installed"));
        return Ok(());
    }
    step(&format!("rust-src for {TOOLCHAIN}: installing"));
    let mut add = Command::new("rustup");
    add.args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]);
    run(add)
}

/// Installs cargo-fuzz (pinned, --locked) unless a cargo-fuzz is already on PATH.
fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new("cargo-fuzz")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if let Some(version) = found {
        step(&format!("{version}: already installed"));
        return Ok(());
    }
    step(&format!(
        "cargo-fuzz: installing {CARGO_FUZZ_VERSION} (cargo install --locked, about a minute)"
    ));
    let mut install = crate::cargo();
    install.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]);
    run(install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let mut stats = RunStats::default();
        for line in [
            "INFO: Running with entropic power schedule (0xFF, 100).",
            "INFO: Seed: 1234567",
            "#2097152\tpulse  cov: 312 ft: 1301 corp: 211/9102b lim: 4096 exec/s: 69905 rss: 60Mb",
            "Done 4312345 runs in 61 second(s)",
            "stat::number_of_executed_units: 4312346",
            "stat::average_exec_per_sec:     70694",
        ] {
            stats.add_line(line);
        }
        assert_eq!(
            stats,
            RunStats {
                started: true,
                executions: Some(4_312_346),
                seconds: Some(61),
                artifacts: Vec::new(),
            }
        );
    }

    #[test]
    fn records_crashing_inputs() {
        let mut stats = RunStats::default();
        stats.add_line("INFO: Seed: 1");
        stats.add_line("thread '<unnamed>' panicked at src/procfs.rs:20:17:");
        stats.add_line("artifact_prefix='/w/fuzz/artifacts/proc_files/'; Test unit written to /w/fuzz/artifacts/proc_files/crash-da39a3ee");
        stats.add_line("stat::number_of_executed_units: 812");
        assert_eq!(
            stats.artifacts,
            vec!["/w/fuzz/artifacts/proc_files/crash-da39a3ee".to_owned()]
        );
        assert_eq!(stats.executions, Some(812));
        assert_eq!(stats.seconds, None);
    }
}
