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

    /// A range query over the last `window`: values per series, `step` apart.
    pub async fn query_range(
        &self,
        query: &str,
        window: Duration,
        step: Duration,
    ) -> Result<BTreeMap<WorkloadKey, Vec<f64>>, ClusterError> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let answer = self
            .get(&format!(
                "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step={:.3}",
                percent_encode(query),
                end - window.as_secs_f64(),
                step.as_secs_f64().max(1.0)
            ))
            .await?;
        Ok(Self::data(query, answer)?
            .iter()
            .map(|series| {
                let values = series["values"]
                    .as_array()
                    .map(|points| {
                        points
                            .iter()
                            .filter_map(|point| point[1].as_str()?.parse::<f64>().ok())
                            .filter(|v| v.is_finite())
                            .collect()
                    })
                    .unwrap_or_default();
                (WorkloadKey::from_metric(&series["metric"]), values)
            })
            .collect())
    }
}

/// PromQL duration (`3600s`).
fn promql_duration(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

/// One observation per workload (namespace, workload, container) from the agents' series of
/// the last `window`.
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
    let ooms = prometheus
        .query(&format!(
            "sum {by} (increase(headroom_container_oom_kills_total{selector}[{w}]))"
        ))
        .await?;
    let replicas = prometheus
        .query(&format!(
            "count {by} (max by (namespace, workload, container, pod, instance) (last_over_time(headroom_container_memory_charged_bytes{selector}[{w}])))"
        ))
        .await?;
    let step = (window / 240).max(Duration::from_secs(1));
    // The charge over the window, the highest replica at each step: the steady state is pooled
    // from it and a leak shows in it.
    let series = prometheus
        .query_range(
            &format!("max {by} (headroom_container_memory_charged_bytes{selector})"),
            window,
            step,
        )
        .await?;
    let fleet = FleetSeries {
        startup,
        limits,
        ooms,
        replicas,
        series,
        step,
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
    replicas: BTreeMap<WorkloadKey, f64>,
    series: BTreeMap<WorkloadKey, Vec<f64>>,
    step: Duration,
    window: Duration,
}

impl FleetSeries {
    /// What sizing reads for one workload. Prometheus holds per-interval figures, not the
    /// per-target report an agent or capture builds, so this is the one observation built
    /// outside `Observation::from_target`.
    fn observation(&self, key: &WorkloadKey, peak: f64) -> Observation {
        let startup_peak = self.startup.get(key).copied();
        let charged: Vec<u64> = self
            .series
            .get(key)
            .map(|values| values.iter().map(|v| *v as u64).collect())
            .unwrap_or_default();
        let oom_count = self.ooms.get(key).copied().unwrap_or(0.0).round() as usize;
        Observation {
            name: key.name(),
            basis: crate::report::Basis::Charged,
            duration_seconds: self.window.as_secs_f64(),
            saw_start: startup_peak.is_some(),
            startup_seconds: startup_peak.map(|_| 0.0),
            startup_peak_bytes: startup_peak.unwrap_or(0.0) as u64,
            startup_peak_at_seconds: None,
            steady_series: charged,
            resolution_ms: self.step.as_millis() as u64,
            peak_bytes: peak as u64,
            spikes: Vec::new(),
            // The charge at a kill is the limit it hit; the floor builds on it.
            ooms: (0..oom_count)
                .map(|_| OomSeen {
                    seconds: 0.0,
                    charge_before_bytes: self.limits.get(key).copied().unwrap_or(peak) as u64,
                    limit_bytes: self.limits.get(key).map(|v| *v as u64),
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
}
