//! Capture sessions through the running agent.
//!
//! `headroom capture --pod NS/POD` (or `--cgroup PATH`) run next to an agent, e.g. with
//! `kubectl exec ds/headroom -- headroom capture ...`, asks the agent over a Unix socket for a
//! high-resolution session instead of loading a second copy of the probes: the agent switches
//! stack sampling on for that one cgroup, samples its charge every 10 ms into 50 ms buckets,
//! and sends back the finished report.
//!
//! Protocol: one JSON object per line. The client sends a [`SessionRequest`], then optionally
//! `{"stop":true}` (Ctrl-C); closing the connection also stops the session. The agent answers
//! with [`ServerMessage`]s: `started`, `progress` (every 500 ms), then `finished` or `error`.
//!
//! Access: the socket is created mode 0600 in a directory forced to 0700 (whoever created it:
//! the DaemonSet's emptyDir is 0777), and each connection's peer credentials are checked:
//! only root and the agent's own user may start sessions. A shared sticky directory such as
//! /tmp, a symlink, or a directory of another user is refused. At most [`MAX_CONNECTIONS`]
//! connections are open at once, and one that sends no request line within
//! [`FIRST_LINE_TIMEOUT`] is closed.

use std::{
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, watch},
};

use crate::{
    accounting::analysis::AnalysisConfig,
    cgroups::ChargeReader,
    probes::{KernelView, ProbeEvent},
    recording::{
        ChargeBucket, ChargeFacts, KernelBucket, PeakPolicy, Recorder, TargetReportBuilder,
    },
    report::{
        Attribution, CaptureReport, DropCounts, Format, ReportMode, TargetKind, REPORT_SCHEMA,
    },
    stacks::{StackCollector, StackSettings, Unwinding},
};

/// Where the agent listens by default (an emptyDir in the DaemonSet).
pub const DEFAULT_SOCKET: &str = "/run/headroom/agent.sock";
/// Protocol version; a mismatch is refused with a message naming both.
pub const PROTOCOL_VERSION: u32 = 1;
/// Sessions at once: each keeps a timeline and up to `max_stacks` stacks.
pub const MAX_SESSIONS: usize = 4;
/// Most distinct stacks a session in the agent keeps: each holds up to 127 frames and their
/// symbols until the session ends, inside the agent's memory limit (8,192 deep stacks were
/// ~80 MB at session end). A standalone capture accepts more.
pub const MAX_SESSION_STACKS: usize = 16_384;
/// Longest session.
pub const MAX_SESSION: Duration = Duration::from_secs(3600);
/// Connections open at once (a session holds one; the rest are refused at [`MAX_SESSIONS`]).
pub const MAX_CONNECTIONS: usize = 16;
/// A connection must send its request line within this long.
pub const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The charge is sampled this often during a session ...
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
/// ... into buckets of this size.
const BUCKET_MS: u64 = 50;
/// Progress messages are sent this often.
const PROGRESS_MS: u64 = 500;

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("cannot prepare the socket directory {path}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the socket directory {path} {problem}; choose a directory of its own, e.g. /run/headroom, with --socket")]
    SharedDirectory { path: String, problem: &'static str },
    #[error("{path} exists and is not a socket; remove it or choose another path with --socket")]
    NotASocket { path: String },
    #[error("cannot listen on {path} (is another agent running?)")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no headroom agent answers on {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent failed")]
    Io(#[from] std::io::Error),
    #[error("the agent sent something that is not a session message: {0}")]
    Protocol(String),
    #[error("the agent refused the session: {0}")]
    Refused(String),
}

/// What to capture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionTarget {
    /// A cgroup path as /proc/PID/cgroup shows it.
    Cgroup { path: String },
    /// A pod the agent tracks (by its Kubernetes metadata), optionally one container.
    Pod {
        namespace: String,
        name: String,
        container: Option<String>,
    },
}

