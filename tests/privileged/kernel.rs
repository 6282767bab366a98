//! The probes against this kernel, through the library: every program loads, and process
//! exits, execs and the kernel's record layouts are read right, by each means of telling a
//! process's last thread that this kernel can run (its own `group_dead` field where it has
//! one, `task->signal->live` through BTF, the kernel map's thread counts). On a kernel that
//! gets one of them wrong (a field read from padding, a race between exiting threads) these
//! fail: no exit seen, or seen twice, or entries left behind.
//!
//! They need root. Without it they print SKIPPED, except in CI or under `cargo xtask test`,
//! where they fail.

#[path = "../common/mod.rs"]
mod common;

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use common::{privileged, workload, ChildGuard, TestCgroup};
use profiler::probes::{
    preflight::ExitTracking, ExitTrackingChoice, ProbeConfig, ProbeEvent, Probes, ProcessExit,
    TRACEPOINTS,
};

const MIB: u64 = 1 << 20;
const THREADS: u64 = 6;

/// The unified-hierarchy directory of a test cgroup (hybrid hosts mount it at .../unified).
fn unified_dir(cgroup: &TestCgroup) -> std::path::PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified").join(cgroup.path().trim_start_matches('/'));
    if hybrid.is_dir() {
        hybrid
    } else {
        Path::new("/sys/fs/cgroup").join(cgroup.path().trim_start_matches('/'))
    }
}

/// Loads the probes with this exit tracking, or None when this kernel cannot run it.
fn load(exit_tracking: ExitTrackingChoice) -> Option<Probes> {
    match Probes::load(&ProbeConfig {
        exit_tracking,
        ..ProbeConfig::default()
    }) {
        Ok(probes) => Some(probes),
        // Only forcing signal->live can be refused (no BTF); anything else is a failure.
        Err(err) if exit_tracking == ExitTrackingChoice::SignalLive => {
            eprintln!("exit tracking through signal->live unavailable here: {err}");
            None
        }
        Err(err) => panic!("loading the probes: {err:?}\n{err}"),
    }
}

