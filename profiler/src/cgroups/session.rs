//! The transient cgroup a capture session runs its command in: created under the caller's own
//! cgroups where the memory controller reaches them, else (pure cgroup v2 under systemd, where
//! a service's cgroup delegates no controllers) under `/headroom.slice` at the root with
//! `+memory` enabled on the way; joined through `cgroup.procs`, killed and removed at the end;
//! leftovers of a headroom that was killed are removed on the next start.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use super::{cgroup_id, process_cgroups, CgroupError, Hierarchies};
use crate::procfs;

const SESSION_PREFIX: &str = "headroom-capture-";
/// Where sessions go on pure cgroup v2 when the caller's own cgroup cannot give them the
/// memory controller: a slice of its own under the root, which can always enable it.
pub const SESSION_SLICE: &str = "headroom.slice";

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

        let (unified_parent, parent_path) = session_parent(&hierarchies, &own.unified)?;
        remove_stale_sessions(root, &unified_parent);
        let unified_dir = unified_parent.join(&name);
        make_dir(&unified_dir)?;
        let relative_path = format!("{}/{name}", parent_path.trim_end_matches('/'));
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
        procfs::read_pids(&self.unified_dir.join("cgroup.procs"), usize::MAX)
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
        // The slice headroom made for sessions goes with the last of them (another running
        // session keeps it busy, and then the removal is simply refused).
        if let Some(slice) = self
            .unified_dir
            .parent()
            .filter(|parent| parent.file_name().is_some_and(|name| name == SESSION_SLICE))
        {
            let _ = fs::remove_dir(slice);
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

/// Where a session's unified cgroup goes, and that path as /proc/PID/cgroup shows it. Under
/// the caller's own cgroup when it passes the memory controller down (or on hybrid hosts,
/// where v1 measures memory); otherwise under [`SESSION_SLICE`] at the root with `+memory`
/// enabled in the root's and the slice's `cgroup.subtree_control` (the root and an empty
/// slice are exempt from the rule that a cgroup with processes cannot delegate).
fn session_parent(hierarchies: &Hierarchies, own: &str) -> Result<(PathBuf, String), CgroupError> {
    let own_dir = hierarchies.unified.join(own.trim_start_matches('/'));
    let memory_here = |dir: &Path| {
        fs::read_to_string(dir.join("cgroup.subtree_control"))
            .is_ok_and(|text| text.split_whitespace().any(|c| c == "memory"))
    };
    let root_has_memory = fs::read_to_string(hierarchies.unified.join("cgroup.controllers"))
        .is_ok_and(|text| text.split_whitespace().any(|c| c == "memory"));
    if hierarchies.memory_v1.is_some() || memory_here(&own_dir) || !root_has_memory {
        return Ok((own_dir, own.to_owned()));
    }
    enable_memory(&hierarchies.unified)?;
    let slice = hierarchies.unified.join(SESSION_SLICE);
    if !slice.exists() {
        make_dir(&slice)?;
    }
    enable_memory(&slice)?;
    Ok((slice, format!("/{SESSION_SLICE}")))
}

/// Writes `+memory` to a cgroup's `cgroup.subtree_control` unless it is there already.
fn enable_memory(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control)
        .is_ok_and(|text| text.split_whitespace().any(|c| c == "memory"));
    if enabled {
        return Ok(());
    }
    fs::write(&control, "+memory").map_err(|source| CgroupError::Create {
        path: control,
        source,
    })
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir(dir).map_err(|source| CgroupError::Create {
        path: dir.to_path_buf(),
        source,
    })
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
        let owner_alive = procfs::process_exists(root, owner);
        if !owner_alive
            && procfs::read_pids(&entry.path().join("cgroup.procs"), usize::MAX).is_empty()
        {
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

#[cfg(test)]
mod placement_tests {
    use super::*;

    /// A cgroup2 root made of plain files, with a systemd-style service cgroup.
    fn fixture(tag: &str, own_delegates: bool, root_has_memory: bool) -> (PathBuf, Hierarchies) {
        let root =
            std::env::temp_dir().join(format!("headroom-placement-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let service = root.join("system.slice/ssh.service");
        fs::create_dir_all(&service).expect("fixture");
        let controllers = if root_has_memory {
            "cpu io memory pids\n"
        } else {
            "cpu io pids\n"
        };
        fs::write(root.join("cgroup.controllers"), controllers).expect("fixture");
        fs::write(root.join("cgroup.subtree_control"), "cpu\n").expect("fixture");
        let delegated = if own_delegates { "memory\n" } else { "\n" };
        fs::write(service.join("cgroup.subtree_control"), delegated).expect("fixture");
        let hierarchies = Hierarchies {
            unified: root.clone(),
            memory_v1: None,
        };
        (root, hierarchies)
    }

    #[test]
    fn a_caller_whose_cgroup_delegates_memory_keeps_its_sessions() {
        let (root, hierarchies) = fixture("delegates", true, true);
        let (dir, path) =
            session_parent(&hierarchies, "/system.slice/ssh.service").expect("parent");
        assert_eq!(dir, root.join("system.slice/ssh.service"));
        assert_eq!(path, "/system.slice/ssh.service");
        assert!(!root.join(SESSION_SLICE).exists());
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn a_systemd_service_without_memory_gets_a_slice_at_the_root_with_memory_enabled() {
        let (root, hierarchies) = fixture("slice", false, true);
        let (dir, path) =
            session_parent(&hierarchies, "/system.slice/ssh.service").expect("parent");
        assert_eq!(dir, root.join(SESSION_SLICE));
        assert_eq!(path, "/headroom.slice");
        let written = |dir: &Path| {
            fs::read_to_string(dir.join("cgroup.subtree_control")).expect("subtree_control")
        };
        assert_eq!(written(&root), "+memory");
        assert_eq!(written(&root.join(SESSION_SLICE)), "+memory");
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn hybrid_hosts_and_roots_without_the_controller_keep_the_callers_cgroup() {
        let (root, mut hierarchies) = fixture("hybrid", false, true);
        hierarchies.memory_v1 = Some(root.join("memory"));
        let (_, path) = session_parent(&hierarchies, "/system.slice/ssh.service").expect("parent");
        assert_eq!(path, "/system.slice/ssh.service");
        fs::remove_dir_all(&root).expect("cleanup");
        let (root, hierarchies) = fixture("nomemory", false, false);
        let (_, path) = session_parent(&hierarchies, "/system.slice/ssh.service").expect("parent");
        assert_eq!(path, "/system.slice/ssh.service");
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
