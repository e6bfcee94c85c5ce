//! The partner API (seed 000, the 3DIAX flow): models with a signed upload
//! URL, their artefacts, and print tokens. Every path answers under its
//! 3DIAX name (`/model/`, `/token/`, trailing slash or not) and under
//! Strata's first plural one (`/models`, `/tokens`).

use std::sync::Arc;

use bytes::Buf;
use futures_util::StreamExt;
use http::StatusCode;
use serde::Deserialize;
use warp::Filter;
use warp::reply::Response;

use super::{Credentials, Signed, credentials, either, model_json, owned_model, partner_of, with_state};
use crate::api::{self, ApiError, finish, loose_bool, parse_body, read_limited};
use crate::auth;
use crate::state::AppState;
use strata_pipeline::db::{ModelQuery, ModelSort, ModelStatus, PartnerModel, PrintToken, now_ms};
use strata_pipeline::lifecycle::{AcceptError, UploadJob};

/// JSON bodies are small; uploads have their own limit.
const JSON_LIMIT: usize = 64 * 1024;

type Body = warp::filters::BoxedFilter<(Option<String>, bytes::Bytes)>;

/// The content type and the whole (limited) body, under the configured
/// idle timeout like every other body.
pub(crate) fn small_body(idle: api::Pace) -> Body {
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
    let idle = state.config.small_pace();
    let models = || either("model", "models");
    let create = models()
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(small_body(idle))
        .map(|st: Arc<AppState>, c: Credentials, ct: Option<String>, body: bytes::Bytes| {
            finish(create_model(&st, &c, ct.as_deref(), &body))
        });
    let list = models()
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::path::full())
        .and(s())
        .and(credentials())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(small_body(idle))
        .map(
            |path: warp::path::FullPath,
             st: Arc<AppState>,
             c: Credentials,
             mut q: std::collections::HashMap<String, String>,
             ct: Option<String>,
             body: bytes::Bytes| {
                let shape = if path.as_str().starts_with("/models") { Shape::Strata } else { Shape::Diax };
                // Python's requests.get(url, data=filters) sends the
                // filters as a form body on a GET.
                if let Ok(serde_json::Value::Object(form)) = parse_body(ct.as_deref(), &body) {
                    q.extend(form.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))));
                }
                finish(ListQuery::from_params(&q).and_then(|q| list_models(&st, &c, q, shape)))
            },
        );
    let show = models()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|id: String, st: Arc<AppState>, c: Credentials| {
            finish(partner_of(&st, &c).and_then(|p| {
                let m = owned_model(&st, &p, &id)?;
                Ok(api::json(StatusCode::OK, &model_json(&st, &m)?))
            }))
        });
    let artefact = models()
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(warp::query::<ArtefactQuery>())
        .and(warp::header::optional::<String>("range"))
        .then(
            |id: String,
             what: String,
             st: Arc<AppState>,
             c: Credentials,
             q: ArtefactQuery,
             range: Option<String>| async move {
                finish(artefact(st, &c, &id, &what, q, range.as_deref()).await)
            },
        );
    let upload =
        warp::path!("uploads" / String)
            .and(warp::put())
            .and(s())
            .and(warp::query::<Signed>())
            .and(warp::header::optional::<String>("x-content-sha256"))
            .and(warp::header::optional::<u64>("content-length"))
            .and(warp::body::stream())
            .then(
                |id: String,
                 st: Arc<AppState>,
                 q: Signed,
                 digest: Option<String>,
                 length: Option<u64>,
                 body| async move {
                    finish(upload(st, &id, q, digest.as_deref(), length, Box::pin(body)).await)
                },
            );
    let tokens = either("token", "tokens")
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(small_body(idle))
        .map(|st: Arc<AppState>, c: Credentials, ct: Option<String>, body: bytes::Bytes| {
            finish(create_token(&st, &c, ct.as_deref(), &body))
        });
    create
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

