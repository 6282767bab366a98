//! `headroom recommend`: its flags, and recommendations from saved capture reports or from
//! the agents' series in Prometheus, rendered in the format asked for.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{output::emit, Format, SizingArgs};
use crate::{
    cluster::{Prometheus, WorkloadKey},
    report::{render, CaptureReport, Checklist, Recommendation, REPORT_SCHEMA},
    sizing::{self, Observation},
    units::{parse_bytes, parse_window},
};

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

/// Runs `headroom recommend`: one recommendation for the saved reports, taken as replicas of
/// one workload, or one per workload from Prometheus.
pub(super) fn run_recommend(args: RecommendArgs) -> anyhow::Result<u8> {
    if let Some(url) = &args.prometheus {
        return run_recommend_prometheus(url, &args);
    }
    let mut merged = merge_reports(&args.reports)?;
    if args.current_limit.is_some() {
        merged.current_limit_bytes = args.current_limit;
    }
    merged.current_request_bytes = args.current_request;
    let (recommendation, checklist) = sizing::recommend_with(&merged, &args.sizing.policy()?);
    let rendered = render_for_reports(&args, &merged.name, &recommendation, &checklist)?;
    emit(args.output.as_deref(), &rendered, false)?;
    Ok(0)
}

/// Reads every report and merges their targets into one observation (highest peaks, the worst
/// replica's steady state); errors name the file they come from.
fn merge_reports(paths: &[PathBuf]) -> anyhow::Result<Observation> {
    let mut observations = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read report {}: {err}", path.display()))?;
        let report =
            read_report(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        observations.extend(
            Observation::from_report(&report)
                .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?,
        );
    }
    Observation::merge(&observations).ok_or_else(|| anyhow::anyhow!("the reports hold no targets"))
}

/// Parses a saved `headroom.report/v1` document, naming what is wrong with anything else.
fn read_report(text: &str) -> anyhow::Result<CaptureReport> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| {
        anyhow::anyhow!("not JSON ({err}); write reports with `headroom capture --format json`")
    })?;
    let schema = value.get("schema").and_then(serde_json::Value::as_str);
    if schema != Some(REPORT_SCHEMA) {
        return Err(sizing::SizingError::WrongSchema(schema.unwrap_or("").to_owned()).into());
    }
    serde_json::from_value(value).map_err(|err| {
        anyhow::anyhow!(
            "not a readable {} document ({err}); write reports with `headroom capture --format json`",
            REPORT_SCHEMA
        )
    })
}

/// The recommendation for saved reports in the format asked for.
fn render_for_reports(
    args: &RecommendArgs,
    name: &str,
    recommendation: &Recommendation,
    checklist: &Checklist,
) -> anyhow::Result<String> {
    Ok(match args.format {
        Format::Table => format!(
            "{name}\n{}",
            render::render_recommendation(recommendation, checklist)
        ),
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "schema": "headroom.recommendation/v1",
                "target": name,
                "reports": args.reports,
                "recommendation": recommendation,
                "checklist": checklist,
            }))? + "\n"
        }
        Format::Markdown => render::render_recommendation_markdown(name, recommendation, checklist),
        Format::Yaml => render::yaml_patch(recommendation, name, args.sizing.container.as_deref()),
    })
}

/// One recommendation per workload from Prometheus.
fn run_recommend_prometheus(url: &str, args: &RecommendArgs) -> anyhow::Result<u8> {
    let prometheus = Prometheus::new(url)?;
    let runtime = super::current_thread_runtime()?;
    let workloads = runtime.block_on(crate::cluster::observations(
        &prometheus,
        args.window,
        args.namespace.as_deref(),
    ))?;
    let rendered = render_workloads(url, args, &workloads)?;
    emit(args.output.as_deref(), &rendered, false)?;
    Ok(0)
}

/// The workloads' recommendations in the format asked for: one after the other for text
/// formats (YAML as a multi-document stream), one document listing them all for JSON.
fn render_workloads(
    url: &str,
    args: &RecommendArgs,
    workloads: &[(WorkloadKey, Observation)],
) -> anyhow::Result<String> {
    let mut rendered = String::new();
    let mut json = Vec::new();
    let policy = args.sizing.policy()?;
    for (key, observation) in workloads {
        let (recommendation, checklist) = sizing::recommend_with(observation, &policy);
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
                // What Prometheus held for it: the span and points sized from, and the kills.
                "observed_seconds": observation.duration_seconds,
                "points": observation.steady_series.len(),
                "oom_kills": observation.ooms.len(),
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
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::Cli;

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
}
