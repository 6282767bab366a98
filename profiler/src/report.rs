//! Reports: the `headroom.report/v1` document (a public contract: names and meanings of its
//! fields do not change; fields are only added) and its human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    accounting::{
        analysis::Spike, regions::ReservedBytes, timeline::BucketPeaks, ActivitySummary,
        ProcessRecord,
    },
    attribution::{Attribution, KubernetesMeta},
    probes::{DropCounts, KernelEntries},
    sizing::{self, Checklist, Observation, Recommendation},
};

pub const REPORT_SCHEMA: &str = "headroom.report/v1";

/// How a traced command ended.
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

/// Charged memory: the cgroup charge the OOM killer compares with the limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChargedMemory {
    /// Highest charge: the kernel's own high-water mark where it is exclusive to the session,
    /// else the highest sample.
    pub peak_bytes: u64,
    /// Where `peak_bytes` came from.
    pub peak_source: String,
    pub startup_peak_bytes: u64,
    /// When startup ended (see the startup rule in the README); null if it did not.
    pub startup_seconds: Option<f64>,
    /// Median of the timeline's bucket maxima after startup.
    pub steady_bytes: Option<u64>,
    pub steady_p95_bytes: Option<u64>,
    /// Highest charge minus inactive file pages (the kubelet's working set).
    pub working_set_peak_bytes: u64,
    /// Effective limit (lowest of the cgroup's and its ancestors'); null when unlimited.
    pub limit_bytes: Option<u64>,
    /// Highest sampled charge (every `sample_interval_ms`).
    pub sampled_peak_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResidentMemory {
    /// Highest file + anon + shmem resident of the target's processes together (rss_stat,
    /// aggregated in the kernel).
    pub peak_bytes: u64,
    pub anon_peak_bytes: u64,
    pub file_peak_bytes: u64,
    /// At the end of the capture.
    pub current_bytes: u64,
}

