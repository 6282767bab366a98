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
//! Access: the socket is created mode 0600 in a 0700 directory, and each connection's peer
//! credentials are checked: only root and the agent's own user may start sessions.

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
    accounting::{
        analysis::{analyse, AnalysisConfig},
        timeline::{BucketPeaks, Timeline},
        ActivitySummary,
    },
    cgroups::ChargeReader,
    probes::{DropCounts, ProbeEvent},
    report::{
        self, CaptureReport, ChargedMemory, ReservedMemory, ResidentMemory, ResidentPhases,
        SourceFigures, TargetReport, Threads, TimelineExcerpt, REPORT_SCHEMA,
    },
    stacks::{StackCollector, StackSettings, Unwinding},
};

/// Where the agent listens by default (an emptyDir in the DaemonSet).
pub const DEFAULT_SOCKET: &str = "/run/headroom/agent.sock";
/// Protocol version; a mismatch is refused with a message naming both.
pub const PROTOCOL_VERSION: u32 = 1;
/// Sessions at once: each keeps a timeline and up to `max_stacks` stacks.
pub const MAX_SESSIONS: usize = 4;
/// Longest session.
pub const MAX_SESSION: Duration = Duration::from_secs(3600);
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
    /// "table", "json", "markdown" or "yaml".
    pub format: String,
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
        if !["table", "json", "markdown", "yaml"].contains(&self.format.as_str()) {
            return Err(format!("unknown format {:?}", self.format));
        }
        if !(64 << 10..=1 << 30).contains(&self.fault_sample_bytes)
            || self.reservation_threshold_bytes < 4096
            || !(16..=1_000_000).contains(&self.max_stacks)
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
        }
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
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(directory_error)?;
        }
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

