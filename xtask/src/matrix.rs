//! `cargo xtask matrix`: the privileged suites on each supported kernel × cgroup layout.
//!
//! Cells: the host as it is (its kernel and cgroup layout), and Debian's stock kernels 6.1
//! (bookworm) and 6.12 (bookworm-backports) with a pure cgroup v2 layout, each under systemd
//! (the suites run in a systemd service, as an agent started by a unit does) and under a bare
//! init (the suites run in the root cgroup). Guests boot under QEMU with the recipe in
//! xtask/vm/ (the project's copy of ../shared/vm): software emulation on this kind of machine,
//! several times slower than the host, so guests check correctness, never timing.
//!
//! 1. Builds the guest image once (xtask/vm/build-guest.sh: apt-get installs qemu-system-x86,
//!    debootstrap and e2fsprogs on the host if missing; debootstrap, both kernels and the
//!    packages the suites need into /var/cache/headroom-matrix). Re-runs are no-ops.
//! 2. Builds the suites' test binaries and `headroom` once, on the host (`cargo test
//!    --no-run`), and lists each binary's tests.
//! 3. Runs the host cell (alone: its suites check machine-wide state), then the guest cells,
//!    `--jobs` at a time, each guest one boot running every suite in turn
//!    (xtask/vm/matrix-cell.sh) with HEADROOM_REQUIRE_PRIVILEGED=1 and a per-suite timeout;
//!    the whole guest has a per-cell timeout. The checkout is shared into the guest at the
//!    same path (writable through a tmpfs overlay, writes discarded), the cell's results
//!    directory read-write.
//! 4. Prints the cell × suite table (passed, failed, skipped, time) and the first lines of
//!    every failure, then `matrix: N passed, N failed, N skipped`. A cell that does not boot
//!    or times out fails the run, as does any failed test.
//!
//! Logs stay in target/matrix/: CELL.log (what the cell printed), CELL/SUITE.log (libtest's
//! output), CELL/console.log (the guest's serial console).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::matrix_report::{self, CellResult, CellState, State, SuiteResult};

/// Where the guest image and kernels live (shared by every checkout on the machine).
const CACHE: &str = "/var/cache/headroom-matrix";

/// Guest packages beyond the recipe's base: the suites' workloads are C programs compiled in
/// the test (gcc, libc6-dev with its static libc); accounting runs stress-ng and redis
/// (server and benchmark); the prometheus suite starts a real Prometheus server; the
/// Kubernetes client (rustls with the platform's roots) fails without a CA bundle, as on any
/// real node that has one.
const GUEST_PACKAGES: [&str; 7] = [
    "gcc",
    "libc6-dev",
    "stress-ng",
    "redis-server",
    "redis-tools",
    "prometheus",
    "ca-certificates",
];

/// The default per-cell timeout. CI's budget is 90 minutes on 2 cores: ~8 for the rest of
/// `cargo xtask test`, ~6 to build the guests on a fresh machine, ~5 for the host cell, and
/// four guest cells two at a time: two rounds of at most 30 minutes.
const CELL_TIMEOUT: u64 = 1800;

/// A privileged suite (a `[[test]]` target of the profiler package built from
/// tests/privileged/NAME.rs), how long it may run in a cell, and why it does not run in the
/// guests, if it does not.
struct Suite {
    name: &'static str,
    /// Seconds before the suite is killed (and fails). About 15 times its time on the host:
    /// guests are emulated, several times slower, and two may share the machine's cores.
    timeout: u64,
    not_in_guests: Option<&'static str>,
    /// Tests of the suite not run in the guests (`--skip NAME --exact`), each with the reason;
    /// the table counts them as skipped and names them.
    tests_not_in_guests: &'static [(&'static str, &'static str)],
}

/// The suites `cargo xtask test` runs in [`Cell::IN_TEST`]: every suite that checks figures
/// (loading, exits and execs, charges and peaks, attribution, the agent's export, failure
/// handling, Prometheus, sizing). stacks, hardening and load stay on the host: they measure
/// timing or need tools the guests do not have.
pub const IN_TEST_SUITES: [&str; 8] = [
    "kernel",
    "capture",
    "accounting",
    "attribution",
    "agent",
    "reliability",
    "prometheus",
    "sizing",
];

