//! What printers use, holding a token: the stream (manifest and chunks,
//! resumable) and print status reports; and the status as partners read
//! it back (`GET /tokens/{token}`).

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use warp::Filter;
use warp::reply::Response;

use super::{Credentials, credentials, either, live_token, with_state};
use crate::api::{self, ApiError, finish, parse_json, read_limited};
use crate::state::AppState;
use strata_pipeline::blob::BlobId;
use strata_pipeline::db::{ModelStatus, PrintToken, PrintUpdate};
use strata_pipeline::prints::{self, PrintRefusal, PrintStatus};

/// The printer and token-status routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let printer = || warp::header::optional::<String>("x-printer-id");
    let manifest =
        warp::path!("streams" / String / "manifest").and(warp::get()).and(s()).and(printer()).then(
            |token: String, st: Arc<AppState>, id: Option<String>| async move {
                finish(manifest(&st, &token, id.as_deref()).await)
            },
        );
    let chunk = warp::path!("streams" / String / "chunks" / String)
        .and(warp::get())
        .and(s())
        .and(printer())
        .and(warp::header::optional::<String>("range"))
        .and(warp::header::optional::<String>("if-none-match"))
        .and(warp::header::optional::<String>("if-range"))
        .then(
            |token: String,
             index: String,
             st: Arc<AppState>,
             id: Option<String>,
             range: Option<String>,
             inm: Option<String>,
             if_range: Option<String>| async move {
                let cond = Conditions { if_none_match: inm, if_range };
                finish(chunk(&st, &token, &index, id.as_deref(), range.as_deref(), &cond).await)
            },
        );
    let status = warp::path!("prints" / String / "status")
        .and(warp::post())
        .and(s())
        .and(printer())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .then(|token: String, st: Arc<AppState>, id: Option<String>, ct: Option<String>, body| async move {
            let body = match read_limited(Box::pin(body), 16 * 1024, st.config.small_pace()).await {
                Ok(b) => b,
                Err(e) => return finish(Err(e)),
            };
            finish(report_status(&st, &token, id.as_deref(), ct.as_deref(), &body))
        });
    let tokens = || either("token", "tokens").and(warp::path::param::<String>()).and(warp::path::end());
    let read = tokens()
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(warp::query::<KeyQuery>())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|token: String, st: Arc<AppState>, c: Credentials, q: KeyQuery, inm: Option<String>| {
            finish(read_token(&st, &token, &c, q.api_key.as_deref(), inm.as_deref()))
        });
    let revoke = tokens().and(warp::delete()).and(s()).and(credentials()).and(warp::query::<KeyQuery>()).map(
        |token: String, st: Arc<AppState>, c: Credentials, q: KeyQuery| {
            finish(revoke_token(&st, &token, &c, q.api_key.as_deref()))
        },
    );
    manifest.or(chunk).unify().or(status).unify().or(read).unify().or(revoke).unify().boxed()
}

#[derive(Deserialize)]
struct KeyQuery {
    api_key: Option<String>,
}

/// The stream of a token's model: its partner model id and manifest blob,
/// or 404 / 409 (not processed yet).
fn stream_of(state: &AppState, t: &PrintToken) -> Result<(String, String), ApiError> {
    let model_id = t.model_id.clone().ok_or_else(|| ApiError::not_found("stream"))?;
    let (status, manifest) =
        state.db_read(|db| db.model_stream(&model_id))?.ok_or_else(|| ApiError::not_found("stream"))?;
    match (status, manifest) {
        (ModelStatus::Processed, Some(m)) => Ok((model_id, m)),
        (ModelStatus::Processed, None) => Err(ApiError::not_found("stream")),
        _ => Err(ApiError::new(StatusCode::CONFLICT, "not_processed", format!("the model is {status}"))
            .with_header("retry-after", "5")),
    }
}

