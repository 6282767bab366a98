//! Runtime ceilings: memory a runtime was told it may use, whatever the capture saw it touch.
//! A JVM started with `-Xmx2g` that touched 50 MiB grows its heap towards 2 GiB under load
//! (it expands the heap rather than collect harder); a limit sized from the 50 MiB OOM-kills it.
//!
//! **Policy.** A ceiling the runtime grows into by itself is held by the limit: the limit is at
//! least the ceiling plus an allowance for what the runtime uses beside it, and a
//! `runtime_reservation` flag says so and how to get a limit near what was observed instead
//! (lower the ceiling). Those ceilings are a JVM's max heap (`-Xmx`, `-XX:MaxHeapSize`; +
//! [`JVM_NON_HEAP_ALLOWANCE`] for metaspace, code cache, thread stacks, direct buffers and GC
//! structures) and GOMEMLIMIT under `GOGC=off` (the heap is collected only as it nears it; +
//! [`GO_OTHER_ALLOWANCE`] for memory Go does not count: cgo, C libraries). GOMEMLIMIT with the
//! collector on is a soft target, not a reservation: the heap follows the live data, which the
//! capture measured, so the limit is not raised; when GOMEMLIMIT lies beyond the limit a flag
//! says to lower it (the collector would not work harder before the kernel OOM-kills). A
//! `-XX:MaxRAMPercentage` heap is a share of whatever limit is set, so it is flagged only when
//! the share leaves less than the non-heap allowance. The allocator item of the checklist fails
//! when any ceiling plus its allowance lies beyond the limit.

use super::{wording::plural, Observation, Policy};
use crate::{
    report::{AllocatorKind, Flag, FlagKind, ProcessRuntime, RuntimeKind},
    units::{format_bytes, quantity, round_up_mib},
};

/// Memory a JVM uses beside its heap, as a share of the max heap: metaspace, code cache,
/// thread stacks, direct buffers, GC structures. 25 % is the usual rule of thumb (and the
/// complement of the 80 % MaxRAMPercentage this allows).
pub const JVM_NON_HEAP_ALLOWANCE: f64 = 0.25;
/// Memory a Go program uses that GOMEMLIMIT does not count (cgo, C libraries), as a share of
/// GOMEMLIMIT: Go's own guidance is to leave 5-10 % of the container's limit.
pub const GO_OTHER_ALLOWANCE: f64 = 0.10;
/// Threads at which glibc's per-thread arenas (up to 8 per core) deserve a note.
pub const MANY_THREADS: u64 = 8;
/// Processes the runtime reason names one by one.
const NAMED: usize = 3;

/// One ceiling a process set.
pub(super) struct Ceiling<'a> {
    process: &'a ProcessRuntime,
    /// `JVM max heap`, `GOMEMLIMIT`.
    what: &'static str,
    bytes: u64,
    from: &'a str,
    allowance: f64,
    allowance_for: &'static str,
    /// The setting to lower.
    knob: &'static str,
    /// The runtime grows into the ceiling by itself: the limit holds it.
    grows_into: bool,
}

impl Ceiling<'_> {
    /// The ceiling with its allowance, rounded up to a MiB: the least limit that holds it.
    pub fn need(&self) -> u64 {
        round_up_mib((self.bytes as f64 * (1.0 + self.allowance)).ceil() as u64)
    }

    /// The most the ceiling can be for its need to fit `limit`.
    fn fitting(&self, limit: u64) -> u64 {
        (limit as f64 / (1.0 + self.allowance)) as u64
    }

    /// `JVM max heap 2.0 GiB (-Xmx2g on the command line, pid 42 java)`.
    fn named(&self) -> String {
        format!(
            "{} {} ({}, pid {} {})",
            self.what,
            format_bytes(self.bytes),
            self.from,
            self.process.pid,
            self.process.command
        )
    }

    /// `+ 25 % for non-heap memory (...)`.
    fn plus(&self) -> String {
        format!(
            "+ {:.0} % for {}",
            self.allowance * 100.0,
            self.allowance_for
        )
    }
}

