//! Resumable uploads, tus 1.0 (core, creation, checksum with `sha256`,
//! expiration, termination), onto a model awaiting its bytes.
//!
//! The creation endpoint is the model's own signed upload URL
//! (`X-Upload-Location` of `POST /model/`): `POST` to it with
//! `Upload-Length` makes an upload at `/files/{id}` (its random id is the
//! capability, as the signed URL is). `HEAD` tells the offset, `PATCH`
//! appends (`application/offset+octet-stream`, `Upload-Offset`, optionally
//! `Upload-Checksum: sha256 <base64>`), `DELETE` terminates. What a
//! `PATCH` brought is synced before its new offset is answered, so the
//! offset survives a crash; the rules live in
//! [`strata_pipeline::tus`]. Refusals: offset mismatch 409, checksum
//! mismatch 460 (the bytes dropped), expired 410, over the limit 413, a
//! request without `Tus-Resumable: 1.0.0` 412; every answer carries
//! `Tus-Resumable`, errors in the API's JSON envelope.

use std::sync::{Arc, LazyLock, Mutex};

use base64::Engine;
use bytes::Buf;
use http::StatusCode;
use warp::Filter;
use warp::reply::{Reply, Response};

use super::{Signed, with_state};
use crate::api::{self, ApiError};
use crate::state::AppState;
use strata_pipeline::db::TusUpload;
use strata_pipeline::tus::TusError;

/// The protocol version spoken.
const VERSION: &str = "1.0.0";
/// The extensions supported.
const EXTENSIONS: &str = "creation,checksum,expiration,termination";

/// The tus routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let tus = || warp::header::optional::<String>("tus-resumable");
    let options = warp::path!("uploads" / String)
        .or(warp::path!("files" / String))
        .unify()
        .and(warp::options())
        .and(s())
        .map(|_: String, st: Arc<AppState>| discovery(&st));
    let create = warp::path!("uploads" / String)
        .and(warp::post())
        .and(s())
        .and(warp::query::<Signed>())
        .and(tus())
        .and(warp::header::optional::<String>("upload-length"))
        .and(warp::header::optional::<String>("upload-defer-length"))
        .then(|id: String, st, q, v, length, defer| async move {
            answer(create(st, &id, q, v, length, defer).await)
        });
    let head = warp::path!("files" / String).and(warp::head()).and(s()).and(tus()).then(
        |id: String, st: Arc<AppState>, v| async move {
            answer(
                async {
                    resumable(v)?;
                    let upload = st.with_life(move |life| life.tus_upload(&id)).await?.map_err(tus_error)?;
                    let mut resp = offsets(api::empty(StatusCode::OK), &upload);
                    resp.headers_mut().insert("cache-control", http::HeaderValue::from_static("no-store"));
                    Ok(resp)
                }
                .await,
            )
        },
    );
    let patch = warp::path!("files" / String)
        .and(warp::patch())
        .and(s())
        .and(tus())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("upload-offset"))
        .and(warp::header::optional::<String>("upload-checksum"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|id: String, st, v, kind, offset, checksum, length, body| async move {
            answer(patch(st, id, (v, kind, offset, checksum, length), body).await)
        });
    let delete = warp::path!("files" / String).and(warp::delete()).and(s()).and(tus()).then(
        |id: String, st: Arc<AppState>, v| async move {
            answer(
                async {
                    resumable(v)?;
                    st.with_life(move |life| life.terminate_tus_upload(&id)).await?.map_err(tus_error)?;
                    Ok(api::empty(StatusCode::NO_CONTENT))
                }
                .await,
            )
        },
    );
    options.or(create).unify().or(head).unify().or(patch).unify().or(delete).unify().boxed()
}

/// Every answer says the protocol version, errors included.
fn answer(result: Result<Response, ApiError>) -> Response {
    let mut resp = result.unwrap_or_else(|e| e.into_response());
    resp.headers_mut().insert("tus-resumable", http::HeaderValue::from_static(VERSION));
    resp
}

