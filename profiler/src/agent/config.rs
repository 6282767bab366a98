//! The agent's configuration: a TOML file and flags. Flags win; unknown keys are errors.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;
use thiserror::Error;

use crate::{
    attribution::MetadataSource,
    units::{parse_duration, parse_headroom},
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message} (see deploy/agent.toml for every key)")]
    Parse { path: String, message: String },
    #[error("{key} = {value:?}: {problem}")]
    Invalid {
        key: &'static str,
        value: String,
        problem: String,
    },
}

/// The file, as written: every key optional, nothing unknown accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub metadata: Option<String>,
    pub node: Option<String>,
    pub interval: Option<String>,
    pub max_containers: Option<usize>,
    pub timeline_buckets: Option<usize>,
    pub headroom: Option<String>,
    pub socket: Option<String>,
    pub expose_api: Option<bool>,
    pub max_connections: Option<usize>,
    pub report_max_bytes: Option<String>,
    pub gone_series_retention: Option<String>,
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// HTTP address for /metrics, /healthz, /readyz and /api/v1/report.
    pub listen: SocketAddr,
    pub metadata: MetadataSource,
    pub node: Option<String>,
    /// How often the kernel counters and cgroup charges are read.
    pub interval: Duration,
    /// Containers tracked at once (bounds the agent's memory and the metrics' label sets).
    pub max_containers: usize,
    /// Timeline buckets kept per container (each bucket is the maximum of one interval; the
    /// resolution halves when full).
    pub timeline_buckets: usize,
    pub headroom: f64,
    /// Unix socket for capture sessions through the agent; `None` turns them off.
    pub socket: Option<std::path::PathBuf>,
    /// Serve `/api/v1/report` (every tenant's names, limits and OOM kills) on non-loopback
    /// addresses too; off by default.
    pub expose_api: bool,
    /// HTTP connections served at once.
    pub max_connections: usize,
    /// Largest `/api/v1/report` body.
    pub report_max_bytes: usize,
    /// How long a gone container's OOM counter, limits and peaks stay exported.
    pub gone_series_retention: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            metadata: MetadataSource::Auto,
            node: None,
            interval: Duration::from_secs(1),
            max_containers: 1000,
            timeline_buckets: 256,
            headroom: crate::sizing::DEFAULT_HEADROOM,
            socket: Some(super::session::DEFAULT_SOCKET.into()),
            expose_api: false,
            max_connections: 256,
            report_max_bytes: 16 << 20,
            gone_series_retention: super::containers::GONE_SERIES_RETENTION,
        }
    }
}

impl AgentConfig {
    pub fn http_limits(&self) -> super::http::HttpLimits {
        super::http::HttpLimits {
            max_connections: self.max_connections,
            report_max_bytes: self.report_max_bytes,
            expose_api: self.expose_api,
        }
    }

