//! What several parts share: processes run beside the workloads and stopped on drop, a fresh
//! release agent on loopback, its HTTP endpoints, and a process's CPU time and memory read
//! from `/proc`; the agent's footprint targets, which `footprint` and `stressors` both judge.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Idle interval over which the agent's CPU is measured (its default tick is 1 s).
pub(super) const IDLE_SECONDS: u64 = 30;
/// Target: agent RSS with 500 containers, and idle CPU, as a fraction of a core.
pub(super) const RSS_TARGET_MIB: f64 = 40.0;
pub(super) const IDLE_CPU_TARGET: f64 = 0.005;

pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// Something running beside the workload; stopped (SIGTERM, then SIGKILL) on drop.
pub(super) struct Beside(pub(super) Option<Child>);

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `target/workloads`, created if missing: the parts' programs and agent logs.
pub(super) fn workloads_dir(target: &Path) -> Result<PathBuf> {
    let workloads = target.join("workloads");
    std::fs::create_dir_all(&workloads)
        .with_context(|| format!("creating {}", workloads.display()))?;
    Ok(workloads)
}

pub(super) fn http_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// A blocking HTTP GET on loopback; the body of a 200 answer.
pub(super) fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// A fresh release agent (`--metadata none`, capture sessions off so that it never touches the
/// socket of an agent already running on the node) on loopback `port`, ready (`/readyz`) when
/// this returns; its pid. Its stderr goes to `log`, which is kept: a failure says where to read
/// why. Stopped on drop of the [`Beside`].
pub(super) fn start_agent(headroom: &Path, port: u16, log: &Path) -> Result<(Beside, u32)> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(headroom)
        .args(["agent", "--metadata", "none", "--socket", ""])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .context("starting the headroom agent")?;
    let pid = child.id();
    let mut agent = Beside(Some(child));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_ready(port) {
        let exited = agent
            .0
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten());
        if let Some(status) = exited {
            bail!(
                "the agent exited with {status} (its log: {})",
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not become ready (its log: {})",
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok((agent, pid))
}

/// The agent's `headroom_agent_containers_tracked` in a `/metrics` page (0 if missing).
pub(super) fn containers_tracked(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("headroom_agent_containers_tracked "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// User plus system CPU time of a process, all its threads (dead ones included), in seconds.
pub(super) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start with field 3, state.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> Result<f64> {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .context("malformed /proc/PID/stat")
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the state (field 3).
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// A `/proc/PID/status` size line (`VmRSS:     1234 kB`), in bytes.
pub(super) fn status_bytes(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("/proc/{pid}/status has no {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tracked_containers() {
        let page = "\
# TYPE headroom_agent_containers_tracked gauge
headroom_agent_containers_tracked 503
";
        assert_eq!(containers_tracked(page), 503);
        assert_eq!(containers_tracked(""), 0);
    }
}
