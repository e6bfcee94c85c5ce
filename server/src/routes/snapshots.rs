//! Snapshots as 3DIAX resources: `POST /model/{id}/snapshot/` (a view and
//! a size) answers 201 and a `Location`; `GET` on it is JSON with the
//! status and, once rendered, `content`, a signed URL of the PNG.
//!
//! Rendering runs on the CPU pool; the PNG is a blob, so the same view and
//! size of the same content is stored once however often it is asked for.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use warp::Filter;
use warp::reply::Response;

use super::partners::small_body;
use super::{Credentials, credentials, either, owned_model, partner_of, with_state};
use crate::api::{self, ApiError, finish, parse_body};
use crate::state::AppState;
use strata_pipeline::blob::{BlobId, BlobStore};
use strata_pipeline::core::render::View;
use strata_pipeline::db::{PartnerModel, Snapshot, SnapshotStatus, now_ms};

/// The snapshot resource routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let idle = state.config.small_pace();
    let base = || either("model", "models").and(warp::path::param::<String>()).and(warp::path("snapshot"));
    let create = base()
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(small_body(idle))
        .map(|id: String, st: Arc<AppState>, c: Credentials, ct: Option<String>, body: bytes::Bytes| {
            finish(create(&st, &c, &id, ct.as_deref(), &body))
        });
    let show = base()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|id: String, sid: String, st: Arc<AppState>, c: Credentials| {
            finish(partner_of(&st, &c).and_then(|p| {
                let (m, snap) = owned_snapshot(&st, &p, &id, &sid)?;
                Ok(api::json(StatusCode::OK, &snapshot_json(&st, &m, &snap)))
            }))
        });
    let content = base()
        .and(warp::path::param::<String>())
        .and(warp::path("content"))
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(warp::query::<super::Signed>())
        .then(|id: String, sid: String, st: Arc<AppState>, c: Credentials, q: super::Signed| async move {
            finish(content(&st, &c, &id, &sid, &q).await)
        });
    create.or(show).unify().or(content).unify().boxed()
}

/// A view by name, or 400.
pub(crate) fn parse_view(name: &str) -> Result<View, ApiError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "iso" | "isometric" => Ok(View::Iso),
        "front" => Ok(View::Front),
        "top" => Ok(View::Top),
        "side" => Ok(View::Side),
        other => Err(ApiError::bad_request(
            "invalid_view",
            format!("view {other:?} is not iso, front, top or side"),
        )),
    }
}

fn view_name(v: View) -> &'static str {
    match v {
        View::Front => "front",
        View::Top => "top",
        View::Side => "side",
        _ => "iso",
    }
}

#[derive(Deserialize)]
struct NewSnapshot {
    view: Option<String>,
    /// 3DIAX clients may name the camera instead; a name is a view, a
    /// free camera (an object) is not supported and answered 422.
    camera: Option<serde_json::Value>,
    size: Option<serde_json::Value>,
    width: Option<serde_json::Value>,
    height: Option<serde_json::Value>,
}

/// A pixel count sent as a JSON number or a form string.
fn pixels(v: &Option<serde_json::Value>, field: &str) -> Result<Option<u32>, ApiError> {
    let n = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    match n {
        Some(n @ 16..=2048) => Ok(Some(n as u32)),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_size",
            format!("{field} is 16 to 2048 pixels"),
        )),
    }
}

fn owned_snapshot(
    state: &AppState,
    p: &strata_pipeline::db::Partner,
    id: &str,
    sid: &str,
) -> Result<(PartnerModel, Snapshot), ApiError> {
    let m = owned_model(state, p, id)?;
    match state.db_read(|db| db.snapshot(sid))? {
        Some(s) if s.model_id == m.id => Ok((m, s)),
        _ => Err(ApiError::not_found("snapshot")),
    }
}

fn snapshot_path(m: &PartnerModel, s: &Snapshot) -> String {
    format!("/model/{}/snapshot/{}/", m.id, s.id)
}

fn snapshot_json(state: &AppState, m: &PartnerModel, s: &Snapshot) -> serde_json::Value {
    let content = (s.status == SnapshotStatus::Processed)
        .then(|| super::capability_url(state, &format!("{}content", snapshot_path(m, s))));
    serde_json::json!({
        "uri": format!("{}{}", state.public_url, snapshot_path(m, s)),
        "uuid": s.id,
        "model": super::model_uri(state, &m.id),
        "status": s.status,
        "view": s.view,
        "width": s.width,
        "height": s.height,
        "content": content,
        "error": s.error,
        "created": super::iso8601(s.created_at),
        "updated": super::iso8601(s.updated_at),
    })
}

