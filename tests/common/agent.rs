//! One way to run `headroom agent` in a test: a builder for its flags, how it is wrapped
//! (setpriv, a capture) and where it runs (a test cgroup), and a handle that stops it by PID
//! however the test ends.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use super::{enter_cgroups, free_port, http_get, TestCgroup};

/// How long a stopped agent gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// How to start an agent. Defaults: a free loopback port, `--metadata none`,
/// `--interval 200ms`, sessions off (`--socket ""`), ready within 20 s.
pub struct AgentBuilder {
    port: Option<u16>,
    address: &'static str,
    interval: Option<String>,
    socket: Option<PathBuf>,
    args: Vec<OsString>,
    wrapper: Vec<OsString>,
    cgroup: Vec<PathBuf>,
    ready_seconds: u64,
}

impl AgentBuilder {
    /// Listens on this loopback port instead of a free one (an agent restarted on the port of
    /// the one before it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Listens on this IP (default 127.0.0.1), e.g. 0.0.0.0 to be reached on the host's own
    /// addresses as Prometheus reaches a DaemonSet's pod.
    pub fn address(mut self, address: &'static str) -> Self {
        self.address = address;
        self
    }

    /// `--interval`; `None` leaves the agent's default.
    pub fn interval(mut self, interval: Option<&str>) -> Self {
        self.interval = interval.map(str::to_owned);
        self
    }

    /// Serves capture sessions on this socket (`--socket PATH`), removed when the agent goes.
    pub fn socket(mut self, socket: &Path) -> Self {
        self.socket = Some(socket.to_path_buf());
        self
    }

    /// More agent flags, after the others.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Runs the agent with only these capabilities (lower case, e.g. `bpf`) in its bounding
    /// set: `setpriv --bounding-set -all,+bpf,... -- headroom agent ...`. setpriv execs, so
    /// the PID is the agent's.
    pub fn capabilities<S: AsRef<str>>(self, capabilities: &[S]) -> Self {
        let bounding = std::iter::once("-all".to_owned())
            .chain(capabilities.iter().map(|c| format!("+{}", c.as_ref())))
            .collect::<Vec<_>>()
            .join(",");
        self.wrapped_in(["setpriv", "--bounding-set", &bounding, "--"])
    }

    /// Runs `PREFIX... headroom agent ...`: the prefix ends with whatever separates its own
    /// arguments from the command it runs (`--`). The PID stopped is the prefix's.
    pub fn wrapped_in<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, prefix: I) -> Self {
        self.wrapper
            .extend(prefix.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Puts the agent in this cgroup (every hierarchy of it) before its first instruction.
    pub fn in_cgroup(mut self, cgroup: &TestCgroup) -> Self {
        self.cgroup = cgroup.procs_files();
        self
    }

    /// How long [`AgentBuilder::start`] waits for /readyz.
    pub fn ready_within(mut self, seconds: u64) -> Self {
        self.ready_seconds = seconds;
        self
    }

    /// Starts the agent and waits until /readyz answers 200.
    pub fn start(self) -> Agent {
        let seconds = self.ready_seconds;
        let mut agent = self.spawn();
        agent.wait_ready(seconds);
        agent
    }

    /// Starts the agent without waiting for it.
    pub fn spawn(self) -> Agent {
        let port = self.port.unwrap_or_else(free_port);
        let binary = env!("CARGO_BIN_EXE_headroom");
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.args(["agent", "--metadata", "none"]);
        if let Some(interval) = &self.interval {
            command.args(["--interval", interval]);
        }
        command
            .arg("--socket")
            .arg(self.socket.as_deref().unwrap_or(Path::new("")));
        command.args(["--listen", &format!("{}:{port}", self.address)]);
        command.args(&self.args);
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "agent-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|err| panic!("create {}: {err}", log.display()));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !self.cgroup.is_empty() {
            enter_cgroups(&mut command, self.cgroup);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
        Agent {
            child,
            port,
            socket: self.socket,
            log,
            exited: None,
        }
    }
}

/// A running `headroom agent` (or the wrapper running it). Dropping it stops it: SIGTERM, then
/// SIGKILL after a grace period, and removes its socket and its stderr log (printed first when
/// the test is failing).
pub struct Agent {
    child: Child,
    port: u16,
    socket: Option<PathBuf>,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Agent {
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            port: None,
            address: "127.0.0.1",
            interval: Some("200ms".to_owned()),
            socket: None,
            args: Vec::new(),
            wrapper: Vec::new(),
            cgroup: Vec::new(),
            ready_seconds: 20,
        }
    }

    /// An agent with the defaults, ready.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET on the agent's port: (status, body), None when nothing answered.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// The /metrics text, empty when it did not answer.
    pub fn metrics(&self) -> String {
        self.get("/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Waits until /readyz answers 200; fails at once, with the agent's stderr, if it exited.
    pub fn wait_ready(&mut self, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while self.get("/readyz").is_none_or(|(status, _)| status != 200) {
            assert!(
                self.is_running(),
                "the agent on port {} exited ({:?}) before it was ready; stderr:\n{}",
                self.port,
                self.exited,
                self.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "the agent on port {} was not ready after {seconds} s; stderr:\n{}",
                self.port,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            _ => true,
        }
    }

    /// Sends a signal to the agent's PID (unless it already exited).
    pub fn signal(&mut self, signal: Signal) {
        if self.is_running() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid_i32()), signal);
        }
    }

    /// Waits for the process to end by itself.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = self.child.wait().expect("wait for the agent");
        self.exited = Some(status);
        status
    }

    /// SIGTERM, then SIGKILL if it is still there after the grace period; its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_running() {
            eprintln!(
                "agent {} ignored SIGTERM for {GRACE:?}: SIGKILL",
                self.pid()
            );
            self.signal(Signal::SIGKILL);
        }
        self.wait()
    }

    fn pid_i32(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of the agent on port {} ---\n{}",
                self.port,
                self.stderr()
            );
        }
        let _ = std::fs::remove_file(&self.log);
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}
