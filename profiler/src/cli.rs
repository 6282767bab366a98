//! Command-line interface: raw flags, their validation into settings, and dispatch.

use std::{io::Write as _, path::PathBuf, time::Duration};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

pub use crate::report::Format;
use crate::{
    agent::session,
    attribution::kubernetes::{parse_pod_name, KubernetesError},
    capture::{self, CaptureError, CaptureOptions, MetadataSource, NodeOptions, TargetSpec},
    report::{render, CaptureReport},
    sizing,
    stacks::{flamegraph, StackSettings, Unwinding},
    units::{parse_bytes, parse_bytes_within, parse_duration, parse_headroom, parse_window},
};

/// headroom: measures what a workload really needs in memory (charged, resident and reserved;
/// startup peaks, steady state, spikes, thread stacks) with eBPF probes, to size Kubernetes
/// memory requests and limits.
#[derive(Debug, Parser)]
#[command(name = "headroom", version, about, long_about = None)]
pub struct Cli {
    /// Log verbosity: error, warn, info, debug or trace (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: tracing::Level,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch a command, a cgroup or a process tree with the probes attached, and report its
    /// memory.
    ///
    /// Targets: a command after `--` (run in a cgroup of its own), `--cgroup PATH` or
    /// `--pid PID` (that process and whatever it forks from now on). The capture runs until
    /// the target exits, `--duration` passes, or Ctrl-C.
    ///
    /// For a command, its stdin, stdout and stderr are passed through and headroom exits with
    /// its exit code (128 + N if signal N killed it); the report goes to stderr unless
    /// `--output` says otherwise, so the command's stdout stays clean. SIGINT and SIGTERM are
    /// passed on to it; a second one kills every process of the session. Processes it leaves
    /// behind are killed when it exits. The session's cgroup is always removed and the probes
    /// detached. For `--cgroup` and `--pid`, Ctrl-C ends the capture and the target is left
    /// alone.
    ///
    /// Exit codes of headroom itself: 125 when it fails, 126 when the command is not
    /// executable, 127 when it is not found, 2 for bad flags.
    Capture(CaptureArgs),
    /// Recommend a memory request and limit from saved capture reports (`--format json`).
    ///
    /// Several reports are taken as replicas of one workload: the highest peaks across them,
    /// and their steady states pooled, make one recommendation.
    Recommend(RecommendArgs),
    /// Run the node agent: probes loaded once, every container tracked, and /metrics,
    /// /healthz, /readyz and /api/v1/report served over HTTP, until SIGINT or SIGTERM.
    ///
    /// Settings come from --config (TOML; see deploy/agent.toml) and these flags, which win.
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML configuration file (unknown keys are errors).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for the HTTP endpoints (default 127.0.0.1:9400).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,

    /// Where pod names come from: auto, kubernetes or none (default auto).
    #[arg(long, value_name = "SOURCE")]
    pub metadata: Option<String>,

    /// The node whose pods to watch (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// How often counters and charges are read (default 1s, at least 100ms).
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,

    /// Containers tracked at once (default 1000).
    #[arg(long, value_name = "N")]
    pub max_containers: Option<usize>,

    /// Unix socket where `headroom capture --pod/--cgroup` asks this agent for sessions
    /// (default /run/headroom/agent.sock; "" turns sessions off).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// headroom.report/v1 JSON files written by `headroom capture --format json`.
    #[arg(
        required_unless_present = "prometheus",
        conflicts_with = "prometheus",
        value_name = "REPORT"
    )]
    pub reports: Vec<PathBuf>,

    /// Recommend for every workload from the agents' series in this Prometheus
    /// (http://HOST:PORT), across replicas and nodes (max across replicas for peaks).
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// With --prometheus: how far back to look (e.g. 7d, 24h, 30m).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_window)]
    pub window: Duration,

    /// With --prometheus: only this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub sizing: SizingArgs,

    /// The request set now, to flag over-provisioning (e.g. 512Mi).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub current_request: Option<u64>,

    /// The limit set now, to flag OOM risk (e.g. 1Gi); default: the limit the reports saw.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub current_limit: Option<u64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write the output to FILE ("-" for stdout, the default).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Flags shared by everything that recommends.
