//! Command-line interface: raw flags, their validation into settings, and dispatch.
//!
//! One file per concern: the top-level parser, shared flags and dispatch here; each
//! subcommand's flags and runner in its own module (`capture_args` and `capture`,
//! `recommend`, `agent`); sessions through a running agent in `session`; where output goes
//! in `output`.

mod agent;
mod capture;
mod capture_args;
mod output;
mod recommend;
mod session;

use clap::{Args, Parser, Subcommand};

pub use self::{
    agent::AgentArgs,
    capture_args::{CaptureArgs, StackArgs},
    recommend::RecommendArgs,
};
pub use crate::report::Format;
use crate::units::{parse_bytes, parse_headroom};

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
    /// Several reports are taken as replicas of one workload, each counting the same: the
    /// highest peaks across them and the steady state of the replica that holds the most make
    /// one recommendation.
    Recommend(RecommendArgs),
    /// Run the node agent: probes loaded once, every container tracked, and /metrics,
    /// /healthz, /readyz and /api/v1/report served over HTTP, until SIGINT or SIGTERM.
    ///
    /// Settings come from --config (TOML; see deploy/agent.toml) and these flags, which win.
    Agent(AgentArgs),
}

/// Flags shared by everything that recommends.
#[derive(Debug, Args)]
pub struct SizingArgs {
    /// Headroom over the worst realistic peak, as a fraction or a percentage (0.25, 25%).
    /// The sizing rule calls for 20-30 %; other values are allowed, with a warning.
    #[arg(long, value_name = "FRACTION", default_value = "25%", value_parser = parse_headroom)]
    pub headroom: f64,

    /// Neither the request nor the limit below SIZE (e.g. 64Mi); never below 32Mi.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub min_memory: Option<u64>,

    /// The limit not above SIZE (e.g. 2Gi); a worst peak above it is flagged oom_risk.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,

    /// The limit at most N times the request (the request is raised to limit ÷ N).
    #[arg(long, value_name = "N", default_value_t = crate::sizing::DEFAULT_MAX_RATIO)]
    pub max_limit_ratio: f64,

    /// The container: with --pod, the one to watch; with --format yaml, the name for a
    /// strategic-merge patch of the owning workload (`kubectl patch deploy/NAME --type
    /// strategic -p "$(cat patch.yaml)"`) instead of a bare `resources:` block.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
}

impl SizingArgs {
    /// The sizing policy these flags ask for; an error names the flag that is wrong.
    pub fn policy(&self) -> anyhow::Result<crate::sizing::Policy> {
        if !(self.max_limit_ratio >= 1.0 && self.max_limit_ratio.is_finite()) {
            anyhow::bail!(
                "--max-limit-ratio {} is below 1: the limit cannot be smaller than the request (use 1 for request = limit)",
                self.max_limit_ratio
            );
        }
        if let (Some(min), Some(max)) = (self.min_memory, self.max_memory) {
            if min > max {
                anyhow::bail!(
                    "--min-memory {} is above --max-memory {}: lower the minimum or raise the maximum",
                    crate::units::quantity(min),
                    crate::units::quantity(max)
                );
            }
        }
        if let Some(max) = self
            .max_memory
            .filter(|&max| max < crate::sizing::FLOOR_BYTES)
        {
            anyhow::bail!(
                "--max-memory {} is below the 32Mi floor: give at least 32Mi",
                crate::units::quantity(max)
            );
        }
        Ok(crate::sizing::Policy {
            headroom: self.headroom,
            min_bytes: self.min_memory,
            max_bytes: self.max_memory,
            max_ratio: self.max_limit_ratio,
        })
    }
}

/// headroom's own failure exit code (like `env` and container runtimes).
pub const EXIT_FAILURE: u8 = 125;

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Capture(args) => capture::run_capture(args),
        Command::Recommend(args) => recommend::run_recommend(args),
        Command::Agent(args) => agent::run_agent(args),
    }
}

/// The single-threaded runtime every subcommand drives its async work with: the CLI does one
/// thing at a time, so a thread pool would only add threads to the watched node.
fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
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