/// The fields of `POST /model/` this server acts on; the rest of what
/// 3DIAX clients send (`auto-align`, `type`, ...) is accepted and named in
/// the `X-Ignored-Fields` header.
const MODEL_FIELDS: [&str; 4] = ["name", "callback", "allowed_transformations", "parents"];

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// A JSON-or-form object's optional string field, or 422 naming it.
fn opt_text<'a>(
    v: &'a serde_json::Value,
    field: &str,
    code: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match v.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(unprocessable(code, format!("{field} must be a string"))),
    }
}

fn create_model(
    state: &AppState,
    c: &Credentials,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let new = parse_body(ct, body)?;
    let Some(fields) = new.as_object() else {
        return Err(ApiError::bad_request("malformed_body", "the body must be an object"));
    };
    let ignored: Vec<&str> =
        fields.keys().map(String::as_str).filter(|k| !MODEL_FIELDS.contains(k)).collect();
    let name = opt_text(&new, "name", "invalid_name")?.unwrap_or("").trim();
    if !api::valid_name(name) {
        return Err(api::invalid_name());
    }
    let callback = &new["callback"];
    let url = opt_text(callback, "url", "invalid_callback")?.unwrap_or("");
    let (callback_url, callback_method) = if url.is_empty() {
        // The seed's example sends an empty URL: no callback.
        (None, None)
    } else {
        let method = opt_text(callback, "method", "invalid_callback")?.unwrap_or("POST").to_ascii_uppercase();
        if !matches!(method.as_str(), "POST" | "PUT") {
            return Err(unprocessable("invalid_callback", "callback.method must be POST or PUT"));
        }
        if url.len() > 2048 || !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(unprocessable("invalid_callback", "callback.url must be an http(s) URL"));
        }
        (Some(url.to_string()), Some(method))
    };
    let transformations = &new["allowed_transformations"];
    let allowed = |key: &str| -> Result<bool, ApiError> {
        match transformations.get(key) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(v) => loose_bool(v).ok_or_else(|| {
                unprocessable(
                    "invalid_transformations",
                    format!("allowed_transformations.{key} must be true or false"),
                )
            }),
        }
    };
    let (allowed_resize, allowed_rotation) = (allowed("resize")?, allowed("rotation")?);
    // Lineage: the models this one derives from, each the partner's own.
    let parents: Vec<String> = match &new["parents"] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(items) if items.len() <= 64 => items
            .iter()
            .map(|p| {
                let reference =
                    p.as_str().ok_or_else(|| unprocessable("invalid_parents", "parents are model URIs"))?;
                let m = owned_model(state, &partner, super::model_ref_id(reference)).map_err(|_| {
                    unprocessable("invalid_parents", format!("{reference:?} is not one of your models"))
                })?;
                Ok(m.id)
            })
            .collect::<Result<_, ApiError>>()?,
        _ => return Err(unprocessable("invalid_parents", "parents is a list of at most 64 model URIs")),
    };
    let now = now_ms();
    let m = PartnerModel {
        callback_url,
        callback_method,
        allowed_resize,
        allowed_rotation,
        ..PartnerModel::new(auth::uuid_v4(), partner.id, name.to_string(), ModelStatus::NotUploaded, now)
    };
    state.db_call(|db| db.create_partner_model(&m))?;
    if !parents.is_empty() {
        state.db_call(|db| db.add_lineage(&m.id, &parents))?;
    }
    let expires = (now + state.config.upload_url_ttl.as_millis() as i64) / 1000;
    let signature = auth::sign(&state.secret, &auth::upload_message(&m.id, expires));
    let upload = format!("{}/uploads/{}?expires={expires}&signature={signature}", state.public_url, m.id);
    let uri = super::model_uri(state, &m.id);
    let mut body = model_json(state, &m)?;
    // Later 3DIAX releases also answered the locations in the body.
    body["resources"] = serde_json::json!([{"uri": uri, "upload-location": upload}]);
    let mut resp = api::json(StatusCode::CREATED, &body);
    let h = resp.headers_mut();
    let mut headers = vec![("location", uri), ("x-upload-location", upload)];
    if !ignored.is_empty() {
        headers.push(("x-ignored-fields", ignored.join(", ")));
    }
    for (name, value) in headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}