/// Every ceiling the target's processes set.
fn ceilings(o: &Observation) -> Vec<Ceiling<'_>> {
    let mut found = Vec::new();
    for process in &o.runtime {
        if let Some(jvm) = &process.jvm {
            if let Some(bytes) = jvm.max_heap_bytes {
                found.push(Ceiling {
                    process,
                    what: "JVM max heap",
                    bytes,
                    from: jvm.max_heap_from.as_deref().unwrap_or("-Xmx"),
                    allowance: JVM_NON_HEAP_ALLOWANCE,
                    allowance_for:
                        "non-heap memory (metaspace, code cache, thread stacks, direct buffers)",
                    knob: "-Xmx",
                    grows_into: true,
                });
            }
        }
        if let Some(go) = &process.go {
            if let Some(bytes) = go.memory_limit_bytes {
                found.push(Ceiling {
                    process,
                    what: "GOMEMLIMIT",
                    bytes,
                    from: go.memory_limit_from.as_deref().unwrap_or("GOMEMLIMIT"),
                    allowance: GO_OTHER_ALLOWANCE,
                    allowance_for: "memory GOMEMLIMIT does not count (cgo, C libraries)",
                    knob: "GOMEMLIMIT",
                    grows_into: go.gc_off,
                });
            }
        }
    }
    found
}

/// The largest need among ceilings the runtime grows into (`grows_into`) or not.
fn largest(o: &Observation, grows_into: bool) -> Option<Ceiling<'_>> {
    ceilings(o)
        .into_iter()
        .filter(|c| c.grows_into == grows_into)
        .max_by_key(Ceiling::need)
}

/// The ceiling the limit must hold, if any.
pub(super) fn binding(o: &Observation) -> Option<Ceiling<'_>> {
    largest(o, true)
}

/// A JVM heap sized by MaxRAMPercentage above this share of the limit leaves less than the
/// non-heap allowance: heap × (1 + allowance) ≤ limit.
fn max_fitting_percentage() -> f64 {
    100.0 / (1.0 + JVM_NON_HEAP_ALLOWANCE)
}

/// JVMs whose heap is MaxRAMPercentage of the limit with too little left beside it.
fn crowded_percentages(o: &Observation) -> impl Iterator<Item = (&ProcessRuntime, f64, &str)> {
    o.runtime.iter().filter_map(|process| {
        let jvm = process
            .jvm
            .as_ref()
            .filter(|j| j.max_heap_bytes.is_none())?;
        let percentage = jvm.max_ram_percentage?;
        (percentage > max_fitting_percentage() + 1e-9).then_some((
            process,
            percentage,
            jvm.max_ram_percentage_from
                .as_deref()
                .unwrap_or("-XX:MaxRAMPercentage"),
        ))
    })
}

/// The policy step that raises `limit` to hold the binding ceiling, if it has to: the new
/// limit and the reason, in the "limit raised from A to B" form every policy step takes.
pub(super) fn raise(o: &Observation, limit: u64) -> Option<(u64, String)> {
    let ceiling = binding(o)?;
    let need = ceiling.need();
    (need > limit).then(|| {
        let why = match ceiling.knob {
            "-Xmx" => "a JVM grows its heap towards the maximum under load rather than collect harder, so a limit below it OOM-kills the JVM however little it used while captured",
            _ => "with GOGC=off the Go heap is collected only as it nears GOMEMLIMIT, so a limit below it OOM-kills the program however little it used while captured",
        };
        (
            need,
            format!(
                "limit raised from {} to {} to hold the {} {}: {why}",
                quantity(limit),
                quantity(need),
                ceiling.named(),
                ceiling.plus(),
            ),
        )
    })
}

