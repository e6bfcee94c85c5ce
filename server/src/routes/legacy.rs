//! The legacy API of seed 001 (`/api3/...`), as its clients use it: the
//! envelope `{"data": ..., "status": {"code": "ok"}}`, and every error as
//! the real service answered it, HTTP 200 with
//! `{"status": {"code": "error", "description": "System error",
//! "extended_description": "...\n"}}` (clients read the status code in the
//! body, and one reads `extended_description`); Strata's own error code is
//! in the `X-Strata-Error` header. Only a body refused before it was read
//! (too large, stalled) keeps its 413 or 408, with `Connection: close`.
//!
//! Parameters arrive every way old clients send them: in the query
//! string, as a form body on GET or POST, as multipart fields beside
//! `stl_file`, and (from one Ruby client that passed them as headers) the
//! API key as an `Api-Key` header. Each call answers GET and POST.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Buf;
use futures_util::TryStreamExt;
use http::StatusCode;
use warp::Filter;
use warp::reply::Response;

use super::with_state;
use crate::api::{self, ApiError};
use crate::auth;
use crate::state::AppState;
use strata_pipeline::db::{ModelStatus, Partner, PartnerModel, PrintToken, now_ms};

type Params = HashMap<String, String>;

/// The legacy routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let idle = state.config.small_pace();
    // The query, a form body if any, and the Api-Key header, merged (the
    // body's fields win over the query's).
    let params = move || {
        warp::query::<Params>()
            .and(warp::header::optional::<String>("api-key"))
            .and(super::partners::small_body(idle))
            .map(|mut q: Params, key: Option<String>, ct: Option<String>, body: bytes::Bytes| {
                let form = ct
                    .as_deref()
                    .and_then(|c| c.split(';').next())
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
                if form {
                    q.extend(form_urlencoded::parse(&body).into_owned());
                }
                if let Some(k) = key {
                    q.entry("api_key".into()).or_insert(k);
                }
                q
            })
    };
    let get_or_post = || warp::get().or(warp::post()).unify();
    let create = warp::path!("api3" / "api_create_partner_token")
        .and(get_or_post())
        .and(s())
        .and(params())
        .map(|st: Arc<AppState>, q: Params| envelope(create_token(&st, &q)));
    let status = warp::path!("api3" / "api_get_partner_print_status")
        .and(get_or_post())
        .and(s())
        .and(params())
        .map(|st: Arc<AppState>, q: Params| envelope(print_status(&st, &q)));
    let upload = warp::path!("api3" / "api_upload_partner_stl")
        .and(warp::post())
        .and(s())
        .and(warp::query::<Params>())
        .and(warp::header::optional::<String>("api-key"))
        .and(warp::header::optional::<u64>("content-length"))
        // Our own limits count the bytes: warp's would answer 411 to a
        // chunked body.
        .and(warp::multipart::form().max_length(None))
        .then(
            |st: Arc<AppState>,
             mut q: Params,
             key: Option<String>,
             length: Option<u64>,
             form: warp::multipart::FormData| async move {
                if let Some(k) = key {
                    q.entry("api_key".into()).or_insert(k);
                }
                envelope(upload(st, q, length, form).await)
            },
        );
    // Not multipart: there is no stl_file, but the parameters are still
    // checked in order, so the client hears what is wrong first.
    let upload_without_file =
        warp::path!("api3" / "api_upload_partner_stl").and(warp::post()).and(s()).and(params()).map(
            |st: Arc<AppState>, q: Params| {
                envelope(check_upload(&st, &q, None).and_then(|_| Err(missing("stl_file"))))
            },
        );
    create.or(status).unify().or(upload).unify().or(upload_without_file).unify().boxed()
}

