//! The routes, one module per audience, and what they share: the state,
//! session authentication, and the public shape of a model.

pub mod accounts;
pub mod embed;
pub mod legacy;
pub mod partners;
pub mod printers;
pub mod providers;
pub mod snapshots;
pub mod tus;
pub mod widget;

use std::sync::Arc;

use http::StatusCode;
use warp::Filter;
use warp::reply::Response;

use crate::api::{self, ApiError, Routes};
use crate::state::AppState;
use strata_pipeline::db::{Partner, PartnerModel, PrintToken};

/// Every route, errors in the JSON envelope.
pub fn all(state: Arc<AppState>) -> Routes {
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| api::json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let st = state.clone();
    let ready = warp::path!("readyz").and(warp::get()).then(move || {
        let st = st.clone();
        async move { readiness(&st).await }
    });
    let st = state.clone();
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        // Gauges read from the store when scraped.
        if let Ok(n) = st.db_read(|db| db.pending_jobs()).map(|j| j.len()) {
            metrics::gauge!("strata_jobs_pending").set(n as f64);
        }
        let mut resp = Response::new(crate::observe::metrics().render().into());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    });
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| api::json(StatusCode::OK, &crate::routes::widget::openapi()));
    health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(embed::routes(state.clone()))
        .unify()
        .or(providers::routes(state.clone()))
        .unify()
        .or(accounts::routes(state.clone()))
        .unify()
        .or(partners::routes(state.clone()))
        .unify()
        .or(tus::routes(state.clone()))
        .unify()
        .or(snapshots::routes(state.clone()))
        .unify()
        .or(printers::routes(state.clone()))
        .unify()
        .or(legacy::routes(state.clone()))
        .unify()
        .or(widget::routes(state))
        .unify()
        .recover(api::recover)
        .unify()
        .boxed()
}

/// `GET /readyz`: 200 when the database answers, the upload spool takes
/// a file and, with blobs in a bucket, the bucket answers a listing; 503
/// naming what does not.
async fn readiness(state: &AppState) -> Response {
    let database = state.db_read(|db| db.pending_jobs_of("")).map(|_| ()).map_err(|e| e.to_string());
    // The upload spool: on local disk whatever the blobs' location.
    let probe = state.life.store().uploads().join(format!(".ready-{}", crate::auth::random_hex(4)));
    let mut store =
        std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)).map_err(|e| e.to_string());
    if let (Ok(()), Some(bucket)) = (&store, state.blobs().object()) {
        store = bucket.check().await.map_err(|e| e.to_string());
    }
    let word =
        |r: &Result<(), String>| r.as_ref().map_or_else(|e| format!("failing: {e}"), |()| "ok".to_string());
    let ok = database.is_ok() && store.is_ok();
    api::json(
        if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE },
        &serde_json::json!({"status": if ok { "ok" } else { "unavailable" }, "database": word(&database), "store": word(&store)}),
    )
}

/// The state, for handlers.
pub(crate) fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// What a partner request may authenticate with: a session cookie
/// (`POST /sessions/`) or HTTP Basic with an API token's `uuid:secret`
/// (`POST /api_tokens/`), as 3DIAX clients send.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    /// The `Cookie` header.
    pub(crate) cookie: Option<String>,
    /// The `Authorization` header.
    pub(crate) authorization: Option<String>,
    /// The `X-Api-Key` header: the partner's API key (what
    /// `strata admin create-partner` prints), for scripts such as
    /// `strata upload`.
    pub(crate) api_key: Option<String>,
    /// The client's address (for per-address limits).
    pub(crate) peer: Option<std::net::IpAddr>,
}

/// The request's [`Credentials`].
pub(crate) fn credentials() -> impl Filter<Extract = (Credentials,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("cookie")
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("x-api-key"))
        .and(warp::ext::optional::<crate::api::Peer>())
        .map(|cookie, authorization, api_key, peer: Option<crate::api::Peer>| Credentials {
            cookie,
            authorization,
            api_key,
            peer: peer.map(|p| p.0.ip()),
        })
}