/// Accepts connections until the task is aborted.
pub async fn serve(listener: UnixListener, sessions: mpsc::Sender<SessionStart>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(handle_connection(stream, sessions.clone()));
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
    let request = match lines.next_line().await {
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
                    Ok(Some(line)) if line.contains("stop") => { let _ = stop_sender.send(true); }
                    Ok(Some(_)) => {}
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
    pub kind: &'static str,
    pub kubernetes: Option<crate::attribution::KubernetesMeta>,
    request: SessionRequest,
    replies: mpsc::Sender<ServerMessage>,
    stop: watch::Receiver<bool>,
    charge: Option<ChargeReader>,
    timeline: Timeline,
    stacks: StackCollector,
    started: Instant,
    sampled_charge_peak: u64,
    resident_peak: u64,
    anon_peak: u64,
    ticks: u64,
    counters_at_start: profiler_common::MemoryCounters,
    drops_at_start: DropCounts,
}

/// What the session loop needs from the agent at each step.
pub struct KernelView {
    pub counters: profiler_common::MemoryCounters,
    pub drops: DropCounts,
}

impl ActiveSession {
    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor for the agent's single caller"
    )]
    pub fn new(
        start: SessionStart,
        target_id: u64,
        cgroup_path: String,
        kind: &'static str,
        kubernetes: Option<crate::attribution::KubernetesMeta>,
        charge: Option<ChargeReader>,
        started_ns: u64,
        at_start: KernelView,
    ) -> Self {
        let settings = start.request.stack_settings();
        Self {
            target_id,
            cgroup_path,
            kind,
            kubernetes,
            request: start.request,
            replies: start.replies,
            stop: start.stop,
            charge,
            timeline: Timeline::new(BUCKET_MS, 4096),
            stacks: StackCollector::new(settings, PathBuf::from("/"), started_ns),
            started: Instant::now(),
            sampled_charge_peak: 0,
            resident_peak: 0,
            anon_peak: 0,
            ticks: 0,
            counters_at_start: at_start.counters,
            drops_at_start: at_start.drops,
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
    pub fn step(&mut self, view: &KernelView) -> bool {
        self.ticks += 1;
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let mut peaks = BucketPeaks::default();
        if let Some(charge) = &self.charge {
            match charge.current() {
                Some(current) => {
                    self.sampled_charge_peak = self.sampled_charge_peak.max(current);
                    peaks.charged = current;
                    peaks.working_set = current.saturating_sub(charge.inactive_file().unwrap_or(0));
                }
                // The cgroup is gone (the container stopped): the session ends with it.
                None => return false,
            }
        }
        let resident = view.counters.resident_bytes().max(0) as u64;
        let anon = view.counters.rss_bytes[profiler_common::rss_member::ANON].max(0) as u64;
        self.resident_peak = self.resident_peak.max(resident);
        self.anon_peak = self.anon_peak.max(anon);
        peaks.resident = resident;
        peaks.anon = anon;
        self.timeline.record(elapsed_ms, &peaks);
        if self
            .ticks
            .is_multiple_of(PROGRESS_MS / SAMPLE_INTERVAL.as_millis() as u64)
        {
            let _ = self.replies.try_send(ServerMessage::Progress {
                elapsed_ms,
                peak_bytes: self.sampled_charge_peak.max(self.resident_peak),
            });
        }
        !*self.stop.borrow() && elapsed_ms < self.request.duration_ms && !self.replies.is_closed()
    }

    /// Builds the report and sends it.
    pub fn finish(self, view: &KernelView) {
        let replies = self.replies.clone();
        let message = match self.render(view) {
            Ok((rendered, folded)) => ServerMessage::Finished { rendered, folded },
            Err(err) => ServerMessage::Error {
                message: format!("rendering the report failed: {err}"),
            },
        };
        // The connection task may be slow to drain progress; wait for room for the report.
        tokio::spawn(async move {
            let _ = replies.send(message).await;
        });
    }

    fn render(self, view: &KernelView) -> Result<(String, Vec<String>), serde_json::Error> {
        let format = self.request.format.clone();
        let patch_container = self.request.patch_container.clone();
        let report = self.into_report(view);
        let rendered = match format.as_str() {
            "json" => serde_json::to_string_pretty(&report)? + "\n",
            "markdown" => report.render_markdown(),
            "yaml" => report.render_yaml(patch_container.as_deref()),
            _ => report.render_table(),
        };
        Ok((rendered, report.folded_stacks))
    }

    fn into_report(self, view: &KernelView) -> CaptureReport {
        let duration = self.started.elapsed();
        let resolution = self.timeline.resolution_ms();
        let buckets = self.timeline.buckets().to_vec();
        let analysis = AnalysisConfig::default();
        let charged: Vec<u64> = buckets.iter().map(|b| b.charged).collect();
        let resident: Vec<u64> = buckets.iter().map(|b| b.resident).collect();
        let charged_phases = self
            .charge
            .as_ref()
            .map(|_| analyse(&charged, resolution, &analysis));
        let resident_phases = analyse(&resident, resolution, &analysis);
        let profile = self.stacks.finish();
        let mut spikes = charged_phases
            .as_ref()
            .map_or_else(|| resident_phases.spikes.clone(), |p| p.spikes.clone());
        profile.name_spike_sources(&mut spikes, resolution);
        let counters = view.counters;
        let sources = report::memory_sources(
            &SourceFigures {
                stack_resident_bytes: 0,
                stack_reserved_bytes: 0,
                arena_reserved_bytes: 0,
                file_resident_peak_bytes: counters.file_peak_bytes,
                file_reserved_bytes: 0,
                shmem_resident_bytes: counters.rss_bytes[profiler_common::rss_member::SHMEM].max(0)
                    as u64,
                shared_reserved_bytes: 0,
            },
            Some(&profile),
        );
        let memory = self.charge.as_ref().zip(charged_phases.as_ref()).map(|(charge, phases)| {
            ChargedMemory {
                peak_bytes: self.sampled_charge_peak,
                peak_source: format!(
                    "samples every {} ms by the agent (the cgroup's lifetime high-water mark predates the session)",
                    SAMPLE_INTERVAL.as_millis()
                ),
                startup_peak_bytes: phases.startup_peak_bytes,
                startup_seconds: phases.startup_seconds,
                steady_bytes: phases.steady_bytes,
                steady_p95_bytes: phases.steady_p95_bytes,
                working_set_peak_bytes: buckets.iter().map(|b| b.working_set).max().unwrap_or(0),
                limit_bytes: charge.limit(),
                sampled_peak_bytes: self.sampled_charge_peak,
            }
        });
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        let drops = view.drops.since(&self.drops_at_start);
        let mut report = CaptureReport {
            schema: REPORT_SCHEMA,
            mode: "target",
            duration_seconds: duration.as_secs_f64(),
            sample_interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            targets: vec![TargetReport {
                kind: self.kind,
                command: None,
                cgroup: Some(self.cgroup_path.clone()),
                target_id: self.target_id,
                pids: Vec::new(),
                exit: None,
                memory,
                resident: ResidentMemory {
                    peak_bytes: self.resident_peak,
                    anon_peak_bytes: self.anon_peak,
                    file_peak_bytes: counters.file_peak_bytes,
                    current_bytes: counters.resident_bytes().max(0) as u64,
                },
                // The agent does not trace mapping syscalls (they slow every syscall on the
                // node), so reserved memory by region is not part of agent sessions.
                reserved: ReservedMemory::default(),
                threads: Threads {
                    created: delta(
                        counters.threads_created,
                        self.counters_at_start.threads_created,
                    ),
                    peak: None,
                    stack_reserved_bytes: 0,
                    stack_resident_bytes: 0,
                },
                resident_phases: ResidentPhases {
                    startup_seconds: resident_phases.startup_seconds,
                    startup_peak_bytes: resident_phases.startup_peak_bytes,
                    steady_bytes: resident_phases.steady_bytes,
                    steady_p95_bytes: resident_phases.steady_p95_bytes,
                },
                spikes,
                sources,
                stacks: Some(profile.summary.clone()),
                oom_kills: delta(counters.oom_kills, self.counters_at_start.oom_kills),
                oom_kills_cgroup: None,
                oom_events: Vec::new(),
                activity: ActivitySummary::default(),
                processes: Vec::new(),
                processes_not_listed: 0,
                kernel_entries_at_end: Default::default(),
                timeline: TimelineExcerpt {
                    start_seconds: 0.0,
                    resolution_ms: resolution,
                    buckets,
                },
                recommendation: None,
                checklist: None,
                attribution: self.kubernetes.as_ref().map(|_| {
                    crate::attribution::Attribution::Kubernetes {
                        names_known: true,
                        reason: None,
                    }
                }),
                kubernetes: self.kubernetes,
            }],
            drops,
            undecodable_events: 0,
            folded_stacks: profile.folded(),
        };
        report.recommend(self.request.headroom);
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
                        ServerMessage::Started { duration_ms: d, .. } => duration_ms = d,
                        ServerMessage::Progress { elapsed_ms, peak_bytes } => {
                            on_progress(elapsed_ms, duration_ms, peak_bytes);
                        }
                        ServerMessage::Finished { rendered, folded } => return Ok((rendered, folded)),
                        ServerMessage::Error { message } => return Err(SessionError::Refused(message)),
                    }
                }
                _ = interrupts.recv() => { write.write_all(b"{\"stop\":true}\n").await?; }
                _ = terminations.recv() => { write.write_all(b"{\"stop\":true}\n").await?; }
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
            format: "json".into(),
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
        bad.duration_ms = 0;
        assert!(bad.validate().unwrap_err().contains("--duration"));
        let mut bad = request();
        bad.version = 99;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("same headroom version"));
        let mut bad = request();
        bad.format = "xml".into();
        assert!(bad.validate().is_err());
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
        let regular = dir.join("not-a-socket");
        std::fs::write(&regular, b"x").expect("file");
        assert!(matches!(
            listen(&regular),
            Err(SessionError::NotASocket { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
