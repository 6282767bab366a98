//! Decoding of the ring buffer's records. Every record is checked for kind and exact size
//! before it is read, so a mismatched or corrupt record is an error, never a misread.

use profiler_common::{
    event_kind, oom_details, EventHeader, MappingEvent, OomVictimEvent, ProcessCounters,
    ProcessExitEvent, ProcessStartEvent, StackSampleEvent, StackSnapshotEvent, MAX_STACK_FRAMES,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes is shorter than an event header")]
    TooShort(usize),
    #[error("ring buffer record has unknown event kind {0}")]
    UnknownKind(u32),
    #[error("ring buffer record of kind {kind} has {actual} bytes, expected {expected}")]
    WrongSize {
        kind: u32,
        expected: usize,
        actual: usize,
    },
}

/// A process was born in, or moved into, a traced cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStart {
    pub tgid: u32,
    pub parent_tgid: u32,
    pub target_id: u64,
    pub timestamp_ns: u64,
    pub comm: String,
}

/// A process's last thread exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    pub tgid: u32,
    pub target_id: u64,
    pub timestamp_ns: u64,
    pub comm: String,
    pub counters: ProcessCounters,
}

/// One change to a process's address space: the wire struct as the kernel sent it (its
/// header names the process, the target and the time; see `profiler_common::mapping_op`).
pub type MappingChange = MappingEvent;

/// The OOM killer chose this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomVictim {
    pub tgid: u32,
    pub target_id: u64,
    pub timestamp_ns: u64,
    /// The victim's sizes at the kill, when `sizes_known` (else 0: upstream kernels before
    /// 6.9 record only the victim's pid).
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub sizes_known: bool,
}

/// Registers and raw stack bytes copied at a sample, for `.eh_frame` unwinding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSnapshot {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The user stack from `sp` up.
    pub stack: Vec<u8>,
}

/// A user stack where memory was made, and the bytes it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub tgid: u32,
    pub target_id: u64,
    pub timestamp_ns: u64,
    pub bytes: u64,
    /// Start of the reservation (mmap/brk samples); 0 for faults.
    pub address: u64,
    /// One of `profiler_common::stack_source`.
    pub source: u32,
    /// mmap samples: the mapping kind; fault samples: the rss member that grew.
    pub detail: u32,
    /// Return addresses walked through frame pointers by the kernel, innermost first.
    pub frames: Vec<u64>,
    pub snapshot: Option<StackSnapshot>,
}

