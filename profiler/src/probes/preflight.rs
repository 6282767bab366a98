//! Checks made before loading the probes, so that a missing privilege or kernel feature gets a
//! message that names it and the fix, instead of a bare EPERM from the kernel; and what this
//! kernel offers beyond the basics ([`KernelFeatures`]): which means each feature uses here,
//! and what falls back where the kernel lacks something. Nothing that works is refused.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{
    btf::{Btf, BtfError},
    layout::{self, LayoutError, RecordLayouts},
    ExitTrackingChoice, TRACEPOINTS,
};

/// Linux capability numbers (linux/capability.h).
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

const TRACEFS_MOUNTS: [&str; 2] = ["sys/kernel/tracing", "sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "headroom lacks {missing} to load and attach its eBPF probes. Run it as root, or grant \
         the capabilities: `sudo setcap cap_bpf,cap_perfmon+ep $(command -v headroom)` \
         (in Kubernetes: securityContext.capabilities.add [BPF, PERFMON]; SYS_ADMIN only on \
         kernels before 5.8, which have neither; see SECURITY.md)"
    )]
    MissingCapabilities { missing: String },
    #[error(
        "kernel.perf_event_paranoid is {level} on this kernel (a Debian/Ubuntu patch: above 2, \
         perf_event_open, through which tracepoints are attached, needs CAP_SYS_ADMIN), and \
         headroom has CAP_BPF and CAP_PERFMON but not CAP_SYS_ADMIN. Fix: `sysctl \
         kernel.perf_event_paranoid=2` on the node (the upstream default; on Kubernetes nodes, \
         in the node image or a sysctl file under /etc/sysctl.d), or grant CAP_SYS_ADMIN"
    )]
    PerfEventParanoid { level: i32 },
    #[error("cannot read this process's capabilities from {path}")]
    CapabilitiesUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse the CapEff line of {path}: {line:?}")]
    CapabilitiesUnparseable { path: PathBuf, line: String },
    #[error(
        "tracefs is not mounted and mounting it failed ({source}); mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing` (in a container: mount the host's \
         /sys/kernel/tracing)"
    )]
    TracefsUnavailable {
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel has no tracepoint {category}:{event} ({path} is missing); headroom needs \
         it. It exists on Linux 5.8+ built with CONFIG_TRACEPOINTS (and CONFIG_FTRACE_SYSCALLS \
         for syscalls:*)"
    )]
    TracepointMissing {
        category: &'static str,
        event: &'static str,
        path: PathBuf,
    },
    #[error(
        "the kernel refused the eBPF object with {errno}: headroom needs CAP_BPF and CAP_PERFMON \
         (or CAP_SYS_ADMIN), and a kernel that allows BPF (kernel.unprivileged_bpf_disabled \
         does not matter for root; a lockdown=confidentiality kernel or a seccomp profile can \
         still forbid it)"
    )]
    LoadPermission { errno: &'static str },
    #[error(
        "kernel {release} is too old: headroom needs Linux 5.12+ (the BPF ring buffer came in \
         5.8, the atomic exchange and compare-exchange its counters use in 5.12)"
    )]
    KernelTooOld { release: String },
    #[error(
        "--unwind eh-frame needs the kernel's BTF ({path} is missing; kernels built with \
         CONFIG_DEBUG_INFO_BTF=y have it). Capture with --unwind frame-pointers instead"
    )]
    BtfMissing { path: PathBuf },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "exit tracking through task->signal->live was asked for, but the kernel's BTF does not \
         give its offsets; leave exit tracking on automatic"
    )]
    ExitTrackingUnavailable {
        #[source]
        source: BtfError,
    },
}

/// What the probes about to be loaded need from the kernel beyond the basics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Stack snapshots for `.eh_frame` unwinding (bpf_get_current_task_btf, bpf_task_pt_regs).
    pub btf: bool,
}

/// Runs every check against the filesystem under `root` (`/` outside tests), and finds what
/// this kernel offers.
pub fn check(root: &Path, needs: Needs) -> Result<KernelFeatures, PreflightError> {
    check_capabilities(&root.join("proc/self/status"))?;
    check_kernel_version(root)?;
    if needs.btf && !has_btf(root) {
        return Err(PreflightError::BtfMissing {
            path: root.join("sys/kernel/btf/vmlinux"),
        });
    }
    let tracefs = ensure_tracefs(root)?;
    check_tracepoints(&tracefs)?;
    KernelFeatures::detect(root, &tracefs)
}

