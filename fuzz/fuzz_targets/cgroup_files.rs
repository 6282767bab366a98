//! The cgroup memory-file parsers (`cgroups::parse_key`, `cgroups::parse_number`): memory.stat,
//! memory.events and memory.oom_control (flat `name value` lines), and the single-number files
//! (memory.current, memory.peak, memory.max, memory.usage_in_bytes, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::cgroups::{parse_key, parse_number};

/// Every key headroom reads, v1 and v2.
const KEYS: [&str; 5] = [
    "inactive_file",
    "total_inactive_file",
    "hierarchical_memory_limit",
    "oom_kill",
    "",
];

fuzz_target!(|data: &[u8]| {
    let _ = parse_number(data);
    // read_number reads at most 32 bytes: the same prefix must parse too.
    let _ = parse_number(&data[..data.len().min(32)]);
    let text = String::from_utf8_lossy(data);
    for key in KEYS {
        let _ = parse_key(&text, key);
    }
});