/// Flags: a ceiling beyond what the observation calls for (`observed_limit`, before the
/// raise) or beyond the limit recommended (`limit`), with the fix; a MaxRAMPercentage that
/// leaves too little beside the heap.
pub(super) fn flags(
    o: &Observation,
    observed_limit: u64,
    limit: u64,
    policy: &Policy,
) -> Vec<Flag> {
    let flag = |message| Flag {
        kind: FlagKind::RuntimeReservation,
        message,
    };
    let mut flags = Vec::new();
    if let Some(ceiling) = binding(o).filter(|c| c.need() > observed_limit) {
        let need = ceiling.need();
        let current = o
            .current_limit_bytes
            .filter(|&current| current < need)
            .map_or_else(String::new, |current| {
                format!(
                    " The current limit {} is below that too.",
                    quantity(current)
                )
            });
        let message = if limit >= need {
            format!(
                "{} lies beyond the {} the observed peak calls for: the limit was raised to {} = {} {}. To keep a limit near what was observed instead, lower {} to at most {} ({} ÷ {:.2}) and capture again under load.{current}",
                ceiling.named(),
                quantity(observed_limit),
                quantity(limit),
                ceiling.what,
                ceiling.plus(),
                ceiling.knob,
                format_bytes(ceiling.fitting(observed_limit)),
                quantity(observed_limit),
                1.0 + ceiling.allowance,
            )
        } else {
            format!(
                "{} {} = {} lies beyond the limit {}{}: the runtime grows past it and is OOM-killed; lower {} to at most {}, or allow a limit of {}.{current}",
                ceiling.named(),
                ceiling.plus(),
                format_bytes(need),
                quantity(limit),
                if policy.max_bytes.is_some() { " (capped at the maximum)" } else { "" },
                ceiling.knob,
                format_bytes(ceiling.fitting(limit)),
                quantity(need),
            )
        };
        flags.push(flag(message));
    }
    if let Some(ceiling) = largest(o, false).filter(|c| c.need() > limit) {
        flags.push(flag(format!(
            "{} lies beyond the limit {}: the Go collector only works harder as the heap nears GOMEMLIMIT, so under this limit the kernel OOM-kills first. Set GOMEMLIMIT to at most {} (the limit less {:.0} % for memory it does not count), or raise the limit to {}",
            ceiling.named(),
            quantity(limit),
            format_bytes(ceiling.fitting(limit)),
            ceiling.allowance * 100.0,
            quantity(ceiling.need()),
        )));
    }
    if let Some((process, percentage, from)) = crowded_percentages(o).next() {
        flags.push(flag(format!(
            "MaxRAMPercentage {percentage:.0} % ({from}, pid {} {}) lets the JVM heap take {percentage:.0} % of whatever limit is set, leaving {:.0} % beside it where non-heap memory needs {:.0} % of the heap: lower it to at most {:.0}",
            process.pid,
            process.command,
            100.0 - percentage,
            JVM_NON_HEAP_ALLOWANCE * 100.0,
            max_fitting_percentage().floor(),
        )));
    }
    flags
}

/// The checklist's runtime part: whether every ceiling (with its allowance) lies within
/// `limit`, and each one in words (None when no process runtime was read: reports from
/// before the runtime section, and the agent's, which does not read it).
pub(super) fn checklist_words(o: &Observation, limit: u64) -> (bool, Option<String>) {
    if o.runtime.is_empty() {
        return (true, None);
    }
    let mut within = true;
    let mut parts = Vec::new();
    let mut seen = Vec::new();
    for ceiling in ceilings(o) {
        // Replicas and forks repeat the same setting: say it once.
        let key = (ceiling.what, ceiling.bytes);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let need = ceiling.need();
        within &= need <= limit;
        parts.push(format!(
            "{} {} + {:.0} % = {} {} the limit",
            ceiling.what,
            format_bytes(ceiling.bytes),
            ceiling.allowance * 100.0,
            format_bytes(need),
            if need <= limit { "within" } else { "beyond" },
        ));
    }
    for (_, percentage, _) in crowded_percentages(o) {
        within = false;
        parts.push(format!(
            "a JVM heap of MaxRAMPercentage {percentage:.0} % of the limit leaves less than the {:.0} % non-heap allowance",
            JVM_NON_HEAP_ALLOWANCE * 100.0
        ));
    }
    if parts.is_empty() {
        parts.push("no runtime ceiling (-Xmx, GOMEMLIMIT) set".to_owned());
    }
    let unknown = o.runtime.iter().filter(|p| !p.unknown.is_empty()).count() as u64;
    if unknown > 0 {
        parts.push(format!(
            "the settings of {unknown} process{} are partly unknown (see the runtime section)",
            if unknown == 1 { "" } else { "es" }
        ));
    }
    (within, Some(parts.join("; ")))
}

