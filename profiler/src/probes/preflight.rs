//! Checks made before loading the probes, so that a missing privilege or kernel feature gets a
//! message that names it and the fix, instead of a bare EPERM from the kernel.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::TRACEPOINTS;

/// Linux capability numbers (linux/capability.h).
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

const TRACEFS_MOUNTS: [&str; 2] = ["sys/kernel/tracing", "sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "headroom lacks {missing} to load and attach its eBPF probes. Run it as root, or grant \
         the capabilities: `sudo setcap cap_bpf,cap_perfmon,cap_sys_admin+ep $(command -v headroom)` \
         (in Kubernetes: securityContext.capabilities.add [BPF, PERFMON, SYS_ADMIN])"
    )]
    MissingCapabilities { missing: String },
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
}

/// What the probes about to be loaded need from the kernel beyond the basics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Stack snapshots for `.eh_frame` unwinding (bpf_get_current_task_btf, bpf_task_pt_regs).
    pub btf: bool,
}

/// Runs every check against the filesystem under `root` (`/` outside tests).
pub fn check(root: &Path, needs: Needs) -> Result<(), PreflightError> {
    check_capabilities(&root.join("proc/self/status"))?;
    check_kernel_version(root)?;
    if needs.btf && !has_btf(root) {
        return Err(PreflightError::BtfMissing {
            path: root.join("sys/kernel/btf/vmlinux"),
        });
    }
    let tracefs = ensure_tracefs(root)?;
    check_tracepoints(&tracefs)
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
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities {
            missing: missing.join(" and "),
        })
    }
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