/// Matches the first path segment `a` or `b` (the 3DIAX singular names
/// and Strata's first plural ones: `/model/` and `/models`).
pub(crate) fn either(a: &'static str, b: &'static str) -> warp::filters::BoxedFilter<()> {
    warp::path(a).or(warp::path(b)).unify().boxed()
}

fn basic_refused(message: &str) -> ApiError {
    ApiError::unauthenticated(message.to_string()).with_header("www-authenticate", "Basic realm=\"strata\"")
}

/// The partner a request's credentials name, or 401: the API key of an
/// `X-Api-Key` header, HTTP Basic with an API token when an
/// `Authorization` header is sent, else the session cookie.
pub(crate) fn partner_of(state: &AppState, c: &Credentials) -> Result<Partner, ApiError> {
    // The address first: a flood of bad credentials is limited too, and
    // before any credential is looked up.
    if let Some(ip) = c.peer {
        state.rate_limit(&state.per_ip, "ip", &ip.to_string()).map_err(rate_limited)?;
    }
    let partner = authenticate(state, c)?;
    tracing::Span::current().record("partner", partner.id.as_str());
    state.rate_limit(&state.per_key, "key", &partner.id).map_err(rate_limited)?;
    Ok(partner)
}

/// 429 with `Retry-After` and `RateLimit-*` headers.
pub(crate) fn rate_limited(l: crate::limits::Limited) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("more than {} requests in {} s; try again in {} s", l.limit, l.window_secs, l.retry_after),
    );
    for (name, value) in l.headers() {
        e = e.with_header(name, value);
    }
    e
}

fn authenticate(state: &AppState, c: &Credentials) -> Result<Partner, ApiError> {
    if let Some(key) = &c.api_key {
        return api_key_partner(state, key.trim())
            .map_err(|_| ApiError::unauthenticated("unknown API key in X-Api-Key"));
    }
    if let Some(header) = &c.authorization {
        let Some((id, secret)) = crate::auth::basic_credentials(header) else {
            return Err(basic_refused(
                "Authorization must be HTTP Basic with an API token's uuid and secret",
            ));
        };
        if id.len() > 64 || secret.len() > 256 {
            return Err(basic_refused("unknown or revoked API token"));
        }
        return state
            .db_read(|db| db.api_token_partner(&id, &crate::auth::secret_hash(&secret)))?
            .ok_or_else(|| basic_refused("unknown or revoked API token"));
    }
    session_partner(state, c.cookie.as_deref())
}

/// The partner of the request's session cookie, or 401.
pub(crate) fn session_partner(state: &AppState, cookie: Option<&str>) -> Result<Partner, ApiError> {
    let Some(id) = crate::auth::cookie(cookie, "session") else {
        return Err(ApiError::unauthenticated(
            "log in first (POST /sessions/), or send an API token as HTTP Basic",
        ));
    };
    state
        .db_read(|db| db.session_partner(&crate::auth::secret_hash(&id), strata_pipeline::db::now_ms()))?
        .ok_or_else(|| ApiError::unauthenticated("the session has expired or ended; log in again"))
}

/// The partner holding `api_key`, or 403 (the legacy API's own wording
/// is applied by its module).
pub(crate) fn api_key_partner(state: &AppState, api_key: &str) -> Result<Partner, ApiError> {
    if api_key.is_empty() || api_key.len() > 128 {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_api_key", "unknown API key"));
    }
    state
        .db_read(|db| db.partner_by_api_key(&crate::auth::secret_hash(api_key)))?
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "invalid_api_key", "unknown API key"))
}

/// The partner of a request that may use either kind of credential:
/// `api_key` when given, else the session or API token.
pub(crate) fn key_or_partner(
    state: &AppState,
    c: &Credentials,
    api_key: Option<&str>,
) -> Result<Partner, ApiError> {
    match api_key {
        Some(key) => api_key_partner(state, key),
        None => partner_of(state, c),
    }
}

/// The canonical URI of a partner model (3DIAX's form, trailing slash).
pub(crate) fn model_uri(state: &AppState, id: &str) -> String {
    format!("{}/model/{id}/", state.public_url)
}

