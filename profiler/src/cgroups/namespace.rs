//! Paths of a private cgroup namespace. containerd and CRI-O give every container on cgroup v2
//! (the agent's own included) a cgroup namespace rooted at its cgroup, and /proc/PID/cgroup
//! then shows other cgroups relative to that root: `/../../kubepods-besteffort.slice/...`.
//! The agent mounts the host's cgroup root (deploy/: hostPath /sys/fs/cgroup), so such a path
//! is turned back into one under that mount from the host path of the namespace's root.

use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
};

use super::CgroupError;

/// Directories searched for the namespace's root at most: a node's whole cgroup tree is a few
/// thousand (every pod, container and systemd unit); this bounds a pathological one.
const MAX_DIRECTORIES_SEARCHED: usize = 200_000;

/// Where the calling process's cgroup namespace root lies in a mounted cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRoot {
    /// Path of the namespace's root under the mount, `/` for the mount's root itself.
    under_mount: String,
}

impl NamespaceRoot {
    /// A namespace root at a known path under the mount.
    pub fn at(under_mount: &str) -> Self {
        Self {
            under_mount: under_mount.to_owned(),
        }
    }

    /// Finds the root of the calling process's cgroup namespace under `mount`: the cgroup whose
    /// `cgroup.procs` lists `pid` (the process itself, which sits at its namespace's root, as a
    /// container's processes do). Breadth first, since containers sit a few levels down.
    pub fn find(mount: &Path, pid: u32) -> Result<Self, CgroupError> {
        let wanted = pid.to_string();
        let mut queue = VecDeque::from([PathBuf::new()]);
        let mut searched = 0usize;
        while let Some(relative) = queue.pop_front() {
            searched += 1;
            if searched > MAX_DIRECTORIES_SEARCHED {
                break;
            }
            let dir = mount.join(&relative);
            if fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|procs| procs.lines().any(|line| line.trim() == wanted))
            {
                return Ok(Self {
                    under_mount: format!("/{}", relative.display()),
                });
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    queue.push_back(relative.join(entry.file_name()));
                }
            }
        }
        Err(CgroupError::NamespaceRootNotFound {
            mount: mount.to_path_buf(),
            pid,
        })
    }

    /// The path under the mount of a cgroup that /proc/PID/cgroup `shown` relative to this
    /// namespace's root (`/../sibling`, `/`, `/child`).
    pub fn path_under_mount(&self, shown: &str) -> Result<String, CgroupError> {
        let mut parts: Vec<&str> = self
            .under_mount
            .split('/')
            .filter(|part| !part.is_empty())
            .collect();
        for part in shown.split('/').filter(|part| !part.is_empty()) {
            if part == ".." {
                if parts.pop().is_none() {
                    return Err(CgroupError::OutsideMount {
                        shown: shown.to_owned(),
                        root: self.under_mount.clone(),
                    });
                }
            } else {
                parts.push(part);
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }
}

/// Whether /proc/PID/cgroup showed `path` relative to a cgroup namespace the cgroup is outside of.
pub fn is_outside_namespace(path: &str) -> bool {
    path.starts_with("/..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_namespace_resolve_from_its_root() {
        let root = NamespaceRoot::at("/kubepods.slice/kubepods-besteffort.slice/pod1/cri-a.scope");
        assert_eq!(
            root.path_under_mount("/../../../kubepods-burstable.slice/pod2/cri-b.scope")
                .expect("inside the mount"),
            "/kubepods.slice/kubepods-burstable.slice/pod2/cri-b.scope"
        );
        assert_eq!(
            root.path_under_mount("/../cri-c.scope").expect("a sibling"),
            "/kubepods.slice/kubepods-besteffort.slice/pod1/cri-c.scope"
        );
        assert_eq!(
            root.path_under_mount("/").expect("the root itself"),
            "/kubepods.slice/kubepods-besteffort.slice/pod1/cri-a.scope"
        );
        assert_eq!(
            root.path_under_mount("/../../../../system.slice/containerd.service")
                .expect("the host's"),
            "/system.slice/containerd.service"
        );
        assert!(is_outside_namespace("/../x"));
        assert!(!is_outside_namespace("/kubepods.slice"));
    }

    #[test]
    fn a_path_above_the_mount_names_the_fix() {
        // A namespaced cgroupfs mounted inside the container: its root is the namespace's.
        let err = NamespaceRoot::at("/")
            .path_under_mount("/../kubepods.slice")
            .expect_err("above the mount");
        let text = err.to_string();
        assert!(text.contains("/../kubepods.slice"), "{text}");
        assert!(text.contains("hostPath"), "{text}");
    }

    #[test]
    fn the_root_is_the_directory_that_lists_the_process() {
        let mount = std::env::temp_dir().join(format!("headroom-ns-{}", std::process::id()));
        let _ = fs::remove_dir_all(&mount);
        let agent = mount.join("kubepods.slice/pod1/cri-agent.scope");
        let other = mount.join("kubepods.slice/pod2/cri-other.scope");
        for dir in [&agent, &other] {
            fs::create_dir_all(dir).expect("fixture");
        }
        fs::write(mount.join("cgroup.procs"), "1\n").expect("fixture");
        fs::write(other.join("cgroup.procs"), "42\n4242\n").expect("fixture");
        fs::write(agent.join("cgroup.procs"), "424\n").expect("fixture");
        let root = NamespaceRoot::find(&mount, 424).expect("found");
        assert_eq!(
            root,
            NamespaceRoot::at("/kubepods.slice/pod1/cri-agent.scope")
        );
        assert!(matches!(
            NamespaceRoot::find(&mount, 7),
            Err(CgroupError::NamespaceRootNotFound { pid: 7, .. })
        ));
        let _ = fs::remove_dir_all(&mount);
    }
}
