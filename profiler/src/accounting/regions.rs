//! Live reserved address space per process, kept region by region from the kernel's mapping
//! events, so it stays right across partial munmap, mremap, mprotect, exec and exit. The kernel
//! counters give volumes (what was mapped); this gives the size at each moment and its peak.

use std::collections::{BTreeMap, HashMap};

use profiler_common::{mapping_kind, mapping_op, mmap_bits, page_round_up, PAGE_SIZE};

pub use crate::report::ReservedBytes;

use crate::probes::MappingChange;
use crate::procfs::{self, MapsLine};

impl ReservedBytes {
    pub fn total(&self) -> u64 {
        self.brk_heap + self.stack + self.anonymous + self.file + self.shared + self.no_access
    }

    fn slot(&mut self, kind: usize) -> &mut u64 {
        match kind {
            mapping_kind::STACK => &mut self.stack,
            mapping_kind::FILE => &mut self.file,
            mapping_kind::SHARED => &mut self.shared,
            mapping_kind::NO_ACCESS => &mut self.no_access,
            _ => &mut self.anonymous,
        }
    }

    fn add(&mut self, kind: usize, bytes: u64) {
        let slot = self.slot(kind);
        *slot = slot.saturating_add(bytes);
    }

    fn sub(&mut self, kind: usize, bytes: u64) {
        let slot = self.slot(kind);
        *slot = slot.saturating_sub(bytes);
    }

    /// Each kind raised to the other's value where that is higher.
    pub fn max_each(&mut self, other: &Self) {
        self.brk_heap = self.brk_heap.max(other.brk_heap);
        self.stack = self.stack.max(other.stack);
        self.anonymous = self.anonymous.max(other.anonymous);
        self.file = self.file.max(other.file);
        self.shared = self.shared.max(other.shared);
        self.no_access = self.no_access.max(other.no_access);
    }
}

/// What a region was created as; its kind also depends on its current protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    Stack,
    File,
    Shared,
    Private { no_reserve: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    end: u64,
    backing: Backing,
    prot: u32,
}

impl Region {
    fn kind(&self) -> usize {
        match self.backing {
            Backing::Stack => mapping_kind::STACK,
            Backing::File => mapping_kind::FILE,
            Backing::Shared => mapping_kind::SHARED,
            Backing::Private { no_reserve } if no_reserve || self.prot == 0 => {
                mapping_kind::NO_ACCESS
            }
            Backing::Private { .. } => mapping_kind::ANONYMOUS,
        }
    }
}

fn backing_of(flags: u64) -> Backing {
    if flags & mmap_bits::MAP_STACK != 0 {
        Backing::Stack
    } else if flags & mmap_bits::MAP_ANONYMOUS == 0 {
        Backing::File
    } else if flags & mmap_bits::MAP_SHARED != 0 {
        Backing::Shared
    } else {
        Backing::Private {
            no_reserve: flags & mmap_bits::MAP_NORESERVE != 0,
        }
    }
}

#[derive(Debug, Default)]
struct AddressSpace {
    regions: BTreeMap<u64, Region>,
    brk_start: Option<u64>,
    brk_current: u64,
    totals: ReservedBytes,
}

impl AddressSpace {
    /// Splits the region containing `at` (if any) so that a region boundary falls on `at`.
    fn split_at(&mut self, at: u64) {
        let Some((&start, &region)) = self.regions.range(..at).next_back() else {
            return;
        };
        if region.end > at {
            self.regions.insert(start, Region { end: at, ..region });
            self.regions.insert(at, region);
        }
    }

    fn remove_range(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        let inside: Vec<u64> = self.regions.range(start..end).map(|(&s, _)| s).collect();
        for region_start in inside {
            if let Some(region) = self.regions.remove(&region_start) {
                self.totals.sub(region.kind(), region.end - region_start);
            }
        }
    }

    fn insert(&mut self, start: u64, region: Region) {
        self.remove_range(start, region.end);
        self.totals.add(region.kind(), region.end - start);
        self.regions.insert(start, region);
    }

    fn protect(&mut self, start: u64, end: u64, prot: u32) {
        self.split_at(start);
        self.split_at(end);
        let inside: Vec<u64> = self.regions.range(start..end).map(|(&s, _)| s).collect();
        for region_start in inside {
            if let Some(region) = self.regions.get_mut(&region_start) {
                let bytes = region.end - region_start;
                self.totals.sub(region.kind(), bytes);
                region.prot = prot;
                self.totals.add(region.kind(), bytes);
            }
        }
    }

    /// The region that contains `addr`.
    fn region_at(&self, addr: u64) -> Option<Region> {
        self.regions
            .range(..=addr)
            .next_back()
            .filter(|(_, region)| region.end > addr)
            .map(|(_, region)| *region)
    }

