//! Part `footprint`: the agent's own cost with 1, 100 and 500 simulated containers. For each
//! count a fresh release agent starts, then that many kubelet-style container cgroups, each
//! with one process that touched some memory and sleeps; once the agent exports every
//! container, its idle CPU is measured from `/proc/PID/stat`, its RSS from `/proc/PID/status`
//! and its BPF map memory from `/proc/PID/fdinfo`, and judged against the agent's targets.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    common::{
        containers_tracked, cpu_seconds, http_get, start_agent, status_bytes, workloads_dir,
        IDLE_CPU_TARGET, IDLE_SECONDS, MIB, RSS_TARGET_MIB,
    },
    verdict,
};
use crate::run;

/// A process that allocates and touches some memory, then sleeps until killed: the workload
/// of each simulated container.
const HOLD_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t bytes = (size_t)(argc > 1 ? atol(argv[1]) : 1024) << 10;
    char *memory = malloc(bytes);
    if (memory) memset(memory, 1, bytes);
    for (;;) pause();
}
"#;

/// Memory each simulated container's process touches.
const HOLD_KIB: u32 = 1024;
const FOOTPRINT_PORT: u16 = 19_557;

/// Simulated Kubernetes containers: cgroupfs-driver pod and container cgroups under a
/// directory of their own, in every mounted hierarchy a container would be in (cgroup2, and
/// the v1 memory controller on hybrid hosts), one sleeping process in each. Everything is
/// killed and removed on drop, error paths included.
struct Containers {
    /// Cgroup directories, parents before children.
    dirs: Vec<PathBuf>,
    holders: Vec<Child>,
    /// Text every one of their series' `pod` label starts with.
    pod_marker: String,
}

impl Containers {
    fn create(count: usize, hold: &Path) -> Result<Self> {
        let roots: Vec<&Path> = [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(Path::new)
        .filter(|root| root.join("cgroup.procs").exists())
        .collect();
        if roots.is_empty() {
            bail!("no cgroup hierarchy with cgroup.procs under /sys/fs/cgroup");
        }
        let pid = std::process::id();
        let top = format!("headroom-bench-{pid}");
        let mut containers = Self {
            dirs: Vec::new(),
            holders: Vec::new(),
            pod_marker: format!("pod=\"{pid:08x}-be0c-"),
        };
        let mkdir = |containers: &mut Self, relative: &str| -> Result<Vec<PathBuf>> {
            let mut made = Vec::new();
            for root in &roots {
                let dir = root.join(relative);
                std::fs::create_dir(&dir)
                    .with_context(|| format!("creating cgroup {}", dir.display()))?;
                containers.dirs.push(dir.clone());
                made.push(dir);
            }
            Ok(made)
        };
        for level in ["", "/kubepods", "/kubepods/burstable"] {
            mkdir(&mut containers, &format!("{top}{level}"))?;
        }
        for index in 0..count {
            let uid = format!("{pid:08x}-be0c-4000-8000-{index:012x}");
            let id = format!("{index:012x}{:052x}", u64::from(pid));
            let pod = format!("{top}/kubepods/burstable/pod{uid}");
            mkdir(&mut containers, &pod)?;
            let dirs = mkdir(&mut containers, &format!("{pod}/{id}"))?;
            let holder = spawn_in(&dirs, hold)?;
            containers.holders.push(holder);
        }
        Ok(containers)
    }

    /// How many of these containers have a resident-memory series in `metrics`.
    fn series_in(&self, metrics: &str) -> usize {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("headroom_container_memory_resident_bytes{")
                    && line.contains(&self.pod_marker)
            })
            .count()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for holder in &mut self.holders {
            let _ = holder.kill();
        }
        for holder in &mut self.holders {
            let _ = holder.wait();
        }
        // A cgroup is busy until the kernel has finished with its last task: retry briefly.
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("[bench] could not remove cgroup {}", dir.display());
            }
        }
    }
}

