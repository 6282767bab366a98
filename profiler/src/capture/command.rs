//! Commands: resolved like a shell resolves them, started inside their session cgroup before
//! their first instruction, signalled and cleaned up.

use std::{
    ffi::{CString, OsStr},
    io,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use super::CaptureError;
use crate::cgroups::SessionCgroup;

/// How long to wait for processes the command left behind to die after being killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// A command checked before anything is loaded.
pub(super) struct Resolved {
    pub path: PathBuf,
    pub program: String,
    pub args: Vec<String>,
}

impl Resolved {
    pub fn new(command: &[String]) -> Result<Self, CaptureError> {
        let (program, args) = command.split_first().ok_or(CaptureError::EmptyCommand)?;
        Ok(Self {
            path: resolve_command(program)?,
            program: program.clone(),
            args: args.to_vec(),
        })
    }
}

/// SIGINT and SIGTERM, counted.
pub(super) struct Signals {
    interrupts: tokio::signal::unix::Signal,
    terminations: tokio::signal::unix::Signal,
    pub seen: u32,
}

impl Signals {
    pub fn install() -> Result<Self, CaptureError> {
        Ok(Self {
            interrupts: signal(SignalKind::interrupt()).map_err(CaptureError::Signals)?,
            terminations: signal(SignalKind::terminate()).map_err(CaptureError::Signals)?,
            seen: 0,
        })
    }

    /// The next SIGINT or SIGTERM.
    pub async fn next(&mut self) -> Signal {
        let signal = tokio::select! {
            _ = self.interrupts.recv() => Signal::SIGINT,
            _ = self.terminations.recv() => Signal::SIGTERM,
        };
        self.seen += 1;
        signal
    }
}

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

/// A signal arrived. For a command: first pass it on and let the command end its own way
/// (true: keep capturing); second, kill every process of the session. For other targets: end
/// the capture (false), leaving the target alone.
pub(super) fn pass_on(
    child_pid: Option<u32>,
    signal: Signal,
    signals_seen: u32,
    session: Option<&SessionCgroup>,
) -> bool {
    let (Some(child_pid), Some(session)) = (child_pid, session) else {
        eprintln!("headroom: {signal} received, ending the capture");
        return false;
    };
    if signals_seen >= 2 {
        eprintln!("headroom: second signal, killing every process of the session");
        session.kill_all();
        return true;
    }
    eprintln!("headroom: {signal} received, passing it on to the command (again to kill it)");
    if let Ok(pid) = i32::try_from(child_pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    true
}

pub(super) async fn finish_leftovers(session: &SessionCgroup) {
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
pub(super) fn spawn_in_cgroup(
    resolved: &Resolved,
    session: &SessionCgroup,
) -> Result<tokio::process::Child, CaptureError> {
    let spawn_error = |source| CaptureError::Spawn {
        command: resolved.program.clone(),
        source,
    };
    let procs_files: Vec<CString> = session
        .procs_files()
        .iter()
        .map(|path| CString::new(path.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|err| spawn_error(io::Error::new(io::ErrorKind::InvalidInput, err)))?;

    let mut command = tokio::process::Command::new(&resolved.path);
    command
        .arg0(OsStr::new(&resolved.program))
        .args(&resolved.args);
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
