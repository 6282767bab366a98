//! What `cargo xtask matrix` reads back from a cell and prints: libtest's output per suite, the
//! cgroup layout from the cell's mounts, the cell × suite table and the failures' first lines.

use std::{fmt::Write as _, time::Duration};

/// Counts read from one test binary's libtest output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Whether the `test result:` line was there (the binary ran to its end).
    pub summary: bool,
    /// Each failed test with the first lines of its output (the panic and its message).
    pub failures: Vec<(String, Vec<String>)>,
}

/// At most this many lines of a failed test's output are kept.
const FIRST_LINES: usize = 4;

/// Reads libtest's output: the `test result:` summary when there is one, otherwise the
/// per-test `test NAME ... ok|FAILED|ignored` lines (a binary killed by a timeout or a crash
/// prints no summary), and the first lines of each failure's captured output.
pub fn parse_libtest(log: &str) -> Counts {
    let mut counts = Counts::default();
    let mut per_test = Counts::default();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in log.lines() {
        let trimmed = line.trim_end();
        if let Some(rest) = trimmed.strip_prefix("test result: ") {
            counts.summary = true;
            add_summary(&mut counts, rest);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("test ") {
            if let Some((_, outcome)) = rest.rsplit_once(" ... ") {
                match outcome.split_whitespace().next() {
                    Some("ok") => per_test.passed += 1,
                    Some("FAILED") => per_test.failed += 1,
                    Some("ignored") => per_test.skipped += 1,
                    _ => {}
                }
                continue;
            }
        }
        if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            counts.failures.extend(current.take());
            current = Some((name.to_owned(), Vec::new()));
            continue;
        }
        if trimmed == "failures:" || trimmed.starts_with("stack backtrace:") {
            counts.failures.extend(current.take());
            continue;
        }
        if let Some((_, lines)) = current.as_mut() {
            let wanted = lines.len() < FIRST_LINES
                // Past the first lines, the first line naming an error (headroom's own
                // `headroom: error: ...` below a panic that printed its stderr).
                || (!lines.iter().any(|kept| kept.contains("error:")) && trimmed.contains("error:"));
            if wanted && !trimmed.is_empty() && !trimmed.starts_with("note: ") {
                lines.push(shorten(trimmed, 240));
            }
        }
    }
    counts.failures.extend(current);
    if !counts.summary {
        counts.passed = per_test.passed;
        counts.failed = per_test.failed;
        counts.skipped = per_test.skipped;
    }
    counts
}

/// Adds `ok. 9 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1s`.
fn add_summary(counts: &mut Counts, rest: &str) {
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(count)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => counts.passed += count,
            "failed" => counts.failed += count,
            "ignored" => counts.skipped += count,
            _ => {}
        }
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max).collect();
    short.push('…');
    short
}

/// The cgroup layout from the cgroup lines of /proc/mounts: `v2` (one cgroup2 mount, nothing
/// else), `hybrid` (v1 controllers beside a cgroup2 mount), `v1` (no cgroup2 at all).
pub fn cgroup_layout(mounts: &str) -> &'static str {
    let mut v1 = 0;
    let mut v2 = 0;
    for line in mounts.lines() {
        match line.split_whitespace().nth(2) {
            Some("cgroup2") => v2 += 1,
            Some("cgroup") => v1 += 1,
            _ => {}
        }
    }
    match (v1, v2) {
        (0, 0) => "none",
        (0, _) => "v2",
        (_, 0) => "v1",
        _ => "hybrid",
    }
}

/// How one suite ended in one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Ran to its end; every test passed or was ignored.
    Passed,
    /// Ran to its end with failed tests (or a non-zero exit).
    Failed,
    /// Killed by the per-suite timeout.
    TimedOut(u64),
    /// Ended without libtest's summary (a crash), with this exit code.
    Crashed(i32),
    /// Never started: the cell did not boot, timed out before it, or could not run.
    NotReached(String),
    /// Started, then cut off with its cell (which timed out or stopped).
    CutOff(String),
    /// Deliberately not run in this cell, with the reason (printed in the table).
    NotRun(&'static str),
}