/// A refusal of the print rules as an answer: 403 once the prints are
/// used up, 409 for another printer's print or an illegal transition.
fn refused(r: PrintRefusal) -> ApiError {
    let status = match r {
        PrintRefusal::LimitReached(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::CONFLICT,
    };
    let mut e = ApiError::new(status, r.code(), r.to_string());
    if let PrintRefusal::IllegalTransition { from, .. } = r {
        let from_status = PrintStatus::parse(from);
        let allowed: Vec<&str> = PrintStatus::allowed_next(from_status).iter().map(|s| s.as_str()).collect();
        e.message = format!("{}; allowed: {}", e.message, allowed.join(", "));
        e = e.with_details(serde_json::json!({"from": from, "allowed": allowed}));
    }
    e
}

/// The printer's id, when it sent a usable one (1 to 128 visible ASCII
/// characters); anything else counts as no id.
fn printer_id(id: Option<&str>) -> Option<&str> {
    id.map(str::trim).filter(|i| !i.is_empty() && i.len() <= 128 && i.bytes().all(|b| b.is_ascii_graphic()))
}

async fn manifest(state: &AppState, token: &str, printer: Option<&str>) -> Result<Response, ApiError> {
    let t = live_token(state, token)?;
    prints::may_pull(&t, printer_id(printer)).map_err(refused)?;
    let (model_id, blob) = stream_of(state, &t)?;
    state.db_call(|db| db.count_stream_pull(&model_id))?;
    let mut resp = super::blob_response(state, &blob, "application/json", None).await?;
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// The conditional headers a chunk request may carry.
struct Conditions {
    if_none_match: Option<String>,
    /// A resuming client sends the ETag it started with; when it no longer
    /// matches, the `Range` is ignored and the whole chunk is sent
    /// (RFC 9110 13.1.5), so a stale prefix is never extended.
    if_range: Option<String>,
}

/// A chunk: a file send with a strong ETag (its SHA-256), immutable,
/// `If-None-Match`, `If-Range` and single `Range` requests, so downloads
/// resume.
async fn chunk(
    state: &AppState,
    token: &str,
    index: &str,
    printer: Option<&str>,
    range: Option<&str>,
    cond: &Conditions,
) -> Result<Response, ApiError> {
    let t = live_token(state, token)?;
    prints::may_pull(&t, printer_id(printer)).map_err(refused)?;
    let (_, manifest) = stream_of(state, &t)?;
    let index: usize = index.parse().map_err(|_| ApiError::not_found("chunk"))?;
    let manifest_id = BlobId::parse(&manifest).ok_or_else(|| ApiError::not_found("chunk"))?;
    let digests = chunk_digests(state, &manifest_id).await?;
    let sha = digests.get(index).ok_or_else(|| ApiError::not_found("chunk"))?.clone();
    let etag = format!("\"{sha}\"");
    let id = BlobId::parse(&sha).ok_or_else(|| ApiError::internal("bad chunk digest"))?;
    let mut headers = vec![
        (http::header::ETAG, etag.clone()),
        (http::header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_string()),
        (http::header::ACCEPT_RANGES, "bytes".to_string()),
    ];
    if super::etag_matches(cond.if_none_match.as_deref(), &etag) {
        return Ok(with_headers(api::empty(StatusCode::NOT_MODIFIED), StatusCode::NOT_MODIFIED, headers));
    }
    // Blobs in a bucket, with redirects on: the printer fetches the chunk
    // from the object store itself (its Range and If-Range go along), and
    // the server only checks the token. The URL expires, so the redirect
    // is not cached.
    if let (Some(ttl), Some(store)) = (state.config.presign_chunks, state.blobs().object()) {
        let url = store
            .presign(strata_pipeline::objstore::Method::GET, &id, ttl)
            .await
            .map_err(ApiError::internal)?;
        let headers = vec![
            (http::header::LOCATION, url),
            (http::header::CACHE_CONTROL, "no-store".to_string()),
            (http::header::ETAG, etag),
        ];
        let status = StatusCode::TEMPORARY_REDIRECT;
        return Ok(with_headers(api::empty(status), status, headers));
    }
    let bytes = state.chunk_bytes(&id).await.map_err(ApiError::internal)?;
    let len = bytes.len() as u64;
    // If-Range uses the strong comparison: only the exact ETag counts.
    let range = range.filter(|_| cond.if_range.as_deref().is_none_or(|v| v.trim() == etag));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(r) => match parse_range(r, len) {
            Some((a, b)) => {
                headers.push((http::header::CONTENT_RANGE, format!("bytes {a}-{}/{len}", b - 1)));
                (StatusCode::PARTIAL_CONTENT, a, b)
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the chunk has {len} bytes"),
                )
                .with_header("content-range", format!("bytes */{len}")));
            }
        },
    };
    headers.push((http::header::CONTENT_TYPE, "application/zstd".to_string()));
    headers
        .push((http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"chunk-{index:06}.zst\"")));
    metrics::counter!("strata_stream_bytes_total").increment(end - start);
    let resp = Response::new(bytes.slice(start as usize..end as usize).into());
    Ok(with_headers(resp, status, headers))
}

