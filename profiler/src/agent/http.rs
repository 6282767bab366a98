//! The agent's HTTP endpoints, on hyper: `/metrics` (Prometheus text), `/healthz` (the
//! process is serving), `/readyz` (probes loaded and the first tick done), and
//! `/api/v1/report` (`headroom.report/v1`; `?cgroup=/path` for one container).
//!
//! The agent sits beside workloads it does not trust, so every connection is bounded: at most
//! [`HttpLimits::max_connections`] at once (more are closed at once), request headers within
//! [`HEADER_TIMEOUT`] and [`MAX_REQUEST_BYTES`], and a connection lives at most
//! [`CONNECTION_LIFETIME`] (idle keep-alive or a reader that never drains its response). The
//! report is rendered at most once per tick, off the runtime's worker, into one shared buffer
//! that every reader of that tick gets a reference to (freed with the last response), and
//! /metrics encoding and report rendering run one at a time; a report is refused past
//! [`HttpLimits::report_max_bytes`]. `/api/v1/report` names every tenant's containers, limits
//! and OOM kills: it answers only connections made to a loopback address (`kubectl
//! port-forward`, `kubectl exec`) unless `expose_api` is set; `/metrics`, `/healthz` and
//! `/readyz` answer on every address the agent listens on.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::sync::Semaphore;

use super::Shared;
use crate::exporters::{self, Metrics};

/// A client must send its whole request head within this long (a stalled or slow-loris
/// connection is closed after it).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lives, keep-alive and response writing included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head accepted (hyper's read buffer; larger heads get 431).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Bounds of the HTTP server, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Largest `/api/v1/report` body rendered; a larger one is refused with 507 and the advice
    /// to ask for one container (`?cgroup=`).
    pub report_max_bytes: usize,
    /// Serve `/api/v1/report` on non-loopback addresses too.
    pub expose_api: bool,
}

/// The report as last rendered, and the tick it was rendered at. Only a weak reference is
/// kept: readers of one tick share one buffer, and it is freed when the last response using
/// it is sent, so an idle agent holds no report between requests.
#[derive(Default)]
struct RenderedReport {
    tick: u64,
    body: Weak<Vec<u8>>,
    error: Option<String>,
}

/// A rendered report as a response body, without copying it.
struct SharedBody(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What the handlers read.
pub struct HttpState {
    pub registry: Registry,
    pub shared: Arc<Mutex<Shared>>,
    /// Set after the first tick; read without the table's lock, so /readyz never waits on a tick.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub limits: HttpLimits,
    rendered: Mutex<RenderedReport>,
    /// Held while /metrics is encoded or a report rendered: each builds a copy of every
    /// container's figures, and running them side by side on the runtime's threads raised
    /// the agent's peak (tests/privileged/load.rs); one at a time, as on one thread before.
    heavy: Mutex<()>,
}

impl HttpState {
    pub fn new(
        registry: Registry,
        shared: Arc<Mutex<Shared>>,
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
        limits: HttpLimits,
    ) -> Self {
        Self {
            registry,
            shared,
            ready,
            metrics,
            limits,
            rendered: Mutex::new(RenderedReport::default()),
            heavy: Mutex::new(()),
        }
    }

    /// The whole report as JSON, rendered once per tick while anyone reads it: the first
    /// request after a tick renders it, and requests during that render or while a response
    /// of that tick is still being sent share its buffer.
    fn report_body(&self) -> Result<Bytes, String> {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tick, report) = {
            let shared = self
                .shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if rendered.tick == shared.tick {
                if let Some(error) = &rendered.error {
                    return Err(error.clone());
                }
                if let Some(body) = rendered.body.upgrade() {
                    return Ok(Bytes::from_owner(SharedBody(body)));
                }
            }
            (shared.tick, shared.report(None))
        };
        let heavy = self.heavy.lock().unwrap_or_else(|p| p.into_inner());
        let body = render_capped(&report, self.limits.report_max_bytes);
        drop(report);
        drop(heavy);
        match body {
            Ok(json) => {
                let json = Arc::new(json);
                *rendered = RenderedReport {
                    tick,
                    body: Arc::downgrade(&json),
                    error: None,
                };
                Ok(Bytes::from_owner(SharedBody(json)))
            }
            Err(error) => {
                *rendered = RenderedReport {
                    tick,
                    body: Weak::new(),
                    error: Some(error.clone()),
                };
                Err(error)
            }
        }
    }

    /// One container's report (`?cgroup=`), rendered per request: small by construction.
    /// /metrics in Prometheus's text format, one encoding at a time.
    fn metrics_body(&self) -> Result<Bytes, String> {
        let _heavy = self.heavy.lock().unwrap_or_else(|p| p.into_inner());
        exporters::encode(&self.registry)
            .map(Bytes::from)
            .map_err(|err| err.to_string())
    }

    fn cgroup_report_body(&self, cgroup: &str) -> Result<Bytes, String> {
        let report = self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .report(Some(cgroup));
        render_capped(&report, self.limits.report_max_bytes).map(Bytes::from)
    }
}