/// The client's request (first line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub version: u32,
    pub target: SessionTarget,
    pub duration_ms: u64,
    pub fault_sample_bytes: u64,
    pub reservation_threshold_bytes: u64,
    pub unwinding: Unwinding,
    pub max_stacks: usize,
    pub format: Format,
    /// Container name for YAML patches.
    pub patch_container: Option<String>,
    pub headroom: f64,
}

impl SessionRequest {
    fn validate(&self) -> Result<(), String> {
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} is not this agent's {PROTOCOL_VERSION}: run the same headroom version as the agent",
                self.version
            ));
        }
        if self.duration_ms == 0 || self.duration_ms > MAX_SESSION.as_millis() as u64 {
            return Err(format!(
                "a session through the agent needs --duration between 1ms and {} s",
                MAX_SESSION.as_secs()
            ));
        }
        if !(16..=MAX_SESSION_STACKS).contains(&self.max_stacks) {
            // Each kept stack holds up to 127 frames in the agent's memory until the end.
            return Err(format!(
                "--max-stacks {} is out of range: a session through the agent keeps 16 to {MAX_SESSION_STACKS} stacks (the agent shares its memory limit with the node's monitoring); lower it, or run `headroom capture --standalone` for up to {}",
                self.max_stacks,
                crate::stacks::MAX_STACKS_LIMIT
            ));
        }
        if !(64 << 10..=1 << 30).contains(&self.fault_sample_bytes)
            || self.reservation_threshold_bytes < 4096
            || !(0.0..=10.0).contains(&self.headroom)
        {
            return Err(
                "stack sampling settings out of range (see headroom capture --help)".into(),
            );
        }
        Ok(())
    }

    pub fn stack_settings(&self) -> StackSettings {
        StackSettings {
            fault_sample_bytes: self.fault_sample_bytes,
            reservation_threshold_bytes: self.reservation_threshold_bytes,
            unwinding: self.unwinding,
            max_stacks: self.max_stacks,
            ..StackSettings::default()
        }
    }
}

/// What the client sends after its request: `{"stop":true}` ends the session early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMessage {
    pub stop: bool,
}

impl ClientMessage {
    /// The line that stops a session.
    pub fn stop_line() -> Vec<u8> {
        let mut line = serde_json::to_vec(&Self { stop: true }).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// The agent's messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    Started {
        target: String,
        duration_ms: u64,
    },
    Progress {
        elapsed_ms: u64,
        peak_bytes: u64,
    },
    Finished {
        rendered: String,
        folded: Vec<String>,
    },
    Error {
        message: String,
    },
}

/// A session request handed from a connection to the agent's loop.
pub struct SessionStart {
    pub request: SessionRequest,
    pub replies: mpsc::Sender<ServerMessage>,
    pub stop: watch::Receiver<bool>,
}

/// Creates the socket: parent directory 0700, socket 0600, a stale socket replaced.
pub fn listen(path: &Path) -> Result<UnixListener, SessionError> {
    let display = path.display().to_string();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let directory_error = |source| SessionError::Directory {
            path: parent.display().to_string(),
            source,
        };
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(directory_error)?;
        }
        check_socket_directory(parent)?;
        // Forced whoever made it: a 0777 emptyDir would let anyone on the node replace the
        // socket with their own.
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
            .map_err(directory_error)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SessionError::Bind {
                    path: display,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another agent answers there; stop it or choose another --socket",
                    ),
                });
            }
            // A socket left by an agent that did not shut down cleanly.
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(SessionError::NotASocket { path: display }),
        Err(_) => {}
    }
    // SAFETY: umask(2) only changes this process's file creation mask; restored right after.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(|source| SessionError::Bind {
        path: display.clone(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        SessionError::Bind {
            path: display,
            source,
        }
    })?;
    Ok(listener)
}

