//! The partner API (seed 000, the 3DIAX flow): sessions, models with a
//! signed upload URL, and print tokens.

use std::sync::Arc;

use bytes::Buf;
use futures_util::StreamExt;
use http::StatusCode;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use warp::Filter;
use warp::reply::Response;

use super::{api_key_partner, cookies, model_json, owned_model, session_partner, with_state};
use crate::api::{self, ApiError, finish, parse_json, read_limited};
use crate::auth;
use crate::state::AppState;
use strata_pipeline::db::{ModelQuery, PartnerModel, PrintToken, now_ms};

/// JSON bodies are small; uploads have their own limit.
const JSON_LIMIT: usize = 64 * 1024;

type Body = warp::filters::BoxedFilter<(Option<String>, bytes::Bytes)>;

/// The content type and the whole (limited) body, under the configured
/// idle timeout like every other body.
fn json_body(idle: std::time::Duration) -> Body {
    warp::header::optional::<String>("content-type")
        .and(warp::body::stream())
        .then(move |ct: Option<String>, body| async move {
            (ct, read_limited(Box::pin(body), JSON_LIMIT, idle).await)
        })
        .and_then(|(ct, body): (Option<String>, Result<bytes::Bytes, ApiError>)| async move {
            body.map(|b| (ct, b)).map_err(warp::reject::custom)
        })
        .untuple_one()
        .boxed()
}

/// The partner routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let idle = state.config.body_idle_timeout;
    let login = warp::path!("sessions").and(warp::post()).and(s()).and(json_body(idle)).then(
        |st: Arc<AppState>, ct: Option<String>, body: bytes::Bytes| async move {
            finish(login(&st, ct.as_deref(), &body).await)
        },
    );
    let logout = warp::path!("sessions" / "current")
        .and(warp::delete())
        .and(s())
        .and(cookies())
        .map(|st: Arc<AppState>, c: Option<String>| finish(logout(&st, c.as_deref())));
    let create = warp::path!("models").and(warp::post()).and(s()).and(cookies()).and(json_body(idle)).map(
        |st: Arc<AppState>, c: Option<String>, ct: Option<String>, body: bytes::Bytes| {
            finish(create_model(&st, c.as_deref(), ct.as_deref(), &body))
        },
    );
    let list =
        warp::path!("models").and(warp::get()).and(s()).and(cookies()).and(warp::query::<ListQuery>()).map(
            |st: Arc<AppState>, c: Option<String>, q: ListQuery| finish(list_models(&st, c.as_deref(), q)),
        );
    let show = warp::path!("models" / String).and(warp::get()).and(s()).and(cookies()).map(
        |id: String, st: Arc<AppState>, c: Option<String>| {
            finish(session_partner(&st, c.as_deref()).and_then(|p| {
                let m = owned_model(&st, &p, &id)?;
                Ok(api::json(StatusCode::OK, &model_json(&st, &m)?))
            }))
        },
    );
    let artefact = warp::path!("models" / String / String)
        .and(warp::get())
        .and(s())
        .and(cookies())
        .and(warp::query::<SnapshotQuery>())
        .then(
            |id: String, what: String, st: Arc<AppState>, c: Option<String>, q: SnapshotQuery| async move {
                finish(artefact(st, c.as_deref(), &id, &what, q).await)
            },
        );
    let upload = warp::path!("uploads" / String)
        .and(warp::put())
        .and(s())
        .and(warp::query::<UploadQuery>())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("x-content-sha256"))
        .and(warp::body::stream())
        .then(
            |id: String,
             st: Arc<AppState>,
             q: UploadQuery,
             ct: Option<String>,
             digest: Option<String>,
             body| async move {
                finish(upload(st, &id, q, ct.as_deref(), digest.as_deref(), Box::pin(body)).await)
            },
        );
    let tokens = warp::path!("tokens").and(warp::post()).and(s()).and(json_body(idle)).map(
        |st: Arc<AppState>, ct: Option<String>, body: bytes::Bytes| {
            finish(create_token(&st, ct.as_deref(), &body))
        },
    );
    login
        .or(logout)
        .unify()
        .or(create)
        .unify()
        .or(list)
        .unify()
        .or(show)
        .unify()
        .or(artefact)
        .unify()
        .or(upload)
        .unify()
        .or(tokens)
        .unify()
        .boxed()
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(state: &Arc<AppState>, ct: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let c: Credentials = parse_json(ct, body)?;
    if let Err(wait) = state.login_allowed(&c.username) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many wrong passwords for this account; try again in {wait} s"),
        )
        .with_header("retry-after", wait.to_string()));
    }
    let found = state.db().partner_login(&c.username)?;
    // Argon2 is deliberately slow: off the reactor.
    let ok = match found {
        Some((partner, hash)) => {
            let password = c.password.clone();
            let valid = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
                .await
                .map_err(ApiError::internal)?;
            valid.then_some(partner)
        }
        None => None,
    };
    let Some(partner) = ok else {
        state.login_failed(&c.username);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "wrong username or password",
        ));
    };
    state.login_succeeded(&c.username);
    // A new id at every login (no fixation); only its hash is stored.
    let session = auth::random_hex(32);
    let ttl = state.config.session_ttl;
    let expires = now_ms() + ttl.as_millis() as i64;
    state.db().create_session(&auth::secret_hash(&session), &partner.id, expires)?;
    let secure = if state.public_url.starts_with("https://") { "; Secure" } else { "" };
    let cookie =
        format!("session={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", ttl.as_secs());
    let mut resp = api::json(
        StatusCode::CREATED,
        &serde_json::json!({"partner": partner, "expires": super::iso8601(expires)}),
    );
    if let Ok(v) = http::HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    Ok(resp)
}

