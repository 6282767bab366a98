//! The report's `sources`: code paths from sampled stacks, and the hidden consumers the seed
//! names (thread stacks, allocator arenas, file mappings, shared memory), heaviest first.

use crate::{
    report::{Measure, MemorySource, SourceKind},
    stacks::StackProfile,
};

/// Figures the non-code sources are read from.
#[derive(Clone, Debug, Default)]
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
    profile: Option<&StackProfile>,
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
                kind: SourceKind::CodePath,
                name: path.name,
                measure: Measure::SampledResident,
                bytes: path.resident_bytes,
                reserved_bytes: Some(path.reserved_bytes),
                frames: path.frames,
            });
        }
    }
    let mut add =
        |kind: SourceKind, name: String, measure: Measure, bytes: u64, reserved: Option<u64>| {
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
        SourceKind::ThreadStacks,
        "thread stacks (resident peak from smaps)".to_owned(),
        Measure::Resident,
        figures.stack_resident_bytes,
        Some(figures.stack_reserved_bytes),
    );
    add(
        SourceKind::AllocatorArenas,
        format!("{allocator} arenas and reserve (PROT_NONE/MAP_NORESERVE regions)"),
        Measure::Reserved,
        figures.arena_reserved_bytes,
        Some(figures.arena_reserved_bytes),
    );
    add(
        SourceKind::FileMappings,
        "file-backed mappings (binaries, libraries, mapped files)".to_owned(),
        Measure::Resident,
        figures.file_resident_peak_bytes,
        Some(figures.file_reserved_bytes),
    );
    add(
        SourceKind::SharedMemory,
        "shared memory (MAP_SHARED anonymous, shmem, tmpfs)".to_owned(),
        Measure::Resident,
        figures.shmem_resident_bytes,
        Some(figures.shared_reserved_bytes),
    );
    sources.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    sources
}
