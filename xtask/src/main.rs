//! Project automation: what cargo alone cannot do.
//!
//! - `cargo xtask setup`: installs and checks the eBPF toolchain (idempotent, prints each step).
//! - `cargo xtask demo`:  setup, build, and capture the bundled demo workload.
//! - `cargo xtask test`:  setup, fmt, clippy (host and BPF target), and every test, the
//!   privileged eBPF suite included, then the figure-checking suites in the four guest cells
//!   of `cargo xtask matrix` (Debian 6.1 and 6.12, under systemd and bare init; pure cgroup v2).
//! - `cargo xtask bench`: workload overhead beside a naive bpftrace baseline, stack-sampling
//!   cost, agent footprint, the agent under each stressor with per-program BPF cost, aggregator
//!   throughput (BENCHMARKS.md; `--only PART` for some of them).
//! - `cargo xtask fuzz`:  every cargo-fuzz target in fuzz/ for a bounded time, with counts.
//! - `cargo xtask matrix`: the privileged suites on the host and on Debian's kernels 6.1 and
//!   6.12 (pure cgroup v2, systemd and bare init) under QEMU; a cell × suite table.
mod bench;
mod fuzz;
mod matrix;
mod matrix_report;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "headroom project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building eBPF needs (llvm-22-dev, bpf-linker 0.13.0 for LLVM 22, rust-src).
    Setup,
    /// Setup, build in release mode, and capture the bundled demo workload.
    Demo,
    /// Setup, then fmt --check, clippy -D warnings (host and BPF target), all tests, and the
    /// figure-checking privileged suites on kernels 6.1 and 6.12 with pure cgroup v2 (the
    /// matrix's four guest cells).
    Test,
    /// Workload overhead beside a naive bpftrace baseline, stack-sampling cost, agent footprint
    /// with 1/100/500 containers, the agent under each stressor (with ns per event per BPF
    /// program), aggregator throughput; writes BENCHMARKS.md.
    Bench {
        /// Run only these parts (comma-separated); BENCHMARKS.md keeps the others' sections.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Part>,
    },
    /// Run every cargo-fuzz target (fuzz/) for a bounded time; print executions and crashes.
    Fuzz {
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// The privileged suites in each kernel × cgroup-layout cell: the host, and Debian's
    /// kernels 6.1 and 6.12 with pure cgroup v2 under systemd and bare init (QEMU guests,
    /// built once in /var/cache/headroom-matrix); prints a cell × suite table.
    Matrix(matrix::Options),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::run().map(|_| ()),
        Task::Demo => demo(),
        Task::Test => test(),
        Task::Bench { only } => bench::bench(&only),
        Task::Fuzz { seconds } => fuzz::fuzz(seconds),
        Task::Matrix(options) => matrix::run(&options),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command from the workspace root, echoing it, and fails if it fails.
pub(crate) fn run(mut command: Command) -> Result<()> {
    command.current_dir(workspace_root());
    eprintln!("[xtask] $ {}", describe(&command));
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", describe(&command)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(&command));
    }
    Ok(())
}

pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub(crate) fn require_root(task: &str) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "`cargo xtask {task}` loads eBPF programs and creates cgroups, which needs root. \
             Run it as root (e.g. `sudo -E env PATH=$PATH cargo xtask {task}`)"
        );
    }
    Ok(())
}

fn demo() -> Result<()> {
    require_root("demo")?;
    setup::run()?;
    let mut build = cargo();
    build.args(["build", "--locked", "--release", "--package", "profiler"]);
    run(build)?;

    let root = workspace_root();
    let workload_dir = root.join("target/workloads");
    std::fs::create_dir_all(&workload_dir)
        .with_context(|| format!("cannot create {}", workload_dir.display()))?;
    let demo = workload_dir.join("demo_service");
    let mut compile = Command::new("gcc");
    compile
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&demo)
        .arg(root.join("tests/workloads/demo_service.c"));
    run(compile)?;

    eprintln!(
        "[xtask] capturing the demo workload: a service that warms a cache at startup, runs a \
         worker pool and takes one burst of traffic"
    );
    let mut capture = Command::new(root.join("target/release/headroom"));
    capture.arg("capture").arg("--").arg(&demo);
    run(capture)
}

fn test() -> Result<()> {
    require_root("test")?;
    let started = Instant::now();
    let toolchain = setup::run()?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--locked",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;

    // The eBPF crate, linted on its own target (it never builds for the host).
    let mut clippy_bpf = Command::new("rustup");
    clippy_bpf
        .args([
            "run",
            &toolchain.ebpf_toolchain,
            "cargo",
            "clippy",
            "--locked",
        ])
        .args([
            "--package",
            "profiler-ebpf",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"]);
    run(clippy_bpf)?;

    // HEADROOM_REQUIRE_PRIVILEGED turns a privileged test that cannot load BPF into a failure,
    // never a skip.
    let mut tests = cargo();
    tests
        .args(["test", "--locked", "--no-fail-fast"])
        .env("HEADROOM_REQUIRE_PRIVILEGED", "1");
    let totals = run_tests(tests)?;

    // The privileged suites that check figures, again on Debian's 6.1 and 6.12 under systemd
    // and bare init, pure cgroup v2 (`cargo xtask matrix` can run any cell and suite; its host
    // cell is the `cargo test` above).
    let matrix = matrix::run_after_setup(&matrix::Options {
        cells: matrix::Cell::IN_TEST.to_vec(),
        suites: matrix::IN_TEST_SUITES.map(str::to_owned).to_vec(),
        ..matrix::Options::default()
    });

    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    matrix?;
    eprintln!(
        "[xtask] all checks and tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Adds one libtest summary line: `test result: ok. 9 passed; 0 failed; 1 ignored; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, echoing its output, and adds up the per-binary results so that the run
/// ends with one line that counts every test.
fn run_tests(mut command: Command) -> Result<TestTotals> {
    use std::io::{BufRead as _, BufReader};
    command
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped());
    eprintln!("[xtask] $ {}", describe(&command));
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", describe(&command)))?;
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() || totals.failed > 0 {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        bail!("`{}` failed with {status}", describe(&command));
    }
    if totals.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_libtest_summaries() {
        let mut totals = TestTotals::default();
        totals.add_line("test result: ok. 31 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.03s");
        totals.add_line(
            "test result: FAILED. 8 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        totals.add_line("running 9 tests");
        assert_eq!(
            totals,
            TestTotals {
                passed: 39,
                failed: 1,
                ignored: 2
            }
        );
    }
}