/// How the exit program tells a process's last thread from the others on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitTracking {
    /// sched_process_exit's own `group_dead` field (Linux 6.16+), at this record offset.
    GroupDeadField { offset: usize },
    /// `current->signal->live`, read at these byte offsets (from the kernel's BTF).
    SignalLive { task_signal: u32, signal_live: u32 },
    /// Neither: the kernel map's thread count, else the leader's exit (approximate).
    LiveCount { why: String },
}

/// What this kernel offers the probes beyond the basics, and what falls back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `major.minor`, when /proc/sys/kernel/osrelease was readable.
    pub version: Option<(u32, u32)>,
    pub btf: bool,
    pub exit_tracking: ExitTracking,
    pub layouts: RecordLayouts,
}

impl KernelFeatures {
    /// Reads the record layouts from tracefs and, where sched_process_exit has no
    /// `group_dead`, the offsets of `task_struct.signal` and `signal_struct.live` from BTF.
    pub fn detect(root: &Path, tracefs: &Path) -> Result<Self, PreflightError> {
        let layouts = layout::read_layouts(tracefs)?;
        let btf = has_btf(root);
        let exit_tracking = match layouts.exit_group_dead {
            Some(offset) => ExitTracking::GroupDeadField { offset },
            None => match signal_live_offsets(root) {
                Ok((task_signal, signal_live)) => ExitTracking::SignalLive {
                    task_signal,
                    signal_live,
                },
                Err(err) => ExitTracking::LiveCount {
                    why: error_chain(&err),
                },
            },
        };
        Ok(Self {
            version: fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
                .ok()
                .and_then(|release| parse_kernel_release(&release)),
            btf,
            exit_tracking,
            layouts,
        })
    }

    /// Replaces the automatic choice of exit tracking by a forced fallback (tests).
    pub fn force_exit_tracking(
        &mut self,
        choice: ExitTrackingChoice,
    ) -> Result<(), PreflightError> {
        match choice {
            ExitTrackingChoice::Auto => {}
            ExitTrackingChoice::SignalLive => {
                let (task_signal, signal_live) = signal_live_offsets(Path::new("/"))
                    .map_err(|source| PreflightError::ExitTrackingUnavailable { source })?;
                self.exit_tracking = ExitTracking::SignalLive {
                    task_signal,
                    signal_live,
                };
            }
            ExitTrackingChoice::LiveCount => {
                self.exit_tracking = ExitTracking::LiveCount {
                    why: "forced by the probe configuration".to_owned(),
                };
            }
        }
        Ok(())
    }

    /// One line per feature: its name and what this kernel uses or lacks for it.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let at_least = |wanted: (u32, u32)| self.version.map(|version| version >= wanted);
        let exit = match &self.exit_tracking {
            ExitTracking::GroupDeadField { offset } => format!(
                "sched_process_exit's group_dead field (Linux 6.16+; record offset {offset})"
            ),
            ExitTracking::SignalLive {
                task_signal,
                signal_live,
            } => format!(
                "task->signal->live read through BTF offsets (task_struct.signal +{task_signal}, \
                 signal_struct.live +{signal_live}); sched_process_exit has no group_dead \
                 field before 6.16"
            ),
            ExitTracking::LiveCount { why } => format!(
                "APPROXIMATE: no group_dead field (6.16+) and no usable kernel BTF ({why}); a \
                 process is seen to end when every thread seen born has exited, or else when \
                 its main thread exits. Use a kernel built with CONFIG_DEBUG_INFO_BTF=y for \
                 exact exits"
            ),
        };
        let oom = match self.layouts.oom_victim_sizes {
            Some(_) => "oom:mark_victim carries the victim's total_vm and anon/file/shmem \
                        resident sizes"
                .to_owned(),
            None => "absent: oom:mark_victim carries only the pid before 6.9; OOM kills are \
                     reported with their sizes unknown"
                .to_owned(),
        };
        let peak_reset = match at_least((6, 12)) {
            Some(true) => "yes (6.12+): exact per-window cgroup v2 peaks".to_owned(),
            Some(false) => "no (before 6.12): a window's cgroup peak is known only when the \
                            lifetime peak sets a record; sampling of memory.current fills in"
                .to_owned(),
            None => "unknown kernel version: tried on the cgroup's memory.peak".to_owned(),
        };
        let rss = match at_least((6, 2)) {
            Some(false) => "per-thread caches synced about every 64 faults (before 6.2): \
                            resident figures from rss_stat lag and can dip below zero briefly"
                .to_owned(),
            _ => "per-CPU counters summed at each event (6.2+)".to_owned(),
        };
        let snapshots = if self.btf {
            "available (kernel BTF)".to_owned()
        } else {
            "unavailable (no kernel BTF): --unwind frame-pointers only".to_owned()
        };
        vec![
            ("exit tracking", exit),
            ("OOM victim details", oom),
            ("memory.peak per-fd reset", peak_reset),
            ("rss_stat counters", rss),
            ("stack snapshots for --unwind eh-frame", snapshots),
        ]
    }
}

