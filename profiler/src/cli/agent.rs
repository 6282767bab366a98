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

    /// Containers tracked at once (default 1000).
    #[arg(long, value_name = "N")]
    pub max_containers: Option<usize>,

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
        ..ConfigFile::default()
    })?;
    let runtime = super::current_thread_runtime()?;
    runtime.block_on(crate::agent::run(config))?;
    Ok(0)
}