/// The real service's answer to any error; the one recorded
/// `extended_description` ended with a newline, so all of ours do.
fn envelope(result: Result<serde_json::Value, ApiError>) -> Response {
    match result {
        Ok(data) => api::json(StatusCode::OK, &serde_json::json!({"data": data, "status": {"code": "ok"}})),
        Err(e) => {
            let keeps_status =
                matches!(e.status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT);
            let status = if keeps_status { e.status } else { StatusCode::OK };
            let mut resp = api::json(
                status,
                &serde_json::json!({"status": {
                    "code": "error",
                    "description": "System error",
                    "extended_description": format!("{}\n", e.message),
                }}),
            );
            let h = resp.headers_mut();
            h.insert("x-strata-error", http::HeaderValue::from_static(e.code));
            for (name, value) in e.headers {
                if let Ok(v) = http::HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            resp
        }
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::bad_request("missing_parameter", format!("{name} is required"))
}

fn required<'a>(q: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    q.get(name).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| missing(name))
}

fn partner(state: &AppState, q: &Params) -> Result<Partner, ApiError> {
    super::api_key_partner(state, required(q, "api_key")?)
        .map_err(|e| ApiError { message: "invalid api_key".into(), ..e })
}

/// The partner's token `token`: unknown, another partner's, revoked and
/// expired tokens are each refused with their own words.
fn partner_token(state: &AppState, partner: &Partner, token: &str) -> Result<PrintToken, ApiError> {
    let t = state
        .db_read(|db| db.token(token))?
        .filter(|t| t.partner_id == partner.id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "token does not exist"))?;
    if t.revoked {
        return Err(ApiError::new(StatusCode::GONE, "revoked", "token has been revoked"));
    }
    if t.expires_at.is_some_and(|e| e <= now_ms()) {
        return Err(ApiError::new(StatusCode::GONE, "expired", "token has expired"));
    }
    Ok(t)
}

fn create_token(state: &AppState, q: &Params) -> Result<serde_json::Value, ApiError> {
    let partner = partner(state, q)?;
    let token = PrintToken::new(auth::random_hex(16), partner.id, None, now_ms());
    state.db_call(|db| db.create_token(&token))?;
    Ok(serde_json::json!({"token": token.token}))
}

fn print_status(state: &AppState, q: &Params) -> Result<serde_json::Value, ApiError> {
    let partner = partner(state, q)?;
    let t = partner_token(state, &partner, required(q, "token")?)?;
    let Some(status) = &t.printing_job_status else {
        // The real service's words for a token nobody has printed yet.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_print",
            "token does not have print order associated",
        ));
    };
    Ok(serde_json::json!({
        // The seed's names in both fields: clients compare
        // printing_job_status_name (or its lower case) with them.
        "printing_job_status": status,
        "printing_job_status_name": status,
        "printing_percentage": t.printing_percentage,
        "minutes_left": t.minutes_left,
        "message": t.message,
        "total_time": t.total_time,
        "printer_model": t.printer_model,
    }))
}

/// The upload's checks that need no file, in the order the seed lists the
/// parameters: the key, the token (known, the partner's, live, without a
/// file yet), then the order fields once they are all known
/// (`fields_complete`).
fn check_upload(
    state: &AppState,
    q: &Params,
    fields_complete: Option<()>,
) -> Result<(Partner, PrintToken), ApiError> {
    let partner = partner(state, q)?;
    let t = partner_token(state, &partner, required(q, "token")?)?;
    if t.model_id.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "already_uploaded", "token already has an STL file"));
    }
    if fields_complete.is_some() || q.contains_key("receiver_email") {
        required(q, "receiver_email")?;
    }
    if fields_complete.is_some() || q.contains_key("print_value") {
        required(q, "print_value")?;
    }
    Ok((partner, t))
}

