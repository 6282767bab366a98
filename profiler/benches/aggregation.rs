//! Aggregator throughput: ring-buffer records, laid out byte for byte as the kernel writes them,
//! through `probes::decode_event` and the accounting a capture session applies to each event
//! (`RegionTracker` and `ProcessTable`, as `capture::Observations::record` calls them).
//!
//! Run: `cargo bench --locked -p profiler --bench aggregation`. Criterion reports elements/s:
//! one element is one ring-buffer record, and the bench is single-threaded, so that is events per
//! second per core. `cargo xtask bench` runs it and writes the median to BENCHMARKS.md.

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use profiler::{
    accounting::{regions::RegionTracker, ProcessTable},
    probes::{decode_event, DecodeError, ProbeEvent},
};
use profiler_common::{
    event_kind, mapping_op, mmap_bits, EventHeader, MappingEvent, ProcessExitEvent,
    ProcessStartEvent,
};

/// The session's target (a cgroup id); the kernel only sends events of the watched target.
const TARGET: u64 = 4242;
/// Records in one pass of the stream.
const EVENTS: usize = 100_000;
/// Processes alive at once.
const LIVE_PROCESSES: usize = 200;
/// Records handed to the accounting at once (`EventStream::next_batch` drains what is ready).
const BATCH: usize = 256;
/// Capture's defaults (`CaptureOptions::new`).
const MAX_PROCESSES: usize = 10_000;
const MAX_REGIONS: usize = 262_144;

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const PROT_RW: u32 = 0x3;
const PROT_READ: u32 = 0x1;
const MAP_PRIVATE: u64 = 0x02;
const ANON_PRIVATE: u64 = MAP_PRIVATE | mmap_bits::MAP_ANONYMOUS;

/// A BPF ring buffer: each record behind an 8-byte header, rounded up to 8 bytes.
struct Ring {
    bytes: Vec<u8>,
    records: Vec<(usize, usize)>,
}

impl Ring {
    fn push<T: aya::Pod>(&mut self, value: &T) {
        // SAFETY: T is Pod (repr(C), no padding invariants), so its bytes may be read whole.
        let raw =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        self.bytes
            .extend_from_slice(&(raw.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        let start = self.bytes.len();
        self.bytes.extend_from_slice(raw);
        self.bytes.resize(start + raw.len().next_multiple_of(8), 0);
        self.records.push((start, raw.len()));
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.records
            .iter()
            .map(|&(start, len)| &self.bytes[start..start + len])
    }
}

/// xorshift64*: deterministic, so every run replays the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T>(&mut self, items: &[T]) -> Option<usize> {
        (!items.is_empty()).then(|| self.below(items.len() as u64) as usize)
    }
}

/// What the generator remembers of one process, so that unmaps and mprotects name real regions.
struct Process {
    tgid: u32,
    next_addr: u64,
    brk: u64,
    /// Private anonymous and file mappings: (addr, len).
    mappings: Vec<(u64, u64)>,
    /// Thread stacks: (addr, len), guard page first.
    stacks: Vec<(u64, u64)>,
    /// A malloc arena reservation and how much of it is accessible.
    arena: (u64, u64),
}

struct Generator {
    rng: Rng,
    ring: Ring,
    now_ns: u64,
    next_tgid: u32,
    live: Vec<Process>,
}

impl Generator {
    fn header(&mut self, kind: u32, tgid: u32) -> EventHeader {
        self.now_ns += 1_000 + self.rng.below(20_000);
        EventHeader {
            kind,
            tgid,
            target_id: TARGET,
            timestamp_ns: self.now_ns,
        }
    }

    fn mapping(&mut self, tgid: u32, op: u32, addr: u64, len: u64, prot: u32, flags: u64) {
        let event = MappingEvent {
            header: self.header(event_kind::MAPPING, tgid),
            op,
            prot,
            flags,
            addr,
            len,
            ..Default::default()
        };
        self.ring.push(&event);
    }

    /// A process is born: its start event, an arena reservation and its first heap.
    fn spawn(&mut self) {
        let tgid = self.next_tgid;
        self.next_tgid += 1;
        let mut start = ProcessStartEvent {
            header: self.header(event_kind::PROCESS_START, tgid),
            parent_tgid: 1,
            ..Default::default()
        };
        start.comm[..7].copy_from_slice(b"service");
        self.ring.push(&start);
        let base = 0x7f00_0000_0000 + u64::from(tgid) * 0x10_0000_0000;
        let arena = base;
        // glibc new_heap: 64 MiB PROT_NONE | MAP_NORESERVE, opened up by mprotect as it grows.
        self.mapping(
            tgid,
            mapping_op::MAP,
            arena,
            64 * MIB,
            0,
            ANON_PRIVATE | mmap_bits::MAP_NORESERVE,
        );
        let brk = 0x5500_0000_0000 + u64::from(tgid) * 0x1_0000_0000;
        self.mapping(tgid, mapping_op::BRK, brk, 0, 0, 0);
        self.live.push(Process {
            tgid,
            next_addr: base + 64 * MIB,
            brk,
            mappings: Vec::new(),
            stacks: Vec::new(),
            arena: (arena, 0),
        });
    }

