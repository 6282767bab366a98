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

/// Code paths (from stacks) and the hidden consumers the seed names, heaviest first; none of
/// 0 bytes.
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
        // A source is memory made: a code path that only reserved address space (the loader's
        // mappings, a large malloc not yet touched) would be a 0-byte line. Its reservations
        // stay in `stacks.top`, the folded stacks and the pprof `reserved` samples.
        for path in profile
            .code_paths()
            .into_iter()
            .filter(|p| p.resident_bytes > 0)
        {
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
            if bytes > 0 {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stacks::{Frame, SymbolizedStack};

    fn stack(function: &str, fault_bytes: u64, reserved_bytes: u64) -> SymbolizedStack {
        SymbolizedStack {
            frames: vec![Frame {
                function: Some(Arc::from(function)),
                module: Arc::from("service"),
                offset: 0x10,
            }],
            fault_bytes,
            reserved_bytes,
            samples: 1,
        }
    }

    #[test]
    fn no_source_of_zero_bytes_is_listed() {
        let profile = StackProfile::for_tests(vec![
            stack("build_cache", 8 << 20, 8 << 20),
            stack("map_reserve", 0, 64 << 20),
        ]);
        let figures = SourceFigures {
            // Stacks reserved but never touched, and file mappings that were.
            stack_reserved_bytes: 8 << 20,
            file_resident_peak_bytes: 1 << 20,
            ..SourceFigures::default()
        };
        let sources = memory_sources(&figures, Some(&profile));
        let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names[0], "build_cache");
        assert_eq!(sources.len(), 2, "{names:?}");
        assert!(sources.iter().all(|source| source.bytes > 0));
        // The reservation is still in the stacks themselves.
        assert!(profile
            .summary
            .top
            .iter()
            .any(|entry| entry.code_path == "map_reserve" && entry.reserved_bytes == 64 << 20));
    }
}
