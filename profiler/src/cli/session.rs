//! `headroom capture --pod/--cgroup` as a session of the running node agent, which already
//! has the probes loaded: the request, the connection, and the progress shown while it runs.

use std::path::PathBuf;

use super::{capture::write_stack_files, capture_args::CaptureArgs, output::emit};
use crate::{
    agent::session::{self, SessionClient, SessionRequest, SessionTarget},
    capture::{CaptureOptions, TargetSpec},
    stacks::StackSettings,
};

/// Runs the capture through the agent when it can serve it; returns the exit code, or None
/// when the capture is to run standalone: with --standalone, for a target the agent does not
/// serve, or when nothing answers on the default socket.
pub(super) fn try_through_agent(
    runtime: &tokio::runtime::Runtime,
    args: &CaptureArgs,
    options: &CaptureOptions,
) -> anyhow::Result<Option<u8>> {
    let Some(request) = session_request(args, options) else {
        return Ok(None);
    };
    let socket = args
        .agent_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(session::DEFAULT_SOCKET));
    match runtime.block_on(SessionClient::connect(&socket)) {
        Ok(client) => run_through_agent(runtime, client, &request, args).map(Some),
        // An explicit socket must answer; the default one is used only when it does.
        Err(err) if args.agent_socket.is_some() => Err(anyhow::Error::new(err).context(
            "start the agent (headroom agent), or drop --agent-socket to capture standalone",
        )),
        Err(_) => Ok(None),
    }
}

/// The request for a session through the agent, for targets an agent can serve.
fn session_request(args: &CaptureArgs, options: &CaptureOptions) -> Option<SessionRequest> {
    // Agent sessions send back folded stacks only, not the symbolized profile --pprof needs,
    // and name sources with the built-in list of internal frames.
    if args.standalone
        || args.stacks.pprof.is_some()
        || args.stacks.internal_frames != crate::stacks::naming::InternalFrames::default()
    {
        return None;
    }
    let target = match &options.target {
        TargetSpec::Cgroup(path) => SessionTarget::Cgroup { path: path.clone() },
        TargetSpec::Pod {
            namespace,
            name,
            container,
        } => SessionTarget::Pod {
            namespace: namespace.clone(),
            name: name.clone(),
            container: container.clone(),
        },
        _ => return None,
    };
    let stacks = options.stacks.clone().unwrap_or(StackSettings {
        // The agent samples the session's cgroup; "off" there means the coarsest sampling.
        fault_sample_bytes: 1 << 30,
        reservation_threshold_bytes: 1 << 40,
        ..StackSettings::default()
    });
    Some(SessionRequest {
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
        headroom: options.policy.headroom,
    })
}

/// Runs the session in the agent, with a progress bar, and writes what it returns.
fn run_through_agent(
    runtime: &tokio::runtime::Runtime,
    client: SessionClient,
    request: &SessionRequest,
    args: &CaptureArgs,
) -> anyhow::Result<u8> {
    let bar = progress_bar(request.duration_ms);
    let result = runtime.block_on(client.run(request, |elapsed, duration, peak| {
        bar.set_length(duration);
        bar.set_position(elapsed);
        bar.set_message(crate::units::format_bytes(peak));
    }));
    bar.finish_and_clear();
    let (rendered, folded) = result?;
    emit(args.output.as_deref(), &rendered, false)?;
    write_stack_files(
        &args.stacks,
        &folded,
        "headroom: memory made (session through the agent)",
    )?;
    Ok(0)
}

/// The bar shown while the agent captures: the session has no output of its own until it
/// ends, so time left and the peak so far say it is alive.
fn progress_bar(duration_ms: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(duration_ms);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} capturing through the agent [{bar:30}] {eta} left, peak {msg} (Ctrl-C ends early and still reports)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
