//! Cgroup filesystems: finding the hierarchies, reading a process's cgroups, and the transient
//! cgroup a capture session runs its command in.
//!
//! - [`mounts`]: where the cgroup2 and v1 memory hierarchies are mounted (mountinfo);
//! - [`paths`]: a process's cgroups (/proc/PID/cgroup), cgroup ids, user-given cgroup paths;
//! - [`session`]: the capture session's own cgroup (create, join, kill, remove, leftovers);
//! - [`charge`]: the v1/v2 memory charge reader and the cgroup memory-file parsers;
//! - [`namespace`]: paths a private cgroup namespace shows (`/../..`), back under the mount.
//!
//! The filesystem root is a parameter, so the parsers run against fixture trees in tests.

use std::{io, path::PathBuf};

use thiserror::Error;

use crate::procfs::ProcfsError;

mod charge;
mod mounts;
mod namespace;
mod paths;
mod session;

pub use charge::{parse_key, parse_number, ChargeReader, ChargeVersion, IntervalPeak};
pub use mounts::{parse_mountinfo, Hierarchies};
pub use namespace::{is_outside_namespace, NamespaceRoot};
pub use paths::{
    cgroup_id, parse_proc_cgroup, process_cgroups, resolve_cgroup_path, ProcessCgroups,
};
pub use session::SessionCgroup;

#[derive(Debug, Error)]
pub enum CgroupError {
    /// A /proc file (mountinfo, /proc/PID/cgroup) could not be read.
    #[error(transparent)]
    Proc(#[from] ProcfsError),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no cgroup2 filesystem is mounted (looked in {mountinfo}); headroom identifies \
         processes by their cgroup v2 id. Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` \
         (hybrid hosts) or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2 { mountinfo: PathBuf },
    #[error(
        "cannot parse line {line_number} of {path}: {line:?} (expected `ID:CONTROLLERS:PATH`)"
    )]
    UnparseableProcCgroup {
        path: PathBuf,
        line_number: usize,
        line: String,
    },
    #[error("{path} lists no cgroup v2 entry (`0::/...`)")]
    NoUnifiedEntry { path: PathBuf },
    #[error(
        "cannot create cgroup {path}; capture needs write access to the cgroup filesystem \
         (root, or CAP_SYS_ADMIN with a writable /sys/fs/cgroup)"
    )]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bad cgroup path `{path}`: {reason}")]
    BadCgroupPath { path: String, reason: String },
    #[error(
        "unknown cgroup `{path}`: {looked_in} does not exist. Give the path as /proc/PID/cgroup \
         shows it (the part after `0::`)"
    )]
    UnknownCgroup { path: String, looked_in: PathBuf },
    #[error(
        "this process is in a private cgroup namespace (other cgroups show as `/../..`), and \
         no cgroup under {mount} lists its pid {pid} in cgroup.procs: mount the host's cgroup \
         root there (hostPath /sys/fs/cgroup, as deploy/headroom.yaml does)"
    )]
    NamespaceRootNotFound { mount: PathBuf, pid: u32 },
    #[error(
        "cgroup `{shown}` (as /proc/PID/cgroup shows it from a private cgroup namespace rooted at \
         `{root}` under the mount) lies above the mounted hierarchy: mount the host's cgroup \
         root (hostPath /sys/fs/cgroup, as deploy/headroom.yaml does), not a namespaced cgroupfs"
    )]
    OutsideMount { shown: String, root: String },
    #[error("cannot remove cgroup {path} (processes still inside after killing them)")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