fn logout(state: &AppState, cookie: Option<&str>) -> Result<Response, ApiError> {
    session_partner(state, cookie)?;
    if let Some(id) = auth::cookie(cookie, "session") {
        state.db().delete_session(&auth::secret_hash(id))?;
    }
    let mut resp = api::empty(StatusCode::NO_CONTENT);
    if let Ok(v) = http::HeaderValue::from_str("session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0") {
        resp.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewModel {
    name: String,
    callback: Option<Callback>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Callback {
    url: String,
    method: Option<String>,
}

fn create_model(
    state: &AppState,
    cookie: Option<&str>,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = session_partner(state, cookie)?;
    let new: NewModel = parse_json(ct, body)?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name must be 1 to 256 characters without control characters",
        ));
    }
    let (callback_url, callback_method) = match new.callback {
        // The seed's example sends an empty URL: no callback.
        Some(c) if !c.url.is_empty() => {
            let method = c.method.unwrap_or_else(|| "POST".into()).to_ascii_uppercase();
            if !matches!(method.as_str(), "POST" | "PUT") {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_callback",
                    "callback.method must be POST or PUT",
                ));
            }
            let ok = c.url.len() <= 2048 && (c.url.starts_with("https://") || c.url.starts_with("http://"));
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_callback",
                    "callback.url must be an http(s) URL",
                ));
            }
            (Some(c.url), Some(method))
        }
        _ => (None, None),
    };
    let now = now_ms();
    let m = PartnerModel {
        callback_url,
        callback_method,
        ..PartnerModel::new(auth::random_hex(16), partner.id, name.to_string(), "not-uploaded", now)
    };
    state.db().create_partner_model(&m)?;
    let expires = (now + state.config.upload_url_ttl.as_millis() as i64) / 1000;
    let signature = auth::sign(&state.secret, &auth::upload_message(&m.id, expires));
    let upload = format!("{}/uploads/{}?expires={expires}&signature={signature}", state.public_url, m.id);
    let mut resp = api::json(StatusCode::CREATED, &model_json(state, &m)?);
    let h = resp.headers_mut();
    for (name, value) in
        [("location", format!("{}/models/{}", state.public_url, m.id)), ("x-upload-location", upload)]
    {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct ListQuery {
    name: Option<String>,
    status: Option<String>,
    page: Option<u32>,
}

fn list_models(state: &AppState, cookie: Option<&str>, q: ListQuery) -> Result<Response, ApiError> {
    let partner = session_partner(state, cookie)?;
    if let Some(s) = &q.status
        && !["not-uploaded", "processing", "processed", "error"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status is one of not-uploaded, processing, processed, error",
        ));
    }
    let page = q.page.unwrap_or(1).max(1);
    let query = ModelQuery { name: q.name, status: q.status, page: page - 1, per_page: 50 };
    let rows = state.db().partner_models(&partner.id, &query)?;
    let models = rows.iter().map(|m| model_json(state, m)).collect::<Result<Vec<_>, _>>()?;
    Ok(api::json(StatusCode::OK, &serde_json::json!({"models": models, "page": page, "per_page": 50})))
}