impl ResidentMemory {
    pub fn from_counters(counters: &profiler_common::MemoryCounters) -> Self {
        Self {
            peak_bytes: counters.resident_peak_bytes,
            anon_peak_bytes: counters.anon_peak_bytes,
            file_peak_bytes: counters.file_peak_bytes,
            current_bytes: counters.resident_bytes().max(0) as u64,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReservedMemory {
    /// Highest total reserved address space of the target's processes together.
    pub peak_bytes: u64,
    /// The breakdown at that peak.
    pub by_kind: ReservedBytes,
    /// Each kind's own highest value.
    pub peak_by_kind: ReservedBytes,
    /// Mapping events applied; events lost or not applied make the figures a lower bound.
    pub events: u64,
    pub exact: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Threads {
    /// Threads created during the capture (exact).
    pub created: u64,
    /// Most tasks alive at once, main threads included.
    pub peak: Option<u64>,
    /// Highest reserved thread-stack address space (MAP_STACK regions).
    pub stack_reserved_bytes: u64,
    /// Highest resident thread-stack memory seen (pages touched, sampled from smaps).
    pub stack_resident_bytes: u64,
}

/// One OOM kill, with the seconds of timeline before it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomKill {
    pub seconds: f64,
    pub pid: u32,
    pub command: Option<String>,
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub timeline_before: TimelineExcerpt,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimelineExcerpt {
    pub start_seconds: f64,
    pub resolution_ms: u64,
    pub buckets: Vec<BucketPeaks>,
}

/// One consumer of memory, by kind. `sources` lists them heaviest first by `bytes`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemorySource {
    /// "code_path", "thread_stacks", "allocator_arenas", "file_mappings" or "shared_memory".
    pub kind: &'static str,
    /// The function for code paths; the allocator for arenas; a description otherwise.
    pub name: String,
    /// What `bytes` measures: "sampled_resident" (bytes faulted in by this code path, from
    /// byte-weighted samples), "resident" (peak resident memory), or "reserved" (address space
    /// only; not charged until touched).
    pub measure: &'static str,
    pub bytes: u64,
    /// Address space reserved for it (large mmap/brk for code paths), where known.
    pub reserved_bytes: Option<u64>,
    /// Innermost frame first (code paths).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<String>,
}

/// Figures the non-code sources are read from.
pub struct SourceFigures {
    pub stack_resident_bytes: u64,
    pub stack_reserved_bytes: u64,
    pub arena_reserved_bytes: u64,
    pub file_resident_peak_bytes: u64,
    pub file_reserved_bytes: u64,
    pub shmem_resident_bytes: u64,
    pub shared_reserved_bytes: u64,
}

/// Code paths (from stacks) and the hidden consumers the seed names, heaviest first.
pub fn memory_sources(
    figures: &SourceFigures,
    profile: Option<&crate::stacks::StackProfile>,
) -> Vec<MemorySource> {
    let mut sources = Vec::new();
    let mut allocator = "glibc malloc";
    if let Some(profile) = profile {
        for stack in &profile.stacks {
            for frame in &stack.frames {
                if frame.module.contains("jemalloc") {
                    allocator = "jemalloc";
                } else if frame.module.contains("mimalloc") {
                    allocator = "mimalloc";
                } else if frame.module.contains("tcmalloc") {
                    allocator = "tcmalloc";
                }
            }
        }
        for path in profile.code_paths() {
            sources.push(MemorySource {
                kind: "code_path",
                name: path.name,
                measure: "sampled_resident",
                bytes: path.resident_bytes,
                reserved_bytes: Some(path.reserved_bytes),
                frames: path.frames,
            });
        }
    }
    let mut add = |kind: &'static str,
                   name: String,
                   measure: &'static str,
                   bytes: u64,
                   reserved: Option<u64>| {
        if bytes > 0 || reserved.is_some_and(|r| r > 0) {
            sources.push(MemorySource {
                kind,
                name,
                measure,
                bytes,
                reserved_bytes: reserved,
                frames: Vec::new(),
            });
        }
    };
    add(
        "thread_stacks",
        "thread stacks (resident peak from smaps)".to_owned(),
        "resident",
        figures.stack_resident_bytes,
        Some(figures.stack_reserved_bytes),
    );
    add(
        "allocator_arenas",
        format!("{allocator} arenas and reserve (PROT_NONE/MAP_NORESERVE regions)"),
        "reserved",
        figures.arena_reserved_bytes,
        Some(figures.arena_reserved_bytes),
    );
    add(
        "file_mappings",
        "file-backed mappings (binaries, libraries, mapped files)".to_owned(),
        "resident",
        figures.file_resident_peak_bytes,
        Some(figures.file_reserved_bytes),
    );
    add(
        "shared_memory",
        "shared memory (MAP_SHARED anonymous, shmem, tmpfs)".to_owned(),
        "resident",
        figures.shmem_resident_bytes,
        Some(figures.shared_reserved_bytes),
    );
    sources.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    sources
}

/// One thing a capture watched: a command's cgroup, an existing cgroup, or a process tree.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    /// "command", "cgroup" or "pid".
    pub kind: &'static str,
    /// The captured command line, for command targets.
    pub command: Option<Vec<String>>,
    /// cgroup path as /proc/PID/cgroup shows it; null for process trees.
    pub cgroup: Option<String>,
    /// The id the kernel side counted the target under (cgroup v2 id, or a process-tree id).
    pub target_id: u64,
    /// Root processes: the command, the followed pid, or the cgroup's processes at the start.
    pub pids: Vec<u32>,
    pub exit: Option<ExitSummary>,
    /// Charged memory; null for process trees (they have no cgroup of their own).
    pub memory: Option<ChargedMemory>,
    pub resident: ResidentMemory,
    pub reserved: ReservedMemory,
    pub threads: Threads,
    /// Startup and steady state of the resident series (for process trees, the main series).
    pub resident_phases: ResidentPhases,
    /// Spikes above steady state (of the charge; of resident memory for process trees).
    pub spikes: Vec<Spike>,
    /// Who made the memory, heaviest first: code paths from sampled stacks, and the hidden
    /// consumers (thread stacks, allocator arenas, file mappings, shared memory).
    pub sources: Vec<MemorySource>,
    /// How the stacks were sampled and what they cannot show; null without stack sampling.
    pub stacks: Option<crate::stacks::StackSummary>,
    pub oom_kills: u64,
    /// The kernel cgroup's own OOM-kill count over the session, to cross-check `oom_kills`.
    pub oom_kills_cgroup: Option<u64>,
    pub oom_events: Vec<OomKill>,
    /// Kernel counters, as volumes (what was mapped, created, exited).
    pub activity: ActivitySummary,
    /// Per process, largest reservation first.
    pub processes: Vec<ProcessRecord>,
    /// Processes not listed because the table reached its bound.
    pub processes_not_listed: u64,
    /// Kernel map entries still held for the target at the end (0 when nothing leaks).
    pub kernel_entries_at_end: KernelEntries,
    pub timeline: TimelineExcerpt,
    /// Request and limit with their reasons (see the sizing module).
    pub recommendation: Option<Recommendation>,
    /// The seed's checklist, answered from this capture.
    pub checklist: Option<Checklist>,
    /// Who the memory belongs to (node-wide and pod captures).
    pub attribution: Option<Attribution>,
    /// namespace, pod, container, pod_uid, container_id, qos, workload, spec request/limit.
    pub kubernetes: Option<KubernetesMeta>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResidentPhases {
    pub startup_seconds: Option<f64>,
    pub startup_peak_bytes: u64,
    pub steady_bytes: Option<u64>,
    pub steady_p95_bytes: Option<u64>,
}

/// The result of `headroom capture`.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureReport {
    pub schema: &'static str,
    /// "target" (one command, cgroup, process tree or pod) or "node" (every cgroup).
    pub mode: &'static str,
    pub duration_seconds: f64,
    pub sample_interval_ms: u64,
    pub targets: Vec<TargetReport>,
    pub drops: DropCounts,
    /// Ring buffer records that failed to decode (a build mismatch; should be 0).
    pub undecodable_events: u64,
    /// Folded stacks (`root;...;leaf bytes`) for `--folded` and `--flamegraph`; not in the JSON.
    #[serde(skip)]
    pub folded_stacks: Vec<String>,
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

fn format_optional(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_owned(), format_bytes)
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
    /// Computes each target's recommendation and checklist from the report itself (the same
    /// path `headroom recommend` takes over saved reports).
    pub fn recommend(&mut self, headroom: f64) {
        let observations = serde_json::to_value(&*self)
            .ok()
            .and_then(|value| Observation::from_report(&value).ok())
            .unwrap_or_default();
        for (target, observation) in self.targets.iter_mut().zip(observations) {
            let (recommendation, checklist) = sizing::recommend(&observation, headroom);
            target.recommendation = Some(recommendation);
            target.checklist = Some(checklist);
        }
    }

    /// A name for each target, for patches and headings.
    pub fn target_name(target: &TargetReport) -> String {
        match (&target.command, &target.cgroup) {
            (Some(command), _) => command.join(" "),
            (None, Some(cgroup)) => cgroup.clone(),
            (None, None) => format!("pid {}", target.pids.first().copied().unwrap_or(0)),
        }
    }

    /// Markdown: each target's recommendation and checklist.
    pub fn render_markdown(&self) -> String {
        self.targets
            .iter()
            .filter_map(|target| {
                Some(sizing::render_markdown(
                    &Self::target_name(target),
                    target.recommendation.as_ref()?,
                    target.checklist.as_ref()?,
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// YAML `resources:` patches, one per target.
    pub fn render_yaml(&self, container: Option<&str>) -> String {
        self.targets
            .iter()
            .filter_map(|target| {
                Some(sizing::yaml_patch(
                    target.recommendation.as_ref()?,
                    &Self::target_name(target),
                    container,
                ))
            })
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// The table printed at the end of a capture.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        if self.mode == "node" {
            render_node(&mut out, self);
        } else {
            for target in &self.targets {
                render_target(&mut out, target, self.duration_seconds);
            }
        }
        let drops = self.drops.total();
        if drops == 0 && self.undecodable_events == 0 {
            let _ = writeln!(out, "Events lost: none");
        } else {
            let _ = writeln!(
                out,
                "Events lost: {drops} ({:?}); undecodable: {}. Kernel counters stay exact; per-region \
                 and per-process detail may be incomplete.",
                self.drops, self.undecodable_events
            );
        }
        out
    }
}

/// One line a cgroup, largest resident peak first.
fn render_node(out: &mut String, report: &CaptureReport) {
    let _ = writeln!(
        out,
        "headroom capture --all: {} cgroups over {:.1} s\n",
        report.targets.len(),
        report.duration_seconds
    );
    let _ = writeln!(
        out,
        "{:<48} {:>10} {:>10} {:>8} {:>6}",
        "TARGET", "RSS PEAK", "CHARGE", "THREADS", "OOM"
    );
    for t in &report.targets {
        let name = match (&t.kubernetes, &t.attribution) {
            (Some(k), _) => match (&k.namespace, &k.pod) {
                (Some(namespace), Some(pod)) => format!(
                    "{namespace}/{pod}{}",
                    k.container
                        .as_ref()
                        .map_or(String::new(), |c| format!(" [{c}]"))
                ),
                _ => format!(
                    "pod {}{}",
                    k.pod_uid,
                    k.container_id.as_ref().map_or(String::new(), |id| format!(
                        " [{}]",
                        &id[..id.len().min(12)]
                    ))
                ),
            },
            (None, Some(Attribution::Host { name })) => format!("host {name}"),
            (None, Some(Attribution::Unattributed { reason })) => format!("unattributed: {reason}"),
            _ => t.cgroup.clone().unwrap_or_default(),
        };
        let name: String = name.chars().take(48).collect();
        let _ = writeln!(
            out,
            "{name:<48} {:>10} {:>10} {:>8} {:>6}",
            format_bytes(t.resident.peak_bytes),
            t.memory
                .as_ref()
                .map_or_else(|| "n/a".to_owned(), |m| format_bytes(m.sampled_peak_bytes)),
            t.activity.threads_created,
            t.oom_kills
        );
    }
    out.push('\n');
}

fn render_target(out: &mut String, t: &TargetReport, duration: f64) {
    let what = match (&t.command, &t.cgroup) {
        (Some(command), _) => format!(
            "`{}`",
            command
                .iter()
                .map(|arg| shell_quote(arg))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        (None, Some(cgroup)) => format!("cgroup {cgroup}"),
        (None, None) => format!(
            "process tree of pid {}",
            t.pids.first().copied().unwrap_or(0)
        ),
    };
    let ended = match t.exit.map(|exit| (exit.code, exit.signal)) {
        Some((Some(code), _)) => format!(" exited with code {code}"),
        Some((None, Some(signal))) => format!(" was killed by signal {signal}"),
        _ => String::new(),
    };
    let pids = t
        .pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let _ = writeln!(
        out,
        "headroom capture: {what} (pid {pids}){ended} after {duration:.2} s"
    );
    if let Some(cgroup) = &t.cgroup {
        let _ = writeln!(out, "cgroup: {cgroup} (id {})", t.target_id);
    }
    if let Some(k) = &t.kubernetes {
        let _ = writeln!(
            out,
            "pod: {}/{} container {} (uid {}, qos {}, {} {}); spec request {}, limit {}",
            k.namespace.as_deref().unwrap_or("?"),
            k.pod.as_deref().unwrap_or("?"),
            k.container.as_deref().unwrap_or("(all)"),
            k.pod_uid,
            k.qos
                .map_or("?".to_owned(), |q| format!("{q:?}").to_lowercase()),
            k.workload_kind.as_deref().unwrap_or("no owner"),
            k.workload_name.as_deref().unwrap_or(""),
            format_optional(k.spec_request_bytes),
            format_optional(k.spec_limit_bytes)
        );
    }
    out.push('\n');

    let _ = writeln!(
        out,
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "MEMORY", "PEAK", "STARTUP PEAK", "STEADY", "STEADY P95"
    );
    if let Some(m) = &t.memory {
        let _ = writeln!(
            out,
            "{:<28} {:>12} {:>12} {:>12} {:>12}",
            "charged (cgroup)",
            format_bytes(m.peak_bytes),
            format_bytes(m.startup_peak_bytes),
            format_optional(m.steady_bytes),
            format_optional(m.steady_p95_bytes)
        );
    }
    let r = &t.resident_phases;
    let _ = writeln!(
        out,
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "resident (rss)",
        format_bytes(t.resident.peak_bytes),
        format_bytes(r.startup_peak_bytes),
        format_optional(r.steady_bytes),
        format_optional(r.steady_p95_bytes)
    );
    let _ = writeln!(
        out,
        "{:<28} {:>12}",
        "reserved (address space)",
        format_bytes(t.reserved.peak_bytes)
    );
    if let Some(m) = &t.memory {
        let startup = m
            .startup_seconds
            .map_or_else(|| "not over".to_owned(), |s| format!("{s:.2} s"));
        let _ = writeln!(
            out,
            "startup: {startup}; working-set peak {}; limit {}; charge peak from {}",
            format_bytes(m.working_set_peak_bytes),
            format_optional(m.limit_bytes),
            m.peak_source
        );
    }
    out.push('\n');

    let _ = writeln!(out, "Reserved at its peak, by kind:");
    let k = &t.reserved.by_kind;
    for (label, bytes, note) in [
        ("brk heap", k.brk_heap, "program break"),
        ("stack", k.stack, "thread stacks (MAP_STACK)"),
        ("anonymous", k.anonymous, "private read/write memory"),
        ("file", k.file, "mapped files and libraries"),
        ("shared", k.shared, "MAP_SHARED anonymous"),
        (
            "no-access",
            k.no_access,
            "PROT_NONE / MAP_NORESERVE reservations",
        ),
    ] {
        let _ = writeln!(out, "  {label:<10} {:>11}   {note}", format_bytes(bytes));
    }
    let a = &t.activity;
    let _ = writeln!(
        out,
        "  (volume: {} mmapped in {}, {} unmapped, brk grew {})",
        format_bytes(a.mmapped.total()),
        plural(a.mmap_calls, "call", "calls"),
        format_bytes(a.munmapped_bytes),
        format_bytes(a.brk_grown_bytes)
    );
    out.push('\n');

    let th = &t.threads;
    let peak = th
        .peak
        .map_or_else(|| "unknown".to_owned(), |peak| peak.to_string());
    let _ = writeln!(
        out,
        "Threads    {} created, peak {peak} alive at once (main threads included); stacks {} reserved, {} resident",
        th.created,
        format_bytes(th.stack_reserved_bytes),
        format_bytes(th.stack_resident_bytes)
    );
    let _ = writeln!(
        out,
        "Processes  {} forked, {}, {} tasks exited",
        a.processes_created,
        plural(a.execs, "exec", "execs"),
        a.tasks_exited
    );
    if t.spikes.is_empty() {
        let _ = writeln!(out, "Spikes     none above steady state");
    } else {
        let _ = writeln!(out, "Spikes above steady state:");
        for spike in &t.spikes {
            let _ = writeln!(
                out,
                "  at {:>7.2} s for {:>5} ms: peak {}, {} above steady",
                spike.start_seconds,
                spike.duration_ms,
                format_bytes(spike.peak_bytes),
                format_bytes(spike.bytes_above_steady)
            );
            if let Some(source) = &spike.source {
                let _ = writeln!(
                    out,
                    "      made by {source} ({} sampled): {}",
                    format_bytes(spike.source_bytes.unwrap_or(0)),
                    spike.frames.join(" < ")
                );
            }
        }
    }
    if !t.sources.is_empty() {
        let _ = writeln!(out, "Sources (heaviest first):");
        for source in t.sources.iter().take(10) {
            let _ = writeln!(
                out,
                "  {:>10}  {:<16} {} [{}]",
                format_bytes(source.bytes),
                source.kind,
                source.name,
                source.measure
            );
        }
    }
    if let Some(stacks) = &t.stacks {
        for limit in &stacks.limits {
            let _ = writeln!(out, "Stacks     note: {limit}");
        }
    }
    if t.oom_kills > 0 || t.oom_kills_cgroup.is_some_and(|kills| kills > 0) {
        let _ = writeln!(
            out,
            "OOM kills  {} seen by the probe, {} counted by the cgroup",
            t.oom_kills,
            t.oom_kills_cgroup
                .map_or_else(|| "n/a".to_owned(), |kills| kills.to_string())
        );
        for kill in &t.oom_events {
            let _ = writeln!(
                out,
                "  at {:.2} s: pid {} ({}) with {} anon resident",
                kill.seconds,
                kill.pid,
                kill.command.as_deref().unwrap_or("?"),
                format_bytes(kill.anon_rss_bytes)
            );
        }
    }

    if let (Some(recommendation), Some(checklist)) = (&t.recommendation, &t.checklist) {
        out.push('\n');
        out.push_str(&sizing::render_table(recommendation, checklist));
    }
    if !t.processes.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:>7} {:>5} {:>10} {:>10} {:>10} {:>10}",
            "PID", "COMMAND", "THREADS", "PEAK", "RSS PEAK", "ANON MAP", "STACK MAP", "BRK"
        );
        const SHOWN: usize = 20;
        for process in t.processes.iter().take(SHOWN) {
            let a = &process.activity;
            let _ = writeln!(
                out,
                "{:>8}  {:<16} {:>7} {:>5} {:>10} {:>10} {:>10} {:>10}",
                process.pid,
                process.command,
                a.threads_created,
                a.peak_tasks
                    .map_or_else(|| "?".to_owned(), |p| p.to_string()),
                format_bytes(process.resident_peak_bytes),
                format_bytes(a.mmapped.anonymous),
                format_bytes(a.mmapped.stack),
                format_bytes(process.brk_heap_bytes),
            );
        }
        let hidden = t.processes.len().saturating_sub(SHOWN) as u64 + t.processes_not_listed;
        if hidden > 0 {
            let _ = writeln!(
                out,
                "  ... and {} more (see --format json)",
                plural(hidden, "process", "processes")
            );
        }
    }
    out.push('\n');
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
