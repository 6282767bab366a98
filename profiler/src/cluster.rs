//! Cluster-wide recommendations from Prometheus: the agents' series, aggregated per workload
//! across replicas and nodes with PromQL (peaks: max across replicas), fed to the sizing rule.
//!
//! Prometheus is the store that aggregates across nodes; headroom builds none of its own.

use std::{collections::BTreeMap, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use thiserror::Error;

use crate::sizing::{Observation, OomSeen};

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("`{0}` is not an http://HOST:PORT Prometheus URL (https is not supported yet)")]
    BadUrl(String),
    #[error("cannot reach Prometheus at {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP to Prometheus at {url} failed")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("Prometheus answered `{query}` with: {message}")]
    Query { query: String, message: String },
    #[error("Prometheus has no headroom series in the last {window} (are the agents scraped? see deploy/headroom.yaml's PodMonitor)")]
    NoData { window: String },
}

/// Which workload a series belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub namespace: String,
    pub workload: String,
    pub container: String,
}

impl WorkloadKey {
    fn from_metric(metric: &Value) -> Self {
        let label = |name: &str| {
            metric
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Self {
            namespace: label("namespace"),
            workload: label("workload"),
            container: label("container"),
        }
    }

    pub fn name(&self) -> String {
        let mut parts = Vec::new();
        if !self.namespace.is_empty() {
            parts.push(self.namespace.clone());
        }
        if !self.workload.is_empty() {
            parts.push(self.workload.clone());
        }
        let base = parts.join("/");
        if base.is_empty() {
            self.container.clone()
        } else {
            format!("{base} [{}]", self.container)
        }
    }
}

/// A minimal Prometheus HTTP API client (HTTP/1.1 over loopback or the cluster network).
pub struct Prometheus {
    authority: String,
    url: String,
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    pub fn new(url: &str) -> Result<Self, ClusterError> {
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| ClusterError::BadUrl(url.to_owned()))?;
        Ok(Self {
            authority: authority.to_owned(),
            url: url.to_owned(),
        })
    }