#[derive(Deserialize)]
struct SnapshotQuery {
    view: Option<String>,
    size: Option<u32>,
}

async fn artefact(
    state: Arc<AppState>,
    cookie: Option<&str>,
    id: &str,
    what: &str,
    q: SnapshotQuery,
) -> Result<Response, ApiError> {
    let partner = session_partner(&state, cookie)?;
    let m = owned_model(&state, &partner, id)?;
    if what == "callbacks" {
        return Ok(api::json(StatusCode::OK, &crate::callbacks::log_json(&state, &m.id)?));
    }
    let content = match (&m.content_id, m.status.as_str()) {
        (Some(c), "processed") => state.db().model(c)?.ok_or_else(|| ApiError::not_found("artefact"))?,
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_processed",
                format!("the model is {}; artefacts exist once it is processed", m.status),
            ));
        }
    };
    match what {
        "content" => {
            let blob = content
                .repaired_blob
                .or(content.original_blob)
                .ok_or_else(|| ApiError::not_found("artefact"))?;
            super::blob_response(&state, &blob, "model/stl", Some(&format!("{}.stl", m.name)))
        }
        "manifest" => {
            let blob = content.manifest_blob.ok_or_else(|| ApiError::not_found("artefact"))?;
            super::blob_response(&state, &blob, "application/json", None)
        }
        "snapshot" => snapshot(&state, &content, q).await,
        _ => Err(ApiError::not_found("route")),
    }
}

/// The stored snapshot for the default view and size; any other is
/// rendered on the CPU pool once and cached as a blob.
async fn snapshot(
    state: &Arc<AppState>,
    content: &strata_pipeline::db::ModelRecord,
    q: SnapshotQuery,
) -> Result<Response, ApiError> {
    use strata_pipeline::core::render::View;
    let view = match q.view.as_deref().unwrap_or("iso") {
        "iso" => View::Iso,
        "front" => View::Front,
        "top" => View::Top,
        "side" => View::Side,
        other => {
            return Err(ApiError::bad_request(
                "invalid_view",
                format!("view {other:?} is not iso, front, top or side"),
            ));
        }
    };
    let size = q.size.unwrap_or(256);
    if !(16..=2048).contains(&size) {
        return Err(ApiError::bad_request("invalid_size", "size is 16 to 2048 pixels"));
    }
    if view == View::Iso && size == 256 {
        let blob = content.snapshot_blob.clone().ok_or_else(|| ApiError::not_found("snapshot"))?;
        return super::blob_response(state, &blob, "image/png", None);
    }
    let key = format!("{}-{view:?}-{size}", content.id);
    let cache = state.config.data.join("cache").join(format!("{key}.png"));
    if let Ok(png) = tokio::fs::read(&cache).await {
        return Ok(png_response(png));
    }
    let mesh_blob = content
        .repaired_blob
        .clone()
        .or(content.original_blob.clone())
        .ok_or_else(|| ApiError::not_found("snapshot"))?;
    let st = state.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.pool.spawn(move || {
        let result = strata_pipeline::blob::BlobId::parse(&mesh_blob)
            .ok_or_else(|| "bad blob id".to_string())
            .and_then(|id| strata_pipeline::blob::BlobStore::get(&st.blobs, &id).map_err(|e| e.to_string()))
            .and_then(|bytes| {
                strata_pipeline::process::snapshot(&bytes, view, size).map_err(|e| e.to_string())
            });
        let _ = tx.send(result);
    });
    let png = rx.await.map_err(ApiError::internal)?.map_err(ApiError::internal)?;
    if let Some(dir) = cache.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
        let tmp = cache.with_extension(format!("{}.tmp", auth::random_hex(4)));
        if tokio::fs::write(&tmp, &png).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &cache).await;
        }
    }
    Ok(png_response(png))
}