/// Refuses a directory that is not the agent's own to lock down: a symlink, a shared sticky
/// directory (/tmp), or one owned by another user.
fn check_socket_directory(dir: &Path) -> Result<(), SessionError> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |problem| SessionError::SharedDirectory {
        path: dir.display().to_string(),
        problem,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|source| SessionError::Directory {
        path: dir.display().to_string(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(refuse("is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refuse("is not a directory"));
    }
    if meta.mode() & 0o1000 != 0 {
        return Err(refuse("is a shared sticky directory (like /tmp)"));
    }
    // SAFETY: geteuid(2) cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(refuse("belongs to another user"));
    }
    Ok(())
}

/// Accepts connections until the task is aborted; past [`MAX_CONNECTIONS`] a connection is
/// closed at once.
pub async fn serve(listener: UnixListener, sessions: mpsc::Sender<SessionStart>) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("refusing a session connection: {MAX_CONNECTIONS} are open");
            drop(stream);
            continue;
        };
        let sessions = sessions.clone();
        tokio::spawn(async move {
            handle_connection(stream, sessions).await;
            drop(permit);
        });
    }
}

async fn send(stream: &mut tokio::net::unix::OwnedWriteHalf, message: &ServerMessage) -> bool {
    let Ok(mut line) = serde_json::to_vec(message) else {
        return false;
    };
    line.push(b'\n');
    stream.write_all(&line).await.is_ok()
}

async fn handle_connection(stream: UnixStream, sessions: mpsc::Sender<SessionStart>) {
    let allowed = stream.peer_cred().is_ok_and(|peer| {
        // SAFETY: geteuid(2) cannot fail.
        let own = unsafe { libc::geteuid() };
        peer.uid() == 0 || peer.uid() == own
    });
    let (read, mut write) = stream.into_split();
    if !allowed {
        let message = "permission denied: only root and the agent's own user may start sessions";
        let _ = send(
            &mut write,
            &ServerMessage::Error {
                message: message.into(),
            },
        )
        .await;
        return;
    }
    let mut lines = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 * 4)).lines();
    let first = match tokio::time::timeout(FIRST_LINE_TIMEOUT, lines.next_line()).await {
        Ok(first) => first,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no request within {} s; send it as the first line",
                FIRST_LINE_TIMEOUT.as_secs()
            ),
        )),
    };
    let request = match first {
        Ok(Some(line)) if line.len() <= MAX_REQUEST_BYTES => {
            serde_json::from_str::<SessionRequest>(&line).map_err(|err| err.to_string())
        }
        Ok(Some(_)) => Err("request too long".to_owned()),
        Ok(None) => return,
        Err(err) => Err(err.to_string()),
    };
    let request = match request.and_then(|r| r.validate().map(|()| r)) {
        Ok(request) => request,
        Err(message) => {
            let _ = send(&mut write, &ServerMessage::Error { message }).await;
            return;
        }
    };
    let (replies, mut incoming) = mpsc::channel(64);
    let (stop_sender, stop) = watch::channel(false);
    let start = SessionStart {
        request,
        replies,
        stop,
    };
    if sessions.send(start).await.is_err() {
        let message = "the agent is shutting down".to_owned();
        let _ = send(&mut write, &ServerMessage::Error { message }).await;
        return;
    }
    let mut client_open = true;
    loop {
        tokio::select! {
            message = incoming.recv() => {
                let Some(message) = message else { return };
                let last = matches!(message, ServerMessage::Finished { .. } | ServerMessage::Error { .. });
                if !send(&mut write, &message).await {
                    let _ = stop_sender.send(true);
                }
                if last {
                    return;
                }
            }
            line = lines.next_line(), if client_open => {
                // `{"stop":true}` or a closed connection end the session early; the report
                // is still sent if the client is there to read it.
                match line {
                    Ok(Some(line)) => match serde_json::from_str::<ClientMessage>(&line) {
                        Ok(ClientMessage { stop: true }) => { let _ = stop_sender.send(true); }
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = %err, "ignoring a line that is not a session message"),
                    },
                    Ok(None) | Err(_) => {
                        client_open = false;
                        let _ = stop_sender.send(true);
                    }
                }
            }
        }
    }
}