/// JSON of `value`, refused once it passes `max_bytes` (the writer stops there: a report
/// larger than the cap never takes more than the cap).
fn render_capped(value: &impl serde::Serialize, max_bytes: usize) -> Result<Vec<u8>, String> {
    struct Capped {
        bytes: Vec<u8>,
        max: usize,
    }
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.bytes.len() + buf.len() > self.max {
                return Err(std::io::Error::other("over the cap"));
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = Capped {
        bytes: Vec::new(),
        max: max_bytes,
    };
    match serde_json::to_writer(&mut writer, value) {
        Ok(()) => Ok(writer.bytes),
        Err(err) if err.is_io() => Err(format!(
            "the report is larger than report_max_bytes ({max_bytes} bytes): ask for one container with ?cgroup=/path, or raise report_max_bytes in the agent's configuration (and its memory limit)"
        )),
        Err(err) => Err(err.to_string()),
    }
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Decodes `%XX` escapes of a query value (cgroup paths carry `/`, `:` and `@`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain", Bytes::from(body))
}

async fn route(
    request: Request<Incoming>,
    state: Arc<HttpState>,
    loopback: bool,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let encoded = tokio::task::spawn_blocking(move || state.metrics_body())
                .await
                .unwrap_or_else(|err| Err(err.to_string()));
            match encoded {
                Ok(body) => respond(StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "probes loading\n".into())
            }
        }
        "/api/v1/report" if !loopback && !state.limits.expose_api => text(
            StatusCode::FORBIDDEN,
            "/api/v1/report answers on loopback only: use `kubectl port-forward` or `kubectl exec`, or set expose_api = true (deploy/README.md)\n".into(),
        ),
        "/api/v1/report" => {
            let cgroup = request.uri().query().and_then(|query| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("cgroup="))
                    .map(percent_decode)
            });
            // Building and serializing the report is CPU work under the table's lock: off the
            // workers that answer /healthz and /metrics.
            let rendered = tokio::task::spawn_blocking(move || match cgroup {
                Some(cgroup) => state.cgroup_report_body(&cgroup),
                None => state.report_body(),
            })
            .await
            .unwrap_or_else(|err| Err(err.to_string()));
            match rendered {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(message) => text(StatusCode::INSUFFICIENT_STORAGE, format!("{message}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or /api/v1/report\n".into(),
        ),
    }
}

/// Serves connections until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<HttpState>) {
    let permits = Arc::new(Semaphore::new(state.limits.max_connections));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: do not spin on an error that repeats at once.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state
                .metrics
                .http_connections_closed
                .with_label_values(&["connection_cap"])
                .inc();
            drop(stream);
            continue;
        };
        let loopback = stream
            .local_addr()
            .is_ok_and(|address| address.ip().is_loopback());
        let state = state.clone();
        tokio::spawn(async move {
            let metrics = state.metrics.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(request, state, loopback).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    if err.is_timeout() {
                        metrics
                            .http_connections_closed
                            .with_label_values(&["timeout"])
                            .inc();
                    }
                    tracing::debug!(error = %err, "HTTP connection ended with an error");
                }
                Err(_) => {
                    metrics
                        .http_connections_closed
                        .with_label_values(&["timeout"])
                        .inc();
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limits: HttpLimits) -> HttpState {
        let registry = Registry::new();
        let metrics = Arc::new(Metrics::new(&registry).expect("metrics"));
        let shared = Arc::new(Mutex::new(Shared {
            containers: super::super::containers::ContainerTable::new(
                super::super::containers::TableSettings {
                    max_containers: 8,
                    interval: Duration::from_secs(1),
                    timeline_buckets: 16,
                    headroom: 0.25,
                    read_lines: 1024,
                    gone_series_retention: Duration::from_secs(60),
                },
            ),
            tick: 1,
            drops: Default::default(),
            headroom: 0.25,
        }));
        HttpState::new(
            registry,
            shared,
            Arc::new(AtomicBool::new(true)),
            metrics,
            limits,
        )
    }

    /// Readers of one tick share one buffer (the same bytes, not copies); the next tick renders
    /// a new one.
    #[test]
    fn the_report_is_rendered_once_per_tick_and_shared() {
        let state = state(HttpLimits {
            max_connections: 8,
            report_max_bytes: 1 << 20,
            expose_api: false,
        });
        let first = state.report_body().expect("rendered");
        let second = state.report_body().expect("rendered");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "rendered twice in one tick"
        );
        let report: crate::report::CaptureReport =
            serde_json::from_slice(&first).expect("a headroom.report/v1 document");
        assert_eq!(report.schema, crate::report::REPORT_SCHEMA);
        state.shared.lock().expect("lock").tick = 2;
        let third = state.report_body().expect("rendered");
        assert_ne!(
            first.as_ptr(),
            third.as_ptr(),
            "not rendered again after a tick"
        );
    }

    #[test]
    fn a_report_past_the_cap_is_refused_with_the_fix() {
        let value: Vec<u32> = (0..1000).collect();
        let body = render_capped(&value, 1 << 20).expect("fits");
        assert_eq!(body.first(), Some(&b'['));
        let err = render_capped(&value, 100).expect_err("over the cap");
        assert!(
            err.contains("?cgroup=") && err.contains("report_max_bytes"),
            "{err}"
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("%2Fkubepods%2Fpod1"), "/kubepods/pod1");
        assert_eq!(percent_decode("/plain"), "/plain");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%2"), "%2");
    }
}