/// The id in a model reference: a bare id or a model URI, with or without
/// its trailing slash, under either name.
pub(crate) fn model_ref_id(reference: &str) -> &str {
    let path = reference.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    path.rsplit('/').next().unwrap_or_default()
}

/// The query of a capability URL.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Signed {
    /// Unix seconds after which the URL is refused.
    pub(crate) expires: Option<String>,
    /// HMAC-SHA256 (hex) of the method, path and expiry.
    pub(crate) signature: Option<String>,
}

/// A signed, expiring URL that grants `GET path` without other
/// credentials (3DIAX handed out presigned storage URLs for `content`).
pub(crate) fn capability_url(state: &AppState, path: &str) -> String {
    let expires = (strata_pipeline::db::now_ms() + state.config.capability_url_ttl.as_millis() as i64) / 1000;
    let signature = crate::auth::sign(&state.secret, &crate::auth::capability_message("GET", path, expires));
    format!("{}{path}?expires={expires}&signature={signature}", state.public_url)
}

/// Checks a capability URL's signature for `method path`: 403 naming what
/// is wrong (unsigned, malformed, forged, expired).
pub(crate) fn check_capability(
    state: &AppState,
    method: &str,
    path: &str,
    q: &Signed,
) -> Result<(), ApiError> {
    let forbidden = |code, m: &str| ApiError::new(StatusCode::FORBIDDEN, code, m.to_string());
    let (Some(expires), Some(signature)) = (&q.expires, &q.signature) else {
        return Err(forbidden("invalid_signature", "the URL is not signed"));
    };
    let expires_at: i64 =
        expires.parse().map_err(|_| forbidden("invalid_signature", "the URL is malformed"))?;
    if !crate::auth::verify(
        &state.secret,
        &crate::auth::capability_message(method, path, expires_at),
        signature,
    ) {
        return Err(forbidden("invalid_signature", "the URL's signature does not match"));
    }
    if expires_at.saturating_mul(1000) <= strata_pipeline::db::now_ms() {
        return Err(forbidden("expired", "the URL has expired; read the resource again for a fresh one"));
    }
    Ok(())
}

/// `partner`'s model `id`; another partner's is 404 like a missing one.
pub(crate) fn owned_model(state: &AppState, partner: &Partner, id: &str) -> Result<PartnerModel, ApiError> {
    match state.db_read(|db| db.partner_model(id))? {
        Some(m) if m.partner_id == partner.id => Ok(m),
        _ => Err(ApiError::not_found("model")),
    }
}

/// A usable token: known, not revoked, not expired; otherwise 404 (the
/// same answer, so a printer learns nothing from probing).
pub(crate) fn live_token(state: &AppState, token: &str) -> Result<PrintToken, ApiError> {
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("token"));
    }
    let t = state.db_read(|db| db.token(token))?.ok_or_else(|| ApiError::not_found("token"))?;
    let expired = t.expires_at.is_some_and(|e| e <= strata_pipeline::db::now_ms());
    if t.revoked || expired {
        return Err(ApiError::not_found("token"));
    }
    Ok(t)
}

/// RFC 3339 UTC time (whole seconds) of unix milliseconds.
pub(crate) fn iso8601(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms.div_euclid(1000) * 1000)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// The public JSON of a partner model: Strata's fields and the 3DIAX
/// model resource's (`analyses.manifold`, `parents`, `children`,
/// `allowed_transformations`, `size`, `surface_area_mm`, `volume_mm`,
/// `snapshot_content`), with `content`, `snapshot` and `manifest` as signed
/// URLs a client may fetch without its session.
pub(crate) fn model_json(state: &AppState, m: &PartnerModel) -> Result<serde_json::Value, ApiError> {
    Ok(models_json(state, std::slice::from_ref(m))?.pop().unwrap_or_default())
}

