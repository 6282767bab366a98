//! `capture --all`: kernel counters of every cgroup on the node, each attributed at the end
//! to a container, a host service, or "unattributed" with the reason.

use std::{path::Path, time::Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::{CaptureError, CaptureOptions, NodeOptions};
use crate::{
    attribution::{self, Attribution, CgroupResolver},
    cgroups,
    probes::{ProbeConfig, ProbeError, Probes},
    procfs,
    recording::TargetReportBuilder,
    report::{CaptureReport, ReportMode, TargetKind, REPORT_SCHEMA},
};

/// Pods kept by a node-wide capture (kubelet's default is 110 a node).
const NODE_POD_CAPACITY: usize = 1024;
/// Cgroup paths remembered by a node-wide capture.
const NODE_CGROUP_CAPACITY: usize = 16_384;

/// Every cgroup on the node: kernel counters per cgroup, attributed at the end.
pub(super) async fn run(
    options: &CaptureOptions,
    node: &NodeOptions,
) -> Result<CaptureReport, CaptureError> {
    let metadata =
        attribution::start_metadata(node.metadata, node.node.as_deref(), NODE_POD_CAPACITY).await?;
    let mut probes = Probes::load(&ProbeConfig {
        trace_all_cgroups: true,
        // Every mapping change on a node is too many events; node-wide figures come from the
        // kernel counters. No timelines either, so no windows.
        track_regions: false,
        track_windows: false,
        ..ProbeConfig::default()
    })?;
    super::announce(&options.target, options.duration);
    let (duration, undecodable) = drain_until_done(&mut probes, options).await?;
    let hierarchies = cgroups::Hierarchies::discover(Path::new("/"))?;
    let mut resolver = CgroupResolver::new(&hierarchies.unified, NODE_CGROUP_CAPACITY);
    let pods = metadata.as_ref().and_then(|(cache, _)| cache.lock().ok());
    let mut targets = Vec::new();
    for (target_id, counters) in probes.all_target_counters()? {
        let path = resolver.resolve(target_id);
        let (attribution, kubernetes) = attribution::attribute(path.as_deref(), pods.as_deref());
        let attribution = name_host_by_process(attribution, path.as_deref(), &hierarchies);
        let charge = path
            .as_deref()
            .and_then(|path| hierarchies.charge_reader(path));
        let mut builder = TargetReportBuilder::new(TargetKind::Cgroup, target_id)
            .watched(None, path, Vec::new())
            .identity(Some(attribution), kubernetes)
            .counters(&counters, None)
            .kernel_entries(probes.kernel_entries(target_id)?);
        if let Some(charge) = &charge {
            builder = builder.charge_snapshot(charge);
        }
        targets.push(builder.build().0);
    }
    drop(pods);
    if let Some((_, task)) = metadata {
        task.abort();
    }
    targets.sort_by_key(|t| std::cmp::Reverse(t.resident.peak_bytes));
    Ok(CaptureReport {
        schema: REPORT_SCHEMA.to_owned(),
        mode: ReportMode::Node,
        duration_seconds: duration.as_secs_f64(),
        sample_interval_ms: 0,
        targets,
        drops: probes.drops()?,
        undecodable_events: undecodable,
        folded_stacks: Vec::new(),
        stack_profile: None,
    })
}

/// A host cgroup that is not a systemd unit is named by its main process as well.
fn name_host_by_process(
    mut attribution: Attribution,
    path: Option<&str>,
    hierarchies: &cgroups::Hierarchies,
) -> Attribution {
    if let (Attribution::Host { name }, Some(path)) = (&mut attribution, path) {
        if name.as_str() == path {
            let dir = hierarchies.unified.join(path.trim_start_matches('/'));
            let main_process = procfs::read_pids(&dir.join("cgroup.procs"), 1)
                .first()
                .and_then(|&pid| procfs::command_name(Path::new("/"), pid));
            if let Some(command) = main_process {
                *name = format!("{path} ({command})");
            }
        }
    }
    attribution
}

/// Drains the ring buffer (checking only that records decode) until the duration ends or a
/// signal arrives; returns how long that was and how many records did not decode.
async fn drain_until_done(
    probes: &mut Probes,
    options: &CaptureOptions,
) -> Result<(std::time::Duration, u64), CaptureError> {
    let mut events = probes
        .take_event_stream()?
        .ok_or_else(|| ProbeError::MissingMap(profiler_common::map::EVENTS))?;
    let mut interrupts = signal(SignalKind::interrupt()).map_err(CaptureError::Signals)?;
    let mut terminations = signal(SignalKind::terminate()).map_err(CaptureError::Signals)?;
    let started = Instant::now();
    let deadline = super::sleep_or_forever(options.duration);
    tokio::pin!(deadline);
    let mut undecodable = 0u64;
    loop {
        tokio::select! {
            () = &mut deadline => break,
            batch = events.next_batch() => {
                undecodable += batch?.iter().filter(|event| event.is_err()).count() as u64;
            }
            _ = interrupts.recv() => break,
            _ = terminations.recv() => break,
        }
    }
    let duration = started.elapsed();
    undecodable += events
        .drain_now()
        .iter()
        .filter(|event| event.is_err())
        .count() as u64;
    Ok((duration, undecodable))
}