/// One suite in one cell: counts, state and duration.
#[derive(Debug, Clone)]
pub struct SuiteResult {
    pub suite: &'static str,
    pub counts: Counts,
    pub state: State,
    pub secs: Option<u64>,
    /// Tests deliberately not run in this cell, with the reason (counted as skipped).
    pub not_run: &'static [(&'static str, &'static str)],
}

impl SuiteResult {
    pub fn failed(&self) -> bool {
        !matches!(self.state, State::Passed | State::NotRun(_))
    }

    /// Builds a suite's result from what the cell wrote: its log, exit code and duration.
    /// `expected` is the number of tests the binary lists: tests that never reported (the
    /// binary timed out, crashed or never ran) count as failed.
    pub fn from_cell(
        suite: &'static str,
        log: Option<&str>,
        exit_code: Option<i32>,
        secs: Option<u64>,
        expected: u64,
        suite_timeout: u64,
        not_reached: &str,
    ) -> Self {
        let mut counts = log.map(parse_libtest).unwrap_or_default();
        // timeout(1) exits 124, or 137 when it had to SIGKILL; a binary killed otherwise
        // (e.g. by the OOM killer) also ends with 137, but before the timeout.
        let timed_out = |code| code == 124 || (code == 137 && secs.unwrap_or(0) >= suite_timeout);
        let state = match exit_code {
            None if log.is_some() => State::CutOff(not_reached.to_owned()),
            None => State::NotReached(not_reached.to_owned()),
            Some(code) if timed_out(code) => State::TimedOut(suite_timeout),
            Some(code) if !counts.summary => State::Crashed(code),
            Some(0) if counts.failed == 0 => State::Passed,
            Some(_) => State::Failed,
        };
        if !matches!(state, State::Passed | State::Failed) {
            let reported = counts.passed + counts.failed + counts.skipped;
            counts.failed += expected.saturating_sub(reported);
        }
        Self {
            suite,
            counts,
            state,
            secs,
            not_run: &[],
        }
    }

    fn result_text(&self) -> String {
        let mut text = self.state_text();
        for (test, reason) in self.not_run {
            let _ = write!(text, "; not run: {test}: {reason}");
        }
        text
    }

    fn state_text(&self) -> String {
        match &self.state {
            State::Passed => "ok".to_owned(),
            State::Failed if self.counts.failed == 0 => "FAILED (non-zero exit)".to_owned(),
            State::Failed => "FAILED".to_owned(),
            State::TimedOut(secs) => format!("FAILED: timed out after {secs} s"),
            State::Crashed(code) => format!("FAILED: no libtest summary (exit {code})"),
            State::NotReached(why) => format!("FAILED: not reached ({why})"),
            State::CutOff(why) => format!("FAILED: cut off ({why})"),
            State::NotRun(why) => format!("not run: {why}"),
        }
    }
}

/// How a cell ended as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellState {
    Completed,
    /// The guest never ran the suites (no boot, or the runner failed): with its message.
    NoBoot(String),
    /// The whole cell hit its timeout.
    TimedOut(u64),
    /// The guest kernel locked up (its console's first soft-lockup line): the cell was
    /// stopped then, not at its timeout.
    GuestLockup(String),
}

/// One cell's results.
#[derive(Debug, Clone)]
pub struct CellResult {
    pub label: String,
    pub kernel: String,
    pub layout: String,
    pub init: String,
    pub boot_secs: Option<f64>,
    pub wall: Duration,
    pub state: CellState,
    pub suites: Vec<SuiteResult>,
    /// Set when a first attempt of the cell was stopped by a guest kernel lockup and the cell
    /// ran again: that attempt's soft-lockup line and where its logs and console are kept.
    pub retried_after: Option<String>,
}

