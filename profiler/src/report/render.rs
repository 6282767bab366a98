//! Rendering of reports for people: the capture table, Markdown and YAML `resources:`
//! patches, and the recommendation with its checklist.

use std::fmt::Write as _;

use super::{
    Attribution, CaptureReport, Checklist, ChecklistItem, Recommendation, ReportMode, TargetReport,
};
use crate::units::{format_bytes, format_optional, plural, shell_quote};

/// Output formats.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A table for humans.
    Table,
    /// JSON (capture: the headroom.report/v1 document).
    Json,
    /// The recommendation and checklist as Markdown.
    Markdown,
    /// A `resources:` patch (with --container, a strategic-merge patch) per target.
    Yaml,
}

impl CaptureReport {
    /// The report in `format`; `patch_container` names the container in YAML patches.
    pub fn render(
        &self,
        format: Format,
        patch_container: Option<&str>,
    ) -> Result<String, serde_json::Error> {
        Ok(match format {
            Format::Json => serde_json::to_string_pretty(self)? + "\n",
            Format::Markdown => self.render_markdown(),
            Format::Yaml => self.render_yaml(patch_container),
            Format::Table => self.render_table(),
        })
    }

    /// Markdown: each target's recommendation and checklist.
    pub fn render_markdown(&self) -> String {
        self.targets
            .iter()
            .filter_map(|target| {
                Some(render_recommendation_markdown(
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
                Some(yaml_patch(
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
        if self.mode == ReportMode::Node {
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

/// One target of a capture: a heading, then one section after another.
fn render_target(out: &mut String, t: &TargetReport, duration: f64) {
    render_heading(out, t, duration);
    render_memory(out, t);
    render_reserved(out, t);
    render_threads_and_spikes(out, t);
    render_sources_and_kills(out, t);
    if let (Some(recommendation), Some(checklist)) = (&t.recommendation, &t.checklist) {
        out.push('\n');
        out.push_str(&render_recommendation(recommendation, checklist));
    }
    render_processes(out, t);
    out.push('\n');
}

/// What was captured, how it ended, and who it belongs to.
fn render_heading(out: &mut String, t: &TargetReport, duration: f64) {
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
}

/// Charged, resident and reserved peaks, startup and steady state.
fn render_memory(out: &mut String, t: &TargetReport) {
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
}

/// Reserved address space at its peak, by kind, and the mapping volume.
fn render_reserved(out: &mut String, t: &TargetReport) {
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
}

/// Threads, processes, and the spikes above steady state.
fn render_threads_and_spikes(out: &mut String, t: &TargetReport) {
    let a = &t.activity;
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
}

/// Who made the memory, what the stacks cannot show, and OOM kills.
fn render_sources_and_kills(out: &mut String, t: &TargetReport) {
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
            let resident = if kill.sizes_unknown {
                "its size not in this kernel's OOM record".to_owned()
            } else {
                format!("{} anon resident", format_bytes(kill.anon_rss_bytes))
            };
            let _ = writeln!(
                out,
                "  at {:.2} s: pid {} ({}) with {resident}",
                kill.seconds,
                kill.pid,
                kill.command.as_deref().unwrap_or("?"),
            );
        }
    }
}

/// The per-process table, heaviest first, the first 20 of them.
fn render_processes(out: &mut String, t: &TargetReport) {
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
}

/// A `resources:` block, or with a container name a strategic-merge patch for the owning
/// workload, ready for `kubectl patch --type strategic -p "$(cat patch.yaml)"`.
pub fn yaml_patch(
    recommendation: &Recommendation,
    target: &str,
    container: Option<&str>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# headroom recommendation for {target}");
    let _ = writeln!(
        out,
        "# confidence {:?}; {}",
        recommendation.confidence,
        recommendation.reasons.first().map_or("", String::as_str)
    );
    let indent = match container {
        Some(name) => {
            let _ = writeln!(out, "spec:\n  template:\n    spec:\n      containers:");
            let _ = writeln!(out, "        - name: {name}");
            "          "
        }
        None => "",
    };
    let _ = writeln!(out, "{indent}resources:");
    let _ = writeln!(out, "{indent}  requests:");
    let _ = writeln!(out, "{indent}    memory: {}", recommendation.request);
    let _ = writeln!(out, "{indent}  limits:");
    let _ = writeln!(out, "{indent}    memory: {}", recommendation.limit);
    out
}

/// The recommendation as table lines (appended to the capture table).
pub fn render_recommendation(recommendation: &Recommendation, checklist: &Checklist) -> String {
    let mut out = String::new();
    let r = recommendation;
    let _ = writeln!(
        out,
        "RECOMMENDATION   request {}   limit {}   (headroom {:.0} %, confidence {:?})",
        r.request,
        r.limit,
        r.headroom_fraction * 100.0,
        r.confidence
    );
    for reason in &r.reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    for flag in &r.flags {
        let _ = writeln!(out, "  ! {}: {}", flag.kind, flag.message);
    }
    for warning in &r.warnings {
        let _ = writeln!(out, "  ! warning: {warning}");
    }
    let _ = writeln!(out, "  confidence: {}", r.confidence_reasons.join("; "));
    let _ = writeln!(out, "Checklist");
    for (question, item) in checklist_items(checklist) {
        let _ = writeln!(
            out,
            "  [{}] {question}: {}",
            if item.answer { "x" } else { " " },
            item.evidence
        );
    }
    out
}

fn checklist_items(checklist: &Checklist) -> [(&'static str, &ChecklistItem); 5] {
    [
        ("startup peaks measured", &checklist.startup_peaks_measured),
        (
            "real traffic spikes observed",
            &checklist.real_traffic_spikes_observed,
        ),
        (
            "allocator-reserved memory included",
            &checklist.allocator_reserved_memory_included,
        ),
        ("headroom added", &checklist.headroom_added),
        (
            "limits far enough from averages",
            &checklist.limits_far_enough_from_averages,
        ),
    ]
}

/// The recommendation as Markdown.
pub fn render_recommendation_markdown(
    target: &str,
    recommendation: &Recommendation,
    checklist: &Checklist,
) -> String {
    let mut out = String::new();
    let r = recommendation;
    let _ = writeln!(out, "## Memory for `{target}`\n");
    let _ = writeln!(out, "| | memory |\n|---|---|");
    let _ = writeln!(out, "| request | **{}** |", r.request);
    let _ = writeln!(out, "| limit | **{}** |", r.limit);
    let _ = writeln!(out, "| headroom | {:.0} % |", r.headroom_fraction * 100.0);
    let _ = writeln!(out, "| confidence | {:?} |\n", r.confidence);
    let _ = writeln!(out, "### Why\n");
    for reason in &r.reasons {
        let _ = writeln!(out, "- {reason}");
    }
    for flag in &r.flags {
        let _ = writeln!(out, "- **{}**: {}", flag.kind, flag.message);
    }
    for warning in &r.warnings {
        let _ = writeln!(out, "- **warning**: {warning}");
    }
    let _ = writeln!(out, "- confidence: {}\n", r.confidence_reasons.join("; "));
    let _ = writeln!(out, "### Checklist\n");
    for (question, item) in checklist_items(checklist) {
        let _ = writeln!(
            out,
            "- [{}] {question}: {}",
            if item.answer { "x" } else { " " },
            item.evidence
        );
    }
    out
}
