//! The agent's HTTP endpoints, on hyper: `/metrics` (Prometheus text), `/healthz` (the
//! process is serving), `/readyz` (probes loaded and the first tick done), and
//! `/api/v1/report` (`headroom.report/v1`; `?cgroup=/path` for one container).

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use prometheus::Registry;

use super::Shared;
use crate::exporters;

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
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

fn route(
    request: &Request<Incoming>,
    registry: &Registry,
    shared: &Mutex<Shared>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => match exporters::encode(registry) {
            Ok(text) => respond(StatusCode::OK, "text/plain; version=0.0.4", text),
            Err(err) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{err}\n"),
            ),
        },
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let ready = shared.lock().map(|s| s.ready).unwrap_or(false);
            if ready {
                respond(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "probes loading\n".into(),
                )
            }
        }
        "/api/v1/report" => {
            let cgroup = request.uri().query().and_then(|query| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("cgroup="))
                    .map(percent_decode)
            });
            let report = match shared.lock() {
                Ok(shared) => shared.report(cgroup.as_deref()),
                Err(_) => {
                    return respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "state poisoned\n".into(),
                    )
                }
            };
            match serde_json::to_string(&report) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(err) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{err}\n"),
                ),
            }
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz or /api/v1/report\n".into(),
        ),
    }
}

/// Serves connections until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shared: Arc<Mutex<Shared>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = route(&request, &registry, &shared);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("%2Fkubepods%2Fpod1"), "/kubepods/pod1");
        assert_eq!(percent_decode("/plain"), "/plain");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%2"), "%2");
    }
}