    /// A process's last thread exits: its exit event with final counters.
    fn exit(&mut self, index: usize) {
        let process = self.live.swap_remove(index);
        let mut exit = ProcessExitEvent {
            header: self.header(event_kind::PROCESS_EXIT, process.tgid),
            ..Default::default()
        };
        exit.process.target_id = TARGET;
        exit.process.tasks_known = 1;
        exit.process.counters.mmap_calls = process.mappings.len() as u64;
        exit.process.counters.threads_created = process.stacks.len() as u64;
        exit.comm[..7].copy_from_slice(b"service");
        self.ring.push(&exit);
    }

    /// One step of a realistic mix: mostly malloc/free-driven mmap, munmap, mprotect and brk,
    /// thread stacks coming and going, some file maps and mremaps, and process churn.
    fn step(&mut self) {
        let Some(index) = self.rng.pick(&self.live) else {
            self.spawn();
            return;
        };
        let roll = self.rng.below(100);
        let tgid = self.live[index].tgid;
        match roll {
            // malloc's large blocks: a private anonymous mapping.
            0..=21 => {
                let len = (1 + self.rng.below(64)) * 128 * 1024;
                let process = &mut self.live[index];
                let addr = process.next_addr;
                process.next_addr += len + PAGE;
                process.mappings.push((addr, len));
                self.mapping(tgid, mapping_op::MAP, addr, len, PROT_RW, ANON_PRIVATE);
            }
            // free: whole unmaps, some partial (malloc trimming the tail).
            22..=39 => {
                let process = &mut self.live[index];
                let Some(which) = self.rng.pick(&process.mappings) else {
                    return;
                };
                let (addr, len) = process.mappings[which];
                let (unmap_addr, unmap_len) = if len > 2 * PAGE && self.rng.below(10) < 3 {
                    let keep = (len / 2) & !(PAGE - 1);
                    self.live[index].mappings[which] = (addr, keep);
                    (addr + keep, len - keep)
                } else {
                    self.live[index].mappings.swap_remove(which);
                    (addr, len)
                };
                self.mapping(tgid, mapping_op::UNMAP, unmap_addr, unmap_len, 0, 0);
            }
            // An arena grows (mprotect RW), or a region turns read-only (RELRO, JIT).
            40..=54 => {
                let process = &mut self.live[index];
                let (arena, open) = process.arena;
                if open < 64 * MIB && self.rng.below(3) != 0 {
                    let grow = 132 * 1024;
                    process.arena.1 = (open + grow).min(64 * MIB);
                    self.mapping(tgid, mapping_op::PROTECT, arena + open, grow, PROT_RW, 0);
                } else if let Some(which) = self.rng.pick(&process.mappings) {
                    let (addr, _) = process.mappings[which];
                    self.mapping(tgid, mapping_op::PROTECT, addr, PAGE, PROT_READ, 0);
                }
            }
            // The program break moves, mostly up.
            55..=69 => {
                let process = &mut self.live[index];
                if self.rng.below(4) == 0 {
                    process.brk = process.brk.saturating_sub(64 * 1024);
                } else {
                    process.brk += 132 * 1024;
                }
                let brk = process.brk;
                self.mapping(tgid, mapping_op::BRK, brk, 0, 0, 0);
            }
            // Thread create: an 8 MiB MAP_STACK reservation, then its guard page stays
            // PROT_NONE and the rest is opened.
            70..=77 => {
                let len = 8 * MIB + PAGE;
                let process = &mut self.live[index];
                let addr = process.next_addr;
                process.next_addr += len + PAGE;
                process.stacks.push((addr, len));
                self.mapping(
                    tgid,
                    mapping_op::MAP,
                    addr,
                    len,
                    0,
                    ANON_PRIVATE | mmap_bits::MAP_STACK,
                );
                self.mapping(tgid, mapping_op::PROTECT, addr + PAGE, 8 * MIB, PROT_RW, 0);
            }
            // Thread exit: its stack is unmapped.
            78..=84 => {
                let process = &mut self.live[index];
                let Some(which) = self.rng.pick(&process.stacks) else {
                    return;
                };
                let (addr, len) = process.stacks.swap_remove(which);
                self.mapping(tgid, mapping_op::UNMAP, addr, len, 0, 0);
            }
            // A file mapped read-only (a library, a data file).
            85..=89 => {
                let len = (1 + self.rng.below(32)) * 64 * 1024;
                let process = &mut self.live[index];
                let addr = process.next_addr;
                process.next_addr += len + PAGE;
                process.mappings.push((addr, len));
                self.mapping(tgid, mapping_op::MAP, addr, len, PROT_READ, MAP_PRIVATE);
            }
            // realloc of a large block: mremap, grown in place or moved.
            90..=94 => {
                let process = &mut self.live[index];
                let Some(which) = self.rng.pick(&process.mappings) else {
                    return;
                };
                let (addr, len) = process.mappings[which];
                let new_len = len * 2;
                let moved = self.rng.below(2) == 0;
                let new_addr = if moved {
                    let at = process.next_addr;
                    process.next_addr += new_len + PAGE;
                    at
                } else {
                    addr
                };
                process.mappings[which] = (new_addr, new_len);
                let event = MappingEvent {
                    header: self.header(event_kind::MAPPING, tgid),
                    op: mapping_op::REMAP,
                    flags: if moved { mmap_bits::MREMAP_MAYMOVE } else { 0 },
                    addr,
                    len,
                    new_addr,
                    new_len,
                    ..Default::default()
                };
                self.ring.push(&event);
            }
            // Process churn: one exits, another starts.
            _ => {
                self.exit(index);
                self.spawn();
            }
        }
    }
}

