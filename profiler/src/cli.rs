//! Command-line interface: flags, validation, and dispatch to the subcommands.

use std::{io::Write as _, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::capture::{self, CaptureError, CaptureOptions};

/// headroom: measures what a workload really needs in memory (reserved, resident, thread stacks,
/// startup peaks and spikes) with eBPF probes, to size Kubernetes memory requests and limits.
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
    /// Run a command in a cgroup of its own with the probes attached, and report its memory.
    ///
    /// The command's stdin, stdout and stderr are passed through and headroom exits with its
    /// exit code (128 + N if signal N killed it). The summary goes to stderr so the command's
    /// stdout stays clean. SIGINT and SIGTERM are passed on to the command; a second one kills
    /// every process of the session. Processes the command leaves behind are killed when it
    /// exits. The session's cgroup is always removed and the probes detached.
    ///
    /// Exit codes of headroom itself: 125 when it fails, 126 when the command is not
    /// executable, 127 when it is not found.
    Capture(CaptureArgs),
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Also write the full report as JSON (schema headroom.report/v1) to FILE ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Do not print the human-readable summary on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Most processes listed in the report; more are counted but not listed. 1 to 1000000.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_processes: u32,

    /// The command to run, and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// headroom's own failure exit code (like `env` and container runtimes).
pub const EXIT_FAILURE: u8 = 125;

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Capture(args) => run_capture(args),
    }
}

fn run_capture(args: CaptureArgs) -> anyhow::Result<u8> {
    let options = CaptureOptions {
        command: args.command,
        max_processes: args.max_processes as usize,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = match runtime.block_on(capture::run(&options)) {
        Ok(report) => report,
        Err(err @ CaptureError::CommandNotFound(_)) => return fail_with(err, 127),
        Err(err @ CaptureError::NotExecutable(_)) => return fail_with(err, 126),
        Err(err) => return Err(err.into()),
    };
    if !args.quiet {
        eprint!("\n{}", report.render_text());
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{json}")?;
        } else {
            std::fs::write(path, json + "\n").map_err(|err| {
                anyhow::anyhow!("cannot write the report to {}: {err}", path.display())
            })?;
        }
    }
    Ok(u8::try_from(report.exit.shell_code() & 0xff).unwrap_or(EXIT_FAILURE))
}

fn fail_with(err: CaptureError, code: u8) -> anyhow::Result<u8> {
    eprintln!("headroom: error: {err}");
    Ok(code)
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
    fn capture_takes_the_command_after_double_dash() {
        let cli =
            Cli::try_parse_from(["headroom", "capture", "--json", "r.json", "--", "ls", "-l"])
                .expect("valid");
        let Command::Capture(args) = cli.command;
        assert_eq!(args.command, ["ls", "-l"]);
        assert_eq!(args.json, Some(PathBuf::from("r.json")));
    }

    #[test]
    fn the_command_must_follow_double_dash() {
        let err = Cli::try_parse_from(["headroom", "capture", "ls", "-l"]).expect_err("no --");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let cli =
            Cli::try_parse_from(["headroom", "capture", "--", "ls", "--json", "x"]).expect("valid");
        let Command::Capture(args) = cli.command;
        assert_eq!(args.command, ["ls", "--json", "x"]);
        assert_eq!(args.json, None);
    }

    #[test]
    fn capture_without_a_command_is_a_usage_error() {
        let err = Cli::try_parse_from(["headroom", "capture"]).expect_err("missing command");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(
            Cli::try_parse_from(["headroom", "capture", "--max-processes", "0", "--", "true"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["headroom", "capture", "--bogus", "--", "true"]).is_err());
        assert!(
            Cli::try_parse_from(["headroom", "--log-level", "loud", "capture", "--", "true"])
                .is_err()
        );
    }

    #[test]
    fn every_flag_has_help() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("capture")
            .expect("capture exists")
            .render_long_help()
            .to_string();
        for flag in ["--json", "--quiet", "--max-processes", "COMMAND"] {
            assert!(help.contains(flag), "capture --help lacks {flag}:\n{help}");
        }
        let top = Cli::command().render_long_help().to_string();
        assert!(top.contains("--log-level"), "{top}");
    }
}
