//! Capture sessions: run a command in a cgroup of its own with the probes attached, pass its
//! terminal through, and report what it did to memory.
//!
//! Cleanup is structural: the cgroup and the probes are owned values whose `Drop` removes and
//! detaches them, and SIGINT/SIGTERM are caught (and forwarded to the command) so that the
//! session always reaches the end of this function.

use std::{
    ffi::{CString, OsStr},
    io,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    accounting::{ActivitySummary, ProcessTable},
    cgroups::{CgroupError, SessionCgroup},
    probes::{EventStream, ProbeConfig, ProbeError, ProbeEvent, Probes},
    report::{CaptureReport, CgroupTarget, ChargedMemory, ExitSummary, REPORT_SCHEMA},
};

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("no command given: use `headroom capture -- COMMAND [ARGS...]`")]
    EmptyCommand,
    #[error("command not found: `{0}` (not in PATH; give a path such as ./{0})")]
    CommandNotFound(String),
    #[error("`{0}` is not an executable file (check the path and its x permission)")]
    NotExecutable(PathBuf),
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("could not start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for the command failed")]
    Wait(#[source] io::Error),
    #[error("installing the SIGINT/SIGTERM handler failed")]
    Signals(#[source] io::Error),
}

/// What to capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Most process records kept in the report; the rest are counted, not listed.
    pub max_processes: usize,
}

/// How long to wait for processes the command left behind to die after being killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// Resolves a command name the way a shell does: a name with a slash is a path, anything else
/// is looked up in PATH.
pub fn resolve_command(name: &str) -> Result<PathBuf, CaptureError> {
    let is_executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !path.exists() {
            return Err(CaptureError::CommandNotFound(name.to_owned()));
        }
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(CaptureError::NotExecutable(path))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| CaptureError::CommandNotFound(name.to_owned()))
}

/// Runs one capture session to the end and returns its report.
pub async fn run(options: &CaptureOptions) -> Result<CaptureReport, CaptureError> {
    let (program, args) = options
        .command
        .split_first()
        .ok_or(CaptureError::EmptyCommand)?;
    let program_path = resolve_command(program)?;

    let mut probes = Probes::load(&ProbeConfig::default())?;
    let session = SessionCgroup::create(Path::new("/"))?;
    probes.track_cgroup(session.id)?;
    let mut events = probes
        .take_event_stream()?
        .ok_or_else(|| ProbeError::MissingMap(profiler_common::map::EVENTS))?;
    let mut table = ProcessTable::new(session.id, options.max_processes);
    let mut undecodable = 0u64;

    let mut interrupts = signal(SignalKind::interrupt()).map_err(CaptureError::Signals)?;
    let mut terminations = signal(SignalKind::terminate()).map_err(CaptureError::Signals)?;

    let started = Instant::now();
    let mut child = spawn_in_cgroup(&program_path, program, args, &session)?;
    let child_pid = child.id().unwrap_or(0);
    tracing::debug!(pid = child_pid, cgroup = %session.unified_dir.display(), "command started");

    let wait = child.wait();
    tokio::pin!(wait);
    let mut signals_seen = 0u32;
    let status = loop {
        tokio::select! {
            status = &mut wait => break status.map_err(CaptureError::Wait)?,
            batch = events.next_batch() => {
                record_events(batch?, &mut table, &mut undecodable);
            }
            _ = interrupts.recv() => {
                signals_seen += 1;
                stop_command(child_pid, nix::sys::signal::Signal::SIGINT, signals_seen, &session);
            }
            _ = terminations.recv() => {
                signals_seen += 1;
                stop_command(child_pid, nix::sys::signal::Signal::SIGTERM, signals_seen, &session);
            }
        }
    };
    let duration = started.elapsed();

    // The command is done; anything it left running is ended so the cgroup can go.
    finish_leftovers(&session).await;
    collect_remaining(&mut events, &mut table, &mut undecodable);

    let counters = probes.cgroup_counters(session.id)?.unwrap_or_default();
    let (processes, processes_not_listed) = table.finish(&probes.live_processes()?);
    let charged = session
        .charged_peak()
        .map(|(peak_bytes, source)| ChargedMemory { peak_bytes, source });
    let report = CaptureReport {
        schema: REPORT_SCHEMA,
        command: options.command.clone(),
        pid: child_pid,
        cgroup: CgroupTarget {
            unified_path: session.unified_dir.clone(),
            id: session.id,
            memory_v1_path: session.memory_v1_dir.clone(),
        },
        duration_seconds: duration.as_secs_f64(),
        exit: ExitSummary {
            code: status.code(),
            signal: status.signal(),
        },
        // The session cgroup starts empty, so the live-task baseline is zero.
        totals: ActivitySummary::from_counters(&counters, Some(0)),
        charged,
        processes,
        processes_not_listed,
        drops: probes.drops()?,
        undecodable_events: undecodable,
    };
    session.remove()?;
    drop(probes);
    Ok(report)
}

