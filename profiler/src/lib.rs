//! headroom's user space, one module per concern:
//!
//! - [`probes`]: loading, attaching and reading the eBPF programs (kernel side in
//!   `profiler-ebpf/`), with preflight checks that name missing privileges and features;
//! - [`cgroups`]: cgroup hierarchies, /proc/PID/cgroup, capture sessions' own cgroups and the
//!   v1/v2 charge reader;
//! - [`attribution`]: cgroup id to path to container identity to pod names (Kubernetes API);
//! - [`accounting`]: aggregation of kernel counters and events per target and per process,
//!   live reserved memory by region, the timeline of maxima and its reading;
//! - [`procfs`]: /proc readers (smaps, process trees);
//! - [`report`]: the `headroom.report/v1` document and its table rendering;
//! - [`sizing`]: requests and limits with reasons, confidence and the seed's checklist;
//! - [`capture`]: on-demand capture sessions;
//! - [`agent`]: the node agent (always-on probes, HTTP endpoints);
//! - [`exporters`]: Prometheus metrics;
//! - [`cluster`]: cluster-wide recommendations from the agents' series in Prometheus;
//! - [`cli`]: flags and dispatch.
pub mod accounting;
pub mod agent;
pub mod attribution;
pub mod capture;
pub mod cgroups;
pub mod cli;
pub mod cluster;
pub mod exporters;
pub mod probes;
pub mod procfs;
pub mod recording;
pub mod report;
pub mod sizing;
pub mod stacks;
pub mod units;