/// Every suite in tests/privileged/, in the order they run. `check_suite_list` fails the run
/// when a file there is missing from this list, so a new suite is never left out silently.
const SUITES: [Suite; 11] = [
    Suite {
        name: "kernel",
        timeout: 300,
        not_in_guests: None,
        tests_not_in_guests: &[],
    },
    Suite {
        name: "capture",
        timeout: 300,
        not_in_guests: None,
        tests_not_in_guests: &[],
    },
    Suite {
        name: "accounting",
        timeout: 600,
        not_in_guests: None,
        tests_not_in_guests: &[
            (
                "stress_ng_stressors_peaks_match_the_kernel",
                "five stress-ng stressors back to back: several minutes emulated; the host \
                 cell runs them",
            ),
            (
                "redis_under_redis_benchmark_peak_matches_the_kernel",
                "150,000 redis requests: minutes emulated; the host cell runs it",
            ),
        ],
    },
    Suite {
        name: "attribution",
        timeout: 300,
        not_in_guests: None,
        tests_not_in_guests: &[],
    },
    Suite {
        name: "agent",
        timeout: 450,
        not_in_guests: None,
        tests_not_in_guests: &[],
    },
    Suite {
        name: "reliability",
        timeout: 900,
        not_in_guests: None,
        tests_not_in_guests: &[(
            "twenty_thousand_short_lived_processes_leave_no_kernel_state_behind",
            "asserts 20000 fork+execs in under 90 s; emulated, they take over 10 minutes",
        )],
    },
    Suite {
        name: "stacks",
        timeout: 300,
        not_in_guests: Some(
            "its sample counts assume a workload that faults at native speed; what differs per \
             kernel for stacks (BTF for eh-frame snapshots) is checked by kernel.rs: host \
             cell only",
        ),
        tests_not_in_guests: &[],
    },
    Suite {
        name: "prometheus",
        timeout: 300,
        not_in_guests: None,
        tests_not_in_guests: &[],
    },
    Suite {
        name: "hardening",
        timeout: 300,
        not_in_guests: Some(
            "it checks the agent's own limits (memory, HTTP, seccomp), not what differs per \
             kernel, and loads the seccomp profile with python3's libseccomp binding, which \
             the guest image does not carry: host cell only",
        ),
        tests_not_in_guests: &[],
    },
    Suite {
        name: "sizing",
        timeout: 600,
        not_in_guests: None,
        tests_not_in_guests: &[],
    },
    Suite {
        name: "load",
        timeout: 600,
        not_in_guests: Some(
            "70 s load and latency test (500 containers, fault storm); emulated guests are \
             several times slower, it would measure QEMU: host cell only",
        ),
        tests_not_in_guests: &[],
    },
];

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cell {
    /// This machine's own kernel and cgroup layout.
    #[value(name = "host")]
    Host,
    /// Debian 12's kernel 6.1, pure cgroup v2, the suites in a systemd service.
    #[value(name = "6.1-systemd")]
    K61Systemd,
    /// Debian 12's kernel 6.1, pure cgroup v2, no systemd: the suites in the root cgroup.
    #[value(name = "6.1-bare")]
    K61Bare,
    /// bookworm-backports' kernel 6.12, pure cgroup v2, under systemd.
    #[value(name = "6.12-systemd")]
    K612Systemd,
    /// bookworm-backports' kernel 6.12, pure cgroup v2, bare init.
    #[value(name = "6.12-bare")]
    K612Bare,
}

impl Cell {
    const ALL: [Cell; 5] = [
        Cell::Host,
        Cell::K61Systemd,
        Cell::K61Bare,
        Cell::K612Systemd,
        Cell::K612Bare,
    ];

    /// The cells `cargo xtask test` (and so CI) runs after the host's own suites: every guest
    /// cell, so that both Debian kernels and both ways a node starts the agent (systemd, bare
    /// init) are checked on every change. Two at a time they take about 30 minutes of CI's 90.
    pub const IN_TEST: [Cell; 4] = [
        Cell::K61Systemd,
        Cell::K61Bare,
        Cell::K612Systemd,
        Cell::K612Bare,
    ];

