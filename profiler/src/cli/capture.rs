//! `headroom capture`: the flags turned into capture options, the capture run (through a
//! running agent when one can serve it, else with the probes loaded here), and the report and
//! stack files written.

use super::{
    capture_args::{CaptureArgs, StackArgs},
    output::{check_writable, emit},
    session, EXIT_FAILURE,
};
use crate::{
    capture::{self, CaptureError, CaptureOptions, TargetSpec},
    report::CaptureReport,
    stacks::{flamegraph, pprof},
};

/// Runs `headroom capture`; returns the target command's exit code (0 for other targets).
pub(super) fn run_capture(args: CaptureArgs) -> anyhow::Result<u8> {
    let options = capture_options(&args)?;
    // Fail on an unwritable output path now, not after a long capture.
    check_stack_outputs(&args.stacks)?;
    let runtime = super::current_thread_runtime()?;
    if let Some(code) = session::try_through_agent(&runtime, &args, &options)? {
        return Ok(code);
    }
    run_standalone(&runtime, &args, &options)
}

/// The capture options the flags ask for, refusing stack files for a node-wide capture
/// before anything is loaded.
fn capture_options(args: &CaptureArgs) -> anyhow::Result<CaptureOptions> {
    let mut options = CaptureOptions::new(args.target()?);
    options.duration = args.duration;
    options.max_processes = args.max_processes as usize;
    options.memory_limit = args.memory_limit;
    options.policy = args.sizing.policy()?;
    options.stacks = args.stacks.settings();
    options.ring_buffer_bytes = args.ring_buffer;
    options.metadata = args.metadata;
    if options.stacks.is_some() && matches!(options.target, TargetSpec::Node(_)) {
        // Node-wide captures count every cgroup; stacks are for one target at a time.
        if args.stacks.flamegraph.is_some()
            || args.stacks.folded.is_some()
            || args.stacks.pprof.is_some()
        {
            anyhow::bail!(
                "--flamegraph, --folded and --pprof need one target (a command, --pod, --cgroup or --pid), not --all"
            );
        }
        options.stacks = None;
    }
    Ok(options)
}

/// Checks that the flame graph, folded-stack and pprof files can be written.
fn check_stack_outputs(stacks: &StackArgs) -> anyhow::Result<()> {
    for path in [&stacks.flamegraph, &stacks.folded, &stacks.pprof]
        .into_iter()
        .flatten()
    {
        check_writable(path)?;
    }
    Ok(())
}

/// Captures with the probes loaded in this process, then writes the report (to stderr by
/// default for a command, whose stdout is its own) and the stack files.
fn run_standalone(
    runtime: &tokio::runtime::Runtime,
    args: &CaptureArgs,
    options: &CaptureOptions,
) -> anyhow::Result<u8> {
    let report = match runtime.block_on(capture::run(options)) {
        Ok(report) => report,
        Err(err @ CaptureError::CommandNotFound(_)) => return fail_with(err, 127),
        Err(err @ CaptureError::NotExecutable(_)) => return fail_with(err, 126),
        Err(err) => return Err(err.into()),
    };
    let is_command = matches!(options.target, TargetSpec::Command(_));
    let rendered = report.render(args.format, args.sizing.container.as_deref())?;
    emit(args.output.as_deref(), &rendered, is_command)?;
    write_stack_files(
        &args.stacks,
        &report.folded_stacks,
        &flamegraph_title(&report),
    )?;
    if let Some(path) = &args.stacks.pprof {
        let Some(profile) = &report.stack_profile else {
            anyhow::bail!(pprof::PprofError::NoStacks);
        };
        let duration_nanos = (report.duration_seconds * 1e9) as i64;
        pprof::write(profile, duration_nanos, path)?;
    }
    Ok(exit_code(&report))
}

/// Writes the sampled stacks to the --folded and --flamegraph files asked for.
pub(super) fn write_stack_files(
    stacks: &StackArgs,
    folded: &[String],
    title: &str,
) -> anyhow::Result<()> {
    if let Some(path) = &stacks.folded {
        flamegraph::write_folded(folded, path)?;
    }
    if let Some(path) = &stacks.flamegraph {
        flamegraph::write_svg(folded, title, path)?;
    }
    Ok(())
}

/// The flame graph's title: what made the memory, when the report names a target.
fn flamegraph_title(report: &CaptureReport) -> String {
    report
        .targets
        .first()
        .map(|target| {
            format!(
                "headroom: memory made by {}",
                CaptureReport::target_name(target)
            )
        })
        .unwrap_or_else(|| "headroom".to_owned())
}

/// The watched command's exit code as a shell shows it (128 + N for signal N), so that
/// `headroom capture -- CMD` can stand in for CMD in scripts; 0 for other targets.
fn exit_code(report: &CaptureReport) -> u8 {
    let code = report
        .targets
        .first()
        .and_then(|target| target.exit)
        .map_or(0, |exit| exit.shell_code());
    u8::try_from(code & 0xff).unwrap_or(EXIT_FAILURE)
}

/// Reports a command that could not be started and exits with the shell's code for it
/// (127 not found, 126 not executable), as `env` and container runtimes do.
fn fail_with(err: CaptureError, code: u8) -> anyhow::Result<u8> {
    eprintln!("headroom: error: {err}");
    Ok(code)
}