struct ListQuery {
    name: Option<String>,
    status: Option<String>,
    sha256: Option<String>,
    sort: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

impl ListQuery {
    fn from_params(q: &std::collections::HashMap<String, String>) -> Result<ListQuery, ApiError> {
        // Ignoring a filter would list the wrong models without a word.
        if let Some(key) = ["created", "updated"].into_iter().find(|k| q.contains_key(*k)) {
            return Err(ApiError::bad_request(
                "unsupported_filter",
                format!("filtering by {key} is not supported; sort by it (sort=-{key}) and page instead"),
            ));
        }
        let number = |key: &str| -> Result<Option<u32>, ApiError> {
            q.get(key)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| ApiError::bad_request("invalid_query", format!("{key} is a number")))
                })
                .transpose()
        };
        Ok(ListQuery {
            name: q.get("name").cloned(),
            status: q.get("status").cloned().filter(|s| !s.is_empty()),
            sha256: q.get("sha256").cloned().filter(|s| !s.is_empty()),
            sort: q.get("sort").cloned(),
            page: number("page")?,
            per_page: number("per_page")?,
        })
    }
}

/// Which listing shape a path answers: 3DIAX's (`/model/`: `resources`,
/// `links`, `meta`) or Strata's first (`/models`: `models`, `page`,
/// `per_page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Diax,
    Strata,
}

/// The 3DIAX sort: keys separated by commas, each `+key` or `-key` (a `+`
/// in a query string arrives as a space, which counts as `+`).
fn parse_sort(sort: &str) -> Result<Vec<(ModelSort, bool)>, ApiError> {
    sort.split(',')
        .map(|item| {
            let raw = item.trim_start_matches(' ');
            let (asc, key) = match raw.strip_prefix('-') {
                Some(k) => (false, k),
                None => (true, raw.strip_prefix('+').unwrap_or(raw)),
            };
            ModelSort::parse(key.trim()).map(|k| (k, asc)).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_sort",
                    format!(
                        "cannot sort by {:?}: sort is name, status, created or updated, each with + or -",
                        key.trim()
                    ),
                )
            })
        })
        .collect()
}

fn list_models(state: &AppState, c: &Credentials, q: ListQuery, shape: Shape) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(ModelStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                "status is one of not-uploaded, processing, processed, error",
            )
        })?),
    };
    let sort = match q.sort.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => parse_sort(s)?,
        _ => Vec::new(),
    };
    let page = q.page.unwrap_or(1).max(1);
    let per_page = q.per_page.unwrap_or(50).clamp(1, 200);
    let query = ModelQuery {
        name: q.name.filter(|n| !n.is_empty()),
        status,
        sha256: q.sha256.clone(),
        sort,
        page: page - 1,
        per_page,
    };
    let rows = state.db_read(|db| db.partner_models(&partner.id, &query))?;
    let models = super::models_json(state, &rows)?;
    if shape == Shape::Strata {
        return Ok(api::json(
            StatusCode::OK,
            &serde_json::json!({"models": models, "page": page, "per_page": per_page}),
        ));
    }
    let count = state.db_read(|db| db.count_partner_models(&partner.id, &query))?;
    let pages = count.div_ceil(u64::from(per_page)).max(1);
    let link = |p: u32| {
        let mut pairs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in
            [("name", query.name.as_deref()), ("status", q.status.as_deref()), ("sort", q.sort.as_deref())]
        {
            if let Some(v) = v {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("page", &p.to_string()).append_pair("per_page", &per_page.to_string());
        format!("{}/model/?{}", state.public_url, pairs.finish())
    };
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({
            "resources": models,
            "links": {
                "self": link(page),
                "next": (u64::from(page) < pages).then(|| link(page + 1)),
                "prev": (page > 1).then(|| link(page - 1)),
            },
            "meta": {"count": count, "page": page, "per_page": per_page, "pages": pages},
        }),
    ))
}

#[derive(Deserialize)]
struct ArtefactQuery {
    view: Option<String>,
    size: Option<u32>,
    expires: Option<String>,
    signature: Option<String>,
}

