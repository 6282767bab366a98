//! Helpers for the integration tests: privilege gate, workload builds, running the real
//! `headroom` binary (a capture, an agent), test cgroups, free ports, HTTP and metrics.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses its own subset of these helpers (and re-exports); expect() would fail in the others"
)]

pub mod agent;
pub mod fake_api;

pub use agent::Agent;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
};

/// Privileged tests run one at a time: several check machine-wide state (loaded BPF programs,
/// cgroup directories) that a concurrent test would disturb.
static PRIVILEGED: Mutex<()> = Mutex::new(());

/// Returns a guard to hold for the test, or None when the test must be skipped. In CI
/// (`CI` set) or under `cargo xtask test` (`HEADROOM_REQUIRE_PRIVILEGED` set) a test that
/// cannot run fails instead: a skipped privileged suite must never look green.
pub fn privileged(test: &str) -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let required = std::env::var_os("HEADROOM_REQUIRE_PRIVILEGED").is_some()
            || std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        assert!(
            !required,
            "{test}: privileged test cannot run: not root (it loads eBPF programs and creates \
             cgroups). Run `cargo xtask test` as root."
        );
        eprintln!(
            "SKIPPED {test}: needs root (set CI or HEADROOM_REQUIRE_PRIVILEGED to fail instead)"
        );
        return None;
    }
    Some(
        PRIVILEGED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

pub fn headroom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_headroom"))
}

static BUILDS: Mutex<()> = Mutex::new(());

/// A `kB` field of /proc/`pid`/status (`VmRSS`, `VmHWM`), in bytes; 0 once the process is gone.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Compiles tests/workloads/NAME.c (static when asked) and returns the binary's path.
pub fn workload(name: &str, static_link: bool) -> PathBuf {
    let flags: &[&str] = if static_link { &["-static"] } else { &[] };
    let suffix = if static_link { "-static" } else { "" };
    build_workload(name, flags, suffix)
}

/// Builds a workload the way distributions build release code: -O2, no frame pointers.
pub fn workload_without_frame_pointers(name: &str) -> PathBuf {
    build_workload(name, &["-O2", "-fomit-frame-pointer"], "-nofp")
}

fn build_workload(name: &str, extra_flags: &[&str], suffix: &str) -> PathBuf {
    let _serial = BUILDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workloads")
        .join(format!("{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&out_dir).expect("create workload dir");
    let binary = out_dir.join(format!("{name}{suffix}"));
    let mut gcc = Command::new("gcc");
    gcc.args([
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-pthread",
        "-Wall",
        "-Werror",
    ]);
    // Later flags win, so a variant's -O2/-fomit-frame-pointer override the defaults.
    gcc.args(extra_flags);
    let output = gcc
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc must be installed (cargo xtask setup installs it)");
    assert!(
        output.status.success(),
        "building {}: {}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// The result of one `headroom capture` run.
pub struct Captured {
    pub output: Output,
    pub report: serde_json::Value,
}

impl Captured {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// A number at a JSON pointer within the first target, e.g. `/threads/created`.
    pub fn target(&self, pointer: &str) -> u64 {
        self.number(&format!("/targets/0{pointer}"))
    }

    /// The first target's JSON object.
    pub fn target_json(&self) -> &serde_json::Value {
        &self.report["targets"][0]
    }

    /// A number at a JSON pointer of the report, e.g. `/drops/ringbuf_full`.
    pub fn number(&self, pointer: &str) -> u64 {
        self.report
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("report has no number at {pointer}: {}", self.report))
    }
}

/// Runs `headroom capture --format json --output FILE -- command...` and parses the report.
pub fn capture(command: &[&str]) -> Captured {
    capture_with(&[], command)
}

/// Like [`capture`], with extra capture flags before `--`.
pub fn capture_with(flags: &[&str], command: &[&str]) -> Captured {
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "report-{}-{}.json",
        std::process::id(),
        command
            .join("_")
            .replace(['/', ' '], "_")
            .chars()
            .take(40)
            .collect::<String>()
    ));
    let output = headroom()
        .arg("capture")
        .args(["--format", "json", "--output"])
        .arg(&report_path)
        .args(flags)
        .args(if command.is_empty() {
            &[][..]
        } else {
            &["--"][..]
        })
        .args(command)
        .stdin(Stdio::null())
        .output()
        .expect("run headroom");
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|err| {
        panic!(
            "no report at {} ({err}); headroom stderr:\n{}",
            report_path.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&report_path);
    Captured {
        output,
        report: serde_json::from_str(&text).expect("report is JSON"),
    }
}

/// Session cgroup directories left behind: their headroom (`headroom-capture-PID-N`) is gone.
/// A live headroom's session (another capture on this machine) is not a leftover.
pub fn leftover_session_cgroups() -> Vec<PathBuf> {
    session_cgroups()
        .into_iter()
        .filter(|dir| {
            let owner = dir
                .file_name()
                .and_then(|name| name.to_str()?.strip_prefix("headroom-capture-"))
                .and_then(|rest| rest.split('-').next().map(str::to_owned));
            owner
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
                .is_none_or(|comm| comm.trim() != "headroom")
        })
        .collect()
}

/// Every session cgroup directory on the machine (`headroom-capture-PID-N`), live or not.
pub fn session_cgroups() -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
    ]
    .iter()
    .flat_map(|root| walk_for_sessions(Path::new(root), 3))
    .collect()
}