    fn id(self) -> &'static str {
        match self {
            Cell::Host => "host",
            Cell::K61Systemd => "6.1-systemd",
            Cell::K61Bare => "6.1-bare",
            Cell::K612Systemd => "6.12-systemd",
            Cell::K612Bare => "6.12-bare",
        }
    }

    /// The guest kernel (HVM_KERNEL), None for the host.
    fn kernel(self) -> Option<&'static str> {
        match self {
            Cell::Host => None,
            Cell::K61Systemd | Cell::K61Bare => Some("6.1"),
            Cell::K612Systemd | Cell::K612Bare => Some("6.12"),
        }
    }

    /// The guest's init (HVM_INIT).
    fn init(self) -> &'static str {
        match self {
            Cell::K61Bare | Cell::K612Bare => "bare",
            _ => "systemd",
        }
    }
}

/// `cargo xtask matrix` options.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Cells to run, comma-separated (default: all five).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub cells: Vec<Cell>,
    /// Suites to run, comma-separated (default: every suite in tests/privileged/).
    #[arg(long, value_delimiter = ',')]
    pub suites: Vec<String>,
    /// Guests booted at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Seconds any suite may take in a cell before it is killed and fails (default: each
    /// suite's own, 300 to 900 s).
    #[arg(long)]
    pub suite_timeout: Option<u64>,
    /// Seconds one cell (a guest's boot, every suite, power-off) may take before it is killed
    /// and fails.
    #[arg(long, default_value_t = CELL_TIMEOUT)]
    pub cell_timeout: u64,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 3072)]
    pub mem: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cells: Vec::new(),
            suites: Vec::new(),
            jobs: 2,
            suite_timeout: None,
            cell_timeout: CELL_TIMEOUT,
            mem: 3072,
            cpus: 2,
        }
    }
}

/// A built suite: its test binary, the copy the cells run, and how many tests it lists.
struct Built {
    suite: &'static Suite,
    executable: PathBuf,
    copy: PathBuf,
    tests: u64,
}

/// What every cell needs.
struct Context {
    root: PathBuf,
    package_dir: PathBuf,
    vm_dir: PathBuf,
    out_dir: PathBuf,
    shares: String,
    built: Vec<Built>,
    /// `headroom` where cargo built it (the path baked into the test binaries) and its copy.
    headroom: (PathBuf, PathBuf),
    options: Options,
}

/// `cargo xtask matrix`: root, the eBPF toolchain (setup), then the matrix.
pub fn run(options: &Options) -> Result<()> {
    crate::require_root("matrix")?;
    crate::setup::run()?;
    run_after_setup(options)
}