/// [`model_json`] of a page of models, in three queries whatever its size.
pub(crate) fn models_json(
    state: &AppState,
    page: &[PartnerModel],
) -> Result<Vec<serde_json::Value>, ApiError> {
    let content_ids: Vec<&str> = page.iter().filter_map(|m| m.content_id.as_deref()).collect();
    let ids: Vec<&str> = page.iter().map(|m| m.id.as_str()).collect();
    let (contents, lineages) = state
        .db_call(|db| -> Result<_, ApiError> { Ok((db.models_by_id(&content_ids)?, db.lineages(&ids)?)) })?;
    Ok(page
        .iter()
        .map(|m| {
            let content = m.content_id.as_ref().and_then(|c| contents.get(c));
            let (parents, children) = lineages.get(&m.id).cloned().unwrap_or_default();
            one_model_json(state, m, content, parents, children)
        })
        .collect())
}

fn one_model_json(
    state: &AppState,
    m: &PartnerModel,
    content: Option<&strata_pipeline::db::ModelRecord>,
    parents: Vec<String>,
    children: Vec<String>,
) -> serde_json::Value {
    let uri = model_uri(state, &m.id);
    let uris = |ids: Vec<String>| ids.iter().map(|id| model_uri(state, id)).collect::<Vec<_>>();
    let processed = m.status == strata_pipeline::db::ModelStatus::Processed;
    let report: Option<serde_json::Value> =
        content.and_then(|c| c.report.as_deref()).and_then(|r| serde_json::from_str(r).ok());
    // The report of the printable mesh: after repair when repaired.
    let printable = report.as_ref().map(|r| if r["after"].is_object() { &r["after"] } else { &r["before"] });
    let manifold = printable.and_then(|r| r["is_volume"].as_bool());
    let axis = |i: usize| {
        printable.and_then(|r| Some(r["bbox_max"].get(i)?.as_f64()? - r["bbox_min"].get(i)?.as_f64()?))
    };
    let artefact = |what: &str| processed.then(|| capability_url(state, &format!("/model/{}/{what}", m.id)));
    let snapshot = artefact("snapshot");
    serde_json::json!({
        "id": m.id,
        "uuid": m.id,
        "uri": uri,
        "name": m.name,
        "status": m.status,
        "error": m.error_code.as_ref().map(|code| serde_json::json!({"code": code, "message": m.error})),
        "sha256": m.content_id,
        "validation": printable,
        "validation_before_repair": report.as_ref().map(|r| r["before"].clone()),
        "repair_log": report.as_ref().map(|r| r["repair"].clone()),
        "repaired": content.map(|c| c.repaired_blob.is_some()),
        "layers": content.and_then(|c| c.layers),
        "analyses": {"manifold": manifold},
        "analyses.manifold": manifold,
        "allowed_transformations": {"resize": m.allowed_resize, "rotation": m.allowed_rotation},
        "parents": uris(parents),
        "children": uris(children),
        "size": {"x": axis(0), "y": axis(1), "z": axis(2)},
        "surface_area_mm": printable.and_then(|r| r["area"].as_f64()),
        "volume_mm": printable.and_then(|r| r["volume"].as_f64()),
        "snapshot": snapshot,
        "snapshot_content": snapshot,
        "content": artefact("content"),
        "manifest": artefact("manifest"),
        "callback": m.callback_url.as_ref().map(|u| serde_json::json!({"url": u, "method": m.callback_method})),
        "created": iso8601(m.created_at),
        "updated": iso8601(m.updated_at),
        "popularity": {"tokens_created": m.tokens_created, "streams_pulled": m.streams_pulled},
    })
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as
/// RFC 9110 asks for this header; `*` matches anything).
pub(crate) fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match
        .is_some_and(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag))
}

/// A blob as a download: fixed content type, `nosniff`, attachment.
pub(crate) async fn blob_response(
    state: &AppState,
    id: &str,
    content_type: &'static str,
    attachment: Option<&str>,
) -> Result<Response, ApiError> {
    let blob = strata_pipeline::blob::BlobId::parse(id).ok_or_else(|| ApiError::not_found("artefact"))?;
    let bytes = state.blobs().read(&blob).await.map_err(missing_or_internal)?;
    let mut resp = Response::new(bytes.into());
    download_headers(resp.headers_mut(), id, content_type, attachment);
    Ok(resp)
}