/// `GET /model/{id}/{content|snapshot|manifest|callbacks}`: with a valid
/// capability signature (the URLs in the model resource) no other
/// credential is needed; without one, the partner's session or API token.
async fn artefact(
    state: Arc<AppState>,
    c: &Credentials,
    id: &str,
    what: &str,
    q: ArtefactQuery,
    range: Option<&str>,
) -> Result<Response, ApiError> {
    if !matches!(what, "content" | "snapshot" | "manifest" | "callbacks") {
        return Err(ApiError::not_found("route"));
    }
    let m = if q.signature.is_some() && what != "callbacks" {
        let signed = Signed { expires: q.expires.clone(), signature: q.signature.clone() };
        super::check_capability(&state, "GET", &format!("/model/{id}/{what}"), &signed)?;
        state.db_read(|db| db.partner_model(id))?.ok_or_else(|| ApiError::not_found("model"))?
    } else {
        let partner = partner_of(&state, c)?;
        owned_model(&state, &partner, id)?
    };
    if what == "callbacks" {
        return Ok(api::json(StatusCode::OK, &crate::callbacks::log_json(&state, &m.id)?));
    }
    let content = match (&m.content_id, m.status) {
        (Some(c), ModelStatus::Processed) => {
            state.db_read(|db| db.model(c))?.ok_or_else(|| ApiError::not_found("artefact"))?
        }
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
            super::blob_stream(&state, &blob, "model/stl", Some(&format!("{}.stl", m.name)), range).await
        }
        "manifest" => {
            let blob = content.manifest_blob.ok_or_else(|| ApiError::not_found("artefact"))?;
            super::blob_response(&state, &blob, "application/json", None).await
        }
        _ => {
            let view = super::snapshots::parse_view(q.view.as_deref().unwrap_or("iso"))?;
            let size = q.size.unwrap_or(256);
            if !(16..=2048).contains(&size) {
                return Err(ApiError::bad_request("invalid_size", "size is 16 to 2048 pixels"));
            }
            snapshot(&state, &content, view, size, size).await
        }
    }
}