    fn set_brk(&mut self, new_brk: u64) {
        match self.brk_start {
            None => {
                self.brk_start = Some(new_brk);
                self.brk_current = new_brk;
            }
            Some(start) => {
                self.brk_current = new_brk.max(start);
            }
        }
        self.totals.brk_heap = self.brk_current - self.brk_start.unwrap_or(self.brk_current);
    }

    fn region_count(&self) -> usize {
        self.regions.len()
    }
}

/// Address spaces of every process of one target, with their sum and its peaks.
#[derive(Debug)]
pub struct RegionTracker {
    processes: HashMap<u32, AddressSpace>,
    max_regions: usize,
    regions: usize,
    /// Current reserved bytes of the whole target, by kind.
    pub current: ReservedBytes,
    /// Highest total seen, and the breakdown at that moment.
    pub peak_total: u64,
    pub at_peak: ReservedBytes,
    /// Each kind's own highest value.
    pub peak_by_kind: ReservedBytes,
    /// Events applied, and events not applied because the region bound was reached.
    pub events: u64,
    pub overflowed: u64,
}

impl RegionTracker {
    /// `max_regions` bounds memory: about 80 bytes a region.
    pub fn new(max_regions: usize) -> Self {
        Self {
            processes: HashMap::new(),
            max_regions,
            regions: 0,
            current: ReservedBytes::default(),
            peak_total: 0,
            at_peak: ReservedBytes::default(),
            peak_by_kind: ReservedBytes::default(),
            events: 0,
            overflowed: 0,
        }
    }

    /// Applies one mapping change.
    pub fn apply(&mut self, change: &MappingChange) {
        if self.regions >= self.max_regions && change.op == mapping_op::MAP {
            self.overflowed += 1;
            return;
        }
        self.events += 1;
        let space = self.processes.entry(change.header.tgid).or_default();
        let before = space.totals;
        let regions_before = space.region_count();
        let end = |addr: u64, len: u64| addr.saturating_add(page_round_up(len));
        match change.op {
            mapping_op::MAP => space.insert(
                change.addr,
                Region {
                    end: end(change.addr, change.len),
                    backing: backing_of(change.flags),
                    prot: change.prot,
                },
            ),
            mapping_op::UNMAP => space.remove_range(change.addr, end(change.addr, change.len)),
            mapping_op::PROTECT => {
                space.protect(change.addr, end(change.addr, change.len), change.prot)
            }
            mapping_op::REMAP => remap(space, change),
            mapping_op::BRK => space.set_brk(change.addr),
            mapping_op::EXEC => *space = AddressSpace::default(),
            _ => {}
        }
        let after = space.totals;
        self.regions = (self.regions + space.region_count()).saturating_sub(regions_before);
        self.account(&before, &after);
    }

    /// Seeds a process that was already running from its /proc/PID/maps text.
    pub fn seed_from_maps(&mut self, tgid: u32, maps: &str) {
        let space = self.processes.entry(tgid).or_default();
        let before = space.totals;
        let regions_before = space.region_count();
        for line in maps.lines() {
            let Some(entry) = procfs::parse_maps_line(line)
                .ok()
                .and_then(|line| maps_entry(&line))
            else {
                continue;
            };
            match entry.backing {
                MapsBacking::Heap => {
                    space.brk_start = Some(entry.start);
                    space.set_brk(entry.end);
                }
                MapsBacking::Region(backing) => space.insert(
                    entry.start,
                    Region {
                        end: entry.end,
                        backing,
                        prot: entry.prot,
                    },
                ),
            }
        }
        let after = space.totals;
        self.regions = (self.regions + space.region_count()).saturating_sub(regions_before);
        self.account(&before, &after);
    }

    /// A process exited: its address space is gone.
    pub fn forget(&mut self, tgid: u32) {
        if let Some(space) = self.processes.remove(&tgid) {
            self.regions = self.regions.saturating_sub(space.region_count());
            self.account(&space.totals, &ReservedBytes::default());
        }
    }

    /// Current reserved bytes of one process.
    pub fn process_total(&self, tgid: u32) -> Option<ReservedBytes> {
        self.processes.get(&tgid).map(|space| space.totals)
    }