#[derive(Debug, Args)]
pub struct SizingArgs {
    /// Headroom over the worst realistic peak, as a fraction or a percentage (0.25, 25%).
    /// The sizing rule calls for 20-30 %; other values are allowed, with a warning.
    #[arg(long, value_name = "FRACTION", default_value = "25%", value_parser = parse_headroom)]
    pub headroom: f64,

    /// The container: with --pod, the one to watch; with --format yaml, the name for a
    /// strategic-merge patch of the owning workload (`kubectl patch deploy/NAME --type
    /// strategic -p "$(cat patch.yaml)"`) instead of a bare `resources:` block.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
}

/// Where pod names come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Metadata {
    /// The Kubernetes API if a configuration is found, else none.
    Auto,
    /// The Kubernetes API; fail without a configuration.
    Kubernetes,
    /// No names: containers are identified by pod UID and container id only.
    None,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["cgroup", "pid", "pod", "all", "command"])))]
pub struct CaptureArgs {
    /// Watch a pod through the Kubernetes API (KUBECONFIG, ~/.kube/config or in-cluster) and
    /// this node's cgroups: NAMESPACE/POD. With --container, one of its containers.
    #[arg(long, value_name = "NAMESPACE/POD")]
    pub pod: Option<String>,

    /// Watch every cgroup on the node; each is attributed to a container (with pod names
    /// from the Kubernetes API), a host service, or "unattributed" with the reason.
    #[arg(long)]
    pub all: bool,

    /// With --all: where pod names come from.
    #[arg(long, value_enum, default_value_t = Metadata::Auto,
          conflicts_with_all = ["cgroup", "pid", "pod", "command"])]
    pub metadata: Metadata,

    /// With --all: the node whose pods to watch (default: this host's name).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["cgroup", "pid", "pod", "command"])]
    pub node: Option<String>,

    /// Watch an existing cgroup, by its path as /proc/PID/cgroup shows it (after `0::`).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Watch a running process and everything it forks from now on.
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Stop after this long (e.g. 30s, 500ms, 5m, 1h); default: until the target exits or
    /// Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write the report to FILE ("-" for stdout). Default: stderr for a command (its stdout
    /// is its own), stdout otherwise.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Put this memory limit on the command's cgroup (e.g. 256Mi, 1Gi, 500M, 1048576), to see
    /// how it behaves, and is OOM-killed, under a limit.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, conflicts_with_all = ["pid", "cgroup"])]
    pub memory_limit: Option<u64>,

    /// Most processes listed in the report; more are counted but not listed. 1 to 1000000.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_processes: u32,

    #[command(flatten)]
    pub sizing: SizingArgs,

    #[command(flatten)]
    pub stacks: StackArgs,

    /// Ring buffer for mapping, process and stack events: a power of two from 4Ki to 1Gi.
    /// Events that do not fit are counted in the report's `drops` (kernel totals stay exact).
    #[arg(long, value_name = "SIZE", default_value = "4Mi", value_parser = parse_ring_buffer)]
    pub ring_buffer: u32,

    /// With --pod or --cgroup: the running agent's socket to ask for the session (default
    /// /run/headroom/agent.sock when it exists; then no second copy of the probes is loaded).
    #[arg(long, value_name = "PATH", conflicts_with = "standalone")]
    pub agent_socket: Option<PathBuf>,

    /// Load the probes in this process even when an agent is running.
    #[arg(long)]
    pub standalone: bool,

    /// The command to run, and its arguments (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Stack sampling: which code made the memory.
#[derive(Args, Debug, Clone)]
pub struct StackArgs {
    /// Do not sample stacks (no sources by code path, no spike frames, no flame graph).
    #[arg(long, conflicts_with_all = ["flamegraph", "folded"])]
    pub no_stacks: bool,