/// Byte offsets of `task_struct.signal` and `signal_struct.live` in the kernel's BTF.
fn signal_live_offsets(root: &Path) -> Result<(u32, u32), BtfError> {
    let btf = Btf::from_kernel(root)?;
    Ok((
        btf.member_offset("task_struct", "signal")?,
        btf.member_offset("signal_struct", "live")?,
    ))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How many processes the process map holds: `capacity::PROCESSES`, or the kernel's own limit
/// on tasks where that is smaller (no process id reaches `kernel.pid_max`, no node runs more
/// tasks than `kernel.threads-max`), so that the map can hold every process there is.
pub fn process_capacity(root: &Path) -> u32 {
    let limit = |name: &str| {
        std::fs::read_to_string(root.join("proc/sys/kernel").join(name))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|&value| value > 0)
            .unwrap_or(u32::MAX)
    };
    profiler_common::capacity::PROCESSES
        .min(limit("pid_max"))
        .min(limit("threads-max"))
}

/// Whether the kernel exposes its own BTF (needed for stack snapshots).
pub fn has_btf(root: &Path) -> bool {
    root.join("sys/kernel/btf/vmlinux").exists()
}

/// `major.minor` of a kernel release string (`6.18.44-1-cloud` gives (6, 18)).
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The oldest kernel the kernel matrix runs every figure-checking suite on (Debian 12's 6.1,
/// the line AL2023 and COS also ship). Older kernels from 5.12 start with a warning.
pub const OLDEST_TESTED_KERNEL: (u32, u32) = (6, 1);

fn check_kernel_version(root: &Path) -> Result<(), PreflightError> {
    // Unreadable: let the load itself say what is wrong.
    let Ok(release) = fs::read_to_string(root.join("proc/sys/kernel/osrelease")) else {
        return Ok(());
    };
    match parse_kernel_release(&release) {
        Some(version) if version < (5, 12) => Err(PreflightError::KernelTooOld {
            release: release.trim().to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Reads the effective capability mask from a /proc/PID/status text.
pub fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
}

/// Names the capabilities missing from `mask` for loading and attaching tracepoint programs.
/// CAP_SYS_ADMIN alone is enough (kernels before 5.8 know only that one).
pub fn missing_capabilities(mask: u64) -> Vec<&'static str> {
    let has = |cap: u32| mask & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

fn check_capabilities(status_path: &Path) -> Result<(), PreflightError> {
    let status = fs::read_to_string(status_path).map_err(|source| {
        PreflightError::CapabilitiesUnreadable {
            path: status_path.to_path_buf(),
            source,
        }
    })?;
    let mask =
        effective_capabilities(&status).ok_or_else(|| PreflightError::CapabilitiesUnparseable {
            path: status_path.to_path_buf(),
            line: status
                .lines()
                .find(|line| line.starts_with("CapEff"))
                .unwrap_or("<no CapEff line>")
                .to_owned(),
        })?;
    let missing = missing_capabilities(mask);
    if !missing.is_empty() {
        return Err(PreflightError::MissingCapabilities {
            missing: missing.join(" and "),
        });
    }
    let paranoid = status_path
        .parent()
        .and_then(Path::parent)
        .map(|proc| proc.join("sys/kernel/perf_event_paranoid"))
        .and_then(|path| fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse::<i32>().ok());
    match paranoid {
        Some(level) if paranoid_blocks_tracepoints(level, mask) => {
            Err(PreflightError::PerfEventParanoid { level })
        }
        _ => Ok(()),
    }
}

/// Whether `perf_event_open` of a tracepoint is refused at this `perf_event_paranoid` level
/// with these capabilities. Upstream, CAP_PERFMON is enough at any level; Debian's and
/// Ubuntu's kernels add levels above 2 at which only CAP_SYS_ADMIN passes (measured on
/// Debian's 6.1 and 6.12 at level 3: EACCES with CAP_BPF + CAP_PERFMON).
pub fn paranoid_blocks_tracepoints(level: i32, mask: u64) -> bool {
    level > 2 && mask & (1u64 << CAP_SYS_ADMIN) == 0
}

fn tracefs_mounted(path: &Path) -> bool {
    path.join("events").is_dir()
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted anywhere (minimal
/// hosts and fresh VMs often have it unmounted; aya reads tracepoint ids from it).
fn ensure_tracefs(root: &Path) -> Result<PathBuf, PreflightError> {
    if let Some(found) = TRACEFS_MOUNTS
        .iter()
        .map(|relative| root.join(relative))
        .find(|path| tracefs_mounted(path))
    {
        return Ok(found);
    }
    let target = root.join(TRACEFS_MOUNTS[0]);
    nix::mount::mount(
        Some("nodev"),
        &target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| PreflightError::TracefsUnavailable {
        source: io::Error::from(errno),
    })?;
    tracing::info!(path = %target.display(), "mounted tracefs");
    Ok(target)
}

fn check_tracepoints(tracefs: &Path) -> Result<(), PreflightError> {
    for (_, category, event) in TRACEPOINTS {
        let path = tracefs.join("events").join(category).join(event).join("id");
        if !path.exists() {
            return Err(PreflightError::TracepointMissing {
                category,
                event,
                path,
            });
        }
    }
    Ok(())
}

/// Recognises a permission failure anywhere in a load error's cause chain.
pub fn explain_load_error(err: &aya::EbpfError) -> Option<PreflightError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        let errno = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error);
        match errno {
            Some(libc::EPERM) => return Some(PreflightError::LoadPermission { errno: "EPERM" }),
            Some(libc::EACCES) => return Some(PreflightError::LoadPermission { errno: "EACCES" }),
            _ => current = error.source(),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_STATUS: &str = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";

    #[test]
    fn root_has_everything() {
        let mask = effective_capabilities(ROOT_STATUS);
        assert_eq!(mask, Some(0x1ff_ffff_ffff));
        assert!(missing_capabilities(0x1ff_ffff_ffff).is_empty());
    }

    #[test]
    fn unprivileged_user_misses_both_and_names_them() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn bpf_without_perfmon_names_perfmon() {
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
    }

    #[test]
    fn paranoid_above_two_needs_sys_admin() {
        let bpf_perfmon = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert!(!paranoid_blocks_tracepoints(2, bpf_perfmon));
        assert!(paranoid_blocks_tracepoints(3, bpf_perfmon));
        assert!(!paranoid_blocks_tracepoints(
            3,
            bpf_perfmon | (1 << CAP_SYS_ADMIN)
        ));
        let message = PreflightError::PerfEventParanoid { level: 3 }.to_string();
        assert!(message.contains("perf_event_paranoid=2"), "{message}");
    }

    #[test]
    fn sys_admin_alone_is_enough() {
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn missing_capability_message_names_capability_and_fix() {
        let dir = std::env::temp_dir().join(format!("headroom-preflight-{}", std::process::id()));
        fs::create_dir_all(dir.join("proc/self")).expect("temp dir");
        fs::write(dir.join("proc/self/status"), "CapEff:\t0000000000000000\n").expect("write");
        let err = check(&dir, Needs::default()).expect_err("no capabilities must fail");
        let message = err.to_string();
        assert!(message.contains("CAP_BPF and CAP_PERFMON"), "{message}");
        assert!(message.contains("setcap"), "{message}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn garbage_capability_line_is_an_error_not_a_panic() {
        assert_eq!(effective_capabilities("CapEff:\tzz\n"), None);
        assert_eq!(effective_capabilities(""), None);
    }

    #[test]
    fn old_kernels_and_missing_btf_are_named() {
        assert_eq!(
            parse_kernel_release("6.18.44-1-cloud-amd64\n"),
            Some((6, 18))
        );
        assert_eq!(parse_kernel_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_kernel_release("garbage"), None);
        let dir = std::env::temp_dir().join(format!("headroom-kernel-{}", std::process::id()));
        fs::create_dir_all(dir.join("proc/self")).expect("temp dir");
        fs::create_dir_all(dir.join("proc/sys/kernel")).expect("temp dir");
        fs::write(dir.join("proc/self/status"), "CapEff:\t000001ffffffffff\n").expect("write");
        fs::write(dir.join("proc/sys/kernel/osrelease"), "5.4.0-150-generic\n").expect("write");
        let err = check(&dir, Needs::default()).expect_err("5.4 is too old");
        assert!(err.to_string().contains("5.4.0-150-generic") && err.to_string().contains("5.12+"));
        fs::write(dir.join("proc/sys/kernel/osrelease"), "6.1.0\n").expect("write");
        let err = check(&dir, Needs { btf: true }).expect_err("no BTF under the fixture root");
        assert!(err.to_string().contains("--unwind frame-pointers"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let dir = std::env::temp_dir().join(format!("headroom-tracefs-{}", std::process::id()));
        fs::create_dir_all(dir.join("events/task/task_newtask")).expect("temp dir");
        fs::write(dir.join("events/task/task_newtask/id"), "1\n").expect("write");
        let err = check_tracepoints(&dir).expect_err("most tracepoints are missing");
        assert!(
            err.to_string().contains("sched:sched_process_exit"),
            "{err}"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