/// A session running in the agent.
pub struct ActiveSession {
    pub target_id: u64,
    pub cgroup_path: String,
    pub kind: TargetKind,
    pub kubernetes: Option<crate::attribution::KubernetesMeta>,
    request: SessionRequest,
    replies: mpsc::Sender<ServerMessage>,
    stop: watch::Receiver<bool>,
    charge: Option<ChargeReader>,
    recorder: Recorder,
    stacks: StackCollector,
    started: Instant,
    ticks: u64,
    counters_at_start: profiler_common::MemoryCounters,
    drops_at_start: DropCounts,
}

/// Where a session runs and what it starts from.
pub struct SessionPlace {
    pub target_id: u64,
    pub cgroup_path: String,
    pub kind: TargetKind,
    pub kubernetes: Option<crate::attribution::KubernetesMeta>,
    pub charge: Option<ChargeReader>,
    pub started_ns: u64,
}

impl ActiveSession {
    pub fn new(start: SessionStart, place: SessionPlace, kernel: &dyn KernelView) -> Self {
        let settings = start.request.stack_settings();
        Self {
            target_id: place.target_id,
            cgroup_path: place.cgroup_path,
            kind: place.kind,
            kubernetes: place.kubernetes,
            request: start.request,
            replies: start.replies,
            stop: start.stop,
            charge: place.charge,
            recorder: Recorder::new(BUCKET_MS, 4096),
            stacks: StackCollector::new(settings, PathBuf::from("/"), place.started_ns),
            started: Instant::now(),
            ticks: 0,
            counters_at_start: kernel
                .target_counters(place.target_id)
                .ok()
                .flatten()
                .unwrap_or_default(),
            drops_at_start: kernel.drops().unwrap_or_default(),
        }
    }

    pub fn announce(&self) {
        let _ = self.replies.try_send(ServerMessage::Started {
            target: self.cgroup_path.clone(),
            duration_ms: self.request.duration_ms,
        });
    }

    pub fn record(&mut self, event: &ProbeEvent) {
        if let ProbeEvent::StackSample(sample) = event {
            if sample.target_id == self.target_id {
                self.stacks.record(sample);
            }
        }
    }

    /// One 10 ms step: sample the charge; every 50 ms close a bucket with the kernel's
    /// resident figures. Returns false when the session should end.
    pub fn step(&mut self, kernel: &dyn KernelView) -> bool {
        self.ticks += 1;
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        if let Some(charge) = &mut self.charge {
            // The cgroup is gone (the container stopped): the session ends with it.
            let Some(current) = charge.current() else {
                return false;
            };
            self.recorder.sample_charge(elapsed_ms, current);
        }
        if self
            .ticks
            .is_multiple_of(BUCKET_MS / SAMPLE_INTERVAL.as_millis() as u64)
        {
            self.close_bucket(kernel, elapsed_ms);
        }
        if self
            .ticks
            .is_multiple_of(PROGRESS_MS / SAMPLE_INTERVAL.as_millis() as u64)
        {
            let _ = self.replies.try_send(ServerMessage::Progress {
                elapsed_ms,
                peak_bytes: self.recorder.live_peak(),
            });
        }
        !*self.stop.borrow() && elapsed_ms < self.request.duration_ms && !self.replies.is_closed()
    }

    fn close_bucket(&mut self, kernel: &dyn KernelView, elapsed_ms: u64) {
        let counters = kernel
            .target_counters(self.target_id)
            .ok()
            .flatten()
            .unwrap_or_default();
        let bucket = KernelBucket::from_kernel(&counters, None, 0);
        let charge = self.charge.as_mut().and_then(ChargeBucket::read);
        self.recorder.close_bucket(elapsed_ms, bucket, charge);
    }