    /// Reads a file (when given) over the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: origin.to_owned(),
            message: err.message().to_owned(),
        })?;
        let mut config = Self::default();
        config.apply(&file)?;
        Ok(config)
    }

    /// Applies set keys (from the file, then from flags, which therefore win).
    pub fn apply(&mut self, values: &ConfigFile) -> Result<(), ConfigError> {
        self.apply_places(values)?;
        self.apply_bounds(values)
    }

    /// Where the agent listens and what it names: listen, metadata, node, socket.
    fn apply_places(&mut self, values: &ConfigFile) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: &str, problem: String| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            problem,
        };
        if let Some(listen) = &values.listen {
            self.listen = listen.parse().map_err(|_| {
                invalid(
                    "listen",
                    listen,
                    "not an IP:PORT address, e.g. 127.0.0.1:9400".into(),
                )
            })?;
        }
        if let Some(metadata) = &values.metadata {
            self.metadata = match metadata.as_str() {
                "auto" => MetadataSource::Auto,
                "kubernetes" => MetadataSource::Kubernetes,
                "none" => MetadataSource::None,
                _ => {
                    return Err(invalid(
                        "metadata",
                        metadata,
                        "use auto, kubernetes or none".into(),
                    ))
                }
            };
        }
        if let Some(node) = &values.node {
            if node.is_empty() {
                return Err(invalid("node", node, "a node name cannot be empty".into()));
            }
            self.node = Some(node.clone());
        }
        if let Some(socket) = &values.socket {
            self.socket = match socket.as_str() {
                "" => None,
                path if path.starts_with('/') && !path.ends_with('/') => Some(path.into()),
                _ => {
                    return Err(invalid(
                        "socket",
                        socket,
                        "an absolute file path, e.g. /run/headroom/agent.sock, or \"\" to turn sessions off".into(),
                    ))
                }
            };
        }
        Ok(())
    }

    /// How often and how much: interval, max_containers, timeline_buckets, headroom.
    fn apply_bounds(&mut self, values: &ConfigFile) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: &str, problem: String| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            problem,
        };
        if let Some(interval) = &values.interval {
            let parsed = parse_duration(interval)
                .map_err(|problem| invalid("interval", interval, problem))?;
            if parsed < Duration::from_millis(100) {
                return Err(invalid(
                    "interval",
                    interval,
                    "at least 100ms: faster costs CPU for nothing".into(),
                ));
            }
            self.interval = parsed;
        }
        if let Some(retention) = &values.gone_series_retention {
            let parsed = parse_duration(retention)
                .map_err(|problem| invalid("gone_series_retention", retention, problem))?;
            if parsed > Duration::from_secs(3600) {
                return Err(invalid(
                    "gone_series_retention",
                    retention,
                    "at most 1h: a few scrape intervals are enough".into(),
                ));
            }
            self.gone_series_retention = parsed;
        }
        if let Some(max) = values.max_containers {
            if !(1..=100_000).contains(&max) {
                return Err(invalid(
                    "max_containers",
                    &max.to_string(),
                    "1 to 100000".into(),
                ));
            }
            self.max_containers = max;
        }
        if let Some(buckets) = values.timeline_buckets {
            if !(16..=65_536).contains(&buckets) {
                return Err(invalid(
                    "timeline_buckets",
                    &buckets.to_string(),
                    "16 to 65536".into(),
                ));
            }
            self.timeline_buckets = buckets;
        }
        if let Some(expose) = values.expose_api {
            self.expose_api = expose;
        }
        if let Some(max) = values.max_connections {
            if !(8..=65_536).contains(&max) {
                return Err(invalid(
                    "max_connections",
                    &max.to_string(),
                    "8 to 65536".into(),
                ));
            }
            self.max_connections = max;
        }
        if let Some(size) = &values.report_max_bytes {
            let bytes = crate::units::parse_bytes_within(size, 1 << 20, 1 << 30)
                .map_err(|problem| invalid("report_max_bytes", size, problem))?;
            self.report_max_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(headroom) = &values.headroom {
            self.headroom = parse_headroom(headroom)
                .map_err(|problem| invalid("headroom", headroom, problem))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml");
        let config = AgentConfig::load(Some(&path)).expect("deploy/agent.toml is valid");
        assert_eq!(config.interval, Duration::from_secs(1));
        assert_eq!(config.gone_series_retention, Duration::from_secs(60));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = AgentConfig::from_toml("listn = \"x\"\n", "agent.toml").expect_err("typo");
        let message = err.to_string();
        assert!(message.contains("listn"), "{message}");
        assert!(message.contains("deploy/agent.toml"), "{message}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        for (text, key) in [
            ("listen = \"nowhere\"", "listen"),
            ("metadata = \"k8s\"", "metadata"),
            ("interval = \"0s\"", "interval"),
            ("interval = \"10ms\"", "interval"),
            ("max_containers = 0", "max_containers"),
            ("timeline_buckets = 1", "timeline_buckets"),
            ("headroom = \"lots\"", "headroom"),
            ("node = \"\"", "node"),
            ("socket = \"relative.sock\"", "socket"),
            ("max_connections = 1", "max_connections"),
            ("report_max_bytes = \"1k\"", "report_max_bytes"),
            ("gone_series_retention = \"2h\"", "gone_series_retention"),
        ] {
            let err = AgentConfig::from_toml(text, "agent.toml").expect_err(text);
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
        assert!(AgentConfig::from_toml("max_containers = \"ten\"", "a").is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let mut config = AgentConfig::from_toml("listen = \"127.0.0.1:1\"\ninterval = \"2s\"", "f")
            .expect("valid");
        config
            .apply(&ConfigFile {
                listen: Some("127.0.0.1:2".into()),
                ..ConfigFile::default()
            })
            .expect("valid flag");
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.interval, Duration::from_secs(2));
    }
}
