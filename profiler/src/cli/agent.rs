//! `headroom agent`: its flags, laid over the configuration file, and the agent's run.

use std::path::PathBuf;

use clap::Args;

use crate::agent::{AgentConfig, ConfigFile};

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

    /// How long a gone container's OOM counter, limits and peaks stay exported, so a scrape
    /// sees a container killed and removed between two scrapes (default 60s, at most 1h).
    #[arg(long, value_name = "DURATION")]
    pub gone_series_retention: Option<String>,

    /// Containers tracked at once (default 1000).
    #[arg(long, value_name = "N")]
    pub max_containers: Option<usize>,

    /// Serve /api/v1/report (every tenant's names, limits and OOM kills) on every address
    /// the agent listens on, not only to loopback connections (default off).
    #[arg(long)]
    pub expose_api: bool,

    /// HTTP connections served at once; more are closed at once (default 256).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Unix socket where `headroom capture --pod/--cgroup` asks this agent for sessions
    /// (default /run/headroom/agent.sock; "" turns sessions off).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
}

/// Runs the node agent until SIGINT or SIGTERM. The flags go through the same validation as
/// the configuration file's keys (they arrive as text, like TOML values), so both name errors
/// the same way.
pub(super) fn run_agent(args: AgentArgs) -> anyhow::Result<u8> {
    let mut config = AgentConfig::load(args.config.as_deref())?;
    config.apply(&ConfigFile {
        listen: args.listen,
        metadata: args.metadata,
        node: args.node,
        interval: args.interval,
        max_containers: args.max_containers,
        socket: args.socket,
        expose_api: args.expose_api.then_some(true),
        max_connections: args.max_connections,
        gone_series_retention: args.gone_series_retention,
        ..ConfigFile::default()
    })?;
    // glibc gives each thread that allocates its own malloc arena (up to 8 per core), each
    // keeping freed memory of its own; the agent lives in a 56 MiB limit. Two arenas keep the
    // runtime's threads from contending on one lock without multiplying that slack.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt(3) only sets a malloc tunable; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // One worker serves HTTP, the session socket and the ring drainer; the agent's own loop
    // (ticks with their /proc and cgroup reads, sessions) runs in `block_on` on this thread, so
    // a slow tick never holds up /healthz. /metrics encoding and report rendering go to one
    // blocking thread, one at a time: with two workers and two blocking threads they ran side
    // by side and the agent's charge peak under tests/privileged/load.rs rose from 48 to
    // 58-68 MiB; with one of each it was 47 MiB (the DaemonSet's limit is 56 MiB).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("headroom-agent")
        .enable_all()
        .build()?;
    runtime.block_on(crate::agent::run(config))?;
    Ok(0)
}