/// The stored snapshot for the default view and size; any other is
/// rendered on the CPU pool and kept in the store's bounded cache
/// ([`strata_pipeline::store::SNAPSHOT_CACHE_BYTES`], least recently used
/// first out).
pub(crate) async fn snapshot(
    state: &Arc<AppState>,
    content: &strata_pipeline::db::ModelRecord,
    view: strata_pipeline::core::render::View,
    width: u32,
    height: u32,
) -> Result<Response, ApiError> {
    use strata_pipeline::core::render::View;
    if view == View::Iso && width == 256 && height == 256 {
        let blob = content.snapshot_blob.clone().ok_or_else(|| ApiError::not_found("snapshot"))?;
        return super::blob_response(state, &blob, "image/png", None).await;
    }
    let key = format!("{}-{view:?}-{width}x{height}.png", content.id);
    let st = state.clone();
    let cached_key = key.clone();
    if let Some(png) = state.with_life(move |life| life.store().cache().get(&cached_key)).await? {
        return Ok(png_response(png));
    }
    let mesh_blob = content
        .repaired_blob
        .clone()
        .or(content.original_blob.clone())
        .ok_or_else(|| ApiError::not_found("snapshot"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.pool.spawn(move || {
        let result = strata_pipeline::blob::BlobId::parse(&mesh_blob)
            .ok_or_else(|| "bad blob id".to_string())
            .and_then(|id| strata_pipeline::blob::BlobStore::get(st.blobs(), &id).map_err(|e| e.to_string()))
            .and_then(|bytes| {
                strata_pipeline::process::snapshot(&bytes, view, width, height).map_err(|e| e.to_string())
            });
        // Kept for the next request, within the cache's budget (a failed
        // write only costs a render next time).
        if let Ok(png) = &result {
            let _ = st.life.store().cache().put(&key, png);
        }
        let _ = tx.send(result);
    });
    let png = rx.await.map_err(ApiError::internal)?.map_err(ApiError::internal)?;
    Ok(png_response(png))
}

fn png_response(png: Vec<u8>) -> Response {
    let mut resp = Response::new(png.into());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("image/png"));
    resp.headers_mut().insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    resp.headers_mut().insert(
        http::header::CONTENT_DISPOSITION,
        http::HeaderValue::from_static(super::SNAPSHOT_DISPOSITION),
    );
    resp
}

/// `PUT /uploads/{id}`: checks the signed URL, streams the body to a
/// spool file (hashing as it goes, never holding it whole), enforces the
/// size limit, syncs it, and queues its processing job in the same
/// transaction as the model's move to `processing`: once answered 204, the
/// upload survives a crash (see [`crate::jobs`]). A partner with
/// `Config::queue_per_partner` jobs waiting is answered 503 with
/// `Retry-After` before a byte is spooled. Any content type is
/// taken: the format is read from the bytes, and clients label the same
/// upload differently (Python's octet-stream, Ruby's Net::HTTP a form,
/// browsers model/stl or nothing).
async fn upload<S, B>(
    state: Arc<AppState>,
    id: &str,
    q: Signed,
    expected_sha256: Option<&str>,
    length: Option<u64>,
    mut body: S,
) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    super::check_capability(&state, "PUT", &format!("/uploads/{id}"), &q).map_err(|mut e| {
        e.message = match e.code {
            "expired" => "the upload URL has expired; create the model again".into(),
            _ => format!("{}; use the X-Upload-Location of POST /model/", e.message),
        };
        e
    })?;
    // A declared length over the limit is refused before a byte is read.
    if length.is_some_and(|n| n > state.config.upload_limit) {
        return Err(api::too_large(state.config.upload_limit));
    }
    let model = state.db_read(|db| db.partner_model(id))?.ok_or_else(|| ApiError::not_found("model"))?;
    if model.status != ModelStatus::NotUploaded {
        return Err(already_uploaded(model.status.as_str()));
    }
    state.life_call(|life| life.admit(&model.partner_id))?;
    let (spool_name, spool) = state.life.store().new_spool(id);
    let result = spool_body(&spool, &mut body, state.config.upload_limit, state.config.upload_pace()).await;
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
    // Only one upload per model starts processing (compare and swap), and
    // its job is queued in the same transaction.
    let upload = UploadJob { spool: spool_name, sha256: sha256.clone(), size };
    let accepted = state.with_life(move |life| life.accept_upload(&model, &upload)).await?;
    match accepted {
        Ok(t) if t.announced => state.callbacks_due.notify_one(),
        Ok(_) => {}
        Err(e) => {
            let _ = tokio::fs::remove_file(&spool).await;
            return Err(match e {
                AcceptError::AlreadyUploaded => already_uploaded("uploaded"),
                e => ApiError::from(e),
            });
        }
    }
    state.jobs_due.notify_one();
    // 204 as S3-style upload URLs answer (3DIAX clients accept 200 or 204,
    // and one only 204); the model resource tells the rest.
    let mut resp = api::empty(StatusCode::NO_CONTENT);
    for (name, value) in [("x-content-sha256", sha256.clone()), ("etag", format!("\"{sha256}\""))] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
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
/// SHA-256 (hex). The file writes, the hashing and the syncs run on one
/// blocking thread fed through a small bounded channel (so a slow disk
/// slows the sender, never the runtime's threads, and at most a few
/// pieces are in memory); hashing here costs one pass over bytes already
/// in cache and saves processing a second pass over the whole file.
pub(crate) async fn spool_body<S, B>(
    path: &std::path::Path,
    body: &mut S,
    limit: u64,
    pace: api::Pace,
) -> Result<(u64, String), ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let target = path.to_path_buf();
    // Set when the body is refused: the partial file is not worth a sync.
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let abandoned = refused.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use sha2::Digest;
        use std::io::Write;
        let mut file = std::fs::File::create(&target)?;
        let mut hasher = sha2::Sha256::new();
        while let Some(piece) = rx.blocking_recv() {
            hasher.update(&piece);
            file.write_all(&piece)?;
        }
        if abandoned.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(String::new());
        }
        // Synced, file and directory entry, before the upload is
        // acknowledged.
        file.sync_all()?;
        if let Some(dir) = target.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(auth::hex(&hasher.finalize()))
    });
    let read = pump_body(body, pace, limit, || api::too_large(limit), &tx).await;
    refused.store(read.is_err(), std::sync::atomic::Ordering::Release);
    drop(tx);
    let written = writer.await.map_err(ApiError::internal)?;
    let size = read?;
    Ok((size, written.map_err(ApiError::internal)?))
}