/// The multipart upload: fields as form parts or query parameters (the
/// seed lists them as query parameters; old clients send both ways), and
/// `stl_file` streamed to a spool file. The key and the token are checked
/// before a byte of the file is written whenever they come first (as
/// every client sends them); a declared length over the limit is refused
/// before anything is read.
async fn upload(
    state: Arc<AppState>,
    mut q: Params,
    length: Option<u64>,
    mut form: warp::multipart::FormData,
) -> Result<serde_json::Value, ApiError> {
    let limit = state.config.upload_limit;
    if length.is_some_and(|n| n > limit.saturating_add(1024 * 1024)) {
        return Err(api::too_large(limit));
    }
    // A key and token in the query are checked before the body is read.
    if q.contains_key("api_key") && q.contains_key("token") {
        check_upload(&state, &q, None)?;
    }
    let (spool_name, spool) = state.life.store().new_spool("legacy");
    let mut sha256 = None;
    let pace = state.config.upload_pace();
    let idle = pace.idle;
    let whole = async {
        while let Some(mut part) = api::within(idle, form.try_next())
            .await?
            .map_err(|e| ApiError::bad_request("bad_multipart", e.to_string()))?
        {
            let name = part.name().to_string();
            if name == "stl_file" {
                if sha256.is_some() {
                    return Err(ApiError::bad_request("bad_multipart", "stl_file is sent twice"));
                }
                // Refuse a bad key or token before the file is spooled.
                if q.contains_key("api_key") && q.contains_key("token") {
                    check_upload(&state, &q, None)?;
                }
                let mut data = Box::pin(part.stream());
                sha256 = Some(super::partners::spool_body(&spool, &mut data, limit, pace).await?);
            } else if name.len() <= 64 {
                let mut value = Vec::new();
                while let Some(chunk) = api::within(idle, part.data())
                    .await?
                    .transpose()
                    .map_err(|e| ApiError::bad_request("bad_multipart", e.to_string()))?
                {
                    if value.len() + chunk.remaining() > 4096 {
                        return Err(ApiError::bad_request("field_too_long", format!("{name} is too long")));
                    }
                    value.extend_from_slice(chunk.chunk());
                }
                q.insert(name, String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(())
    };
    // The whole form, fields and file, within the upload's deadline.
    let result: Result<(), ApiError> = match tokio::time::timeout(pace.deadline, whole).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_too_slow",
            format!("the upload took longer than {} s; send it again", pace.deadline.as_secs()),
        )
        .with_header("connection", "close")),
    };
    let cleanup = || {
        let _ = std::fs::remove_file(&spool);
    };
    if let Err(e) = result {
        cleanup();
        return Err(e);
    }
    let checked = (|| {
        let (partner, t) = check_upload(&state, &q, Some(()))?;
        let Some((size, sha256)) = sha256.clone() else { return Err(missing("stl_file")) };
        let (email, value, currency) = super::partners::order_fields(
            q.get("receiver_email").map(String::as_str),
            q.get("print_value").map(String::as_str),
            q.get("print_value_currency").map(String::as_str).filter(|c| !c.is_empty()),
        )?;
        state.life_call(|life| life.admit(&partner.id))?;
        Ok((partner, t, email, value, currency, size, sha256))
    })();
    let (partner, mut t, email, value, currency, size, sha256) = match checked {
        Ok(v) => v,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let name = format!("legacy upload for token {}", t.token);
    let model = PartnerModel::new(auth::uuid_v4(), partner.id, name, ModelStatus::Processing, now_ms());
    t.model_id = Some(model.id.clone());
    t.receiver_email = email;
    t.print_value = value;
    t.print_value_currency = currency;
    t.partner_job_id = q.get("partner_job_id").cloned().filter(|j| !j.is_empty());
    let upload = strata_pipeline::lifecycle::UploadJob { spool: spool_name, sha256, size };
    let token = t.token.clone();
    let accepted = state.with_life(move |life| life.accept_legacy_upload(&model, &t, &upload)).await?;
    match accepted {
        Ok(()) => state.jobs_due.notify_one(),
        Err(e) => {
            cleanup();
            return Err(match e {
                strata_pipeline::lifecycle::AcceptError::AlreadyUploaded => {
                    ApiError::new(StatusCode::CONFLICT, "already_uploaded", "token already has an STL file")
                }
                e => ApiError::from(e),
            });
        }
    }
    let link = format!("{}/widget?token={token}", state.public_url);
    Ok(serde_json::json!({"token_link": link, "ssl_token_link": link}))
}
