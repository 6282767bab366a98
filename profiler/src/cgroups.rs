//! Cgroup filesystems: finding the hierarchies, reading a process's cgroups, and the transient
//! cgroup a capture session runs its command in.
//!
//! The filesystem root is a parameter, so the parsers run against fixture trees in tests.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
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
    #[error("cannot remove cgroup {path} (processes still inside after killing them)")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

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
        let mountinfo = root.join("proc/self/mountinfo");
        let text = fs::read_to_string(&mountinfo).map_err(|source| CgroupError::Read {
            path: mountinfo.clone(),
            source,
        })?;
        let (unified, memory_v1) = parse_mountinfo(&text);
        let unified = unified.ok_or(CgroupError::NoCgroup2 { mountinfo })?;
        Ok(Self {
            unified: root.join(unified.strip_prefix("/").unwrap_or(&unified)),
            memory_v1: memory_v1.map(|path| root.join(path.strip_prefix("/").unwrap_or(&path))),
        })
    }
}

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
    let path = match pid {
        Some(pid) => root.join(format!("proc/{pid}/cgroup")),
        None => root.join("proc/self/cgroup"),
    };
    let text = fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    parse_proc_cgroup(&text, &path)
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

const SESSION_PREFIX: &str = "headroom-capture-";

/// A cgroup made for one capture session, in the unified hierarchy and, on hybrid hosts, in the
/// v1 memory hierarchy under the same name. Each is nested under the caller's own cgroup of that
/// hierarchy, so the command stays under whatever limits applied to the caller.
///
/// Dropping it kills what is left inside and removes the directories.
#[derive(Debug)]
pub struct SessionCgroup {
    /// The cgroup2 directory.
    pub unified_dir: PathBuf,
    /// Its path as /proc/PID/cgroup shows it.
    pub relative_path: String,
    /// Its cgroup v2 id.
    pub id: u64,
    /// The v1 memory cgroup directory, if the host has that hierarchy.
    pub memory_v1_dir: Option<PathBuf>,
    removed: bool,
}