/// Runs `sh -c 'exec WORKLOAD ARGS'` in a cgroup of its own, tracked by the probes, and returns
/// the exit events of its process and the probes (to read their counters).
fn run_tracked(
    probes: &mut Probes,
    tag: &str,
    args: &[&str],
) -> (u32, u64, Vec<ProcessExit>, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = runtime.enter();
    let mut events = probes
        .take_event_stream()
        .expect("event stream")
        .expect("first taker");
    let mut cgroup = TestCgroup::new(tag);
    let target = std::fs::metadata(unified_dir(&cgroup))
        .expect("cgroup dir")
        .ino();
    probes.track_cgroup(target).expect("track");
    let program = workload("exit_patterns", false);
    let script = format!("exec {} {}", program.display(), args.join(" "));
    let mut child = ChildGuard(cgroup.spawn(Path::new("/bin/sh"), &["-c", &script]));
    let pid = child.0.id();
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "workload failed: {status:?}");

    // Exit events arrive right after the exit; wait a little for any duplicate too.
    let mut exits = Vec::new();
    let mut starts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settled = None;
    while Instant::now() < deadline {
        for event in events.drain_now() {
            match event.expect("decodes") {
                ProbeEvent::ProcessExit(exit) if exit.tgid == pid => {
                    exits.push(*exit);
                    settled.get_or_insert(Instant::now());
                }
                ProbeEvent::ProcessStart(start) if start.tgid == pid => starts.push(start.comm),
                _ => {}
            }
        }
        if settled.is_some_and(|at| at.elapsed() > Duration::from_millis(500)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cgroup.remove();
    (pid, target, exits, starts)
}

fn check_exit_tracking(exit_tracking: ExitTrackingChoice, pattern: &str) {
    let Some(mut probes) = load(exit_tracking) else {
        return;
    };
    let means = probes.kernel_features().exit_tracking.clone();
    let tag = format!("exit-{pattern}");
    let threads = THREADS.to_string();
    let (pid, target, exits, _) = run_tracked(&mut probes, &tag, &[pattern, &threads, "16"]);

    // Exactly one exit, however many threads were exiting at the same moment.
    assert_eq!(exits.len(), 1, "{means:?}: exits of {pid}: {exits:?}");
    let exit = &exits[0];
    // The name after exec, not the shell's.
    assert_eq!(exit.comm, "exit_patterns", "{means:?}");
    assert_eq!(exit.counters.counters.threads_created, THREADS, "{means:?}");
    assert_eq!(
        exit.counters.counters.execs, 2,
        "{means:?}: sh, then the workload"
    );
    assert!(
        exit.counters.counters.resident_peak_bytes >= 16 * MIB,
        "{means:?}: resident peak {}",
        exit.counters.counters.resident_peak_bytes
    );

    let counters = probes
        .target_counters(target)
        .expect("read")
        .expect("counted");
    assert_eq!(counters.processes_exited, 1, "{means:?}");
    assert_eq!(counters.tasks_exited, THREADS + 1, "{means:?}");
    assert_eq!(counters.live_tasks, 0, "{means:?}");
    assert_eq!(
        counters.resident_bytes(),
        0,
        "{means:?}: the dead process's memory left the sums"
    );
    let entries = probes.kernel_entries(target).expect("entries");
    assert_eq!(
        (entries.processes, entries.address_space_owners),
        (0, 0),
        "{means:?}: {entries:?}"
    );
}

#[test]
fn every_program_loads_and_the_kernel_is_described() {
    let Some(_guard) = privileged("every_program_loads_and_the_kernel_is_described") else {
        return;
    };
    let probes = load(ExitTrackingChoice::Auto).expect("auto always loads");
    let loaded = probes.program_stats().len();
    assert_eq!(loaded, TRACEPOINTS.len());
    let features = probes.kernel_features();
    let lines = features.describe();
    assert!(lines.iter().any(|(name, _)| *name == "exit tracking"));
    // The best means this kernel has is the one chosen.
    let has_group_dead =
        std::fs::read_to_string("/sys/kernel/tracing/events/sched/sched_process_exit/format")
            .or_else(|_| {
                std::fs::read_to_string(
                    "/sys/kernel/debug/tracing/events/sched/sched_process_exit/format",
                )
            })
            .expect("tracefs format")
            .contains("group_dead");
    match &features.exit_tracking {
        ExitTracking::GroupDeadField { .. } => assert!(has_group_dead),
        ExitTracking::SignalLive { .. } => {
            assert!(!has_group_dead && Path::new("/sys/kernel/btf/vmlinux").exists())
        }
        ExitTracking::LiveCount { .. } => {
            assert!(!has_group_dead && !Path::new("/sys/kernel/btf/vmlinux").exists())
        }
    }
}

#[test]
fn a_process_killed_whole_exits_once_with_its_exec_name() {
    let Some(_guard) = privileged("a_process_killed_whole_exits_once_with_its_exec_name") else {
        return;
    };
    for choice in [
        ExitTrackingChoice::Auto,
        ExitTrackingChoice::SignalLive,
        ExitTrackingChoice::LiveCount,
    ] {
        check_exit_tracking(choice, "group");
    }
}

#[test]
fn a_process_whose_leader_exits_first_ends_with_its_last_thread() {
    let Some(_guard) = privileged("a_process_whose_leader_exits_first_ends_with_its_last_thread")
    else {
        return;
    };
    for choice in [
        ExitTrackingChoice::Auto,
        ExitTrackingChoice::SignalLive,
        ExitTrackingChoice::LiveCount,
    ] {
        check_exit_tracking(choice, "leader-first");
    }
}

#[test]
fn a_followed_process_is_forgotten_when_it_exits() {
    let Some(_guard) = privileged("a_followed_process_is_forgotten_when_it_exits") else {
        return;
    };
    let mut probes = load(ExitTrackingChoice::Auto).expect("auto always loads");
    let program = workload("exit_patterns", false);
    // Started before it is followed, as `capture --pid` finds a process: its threads were
    // born unseen, so only an exact means tells when the last one goes.
    let mut child = ChildGuard(
        std::process::Command::new(&program)
            .args(["leader-first", "4", "0"])
            .spawn()
            .expect("spawn"),
    );
    let pid = child.0.id();
    let target = (1u64 << 63) | u64::from(pid);
    probes.follow_process(pid, target).expect("follow");
    assert!(child.0.wait().expect("wait").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = probes.kernel_entries(target).expect("entries");
        if entries.followed_processes == 0 && entries.processes == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}: the exited process is still followed: {entries:?}",
            probes.kernel_features().exit_tracking
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn oom_victim_sizes_are_known_exactly_where_the_record_has_them() {
    let Some(_guard) = privileged("oom_victim_sizes_are_known_exactly_where_the_record_has_them")
    else {
        return;
    };
    let mut probes = load(ExitTrackingChoice::Auto).expect("auto always loads");
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/events/oom/mark_victim/format")).ok()
        })
        .expect("mark_victim format");
    let has_sizes = format.contains("anon_rss");
    assert_eq!(
        probes.kernel_features().layouts.oom_victim_sizes.is_some(),
        has_sizes,
        "{format}"
    );

    // A 200 MiB touch under a 64 MiB limit: the kernel kills it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = runtime.enter();
    let mut events = probes
        .take_event_stream()
        .expect("event stream")
        .expect("first taker");
    let mut cgroup = TestCgroup::new("oom");
    let target = std::fs::metadata(unified_dir(&cgroup))
        .expect("cgroup dir")
        .ino();
    let limit = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(|root| Path::new(root).join(cgroup.path().trim_start_matches('/')))
        .find_map(|dir| {
            ["memory.limit_in_bytes", "memory.max"]
                .iter()
                .map(|file| dir.join(file))
                .find(|file| file.exists())
        });
    let Some(limit) = limit else {
        eprintln!("SKIPPED the OOM kill: no memory controller for test cgroups here");
        return;
    };
    std::fs::write(&limit, (64 * MIB).to_string()).expect("set the limit");
    for swap in ["memory.swap.max", "memory.memsw.limit_in_bytes"] {
        let _ = std::fs::write(limit.with_file_name(swap), "0");
    }
    probes.track_cgroup(target).expect("track");
    let program = workload("exit_patterns", false);
    let mut child = ChildGuard(cgroup.spawn(&program, &["group", "1", "200"]));
    let pid = child.0.id();
    let status = child.0.wait().expect("wait");
    assert!(!status.success(), "the workload was not killed: {status:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let victim = loop {
        let found = events
            .drain_now()
            .into_iter()
            .find_map(|event| match event {
                Ok(ProbeEvent::OomVictim(victim)) if victim.tgid == pid => Some(victim),
                _ => None,
            });
        if let Some(victim) = found {
            break victim;
        }
        assert!(Instant::now() < deadline, "no OOM victim event for {pid}");
        std::thread::sleep(Duration::from_millis(20));
    };
    cgroup.remove();
    assert_eq!(victim.sizes_known, has_sizes, "{victim:?}");
    if has_sizes {
        assert!(
            (32 * MIB..=64 * MIB).contains(&victim.anon_rss_bytes),
            "{victim:?}"
        );
        assert!(victim.total_vm_bytes >= 200 * MIB, "{victim:?}");
    } else {
        // Unknown, not stale bytes from past the record's end.
        assert_eq!(
            (victim.total_vm_bytes, victim.anon_rss_bytes),
            (0, 0),
            "{victim:?}"
        );
    }
}

