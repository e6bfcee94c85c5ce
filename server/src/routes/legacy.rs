//! The legacy API of seed 001 (`/api3/...`), byte-compatible for partners
//! who have not migrated: its envelope `{"data": ..., "status": {"code":
//! "ok"}}` / `{"status": {"code": "error", "description": ...}}`, always
//! HTTP 200 on success as the old service did, 4xx on errors.

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
use strata_pipeline::db::{PartnerModel, PrintToken, now_ms};

/// The legacy routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let create = warp::path!("api3" / "api_create_partner_token")
        .and(warp::get())
        .and(s())
        .and(warp::query::<HashMap<String, String>>())
        .map(|st: Arc<AppState>, q: HashMap<String, String>| envelope(create_token(&st, &q)));
    let status = warp::path!("api3" / "api_get_partner_print_status")
        .and(warp::get())
        .and(s())
        .and(warp::query::<HashMap<String, String>>())
        .map(|st: Arc<AppState>, q: HashMap<String, String>| envelope(print_status(&st, &q)));
    let limit = state.config.upload_limit;
    let upload = warp::path!("api3" / "api_upload_partner_stl")
        .and(warp::post())
        .and(s())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::multipart::form().max_length(limit))
        .then(|st: Arc<AppState>, q: HashMap<String, String>, form: warp::multipart::FormData| async move {
            envelope(upload(st, q, form).await)
        });
    create.or(status).unify().or(upload).unify().boxed()
}

fn envelope(result: Result<serde_json::Value, ApiError>) -> Response {
    match result {
        Ok(data) => api::json(StatusCode::OK, &serde_json::json!({"data": data, "status": {"code": "ok"}})),
        Err(e) => {
            api::json(e.status, &serde_json::json!({"status": {"code": "error", "description": e.message}}))
        }
    }
}

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    q.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_parameter", format!("{name} is required")))
}

fn create_token(state: &AppState, q: &HashMap<String, String>) -> Result<serde_json::Value, ApiError> {
    let partner = super::api_key_partner(state, required(q, "api_key")?)?;
    let token = PrintToken::new(auth::random_hex(16), partner.id, None, now_ms());
    state.db().create_token(&token)?;
    Ok(serde_json::json!({"token": token.token}))
}

fn print_status(state: &AppState, q: &HashMap<String, String>) -> Result<serde_json::Value, ApiError> {
    let partner = super::api_key_partner(state, required(q, "api_key")?)?;
    let token = required(q, "token")?;
    let t = state
        .db()
        .token(token)?
        .filter(|t| t.partner_id == partner.id)
        .ok_or_else(|| ApiError::not_found("token"))?;
    Ok(serde_json::json!({
        "printing_job_status": t.printing_job_status,
        "printing_job_status_name": t.printing_job_status.as_deref().map(super::printers::status_name),
        "printing_percentage": t.printing_percentage,
        "minutes_left": t.minutes_left,
        "message": t.message,
        "total_time": t.total_time,
        "printer_model": t.printer_model,
    }))
}

/// The multipart upload: `stl_file` streamed to a spool file, the other
/// fields as form parts or query parameters (the seed lists them as
/// query parameters; old clients send both ways).
async fn upload(
    state: Arc<AppState>,
    mut q: HashMap<String, String>,
    mut form: warp::multipart::FormData,
) -> Result<serde_json::Value, ApiError> {
    let spool = state.uploads.join(format!("legacy-{}", auth::random_hex(8)));
    let mut sha256 = None;
    let result: Result<(), ApiError> = async {
        let idle = state.config.body_idle_timeout;
        while let Some(mut part) = crate::api::within(idle, form.try_next())
            .await?
            .map_err(|e| ApiError::bad_request("bad_multipart", e.to_string()))?
        {
            let name = part.name().to_string();
            if name == "stl_file" {
                // The same spooling as the signed-URL upload: counted
                // against the limit, under the idle timeout, hashed.
                let mut data = Box::pin(part.stream());
                let (_, digest) =
                    super::partners::spool_body(&spool, &mut data, state.config.upload_limit, idle).await?;
                sha256 = Some(digest);
            } else if name.len() <= 64 {
                let mut value = Vec::new();
                while let Some(chunk) = crate::api::within(idle, part.data())
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
    }
    .await;
    let cleanup = || {
        let _ = std::fs::remove_file(&spool);
    };
    if let Err(e) = result {
        cleanup();
        return Err(e);
    }
    let checked = (|| {
        let partner = super::api_key_partner(&state, required(&q, "api_key")?)?;
        let token = required(&q, "token")?;
        let t = state
            .db()
            .token(token)?
            .filter(|t| t.partner_id == partner.id)
            .ok_or_else(|| ApiError::not_found("token"))?;
        if t.model_id.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_uploaded",
                "this token already has its STL file",
            ));
        }
        required(&q, "receiver_email")?;
        required(&q, "print_value")?;
        if sha256.is_none() {
            return Err(ApiError::bad_request("missing_parameter", "stl_file is required"));
        }
        let (email, value, currency) = super::partners::order_fields(
            q.get("receiver_email").map(String::as_str),
            q.get("print_value").map(String::as_str),
            q.get("print_value_currency").map(String::as_str).filter(|c| !c.is_empty()),
        )?;
        Ok((partner, t, email, value, currency))
    })();
    let (partner, mut t, email, value, currency) = match checked {
        Ok(v) => v,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let name = format!("legacy upload for token {}", t.token);
    let model = PartnerModel::new(auth::random_hex(16), partner.id, name, "processing", now_ms());
    state.db().create_partner_model(&model)?;
    t.model_id = Some(model.id.clone());
    t.receiver_email = email;
    t.print_value = value;
    t.print_value_currency = currency;
    t.partner_job_id = q.get("partner_job_id").cloned();
    state.db().attach_token(&t)?;
    let st = state.clone();
    state.pool.spawn(move || super::partners::process_upload(&st, &model, &spool, sha256));
    let link = format!("{}/widget?token={}", state.public_url, t.token);
    Ok(serde_json::json!({"token_link": link, "ssl_token_link": link}))
}