static SESSION_SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl SessionCgroup {
    /// Creates the session's cgroups. Stale session cgroups left by a headroom that was killed
    /// (SIGKILL cannot be caught) are removed first when empty.
    pub fn create(root: &Path) -> Result<Self, CgroupError> {
        let hierarchies = Hierarchies::discover(root)?;
        let own = process_cgroups(root, None)?;
        let name = format!(
            "{SESSION_PREFIX}{}-{}",
            std::process::id(),
            SESSION_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );

        let unified_parent = hierarchies
            .unified
            .join(own.unified.trim_start_matches('/'));
        remove_stale_sessions(root, &unified_parent);
        let unified_dir = unified_parent.join(&name);
        make_dir(&unified_dir)?;
        let relative_path = format!("{}/{name}", own.unified.trim_end_matches('/'));
        let mut session = Self {
            id: 0,
            unified_dir,
            relative_path,
            memory_v1_dir: None,
            removed: false,
        };
        session.id = cgroup_id(&session.unified_dir)?;

        if let (Some(memory_root), Some(own_memory)) = (&hierarchies.memory_v1, &own.memory_v1) {
            let memory_parent = memory_root.join(own_memory.trim_start_matches('/'));
            remove_stale_sessions(root, &memory_parent);
            let memory_dir = memory_parent.join(&name);
            make_dir(&memory_dir)?;
            session.memory_v1_dir = Some(memory_dir);
        }
        Ok(session)
    }

    /// The `cgroup.procs` files a process writes `0` into to join the session.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        std::iter::once(&self.unified_dir)
            .chain(self.memory_v1_dir.as_ref())
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Processes now in the session.
    pub fn pids(&self) -> Vec<u32> {
        read_pids(&self.unified_dir.join("cgroup.procs"))
    }

    /// The charge's high-water mark since the session began, and where it was read from.
    pub fn charged_peak(&self) -> Option<(u64, &'static str)> {
        let read =
            |path: PathBuf| -> Option<u64> { fs::read_to_string(path).ok()?.trim().parse().ok() };
        if let Some(peak) = read(self.unified_dir.join("memory.peak")) {
            return Some((peak, "memory.peak (cgroup v2)"));
        }
        let memory_dir = self.memory_v1_dir.as_ref()?;
        // The session's own v1 cgroup is fresh, so its max_usage is this session's alone; we
        // never reset it.
        read(memory_dir.join("memory.max_usage_in_bytes"))
            .map(|peak| (peak, "memory.max_usage_in_bytes (cgroup v1)"))
    }

    /// Kills every process still in the session.
    pub fn kill_all(&self) {
        // cgroup.kill (Linux 5.14+) kills atomically, even processes forking at that moment.
        if fs::write(self.unified_dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Kills what is left, waits for the session to empty and removes its directories.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        if !self.pids().is_empty() {
            self.kill_all();
        }
        let dirs: Vec<PathBuf> = self
            .memory_v1_dir
            .iter()
            .chain(std::iter::once(&self.unified_dir))
            .cloned()
            .collect();
        for dir in dirs {
            remove_dir_waiting(&dir)?;
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.remove_now() {
            tracing::warn!(error = %err, "could not remove the session cgroup");
        }
    }
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir(dir).map_err(|source| CgroupError::Create {
        path: dir.to_path_buf(),
        source,
    })
}

fn read_pids(procs: &Path) -> Vec<u32> {
    fs::read_to_string(procs)
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// rmdir fails with EBUSY until the last killed task has left; that takes milliseconds.
fn remove_dir_waiting(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(dir = %dir.display(), error = %err, "cgroup not empty yet");
                thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Removes empty session cgroups whose headroom process no longer exists.
fn remove_stale_sessions(root: &Path, parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SESSION_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let owner_alive = root.join(format!("proc/{owner}")).exists();
        if !owner_alive && read_pids(&entry.path().join("cgroup.procs")).is_empty() {
            match fs::remove_dir(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a stale session cgroup")
                }
                Err(err) => {
                    tracing::debug!(path = %entry.path().display(), error = %err, "stale session cgroup kept")
                }
            }
        }
    }
}

/// Reads a cgroup's memory charge: cgroup v2 files when the unified cgroup has the memory
/// controller, otherwise the v1 memory cgroup's. Files are kept open and re-read from offset 0,
/// so a 10 ms sampling loop costs one pread per sample.
#[derive(Debug)]
pub struct ChargeReader {
    version: ChargeVersion,
    dir: PathBuf,
    current: fs::File,
    /// v2 memory.peak opened once; on kernels that support it, writing to it resets the peak
    /// seen through this descriptor only (never other readers').
    window_peak: Option<fs::File>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargeVersion {
    V1,
    V2,
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

fn read_number(file: &fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = [0u8; 32];
    let length = file.read_at(&mut buffer, 0).ok()?;
    parse_number(buffer.get(..length)?)
}

/// A single-number cgroup file (memory.current, memory.peak, memory.usage_in_bytes, ...).
/// Public for the fuzz targets.
pub fn parse_number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    parse_key(&fs::read_to_string(path).ok()?, key)
}

/// The value of `key` in a flat-keyed cgroup file (`name value` lines: memory.stat,
/// memory.events, memory.oom_control). Public for the fuzz targets.
pub fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

impl ChargeReader {
    /// A reader for the cgroup at `unified_dir` (and its v1 memory twin, if any).
    pub fn open(unified_dir: &Path, memory_v1_dir: Option<&Path>) -> Option<Self> {
        if let Ok(current) = fs::File::open(unified_dir.join("memory.current")) {
            let window_peak = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(unified_dir.join("memory.peak"))
                .ok();
            return Some(Self {
                version: ChargeVersion::V2,
                dir: unified_dir.to_path_buf(),
                current,
                window_peak,
            });
        }
        let dir = memory_v1_dir?;
        let current = fs::File::open(dir.join("memory.usage_in_bytes")).ok()?;
        Some(Self {
            version: ChargeVersion::V1,
            dir: dir.to_path_buf(),
            current,
            window_peak: None,
        })
    }

    pub fn version(&self) -> ChargeVersion {
        self.version
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The charge now.
    pub fn current(&self) -> Option<u64> {
        read_number(&self.current)
    }

    /// v2 only: the kernel's peak since the last call, reset per descriptor (Linux 6.12+).
    /// None where unsupported; callers then rely on sampling.
    pub fn take_window_peak(&mut self) -> Option<u64> {
        use std::io::Write as _;
        let file = self.window_peak.as_mut()?;
        let peak = read_number(file)?;
        if file.write_all(b"reset\n").is_err() {
            // No per-fd reset on this kernel: the value is a lifetime peak, useless per window.
            self.window_peak = None;
            return None;
        }
        Some(peak)
    }

    /// The kernel's high-water mark over the cgroup's life, and where it came from. v1's
    /// `max_usage_in_bytes` is read, never reset: other readers rely on it.
    pub fn lifetime_peak(&self) -> Option<(u64, &'static str)> {
        let read = |name: &str| {
            fs::File::open(self.dir.join(name))
                .ok()
                .and_then(|f| read_number(&f))
        };
        match self.version {
            ChargeVersion::V2 => read("memory.peak").map(|peak| (peak, "memory.peak")),
            ChargeVersion::V1 => {
                read("memory.max_usage_in_bytes").map(|peak| (peak, "memory.max_usage_in_bytes"))
            }
        }
    }

    /// Inactive file pages, which the kubelet subtracts to get the working set.
    pub fn inactive_file(&self) -> Option<u64> {
        let key = match self.version {
            ChargeVersion::V2 => "inactive_file",
            ChargeVersion::V1 => "total_inactive_file",
        };
        read_key(&self.dir.join("memory.stat"), key)
    }

    /// The effective limit: the lowest of this cgroup's and its ancestors'. None: unlimited.
    pub fn limit(&self) -> Option<u64> {
        match self.version {
            ChargeVersion::V1 => {
                read_key(&self.dir.join("memory.stat"), "hierarchical_memory_limit")
                    .filter(|&limit| limit < V1_UNLIMITED)
            }
            ChargeVersion::V2 => {
                let mut lowest: Option<u64> = None;
                let mut dir = Some(self.dir.as_path());
                while let Some(current) = dir {
                    match fs::read_to_string(current.join("memory.max")) {
                        Ok(text) => {
                            if let Ok(limit) = text.trim().parse::<u64>() {
                                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
                            }
                        }
                        Err(_) => break,
                    }
                    dir = current.parent();
                }
                lowest
            }
        }
    }

    /// OOM kills the kernel counted in this cgroup (v2 memory.events, v1 memory.oom_control).
    pub fn oom_kills(&self) -> Option<u64> {
        match self.version {
            ChargeVersion::V2 => read_key(&self.dir.join("memory.events"), "oom_kill"),
            ChargeVersion::V1 => read_key(&self.dir.join("memory.oom_control"), "oom_kill"),
        }
    }

    /// Sets the cgroup's own limit (capture `--memory-limit`).
    pub fn set_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let file = match self.version {
            ChargeVersion::V2 => self.dir.join("memory.max"),
            ChargeVersion::V1 => self.dir.join("memory.limit_in_bytes"),
        };
        fs::write(&file, bytes.to_string())
            .map_err(|source| CgroupError::Create { path: file, source })
    }
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
    fn memory_files_parse_or_give_none() {
        let stat = "anon 104857600\ninactive_file 1024000\noom_kill x\noom_kill 3\n";
        assert_eq!(parse_key(stat, "inactive_file"), Some(1_024_000));
        assert_eq!(parse_key(stat, "oom_kill"), Some(3));
        assert_eq!(parse_key(stat, "file"), None);
        assert_eq!(parse_key("", "anon"), None);
        assert_eq!(parse_number(b"268435456\n"), Some(268_435_456));
        assert_eq!(parse_number(b"max\n"), None);
        assert_eq!(parse_number(&[0xff, b'1']), None);
    }

    #[test]
    fn charge_reader_reads_v1_files() {
        let dir = std::env::temp_dir().join(format!("headroom-charge-v1-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("fixture");
        fs::write(dir.join("memory.usage_in_bytes"), "1048576\n").expect("fixture");
        fs::write(dir.join("memory.max_usage_in_bytes"), "4194304\n").expect("fixture");
        fs::write(
            dir.join("memory.stat"),
            "cache 0\nhierarchical_memory_limit 9223372036854771712\ntotal_inactive_file 4096\n",
        )
        .expect("fixture");
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("fixture");
        let missing_v2 = dir.join("no-such-unified");
        let reader = ChargeReader::open(&missing_v2, Some(&dir)).expect("v1 reader");
        assert_eq!(reader.version(), ChargeVersion::V1);
        assert_eq!(reader.current(), Some(1 << 20));
        assert_eq!(
            reader.lifetime_peak(),
            Some((4 << 20, "memory.max_usage_in_bytes"))
        );
        assert_eq!(reader.inactive_file(), Some(4096));
        assert_eq!(reader.limit(), None);
        assert_eq!(reader.oom_kills(), Some(2));
        fs::write(
            dir.join("memory.stat"),
            "hierarchical_memory_limit 67108864\n",
        )
        .expect("fixture");
        assert_eq!(reader.limit(), Some(64 << 20));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn charge_reader_reads_v2_files_and_the_lowest_ancestor_limit() {
        let base = std::env::temp_dir().join(format!("headroom-charge-v2-{}", std::process::id()));
        let dir = base.join("pod/container");
        fs::create_dir_all(&dir).expect("fixture");
        fs::write(base.join("memory.max"), "max\n").expect("fixture");
        fs::write(base.join("pod/memory.max"), "268435456\n").expect("fixture");
        fs::write(dir.join("memory.max"), "536870912\n").expect("fixture");
        fs::write(dir.join("memory.current"), "123\n").expect("fixture");
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("fixture");
        let reader = ChargeReader::open(&dir, None).expect("v2 reader");
        assert_eq!(reader.version(), ChargeVersion::V2);
        assert_eq!(reader.current(), Some(123));
        assert_eq!(reader.limit(), Some(256 << 20));
        assert_eq!(reader.oom_kills(), Some(1));
        fs::remove_dir_all(&base).expect("cleanup");
    }

    #[test]
    fn bad_cgroup_paths_are_named() {
        let root = Path::new("/nonexistent-root-for-headroom");
        let err = resolve_cgroup_path(root, "kubepods").expect_err("relative");
        assert!(err.to_string().contains("must start with `/`"), "{err}");
        let err = resolve_cgroup_path(root, "/a/../b").expect_err("dotdot");
        assert!(err.to_string().contains("`..`"), "{err}");
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