/// Feeds `body` to a blocking writer through `tx`, under `pace`, and
/// refuses with `over()` once it passes `limit` bytes; the bytes read. A
/// writer that stopped (a failed write) ends the feeding: its error is
/// the writer's to report.
pub(crate) async fn pump_body<S, B>(
    body: &mut S,
    pace: api::Pace,
    limit: u64,
    over: impl Fn() -> ApiError,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<u64, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut size = 0u64;
    let clock = pace.start();
    while let Some(chunk) = clock.next(size, body.next()).await? {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request("bad_body", format!("the upload broke off: {e}")))?;
        let n = chunk.remaining();
        size += n as u64;
        metrics::counter!("strata_upload_bytes_total").increment(n as u64);
        if size > limit {
            return Err(over());
        }
        if tx.send(chunk.copy_to_bytes(n)).await.is_err() {
            break;
        }
    }
    Ok(size)
}

/// `POST /token/`'s body. Fields a 3DIAX client sends beyond these are
/// ignored; `partner_job_id` may be a number (the Ruby client sends 43) or
/// a string, and is kept as its text.
#[derive(Deserialize)]
struct NewToken {
    api_key: Option<String>,
    receiver_email: Option<String>,
    model: String,
    print_value: Option<serde_json::Value>,
    print_value_currency: Option<String>,
    partner_job_id: Option<serde_json::Value>,
    print_limit: Option<u32>,
    expires_in: Option<u64>,
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

pub(crate) fn valid_email(e: &str) -> bool {
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

fn create_token(
    state: &AppState,
    c: &Credentials,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let t: NewToken = serde_json::from_value(parse_body(ct, body)?).map_err(|e| {
        ApiError::bad_request("malformed_body", format!("the token request does not fit: {e}"))
    })?;
    let partner = super::key_or_partner(state, c, t.api_key.as_deref())?;
    // The model may be given as its URI (either name, trailing slash or
    // not) or its id.
    let model = owned_model(state, &partner, super::model_ref_id(&t.model))?;
    if model.status != ModelStatus::Processed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "model_not_processed",
            format!("the model is {}; tokens can be created once it is processed", model.status),
        ));
    }
    let partner_job_id = match t.partner_job_id {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(unprocessable("invalid_partner_job_id", "partner_job_id is a string or a number"));
        }
    };
    if partner_job_id.as_ref().is_some_and(|j| j.len() > 256) {
        return Err(unprocessable("invalid_partner_job_id", "partner_job_id is at most 256 characters"));
    }
    // A number keeps its exact literal (serde_json's arbitrary precision).
    let print_value = match &t.print_value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(unprocessable(
                "invalid_print_value",
                "print_value is a non-negative decimal such as 10.56",
            ));
        }
    };
    let (email, value, currency) =
        order_fields(t.receiver_email.as_deref(), print_value.as_deref(), t.print_value_currency.as_deref())?;
    let now = now_ms();
    let token = PrintToken {
        receiver_email: email,
        print_value: value,
        print_value_currency: currency,
        partner_job_id,
        print_limit: t.print_limit.map(i64::from),
        expires_at: t.expires_in.map(|s| now.saturating_add((s.min(10 * 365 * 86_400) * 1000) as i64)),
        ..PrintToken::new(auth::random_hex(16), partner.id, Some(model.id.clone()), now)
    };
    state.db_call(|db| db.create_token(&token))?;
    let link = format!("{}/widget?token={}", state.public_url, token.token);
    let mut resp = api::json(StatusCode::CREATED, &super::printers::token_json(state, &token));
    let location = format!("{}/token/{}/", state.public_url, token.token);
    for (name, value) in [("x-token-location", link), ("location", location)] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
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
