//! The `headroom` binary: parses flags, sets up logging, runs, and prints errors with their
//! whole cause chain.

use std::process::ExitCode;

use clap::Parser as _;
use profiler::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_level.as_str()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // A closed stdout (e.g. `| head`) is not a failure of headroom.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("headroom: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
