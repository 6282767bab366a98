//! headroom's user space, one module per concern:
//!
//! - [`probes`]: loading, attaching and reading the eBPF programs (kernel side in
//!   `profiler-ebpf/`), with preflight checks that name missing privileges and features;
//! - [`cgroups`]: cgroup hierarchies, /proc/PID/cgroup, and capture sessions' own cgroups
//!   (the base that container attribution builds on);
//! - [`accounting`]: aggregation of kernel counters and events per cgroup and per process;
//! - [`report`]: the `headroom.report/v1` document and its text rendering;
//! - [`capture`]: on-demand capture sessions;
//! - [`cli`]: flags and dispatch.
pub mod accounting;
pub mod capture;
pub mod cgroups;
pub mod cli;
pub mod probes;
pub mod report;