    /// Take one stack per this many bytes faulted in, per process (byte-weighted sampling).
    /// Smaller is finer and costs more. 64Ki to 1Gi.
    #[arg(long, value_name = "SIZE", default_value = "512Ki", value_parser = parse_sample_bytes)]
    pub sample_bytes: u64,

    /// Take a stack for every mmap or brk growth of at least this size. 4Ki to 1Ti.
    #[arg(long, value_name = "SIZE", default_value = "1Mi", value_parser = parse_threshold_bytes)]
    pub reservation_threshold: u64,

    /// How stacks are walked: frame-pointers (in the kernel, cheap; stops at code built
    /// without them, such as Debian's glibc) or eh-frame (copies 8 KiB of stack per sample
    /// and unwinds with .eh_frame in user space; complete, costs more).
    #[arg(long, value_enum, default_value_t = Unwinding::FramePointers, value_name = "HOW")]
    pub unwind: Unwinding,

    /// Distinct stacks kept (more are counted, not kept). 16 to 1000000.
    #[arg(long, default_value_t = 8192, value_name = "N",
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub max_stacks: u32,

    /// Write a flame graph (SVG) of the sampled stacks, widths in bytes.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Write the sampled stacks in folded form (`frame;frame bytes`, for inferno, speedscope
    /// or flamegraph.pl).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
}

impl StackArgs {
    pub fn settings(&self) -> Option<StackSettings> {
        (!self.no_stacks).then_some(StackSettings {
            fault_sample_bytes: self.sample_bytes,
            reservation_threshold_bytes: self.reservation_threshold,
            unwinding: self.unwind,
            max_stacks: self.max_stacks as usize,
        })
    }
}