/// The matrix, once `cargo xtask setup` has run (as `cargo xtask test` does).
pub fn run_after_setup(options: &Options) -> Result<()> {
    let started = Instant::now();
    let root = crate::workspace_root();
    check_suite_list(&root)?;
    let cells: Vec<Cell> = if options.cells.is_empty() {
        Cell::ALL.to_vec()
    } else {
        Cell::ALL
            .into_iter()
            .filter(|cell| options.cells.contains(cell))
            .collect()
    };
    let suites = select_suites(&options.suites)?;
    if cells.iter().any(|cell| cell.kernel().is_some()) {
        build_guests(&root)?;
    }
    let (mut built, headroom, target_dir) = build_suites(&root, &suites)?;
    let out_dir = target_dir.join("matrix");
    let headroom_copy = stage(&out_dir, &mut built, &headroom)?;
    let mut shares = root.display().to_string();
    if !target_dir.starts_with(&root) {
        shares = format!("{shares} {}", target_dir.display());
    }
    let context = Context {
        package_dir: root.join("profiler"),
        vm_dir: root.join("xtask/vm"),
        out_dir,
        root,
        shares,
        built,
        headroom: (headroom, headroom_copy),
        options: options.clone(),
    };
    fs::create_dir_all(&context.out_dir)
        .with_context(|| format!("cannot create {}", context.out_dir.display()))?;

    let mut results = Vec::new();
    // The host first and alone: its suites check machine-wide state (loaded BPF programs,
    // session cgroups), and timing-sensitive tests must not share two cores with QEMU.
    if cells.contains(&Cell::Host) {
        results.push(run_cell(&context, Cell::Host));
    }
    let guests: Vec<Cell> = cells
        .iter()
        .copied()
        .filter(|cell| cell.kernel().is_some())
        .collect();
    results.extend(run_guests(&context, &guests));

    println!();
    println!(
        "matrix: each cell × suite (passed, failed, skipped), logs in {}",
        context.out_dir.display()
    );
    print!("{}", matrix_report::table(&results));
    let failures = matrix_report::failures(&results);
    if !failures.is_empty() {
        println!();
        println!(
            "matrix failures (first lines; full logs in {}):",
            context.out_dir.display()
        );
        print!("{failures}");
    }
    let totals = matrix_report::totals(&results);
    let failed_cells: Vec<&str> = results
        .iter()
        .filter(|cell| cell.failed())
        .map(|cell| cell.label.as_str())
        .collect();
    eprintln!(
        "[matrix] {} cells in {}",
        results.len(),
        matrix_report::format_duration(started.elapsed())
    );
    println!(
        "matrix: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    );
    if !failed_cells.is_empty() {
        bail!("the matrix failed in {}", failed_cells.join(", "));
    }
    Ok(())
}

/// Every tests/privileged/*.rs must be in SUITES (run, or "not run" with a reason).
fn check_suite_list(root: &Path) -> Result<()> {
    let dir = root.join("tests/privileged");
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let stem = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !SUITES.iter().any(|suite| suite.name == stem) {
                bail!(
                    "{} is a privileged suite the matrix does not know: add it to SUITES in \
                     xtask/src/matrix.rs (with the reason if it cannot run in the guests)",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

fn select_suites(names: &[String]) -> Result<Vec<&'static Suite>> {
    if names.is_empty() {
        return Ok(SUITES.iter().collect());
    }
    for name in names {
        if !SUITES.iter().any(|suite| suite.name == name) {
            let known: Vec<&str> = SUITES.iter().map(|suite| suite.name).collect();
            bail!("no suite {name}; the suites are {}", known.join(", "));
        }
    }
    Ok(SUITES
        .iter()
        .filter(|suite| names.iter().any(|name| name == suite.name))
        .collect())
}

/// Builds the guest image (idempotent: a few seconds when nothing is missing).
fn build_guests(root: &Path) -> Result<()> {
    eprintln!(
        "[matrix] guests in {CACHE} (xtask/vm/build-guest.sh, idempotent): on first use it \
         apt-get installs qemu-system-x86, debootstrap and e2fsprogs on the host, debootstraps \
         Debian 12 with kernels 6.1 and 6.12 (backports) and {} (3 to 6 min, 2.5 GB)",
        GUEST_PACKAGES.join(", ")
    );
    let mut build = Command::new("bash");
    build
        .arg(root.join("xtask/vm/build-guest.sh"))
        .env("HVM_CACHE", CACHE)
        .env("HVM_EXTRA_PKGS", GUEST_PACKAGES.join(","));
    crate::run(build)
}

/// `cargo test --no-run` for the suites: their binaries (and `headroom`, which they run),
/// built once on the host; then each binary's test count. Returns them, `headroom` and the
/// target dir.
fn build_suites(root: &Path, suites: &[&'static Suite]) -> Result<(Vec<Built>, PathBuf, PathBuf)> {
    let mut cargo = crate::cargo();
    cargo
        .args(["test", "--locked", "--no-run", "--package", "profiler"])
        .arg("--message-format=json-render-diagnostics");
    for suite in suites {
        cargo.args(["--test", suite.name]);
    }
    cargo.current_dir(root).stdout(Stdio::piped());
    eprintln!("[matrix] $ {}", crate::describe(&cargo));
    let output = cargo
        .spawn()
        .and_then(Child::wait_with_output)
        .context("cannot run cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the test binaries failed with {}", output.status);
    }
    let mut executables = BTreeMap::new();
    let mut headroom = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        let kinds = message["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if kinds.iter().any(|kind| kind == "test") {
            executables.insert(name.to_owned(), PathBuf::from(executable));
        } else if name == "headroom" && kinds.iter().any(|kind| kind == "bin") {
            headroom = Some(PathBuf::from(executable));
        }
    }
    let headroom = headroom.context("cargo built no headroom binary for the tests")?;
    eprintln!("[matrix] headroom: {}", headroom.display());
    let target_dir = target_directory(root)?;
    let package_dir = root.join("profiler");
    let mut built = Vec::new();
    for suite in suites {
        let executable = executables
            .remove(suite.name)
            .with_context(|| format!("cargo built no test binary for {}", suite.name))?;
        let list = Command::new(&executable)
            .args(["--list", "--format", "terse"])
            .current_dir(&package_dir)
            .output()
            .with_context(|| format!("cannot run {} --list", executable.display()))?;
        let tests = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|line| line.ends_with(": test"))
            .count() as u64;
        eprintln!(
            "[matrix] {}: {tests} tests, {}",
            suite.name,
            executable.display()
        );
        built.push(Built {
            suite,
            copy: executable.clone(),
            executable,
            tests,
        });
    }
    Ok((built, headroom, target_dir))
}

/// Copies the test binaries and `headroom` to OUT_DIR/stage: a cell runs for half an hour,
/// and a `cargo build` in the checkout meanwhile (rustc and the linker rewrite their outputs)
/// must not change the programs under test halfway. The cells run the copies; the copy of
/// `headroom` is bind-mounted over the path cargo baked into the tests (matrix-cell.sh).
fn stage(out_dir: &Path, built: &mut [Built], headroom: &Path) -> Result<PathBuf> {
    let stage = out_dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let to = stage.join(name);
        fs::copy(from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(to)
    };
    for suite in built.iter_mut() {
        suite.copy = copy(&suite.executable, suite.suite.name)?;
    }
    copy(headroom, "headroom")
}

fn target_directory(root: &Path) -> Result<PathBuf> {
    let output = crate::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata is not JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Runs the guest cells, `jobs` at a time; results in the order given.
fn run_guests(context: &Context, cells: &[Cell]) -> Vec<CellResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CellResult>>> = Mutex::new(vec![None; cells.len()]);
    let jobs = context.options.jobs.clamp(1, cells.len().max(1));
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(&cell) = cells.get(index) else {
                    break;
                };
                let result = run_cell(context, cell);
                let mut slots = results
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Runs one cell and reads its results; never fails as a whole: what went wrong is in the
/// result (and fails the run later). A first attempt stopped by a guest kernel lockup is kept
/// (its directory renamed `CELL.lockup`, console included) and the cell runs once more; the
/// result says so in the table. A second lockup fails the cell.
fn run_cell(context: &Context, cell: Cell) -> CellResult {
    let first = run_cell_once(context, cell);
    let CellState::GuestLockup(line) = &first.state else {
        return first;
    };
    let dir = context.out_dir.join(cell.id());
    let kept = context.out_dir.join(format!("{}.lockup", cell.id()));
    let _ = fs::remove_dir_all(&kept);
    let kept_note = match fs::rename(&dir, &kept) {
        Ok(()) => format!("{line}; its logs and console in {}", kept.display()),
        Err(err) => format!("{line}; its logs could not be kept: {err}"),
    };
    eprintln!(
        "[matrix {}] the guest kernel locked up ({line}): running the cell once more",
        cell.id()
    );
    let mut second = run_cell_once(context, cell);
    second.retried_after = Some(kept_note);
    second
}

fn run_cell_once(context: &Context, cell: Cell) -> CellResult {
    let started = Instant::now();
    let label = cell.id().to_owned();
    let results_dir = context.out_dir.join(cell.id());
    let log_path = context.out_dir.join(format!("{}.log", cell.id()));
    let pid_file = context.out_dir.join(format!("{}.qemu.pid", cell.id()));
    let outcome = (|| -> Result<Outcome> {
        let _ = fs::remove_dir_all(&results_dir);
        let _ = fs::remove_file(&pid_file);
        fs::create_dir_all(&results_dir)
            .with_context(|| format!("cannot create {}", results_dir.display()))?;
        let suite_args: Vec<String> = context
            .built
            .iter()
            .filter(|built| cell.kernel().is_none() || built.suite.not_in_guests.is_none())
            .map(|built| {
                format!(
                    "{}={}={}={}",
                    built.suite.name,
                    suite_timeout(context, built.suite),
                    skipped_tests(cell, built.suite)
                        .iter()
                        .map(|(test, _)| *test)
                        .collect::<Vec<_>>()
                        .join(","),
                    built.copy.display()
                )
            })
            .collect();
        let timeout = context.options.cell_timeout;
        let (command, guard) = match cell.kernel() {
            None => {
                // A private mount namespace: the bind mount of headroom's copy stays in it.
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "bash"])
                    .arg(context.vm_dir.join("matrix-cell.sh"))
                    .arg(&results_dir);
                (command, Duration::from_secs(timeout))
            }
            Some(kernel) => {
                let mut command = Command::new("bash");
                command
                    .arg(context.vm_dir.join("run-in-guest.sh"))
                    .args(["bash"])
                    .arg(context.vm_dir.join("matrix-cell.sh"))
                    .arg("/results")
                    .env("HVM_CACHE", CACHE)
                    .env("HVM_KERNEL", kernel)
                    .env("HVM_INIT", cell.init())
                    .env("HVM_SHARES", &context.shares)
                    .env("HVM_OVERLAY", "1")
                    .env("HVM_RESULTS", &results_dir)
                    .env("HVM_CONSOLE", results_dir.join("console.log"))
                    .env("HVM_PIDFILE", &pid_file)
                    .env("HVM_MEM", context.options.mem.to_string())
                    .env("HVM_CPUS", context.options.cpus.to_string())
                    .env("HVM_TIMEOUT", timeout.to_string());
                // run-in-guest.sh stops QEMU at HVM_TIMEOUT itself; this is the backstop.
                (command, Duration::from_secs(timeout + 120))
            }
        };
        let mut command = command;
        let (headroom, headroom_copy) = &context.headroom;
        command
            .arg(&context.package_dir)
            .arg(format!(
                "{}={}",
                headroom.display(),
                headroom_copy.display()
            ))
            .args(&suite_args)
            .current_dir(&context.root);
        eprintln!("[matrix {label}] starting: {} suites", suite_args.len());
        let console = cell.kernel().map(|_| results_dir.join("console.log"));
        run_logged(
            command,
            &label,
            &log_path,
            guard,
            &pid_file,
            console.as_deref(),
        )
    })();
    let wall = started.elapsed();
    let outcome = outcome.unwrap_or_else(|err| Outcome {
        exit_code: None,
        guard_fired: false,
        guest_lockup: None,
        error: Some(format!("{err:#}")),
    });
    let result = read_cell(context, cell, &results_dir, &outcome, wall);
    eprintln!(
        "[matrix {label}] {} in {}",
        if result.failed() { "FAILED" } else { "passed" },
        matrix_report::format_duration(wall)
    );
    result
}