impl StackSample {
    fn from_wire(sample: &StackSampleEvent, snapshot: Option<&[u8]>) -> Self {
        let count = (sample.frame_count as usize).min(MAX_STACK_FRAMES);
        Self {
            tgid: sample.header.tgid,
            target_id: sample.header.target_id,
            timestamp_ns: sample.header.timestamp_ns,
            bytes: sample.bytes,
            address: sample.address,
            source: sample.source,
            detail: sample.detail,
            frames: sample.frames[..count].to_vec(),
            snapshot: snapshot.map(|stack| StackSnapshot {
                ip: sample.ip,
                sp: sample.sp,
                bp: sample.bp,
                stack: stack[..(sample.snapshot_len as usize).min(stack.len())].to_vec(),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    ProcessStart(ProcessStart),
    Mapping(MappingChange),
    OomVictim(OomVictim),
    /// Boxed: it carries the full counters, five times the size of a start.
    ProcessExit(Box<ProcessExit>),
    StackSample(Box<StackSample>),
}

/// Reads a `#[repr(C)]` plain-old-data wire struct from the front of `bytes`.
fn read_pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; T is Pod (any bit pattern is valid) and
    // read_unaligned makes no alignment assumption about the ring buffer's memory.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The command name as text, up to its first NUL.
pub fn comm_to_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn expect_size(kind: u32, expected: usize, actual: usize) -> Result<(), DecodeError> {
    if actual == expected {
        Ok(())
    } else {
        Err(DecodeError::WrongSize {
            kind,
            expected,
            actual,
        })
    }
}

/// Decodes one ring buffer record.
pub fn decode_event(bytes: &[u8]) -> Result<ProbeEvent, DecodeError> {
    let header: EventHeader = read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
    match header.kind {
        event_kind::PROCESS_START => {
            expect_size(header.kind, size_of::<ProcessStartEvent>(), bytes.len())?;
            let event: ProcessStartEvent =
                read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(ProbeEvent::ProcessStart(ProcessStart {
                tgid: header.tgid,
                parent_tgid: event.parent_tgid,
                target_id: header.target_id,
                timestamp_ns: header.timestamp_ns,
                comm: comm_to_string(&event.comm),
            }))
        }
        event_kind::PROCESS_EXIT => {
            expect_size(header.kind, size_of::<ProcessExitEvent>(), bytes.len())?;
            let event: ProcessExitEvent =
                read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(ProbeEvent::ProcessExit(Box::new(ProcessExit {
                tgid: header.tgid,
                target_id: header.target_id,
                timestamp_ns: header.timestamp_ns,
                comm: comm_to_string(&event.comm),
                counters: event.process,
            })))
        }
        event_kind::MAPPING => {
            expect_size(header.kind, size_of::<MappingEvent>(), bytes.len())?;
            let event: MappingEvent = read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(ProbeEvent::Mapping(event))
        }
        event_kind::OOM_VICTIM => {
            expect_size(header.kind, size_of::<OomVictimEvent>(), bytes.len())?;
            let event: OomVictimEvent =
                read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(ProbeEvent::OomVictim(OomVictim {
                tgid: header.tgid,
                target_id: header.target_id,
                timestamp_ns: header.timestamp_ns,
                total_vm_bytes: event.total_vm_bytes,
                anon_rss_bytes: event.anon_rss_bytes,
                file_rss_bytes: event.file_rss_bytes,
                shmem_rss_bytes: event.shmem_rss_bytes,
                sizes_known: event.details & oom_details::SIZES != 0,
            }))
        }
        // Two sizes: with or without the raw stack snapshot.
        event_kind::STACK_SAMPLE if bytes.len() == size_of::<StackSnapshotEvent>() => {
            let event: StackSnapshotEvent =
                read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(ProbeEvent::StackSample(Box::new(StackSample::from_wire(
                &event.sample,
                Some(&event.snapshot),
            ))))
        }
        event_kind::STACK_SAMPLE => {
            expect_size(header.kind, size_of::<StackSampleEvent>(), bytes.len())?;
            let event: StackSampleEvent =
                read_pod(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(ProbeEvent::StackSample(Box::new(StackSample::from_wire(
                &event, None,
            ))))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: T is Pod, so viewing it as bytes is valid for its whole size.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_process_exit_with_counters() {
        let mut event = ProcessExitEvent::default();
        event.header.kind = event_kind::PROCESS_EXIT;
        event.header.tgid = 4242;
        event.header.target_id = 77;
        event.process.counters.threads_created = 7;
        event.comm[..4].copy_from_slice(b"demo");
        let decoded = decode_event(&as_bytes(&event));
        let Ok(ProbeEvent::ProcessExit(exit)) = decoded else {
            panic!("unexpected {decoded:?}");
        };
        assert_eq!(exit.tgid, 4242);
        assert_eq!(exit.target_id, 77);
        assert_eq!(exit.comm, "demo");
        assert_eq!(exit.counters.counters.threads_created, 7);
    }

    #[test]
    fn decodes_mapping_change() {
        let event = MappingEvent {
            header: EventHeader {
                kind: event_kind::MAPPING,
                tgid: 5,
                target_id: 6,
                timestamp_ns: 7,
            },
            op: profiler_common::mapping_op::REMAP,
            addr: 0x1000,
            len: 0x2000,
            new_addr: 0x9000,
            new_len: 0x4000,
            ..Default::default()
        };
        let Ok(ProbeEvent::Mapping(change)) = decode_event(&as_bytes(&event)) else {
            panic!("not a mapping event");
        };
        assert_eq!(
            (change.addr, change.len, change.new_addr, change.new_len),
            (0x1000, 0x2000, 0x9000, 0x4000)
        );
    }

    #[test]
    fn decodes_process_start() {
        let mut event = ProcessStartEvent::default();
        event.header.kind = event_kind::PROCESS_START;
        event.header.tgid = 10;
        event.parent_tgid = 9;
        event.comm = *b"sixteen-chars-xx";
        let Ok(ProbeEvent::ProcessStart(start)) = decode_event(&as_bytes(&event)) else {
            panic!("not a start event");
        };
        assert_eq!(start.parent_tgid, 9);
        assert_eq!(start.comm, "sixteen-chars-xx");
    }

    #[test]
    fn decodes_stack_samples_with_and_without_snapshot() {
        let mut bytes = vec![0u8; size_of::<StackSampleEvent>()];
        let mut event: StackSampleEvent = read_pod(&bytes).expect("sized");
        event.header.kind = event_kind::STACK_SAMPLE;
        event.header.tgid = 3;
        event.bytes = 1 << 20;
        event.frame_count = 2;
        event.frames[0] = 0x401000;
        event.frames[1] = 0x402000;
        event.frames[2] = 0xdead;
        bytes.copy_from_slice(&as_bytes(&event));
        let Ok(ProbeEvent::StackSample(sample)) = decode_event(&bytes) else {
            panic!("not a stack sample");
        };
        assert_eq!(sample.frames, vec![0x401000, 0x402000]);
        assert_eq!(sample.bytes, 1 << 20);
        assert!(sample.snapshot.is_none());

        event.snapshot_len = 16;
        event.sp = 0x7fff_0000;
        let mut snapshot = as_bytes(&event);
        snapshot.resize(size_of::<StackSnapshotEvent>(), 7);
        let Ok(ProbeEvent::StackSample(sample)) = decode_event(&snapshot) else {
            panic!("not a stack sample");
        };
        let taken = sample.snapshot.expect("snapshot");
        assert_eq!((taken.sp, taken.stack.len()), (0x7fff_0000, 16));

        // A frame count beyond the array is clamped, never an out-of-bounds read.
        event.frame_count = 10_000;
        let Ok(ProbeEvent::StackSample(sample)) = decode_event(&as_bytes(&event)) else {
            panic!("not a stack sample");
        };
        assert_eq!(sample.frames.len(), MAX_STACK_FRAMES);
    }

    #[test]
    fn decodes_oom_victims_with_and_without_sizes() {
        let mut event = OomVictimEvent::default();
        event.header.kind = event_kind::OOM_VICTIM;
        event.header.tgid = 12;
        let Ok(ProbeEvent::OomVictim(victim)) = decode_event(&as_bytes(&event)) else {
            panic!("not an OOM event");
        };
        assert!(!victim.sizes_known);
        event.details = oom_details::SIZES;
        event.anon_rss_bytes = 64 << 20;
        let Ok(ProbeEvent::OomVictim(victim)) = decode_event(&as_bytes(&event)) else {
            panic!("not an OOM event");
        };
        assert!(victim.sizes_known);
        assert_eq!((victim.tgid, victim.anon_rss_bytes), (12, 64 << 20));
    }

    #[test]
    fn rejects_short_unknown_and_missized_records() {
        assert_eq!(decode_event(&[1, 2, 3]), Err(DecodeError::TooShort(3)));
        let mut header = EventHeader {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(
            decode_event(&as_bytes(&header)),
            Err(DecodeError::UnknownKind(99))
        );
        header.kind = event_kind::PROCESS_EXIT;
        assert_eq!(
            decode_event(&as_bytes(&header)),
            Err(DecodeError::WrongSize {
                kind: event_kind::PROCESS_EXIT,
                expected: size_of::<ProcessExitEvent>(),
                actual: size_of::<EventHeader>(),
            })
        );
    }
}