fn parse_ring_buffer(text: &str) -> Result<u32, String> {
    let bytes = parse_bytes_within(text, 4 << 10, 1 << 30)?;
    if !bytes.is_power_of_two() {
        return Err(format!(
            "{text} is not a power of two (e.g. 64Ki, 4Mi, 16Mi)"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{text} is too large"))
}

fn parse_sample_bytes(text: &str) -> Result<u64, String> {
    parse_bytes_within(text, 64 << 10, 1 << 30)
}

fn parse_threshold_bytes(text: &str) -> Result<u64, String> {
    parse_bytes_within(text, 4 << 10, 1 << 40)
}

/// headroom's own failure exit code (like `env` and container runtimes).
pub const EXIT_FAILURE: u8 = 125;

impl Metadata {
    fn source(self) -> MetadataSource {
        match self {
            Metadata::Auto => MetadataSource::Auto,
            Metadata::Kubernetes => MetadataSource::Kubernetes,
            Metadata::None => MetadataSource::None,
        }
    }
}

impl CaptureArgs {
    fn target(&self) -> Result<TargetSpec, KubernetesError> {
        if self.all {
            return Ok(TargetSpec::Node(NodeOptions {
                metadata: self.metadata.source(),
                node: self.node.clone(),
            }));
        }
        if let Some(pod) = &self.pod {
            let (namespace, name) = parse_pod_name(pod)?;
            return Ok(TargetSpec::Pod {
                namespace,
                name,
                container: self.sizing.container.clone(),
            });
        }
        Ok(match (&self.cgroup, self.pid) {
            (Some(path), _) => TargetSpec::Cgroup(path.clone()),
            (None, Some(pid)) => TargetSpec::Pid(pid),
            (None, None) => TargetSpec::Command(self.command.clone()),
        })
    }
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Capture(args) => run_capture(args),
        Command::Recommend(args) => run_recommend(args),
        Command::Agent(args) => run_agent(args),
    }
}

fn run_agent(args: AgentArgs) -> anyhow::Result<u8> {
    let mut config = crate::agent::AgentConfig::load(args.config.as_deref())?;
    config.apply(&crate::agent::ConfigFile {
        listen: args.listen,
        metadata: args.metadata,
        node: args.node,
        interval: args.interval,
        max_containers: args.max_containers,
        socket: args.socket,
        ..crate::agent::ConfigFile::default()
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::agent::run(config))?;
    Ok(0)
}

/// Writes output to FILE, stdout ("-"), or the default destination.
fn emit(
    output: Option<&std::path::Path>,
    rendered: &str,
    default_to_stderr: bool,
) -> anyhow::Result<()> {
    match output {
        Some(path) if path.as_os_str() != "-" => std::fs::write(path, rendered).map_err(|err| {
            anyhow::anyhow!(
                "cannot write the report to {}: {err} (check the directory exists and has room)",
                path.display()
            )
        }),
        None if default_to_stderr => {
            eprint!("\n{rendered}");
            Ok(())
        }
        _ => Ok(std::io::stdout().lock().write_all(rendered.as_bytes())?),
    }
}

/// The request for a session through the agent, for targets an agent can serve.
fn agent_session_request(
    args: &CaptureArgs,
    options: &CaptureOptions,
) -> anyhow::Result<Option<session::SessionRequest>> {
    if args.standalone {
        return Ok(None);
    }
    let target = match &options.target {
        TargetSpec::Cgroup(path) => session::SessionTarget::Cgroup { path: path.clone() },
        TargetSpec::Pod {
            namespace,
            name,
            container,
        } => session::SessionTarget::Pod {
            namespace: namespace.clone(),
            name: name.clone(),
            container: container.clone(),
        },
        _ => return Ok(None),
    };
    let stacks = options.stacks.clone().unwrap_or(StackSettings {
        // The agent samples the session's cgroup; "off" there means the coarsest sampling.
        fault_sample_bytes: 1 << 30,
        reservation_threshold_bytes: 1 << 40,
        ..StackSettings::default()
    });
    Ok(Some(session::SessionRequest {
        version: session::PROTOCOL_VERSION,
        target,
        duration_ms: options
            .duration
            .unwrap_or(session::MAX_SESSION)
            .min(session::MAX_SESSION)
            .as_millis() as u64,
        fault_sample_bytes: stacks.fault_sample_bytes,
        reservation_threshold_bytes: stacks.reservation_threshold_bytes,
        unwinding: stacks.unwinding,
        max_stacks: stacks.max_stacks,
        format: args.format,
        patch_container: args.sizing.container.clone(),
        headroom: options.headroom,
    }))
}

/// Runs the session in the agent, with a progress bar, and writes what it returns.
fn run_through_agent(
    runtime: &tokio::runtime::Runtime,
    client: session::SessionClient,
    request: &session::SessionRequest,
    args: &CaptureArgs,
) -> anyhow::Result<u8> {
    let bar = indicatif::ProgressBar::new(request.duration_ms);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} capturing through the agent [{bar:30}] {eta} left, peak {msg} (Ctrl-C ends early and still reports)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let result = runtime.block_on(client.run(request, |elapsed, duration, peak| {
        bar.set_length(duration);
        bar.set_position(elapsed);
        bar.set_message(crate::units::format_bytes(peak));
    }));
    bar.finish_and_clear();
    let (rendered, folded) = result?;
    emit(args.output.as_deref(), &rendered, false)?;
    if let Some(path) = &args.stacks.folded {
        flamegraph::write_folded(&folded, path)?;
    }
    if let Some(path) = &args.stacks.flamegraph {
        flamegraph::write_svg(
            &folded,
            "headroom: memory made (session through the agent)",
            path,
        )?;
    }
    Ok(0)
}

/// Checks that a file can be created at `path` (its directory exists and is writable).
fn check_writable(path: &std::path::Path) -> anyhow::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    if !directory.is_dir() {
        anyhow::bail!(
            "cannot write {}: directory {} does not exist (create it or choose another path)",
            path.display(),
            directory.display()
        );
    }
    nix::unistd::access(directory, nix::unistd::AccessFlags::W_OK).map_err(|err| {
        anyhow::anyhow!(
            "cannot write {}: directory {} is not writable ({err})",
            path.display(),
            directory.display()
        )
    })
}

/// Parses a saved `headroom.report/v1` document, naming what is wrong with anything else.
fn read_report(text: &str) -> anyhow::Result<CaptureReport> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| {
        anyhow::anyhow!("not JSON ({err}); write reports with `headroom capture --format json`")
    })?;
    let schema = value.get("schema").and_then(serde_json::Value::as_str);
    if schema != Some(crate::report::REPORT_SCHEMA) {
        return Err(sizing::SizingError::WrongSchema(schema.unwrap_or("").to_owned()).into());
    }
    serde_json::from_value(value).map_err(|err| {
        anyhow::anyhow!(
            "not a readable {} document ({err}); write reports with `headroom capture --format json`",
            crate::report::REPORT_SCHEMA
        )
    })
}