/// A process that faults 64 MiB in cgroup A, is moved to B (as runc exec or a systemd scope
/// move processes), faults 32 MiB more there and exits: its memory follows it, and both
/// targets' resident sums come back to about zero.
#[test]
fn a_process_moved_between_cgroups_takes_its_memory_along() {
    let Some(_guard) = privileged("a_process_moved_between_cgroups_takes_its_memory_along") else {
        return;
    };
    let Some(probes) = load(ExitTrackingChoice::Auto) else {
        return;
    };
    let from = TestCgroup::new("moved-from");
    let to = TestCgroup::new("moved-to");
    let id = |cgroup: &TestCgroup| {
        std::fs::metadata(unified_dir(cgroup))
            .expect("cgroup dir")
            .ino()
    };
    let (from_id, to_id) = (id(&from), id(&to));
    let mut probes = probes;
    probes.track_cgroup(from_id).expect("track");
    probes.track_cgroup(to_id).expect("track");
    let resident = |probes: &Probes, target: u64| {
        probes
            .target_counters(target)
            .expect("read")
            .map_or(0, |counters| counters.resident_bytes())
    };
    // 64 MiB, then (on "go") 32 MiB more for 300 ms, freed, and exit.
    let program = workload("spike", false);
    let mut child = ChildGuard(from.spawn(&program, &["64", "32", "300", "-1", "0"]));
    common::wait_until("64 MiB resident in the first cgroup", 60, || {
        resident(&probes, from_id) >= (64 * MIB) as i64
    });
    for procs in to.procs_files() {
        std::fs::write(&procs, child.0.id().to_string()).expect("move the process");
    }
    std::io::Write::write_all(&mut child.0.stdin.take().expect("stdin"), b"go\n")
        .expect("tell the workload to go on");
    assert!(child.0.wait().expect("wait").success());
    let (mut left_from, mut left_to) = (0, 0);
    common::wait_until("both sums back to about zero", 10, || {
        left_from = resident(&probes, from_id);
        left_to = resident(&probes, to_id);
        left_from.abs() < (2 * MIB) as i64 && left_to.abs() < (2 * MIB) as i64
    });
    let to_peak = probes
        .target_counters(to_id)
        .expect("read")
        .expect("counted")
        .resident_peak_bytes;
    eprintln!(
        "measured: left in the first cgroup {left_from}, in the second {left_to}; second's \
         resident peak {to_peak}"
    );
    assert!(
        to_peak >= 96 * MIB,
        "the second cgroup's peak {to_peak} holds the 64 MiB that moved and the 32 it made"
    );
}