fn png_response(png: Vec<u8>) -> Response {
    let mut resp = Response::new(png.into());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("image/png"));
    resp.headers_mut().insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    resp
}

#[derive(Deserialize)]
struct UploadQuery {
    expires: Option<String>,
    signature: Option<String>,
}

/// `PUT /uploads/{id}`: checks the signed URL, streams the body to a
/// spool file (hashing as it goes, never holding it whole), enforces the
/// size limit, then hands processing to the CPU pool.
async fn upload<S, B>(
    state: Arc<AppState>,
    id: &str,
    q: UploadQuery,
    ct: Option<&str>,
    expected_sha256: Option<&str>,
    mut body: S,
) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let forbidden = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", m.to_string());
    let (Some(expires), Some(signature)) = (q.expires, q.signature) else {
        return Err(forbidden("the upload URL is not signed; use the X-Upload-Location of POST /models"));
    };
    let expires_at: i64 = expires.parse().map_err(|_| forbidden("the upload URL is malformed"))?;
    if !auth::verify(&state.secret, &auth::upload_message(id, expires_at), &signature) {
        return Err(forbidden("the upload URL's signature does not match"));
    }
    if expires_at * 1000 <= now_ms() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "expired",
            "the upload URL has expired; create the model again",
        ));
    }
    api::require_media_type(ct, "application/octet-stream", "the model")?;
    let model = state.db().partner_model(id)?.ok_or_else(|| ApiError::not_found("model"))?;
    if model.status != "not-uploaded" {
        return Err(already_uploaded(&model.status));
    }
    let spool = state.uploads.join(format!("{id}-{}", auth::random_hex(8)));
    let result =
        spool_body(&spool, &mut body, state.config.upload_limit, state.config.body_idle_timeout).await;
    let (size, sha256) = match result {
        Ok(spooled) => spooled,
        Err(e) => {
            let _ = tokio::fs::remove_file(&spool).await;
            return Err(e);
        }
    };
    // A client that sent the digest it computed learns of any corruption
    // on the way now, and the model stays ready for a clean upload.
    if let Some(expected) = expected_sha256
        && !expected.trim().eq_ignore_ascii_case(&sha256)
    {
        let _ = tokio::fs::remove_file(&spool).await;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            format!("the body's SHA-256 is {sha256}, X-Content-SHA256 said {}", expected.trim()),
        ));
    }
    if size == 0 {
        let _ = tokio::fs::remove_file(&spool).await;
        return Err(ApiError::bad_request("empty_body", "the upload is empty"));
    }
    // Only one upload per model starts processing (compare and swap).
    if !crate::callbacks::set_status(&state, &model, "not-uploaded", "processing", None, None)? {
        let _ = tokio::fs::remove_file(&spool).await;
        return Err(already_uploaded("uploaded"));
    }
    let st = state.clone();
    let processing = PartnerModel { status: "processing".into(), ..model };
    let digest = sha256.clone();
    state.pool.spawn(move || process_upload(&st, &processing, &spool, Some(digest)));
    let now = state.db().partner_model(id)?.ok_or_else(|| ApiError::not_found("model"))?;
    let mut resp = api::json(StatusCode::ACCEPTED, &model_json(&state, &now)?);
    if let Ok(v) = http::HeaderValue::from_str(&sha256) {
        resp.headers_mut().insert("x-content-sha256", v);
    }
    Ok(resp)
}

