//! The middle layer every way in shares: a [`Recorder`] turns charge samples and the kernel's
//! per-bucket figures into a bounded timeline of maxima, and a [`TargetReportBuilder`] turns a
//! recorder, the kernel's counters and what a session collected into one `TargetReport`, with
//! phases, spikes, sources and the recommendation. The standalone capture, `capture --all`,
//! agent sessions and the agent's per-container state all build their reports here.

mod builder;
mod recorder;
mod runtimes;
mod sources;

pub use builder::{ChargeFacts, PeakPolicy, RegionFigures, TargetReportBuilder};
pub use recorder::{ChargeBucket, KernelBucket, Recorder};
pub use runtimes::RuntimeTracker;
pub use sources::{memory_sources, SourceFigures};
