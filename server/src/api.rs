//! The error envelope every route answers with, the request id, and the
//! body helpers that enforce limits and content types.
//!
//! Every error is `{"error": {"code", "message"}}` with a stable `code`
//! (clients branch on it; the message is for people) and every response
//! carries an `X-Request-Id`. The legacy `api3` routes keep their own
//! envelope (see [`crate::routes::legacy`]).

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

/// An API error: an HTTP status, a stable code and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Extra headers (`Allow`, `Retry-After`, `Content-Range`).
    pub headers: Vec<(&'static str, String)>,
    /// Extra fields beside `code` and `message` (the allowed transitions).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with no extras.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), headers: Vec::new(), details: None }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`: also what another partner's objects answer, so
    /// ids cannot be probed.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 500 `internal`: the details go to the log, not the client.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds fields to the error object.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

impl From<strata_pipeline::PipelineError> for ApiError {
    /// A store failure as an answer a client can act on: a busy database
    /// is 503 with `Retry-After`, a full disk 507, anything else 500 with
    /// the failure's stable code (the details go to the log).
    fn from(e: strata_pipeline::PipelineError) -> ApiError {
        use strata_pipeline::PipelineError as P;
        let busy = matches!(&e, P::Db(db) if db.is_busy());
        let full = matches!(&e, P::Io { source, .. } if source.raw_os_error() == Some(28));
        tracing::error!(error = %e, code = e.code(), "store error");
        if busy {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the store is busy; try again shortly")
                .with_header("retry-after", "1")
        } else if full {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", "the server's storage is full")
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), "internal error")
        }
    }
}

impl From<strata_pipeline::lifecycle::AcceptError> for ApiError {
    /// A full queue is 503 with `Retry-After` (admission control: uploads
    /// cannot queue unbounded work); a model already uploaded is 409.
    fn from(e: strata_pipeline::lifecycle::AcceptError) -> ApiError {
        use strata_pipeline::lifecycle::AcceptError as A;
        match e {
            A::QueueFull { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e.to_string())
                    .with_header("retry-after", "1")
            }
            A::AlreadyUploaded => ApiError::new(
                StatusCode::CONFLICT,
                "already_uploaded",
                "the model is already uploaded; create a new model",
            ),
            A::Store(e) => ApiError::from(e),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"),
        }
    }
}

impl From<crate::ServerError> for ApiError {
    /// A blocking task that could not run (the runtime is shutting down).
    fn from(e: crate::ServerError) -> ApiError {
        tracing::error!(error = %e, "server error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down; try again",
        )
        .with_header("retry-after", "1")
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (self.details, error.as_object_mut()) {
            obj.extend(extra);
        }
        // 3DIAX clients read the message at the top level.
        let mut resp = json(self.status, &serde_json::json!({ "error": error, "message": self.message }));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(bytes.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Turns a handler's result into a response.
pub fn finish(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

/// What no route matched or a filter refused, in the JSON envelope.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let e = if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    } else if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request("invalid_query", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request("missing_header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", e.to_string())
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large")
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type",
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(StatusCode::LENGTH_REQUIRED, "length_required", "a Content-Length is required")
    } else {
        // Never the rejection's Debug text: it is for the log.
        tracing::warn!(rejection = ?rejection, "unhandled rejection");
        ApiError::bad_request("bad_request", "the request could not be read")
    };
    Ok(e.into_response())
}

impl warp::reject::Reject for ApiError {}

/// The routes as one filter, every outcome a response.
pub type Routes = warp::filters::BoxedFilter<(Response,)>;

/// The client's address, put in every request's extensions for the
/// routes that limit by address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Wraps the routes' service so every response carries `X-Request-Id`
/// (the client's own, when it sent a sane one, or a new random one), and
/// every request the connection's [`Peer`].
pub fn with_request_id<S>(
    peer: std::net::SocketAddr,
    inner: S,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
+ Send
+ 'static
where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let inner = hyper_util::service::TowerToHyperService::new(inner);
    hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_string)
            .unwrap_or_else(|| crate::auth::random_hex(8));
        let route = crate::observe::route_label(req.uri().path());
        let method = req.method().clone();
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %method,
            route = %route,
            partner = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let fut = {
            let _entered = span.enter();
            hyper::service::Service::call(&inner, req)
        };
        use tracing::Instrument;
        async move {
            let mut resp = fut.await?;
            let status = resp.status().as_u16();
            let seconds = started.elapsed().as_secs_f64();
            metrics::counter!("strata_http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
            metrics::histogram!("strata_http_request_duration_seconds", "route" => route.clone()).record(seconds);
            tracing::info!(status, ms = (seconds * 1000.0).round() as u64, "request");
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            // No response is ever to be sniffed into another type (JSON
            // read as HTML, a chunk as a script).
            resp.headers_mut()
                .entry("x-content-type-options")
                .or_insert(HeaderValue::from_static("nosniff"));
            Ok(resp)
        }
        .instrument(span)
    })
}