    /// Builds the report and sends it.
    pub fn finish(mut self, kernel: &dyn KernelView) {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        self.close_bucket(kernel, elapsed_ms);
        let replies = self.replies.clone();
        let format = self.request.format;
        let patch_container = self.request.patch_container.clone();
        let report = self.into_report(kernel);
        let message = match report.render(format, patch_container.as_deref()) {
            Ok(rendered) => ServerMessage::Finished {
                rendered,
                folded: report.folded_stacks,
            },
            Err(err) => ServerMessage::Error {
                message: format!("rendering the report failed: {err}"),
            },
        };
        // The connection task may be slow to drain progress; wait for room for the report.
        tokio::spawn(async move {
            let _ = replies.send(message).await;
        });
    }

    fn into_report(self, kernel: &dyn KernelView) -> CaptureReport {
        let now = kernel
            .target_counters(self.target_id)
            .ok()
            .flatten()
            .unwrap_or_default();
        let drops = kernel
            .drops()
            .unwrap_or_default()
            .since(&self.drops_at_start);
        let charge_facts = self
            .charge
            .as_ref()
            .map(|charge| ChargeFacts::read(charge, PeakPolicy::Watched));
        let attribution = self.kubernetes.as_ref().map(|_| Attribution::Kubernetes {
            names_known: true,
            reason: None,
        });
        // The agent does not trace mapping syscalls (they slow every syscall on the node), so
        // reserved memory by region is not part of agent sessions.
        let (target, stack_files) = TargetReportBuilder::new(self.kind, self.target_id)
            .watched(None, Some(self.cgroup_path.clone()), Vec::new())
            .identity(attribution, self.kubernetes)
            .counters_since(&now, &self.counters_at_start, &self.recorder)
            .timeline(
                &self.recorder,
                charge_facts.as_ref(),
                SAMPLE_INTERVAL.as_millis() as u64,
                &AnalysisConfig::default(),
            )
            .stacks(Some(self.stacks.finish()))
            .build();
        let mut report = CaptureReport {
            schema: REPORT_SCHEMA.to_owned(),
            mode: ReportMode::Target,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            sample_interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            targets: vec![target],
            drops,
            undecodable_events: 0,
            folded_stacks: stack_files.folded,
            // Sessions send folded stacks only; `--pprof` captures run standalone.
            stack_profile: None,
        };
        crate::sizing::recommend_report(&mut report, self.request.headroom);
        report
    }
}

/// The client side: connects, sends the request, shows progress, forwards Ctrl-C as a stop,
/// and returns the rendered report and the folded stacks.
pub struct SessionClient {
    stream: UnixStream,
}