    async fn get(&self, path_and_query: &str) -> Result<Value, ClusterError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|source| ClusterError::Connect {
                url: self.url.clone(),
                source,
            })?;
        let http_error = |source| ClusterError::Http {
            url: self.url.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        let driver = tokio::spawn(connection);
        let request = Request::get(path_and_query)
            .header(hyper::header::HOST, &self.authority)
            .body(Empty::<Bytes>::new())
            .map_err(|err| ClusterError::Query {
                query: path_and_query.to_owned(),
                message: err.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        driver.abort();
        serde_json::from_slice(&body).map_err(|err| ClusterError::Query {
            query: path_and_query.to_owned(),
            message: format!("not JSON: {err}"),
        })
    }

    fn data(query: &str, answer: Value) -> Result<Vec<Value>, ClusterError> {
        if answer["status"] != "success" {
            return Err(ClusterError::Query {
                query: query.to_owned(),
                message: answer["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
            });
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// An instant query: one value per series.
    pub async fn query(&self, query: &str) -> Result<BTreeMap<WorkloadKey, f64>, ClusterError> {
        let answer = self
            .get(&format!("/api/v1/query?query={}", percent_encode(query)))
            .await?;
        Ok(Self::data(query, answer)?
            .iter()
            .filter_map(|series| {
                let value = series["value"][1].as_str()?.parse::<f64>().ok()?;
                value
                    .is_finite()
                    .then(|| (WorkloadKey::from_metric(&series["metric"]), value))
            })
            .collect())
    }

    /// A range query from `start` to `end` (Unix seconds), `step` apart: the points present
    /// per series, as (timestamp, value).
    pub async fn query_range(
        &self,
        query: &str,
        (start, end): (f64, f64),
        step: Duration,
    ) -> Result<BTreeMap<WorkloadKey, Vec<(f64, f64)>>, ClusterError> {
        let answer = self
            .get(&format!(
                "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={:.3}",
                percent_encode(query),
                step.as_secs_f64().max(1.0)
            ))
            .await?;
        Ok(matrix(&Self::data(query, answer)?))
    }
}

/// The points of a range query's answer (`data.result` of a matrix) by workload, as
/// (timestamp, value); values that are not finite numbers are left out.
fn matrix(result: &[Value]) -> BTreeMap<WorkloadKey, Vec<(f64, f64)>> {
    result
        .iter()
        .map(|series| {
            let points = series["values"]
                .as_array()
                .map(|points| {
                    points
                        .iter()
                        .filter_map(|point| {
                            let at = point[0].as_f64()?;
                            let value = point[1].as_str()?.parse::<f64>().ok()?;
                            value.is_finite().then_some((at, value))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (WorkloadKey::from_metric(&series["metric"]), points)
        })
        .collect()
}

/// PromQL duration (`3600s`).
fn promql_duration(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

/// Points a range query returns over the window at most: the step is the window (or, when
/// the data starts later, the span present) divided by this.
const RANGE_POINTS: u32 = 240;
/// A workload with fewer points than this at the window's step (one that lived a short part
/// of a long window) is read again over its own span, so its span and points are not rounded
/// to the window's step...
const REFINE_BELOW_POINTS: usize = 60;
/// ...for at most this many workloads (one query each); the others keep the window's step,
/// which understates their span by at most one step (lower confidence, never higher).
const MAX_REFINED: usize = 64;

/// The PromQL selector of exactly one workload's series.
fn workload_selector(key: &WorkloadKey) -> String {
    let quoted = |value: &str| value.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "{{namespace=\"{}\",workload=\"{}\",container=\"{}\"}}",
        quoted(&key.namespace),
        quoted(&key.workload),
        quoted(&key.container)
    )
}

/// OOM kills in the window, per workload: for each series, its highest value less its lowest
/// (or less 0 when the series began inside the window: the agent exports the counter from
/// the tick it first sees a container, so a series whose first sample is already 1 counts
/// that kill). Not `increase()`: it extrapolates to the window's edges (fractions of a kill)
/// and ignores the first sample of a series that begins inside the window, so a container
/// killed before its first scrape counted 0. Counter resets (an agent restart on a kernel
/// without the cgroup's own OOM counter) are not added up; with that counter (v2
/// memory.events, v1 memory.oom_control) the exported value is the cgroup's lifetime count
/// and does not reset.
fn oom_kills_query(selector: &str, w: &str) -> String {
    let c = format!("headroom_container_oom_kills_total{selector}");
    format!(
        "sum by (namespace, workload, container) (max_over_time({c}[{w}]) - ((min_over_time({c}[{w}]) and ({c} offset {w})) or (max_over_time({c}[{w}]) * 0)))"
    )
}

/// One observation per workload (namespace, workload, container) from the agents' series of
/// the last `window`. The observed span and points are those of the data Prometheus holds,
/// not the window asked for.
pub async fn observations(
    prometheus: &Prometheus,
    window: Duration,
    namespace: Option<&str>,
) -> Result<Vec<(WorkloadKey, Observation)>, ClusterError> {
    let selector = match namespace {
        Some(namespace) => format!("{{namespace=\"{}\"}}", namespace.replace('"', "")),
        None => String::new(),
    };
    let w = promql_duration(window);
    let by = "by (namespace, workload, container)";
    let peaks = prometheus
        .query(&format!(
            "max {by} (max_over_time(headroom_container_memory_charged_peak_bytes{selector}[{w}]))"
        ))
        .await?;
    if peaks.is_empty() {
        return Err(ClusterError::NoData {
            window: humanize(window),
        });
    }
    let startup = prometheus
        .query(&format!(
            "max {by} (max_over_time(headroom_container_memory_startup_peak_bytes{selector}[{w}]))"
        ))
        .await?;
    let limits = prometheus
        .query(&format!(
            "min {by} (headroom_container_memory_limit_bytes{selector})"
        ))
        .await?;
    let ooms = prometheus.query(&oom_kills_query(&selector, &w)).await?;
    // The limit a kill hit: the agent's gauge of the limit at the last kill; from agents
    // without it, the lowest limit of the window (the kill's limit was at least that, so the
    // floor stays a lower bound), never today's limit.
    let limits_at_oom = prometheus
        .query(&format!(
            "max {by} (max_over_time(headroom_container_memory_limit_at_oom_bytes{selector}[{w}]))"
        ))
        .await?;
    let lowest_limits = prometheus
        .query(&format!(
            "min {by} (min_over_time(headroom_container_memory_limit_bytes{selector}[{w}]))"
        ))
        .await?;
    let replicas = prometheus
        .query(&format!(
            "count {by} (max by (namespace, workload, container, pod, instance) (last_over_time(headroom_container_memory_charged_bytes{selector}[{w}])))"
        ))
        .await?;
    let samples = prometheus
        .query(&format!(
            "sum {by} (count_over_time(headroom_container_memory_charged_bytes{selector}[{w}]))"
        ))
        .await?;
    // The charge over the window, the highest replica at each step: the steady state is pooled
    // from it and a leak shows in it. When the data begins well inside the window, it is read
    // again over the span present, so a short history gets as many points as it holds.
    let charge = format!("max {by} (headroom_container_memory_charged_bytes{selector})");
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut step = (window / RANGE_POINTS).max(Duration::from_secs(1));
    let mut series = prometheus
        .query_range(&charge, (end - window.as_secs_f64(), end), step)
        .await?;
    let first = series
        .values()
        .filter_map(|points| points.first().map(|(at, _)| *at))
        .fold(f64::INFINITY, f64::min);
    let from = first - step.as_secs_f64();
    if first.is_finite() && from > end - window.as_secs_f64() {
        let fine = Duration::from_secs_f64((end - from) / f64::from(RANGE_POINTS))
            .max(Duration::from_secs(1));
        // Only when it at least halves the step: data that begins a step or so late (or a
        // clock a few milliseconds apart) is not worth a second query.
        if fine.as_secs_f64() <= step.as_secs_f64() / 2.0 {
            step = fine;
            series = prometheus.query_range(&charge, (from, end), step).await?;
        }
    }
    let mut steps = BTreeMap::new();
    let short: Vec<(WorkloadKey, f64, f64)> = series
        .iter()
        .filter(|(_, points)| !points.is_empty() && points.len() < REFINE_BELOW_POINTS)
        .filter_map(|(key, points)| Some((key.clone(), points.first()?.0, points.last()?.0)))
        .take(MAX_REFINED)
        .collect();
    for (key, first, last) in short {
        let span = (
            first - step.as_secs_f64(),
            (last + step.as_secs_f64()).min(end),
        );
        let fine = Duration::from_secs_f64((span.1 - span.0).max(0.0) / f64::from(RANGE_POINTS))
            .max(Duration::from_secs(1));
        if fine.as_secs_f64() > step.as_secs_f64() / 2.0 {
            continue;
        }
        let query = format!(
            "max {by} (headroom_container_memory_charged_bytes{})",
            workload_selector(&key)
        );
        if let Some(points) = prometheus
            .query_range(&query, span, fine)
            .await?
            .remove(&key)
        {
            series.insert(key.clone(), points);
            steps.insert(key, fine);
        }
    }
    let fleet = FleetSeries {
        startup,
        limits,
        ooms,
        limits_at_oom,
        lowest_limits,
        replicas,
        samples,
        series,
        step,
        steps,
        window,
    };
    Ok(peaks
        .into_iter()
        .map(|(key, peak)| {
            let observation = fleet.observation(&key, peak);
            (key, observation)
        })
        .collect())
}

/// The agents' series of one window, by workload.
struct FleetSeries {
    startup: BTreeMap<WorkloadKey, f64>,
    limits: BTreeMap<WorkloadKey, f64>,
    ooms: BTreeMap<WorkloadKey, f64>,
    limits_at_oom: BTreeMap<WorkloadKey, f64>,
    lowest_limits: BTreeMap<WorkloadKey, f64>,
    replicas: BTreeMap<WorkloadKey, f64>,
    /// Samples of the charge Prometheus holds in the window (all replicas).
    samples: BTreeMap<WorkloadKey, f64>,
    series: BTreeMap<WorkloadKey, Vec<(f64, f64)>>,
    step: Duration,
    /// The step of workloads read again over their own span.
    steps: BTreeMap<WorkloadKey, Duration>,
    window: Duration,
}

/// What Prometheus holds of one workload's charge: the seconds from its first point to its
/// last, and how many points (never more than the samples stored: a step finer than the
/// scrape interval repeats samples).
fn data_present(points: &[(f64, f64)], samples: Option<f64>) -> (f64, usize) {
    let span = match (points.first(), points.last()) {
        (Some((first, _)), Some((last, _))) => (last - first).max(0.0),
        _ => 0.0,
    };
    let stored = samples.map_or(usize::MAX, |s| s.max(0.0).round() as usize);
    (span, points.len().min(stored))
}

impl FleetSeries {
    /// What sizing reads for one workload. Prometheus holds per-interval figures, not the
    /// per-target report an agent or capture builds, so this is the one observation built
    /// outside `Observation::from_target`.
    fn observation(&self, key: &WorkloadKey, peak: f64) -> Observation {
        let startup_peak = self.startup.get(key).copied();
        let step = self.steps.get(key).copied().unwrap_or(self.step);
        let points = self.series.get(key).map_or(&[][..], Vec::as_slice);
        let (span, present) = data_present(points, self.samples.get(key).copied());
        // Evenly thinned to the samples stored, so the points sizing counts are samples.
        let stride = points.len().div_ceil(present.max(1)).max(1);
        let charged: Vec<u64> = points
            .iter()
            .step_by(stride)
            .map(|(_, v)| *v as u64)
            .collect();
        let oom_count = self.ooms.get(key).copied().unwrap_or(0.0).round().max(0.0) as usize;
        let limit_at_oom = self
            .limits_at_oom
            .get(key)
            .or_else(|| self.lowest_limits.get(key))
            .map(|v| *v as u64);
        Observation {
            name: key.name(),
            basis: crate::report::Basis::Charged,
            duration_seconds: span,
            saw_start: startup_peak.is_some(),
            startup_seconds: startup_peak.map(|_| 0.0),
            startup_peak_bytes: startup_peak.unwrap_or(0.0) as u64,
            startup_peak_at_seconds: None,
            steady_series: charged,
            resolution_ms: (step.as_millis() as u64).saturating_mul(stride as u64),
            peak_bytes: peak as u64,
            spikes: Vec::new(),
            // The charge at a kill is the limit it hit (the limit in force then); the floor
            // builds on it.
            ooms: (0..oom_count)
                .map(|_| OomSeen {
                    seconds: 0.0,
                    charge_before_bytes: limit_at_oom.unwrap_or(peak as u64),
                    limit_bytes: limit_at_oom,
                    victim_bytes: 0,
                })
                .collect(),
            current_limit_bytes: self.limits.get(key).map(|v| *v as u64),
            current_request_bytes: None,
            reserved_peak_bytes: 0,
            no_access_peak_bytes: 0,
            resident_peak_bytes: 0,
            restarts: self
                .replicas
                .get(key)
                .map_or(0, |r| (*r as u64).saturating_sub(1)),
            replicas: 1,
            asked_seconds: Some(self.window.as_secs_f64()),
            ..Observation::default()
        }
    }
}

fn humanize(window: Duration) -> String {
    let seconds = window.as_secs();
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_authorities() {
        assert!(Prometheus::new("http://127.0.0.1:9090").is_ok());
        assert!(Prometheus::new("http://prom:9090/").is_ok());
        for bad in [
            "https://p:9090",
            "127.0.0.1:9090",
            "http://",
            "http://p:9090/api",
        ] {
            assert!(Prometheus::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode("max by (a) (x{n=\"y\"}[5m])"),
            "max%20by%20%28a%29%20%28x%7Bn%3D%22y%22%7D%5B5m%5D%29"
        );
    }

    #[test]
    fn workload_names_read_well() {
        let key = WorkloadKey {
            namespace: "shop".into(),
            workload: "Deployment/web".into(),
            container: "app".into(),
        };
        assert_eq!(key.name(), "shop/Deployment/web [app]");
        let host = WorkloadKey {
            container: "/system.slice/x.service".into(),
            ..WorkloadKey {
                namespace: String::new(),
                workload: String::new(),
                container: String::new(),
            }
        };
        assert_eq!(host.name(), "/system.slice/x.service");
        assert_eq!(humanize(Duration::from_secs(7 * 86_400)), "7d");
    }

    fn key(container: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: "shop".into(),
            workload: "Deployment/web".into(),
            container: container.into(),
        }
    }

    #[test]
    fn range_answers_keep_each_points_time() {
        let answer: Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"namespace":"shop","workload":"Deployment/web","container":"app"},
                 "values":[[1700000000,"100"],[1700000001.5,"NaN"],[1700000003,"300"]]}]}}"#,
        )
        .expect("json");
        let result = Prometheus::data("q", answer).expect("success");
        let points = matrix(&result);
        assert_eq!(
            points[&key("app")],
            vec![(1_700_000_000.0, 100.0), (1_700_000_003.0, 300.0)]
        );
    }

    #[test]
    fn the_span_and_points_are_those_present_never_more_than_the_samples_stored() {
        let points: Vec<(f64, f64)> = (0..41).map(|i| (1000.0 + f64::from(i), 1.0)).collect();
        assert_eq!(data_present(&points, Some(41.0)), (40.0, 41));
        // A step finer than the scrape interval repeats samples: 41 points, 9 samples.
        assert_eq!(data_present(&points, Some(9.0)), (40.0, 9));
        assert_eq!(data_present(&[], None), (0.0, 0));
    }

    fn fleet(points: Vec<(f64, f64)>, window: Duration) -> FleetSeries {
        let one = |v: f64| BTreeMap::from([(key("app"), v)]);
        let samples = points.len() as f64;
        FleetSeries {
            startup: one(50.0 * 1048576.0),
            limits: one(512.0 * 1048576.0),
            ooms: one(1.0),
            limits_at_oom: one(64.0 * 1048576.0),
            lowest_limits: one(64.0 * 1048576.0),
            replicas: one(1.0),
            samples: one(samples),
            series: BTreeMap::from([(key("app"), points)]),
            step: Duration::from_secs(1),
            steps: BTreeMap::new(),
            window,
        }
    }

    #[test]
    fn observations_are_sized_from_the_data_present_and_the_limit_at_the_kill() {
        // 40 s of points at 1 s when an hour was asked for; killed under 64 MiB, 512 MiB now.
        let points: Vec<(f64, f64)> = (0..41)
            .map(|i| (1000.0 + f64::from(i), 40.0 * 1048576.0))
            .collect();
        let o = fleet(points, Duration::from_secs(3600)).observation(&key("app"), 60.0 * 1048576.0);
        assert_eq!(o.duration_seconds, 40.0);
        assert_eq!(o.steady_series.len(), 41);
        assert_eq!(o.resolution_ms, 1000);
        assert_eq!(o.asked_seconds, Some(3600.0));
        assert_eq!(o.ooms.len(), 1);
        assert_eq!(o.ooms[0].limit_bytes, Some(64 << 20));
        assert_eq!(o.current_limit_bytes, Some(512 << 20));
        let (r, _) = crate::sizing::recommend(&o, 0.25);
        // max(64 MiB + 100 MiB, 64 MiB × 1.2): the limit the kill hit, not today's 512 MiB.
        assert_eq!(r.oom_floor_bytes, Some(164 << 20));
        assert_eq!(r.confidence, crate::report::Confidence::Low, "an OOM kill");
        assert!(r.confidence_reasons[0].starts_with("observed 40 s (41 buckets"));
    }

    #[test]
    fn a_container_never_scraped_alive_is_sized_from_its_kept_series_alone() {
        // Killed and removed between two scrapes: Prometheus holds its kept series (peak, OOM
        // counter, limit at the kill) and no charge at all.
        let o =
            fleet(Vec::new(), Duration::from_secs(300)).observation(&key("app"), 60.0 * 1048576.0);
        assert_eq!((o.duration_seconds, o.steady_series.len()), (0.0, 0));
        let (r, _) = crate::sizing::recommend(&o, 0.25);
        assert_eq!(r.oom_floor_bytes, Some(164 << 20));
        assert_eq!(r.confidence, crate::report::Confidence::Low);
        assert!(r.confidence_reasons[0].starts_with("observed 0 s (0 buckets"));
    }

    #[test]
    fn one_workloads_selector_quotes_its_labels() {
        let key = WorkloadKey {
            namespace: String::new(),
            workload: String::new(),
            container: "/odd\"name\\x".into(),
        };
        assert_eq!(
            workload_selector(&key),
            r#"{namespace="",workload="",container="/odd\"name\\x"}"#
        );
    }

    #[test]
    fn oom_kills_count_a_series_that_begins_inside_the_window_from_zero() {
        let q = oom_kills_query("{namespace=\"shop\"}", "300s");
        assert_eq!(
            q,
            "sum by (namespace, workload, container) (max_over_time(headroom_container_oom_kills_total{namespace=\"shop\"}[300s]) - ((min_over_time(headroom_container_oom_kills_total{namespace=\"shop\"}[300s]) and (headroom_container_oom_kills_total{namespace=\"shop\"} offset 300s)) or (max_over_time(headroom_container_oom_kills_total{namespace=\"shop\"}[300s]) * 0)))"
        );
        assert!(!q.contains("increase("));
    }

    /// A stand-in for Prometheus's HTTP API: instant queries answer peaks and samples for two
    /// workloads, range queries answer points every `step` where each workload had data.
    /// "long" has data over the whole day asked for; "short" lived 600 s of it.
    mod fake {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        pub const DAY: f64 = 86_400.0;
        pub const SHORT: (f64, f64) = (40_000.0, 40_600.0);

        fn decode(text: &str) -> String {
            let bytes = text.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("utf-8")
        }

        fn param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
            path.split(['?', '&'])
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        }

        fn metric(container: &str) -> String {
            format!(
                r#"{{"namespace":"shop","workload":"Deployment/web","container":"{container}"}}"#
            )
        }

        /// The answer to one request path.
        pub fn answer(path: &str, now: f64) -> String {
            let query = decode(param(path, "query").unwrap_or(""));
            let start_of_day = now - DAY;
            if path.starts_with("/api/v1/query_range") {
                let number = |name| param(path, name).and_then(|v| v.parse::<f64>().ok());
                let (start, end, step) = (
                    number("start").expect("start"),
                    number("end").expect("end"),
                    number("step").expect("step"),
                );
                let mut result = Vec::new();
                for (container, (from, to)) in [
                    ("long", (start_of_day, now)),
                    ("short", (start_of_day + SHORT.0, start_of_day + SHORT.1)),
                ] {
                    if query.contains("container=") && !query.contains(container) {
                        continue;
                    }
                    let mut points = Vec::new();
                    let mut at = start;
                    while at <= end + 1e-6 {
                        if (from..=to).contains(&at) {
                            points.push(format!(r#"[{at:.3},"1048576"]"#));
                        }
                        at += step;
                    }
                    if !points.is_empty() {
                        result.push(format!(
                            r#"{{"metric":{},"values":[{}]}}"#,
                            metric(container),
                            points.join(",")
                        ));
                    }
                }
                return format!(
                    r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
                    result.join(",")
                );
            }
            let value = |container: &str, v: f64| {
                format!(
                    r#"{{"metric":{},"value":[{now},"{v}"]}}"#,
                    metric(container)
                )
            };
            let result = if query.contains("charged_peak_bytes") {
                vec![value("long", 2e6), value("short", 2e6)]
            } else if query.contains("count_over_time") {
                // Scraped every second.
                vec![value("long", DAY), value("short", SHORT.1 - SHORT.0)]
            } else {
                Vec::new()
            };
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                result.join(",")
            )
        }

        /// Serves `answer` on a loopback port until the runtime ends; returns the port.
        pub async fn serve() -> u16 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            break;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("time")
                        .as_secs_f64();
                    let body = answer(&path, now);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                }
            });
            port
        }
    }

    #[test]
    fn a_workload_that_lived_a_short_part_of_the_window_is_read_over_its_own_span() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let observed = runtime.block_on(async {
            let port = fake::serve().await;
            let prometheus = Prometheus::new(&format!("http://127.0.0.1:{port}")).expect("url");
            observations(&prometheus, Duration::from_secs(86_400), None)
                .await
                .expect("observations")
        });
        let find = |container: &str| {
            observed
                .iter()
                .find(|(key, _)| key.container == container)
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| panic!("no {container}"))
        };
        let long = find("long");
        assert!(
            long.duration_seconds >= fake::DAY - 360.0,
            "{}",
            long.duration_seconds
        );
        assert_eq!(long.resolution_ms, 360_000);
        assert_eq!(long.asked_seconds, Some(fake::DAY));
        // At the day's 360 s step the short one shows as 1-2 points and 0-360 s; read again
        // over its own span (about 1,300 s at 5.5 s) it is 600 s and about 110 points.
        let short = find("short");
        let span = fake::SHORT.1 - fake::SHORT.0;
        assert!(
            (short.duration_seconds - span).abs() <= 6.0,
            "{} s",
            short.duration_seconds
        );
        assert!(
            short.steady_series.len() >= 100,
            "{}",
            short.steady_series.len()
        );
        assert!(short.resolution_ms < 6_000, "{}", short.resolution_ms);
    }
}