/// Reads a whole (small) body, refusing more than `limit` bytes with 413
/// as soon as the count passes it: `warp::body::bytes()` alone has no
/// limit, and `content_length_limit` refuses chunked bodies outright.
pub async fn read_limited<S, B>(mut body: S, limit: usize, pace: Pace) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let mut out = BytesMut::new();
    let clock = pace.start();
    while let Some(chunk) = clock.next(out.len() as u64, body.next()).await? {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request("bad_body", format!("cannot read the body: {e}")))?;
        if out.len() + chunk.remaining() > limit {
            return Err(too_large(limit as u64));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// 413 naming the limit. It says `Connection: close`: it may be answered
/// before the body is read, and the rest of that body must not be taken
/// for the next request on a reused connection.
pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than {limit} bytes"),
    )
    .with_header("connection", "close")
}

/// How long a client may send nothing in the middle of a body before the
/// request is dropped, by default (`Config::body_idle_timeout`) (reliability row L2: a slow or stalled upload must
/// not hold a connection and a spool file for ever).
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a request body must arrive (reliability row L2): never silent for
/// longer than `idle`, whole within `deadline`, and after `grace` at no
/// less than `min_rate` bytes a second on average, so a body dripping a
/// byte every few seconds cannot hold a connection, a task and a spool
/// file for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The longest silence between two pieces.
    pub idle: std::time::Duration,
    /// The longest a whole body may take.
    pub deadline: std::time::Duration,
    /// How long a body may start slowly before its rate counts.
    pub grace: std::time::Duration,
    /// Bytes a second, on average since the start, once `grace` is over.
    pub min_rate: u64,
}

impl Pace {
    /// Starts the clock for one body.
    pub fn start(self) -> PaceClock {
        PaceClock { pace: self, started: tokio::time::Instant::now() }
    }
}

/// One body's [`Pace`], running.
#[derive(Debug, Clone, Copy)]
pub struct PaceClock {
    pace: Pace,
    started: tokio::time::Instant,
}

impl PaceClock {
    /// Awaits the next piece once `received` bytes came: 408 (and
    /// `Connection: close`) when the body is past its deadline, below its
    /// rate, or silent for longer than its idle time.
    pub async fn next<T>(
        &self,
        received: u64,
        next: impl std::future::Future<Output = T>,
    ) -> Result<T, ApiError> {
        let elapsed = self.started.elapsed();
        let slow = |why: String| {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_too_slow", why)
                .with_header("connection", "close")
        };
        if elapsed >= self.pace.deadline {
            return Err(slow(format!(
                "the body took longer than {} s; send it again",
                self.pace.deadline.as_secs()
            )));
        }
        if elapsed > self.pace.grace && (received as f64) < self.pace.min_rate as f64 * elapsed.as_secs_f64()
        {
            return Err(slow(format!(
                "the body arrives at less than {} bytes a second; send it again",
                self.pace.min_rate
            )));
        }
        let left = self.pace.deadline - elapsed;
        if left < self.pace.idle {
            return tokio::time::timeout(left, next).await.map_err(|_| {
                slow(format!("the body took longer than {} s; send it again", self.pace.deadline.as_secs()))
            });
        }
        within(self.pace.idle, next).await
    }
}

/// Awaits the next piece of a request body, or 408 (and `Connection:
/// close`) when none comes within `idle`.
pub async fn within<T>(
    idle: std::time::Duration,
    next: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(idle, next).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body stalled: nothing arrived for {} s; send it again", idle.as_secs()),
        )
        .with_header("connection", "close")
    })
}