/// The tests of a suite this cell does not run, with the reasons.
fn skipped_tests(cell: Cell, suite: &Suite) -> &'static [(&'static str, &'static str)] {
    if cell.kernel().is_some() {
        suite.tests_not_in_guests
    } else {
        &[]
    }
}

fn suite_timeout(context: &Context, suite: &Suite) -> u64 {
    context.options.suite_timeout.unwrap_or(suite.timeout)
}

/// How a cell's runner process ended.
struct Outcome {
    exit_code: Option<i32>,
    guard_fired: bool,
    /// The guest console's first soft-lockup line, when that stopped the cell.
    guest_lockup: Option<String>,
    error: Option<String>,
}

/// Runs a cell's runner with stdout and stderr in one pipe, each line printed with the cell's
/// label and kept in `log_path`; stops it (SIGTERM, then SIGKILL, and the QEMU it started) if
/// it outlives `guard`, or as soon as the guest's `console` reports a soft lockup (a locked
/// kernel never finishes; waiting for the guard would spend half an hour of CI on it).
fn run_logged(
    mut command: Command,
    label: &str,
    log_path: &Path,
    guard: Duration,
    pid_file: &Path,
    console: Option<&Path>,
) -> Result<Outcome> {
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("cannot clone a pipe")?)
        .stderr(writer);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", crate::describe(&command)))?;
    // The Command holds the pipe's write ends: drop it so that EOF comes when the child ends.
    drop(command);
    let mut log = fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let prefix = format!("[matrix {label}] ");
    let echo = thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            println!("{prefix}{line}");
            let _ = writeln!(log, "{line}");
        }
    });
    let deadline = Instant::now() + guard;
    let mut guard_fired = false;
    let mut guest_lockup = None;
    let mut polls = 0u64;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        polls += 1;
        // Every 5 s: the console only grows, and a lockup is reported every 20-30 s.
        if let Some(line) = console
            .filter(|_| polls.is_multiple_of(20))
            .and_then(|path| fs::read_to_string(path).ok())
            .and_then(|text| matrix_report::guest_lockup(&text))
        {
            eprintln!("[matrix {label}] the guest kernel locked up: {line}; stopping it");
            stop(&mut child, pid_file);
            guest_lockup = Some(line);
            break child.wait().ok();
        }
        if Instant::now() >= deadline {
            guard_fired = true;
            eprintln!(
                "[matrix {label}] still running after {} s: stopping it",
                guard.as_secs()
            );
            stop(&mut child, pid_file);
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(250));
    };
    let _ = echo.join();
    stop_leftover_qemu(label, pid_file);
    Ok(Outcome {
        exit_code: status.and_then(|status| status.code()),
        guard_fired,
        guest_lockup,
        error: None,
    })
}