impl SessionClient {
    /// Connects to an agent; `Err` when none answers (capture then runs standalone).
    pub async fn connect(path: &Path) -> Result<Self, SessionError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| SessionError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { stream })
    }

    /// Runs one session to the end. `on_progress` sees (elapsed, duration, peak).
    pub async fn run(
        self,
        request: &SessionRequest,
        mut on_progress: impl FnMut(u64, u64, u64),
    ) -> Result<(String, Vec<String>), SessionError> {
        use tokio::signal::unix::{signal, SignalKind};
        let (read, mut write) = self.stream.into_split();
        let mut line =
            serde_json::to_vec(request).map_err(|e| SessionError::Protocol(e.to_string()))?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut interrupts = signal(SignalKind::interrupt())?;
        let mut terminations = signal(SignalKind::terminate())?;
        let mut lines = BufReader::new(read).lines();
        let mut duration_ms = request.duration_ms;
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    let Some(line) = line? else {
                        return Err(SessionError::Protocol("the agent closed the connection without a report".into()));
                    };
                    match serde_json::from_str::<ServerMessage>(&line)
                        .map_err(|_| SessionError::Protocol(line.chars().take(200).collect()))?
                    {
                        ServerMessage::Started { target, duration_ms: d } => {
                            duration_ms = d;
                            // As a standalone capture says it: from here on the target is
                            // measured.
                            eprintln!(
                                "headroom: capturing cgroup {target} through the agent for {:.1} s \
                                 (SIGINT ends the capture with its report)",
                                d as f64 / 1000.0
                            );
                        }
                        ServerMessage::Progress { elapsed_ms, peak_bytes } => {
                            on_progress(elapsed_ms, duration_ms, peak_bytes);
                        }
                        ServerMessage::Finished { rendered, folded } => return Ok((rendered, folded)),
                        ServerMessage::Error { message } => return Err(SessionError::Refused(message)),
                    }
                }
                _ = interrupts.recv() => { write.write_all(&ClientMessage::stop_line()).await?; }
                _ = terminations.recv() => { write.write_all(&ClientMessage::stop_line()).await?; }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SessionRequest {
        SessionRequest {
            version: PROTOCOL_VERSION,
            target: SessionTarget::Pod {
                namespace: "shop".into(),
                name: "cart-0".into(),
                container: None,
            },
            duration_ms: 60_000,
            fault_sample_bytes: 512 << 10,
            reservation_threshold_bytes: 1 << 20,
            unwinding: Unwinding::FramePointers,
            max_stacks: 8192,
            format: Format::Json,
            patch_container: None,
            headroom: 0.25,
        }
    }

    #[test]
    fn requests_round_trip_and_are_validated() {
        let text = serde_json::to_string(&request()).expect("json");
        let back: SessionRequest = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, request());
        assert!(back.validate().is_ok());
        let mut bad = request();
        bad.max_stacks = MAX_SESSION_STACKS + 1;
        assert!(bad.validate().unwrap_err().contains("--standalone"));
        let mut bad = request();
        bad.duration_ms = 0;
        assert!(bad.validate().unwrap_err().contains("--duration"));
        // 1e6 stacks of 127 frames would hold ~1 GB in the agent until the session ends.
        let mut bad = request();
        bad.max_stacks = 1_000_000;
        assert!(bad.validate().unwrap_err().contains("16 to 16384"));
        let mut bad = request();
        bad.version = 99;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("same headroom version"));
        let mut text = serde_json::to_value(request()).expect("json");
        text["format"] = "xml".into();
        assert!(serde_json::from_value::<SessionRequest>(text).is_err());
        assert!(
            serde_json::from_str::<SessionRequest>(r#"{"version":1,"surprise":true}"#).is_err()
        );
    }

    #[tokio::test]
    async fn socket_is_private_and_stale_sockets_are_replaced() {
        let dir = std::env::temp_dir().join(format!("headroom-sock-{}", std::process::id()));
        let path = dir.join("sub/agent.sock");
        let listener = listen(&path).expect("listen");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.join("sub"))
            .expect("dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // A live agent keeps its socket.
        assert!(matches!(listen(&path), Err(SessionError::Bind { .. })));
        drop(listener);
        // The file stays after the listener is gone; a new agent replaces it.
        assert!(listen(&path).is_ok());
        // A directory someone else made loosely is locked down when the agent takes it.
        std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        drop(listen(&path).expect("listen again"));
        let dir_mode = std::fs::metadata(dir.join("sub"))
            .expect("dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // A shared sticky directory is refused, not locked down.
        let sticky = dir.join("sticky");
        std::fs::create_dir(&sticky).expect("dir");
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = listen(&sticky.join("agent.sock")).expect_err("sticky");
        assert!(err.to_string().contains("sticky"), "{err}");
        assert_eq!(
            std::fs::metadata(&sticky)
                .expect("dir")
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        let regular = dir.join("not-a-socket");
        std::fs::write(&regular, b"x").expect("file");
        assert!(matches!(
            listen(&regular),
            Err(SessionError::NotASocket { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