fn already_uploaded(status: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_uploaded",
        format!("the model is already {status}; create a new model"),
    )
}

/// Streams the body to `path`, hashing it on the way; its size and
/// SHA-256 (hex). Hashing here costs one pass over bytes already in cache,
/// and saves processing a second pass over the whole file.
pub(crate) async fn spool_body<S, B>(
    path: &std::path::Path,
    body: &mut S,
    limit: u64,
    idle: std::time::Duration,
) -> Result<(u64, String), ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    use sha2::Digest;
    let mut file = tokio::fs::File::create(path).await.map_err(ApiError::internal)?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = api::within(idle, body.next()).await? {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request("bad_body", format!("the upload broke off: {e}")))?;
        size += chunk.remaining() as u64;
        if size > limit {
            return Err(api::too_large(limit));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            hasher.update(piece);
            file.write_all(piece).await.map_err(ApiError::internal)?;
            let n = piece.len();
            chunk.advance(n);
        }
    }
    file.flush().await.map_err(ApiError::internal)?;
    Ok((size, auth::hex(&hasher.finalize())))
}

/// On the CPU pool: the spooled upload through the pipeline into the
/// store, then the model's status (`processed`, or `error` with the
/// processing error's code, or `store` when the store failed).
///
/// The spool is mapped, not read: a 500 MB upload is parsed in place
/// instead of being copied into the heap first. `sha256` is the digest
/// computed while spooling, when there is one.
pub(crate) fn process_upload(
    state: &AppState,
    model: &PartnerModel,
    spool: &std::path::Path,
    sha256: Option<String>,
) {
    let (model_id, name) = (model.id.as_str(), model.name.as_str());
    let options = strata_pipeline::process::ProcessOptions::default();
    // SAFETY: the spool file is this server's own: written whole and closed
    // by the upload handler under a random name in DATA/uploads, which
    // nothing else writes to (it is only emptied at start-up, before any
    // upload), and removed below only after the map is dropped.
    let mapped = unsafe { strata_pipeline::core::ModelBytes::map(spool) };
    let result = mapped
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            strata_pipeline::ingest::ingest_upload(
                bytes.as_bytes(),
                sha256,
                name,
                None,
                &state.blobs,
                &options,
            )
            .map_err(|e| e.to_string())
        })
        .and_then(|(row, report)| {
            state.db().put_model(&row).map(|()| (row, report)).map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_file(spool);
    let set =
        |to, content, error| crate::callbacks::set_status(state, model, "processing", to, content, error);
    let moved = match &result {
        Ok((row, report)) => match &report.error {
            Some(e) => set("error", Some(&row.id), Some((e.code, &e.message))),
            None => set("processed", Some(&row.id), None),
        },
        Err(message) => set("error", None, Some(("store", message))),
    };
    if let Err(e) = moved {
        eprintln!("model {model_id}: cannot record the processing outcome: {e}");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    api_key: String,
    receiver_email: Option<String>,
    model: String,
    print_value: Option<Box<serde_json::value::RawValue>>,
    print_value_currency: Option<String>,
    partner_job_id: Option<String>,
    print_limit: Option<u32>,
    expires_in: Option<u64>,
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Checks the order fields shared by `POST /tokens` and the legacy
/// upload: e-mail, exact decimal value, ISO 4217 currency.
pub(crate) fn order_fields(
    receiver_email: Option<&str>,
    print_value: Option<&str>,
    currency: Option<&str>,
) -> Result<(Option<String>, Option<String>, String), ApiError> {
    let email = match receiver_email {
        Some(e) if !valid_email(e) => {
            return Err(unprocessable("invalid_email", format!("{e:?} is not an e-mail address")));
        }
        e => e.map(str::to_string),
    };
    let value = match print_value {
        Some(v) => Some(decimal(v).ok_or_else(|| {
            unprocessable("invalid_print_value", "print_value is a non-negative decimal such as 10.56")
        })?),
        None => None,
    };
    let currency = currency.unwrap_or("USD").to_string();
    if !is_currency(&currency) {
        return Err(unprocessable(
            "invalid_currency",
            format!("{currency:?} is not an ISO 4217 currency code"),
        ));
    }
    Ok((email, value, currency))
}

/// The decimal exactly as sent (a JSON number's literal or a string),
/// when it is a plain non-negative decimal: money is never a float.
pub(crate) fn decimal(raw: &str) -> Option<String> {
    let s = raw.trim().trim_matches('"');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = !int.is_empty()
        && int.len() <= 15
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 8
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.contains('.') && frac.is_empty());
    ok.then(|| s.to_string())
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else { return false };
    !local.is_empty()
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// ISO 4217 active codes (the list as of 2026).
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP \
BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP \
GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD \
LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN \
PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS \
UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG";

fn is_currency(c: &str) -> bool {
    c.len() == 3 && CURRENCIES.split_whitespace().any(|k| k == c)
}

fn create_token(state: &AppState, ct: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let t: NewToken = parse_json(ct, body)?;
    let partner = api_key_partner(state, &t.api_key)?;
    // The model may be given as its URI or its id.
    let model_id = t.model.rsplit('/').next().unwrap_or_default();
    let model = owned_model(state, &partner, model_id)?;
    if model.status != "processed" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "model_not_processed",
            format!("the model is {}; tokens can be created once it is processed", model.status),
        ));
    }
    let (email, value, currency) = order_fields(
        t.receiver_email.as_deref(),
        t.print_value.as_ref().map(|v| v.get()),
        t.print_value_currency.as_deref(),
    )?;
    let now = now_ms();
    let token = PrintToken {
        receiver_email: email,
        print_value: value,
        print_value_currency: currency,
        partner_job_id: t.partner_job_id,
        print_limit: t.print_limit.map(i64::from),
        expires_at: t.expires_in.map(|s| now.saturating_add((s.min(10 * 365 * 86_400) * 1000) as i64)),
        ..PrintToken::new(auth::random_hex(16), partner.id, Some(model.id.clone()), now)
    };
    state.db().create_token(&token)?;
    let link = format!("{}/widget?token={}", state.public_url, token.token);
    let mut resp = api::json(StatusCode::CREATED, &super::printers::token_json(state, &token));
    if let Ok(v) = http::HeaderValue::from_str(&link) {
        resp.headers_mut().insert("x-token-location", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_kept_exactly_and_refused_when_not_a_plain_decimal() {
        assert_eq!(decimal("10.56").as_deref(), Some("10.56"));
        assert_eq!(decimal("\"0.10\"").as_deref(), Some("0.10"));
        assert_eq!(decimal("12345678901234.99").as_deref(), Some("12345678901234.99"));
        for bad in ["-1", "1e3", "1.", ".5", "NaN", "", "1,5", "0x10", "1.123456789"] {
            assert!(decimal(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn emails_and_currencies() {
        assert!(valid_email("ann@example.com"));
        for bad in ["", "ann", "ann@", "@x.com", "a b@x.com", "ann@localhost", "ann@x..com"] {
            assert!(!valid_email(bad), "{bad:?}");
        }
        assert!(is_currency("USD") && is_currency("EUR") && is_currency("JPY"));
        assert!(!is_currency("usd") && !is_currency("XYZ") && !is_currency("US"));
    }
}