/// A blob that is not stored is 404 `not_found`; a store that failed
/// (an object store unreachable) is a 500 that says so in the log.
fn missing_or_internal(e: strata_pipeline::PipelineError) -> ApiError {
    if e.is_missing() { ApiError::not_found("artefact") } else { ApiError::internal(e) }
}

/// The `Content-Disposition` of every snapshot image.
pub(crate) const SNAPSHOT_DISPOSITION: &str = "inline; filename=\"snapshot.png\"";

/// What every blob download says: its fixed content type, `nosniff`, its
/// strong ETag (the blob id) and, when named, an attachment file name
/// reduced to safe characters.
fn download_headers(h: &mut http::HeaderMap, id: &str, content_type: &'static str, attachment: Option<&str>) {
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    h.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    if let Ok(etag) = http::HeaderValue::from_str(&format!("\"{id}\"")) {
        h.insert(http::header::ETAG, etag);
    }
    if let Some(name) = attachment {
        let safe: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
        if let Ok(v) = http::HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
            h.insert(http::header::CONTENT_DISPOSITION, v);
        }
    } else if content_type == "image/png" {
        // Snapshots show in place, under a name a save dialog can use.
        h.insert(http::header::CONTENT_DISPOSITION, http::HeaderValue::from_static(SNAPSHOT_DISPOSITION));
    }
}

/// A large blob (a model's STL) as a download streamed from its file,
/// never read whole, with a strong ETag, `Accept-Ranges` and single
/// `bytes=` ranges (206, or 416 naming the size), so a client resumes a
/// broken download.
pub(crate) async fn blob_stream(
    state: &AppState,
    id: &str,
    content_type: &'static str,
    attachment: Option<&str>,
    range: Option<&str>,
) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    use strata_pipeline::blob::Blobs;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    use warp::Reply;
    let blob = strata_pipeline::blob::BlobId::parse(id).ok_or_else(|| ApiError::not_found("artefact"))?;
    /// Where the bytes come from.
    enum Source<'a> {
        File(tokio::fs::File),
        Object(&'a strata_pipeline::objstore::ObjectBlobStore),
    }
    let (source, len) = match state.blobs() {
        Blobs::Local(fs) => {
            let file = tokio::fs::File::open(fs.path_of(&blob))
                .await
                .map_err(|_| ApiError::not_found("artefact"))?;
            let len = file.metadata().await.map_err(ApiError::internal)?.len();
            (Source::File(file), len)
        }
        Blobs::Object(o) => (Source::Object(o), o.size(&blob).await.map_err(missing_or_internal)?),
    };
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(r) => match printers::parse_range(r, len) {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
            None => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the file has {len} bytes"),
                )
                .with_header("content-range", format!("bytes */{len}")));
            }
        },
    };
    let body = match source {
        Source::File(mut file) => {
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
            tokio_util::io::ReaderStream::with_capacity(file.take(end - start), 256 * 1024).boxed()
        }
        Source::Object(o) => o.stream(&blob, start..end).await.map_err(missing_or_internal)?,
    };
    metrics::counter!("strata_content_bytes_total").increment(end - start);
    let mut resp = warp::reply::stream(sync_wrapper::SyncStream::new(body)).into_response();
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    download_headers(h, id, content_type, attachment);
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(end - start));
    h.insert(http::header::ACCEPT_RANGES, http::HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = http::HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(http::header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn etags_match_weakly_and_by_star() {
        assert!(super::etag_matches(Some("\"a\""), "\"a\""));
        assert!(super::etag_matches(Some("\"b\", W/\"a\""), "\"a\""));
        assert!(super::etag_matches(Some("*"), "\"a\""));
        assert!(!super::etag_matches(Some("\"ab\""), "\"a\""));
        assert!(!super::etag_matches(None, "\"a\""));
    }

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::iso8601(1_795_528_800_123), "2026-11-24T14:00:00Z");
    }

    #[test]
    fn model_references_are_ids_or_uris_under_either_name() {
        for r in
            ["abc", "http://h/model/abc/", "http://h/model/abc", "https://h:1/models/abc", "/model/abc/?x=1"]
        {
            assert_eq!(super::model_ref_id(r), "abc", "{r}");
        }
        assert_eq!(super::model_ref_id(""), "");
    }
}