fn run_recommend(args: RecommendArgs) -> anyhow::Result<u8> {
    if let Some(url) = &args.prometheus {
        return run_recommend_prometheus(url, &args);
    }
    let mut observations = Vec::new();
    for path in &args.reports {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read report {}: {err}", path.display()))?;
        let report =
            read_report(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        observations.extend(
            sizing::Observation::from_report(&report)
                .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?,
        );
    }
    let mut merged = sizing::Observation::merge(&observations)
        .ok_or_else(|| anyhow::anyhow!("the reports hold no targets"))?;
    if args.current_limit.is_some() {
        merged.current_limit_bytes = args.current_limit;
    }
    merged.current_request_bytes = args.current_request;
    let (recommendation, checklist) = sizing::recommend(&merged, args.sizing.headroom);
    let rendered = match args.format {
        Format::Table => format!(
            "{}\n{}",
            merged.name,
            render::render_recommendation(&recommendation, &checklist)
        ),
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "schema": "headroom.recommendation/v1",
                "target": merged.name,
                "reports": args.reports,
                "recommendation": recommendation,
                "checklist": checklist,
            }))? + "\n"
        }
        Format::Markdown => {
            render::render_recommendation_markdown(&merged.name, &recommendation, &checklist)
        }
        Format::Yaml => render::yaml_patch(
            &recommendation,
            &merged.name,
            args.sizing.container.as_deref(),
        ),
    };
    emit(args.output.as_deref(), &rendered, false)?;
    Ok(0)
}

fn run_capture(args: CaptureArgs) -> anyhow::Result<u8> {
    let target = args.target()?;
    let is_command = matches!(target, TargetSpec::Command(_));
    let mut options = CaptureOptions::new(target);
    options.duration = args.duration;
    options.max_processes = args.max_processes as usize;
    options.memory_limit = args.memory_limit;
    options.headroom = args.sizing.headroom;
    options.stacks = args.stacks.settings();
    options.ring_buffer_bytes = args.ring_buffer;
    options.metadata = args.metadata.source();
    if options.stacks.is_some() && matches!(options.target, TargetSpec::Node(_)) {
        // Node-wide captures count every cgroup; stacks are for one target at a time.
        if args.stacks.flamegraph.is_some() || args.stacks.folded.is_some() {
            anyhow::bail!(
                "--flamegraph and --folded need one target (a command, --pod, --cgroup or --pid), not --all"
            );
        }
        options.stacks = None;
    }
    // Fail on an unwritable output path now, not after a long capture.
    for path in [&args.stacks.flamegraph, &args.stacks.folded]
        .into_iter()
        .flatten()
    {
        check_writable(path)?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(request) = agent_session_request(&args, &options)? {
        let socket = args
            .agent_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(session::DEFAULT_SOCKET));
        match runtime.block_on(session::SessionClient::connect(&socket)) {
            Ok(client) => return run_through_agent(&runtime, client, &request, &args),
            // An explicit socket must answer; the default one is used only when it does.
            Err(err) if args.agent_socket.is_some() => return Err(anyhow::Error::new(err)
                .context(
                "start the agent (headroom agent), or drop --agent-socket to capture standalone",
            )),
            Err(_) => {}
        }
    }
    let report = match runtime.block_on(capture::run(&options)) {
        Ok(report) => report,
        Err(err @ CaptureError::CommandNotFound(_)) => return fail_with(err, 127),
        Err(err @ CaptureError::NotExecutable(_)) => return fail_with(err, 126),
        Err(err) => return Err(err.into()),
    };
    let rendered = report.render(args.format, args.sizing.container.as_deref())?;
    emit(args.output.as_deref(), &rendered, is_command)?;
    if let Some(path) = &args.stacks.folded {
        flamegraph::write_folded(&report.folded_stacks, path)?;
    }
    if let Some(path) = &args.stacks.flamegraph {
        let title = report
            .targets
            .first()
            .map(|target| {
                format!(
                    "headroom: memory made by {}",
                    CaptureReport::target_name(target)
                )
            })
            .unwrap_or_else(|| "headroom".to_owned());
        flamegraph::write_svg(&report.folded_stacks, &title, path)?;
    }
    let code = report
        .targets
        .first()
        .and_then(|target| target.exit)
        .map_or(0, |exit| exit.shell_code());
    Ok(u8::try_from(code & 0xff).unwrap_or(EXIT_FAILURE))
}

