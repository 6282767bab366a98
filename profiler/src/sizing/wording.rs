//! Phrases more than one step's reasons share.

use crate::report::Basis;

/// What the figures were measured from, as the reasons name it.
pub(super) fn basis_name(basis: Basis) -> &'static str {
    if basis == Basis::Charged {
        "cgroup charge"
    } else {
        "resident memory (no cgroup of its own)"
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