/// The stream: `LIVE_PROCESSES` start, then a realistic mix until `EVENTS` records.
fn stream() -> Ring {
    let mut generator = Generator {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        ring: Ring {
            bytes: Vec::new(),
            records: Vec::new(),
        },
        now_ns: 1_000_000_000,
        next_tgid: 1000,
        live: Vec::new(),
    };
    for _ in 0..LIVE_PROCESSES {
        generator.spawn();
    }
    while generator.ring.records.len() < EVENTS {
        generator.step();
    }
    generator.ring
}

/// What a capture session keeps per event (the fields `Observations::record` updates).
struct Session {
    table: ProcessTable,
    regions: RegionTracker,
    reserved_window_peak: u64,
    undecodable: u64,
}

impl Session {
    fn new() -> Self {
        Self {
            table: ProcessTable::new(TARGET, MAX_PROCESSES),
            regions: RegionTracker::new(MAX_REGIONS),
            reserved_window_peak: 0,
            undecodable: 0,
        }
    }

    /// Mirrors `capture::Observations::record` (minus the /proc/PID/maps read after an exec,
    /// stack samples and the OOM bookkeeping, none of which is in the stream).
    fn record(&mut self, batch: Vec<Result<ProbeEvent, DecodeError>>) {
        for event in batch {
            let Ok(event) = event else {
                self.undecodable += 1;
                continue;
            };
            match &event {
                ProbeEvent::Mapping(change) if change.header.target_id == TARGET => {
                    self.regions.apply(change);
                    self.reserved_window_peak =
                        self.reserved_window_peak.max(self.regions.current.total());
                }
                ProbeEvent::ProcessExit(exit) if exit.target_id == TARGET => {
                    self.regions.forget(exit.tgid);
                }
                _ => {}
            }
            self.table.apply(&event);
        }
    }
}

/// Drains the ring the way `probes::drain` does (decode into a batch), then accounts each batch.
fn replay(ring: &Ring, session: &mut Session) {
    let mut records = ring.iter().peekable();
    while records.peek().is_some() {
        let batch: Vec<Result<ProbeEvent, DecodeError>> =
            records.by_ref().take(BATCH).map(decode_event).collect();
        session.record(batch);
    }
}

fn aggregation(c: &mut Criterion) {
    let ring = stream();
    // The stream must be what it claims: every record decodes, the accounting sees all of it.
    let mut check = Session::new();
    replay(&ring, &mut check);
    assert_eq!(check.undecodable, 0, "every record decodes");
    assert!(check.regions.events > (EVENTS as u64) * 9 / 10);
    assert!(check.regions.peak_total > 0);
    eprintln!(
        "aggregation stream: {} records ({} bytes), {} mapping events applied, {} regions live at the end, peak reserved {} MiB",
        ring.records.len(),
        ring.bytes.len(),
        check.regions.events,
        check.regions.region_count(),
        check.regions.peak_total / MIB
    );

    let mut group = c.benchmark_group("aggregation");
    group.throughput(Throughput::Elements(ring.records.len() as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(12));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for record in ring.iter() {
                let _ = black_box(decode_event(black_box(record)));
            }
        })
    });
    group.bench_function("decode_and_account", |b| {
        b.iter_batched(
            Session::new,
            |mut session| {
                replay(black_box(&ring), &mut session);
                // Returned so that dropping the session's maps falls outside the timing.
                session
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