/// `OPTIONS`: what this server supports.
fn discovery(state: &AppState) -> Response {
    let mut resp = api::empty(StatusCode::NO_CONTENT);
    for (name, value) in [
        ("tus-resumable", VERSION.to_string()),
        ("tus-version", VERSION.to_string()),
        ("tus-extension", EXTENSIONS.to_string()),
        ("tus-max-size", state.config.upload_limit.to_string()),
        ("tus-checksum-algorithm", "sha256".to_string()),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// Requests must speak 1.0.0 (412 naming the version otherwise).
fn resumable(version: Option<String>) -> Result<(), ApiError> {
    match version.as_deref().map(str::trim) {
        Some(VERSION) => Ok(()),
        other => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            format!("Tus-Resumable {other:?} is not supported; send Tus-Resumable: {VERSION}"),
        )
        .with_header("tus-version", VERSION)),
    }
}

fn tus_error(e: TusError) -> ApiError {
    let message = e.to_string();
    match e {
        TusError::NotFound => ApiError::not_found("upload"),
        TusError::Expired => ApiError::new(StatusCode::GONE, "expired", message),
        TusError::OffsetMismatch { expected, .. } => {
            ApiError::new(StatusCode::CONFLICT, "offset_mismatch", message)
                .with_header("upload-offset", expected.to_string())
        }
        TusError::TooLarge { limit, .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
                .with_details(serde_json::json!({ "limit": limit }))
        }
        TusError::NotAwaiting(_) => ApiError::new(StatusCode::CONFLICT, "already_uploaded", message),
        TusError::Accept(e) => ApiError::from(e),
        TusError::Store(e) => ApiError::from(e),
        e => ApiError::internal(e),
    }
}

/// `Upload-Offset`, `Upload-Length` and `Upload-Expires` of `upload`.
fn offsets(mut resp: Response, upload: &TusUpload) -> Response {
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_millis(upload.expires_at.max(0) as u64);
    for (name, value) in [
        ("upload-offset", upload.offset.to_string()),
        ("upload-length", upload.length.to_string()),
        ("upload-expires", httpdate::fmt_http_date(expires)),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn number(header: &'static str, value: &str) -> Result<u64, ApiError> {
    value.trim().parse().map_err(|_| {
        ApiError::bad_request("bad_header", format!("{header} {value:?} is not a non-negative integer"))
    })
}

/// `POST` on a model's signed upload URL: a new upload.
async fn create(
    state: Arc<AppState>,
    id: &str,
    q: Signed,
    version: Option<String>,
    length: Option<String>,
    defer: Option<String>,
) -> Result<Response, ApiError> {
    resumable(version)?;
    super::check_capability(&state, "PUT", &format!("/uploads/{id}"), &q)?;
    let Some(length) = length else {
        let why = if defer.is_some() {
            "Upload-Defer-Length is not supported; send Upload-Length"
        } else {
            "Upload-Length is required"
        };
        return Err(ApiError::bad_request("bad_header", why));
    };
    let length = number("Upload-Length", &length)?;
    if length == 0 {
        return Err(ApiError::bad_request("empty_body", "the upload is empty"));
    }
    let model = state.db_read(|db| db.partner_model(id))?.ok_or_else(|| ApiError::not_found("model"))?;
    let (limit, ttl) = (state.config.upload_limit, state.config.tus_expiry);
    let upload = state
        .with_life(move |life| life.create_tus_upload(&model, length, limit, ttl))
        .await?
        .map_err(tus_error)?;
    let mut resp = offsets(api::empty(StatusCode::CREATED), &upload);
    let location = format!("{}/files/{}", state.public_url, upload.id);
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

/// Uploads with a `PATCH` in flight in this process; a second one at once
/// is refused (423) rather than let two writers share one file.
static BUSY: LazyLock<Mutex<std::collections::HashSet<String>>> = LazyLock::new(Mutex::default);

struct Busy(String);

impl Busy {
    fn take(id: &str) -> Result<Busy, ApiError> {
        let mut busy = BUSY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !busy.insert(id.to_string()) {
            return Err(ApiError::new(
                StatusCode::LOCKED,
                "upload_busy",
                "another PATCH to this upload is in progress",
            ));
        }
        Ok(Busy(id.to_string()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0);
    }
}

type PatchHeaders = (Option<String>, Option<String>, Option<String>, Option<String>, Option<u64>);

/// `PATCH /files/{id}`: appends the body at the upload's offset.
async fn patch<S, B>(
    state: Arc<AppState>,
    id: String,
    (version, kind, offset, checksum, length): PatchHeaders,
    mut body: S,
) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    resumable(version)?;
    if kind.as_deref().map(str::trim) != Some("application/offset+octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a PATCH must be Content-Type: application/offset+octet-stream",
        ));
    }
    let offset = number(
        "Upload-Offset",
        offset.as_deref().ok_or_else(|| ApiError::bad_request("bad_header", "Upload-Offset is required"))?,
    )?;
    let expected = checksum.as_deref().map(parse_checksum).transpose()?;
    let _busy = Busy::take(&id)?;
    let check = id.clone();
    let upload = state
        .with_life(move |life| life.tus_before_append(&check, offset, length))
        .await?
        .map_err(tus_error)?;
    let path = state.life.tus_file(&id);
    let room = upload.length - upload.offset;
    let (written, read) =
        append_body(&path, upload.offset, &mut body, room, state.config.upload_pace()).await?;
    // Bytes that broke off are kept (the client resumes after them)
    // unless a checksum was to vouch for the whole body.
    let keep = match (&read, expected) {
        (Err(e), _) if e.status == StatusCode::PAYLOAD_TOO_LARGE => false,
        (Err(_), Some(_)) => false,
        (Ok(digest), Some(want)) => *digest == want,
        _ => true,
    };
    let target = path.clone();
    let at = upload.offset;
    let settled = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(&target)?;
        if keep {
            file.sync_all()
        } else {
            file.set_len(at)?;
            file.sync_all()
        }
    })
    .await
    .map_err(ApiError::internal)?;
    settled.map_err(ApiError::internal)?;
    if !keep {
        read.as_ref().map_err(Clone::clone)?;
        return Err(ApiError::new(
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum_mismatch",
            "the body's sha256 does not match Upload-Checksum; its bytes were dropped, send them again",
        )
        .with_header("upload-offset", at.to_string()));
    }
    let new_offset = upload.offset + written;
    let done = upload.clone();
    let finished =
        state.with_life(move |life| life.tus_appended(&done, new_offset)).await?.map_err(tus_error)?;
    read?;
    let mut resp = api::empty(StatusCode::NO_CONTENT);
    let after = TusUpload { offset: new_offset, ..upload };
    if let Some(finished) = finished {
        if finished.transition.announced {
            state.callbacks_due.notify_one();
        }
        state.jobs_due.notify_one();
        if let Ok(v) = http::HeaderValue::from_str(&finished.sha256) {
            resp.headers_mut().insert("x-content-sha256", v);
        }
    }
    Ok(offsets(resp, &after))
}

