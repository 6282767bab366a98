//! A process's cgroups (/proc/PID/cgroup), a cgroup's v2 id, and cgroup paths given by users.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{CgroupError, Hierarchies};
use crate::procfs;

/// A process's place in the hierarchies, from /proc/PID/cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessCgroups {
    /// Path in the cgroup2 hierarchy (the `0::` line), e.g. `/kubepods.slice/...`.
    pub unified: String,
    /// Path in the v1 memory hierarchy, if there is one.
    pub memory_v1: Option<String>,
}

/// Parses a /proc/PID/cgroup text. `path` names the file in errors.
pub fn parse_proc_cgroup(text: &str, path: &Path) -> Result<ProcessCgroups, CgroupError> {
    let mut unified = None;
    let mut memory_v1 = None;
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(cgroup_path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(CgroupError::UnparseableProcCgroup {
                path: path.to_path_buf(),
                line_number: index + 1,
                line: line.to_owned(),
            });
        };
        if id.parse::<u32>().is_err() || !cgroup_path.starts_with('/') {
            return Err(CgroupError::UnparseableProcCgroup {
                path: path.to_path_buf(),
                line_number: index + 1,
                line: line.to_owned(),
            });
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(cgroup_path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            memory_v1 = Some(cgroup_path.to_owned());
        }
    }
    Ok(ProcessCgroups {
        unified: unified.ok_or_else(|| CgroupError::NoUnifiedEntry {
            path: path.to_path_buf(),
        })?,
        memory_v1,
    })
}

/// Reads /proc/`pid`/cgroup under `root` (`pid` None: the calling process).
pub fn process_cgroups(root: &Path, pid: Option<u32>) -> Result<ProcessCgroups, CgroupError> {
    let text = procfs::read_proc_file(root, pid, "cgroup")?;
    parse_proc_cgroup(&text, &procfs::proc_path(root, pid, "cgroup"))
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` returns for tasks inside it.
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    fs::metadata(dir)
        .map(|meta| meta.ino())
        .map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })
}

/// Resolves a cgroup path as /proc/PID/cgroup shows it (`/kubepods.slice/...`) to its
/// directories. Errors name the path and where it was looked for.
pub fn resolve_cgroup_path(
    root: &Path,
    cgroup: &str,
) -> Result<(PathBuf, Option<PathBuf>), CgroupError> {
    let invalid = |reason: &str| CgroupError::BadCgroupPath {
        path: cgroup.to_owned(),
        reason: reason.to_owned(),
    };
    if !cgroup.starts_with('/') {
        return Err(invalid("it must start with `/`, as in /proc/PID/cgroup"));
    }
    if cgroup.split('/').any(|part| part == "..") {
        return Err(invalid("`..` is not allowed"));
    }
    let hierarchies = Hierarchies::discover(root)?;
    let relative = cgroup.trim_start_matches('/');
    let unified = hierarchies.unified.join(relative);
    if !unified.is_dir() {
        return Err(CgroupError::UnknownCgroup {
            path: cgroup.to_owned(),
            looked_in: unified,
        });
    }
    let memory_v1 = hierarchies
        .memory_v1
        .map(|memory| memory.join(relative))
        .filter(|dir| dir.is_dir());
    Ok((unified, memory_v1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_proc_cgroup() {
        let text = "9:name=systemd:/\n4:memory:/process_api/3fa8\n1:cpu,cpuacct:/\n0::/\n";
        let parsed = parse_proc_cgroup(text, Path::new("/proc/self/cgroup")).expect("valid");
        assert_eq!(parsed.unified, "/");
        assert_eq!(parsed.memory_v1.as_deref(), Some("/process_api/3fa8"));
    }

    #[test]
    fn parses_v2_proc_cgroup_with_kubernetes_path() {
        let text = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c.slice/cri-containerd-abc.scope\n";
        let parsed = parse_proc_cgroup(text, Path::new("x")).expect("valid");
        assert!(parsed.unified.ends_with("cri-containerd-abc.scope"));
        assert_eq!(parsed.memory_v1, None);
    }

    #[test]
    fn malformed_proc_cgroup_names_the_line() {
        let err = parse_proc_cgroup("0::/\ngarbage\n", Path::new("/proc/1/cgroup"))
            .expect_err("garbage line");
        let message = err.to_string();
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("garbage"), "{message}");
        assert!(parse_proc_cgroup("x::/\n", Path::new("p")).is_err());
        assert!(parse_proc_cgroup("0::relative\n", Path::new("p")).is_err());
        assert!(matches!(
            parse_proc_cgroup("4:memory:/a\n", Path::new("p")),
            Err(CgroupError::NoUnifiedEntry { .. })
        ));
    }

    #[test]
    fn bad_cgroup_paths_are_named() {
        let root = Path::new("/nonexistent-root-for-headroom");
        let err = resolve_cgroup_path(root, "kubepods").expect_err("relative");
        assert!(err.to_string().contains("must start with `/`"), "{err}");
        let err = resolve_cgroup_path(root, "/a/../b").expect_err("dotdot");
        assert!(err.to_string().contains("`..`"), "{err}");
    }
}