/// Starts `program` with its pid written into each cgroup's `cgroup.procs` between fork and
/// exec, so it is in the container before its first instruction (and its first page fault).
fn spawn_in(dirs: &[PathBuf], program: &Path) -> Result<Child> {
    use std::os::unix::{ffi::OsStrExt as _, process::CommandExt as _};
    let files = dirs
        .iter()
        .map(|dir| std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("cgroup path with a NUL byte")?;
    let mut command = Command::new(program);
    command
        .arg(HOLD_KIB.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure only calls open, write and close (async-signal
    // safe) on paths prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for file in &files {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = std::io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {} in its cgroup", program.display()))
}

/// BPF maps a process holds open, and the kernel's `memlock` for them (their memory), from
/// /proc/PID/fd and /proc/PID/fdinfo. A map open twice is counted once (by map_id).
fn bpf_map_memory(pid: u32) -> Result<(usize, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?;
    for fd in fds.flatten() {
        let is_map = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        if seen.insert(field("map_id:")) {
            bytes += field("memlock:").unwrap_or(0);
        }
    }
    Ok((seen.len(), bytes))
}

struct Footprint {
    containers: usize,
    tracked: u64,
    rss: u64,
    hwm: u64,
    idle_cpu: f64,
    maps: usize,
    map_bytes: u64,
}

/// One footprint run: a fresh agent, then `count` containers started under it.
fn footprint_with(count: usize, headroom: &Path, hold: &Path, log: &Path) -> Result<Footprint> {
    let (agent, pid) = start_agent(headroom, FOOTPRINT_PORT, log)?;
    // Started after the agent: their first page faults are what makes the agent see them.
    let containers = Containers::create(count, hold)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = http_get(FOOTPRINT_PORT, "/metrics").map_or(0, |m| containers.series_in(&m));
        if seen >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the agent exports {seen} of the {count} containers after 120 s (its log: {})",
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "[bench] footprint: the agent tracks all {count} containers; idle for {IDLE_SECONDS} s"
    );
    // A few ticks for the first per-container work (resolution, attribution) to pass.
    thread::sleep(Duration::from_secs(3));
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let idle_cpu = (cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64();
    let metrics = http_get(FOOTPRINT_PORT, "/metrics").unwrap_or_default();
    let still = containers.series_in(&metrics);
    if still < count {
        bail!("the agent lost containers while idle: {still} of {count}");
    }
    let (maps, map_bytes) = bpf_map_memory(pid)?;
    let result = Footprint {
        containers: count,
        tracked: containers_tracked(&metrics),
        rss: status_bytes(pid, "VmRSS")?,
        hwm: status_bytes(pid, "VmHWM")?,
        idle_cpu,
        maps,
        map_bytes,
    };
    drop(containers);
    drop(agent);
    Ok(result)
}

/// Part 2: the agent's own cost with 1, 100 and 500 simulated containers.
pub(super) fn footprint(headroom: &Path, target: &Path, machine: &str) -> Result<String> {
    let workloads = workloads_dir(target)?;
    let hold = build_hold(&workloads)?;
    let mut rows = Vec::new();
    for count in [1, 100, 500] {
        let log = workloads.join(format!("bench-agent-{count}.log"));
        let row = footprint_with(count, headroom, &hold, &log)?;
        eprintln!(
            "[bench] footprint, {count} containers: VmRSS {:.1} MiB, VmHWM {:.1} MiB, idle CPU {:.3} %, BPF maps {:.1} MiB",
            mib(row.rss),
            mib(row.hwm),
            row.idle_cpu * 100.0,
            mib(row.map_bytes)
        );
        rows.push(row);
    }
    let table = table(&rows);
    let verdicts = verdicts(&rows);
    Ok(format!(
        "## Agent footprint\n\n\
         On {machine}. For each count, a fresh release agent (`headroom agent --metadata none \
         --socket \"\"`, 1 s interval) is started, then that many simulated containers: cgroups \
         named like the kubelet's cgroupfs driver (`kubepods/burstable/pod<uid>/<container \
         id>`), in cgroup2 and in the v1 memory hierarchy, each with one process that touched {HOLD_KIB} KiB and \
         sleeps. Once `/metrics` has every container's series, the agent's CPU time \
         (`/proc/PID/stat` utime + stime) is measured over {IDLE_SECONDS} s of idling; RSS is \
         `/proc/PID/status` VmRSS and VmHWM after that; BPF map memory is the sum of `memlock` \
         in `/proc/PID/fdinfo` over the agent's map descriptors (the kernel's own accounting, \
         the 4 MiB event ring buffer included). *cgroups tracked (all)* is the agent's \
         `headroom_agent_containers_tracked`: the simulated containers plus the host's own \
         active cgroups.\n\n{table}\n{verdicts}\n\
         Reproduce: `sudo cargo xtask bench --only footprint`.\n"
    ))
}

/// Bytes in MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// Compiles [`HOLD_C`] into `workloads`; the program's path.
fn build_hold(workloads: &Path) -> Result<PathBuf> {
    let source = workloads.join("bench_hold.c");
    std::fs::write(&source, HOLD_C).context("writing the container workload")?;
    let hold = workloads.join("bench_hold");
    let mut gcc = Command::new("gcc");
    gcc.args(["-O1", "-o"]).arg(&hold).arg(&source);
    run(gcc)?;
    Ok(hold)
}

/// The section's table: one row per container count.
fn table(rows: &[Footprint]) -> String {
    let mut table = String::from(
        "| containers | cgroups tracked (all) | agent VmRSS | agent VmHWM | idle CPU (% of a core) | BPF map memory (memlock) | BPF maps |\n|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.3} % | {:.1} MiB | {} |",
            row.containers,
            row.tracked,
            mib(row.rss),
            mib(row.hwm),
            row.idle_cpu * 100.0,
            mib(row.map_bytes),
            row.maps
        );
    }
    table
}

/// The RSS target judged on the largest count, the idle CPU target on each.
fn verdicts(rows: &[Footprint]) -> String {
    let mut verdicts = String::new();
    if let Some(last) = rows.last() {
        let peak = mib(last.hwm);
        let _ = writeln!(
            verdicts,
            "- Agent RSS at most {RSS_TARGET_MIB:.0} MiB with {} containers tracked: {peak:.1} MiB \
             at its peak (VmHWM), {:.1} MiB at the end: **{}**.",
            last.containers,
            mib(last.rss),
            verdict(peak <= RSS_TARGET_MIB)
        );
    }
    for row in rows {
        let _ = writeln!(
            verdicts,
            "- Idle agent CPU at most {:.1} % of a core, {} container{}: {:.3} %: **{}**.",
            IDLE_CPU_TARGET * 100.0,
            row.containers,
            if row.containers == 1 { "" } else { "s" },
            row.idle_cpu * 100.0,
            verdict(row.idle_cpu <= IDLE_CPU_TARGET)
        );
    }
    verdicts
}
