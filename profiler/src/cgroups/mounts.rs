//! Where the cgroup hierarchies headroom uses are mounted, from /proc/self/mountinfo.

use std::path::{Path, PathBuf};

use super::{CgroupError, ChargeReader};
use crate::procfs;

/// Where the cgroup hierarchies headroom uses are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchies {
    /// The cgroup2 (unified) mount: its directory inode numbers are the ids that
    /// `bpf_get_current_cgroup_id()` returns.
    pub unified: PathBuf,
    /// The cgroup v1 memory controller's mount, on hybrid and legacy hosts.
    pub memory_v1: Option<PathBuf>,
}

/// Finds the cgroup mounts in a /proc/PID/mountinfo text.
pub fn parse_mountinfo(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut unified = None;
    let mut memory_v1 = None;
    for line in mountinfo.lines() {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = before.split(' ').nth(4);
        let mut after = after.split(' ');
        let (fstype, _source, super_options) = (after.next(), after.next(), after.next());
        let Some(mount_point) = mount_point else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        match fstype {
            Some("cgroup2") if unified.is_none() => unified = Some(mount_point),
            Some("cgroup")
                if memory_v1.is_none()
                    && super_options
                        .is_some_and(|options| options.split(',').any(|o| o == "memory")) =>
            {
                memory_v1 = Some(mount_point)
            }
            _ => {}
        }
    }
    (unified, memory_v1)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Hierarchies {
    /// A charge reader for a cgroup path (as /proc/PID/cgroup shows it) in these hierarchies.
    pub fn charge_reader(&self, path: &str) -> Option<ChargeReader> {
        let relative = path.trim_start_matches('/');
        let memory_v1 = self.memory_v1.as_ref().map(|memory| memory.join(relative));
        ChargeReader::open(&self.unified.join(relative), memory_v1.as_deref())
    }

    /// Reads the mounts of the calling process's mount namespace under `root`.
    pub fn discover(root: &Path) -> Result<Self, CgroupError> {
        let text = procfs::read_proc_file(root, None, "mountinfo")?;
        let mountinfo = procfs::proc_path(root, None, "mountinfo");
        let (unified, memory_v1) = parse_mountinfo(&text);
        let unified = unified.ok_or(CgroupError::NoCgroup2 { mountinfo })?;
        Ok(Self {
            unified: root.join(unified.strip_prefix("/").unwrap_or(&unified)),
            memory_v1: memory_v1.map(|path| root.join(path.strip_prefix("/").unwrap_or(&path))),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
";

    const UNIFIED_MOUNTINFO: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_both_hierarchies_on_a_hybrid_host() {
        let (unified, memory) = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(memory, Some(PathBuf::from("/sys/fs/cgroup/memory")));
    }

    #[test]
    fn finds_unified_only_on_a_v2_host() {
        let (unified, memory) = parse_mountinfo(UNIFIED_MOUNTINFO);
        assert_eq!(unified, Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(memory, None);
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trailing\\"), "/trailing\\");
    }

    #[test]
    fn discover_resolves_under_a_fixture_root() {
        let root = std::env::temp_dir().join(format!("headroom-cgroups-{}", std::process::id()));
        fs::create_dir_all(root.join("proc/self")).expect("fixture");
        fs::write(root.join("proc/self/mountinfo"), HYBRID_MOUNTINFO).expect("fixture");
        let found = Hierarchies::discover(&root).expect("discover");
        assert_eq!(found.unified, root.join("sys/fs/cgroup/unified"));
        assert_eq!(found.memory_v1, Some(root.join("sys/fs/cgroup/memory")));
        fs::write(root.join("proc/self/mountinfo"), "").expect("fixture");
        assert!(matches!(
            Hierarchies::discover(&root),
            Err(CgroupError::NoCgroup2 { .. })
        ));
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