/// One recommendation per workload from Prometheus.
fn run_recommend_prometheus(url: &str, args: &RecommendArgs) -> anyhow::Result<u8> {
    let prometheus = crate::cluster::Prometheus::new(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let workloads = runtime.block_on(crate::cluster::observations(
        &prometheus,
        args.window,
        args.namespace.as_deref(),
    ))?;
    let mut rendered = String::new();
    let mut json = Vec::new();
    for (key, observation) in &workloads {
        let (recommendation, checklist) = sizing::recommend(observation, args.sizing.headroom);
        match args.format {
            Format::Table => {
                rendered.push_str(&format!("{}\n", observation.name));
                rendered.push_str(&render::render_recommendation(&recommendation, &checklist));
                rendered.push('\n');
            }
            Format::Markdown => {
                rendered.push_str(&render::render_recommendation_markdown(
                    &observation.name,
                    &recommendation,
                    &checklist,
                ));
                rendered.push('\n');
            }
            Format::Yaml => {
                let container = args
                    .sizing
                    .container
                    .as_deref()
                    .or(Some(key.container.as_str()))
                    .filter(|c| !c.is_empty() && !key.workload.is_empty());
                rendered.push_str(&render::yaml_patch(
                    &recommendation,
                    &observation.name,
                    container,
                ));
                rendered.push_str("---\n");
            }
            Format::Json => json.push(serde_json::json!({
                "namespace": key.namespace,
                "workload": key.workload,
                "container": key.container,
                "recommendation": recommendation,
                "checklist": checklist,
            })),
        }
    }
    if args.format == Format::Json {
        rendered = serde_json::to_string_pretty(&serde_json::json!({
            "schema": "headroom.recommendation/v1",
            "source": url,
            "window_seconds": args.window.as_secs(),
            "workloads": json,
        }))? + "\n";
    }
    emit(args.output.as_deref(), &rendered, false)?;
    Ok(0)
}

fn fail_with(err: CaptureError, code: u8) -> anyhow::Result<u8> {
    eprintln!("headroom: error: {err}");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn capture_args(argv: &[&str]) -> Result<CaptureArgs, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Command::Capture(args) => Ok(args),
            Command::Recommend(_) | Command::Agent(_) => panic!("not a capture"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn capture_takes_the_command_after_double_dash() {
        let args = capture_args(&[
            "headroom", "capture", "--format", "json", "--", "ls", "--format", "x",
        ])
        .expect("valid");
        assert_eq!(args.command, ["ls", "--format", "x"]);
        assert_eq!(args.format, Format::Json);
        assert_eq!(
            args.target().expect("target"),
            TargetSpec::Command(vec!["ls".into(), "--format".into(), "x".into()])
        );
    }

    #[test]
    fn the_command_must_follow_double_dash() {
        let err = capture_args(&["headroom", "capture", "ls", "-l"]).expect_err("no --");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn exactly_one_target() {
        let err = capture_args(&["headroom", "capture"]).expect_err("no target");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = capture_args(&["headroom", "capture", "--pid", "1", "--cgroup", "/x"])
            .expect_err("two targets");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = capture_args(&["headroom", "capture", "--pid", "1", "--", "true"])
            .expect_err("two targets");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(
            capture_args(&["headroom", "capture", "--cgroup", "/a/b"])
                .expect("valid")
                .target()
                .expect("target"),
            TargetSpec::Cgroup("/a/b".into())
        );
    }

    #[test]
    fn pod_and_node_targets() {
        let args = capture_args(&[
            "headroom",
            "capture",
            "--pod",
            "shop/web",
            "--container",
            "app",
        ])
        .expect("valid");
        assert_eq!(
            args.target().expect("target"),
            TargetSpec::Pod {
                namespace: "shop".into(),
                name: "web".into(),
                container: Some("app".into())
            }
        );
        let args = capture_args(&["headroom", "capture", "--pod", "web"]).expect("parses");
        assert!(args
            .target()
            .expect_err("no namespace")
            .to_string()
            .contains("NAMESPACE/POD"));
        let args =
            capture_args(&["headroom", "capture", "--all", "--metadata", "none"]).expect("valid");
        assert!(matches!(
            args.target(),
            Ok(TargetSpec::Node(NodeOptions {
                metadata: MetadataSource::None,
                ..
            }))
        ));
        assert!(
            Cli::try_parse_from(["headroom", "capture", "--metadata", "none", "--", "true"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["headroom", "capture", "--all", "--pid", "3"]).is_err());
    }

    #[test]
    fn bad_flags_are_rejected() {
        for argv in [
            &["headroom", "capture", "--max-processes", "0", "--", "true"][..],
            &["headroom", "capture", "--bogus", "--", "true"],
            &["headroom", "--log-level", "loud", "capture", "--", "true"],
            &["headroom", "capture", "--pid", "0"],
            &["headroom", "capture", "--duration", "0s", "--", "true"],
            &["headroom", "capture", "--duration", "10", "--", "true"],
            &["headroom", "capture", "--format", "xml", "--", "true"],
            &[
                "headroom",
                "capture",
                "--memory-limit",
                "12Qi",
                "--",
                "true",
            ],
            &["headroom", "capture", "--memory-limit", "1Gi", "--pid", "5"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "accepted {argv:?}");
        }
    }

    #[test]
    fn recommend_needs_reports() {
        let err = Cli::try_parse_from(["headroom", "recommend"]).expect_err("no reports");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(Cli::try_parse_from([
            "headroom",
            "recommend",
            "--prometheus",
            "http://p:9090",
            "--window",
            "7d"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "headroom",
            "recommend",
            "a.json",
            "--prometheus",
            "http://p:9090"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "headroom",
            "recommend",
            "--prometheus",
            "http://p:9090",
            "--window",
            "0d"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "headroom",
            "recommend",
            "a.json",
            "--format",
            "yaml",
            "--container",
            "app"
        ])
        .is_ok());
    }

    #[test]
    fn sizes_parse_in_kubernetes_notation() {
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("8388608"), Ok(8 << 20));
        assert!(parse_bytes("1Ki").expect_err("tiny").contains("below 4Mi"));
        assert!(parse_bytes("99999999999Ti")
            .expect_err("huge")
            .contains("too large"));
        assert!(parse_bytes("Mi").is_err());
    }

    #[test]
    fn every_flag_has_help() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("capture")
            .expect("capture exists")
            .render_long_help()
            .to_string();
        for flag in [
            "--cgroup",
            "--pid",
            "--duration",
            "--format",
            "--output",
            "--memory-limit",
            "--max-processes",
            "COMMAND",
        ] {
            assert!(help.contains(flag), "capture --help lacks {flag}:\n{help}");
        }
        let top = Cli::command().render_long_help().to_string();
        assert!(top.contains("--log-level"), "{top}");
    }
}
