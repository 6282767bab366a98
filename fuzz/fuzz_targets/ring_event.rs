//! The ring-buffer record decoder (`probes::decode_event`). Records come from the kernel, but
//! a version skew between the embedded eBPF object and user space, or a corrupt record, must
//! be an error, never a misread or a panic (ASan checks the unaligned reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::probes::decode_event;
use profiler_common::{
    event_kind, EventHeader, MappingEvent, OomVictimEvent, ProcessExitEvent, ProcessStartEvent,
};

/// Kinds with exactly one wire size. Kinds not listed (added later, or with several sizes)
/// are still fuzzed for panics and out-of-bounds reads; only this check skips them.
const FIXED_SIZES: [(u32, usize); 4] = [
    (event_kind::PROCESS_START, size_of::<ProcessStartEvent>()),
    (event_kind::PROCESS_EXIT, size_of::<ProcessExitEvent>()),
    (event_kind::MAPPING, size_of::<MappingEvent>()),
    (event_kind::OOM_VICTIM, size_of::<OomVictimEvent>()),
];

fuzz_target!(|data: &[u8]| {
    let Ok(event) = decode_event(data) else {
        return;
    };
    assert!(data.len() >= size_of::<EventHeader>(), "{event:?}");
    let kind = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
    if let Some((_, size)) = FIXED_SIZES.iter().find(|(known, _)| *known == kind) {
        assert_eq!(
            data.len(),
            *size,
            "kind {kind} accepted at the wrong size: {event:?}"
        );
    }
    // Decoding reads nothing but the bytes: the same record decodes the same way.
    assert_eq!(decode_event(data).as_ref(), Ok(&event));
});