fn walk_for_sessions(dir: &Path, depth: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("headroom-capture-")
        {
            found.push(path);
        } else if depth > 0 {
            found.extend(walk_for_sessions(&path, depth - 1));
        }
    }
    found
}

/// A cgroup made by the test at the same relative path in the unified and v1 memory
/// hierarchies; removed on drop.
pub struct TestCgroup {
    name: String,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let name = format!("headroom-test-{}-{tag}", std::process::id());
        let dirs: Vec<PathBuf> = [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(Path::new)
        .filter(|root| root.join("cgroup.procs").exists())
        .map(|root| root.join(&name))
        .collect();
        for dir in &dirs {
            std::fs::create_dir(dir)
                .unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        }
        Self { name, dirs }
    }

    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn memory_file(&self, file: &str) -> Option<u64> {
        self.dirs
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join(file)).ok())
            .and_then(|text| text.trim().parse().ok())
    }

    /// The `cgroup.procs` file of this cgroup in each hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Runs `program` inside this cgroup.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> std::process::Child {
        spawn_in_cgroups(self.procs_files(), program, args)
    }
}

impl TestCgroup {
    /// Removes the cgroup now (it must be empty); dropping does the same.
    pub fn remove(&mut self) {
        for dir in self.dirs.drain(..) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Starts `program` with its pid written into each of these `cgroup.procs` files between fork
/// and exec, so it is inside those cgroups before its first instruction.
pub fn spawn_in_cgroups(
    procs_files: Vec<PathBuf>,
    program: &Path,
    args: &[&str],
) -> std::process::Child {
    let mut command = Command::new(program);
    // stdin piped: a workload that waits for a line to go on (spike with BEFORE_MS -1) gets
    // it from the test; the others never read it.
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    enter_cgroups(&mut command, procs_files);
    command.spawn().expect("spawn workload in its cgroups")
}

/// Makes `command` write its pid into each of these `cgroup.procs` files between fork and exec.
pub fn enter_cgroups(command: &mut Command, procs_files: Vec<PathBuf>) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: between fork and exec the child only opens and writes small files; it takes no
    // lock another thread of the test could hold.
    unsafe {
        command.pre_exec(move || {
            for file in &procs_files {
                std::fs::write(file, "0")?;
            }
            Ok(())
        });
    }
}

/// A loopback TCP port nothing listens on now, and one this test process has not handed out
/// before (so two agents, or an agent and a Prometheus, never get the same one).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .expect("bind a loopback port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The values of the series of `metric` (Prometheus text) whose labels contain `label`, e.g.
/// `container="/x"`, in the order exported.
pub fn series(metrics: &str, metric: &str, label: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            labels.contains(label).then(|| value.trim().parse().ok())?
        })
        .collect()
}

/// A blocking HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls `check` until it holds, failing the test after `seconds`.
pub fn wait_until(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// How many loaded BPF programs have this name (from the kernel's program list).
pub fn loaded_programs_named(name: &str) -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|info| info.name_as_str() == Some(name))
        .count()
}