fn create(
    state: &Arc<AppState>,
    c: &Credentials,
    id: &str,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let m = owned_model(state, &partner, id)?;
    let q: NewSnapshot = serde_json::from_value(parse_body(ct, body)?).map_err(|e| {
        ApiError::bad_request("malformed_body", format!("the snapshot request does not fit: {e}"))
    })?;
    let view = match (&q.view, &q.camera) {
        (Some(v), _) => parse_view(v)?,
        (None, Some(serde_json::Value::String(v))) => parse_view(v)?,
        (None, Some(serde_json::Value::Null) | None) => View::Iso,
        (None, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_camera",
                "a free camera is not supported; name a view: iso, front, top or side",
            ));
        }
    };
    let size = pixels(&q.size, "size")?;
    let width = pixels(&q.width, "width")?.or(size).unwrap_or(256);
    let height = pixels(&q.height, "height")?.or(size).unwrap_or(width);
    let content = match (&m.content_id, m.status) {
        (Some(c), strata_pipeline::db::ModelStatus::Processed) => {
            state.db_read(|db| db.model(c))?.ok_or_else(|| ApiError::not_found("model"))?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_processed",
                format!("the model is {}; snapshots can be made once it is processed", m.status),
            ));
        }
    };
    let now = now_ms();
    let snap = Snapshot {
        id: crate::auth::uuid_v4(),
        model_id: m.id.clone(),
        view: view_name(view).to_string(),
        width,
        height,
        status: SnapshotStatus::Processing,
        blob: None,
        error: None,
        created_at: now,
        updated_at: now,
    };
    state.db_call(|db| db.create_snapshot(&snap))?;
    let mesh_blob = content.repaired_blob.clone().or(content.original_blob.clone());
    let st = state.clone();
    let sid = snap.id.clone();
    state.pool.spawn(move || {
        let rendered = mesh_blob
            .as_deref()
            .and_then(BlobId::parse)
            .ok_or_else(|| "the model's mesh is not stored".to_string())
            .and_then(|id| st.blobs().get(&id).map_err(|e| e.to_string()))
            .and_then(|bytes| {
                strata_pipeline::process::snapshot(&bytes, view, width, height).map_err(|e| e.to_string())
            })
            .and_then(|png| st.blobs().put(&png).map_err(|e| e.to_string()));
        let outcome = match &rendered {
            Ok(blob) => st.db_call(|db| db.finish_snapshot(&sid, Ok(blob.as_str()))),
            Err(e) => st.db_call(|db| db.finish_snapshot(&sid, Err(e.as_str()))),
        };
        if let Err(e) = outcome {
            tracing::error!(snapshot = %sid, error = %e, "cannot record the snapshot's outcome");
        }
    });
    let location = format!("{}{}", state.public_url, snapshot_path(&m, &snap));
    Ok(api::with_location(api::json(StatusCode::CREATED, &snapshot_json(state, &m, &snap)), &location))
}

/// The PNG of a rendered snapshot: by its signed URL, or with the owner's
/// credentials.
async fn content(
    state: &AppState,
    c: &Credentials,
    id: &str,
    sid: &str,
    q: &super::Signed,
) -> Result<Response, ApiError> {
    let snap = if q.signature.is_some() {
        super::check_capability(state, "GET", &format!("/model/{id}/snapshot/{sid}/content"), q)?;
        state
            .db_read(|db| db.snapshot(sid))?
            .filter(|s| s.model_id == id)
            .ok_or_else(|| ApiError::not_found("snapshot"))?
    } else {
        owned_snapshot(state, &partner_of(state, c)?, id, sid)?.1
    };
    match (snap.status, &snap.blob) {
        (SnapshotStatus::Processed, Some(blob)) => super::blob_response(state, blob, "image/png", None).await,
        (SnapshotStatus::Processing, _) => {
            Err(ApiError::new(StatusCode::CONFLICT, "not_processed", "the snapshot is still being rendered")
                .with_header("retry-after", "1"))
        }
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "snapshot_failed",
            snap.error.unwrap_or_else(|| "rendering failed".into()),
        )),
    }
}