/// SIGTERM (run-in-guest.sh then stops its QEMU), SIGKILL after 30 s.
fn stop(child: &mut Child, pid_file: &Path) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; pid is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    stop_leftover_qemu("", pid_file);
}

/// Kills the QEMU this cell started if it is still there (its pid file names it, and it must
/// still be a qemu process): no guest outlives its cell.
fn stop_leftover_qemu(label: &str, pid_file: &Path) {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.starts_with("qemu") {
        eprintln!("[matrix {label}] QEMU (pid {pid}) still running: killing it");
        // SAFETY: kill has no memory-safety preconditions; pid is the QEMU this cell started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = fs::remove_file(pid_file);
}

/// Reads what the cell wrote (kernel, init, mounts, each suite's log, exit code and time).
fn read_cell(
    context: &Context,
    cell: Cell,
    dir: &Path,
    outcome: &Outcome,
    wall: Duration,
) -> CellResult {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let kernel = read("kernel.txt");
    let ran = kernel.is_some();
    let done = dir.join("done").exists();
    let timeout = context.options.cell_timeout;
    // run-in-guest.sh: 124 timed out, 125 the guest never ran the command.
    let state = if let Some(error) = &outcome.error {
        CellState::NoBoot(error.clone())
    } else if let Some(line) = &outcome.guest_lockup {
        CellState::GuestLockup(line.clone())
    } else if outcome.guard_fired || (cell.kernel().is_some() && outcome.exit_code == Some(124)) {
        CellState::TimedOut(timeout)
    } else if !ran {
        CellState::NoBoot(format!(
            "the {} never ran the suites (exit {}); see {}",
            if cell.kernel().is_some() {
                "guest"
            } else {
                "host runner"
            },
            outcome
                .exit_code
                .map_or_else(|| "by signal".to_owned(), |code| code.to_string()),
            if cell.kernel().is_some() {
                dir.join("console.log").display().to_string()
            } else {
                context
                    .out_dir
                    .join(format!("{}.log", cell.id()))
                    .display()
                    .to_string()
            }
        ))
    } else if !done {
        CellState::NoBoot(format!(
            "the runner stopped before the last suite (exit {:?})",
            outcome.exit_code
        ))
    } else {
        CellState::Completed
    };
    let not_reached = match &state {
        CellState::Completed => "the runner never started it".to_owned(),
        CellState::TimedOut(secs) => format!("the cell timed out after {secs} s"),
        CellState::GuestLockup(_) => "the guest kernel locked up".to_owned(),
        CellState::NoBoot(_) => "the cell did not run".to_owned(),
    };
    let suites = context
        .built
        .iter()
        .map(|built| {
            let name = built.suite.name;
            if let (true, Some(reason)) = (cell.kernel().is_some(), built.suite.not_in_guests) {
                return SuiteResult {
                    suite: name,
                    counts: matrix_report::Counts::default(),
                    state: State::NotRun(reason),
                    secs: None,
                    not_run: &[],
                };
            }
            let number =
                |file: String| read(&file).and_then(|text| text.trim().parse::<i64>().ok());
            let skipped = skipped_tests(cell, built.suite);
            let mut result = SuiteResult::from_cell(
                name,
                read(&format!("{name}.log")).as_deref(),
                number(format!("{name}.rc")).and_then(|code| i32::try_from(code).ok()),
                number(format!("{name}.secs")).and_then(|secs| u64::try_from(secs).ok()),
                built.tests.saturating_sub(skipped.len() as u64),
                suite_timeout(context, built.suite),
                &not_reached,
            );
            result.counts.skipped += skipped.len() as u64;
            result.not_run = skipped;
            result
        })
        .collect();
    let mounts = read("mounts.txt").unwrap_or_default();
    CellResult {
        label: cell.id().to_owned(),
        kernel: kernel.map_or_else(|| "?".to_owned(), |text| text.trim().to_owned()),
        layout: if ran {
            matrix_report::cgroup_layout(&mounts).to_owned()
        } else {
            "?".to_owned()
        },
        init: read("init.txt").map_or_else(|| "?".to_owned(), |text| text.trim().to_owned()),
        boot_secs: cell
            .kernel()
            .and(read("uptime.txt"))
            .and_then(|text| text.trim().parse().ok()),
        wall,
        state,
        suites,
        retried_after: None,
    }
}
