//! Reports: the `headroom.report/v1` JSON document and its human-readable rendering.

use std::{fmt::Write as _, path::PathBuf};

use serde::Serialize;

use crate::{
    accounting::{ActivitySummary, ProcessRecord},
    probes::DropCounts,
};

pub const REPORT_SCHEMA: &str = "headroom.report/v1";

/// How the traced command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExitSummary {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ExitSummary {
    /// The exit code a shell would show: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }
}

/// The cgroup the session ran in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupTarget {
    pub unified_path: PathBuf,
    pub id: u64,
    pub memory_v1_path: Option<PathBuf>,
}

/// The cgroup's memory charge, read from the kernel's own counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChargedMemory {
    pub peak_bytes: u64,
    pub source: &'static str,
}

/// The result of `headroom capture -- CMD`.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureReport {
    pub schema: &'static str,
    pub command: Vec<String>,
    pub pid: u32,
    pub cgroup: CgroupTarget,
    pub duration_seconds: f64,
    pub exit: ExitSummary,
    /// Everything that happened in the session's cgroup.
    pub totals: ActivitySummary,
    pub charged: Option<ChargedMemory>,
    /// Per process, largest reservation first.
    pub processes: Vec<ProcessRecord>,
    /// Processes not listed because the table reached its bound.
    pub processes_not_listed: u64,
    pub drops: DropCounts,
    /// Ring buffer records that failed to decode (a build mismatch; should be 0).
    pub undecodable_events: u64,
}

/// Binary units with one decimal: `192.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Quotes an argument for display the way a POSIX shell would need it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

impl CaptureReport {
    /// The summary printed at the end of a capture.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let ended = match (self.exit.code, self.exit.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "ended".to_owned(),
        };
        let _ = writeln!(
            out,
            "headroom capture: `{}` (pid {}) {ended} after {:.2} s",
            self.command
                .iter()
                .map(|arg| shell_quote(arg))
                .collect::<Vec<_>>()
                .join(" "),
            self.pid,
            self.duration_seconds
        );
        let _ = writeln!(
            out,
            "cgroup: {} (id {})",
            self.cgroup.unified_path.display(),
            self.cgroup.id
        );
        out.push('\n');
        let peak = t
            .peak_tasks
            .map_or_else(|| "unknown".to_owned(), |peak| peak.to_string());
        let _ = writeln!(
            out,
            "Threads    {} created, peak {peak} alive at once (main threads included)",
            t.threads_created
        );
        let _ = writeln!(
            out,
            "Processes  {} forked, {}, {} tasks exited",
            t.processes_created,
            plural(t.execs, "exec", "execs"),
            t.tasks_exited
        );
        out.push('\n');
        let _ = writeln!(
            out,
            "Reserved address space (mmap, page-rounded) in {} ({} failed):",
            plural(t.mmap_calls, "call", "calls"),
            t.mmap_failures
        );
        let m = &t.mmapped;
        for (label, bytes, note) in [
            ("anonymous", m.anonymous, "private read/write memory"),
            ("file", m.file, "mapped files and libraries"),
            ("stack", m.stack, "thread stacks (MAP_STACK)"),
            ("shared", m.shared, "MAP_SHARED anonymous"),
            (
                "no-access",
                m.no_access,
                "PROT_NONE / MAP_NORESERVE reservations",
            ),
        ] {
            let _ = writeln!(out, "  {label:<10} {:>11}   {note}", format_bytes(bytes));
        }
        let _ = writeln!(out, "  {:<10} {:>11}", "total", format_bytes(m.total()));
        let _ = writeln!(
            out,
            "  unmapped   {:>11}   in {}",
            format_bytes(t.munmapped_bytes),
            plural(t.munmap_calls, "call", "calls")
        );
        let _ = writeln!(
            out,
            "brk heap:  grew {}, shrank {} in {}",
            format_bytes(t.brk_grown_bytes),
            format_bytes(t.brk_shrunk_bytes),
            plural(t.brk_calls, "call", "calls")
        );
        match &self.charged {
            Some(charged) => {
                let _ = writeln!(
                    out,
                    "Charged memory peak: {} ({})",
                    format_bytes(charged.peak_bytes),
                    charged.source
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "Charged memory peak: not available (no memory controller on the session cgroup)"
                );
            }
        }

        if !self.processes.is_empty() {
            out.push('\n');
            let _ = writeln!(
                out,
                "{:>8}  {:<16} {:>7} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "PID",
                "COMMAND",
                "THREADS",
                "PEAK",
                "ANON",
                "FILE",
                "STACK",
                "SHARED",
                "NOACCESS",
                "BRK"
            );
            const SHOWN: usize = 20;
            for process in self.processes.iter().take(SHOWN) {
                let a = &process.activity;
                let _ = writeln!(
                    out,
                    "{:>8}  {:<16} {:>7} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    process.pid,
                    process.command,
                    a.threads_created,
                    a.peak_tasks
                        .map_or_else(|| "?".to_owned(), |p| p.to_string()),
                    format_bytes(a.mmapped.anonymous),
                    format_bytes(a.mmapped.file),
                    format_bytes(a.mmapped.stack),
                    format_bytes(a.mmapped.shared),
                    format_bytes(a.mmapped.no_access),
                    format_bytes(process.brk_heap_bytes),
                );
            }
            let hidden =
                self.processes.len().saturating_sub(SHOWN) as u64 + self.processes_not_listed;
            if hidden > 0 {
                let _ = writeln!(
                    out,
                    "  ... and {} more (see --json)",
                    plural(hidden, "process", "processes")
                );
            }
        }
        out.push('\n');
        let drops = self.drops.total();
        if drops == 0 && self.undecodable_events == 0 {
            let _ = writeln!(out, "Events lost: none");
        } else {
            let _ = writeln!(
                out,
                "Events lost: {drops} ({:?}); undecodable: {}. Totals above come from kernel counters and stay exact; per-process detail may be incomplete.",
                self.drops, self.undecodable_events
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(192 << 20), "192.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn quotes_arguments_for_display() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("/bin/x=1"), "/bin/x=1");
        assert_eq!(shell_quote("sleep 30 & echo"), "'sleep 30 & echo'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn shell_code_follows_shell_conventions() {
        assert_eq!(
            ExitSummary {
                code: Some(3),
                signal: None
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ExitSummary {
                code: None,
                signal: Some(9)
            }
            .shell_code(),
            137
        );
    }
}