fn record_events(
    batch: Vec<Result<ProbeEvent, crate::probes::DecodeError>>,
    table: &mut ProcessTable,
    undecodable: &mut u64,
) {
    for event in batch {
        match event {
            Ok(event) => table.apply(&event),
            Err(err) => {
                *undecodable += 1;
                tracing::warn!(error = %err, "undecodable ring buffer record");
            }
        }
    }
}

fn collect_remaining(events: &mut EventStream, table: &mut ProcessTable, undecodable: &mut u64) {
    record_events(events.drain_now(), table, undecodable);
}

/// First signal: pass it on to the command and let it end its own way. Second: kill everything
/// in the session.
fn stop_command(
    child_pid: u32,
    signal: nix::sys::signal::Signal,
    signals_seen: u32,
    session: &SessionCgroup,
) {
    if signals_seen >= 2 {
        eprintln!("headroom: second signal, killing every process of the session");
        session.kill_all();
        return;
    }
    eprintln!("headroom: {signal} received, passing it on to the command (again to kill it)");
    if let Ok(pid) = i32::try_from(child_pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

async fn finish_leftovers(session: &SessionCgroup) {
    if session.pids().is_empty() {
        return;
    }
    tracing::info!(
        count = session.pids().len(),
        "killing processes the command left in its cgroup"
    );
    session.kill_all();
    let deadline = Instant::now() + LEFTOVER_GRACE;
    while !session.pids().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the command so that it is inside the session cgroup before its first instruction:
/// the forked child writes "0" (itself) into each `cgroup.procs` between fork and exec.
fn spawn_in_cgroup(
    program_path: &Path,
    program: &str,
    args: &[String],
    session: &SessionCgroup,
) -> Result<tokio::process::Child, CaptureError> {
    let spawn_error = |source| CaptureError::Spawn {
        command: program.to_owned(),
        source,
    };
    let procs_files: Vec<CString> = session
        .procs_files()
        .iter()
        .map(|path| CString::new(path.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|err| spawn_error(io::Error::new(io::ErrorKind::InvalidInput, err)))?;

    let mut command = tokio::process::Command::new(program_path);
    command.arg0(OsStr::new(program)).args(args);
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe open(2), write(2) and close(2) on buffers allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            for path in &procs_files {
                join_cgroup(path)?;
            }
            Ok(())
        });
    }
    command.spawn().map_err(spawn_error)
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs_file`.
fn join_cgroup(procs_file: &CString) -> io::Result<()> {
    // SAFETY: procs_file is a valid NUL-terminated path; the fd is closed on every path.
    unsafe {
        let fd = libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let result = if written == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        libc::close(fd);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_commands_like_a_shell() {
        assert!(resolve_command("sh").is_ok());
        assert!(matches!(
            resolve_command("definitely-not-a-command-9f3a"),
            Err(CaptureError::CommandNotFound(_))
        ));
        assert!(matches!(
            resolve_command("./no/such/file"),
            Err(CaptureError::CommandNotFound(_))
        ));
        let plain_file =
            std::env::temp_dir().join(format!("headroom-plain-{}", std::process::id()));
        std::fs::write(&plain_file, "not a program").expect("temp file");
        let resolved = resolve_command(plain_file.to_str().expect("utf-8"));
        std::fs::remove_file(&plain_file).expect("cleanup");
        assert!(matches!(resolved, Err(CaptureError::NotExecutable(_))));
    }

    #[test]
    fn not_found_message_says_so() {
        let message = CaptureError::CommandNotFound("nope".into()).to_string();
        assert!(
            message.starts_with("command not found: `nope`"),
            "{message}"
        );
    }
}