/// The chunk digests of a stream manifest, parsed once: manifests are
/// immutable blobs, so the cache never goes stale, and a printer pulling
/// hundreds of chunks no longer re-reads and re-parses the manifest for
/// each one.
async fn chunk_digests(state: &AppState, manifest: &BlobId) -> Result<Arc<[String]>, ApiError> {
    if let Some(d) = state.cached_chunk_digests(manifest) {
        return Ok(d);
    }
    let bytes = state.blobs().read(manifest).await.map_err(ApiError::internal)?;
    let parsed = strata_pipeline::core::stream::Manifest::from_json(&bytes, &Default::default())
        .map_err(ApiError::internal)?;
    let digests: Arc<[String]> = parsed.chunks.into_iter().map(|c| c.sha256).collect();
    state.cache_chunk_digests(manifest, digests.clone());
    Ok(digests)
}

fn with_headers(
    mut resp: Response,
    status: StatusCode,
    headers: Vec<(http::HeaderName, String)>,
) -> Response {
    *resp.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp.headers_mut().insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    resp
}

/// One `bytes=` range as a half-open `[start, end)` within `len`, or
/// `None` when it cannot be satisfied (multiple ranges are not offered).
/// Kept here rather than taken from `headers::Range`: that one drops a
/// suffix range longer than the content, which RFC 9110 14.1.3 says
/// selects all of it.
pub(crate) fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return (n > 0 && len > 0).then(|| (len.saturating_sub(n), len));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() { len } else { b.parse::<u64>().ok()?.saturating_add(1).min(len) };
    (start < end && start < len).then_some((start, end))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusReport {
    printing_job_status: String,
    printing_percentage: Option<f64>,
    minutes_left: Option<f64>,
    message: Option<String>,
    total_time: Option<f64>,
    printer_model: Option<String>,
}

fn report_status(
    state: &AppState,
    token: &str,
    printer: Option<&str>,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let t = live_token(state, token)?;
    let r: StatusReport = parse_json(ct, body)?;
    let Some(next) = PrintStatus::parse(&r.printing_job_status) else {
        let all: Vec<&str> = PrintStatus::ALL.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_status",
            format!("printing_job_status is one of {}", all.join(", ")),
        ));
    };
    let bad_number =
        |v: Option<f64>, max: f64| v.is_some_and(|v| !v.is_finite() || !(0.0..=max).contains(&v));
    if bad_number(r.printing_percentage, 100.0)
        || bad_number(r.minutes_left, 1e7)
        || bad_number(r.total_time, 1e9)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_progress",
            "printing_percentage is 0 to 100; minutes_left and total_time are non-negative",
        ));
    }
    if r.message.as_ref().is_some_and(|m| m.len() > 2000)
        || r.printer_model.as_ref().is_some_and(|m| m.len() > 200)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_long",
            "message or printer_model is too long",
        ));
    }
    let printer = printer_id(printer);
    let new_print = prints::report(&t, next, printer).map_err(refused)?;
    let update = PrintUpdate {
        status: next.as_str().to_string(),
        percentage: r.printing_percentage,
        minutes_left: r.minutes_left,
        message: r.message,
        total_time: r.total_time,
        printer_model: r.printer_model,
        new_print,
        printer_id: printer.map(str::to_string),
    };
    if !state.db_call(|db| db.update_print(token, t.version, &update))? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "concurrent_update",
            "the status changed meanwhile; read it and retry",
        ));
    }
    let now = live_token(state, token)?;
    Ok(status_response(state, &now, StatusCode::OK))
}

/// How long a poller should wait before asking again.
fn retry_after(status: Option<&str>) -> Option<u32> {
    match status {
        Some("WARMING_UP" | "PRINTING") => Some(5),
        None => Some(30),
        Some("SUCCESS" | "FAILURE") => Some(60),
        _ => None,
    }
}