impl CellResult {
    pub fn failed(&self) -> bool {
        self.state != CellState::Completed || self.suites.iter().any(SuiteResult::failed)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

pub fn totals(cells: &[CellResult]) -> Totals {
    let mut totals = Totals::default();
    for suite in cells.iter().flat_map(|cell| &cell.suites) {
        totals.passed += suite.counts.passed;
        totals.failed += suite.counts.failed;
        totals.skipped += suite.counts.skipped;
    }
    totals
}

pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// The table: one block per cell (kernel, cgroup layout, pid 1, boot and wall time), one row
/// per suite with passed/failed/skipped, its time and its result.
pub fn table(cells: &[CellResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<12} {:>6} {:>6} {:>7} {:>7}  result",
        "cell", "suite", "passed", "failed", "skipped", "time"
    );
    for cell in cells {
        let boot = cell
            .boot_secs
            .map(|secs| format!(", booted in {secs:.0} s"))
            .unwrap_or_default();
        let state = match &cell.state {
            CellState::Completed => String::new(),
            CellState::NoBoot(why) => format!(" — CELL FAILED: {why}"),
            CellState::TimedOut(secs) => format!(" — CELL FAILED: timed out after {secs} s"),
            CellState::GuestLockup(line) => {
                format!(" — CELL FAILED: the guest kernel locked up: {line}")
            }
        };
        let retried = cell
            .retried_after
            .as_ref()
            .map(|why| format!(" — RAN TWICE: the first attempt's guest kernel locked up ({why})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}: kernel {}, cgroup {}, pid 1 {}{boot}, wall {}{state}{retried}",
            cell.label,
            cell.kernel,
            cell.layout,
            cell.init,
            format_duration(cell.wall)
        );
        for suite in &cell.suites {
            let counts = if matches!(suite.state, State::NotRun(_)) {
                format!("{:>6} {:>6} {:>7}", "-", "-", "-")
            } else {
                format!(
                    "{:>6} {:>6} {:>7}",
                    suite.counts.passed, suite.counts.failed, suite.counts.skipped
                )
            };
            let time = suite
                .secs
                .map(|secs| format_duration(Duration::from_secs(secs)))
                .unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(
                out,
                "{:<14} {:<12} {counts} {time:>7}  {}",
                cell.label,
                suite.suite,
                suite.result_text()
            );
        }
    }
    out
}

/// The failed tests with their first lines, cell by cell.
pub fn failures(cells: &[CellResult]) -> String {
    let mut out = String::new();
    for cell in cells {
        if let CellState::NoBoot(why) = &cell.state {
            let _ = writeln!(out, "{}: the cell did not run: {why}", cell.label);
        }
        if let CellState::GuestLockup(line) = &cell.state {
            let _ = writeln!(out, "{}: the guest kernel locked up: {line}", cell.label);
        }
        for suite in cell.suites.iter().filter(|suite| suite.failed()) {
            let _ = writeln!(
                out,
                "{} / {}: {}",
                cell.label,
                suite.suite,
                suite.result_text()
            );
            for (test, lines) in &suite.counts.failures {
                let _ = writeln!(out, "  {test}:");
                for line in lines {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    out
}

/// The first soft-lockup report in a guest's console, if any: a kernel that spins with
/// preemption off for 20 s and more (under emulation too) never gets the suites further.
pub fn guest_lockup(console: &str) -> Option<String> {
    console
        .lines()
        .find(|line| line.contains("watchdog: BUG: soft lockup"))
        .map(|line| line.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_lockup_in_the_console_is_found() {
        let console = "[  158.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[  184.408721] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [sigint_ends_the:478]\n[  184.6] watchdog: BUG: soft lockup - CPU#1 stuck for 44s! [headroom:493]\n";
        assert_eq!(
            guest_lockup(console).as_deref(),
            Some("[  184.408721] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [sigint_ends_the:478]")
        );
        assert_eq!(
            guest_lockup("[    1.0] Linux version 6.1.0\nhvm-run: done\n"),
            None
        );
    }

    const FAILED_RUN: &str = "\
running 3 tests
test a_passes ... ok
test b_fails ... FAILED
test c_ignored ... ignored, needs a GPU

failures:

---- b_fails stdout ----

thread 'b_fails' panicked at tests/privileged/capture.rs:42:5:
headroom capture failed: loading program `on_exit`: invalid argument
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    b_fails

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.20s
";

    #[test]
    fn reads_the_summary_and_the_first_lines_of_each_failure() {
        let counts = parse_libtest(FAILED_RUN);
        assert_eq!(
            (counts.passed, counts.failed, counts.skipped, counts.summary),
            (1, 1, 1, true)
        );
        assert_eq!(
            counts.failures,
            vec![(
                "b_fails".to_owned(),
                vec![
                    "thread 'b_fails' panicked at tests/privileged/capture.rs:42:5:".to_owned(),
                    "headroom capture failed: loading program `on_exit`: invalid argument"
                        .to_owned()
                ]
            )]
        );
    }

    #[test]
    fn keeps_the_first_error_line_past_the_first_lines() {
        let log = "---- t stdout ----\nmeasured: 1\nmeasured: 2\n\
                   thread 't' panicked at a.rs:1:1:\nno report; stderr:\nlog line\n\
                   headroom: error: the verifier refused `x`\nmore\n\nfailures:\n";
        let counts = parse_libtest(log);
        assert_eq!(
            counts.failures[0].1.last().map(String::as_str),
            Some("headroom: error: the verifier refused `x`")
        );
        assert_eq!(counts.failures[0].1.len(), 5);
    }

    #[test]
    fn counts_per_test_lines_when_the_binary_was_killed() {
        let counts = parse_libtest("running 5 tests\ntest a ... ok\ntest b ... ok\ntest c ... ");
        assert_eq!(
            (counts.passed, counts.failed, counts.summary),
            (2, 0, false)
        );
        let result = SuiteResult::from_cell(
            "capture",
            Some("test a ... ok\n"),
            Some(124),
            Some(600),
            5,
            600,
            "",
        );
        assert_eq!(result.state, State::TimedOut(600));
        assert_eq!((result.counts.passed, result.counts.failed), (1, 4));
        assert!(result.failed());
    }

    #[test]
    fn a_suite_that_never_started_fails_all_its_tests() {
        let result = SuiteResult::from_cell("agent", None, None, None, 6, 600, "cell timed out");
        assert_eq!(result.state, State::NotReached("cell timed out".to_owned()));
        assert_eq!(result.counts.failed, 6);
        let cut = SuiteResult::from_cell("agent", Some("test a ... ok\n"), None, None, 6, 600, "x");
        assert_eq!(cut.state, State::CutOff("x".to_owned()));
        assert_eq!((cut.counts.passed, cut.counts.failed), (1, 5));
    }

    #[test]
    fn a_clean_run_passes_and_a_non_zero_exit_fails() {
        let ok = "test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let result = SuiteResult::from_cell("capture", Some(ok), Some(0), Some(10), 9, 600, "");
        assert_eq!(result.state, State::Passed);
        assert!(!result.failed());
        let result = SuiteResult::from_cell("capture", Some(ok), Some(101), Some(10), 9, 600, "");
        assert_eq!(result.state, State::Failed);
        let result =
            SuiteResult::from_cell("capture", Some("boom"), Some(139), Some(1), 9, 600, "");
        assert_eq!(result.state, State::Crashed(139));
        assert_eq!(result.counts.failed, 9);
    }

    #[test]
    fn tells_cgroup_layouts_apart() {
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        let v1 = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        assert_eq!(cgroup_layout(v2), "v2");
        assert_eq!(cgroup_layout(hybrid), "hybrid");
        assert_eq!(cgroup_layout(v1), "v1");
        assert_eq!(cgroup_layout(""), "none");
    }
}