/// A child process killed and reaped when the guard goes, so a failed assertion leaves nothing
/// running (and no inherited pipe open).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `kernel.perf_event_paranoid` at the documented fix for the deployed capabilities.
/// Debian's and Ubuntu's kernels ship it above 2, where attaching a tracepoint needs
/// CAP_SYS_ADMIN (the DaemonSet grants BPF and PERFMON): there, a test of the deployed
/// capabilities first checks that headroom refuses with preflight's message naming the sysctl,
/// then applies the fix the message gives (2, the upstream default) for the test's duration.
/// The level found is restored on drop. Privileged tests run one at a time, so no other test
/// sees the change.
pub struct PerfParanoidAtTwo {
    restore: Option<String>,
}

const PERF_PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

impl PerfParanoidAtTwo {
    /// `refused` runs headroom with the deployed capabilities and returns its stderr; it is
    /// called only when the level is above 2.
    pub fn after_checking_the_refusal(refused: impl FnOnce() -> String) -> Self {
        let found = std::fs::read_to_string(PERF_PARANOID).expect(PERF_PARANOID);
        let level: i32 = found.trim().parse().expect("a number");
        if level <= 2 {
            return Self { restore: None };
        }
        let stderr = refused();
        assert!(
            stderr.contains("perf_event_paranoid is") && stderr.contains("=2"),
            "at perf_event_paranoid {level}, headroom with the deployed capabilities must \
             refuse with the sysctl named and its fix; stderr:\n{stderr}"
        );
        std::fs::write(PERF_PARANOID, "2").expect("set perf_event_paranoid");
        Self {
            restore: Some(found),
        }
    }
}

impl Drop for PerfParanoidAtTwo {
    fn drop(&mut self) {
        if let Some(level) = &self.restore {
            let _ = std::fs::write(PERF_PARANOID, level.trim());
        }
    }
}

/// A `headroom capture` running in the background, its stderr read to the end by a thread, so
/// a test can wait for the line that says the target is tracked ("headroom: capturing …")
/// instead of guessing how long loading the probes takes on this machine.
pub struct BackgroundCapture {
    pub child: std::process::Child,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    ready: std::sync::mpsc::Receiver<()>,
}

impl BackgroundCapture {
    /// Spawns `command` (a `headroom capture`) with stderr piped.
    pub fn spawn(command: &mut Command) -> Self {
        use std::io::Read as _;
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn headroom");
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut ready_tx = Some(ready_tx);
            while let Ok(read) = pipe.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                seen.extend_from_slice(&chunk[..read]);
                if ready_tx.is_some()
                    && String::from_utf8_lossy(&seen).contains("headroom: capturing ")
                {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            seen
        });
        Self {
            child,
            stderr,
            ready,
        }
    }

    /// Waits until headroom says it is capturing; panics with its stderr if it never does.
    pub fn wait_ready(&mut self, seconds: u64) {
        if self
            .ready
            .recv_timeout(std::time::Duration::from_secs(seconds))
            .is_ok()
        {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("headroom never said it was capturing within {seconds} s");
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Ends the capture as Ctrl-C does (it still writes its report): for a capture timed by
    /// its workload rather than by a `--duration` a slow machine could overrun.
    pub fn interrupt(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT headroom");
    }

    /// Waits for headroom to end; its exit status and stderr (stdout is not captured).
    pub fn wait_with_output(mut self) -> Output {
        let status = self.child.wait().expect("wait for headroom");
        let stderr = self.stderr.join().unwrap_or_default();
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }
}

/// The capabilities deploy/headroom.yaml grants the agent's container (lower case, e.g. `bpf`).
pub fn deployed_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/headroom.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/headroom.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|document| {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(document).ok()?;
            (value["kind"] == "DaemonSet").then_some(value)
        })
        .flat_map(|daemonset| {
            daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                ["capabilities"]["add"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.as_str().map(str::to_lowercase))
        .collect()
}

/// The capabilities deploy/overlays/ptrace adds to the DaemonSet (its JSON patch, lower case).
pub fn overlay_capabilities() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/overlays/ptrace/kustomization.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/overlays/ptrace/kustomization.yaml");
    let overlay: serde_json::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let patch = overlay["patches"][0]["patch"].as_str().unwrap_or_default();
    let operations: Vec<serde_json::Value> = serde_yaml_ng::from_str(patch).expect("patch");
    operations
        .iter()
        .filter_map(|op| op["value"].as_str().map(str::to_lowercase))
        .collect()
}