/// More processes than the process map holds (shrunk to 12 here), every one of them faulting
/// all the time. An LRU map evicted live processes: each came back at its next fault with its
/// whole memory added to the target again, and the sum grew without bound. Now the map keeps
/// the processes it holds until they exit, counts them exactly, and counts each event of the
/// others as a drop: the target's sum never exceeds what its processes hold.
#[test]
fn more_processes_than_the_map_holds_are_counted_as_drops_never_twice() {
    let Some(_guard) = privileged("more_processes_than_the_map_holds") else {
        return;
    };
    const HELD: usize = 12;
    const PROCESSES: usize = 24;
    let mut probes = Probes::load(&ProbeConfig {
        max_processes: HELD as u32,
        ..ProbeConfig::default()
    })
    .expect("load");
    let mut cgroup = TestCgroup::new("overflow");
    let target = std::fs::metadata(unified_dir(&cgroup))
        .expect("cgroup")
        .ino();
    probes.track_cgroup(target).expect("track");
    let drops_before = probes.drops().expect("drops").process_map_full;
    let program = workload("churn", false);
    // 8 MiB held, 256 KiB mapped, touched and unmapped every 20 ms.
    let mut children: Vec<ChildGuard> = (0..PROCESSES)
        .map(|_| {
            let mut child = cgroup.spawn(&program, &["8", "256", "20"]);
            let mut ready = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
                &mut ready,
            )
            .expect("ready");
            ChildGuard(child)
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|child| child.0.id()).collect();

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut samples = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let counted = probes
            .target_counters(target)
            .expect("read")
            .expect("counted")
            .resident_bytes()
            .max(0) as u64;
        let held: u64 = pids
            .iter()
            .map(|&pid| common::status_bytes(pid, "VmRSS"))
            .sum();
        assert!(
            counted as f64 <= held as f64 * 1.05,
            "sample {samples}: the target counts {} MiB, its processes hold {} MiB",
            counted / MIB,
            held / MIB
        );
        // The processes the map holds are counted exactly (each to within its churn region).
        let entries = probes.live_processes().expect("entries");
        let in_map: Vec<u32> = entries
            .iter()
            .filter(|(_, process)| process.target_id == target)
            .map(|(tgid, _)| *tgid)
            .collect();
        assert!(in_map.len() <= HELD, "{} entries", in_map.len());
        let held_by_mapped: u64 = in_map
            .iter()
            .map(|&pid| common::status_bytes(pid, "VmRSS"))
            .sum();
        let slack = in_map.len() as u64 * 256 * 1024 + 2 * MIB;
        assert!(
            counted.abs_diff(held_by_mapped) <= slack,
            "sample {samples}: counted {counted}, the {} processes in the map hold {held_by_mapped}",
            in_map.len()
        );
        samples += 1;
    }
    assert!(samples >= 10, "{samples} samples");
    let dropped = probes.drops().expect("drops").process_map_full - drops_before;
    assert!(
        dropped > 0,
        "the processes the map could not hold are counted"
    );

    for child in &mut children {
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    drop(children);
    common::wait_until("every entry to go with its process", 10, || {
        probes
            .kernel_entries(target)
            .is_ok_and(|entries| (entries.processes, entries.address_space_owners) == (0, 0))
    });
    cgroup.remove();
}