/// The public JSON of a token and its print.
pub(crate) fn token_json(state: &AppState, t: &PrintToken) -> serde_json::Value {
    let value = t.print_value.as_deref().and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok());
    serde_json::json!({
        "token": t.token,
        "token_link": format!("{}/widget?token={}", state.public_url, t.token),
        "uri": format!("{}/token/{}/", state.public_url, t.token),
        "model": t.model_id.as_ref().map(|m| super::model_uri(state, m)),
        "receiver_email": t.receiver_email,
        "print_value": value,
        "print_value_currency": t.print_value_currency,
        "partner_job_id": t.partner_job_id,
        "print_limit": t.print_limit,
        "prints_started": t.prints_started,
        "expires": t.expires_at.map(super::iso8601),
        "printing_job_status": t.printing_job_status,
        // The seed's names in both fields, as api3 clients compare them.
        "printing_job_status_name": t.printing_job_status,
        "printing_job_status_label": t.printing_job_status.as_deref().map(status_label),
        "printing_percentage": t.printing_percentage,
        "minutes_left": t.minutes_left,
        "message": t.message,
        "total_time": t.total_time,
        "printer_model": t.printer_model,
        "updated": super::iso8601(t.updated_at),
    })
}

/// The words people see for a status (the widget shows them); clients
/// compare the code itself.
pub(crate) fn status_label(s: &str) -> &'static str {
    PrintStatus::parse(s).map_or("Unknown", PrintStatus::label)
}

/// The token's status with its ETag (the version) and Retry-After hint.
pub(crate) fn status_response(state: &AppState, t: &PrintToken, status: StatusCode) -> Response {
    let mut resp = api::json(status, &token_json(state, t));
    decorate_status(&mut resp, t);
    resp
}

/// 304 with the status headers when the poller already has this version.
pub(crate) fn status_not_modified(t: &PrintToken, if_none_match: Option<&str>) -> Option<Response> {
    super::etag_matches(if_none_match, &status_etag(t)).then(|| {
        let mut resp = api::empty(StatusCode::NOT_MODIFIED);
        decorate_status(&mut resp, t);
        resp
    })
}

fn status_etag(t: &PrintToken) -> String {
    format!("\"{}-{}\"", &t.token[..8.min(t.token.len())], t.version)
}

pub(crate) fn decorate_status(resp: &mut Response, t: &PrintToken) {
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&status_etag(t)) {
        h.insert(http::header::ETAG, v);
    }
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    if let Some(secs) = retry_after(t.printing_job_status.as_deref()) {
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
}

/// `DELETE /tokens/{token}`: the partner withdraws a token; printers and
/// the widget get 404 from then on. 404 for another partner's token or one
/// already revoked.
fn revoke_token(
    state: &AppState,
    token: &str,
    c: &Credentials,
    api_key: Option<&str>,
) -> Result<Response, ApiError> {
    let partner = super::key_or_partner(state, c, api_key)?;
    if !state.db_call(|db| db.revoke_token(token, &partner.id))? {
        return Err(ApiError::not_found("token"));
    }
    Ok(api::empty(StatusCode::NO_CONTENT))
}

fn read_token(
    state: &AppState,
    token: &str,
    c: &Credentials,
    api_key: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Response, ApiError> {
    let partner = super::key_or_partner(state, c, api_key)?;
    let t = state
        .db_read(|db| db.token(token))?
        .filter(|t| t.partner_id == partner.id)
        .ok_or_else(|| ApiError::not_found("token"))?;
    Ok(status_not_modified(&t, if_none_match).unwrap_or_else(|| status_response(state, &t, StatusCode::OK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 100)));
        for bad in
            ["bytes=100-", "bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=-0", "bytes=x-1", "bytes=-"]
        {
            assert_eq!(parse_range(bad, 100), None, "{bad}");
        }
    }

    #[test]
    fn printer_ids_are_short_visible_ascii_or_none() {
        assert_eq!(printer_id(Some(" mk4-1 ")), Some("mk4-1"));
        for bad in ["", " ", "a b", "é", &"x".repeat(129)] {
            assert_eq!(printer_id(Some(bad)), None, "{bad:?}");
        }
    }
}
