//! Phrases more than one step's reasons share.

use crate::report::Basis;

/// What the figures were measured from, as the reasons name it.
pub(super) fn basis_name(basis: Basis) -> &'static str {
    match basis {
        Basis::Charged => "cgroup charge",
        Basis::WorkingSet => "working set (cgroup charge less clean page cache no process maps)",
        Basis::Resident => "resident memory (no cgroup of its own)",
    }
}

/// " at 1.2 s" when the time is known, nothing otherwise.
pub(super) fn at_seconds(at: Option<f64>) -> String {
    at.map_or_else(String::new, |s| format!(" at {s:.1} s"))
}

/// The plural "s" for a count of `n`.
pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The page cache's own line: how much of the charge was reclaimable cache, and what to do
/// about it. None when the basis keeps no cache apart.
pub(super) fn page_cache_line(o: &super::Observation) -> Option<String> {
    use crate::units::format_bytes;
    (o.basis == Basis::WorkingSet && o.page_cache_peak_bytes > 0).then(|| {
        format!(
            "page cache: up to {} of the charge (highest charge {}) was clean page cache no process maps, which the kernel reclaims before it OOM-kills; it is in neither value, and a charge that fills the limit with it is not a risk. If the service relies on cached reads (a database, a file server), add the part it re-reads to the request",
            format_bytes(o.page_cache_peak_bytes),
            format_bytes(o.charge_peak_bytes),
        )
    })
}

/// A span of time as people read it: `42 s`, `12 min`, `5.5 h`, `3.0 d`.
pub(super) fn span(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7_200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3_600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}
