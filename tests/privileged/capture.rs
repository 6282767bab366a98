//! End-to-end tests of `headroom capture` with the real probes attached: workloads with known
//! behaviour, exact figures.
//!
//! They need root. Without it they print SKIPPED, except in CI or under `cargo xtask test`,
//! where they fail.

#[path = "../common/mod.rs"]
mod common;

use std::{
    io::Write as _,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use common::{
    capture, headroom, leftover_session_cgroups, loaded_programs_named, privileged, workload,
};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
const PAGE: u64 = 4096;

#[test]
fn seven_threads_and_three_64_mib_maps_are_counted_exactly() {
    let Some(_guard) = privileged("seven_threads_and_three_64_mib_maps_are_counted_exactly") else {
        return;
    };
    let program = workload("threads_and_maps", true);
    let program = program.to_str().expect("utf-8 path");
    let run = capture(&[program, "7", "3", "64", "1024"]);
    assert!(run.output.status.success(), "{}", run.stderr());

    // Threads: exactly 7 created; main + 7 alive at once (the workload holds them at a barrier).
    assert_eq!(run.target("/activity/threads_created"), 7);
    assert_eq!(run.target("/activity/peak_tasks"), 8);
    assert_eq!(run.target("/activity/tasks_exited"), 8);
    assert_eq!(run.target("/activity/processes_created"), 0);
    assert_eq!(run.target("/activity/execs"), 1);

    // Static binary: every anonymous mapping is one of the workload's three 64 MiB regions.
    assert_eq!(run.target("/activity/mmapped/anonymous"), 192 * MIB);
    assert_eq!(run.target("/activity/mmapped/file"), 0);
    assert_eq!(run.target("/activity/mmapped/shared"), 0);
    assert_eq!(run.target("/activity/mmapped/no_access"), 0);
    // Thread stacks: 256 KiB asked per thread; glibc adds its one-page guard to the mapping.
    assert_eq!(
        run.target("/activity/mmapped/stack"),
        7 * (256 * KIB + PAGE)
    );
    assert_eq!(run.target("/activity/mmap_calls"), 3 + 7);
    assert_eq!(run.target("/activity/munmap_calls"), 1);
    assert_eq!(run.target("/activity/munmapped_bytes"), 64 * MIB);

    // brk: the workload's own 1 MiB, plus glibc's: one page of main-thread TLS at startup and
    // the main arena's first 132 KiB sbrk (pthread_create mallocs each thread's DTV). Never
    // less than the 1 MiB; more than 256 KiB extra would mean we count something wrong.
    let grown = run.target("/activity/brk_grown_bytes");
    assert!(
        (1024 * KIB..1280 * KIB).contains(&grown),
        "brk grew {grown}"
    );

    // The kernel's own charge: all three regions were touched before one was unmapped.
    let charged = run.target("/memory/peak_bytes");
    assert!(
        (192 * MIB..256 * MIB).contains(&charged),
        "charged peak {charged}"
    );
    // ... from the kernel's own counter for the session's cgroup (v1 max_usage_in_bytes or v2
    // memory.peak), not from samples.
    assert_eq!(
        run.target_json()["memory"]["peak_from"],
        "session_high_water_mark",
        "{}",
        run.target_json()["memory"]
    );

    // The per-process record agrees with the cgroup totals.
    let processes = run.target_json()["processes"]
        .as_array()
        .expect("processes");
    assert_eq!(processes.len(), 1, "{processes:?}");
    let process = &processes[0];
    assert_eq!(process["activity"]["threads_created"], 7);
    assert_eq!(process["activity"]["peak_tasks"], 8);
    assert_eq!(process["activity"]["mmapped"]["anonymous"], 192 * MIB);
    assert_eq!(process["exited"], true);
    // The name after exec, not headroom's (the child it forked): the kernel's comm, which
    // keeps the first 15 bytes of the program's name.
    assert_eq!(process["command"], "threads_and_map", "{process}");
    assert_eq!(run.number("/drops/ringbuf_full"), 0);
    assert_eq!(run.number("/undecodable_events"), 0);

    assert!(
        leftover_session_cgroups().is_empty(),
        "session cgroup left behind"
    );
}

#[test]
fn forks_and_execs_are_counted_per_process() {
    let Some(_guard) = privileged("forks_and_execs_are_counted_per_process") else {
        return;
    };
    // sh forks two background children that exec /bin/true; `wait` is a builtin.
    let run = capture(&["sh", "-c", "/bin/true & wait; /bin/true & wait"]);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert_eq!(run.target("/activity/processes_created"), 2);
    assert_eq!(run.target("/activity/execs"), 3);
    assert_eq!(run.target("/activity/threads_created"), 0);
    assert_eq!(run.target("/activity/tasks_exited"), 3);
    assert_eq!(run.target("/activity/peak_tasks"), 2);
    let processes = run.target_json()["processes"]
        .as_array()
        .expect("processes");
    let shell_pid = run.target("/pids/0");
    let children: Vec<_> = processes
        .iter()
        .filter(|p| p["parent_pid"].as_u64() == Some(shell_pid))
        .collect();
    assert_eq!(children.len(), 2, "{processes:?}");
    assert!(children
        .iter()
        .all(|p| p["command"] == "true" && p["exited"] == true));
}

#[test]
fn stdio_and_exit_code_pass_through() {
    let Some(_guard) = privileged("stdio_and_exit_code_pass_through") else {
        return;
    };
    let mut child = headroom()
        .args([
            "capture",
            "--",
            "sh",
            "-c",
            "read line; echo \"got $line\"; echo oops >&2; exit 3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn headroom");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(3));
    // stdout is the command's alone; the summary goes to stderr.
    assert_eq!(String::from_utf8_lossy(&output.stdout), "got hello\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("oops\n"), "{stderr}");
    assert!(stderr.contains("exited with code 3"), "{stderr}");
    // The table, on stderr by default for a command.
    assert!(stderr.contains("MEMORY"), "{stderr}");
    assert!(stderr.contains("Reserved at its peak, by kind"), "{stderr}");
}

#[test]
fn death_by_signal_exits_with_128_plus_the_signal() {
    let Some(_guard) = privileged("death_by_signal_exits_with_128_plus_the_signal") else {
        return;
    };
    let run = capture(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(run.output.status.code(), Some(128 + 15));
    assert_eq!(run.target_json()["exit"]["signal"], 15);
}

#[test]
fn sigint_ends_the_session_cleanly() {
    let Some(_guard) = privileged("sigint_ends_the_session_cleanly") else {
        return;
    };
    let programs_before = loaded_programs_named("sys_exit_brk");
    let child = headroom()
        .args(["capture", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn headroom");
    let headroom_pid = child.id();

    // Wait until the session is running: its cgroup exists and sleep is inside.
    let deadline = Instant::now() + Duration::from_secs(90);
    let session = loop {
        let found: Vec<_> = common::session_cgroups()
            .into_iter()
            .filter(|dir| {
                dir.to_string_lossy()
                    .contains(&format!("headroom-capture-{headroom_pid}-"))
            })
            .collect();
        let populated = found.iter().any(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|procs| !procs.trim().is_empty())
        });
        if populated {
            break found;
        }
        assert!(Instant::now() < deadline, "the session never started");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(loaded_programs_named("sys_exit_brk"), programs_before + 1);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(headroom_pid).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
    let output = child.wait_with_output().expect("wait");

    // sleep died of the forwarded SIGINT; the report was still printed.
    assert_eq!(output.status.code(), Some(128 + 2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was killed by signal 2"), "{stderr}");
    // Cgroups removed (both hierarchies) and probes detached.
    for dir in &session {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(leftover_session_cgroups().is_empty());
    assert_eq!(loaded_programs_named("sys_exit_brk"), programs_before);
}

#[test]
fn processes_left_behind_are_killed_and_the_cgroup_removed() {
    let Some(_guard) = privileged("processes_left_behind_are_killed_and_the_cgroup_removed") else {
        return;
    };
    let started = Instant::now();
    let run = capture(&["sh", "-c", "sleep 60 & echo started"]);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert_eq!(String::from_utf8_lossy(&run.output.stdout), "started\n");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(leftover_session_cgroups().is_empty());
    // Both processes are in the report, and both are gone.
    assert_eq!(run.target("/activity/processes_created"), 1);
    assert_eq!(run.target("/activity/tasks_exited"), 2);
}

#[test]
fn missing_capabilities_are_named() {
    let Some(_guard) = privileged("missing_capabilities_are_named") else {
        return;
    };
    // Root, but without the capabilities BPF needs (setpriv from util-linux).
    let output = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-bpf,-perfmon,-sys_admin", "--"])
        .arg(env!("CARGO_BIN_EXE_headroom"))
        .args(["capture", "--", "true"])
        .output()
        .expect("setpriv (util-linux) is installed");
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lacks CAP_BPF and CAP_PERFMON"), "{stderr}");
    assert!(stderr.contains("setcap"), "{stderr}");
}

#[test]
fn unknown_command_is_reported_as_not_found() {
    // Needs no privileges: the command is resolved before anything is loaded.
    let output = headroom()
        .args(["capture", "--", "no-such-command-for-headroom"])
        .output()
        .expect("run headroom");
    assert_eq!(output.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("command not found: `no-such-command-for-headroom`"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_get_usage_help() {
    let output = headroom()
        .args(["capture", "--max-processes", "zero", "--", "true"])
        .output()
        .expect("run headroom");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value 'zero' for '--max-processes <N>'"),
        "{stderr}"
    );
    assert!(stderr.contains("--help"), "{stderr}");
}
