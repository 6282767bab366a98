//! Setting up a target: the kernel side told what to count (a cgroup id or a process tree),
//! processes already running seeded, and the charge reader opened.

use std::path::Path;

use super::{session::Watched, CaptureError, TargetSpec};
use crate::{
    cgroups::{self, CgroupError, ChargeReader, SessionCgroup},
    probes::Probes,
    procfs,
    report::TargetKind,
};

/// Process-tree targets are counted under ids with the top bit set: cgroup ids never have it.
const PROCESS_TREE_TARGET: u64 = 1 << 63;

/// Sets up the kernel side and the charge reader for the target.
pub(super) fn watch(
    target: &TargetSpec,
    probes: &mut Probes,
    memory_limit: Option<u64>,
) -> Result<Watched, CaptureError> {
    let root = Path::new("/");
    match target {
        TargetSpec::Command(_) => {
            let session = SessionCgroup::create(root)?;
            probes.track_cgroup(session.id)?;
            let charge = ChargeReader::open(&session.unified_dir, session.memory_v1_dir.as_deref());
            if let Some(limit) = memory_limit {
                charge
                    .as_ref()
                    .ok_or(CaptureError::NoMemoryController)?
                    .set_limit(limit)?;
            }
            Ok(Watched {
                kind: TargetKind::Command,
                target_id: session.id,
                cgroup_path: Some(session.relative_path.clone()),
                oom_kills_at_start: charge.as_ref().and_then(ChargeReader::oom_kills),
                charge,
                session: Some(session),
                root_pids: Vec::new(),
                baseline_tasks: 0,
            })
        }
        TargetSpec::Cgroup(path) => {
            let (unified, memory_v1) = cgroups::resolve_cgroup_path(root, path)?;
            let id = cgroups::cgroup_id(&unified)?;
            let running = procfs::read_pids(&unified.join("cgroup.procs"), usize::MAX);
            seed_running(probes, id, &running)?;
            probes.track_cgroup(id)?;
            let charge = ChargeReader::open(&unified, memory_v1.as_deref());
            Ok(Watched {
                kind: TargetKind::Cgroup,
                target_id: id,
                cgroup_path: Some(path.clone()),
                oom_kills_at_start: charge.as_ref().and_then(ChargeReader::oom_kills),
                charge,
                session: None,
                baseline_tasks: procfs::read_pids(&unified.join("cgroup.threads"), usize::MAX).len()
                    as u64,
                root_pids: running,
            })
        }
        TargetSpec::Pid(pid) => {
            let target_id = PROCESS_TREE_TARGET | u64::from(*pid);
            let tree = procfs::process_tree(root, *pid);
            seed_running(probes, target_id, &tree)?;
            for &member in &tree {
                probes.follow_process(member, target_id)?;
            }
            let baseline_tasks = tree
                .iter()
                .filter_map(|&member| procfs::thread_count(root, member))
                .sum();
            Ok(Watched {
                kind: TargetKind::Pid,
                target_id,
                cgroup_path: None,
                charge: None,
                session: None,
                root_pids: tree,
                baseline_tasks,
                oom_kills_at_start: None,
            })
        }
        TargetSpec::Pod { .. } | TargetSpec::Node(_) => {
            Err(CaptureError::Cgroup(CgroupError::BadCgroupPath {
                path: String::new(),
                reason: "pods and nodes are resolved before they are watched".to_owned(),
            }))
        }
    }
}

/// Seeds the resident memory of processes already running in a target, before it is tracked.
fn seed_running(probes: &mut Probes, target_id: u64, pids: &[u32]) -> Result<(), CaptureError> {
    let resident: Vec<(u32, [i64; 4])> = pids
        .iter()
        .filter_map(|&pid| Some((pid, procfs::resident_by_member(Path::new("/"), pid)?)))
        .collect();
    probes.seed_resident(target_id, &resident)?;
    Ok(())
}
