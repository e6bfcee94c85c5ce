//! Observability: structured logs in request spans, and Prometheus
//! metrics.
//!
//! Every request runs in a `request` span carrying its request id, method
//! and route (the path with ids and tokens replaced by `{id}`, `{token}`:
//! never the raw path or query, which hold tokens, API keys and
//! signatures), and the partner once known; one `request` line is logged
//! when it is answered, with the status and duration. `--log-format json`
//! makes every line a JSON object.
//!
//! Metrics (`GET /metrics`, Prometheus text format): requests by route and
//! status, request latency by route, bytes uploaded and streamed, jobs
//! waiting and job durations by kind and outcome, callback deliveries by
//! outcome, and the pipeline's time per stage.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's log subscriber (to stderr; `STRATA_LOG` or
/// `RUST_LOG` filter, `info` by default). Only the first call counts.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The process's metrics recorder (installed at the first call).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (a test harness): render an
            // empty one rather than fail.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// The route a path belongs to, with every id, token and file name
/// replaced, so labels stay few and logs hold no secrets.
pub fn route_label(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let previous = i.checked_sub(1).map(|j| segments[j]);
        let label = match (previous, *seg) {
            (None, first) => match first {
                "model" | "models" | "token" | "tokens" | "sessions" | "users" | "api_tokens" | "uploads"
                | "files" | "streams" | "prints" | "widget" | "api3" | "healthz" | "readyz" | "metrics"
                | "openapi.json" | "jwt" | ".well-known" | "api" => first.to_string(),
                _ => "{other}".to_string(),
            },
            (Some("streams" | "prints" | "token" | "tokens"), _) if i == 1 => "{token}".to_string(),
            (Some("chunks"), _) => "{index}".to_string(),
            (Some("snapshot"), s) if s != "content" => "{id}".to_string(),
            (Some(_), s) if i == 1 => {
                if matches!(segments[0], "api3" | "sessions" | ".well-known")
                    || (segments[0] == "api" && s == "v2")
                {
                    s.to_string()
                } else {
                    "{id}".to_string()
                }
            }
            (Some(_), s) => match s {
                "content" | "snapshot" | "manifest" | "callbacks" | "chunks" | "status" | "current"
                | "ticket" | "session" | "close" | "model"
                    if !(segments[0] == "api" && matches!(previous, Some("ticket" | "session"))) =>
                {
                    s.to_string()
                }
                _ => "{id}".to_string(),
            },
        };
        out.push(label);
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn routes_never_carry_ids_tokens_or_queries() {
        let t = "0123456789abcdef0123456789abcdef";
        for (path, label) in [
            ("/model/", "/model"),
            ("/model/3f2a-9b/", "/model/{id}"),
            ("/models/3f2a/content", "/models/{id}/content"),
            ("/model/3f2a/snapshot/77aa/content", "/model/{id}/snapshot/{id}/content"),
            (&format!("/streams/{t}/chunks/12"), "/streams/{token}/chunks/{index}"),
            (&format!("/prints/{t}/status"), "/prints/{token}/status"),
            (&format!("/token/{t}/"), "/token/{token}"),
            ("/uploads/3f2a", "/uploads/{id}"),
            ("/api3/api_get_partner_print_status", "/api3/api_get_partner_print_status"),
            ("/sessions/current", "/sessions/current"),
            ("/jwt/", "/jwt"),
            ("/api/v2/ticket/abc123", "/api/v2/ticket/{id}"),
            ("/api/v2/session/close/close", "/api/v2/session/{id}/close"),
            ("/api/v2/model/m1/ticket", "/api/v2/model/{id}/ticket"),
            ("/.well-known/jwks.json", "/.well-known/jwks.json"),
            ("/etc/passwd", "/{other}/{id}"),
        ] {
            assert_eq!(route_label(path), label, "{path}");
        }
    }
}
