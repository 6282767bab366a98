//! `.eh_frame` unwinding of copied user stacks, for code built without frame pointers (Debian's
//! glibc, most distribution libraries, Rust and C++ release builds by default).
//!
//! The probe copies the user registers and a bounded slice of the stack (see
//! `profiler_common::STACK_SNAPSHOT_BYTES`); here framehop walks it with each module's
//! `.eh_frame` call-frame information. A frame whose caller lies beyond the copied slice ends
//! the walk, so very deep stacks are cut short rather than guessed.

use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};

use super::modules::{ExecMapping, ModuleCache};
use crate::probes::events::StackSnapshot;

/// Frames walked at most (the kernel's own limit for frame-pointer stacks).
const MAX_FRAMES: usize = profiler_common::MAX_STACK_FRAMES;

/// framehop's unwinder for one process's address space.
pub struct ProcessUnwinder {
    unwinder: UnwinderX86_64<Arc<[u8]>>,
    cache: CacheX86_64,
}

impl ProcessUnwinder {
    /// Registers every executable module of a process that has unwind information.
    pub fn new(mappings: &[ExecMapping], modules: &mut ModuleCache) -> Self {
        let mut unwinder = UnwinderX86_64::new();
        for mapping in mappings {
            let Some(index) = mapping.module else {
                continue;
            };
            let Some(sections) = modules.unwind_sections(index) else {
                continue;
            };
            let Some(module) = modules.module(index) else {
                continue;
            };
            let base_avma = module.load_bias(mapping.start, mapping.file_offset);
            let info = ExplicitModuleSectionInfo {
                base_svma: sections.base_svma,
                text_svma: sections.text_svma.clone(),
                text: sections.text.clone(),
                eh_frame_svma: sections.eh_frame_svma.clone(),
                eh_frame: sections.eh_frame.clone(),
                eh_frame_hdr_svma: sections.eh_frame_hdr_svma.clone(),
                eh_frame_hdr: sections.eh_frame_hdr.clone(),
                ..Default::default()
            };
            unwinder.add_module(Module::new(
                module.name.to_string(),
                mapping.start..mapping.end,
                base_avma,
                info,
            ));
        }
        Self {
            unwinder,
            cache: CacheX86_64::new(),
        }
    }

    /// The return addresses of a copied stack, innermost first (the sampled instruction first).
    pub fn unwind(&mut self, snapshot: &StackSnapshot) -> Vec<u64> {
        let stack = &snapshot.stack;
        let base = snapshot.sp;
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            let offset = address.checked_sub(base).ok_or(())? as usize;
            let bytes = stack
                .get(offset..offset.checked_add(8).ok_or(())?)
                .ok_or(())?;
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            Ok(u64::from_le_bytes(word))
        };
        let regs = UnwindRegsX86_64::new(snapshot.ip, snapshot.sp, snapshot.bp);
        let mut frames = Vec::new();
        let mut iter =
            self.unwinder
                .iter_frames(snapshot.ip, regs, &mut self.cache, &mut read_stack);
        while frames.len() < MAX_FRAMES {
            match iter.next() {
                Ok(Some(frame)) => frames.push(frame.address()),
                Ok(None) | Err(_) => break,
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_address_space_yields_the_sampled_instruction_only() {
        let mut modules = ModuleCache::new();
        let mut unwinder = ProcessUnwinder::new(&[], &mut modules);
        let snapshot = StackSnapshot {
            ip: 0x401000,
            sp: 0x7fff_0000,
            bp: 0,
            stack: vec![0; 64],
        };
        let frames = unwinder.unwind(&snapshot);
        assert_eq!(frames.first(), Some(&0x401000));
        assert!(frames.len() <= 2);
    }
}