    /// Address ranges of a process's thread-stack regions (for resident sampling).
    pub fn stack_ranges(&self, tgid: u32) -> Vec<(u64, u64)> {
        self.processes
            .get(&tgid)
            .map(|space| {
                space
                    .regions
                    .iter()
                    .filter(|(_, region)| region.backing == Backing::Stack)
                    .map(|(&start, region)| (start, region.end))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tracked_processes(&self) -> impl Iterator<Item = u32> + '_ {
        self.processes.keys().copied()
    }

    pub fn region_count(&self) -> usize {
        self.regions
    }

    fn account(&mut self, before: &ReservedBytes, after: &ReservedBytes) {
        let c = &mut self.current;
        let apply = |current: &mut u64, old: u64, new: u64| {
            *current = current.saturating_sub(old).saturating_add(new);
        };
        apply(&mut c.brk_heap, before.brk_heap, after.brk_heap);
        apply(&mut c.stack, before.stack, after.stack);
        apply(&mut c.anonymous, before.anonymous, after.anonymous);
        apply(&mut c.file, before.file, after.file);
        apply(&mut c.shared, before.shared, after.shared);
        apply(&mut c.no_access, before.no_access, after.no_access);
        let total = self.current.total();
        if total > self.peak_total {
            self.peak_total = total;
            self.at_peak = self.current;
        }
        let current = self.current;
        self.peak_by_kind.max_each(&current);
    }
}

fn remap(space: &mut AddressSpace, change: &MappingChange) {
    let old_start = change.addr;
    let old_end = old_start.saturating_add(change.len);
    let new_start = change.new_addr;
    let new_end = new_start.saturating_add(change.new_len);
    let template = space.region_at(old_start).unwrap_or(Region {
        end: 0,
        backing: Backing::Private { no_reserve: false },
        prot: 0x3,
    });
    if new_start == old_start {
        // Resized in place.
        if new_end < old_end {
            space.remove_range(new_end, old_end);
        } else if new_end > old_end {
            space.insert(
                old_end,
                Region {
                    end: new_end,
                    ..template
                },
            );
        }
        return;
    }
    if change.flags & mmap_bits::MREMAP_DONTUNMAP == 0 {
        space.remove_range(old_start, old_end);
    }
    space.insert(
        new_start,
        Region {
            end: new_end,
            ..template
        },
    );
}

enum MapsBacking {
    Heap,
    Region(Backing),
}

struct MapsEntry {
    start: u64,
    end: u64,
    prot: u32,
    backing: MapsBacking,
}

/// What a /proc/PID/maps line contributes to the reserved bytes: None for the kernel's own
/// mappings (vdso and the like) and for lines too short to be a region.
fn maps_entry(line: &MapsLine<'_>) -> Option<MapsEntry> {
    let (start, end) = (line.start, line.end);
    if line.perms.len() < 4 || end <= start || end - start < PAGE_SIZE {
        return None;
    }
    let backing = match line.path.trim_end() {
        "[heap]" => MapsBacking::Heap,
        "[stack]" => MapsBacking::Region(Backing::Stack),
        "[vvar]" | "[vdso]" | "[vsyscall]" | "[vvar_vclock]" => return None,
        _ if line.inode != 0 => MapsBacking::Region(Backing::File),
        _ if line.shared() => MapsBacking::Region(Backing::Shared),
        _ => MapsBacking::Region(Backing::Private { no_reserve: false }),
    };
    Some(MapsEntry {
        start,
        end,
        prot: line.prot(),
        backing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const ANON_PRIVATE: u64 = 0x22;
    const RW: u32 = 0x3;

    fn change(op: u32, addr: u64, len: u64, prot: u32, flags: u64) -> MappingChange {
        MappingChange {
            header: profiler_common::EventHeader {
                kind: profiler_common::event_kind::MAPPING,
                tgid: 1,
                target_id: 9,
                timestamp_ns: 0,
            },
            op,
            prot,
            flags,
            addr,
            len,
            new_addr: 0,
            new_len: 0,
        }
    }

    fn map(addr: u64, len: u64, prot: u32, flags: u64) -> MappingChange {
        change(mapping_op::MAP, addr, len, prot, flags)
    }

    #[test]
    fn partial_munmap_leaves_the_rest() {
        let mut tracker = RegionTracker::new(1000);
        tracker.apply(&map(0x1000_0000, 64 * MIB, RW, ANON_PRIVATE));
        tracker.apply(&change(
            mapping_op::UNMAP,
            0x1000_0000 + 16 * MIB,
            16 * MIB,
            0,
            0,
        ));
        assert_eq!(tracker.current.anonymous, 48 * MIB);
        assert_eq!(tracker.peak_total, 64 * MIB);
        assert_eq!(tracker.region_count(), 2);
    }

    #[test]
    fn glibc_arena_reservation_is_no_access_until_protected() {
        let mut tracker = RegionTracker::new(1000);
        // glibc new_heap: PROT_NONE | MAP_NORESERVE, then mprotect RW as the heap grows.
        tracker.apply(&map(0x4000_0000, 64 * MIB, 0, 0x4022));
        assert_eq!(tracker.current.no_access, 64 * MIB);
        tracker.apply(&change(mapping_op::PROTECT, 0x4000_0000, MIB, RW, 0));
        // Still a MAP_NORESERVE region: no commit charge, still a reservation.
        assert_eq!(tracker.current.no_access, 64 * MIB);
        assert_eq!(tracker.current.total(), 64 * MIB);
    }

    #[test]
    fn thread_stack_stays_a_stack_across_mprotect_of_its_guard() {
        let mut tracker = RegionTracker::new(1000);
        tracker.apply(&map(0x7000_0000, 8 * MIB + 4096, 0, 0x20022));
        tracker.apply(&change(mapping_op::PROTECT, 0x7000_1000, 8 * MIB, RW, 0));
        assert_eq!(tracker.current.stack, 8 * MIB + 4096);
        assert_eq!(
            tracker.stack_ranges(1),
            vec![(0x7000_0000, 0x7000_1000), (0x7000_1000, 0x7080_1000)]
        );
    }

    #[test]
    fn private_prot_none_becomes_anonymous_when_made_accessible() {
        let mut tracker = RegionTracker::new(1000);
        tracker.apply(&map(0x1000_0000, 4 * MIB, 0, ANON_PRIVATE));
        tracker.apply(&change(mapping_op::PROTECT, 0x1000_0000, MIB, RW, 0));
        assert_eq!(tracker.current.anonymous, MIB);
        assert_eq!(tracker.current.no_access, 3 * MIB);
    }

    #[test]
    fn mremap_grow_move_and_shrink() {
        let mut tracker = RegionTracker::new(1000);
        tracker.apply(&map(0x1000_0000, 4 * MIB, RW, ANON_PRIVATE));
        let mut grow = change(
            mapping_op::REMAP,
            0x1000_0000,
            4 * MIB,
            0,
            mmap_bits::MREMAP_MAYMOVE,
        );
        grow.new_addr = 0x2000_0000;
        grow.new_len = 16 * MIB;
        tracker.apply(&grow);
        assert_eq!(tracker.current.anonymous, 16 * MIB);
        let mut shrink = change(mapping_op::REMAP, 0x2000_0000, 16 * MIB, 0, 0);
        shrink.new_addr = 0x2000_0000;
        shrink.new_len = 2 * MIB;
        tracker.apply(&shrink);
        assert_eq!(tracker.current.anonymous, 2 * MIB);
        assert_eq!(tracker.peak_total, 16 * MIB);
    }

    #[test]
    fn map_fixed_over_an_existing_mapping_replaces_it() {
        let mut tracker = RegionTracker::new(1000);
        tracker.apply(&map(0x1000_0000, 8 * MIB, RW, ANON_PRIVATE));
        tracker.apply(&map(0x1000_0000 + 2 * MIB, 2 * MIB, 0x1, 0x12));
        assert_eq!(tracker.current.anonymous, 6 * MIB);
        assert_eq!(tracker.current.file, 2 * MIB);
    }

    #[test]
    fn brk_heap_exec_and_exit() {
        let mut tracker = RegionTracker::new(1000);
        tracker.apply(&change(mapping_op::BRK, 0x5000_0000, 0, 0, 0));
        tracker.apply(&change(mapping_op::BRK, 0x5000_0000 + MIB, 0, 0, 0));
        assert_eq!(tracker.current.brk_heap, MIB);
        tracker.apply(&map(0x1000_0000, MIB, RW, ANON_PRIVATE));
        tracker.apply(&change(mapping_op::EXEC, 0, 0, 0, 0));
        assert_eq!(tracker.current.total(), 0);
        tracker.apply(&map(0x1000_0000, MIB, RW, ANON_PRIVATE));
        tracker.forget(1);
        assert_eq!(tracker.current.total(), 0);
        assert_eq!(tracker.region_count(), 0);
        assert_eq!(tracker.peak_total, 2 * MIB);
    }

    #[test]
    fn region_bound_is_respected() {
        let mut tracker = RegionTracker::new(2);
        for i in 0..5 {
            tracker.apply(&map(0x1000_0000 + i * 0x10_0000, 4096, RW, ANON_PRIVATE));
        }
        assert_eq!(tracker.region_count(), 2);
        assert_eq!(tracker.overflowed, 3);
    }

    #[test]
    fn seeds_from_proc_maps() {
        let maps = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0004000000 ---p 00000000 00:00 0 
7f1000000000-7f1000200000 r-xp 00000000 fe:01 123                        /usr/lib/libc.so.6
7f2000000000-7f2000100000 rw-s 00000000 00:01 0                          /dev/zero (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
garbage line
";
        let mut tracker = RegionTracker::new(1000);
        tracker.seed_from_maps(7, maps);
        let totals = tracker.process_total(7).expect("seeded");
        assert_eq!(totals.brk_heap, 0x21000);
        assert_eq!(totals.no_access, 64 * MIB);
        assert_eq!(totals.file, 2 * MIB);
        assert_eq!(totals.shared, MIB);
        assert_eq!(totals.stack, 0x21000);
    }
}