/// Reasons: what was detected and from what; why a soft ceiling does not raise the limit; a
/// note on glibc arenas. None of them changes a value.
pub(super) fn reasons(o: &Observation, limit: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    let interesting: Vec<&ProcessRuntime> = o
        .runtime
        .iter()
        .filter(|p| {
            p.runtime != RuntimeKind::Native || p.allocator.is_some() || !p.unknown.is_empty()
        })
        .collect();
    if !interesting.is_empty() {
        let mut named: Vec<String> = interesting
            .iter()
            .take(NAMED)
            .map(|p| describe(p))
            .collect();
        if interesting.len() > NAMED {
            named.push(format!(
                "{} more in the report's runtime section",
                interesting.len() - NAMED
            ));
        }
        reasons.push(format!("runtime read from /proc: {}", named.join("; ")));
    }
    if let Some(ceiling) = largest(o, false) {
        reasons.push(format!(
            "the limit is not raised for the {}: with the Go collector on it is a soft target, not memory the heap grows into (the heap follows the live data, which the capture measured){}",
            ceiling.named(),
            if ceiling.need() > limit {
                "; see the runtime_reservation flag"
            } else {
                ""
            }
        ));
    }
    let crowded = o
        .runtime
        .iter()
        .filter(|p| {
            p.allocator == Some(AllocatorKind::Glibc)
                && p.malloc_arena_max.is_none()
                && p.threads_peak.is_some_and(|t| t >= MANY_THREADS)
        })
        .max_by_key(|p| p.threads_peak);
    if let Some(process) = crowded {
        let threads = process.threads_peak.unwrap_or(0);
        reasons.push(format!(
            "note: pid {} {} uses glibc malloc with {threads} thread{} and MALLOC_ARENA_MAX unset: glibc opens up to 8 arenas per CPU core, each reserving 64 MiB and keeping freed memory of its own, so resident memory can creep past what a short capture saw; MALLOC_ARENA_MAX=2 bounds it (the limit is not changed for this)",
            process.pid,
            process.command,
            plural(threads),
        ));
    }
    reasons
}

/// `pid 42 java: jvm (argv[0] is java), max heap 2.0 GiB (-Xmx2g on the command line), glibc
/// malloc (libc.so.6 mapped ...)`.
fn describe(p: &ProcessRuntime) -> String {
    let mut words = vec![format!("pid {} {}: {}", p.pid, p.command, p.runtime)];
    if !p.runtime_from.is_empty() {
        words[0].push_str(&format!(" ({})", p.runtime_from));
    }
    if let Some(jvm) = &p.jvm {
        match (jvm.max_heap_bytes, jvm.max_ram_percentage) {
            (Some(bytes), _) => words.push(format!(
                "max heap {} ({})",
                format_bytes(bytes),
                jvm.max_heap_from.as_deref().unwrap_or("-Xmx")
            )),
            (None, Some(percentage)) => words.push(format!(
                "heap up to {percentage:.0} % of the limit ({})",
                jvm.max_ram_percentage_from
                    .as_deref()
                    .unwrap_or("-XX:MaxRAMPercentage")
            )),
            (None, None) => words
                .push("no max heap set (the JVM's default heap is 25 % of the limit)".to_owned()),
        }
    }
    if let Some(go) = &p.go {
        match (go.memory_limit_bytes, &go.memory_limit_from) {
            (Some(bytes), from) => words.push(format!(
                "GOMEMLIMIT {} ({})",
                format_bytes(bytes),
                from.as_deref().unwrap_or("GOMEMLIMIT")
            )),
            (None, Some(from)) => words.push(format!("no GOMEMLIMIT ({from})")),
            (None, None) => words.push("no GOMEMLIMIT".to_owned()),
        }
        if go.gc_off {
            words.push("GOGC=off".to_owned());
        }
    }
    if let (Some(allocator), Some(from)) = (p.allocator, &p.allocator_from) {
        words.push(format!("allocator {allocator} ({from})"));
    }
    if let Some(arenas) = p.malloc_arena_max {
        words.push(format!("{arenas} arenas at most"));
    }
    if !p.unknown.is_empty() {
        words.push(format!("unknown: {}", p.unknown.join(", ")));
    }
    words.join(", ")
}