/// `Upload-Checksum: sha256 <base64>`, the digest.
pub(crate) fn parse_checksum(value: &str) -> Result<[u8; 32], ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_checksum", m);
    let (algorithm, digest) =
        value.trim().split_once(' ').ok_or_else(|| bad("Upload-Checksum is \"sha256 <base64>\"".into()))?;
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(bad(format!("checksum algorithm {algorithm:?} is not supported; use sha256")));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| bad("the Upload-Checksum digest is not base64".into()))?;
    bytes.try_into().map_err(|_| bad("a sha256 digest is 32 bytes".into()))
}

/// Appends the body to `path` from `offset` (dropping any unacknowledged
/// tail first), at most `room` bytes; the bytes written, and the body's
/// SHA-256 or why it stopped. Writes run on one blocking thread fed
/// through a small bounded channel, as a `PUT` upload's do.
async fn append_body<S, B>(
    path: &std::path::Path,
    offset: u64,
    body: &mut S,
    room: u64,
    pace: api::Pace,
) -> Result<(u64, Result<[u8; 32], ApiError>), ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let target = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, [u8; 32])> {
        use sha2::Digest;
        use std::io::{Seek, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&target)?;
        file.set_len(offset)?;
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut hasher = sha2::Sha256::new();
        let mut written = 0u64;
        while let Some(piece) = rx.blocking_recv() {
            hasher.update(&piece);
            file.write_all(&piece)?;
            written += piece.len() as u64;
        }
        Ok((written, hasher.finalize().into()))
    });
    let over = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the PATCH goes past the upload's length ({room} bytes were left)"),
        )
    };
    let read = super::partners::pump_body(body, pace, room, over, &tx).await;
    drop(tx);
    let (written, digest) = writer.await.map_err(ApiError::internal)?.map_err(ApiError::internal)?;
    Ok((written, read.map(|_| digest)))
}