/// A display name's rule (models, accounts, API tokens): 1 to 256
/// characters, trimmed, without control characters.
pub fn valid_name(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

/// 422 `invalid_name`, stating [`valid_name`]'s rule.
pub fn invalid_name() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_name",
        "name must be 1 to 256 characters without control characters",
    )
}

/// Adds `Location: uri` to a 201.
pub fn with_location(mut resp: Response, uri: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(uri) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

/// An answer without a body (204, 304).
pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Vec::new().into());
    *resp.status_mut() = status;
    resp
}

/// 415 unless the request's media type (parameters aside) is `expected`.
pub fn require_media_type(content_type: Option<&str>, expected: &str, what: &str) -> Result<(), ApiError> {
    let matches = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case(expected));
    if matches {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("send {what} as Content-Type: {expected}"),
    ))
}

/// A request body as JSON, whether it was sent as JSON or as an HTML form
/// (`application/x-www-form-urlencoded`, as Ruby's RestClient and Python's
/// `requests` send a hash or dict passed as `data`): form keys `a[b]` and
/// `a.b` become nested objects, values stay strings. 415 for any other
/// content type, 400 naming the problem for a malformed body.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let media = content_type.and_then(|c| c.split(';').next()).map(|c| c.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/json") => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}"))),
        Some("application/x-www-form-urlencoded") => Ok(form_to_json(body)),
        // A client that sends nothing sends no content type either.
        None if body.is_empty() => Ok(serde_json::json!({})),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json or application/x-www-form-urlencoded",
        )),
    }
}

/// An HTML form's fields as a JSON object (see [`parse_body`]).
pub fn form_to_json(body: &[u8]) -> serde_json::Value {
    fn insert(node: &mut serde_json::Map<String, serde_json::Value>, path: &[&str], value: String) {
        match path {
            [] => {}
            [last] => {
                node.insert((*last).to_string(), serde_json::Value::String(value));
            }
            [first, rest @ ..] => {
                let entry = node.entry((*first).to_string()).or_insert_with(|| serde_json::json!({}));
                if !entry.is_object() {
                    *entry = serde_json::json!({});
                }
                if let Some(obj) = entry.as_object_mut() {
                    insert(obj, rest, value);
                }
            }
        }
    }
    let mut root = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let path: Vec<&str> = key.split(['[', ']', '.']).filter(|p| !p.is_empty()).collect();
        insert(&mut root, &path, value.into_owned());
    }
    serde_json::Value::Object(root)
}

/// A boolean sent as JSON or as a form value (`true`/`false`, `1`/`0`,
/// `on`/`off`, `yes`/`no`).
pub fn loose_bool(v: &serde_json::Value) -> Option<bool> {
    match v {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::Number(n) => n.as_i64().map(|n| n != 0),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" => Some(true),
            "false" | "0" | "off" | "no" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Checks a JSON request's content type (415 otherwise) and parses it
/// (400 `malformed_json` naming the problem).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    require_media_type(content_type, "application/json", "the body")?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_become_nested_json_and_bodies_are_read_by_content_type() {
        let v = form_to_json(
            b"name=Cube+1&allowed_transformations%5Bresize%5D=true&callback.url=http%3A%2F%2Fx%2F&a=",
        );
        assert_eq!(
            v,
            serde_json::json!({"name": "Cube 1", "allowed_transformations": {"resize": "true"}, "callback": {"url": "http://x/"}, "a": ""})
        );
        assert_eq!(
            parse_body(Some("application/json; charset=utf-8"), br#"{"a":1}"#).expect("json"),
            serde_json::json!({"a": 1})
        );
        assert_eq!(parse_body(None, b"").expect("empty"), serde_json::json!({}));
        assert_eq!(
            parse_body(Some("text/plain"), b"a").map_err(|e| e.status),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(parse_body(Some("application/json"), b"{").map_err(|e| e.code), Err("malformed_json"));
        assert_eq!(loose_bool(&serde_json::json!("on")), Some(true));
        assert_eq!(loose_bool(&serde_json::json!(0)), Some(false));
        assert_eq!(loose_bool(&serde_json::json!("maybe")), None);
    }
}
