//! Embedding, wire-compatible with ShapeDiver's Geometry Backend API v2
//! (seed 003): tickets per model, sessions opened with them from allowed
//! browser origins, scoped JWTs for model-id calls, and the API's own
//! error bodies (`{"error": "Sd...Error", "desc", "message"}`, which the
//! SDK's `processError` reads).
//!
//! - `POST /api/v2/model/{modelId}/ticket` (backend: partner credentials,
//!   or a JWT with the `backend` scope): a ticket, shown once. `GET` lists
//!   a model's tickets (without secrets), `DELETE .../ticket/{id}` revokes
//!   one and ends its sessions.
//! - `POST /api/v2/ticket/{ticket}`: a session. An embed ticket needs a
//!   browser `Origin` admitted by [`strata_pipeline::embed`] unless it is
//!   `pub`; a backend ticket works without `Origin` only while the model
//!   allows backend access. A model with `require_token` (or a partner
//!   with `force_require_token`) also needs a JWT granting `auth.session`.
//! - `POST /api/v2/session/{id}/close`; later calls on it are 410.
//! - `GET /api/v2/model/{modelId}` with a JWT granting `get.model` for
//!   that model; `PATCH` it (backend) to set `accessdomains`,
//!   `backendaccess` and `require_token`.
//! - CORS: preflights are answered for the SDK's headers; answers carry
//!   `Access-Control-Allow-Origin` for the request's origin (the checks
//!   above decide what a session may do, not CORS).

use std::sync::Arc;

use http::StatusCode;
use warp::Filter;
use warp::reply::Response;

use super::{Credentials, credentials, partner_of, with_state};
use crate::auth;
use crate::jwt::Claims;
use crate::state::AppState;
use strata_pipeline::db::{EmbedSession, EmbedSettings, Partner, PartnerModel, Ticket, now_ms};

/// The API version reported in every answer.
const VERSION: &str = "2.3.0";
/// How long a session lives without being closed.
const SESSION_MS: i64 = 2 * 3600 * 1000;
/// The headers the SDK sends.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-ShapeDiver-Origin, X-ShapeDiver-SessionEngagement, \
     X-ShapeDiver-BuildVersion, X-ShapeDiver-BuildDate, X-ShapeDiver-UserAgent";

/// An error as the Geometry Backend answers it.
#[derive(Debug)]
pub(crate) struct SdError {
    status: StatusCode,
    error: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl SdError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> SdError {
        SdError { status, error, message: message.into(), headers: Vec::new() }
    }

    /// 429 as the SDK expects it: `Retry-After` in seconds (without one
    /// it waits a whole minute), and the `RateLimit-*` headers.
    fn rate_limited(l: crate::limits::Limited) -> SdError {
        let mut e = SdError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "SdRateLimitErrorGeneric",
            format!(
                "more than {} requests in {} s; try again in {} s",
                l.limit, l.window_secs, l.retry_after
            ),
        );
        e.headers = l.headers().to_vec();
        e
    }

    fn not_found(what: &str) -> SdError {
        SdError::new(StatusCode::NOT_FOUND, "SdErrorEntityNotFound", format!("{what} not found"))
    }

    fn desc(&self) -> &'static str {
        match self.error {
            "SdTicketValidationError" => "The ticket is invalid.",
            "SdTokenMissingError" => "A token is required.",
            "SdJwtValidationError" => "The JWT is invalid.",
            "SdErrorForbidden" => "The request is not allowed.",
            "SdErrorEntityNotFound" => "The requested entity was not found.",
            "SdSessionGoneError" => "The session is gone.",
            "SdRequestValidationError" => "The request is invalid.",
            "SdErrorUnauthorized" => "The request is not authorized.",
            "SdRateLimitErrorGeneric" => "Too many requests.",
            _ => "An internal error occurred.",
        }
    }

    fn into_response(self, origin: Option<&str>) -> Response {
        let mut resp = crate::api::json(
            self.status,
            &serde_json::json!({"error": self.error, "desc": self.desc(), "message": self.message}),
        );
        for (name, value) in &self.headers {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        cors(&mut resp, origin);
        resp
    }
}

impl From<strata_pipeline::PipelineError> for SdError {
    fn from(e: strata_pipeline::PipelineError) -> SdError {
        tracing::error!(error = %e, code = e.code(), "store error");
        SdError::new(StatusCode::INTERNAL_SERVER_ERROR, "SdErrorGenericInternal", "internal error")
    }
}

impl From<crate::api::ApiError> for SdError {
    fn from(e: crate::api::ApiError) -> SdError {
        let error = match e.status {
            StatusCode::UNAUTHORIZED => "SdErrorUnauthorized",
            StatusCode::FORBIDDEN => "SdErrorForbidden",
            StatusCode::NOT_FOUND => "SdErrorEntityNotFound",
            StatusCode::TOO_MANY_REQUESTS => "SdRateLimitErrorGeneric",
            s if s.is_client_error() => "SdRequestValidationError",
            _ => "SdErrorGenericInternal",
        };
        SdError { status: e.status, error, message: e.message, headers: e.headers }
    }
}

fn cors(resp: &mut Response, origin: Option<&str>) {
    let headers = resp.headers_mut();
    if let Some(v) = origin.and_then(|o| http::HeaderValue::from_str(o).ok()) {
        headers.insert("access-control-allow-origin", v);
        headers
            .insert("access-control-expose-headers", http::HeaderValue::from_static("Content-Disposition"));
    }
    headers.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
}

fn answer(result: Result<(StatusCode, serde_json::Value), SdError>, origin: Option<&str>) -> Response {
    match result {
        Ok((status, body)) => {
            let mut resp = crate::api::json(status, &body);
            cors(&mut resp, origin);
            resp
        }
        Err(e) => e.into_response(origin),
    }
}

/// The request's `Authorization: Bearer` token, if it sent one.
fn bearer(c: &Credentials) -> Option<&str> {
    let h = c.authorization.as_deref()?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A checked JWT from the request, or why not.
fn jwt(state: &AppState, c: &Credentials) -> Result<Claims, SdError> {
    let token = bearer(c).ok_or_else(|| {
        SdError::new(
            StatusCode::UNAUTHORIZED,
            "SdTokenMissingError",
            "an Authorization: Bearer JWT is required",
        )
    })?;
    state
        .jwt
        .verify(token)
        .map_err(|e| SdError::new(StatusCode::UNAUTHORIZED, "SdJwtValidationError", e.to_string()))
}

/// Whether `claims` grant `permission` on `model`: the model's owner,
/// the permission (or the backend scope), and the model when the token
/// names one; 403 naming the permission otherwise.
fn permits(claims: &Claims, model: &PartnerModel, permission: &str) -> Result<(), SdError> {
    let fits = claims.sub == model.partner_id
        && (claims.grants(permission) || claims.grants("backend"))
        && claims.model.as_deref().is_none_or(|m| m == model.id);
    if fits {
        return Ok(());
    }
    Err(SdError::new(
        StatusCode::FORBIDDEN,
        "SdErrorForbidden",
        format!("the JWT does not grant {permission} on this model"),
    ))
}

/// The owner acting as a backend: partner credentials, or a JWT with the
/// `backend` scope.
fn backend_partner(state: &AppState, c: &Credentials) -> Result<String, SdError> {
    if bearer(c).is_some() {
        let claims = jwt(state, c)?;
        if !claims.grants("backend") {
            return Err(SdError::new(
                StatusCode::FORBIDDEN,
                "SdErrorForbidden",
                "this call needs the backend scope",
            ));
        }
        return Ok(claims.sub);
    }
    let partner: Partner = partner_of(state, c)?;
    Ok(partner.id)
}

/// `model_id`, when `owner` owns it; 404 as for a missing one otherwise.
fn owned(state: &AppState, owner: &str, model_id: &str) -> Result<PartnerModel, SdError> {
    state
        .db_read(|db| db.partner_model(model_id))?
        .filter(|m| m.partner_id == owner)
        .ok_or_else(|| SdError::not_found("model"))
}

/// The embed routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let origin = || warp::header::optional::<String>("origin");
    let idle = state.config.small_pace();
    // Bodies up to the JSON limit, with or without a Content-Length
    // (chunked requests too).
    let body = move || super::partners::small_body(idle).map(|_: Option<String>, b: bytes::Bytes| b);
    let preflight = warp::path("api").and(warp::path("v2")).and(warp::options()).and(origin()).map(
        |origin: Option<String>| {
            let mut resp = crate::api::empty(StatusCode::NO_CONTENT);
            cors(&mut resp, origin.as_deref());
            let h = resp.headers_mut();
            h.insert(
                "access-control-allow-methods",
                http::HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
            );
            h.insert("access-control-allow-headers", http::HeaderValue::from_static(ALLOWED_HEADERS));
            h.insert("access-control-max-age", http::HeaderValue::from_static("600"));
            resp
        },
    );
    let create_ticket = warp::path!("api" / "v2" / "model" / String / "ticket")
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(origin())
        .and(body())
        .map(|id: String, st: Arc<AppState>, c: Credentials, o: Option<String>, b: bytes::Bytes| {
            answer(create_ticket(&st, &c, &id, &b), o.as_deref())
        });
    let list_tickets = warp::path!("api" / "v2" / "model" / String / "ticket")
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(origin())
        .map(|id: String, st: Arc<AppState>, c: Credentials, o: Option<String>| {
            answer(list_tickets(&st, &c, &id), o.as_deref())
        });
    let revoke_ticket = warp::path!("api" / "v2" / "model" / String / "ticket" / String)
        .and(warp::delete())
        .and(s())
        .and(credentials())
        .and(origin())
        .map(|id: String, ticket: String, st: Arc<AppState>, c: Credentials, o: Option<String>| {
            answer(revoke_ticket(&st, &c, &id, &ticket), o.as_deref())
        });
    let session = warp::path!("api" / "v2" / "ticket" / String)
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(origin())
        .map(|ticket: String, st: Arc<AppState>, c: Credentials, o: Option<String>| {
            answer(open_session(&st, &c, &ticket, o.as_deref()), o.as_deref())
        });
    let close = warp::path!("api" / "v2" / "session" / String / "close")
        .and(warp::post())
        .and(s())
        .and(origin())
        .map(|id: String, st: Arc<AppState>, o: Option<String>| {
            answer(close_session(&st, &id, o.as_deref()), o.as_deref())
        });
    let get_model = warp::path!("api" / "v2" / "model" / String)
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(origin())
        .map(|id: String, st: Arc<AppState>, c: Credentials, o: Option<String>| {
            answer(get_model(&st, &c, &id), o.as_deref())
        });
    let patch_model = warp::path!("api" / "v2" / "model" / String)
        .and(warp::patch())
        .and(s())
        .and(credentials())
        .and(origin())
        .and(body())
        .map(|id: String, st: Arc<AppState>, c: Credentials, o: Option<String>, b: bytes::Bytes| {
            answer(patch_model(&st, &c, &id, &b), o.as_deref())
        });
    let export = warp::path!("api" / "v2" / "session" / String / "export")
        .or(warp::path!("api" / "v2" / "session" / String / "export" / "cache"))
        .unify()
        .and(warp::put())
        .and(s())
        .and(origin())
        .and(body())
        .map(|id: String, st: Arc<AppState>, o: Option<String>, b: bytes::Bytes| {
            answer(export(&st, &id, o.as_deref(), &b), o.as_deref())
        });
    let download = warp::path!("api" / "v2" / "model" / String / "file" / "download")
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(origin())
        .and(warp::header::optional::<String>("range"))
        .then(|id: String, st: Arc<AppState>, c: Credentials, o: Option<String>, range: Option<String>| async move {
            match download(&st, &c, &id, range.as_deref()).await {
                Ok(mut resp) => {
                    cors(&mut resp, o.as_deref());
                    resp
                }
                Err(e) => e.into_response(o.as_deref()),
            }
        });
    let asset = warp::path!("api" / "v2" / "session" / String / "export" / String)
        .and(warp::get())
        .and(s())
        .and(origin())
        .and(warp::header::optional::<String>("range"))
        .then(|id: String, asset: String, st: Arc<AppState>, o: Option<String>, range: Option<String>| async move {
            match download_export(&st, &id, &asset, o.as_deref(), range.as_deref()).await {
                Ok(mut resp) => {
                    cors(&mut resp, o.as_deref());
                    resp
                }
                Err(e) => e.into_response(o.as_deref()),
            }
        });
    preflight
        .or(export)
        .unify()
        .or(asset)
        .unify()
        .or(download)
        .unify()
        .or(create_ticket)
        .unify()
        .or(list_tickets)
        .unify()
        .or(revoke_ticket)
        .unify()
        .or(session)
        .unify()
        .or(close)
        .unify()
        .or(get_model)
        .unify()
        .or(patch_model)
        .unify()
        .boxed()
}

fn invalid(message: impl Into<String>) -> SdError {
    SdError::new(StatusCode::BAD_REQUEST, "SdRequestValidationError", message)
}

fn json_body(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, SdError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(invalid("the body must be a JSON object")),
    }
}

fn domains_field(v: Option<&serde_json::Value>) -> Result<Option<Vec<String>>, SdError> {
    let Some(v) = v else { return Ok(None) };
    let list = v
        .as_array()
        .and_then(|items| {
            items.iter().map(|i| i.as_str().map(|s| s.trim().to_string())).collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| invalid("accessdomains is a list of origins"))?;
    if list.len() > 100 {
        return Err(invalid("at most 100 accessdomains"));
    }
    if let Some(bad) = list.iter().find(|d| !strata_pipeline::embed::valid_entry(d)) {
        return Err(invalid(format!(
            "{bad:?} is not an origin (scheme://host[:port], or scheme://*.domain)"
        )));
    }
    Ok(Some(list))
}

fn model_json(state: &AppState, m: &PartnerModel) -> serde_json::Value {
    let stat = match m.status {
        strata_pipeline::db::ModelStatus::NotUploaded => "not_uploaded",
        strata_pipeline::db::ModelStatus::Processing => "pending",
        strata_pipeline::db::ModelStatus::Processed => "confirmed",
        strata_pipeline::db::ModelStatus::Error => "denied",
    };
    serde_json::json!({
        "id": m.id,
        "stat": stat,
        "name": m.name,
        "createdate": iso_ms(m.created_at),
        "backlinkurl": super::model_uri(state, &m.id),
    })
}

fn iso_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn create_ticket(
    state: &AppState,
    c: &Credentials,
    model_id: &str,
    body: &[u8],
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let owner = backend_partner(state, c)?;
    let model = owned(state, &owner, model_id)?;
    let body = json_body(body)?;
    let backend = match body.get("type").and_then(|t| t.as_str()) {
        Some("backend") => true,
        Some("") => false,
        _ => return Err(invalid("type is \"backend\" or \"\"")),
    };
    let public =
        body.get("pub").and_then(|p| p.as_bool()).ok_or_else(|| invalid("pub (a boolean) is required"))?;
    let until = body
        .get("until")
        .and_then(|u| u.as_str())
        .and_then(strata_pipeline::embed::parse_until)
        .ok_or_else(|| invalid("until (YYYYMMDDhhmmss, UTC) is required"))?;
    if until <= now_ms() {
        return Err(invalid("until is in the past"));
    }
    let author = body.get("author").and_then(|a| a.as_bool()).unwrap_or(false);
    let accessdomains = domains_field(body.get("accessdomains"))?.unwrap_or_default();
    let secret = auth::random_hex(32);
    let ticket = Ticket {
        id: auth::uuid_v4(),
        model_id: model.id.clone(),
        partner_id: owner,
        backend,
        public,
        author,
        accessdomains,
        until_ms: until,
        revoked: false,
        created_at: now_ms(),
    };
    state.db_call(|db| db.create_ticket(&ticket, &auth::secret_hash(&secret)))?;
    Ok((
        StatusCode::CREATED,
        serde_json::json!({
            "version": VERSION,
            "ticket": secret,
            "ticketId": ticket.id,
            "model": model_json(state, &model),
            "file": {},
            "setting": {},
            "statistic": {},
        }),
    ))
}

fn list_tickets(
    state: &AppState,
    c: &Credentials,
    model_id: &str,
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let owner = backend_partner(state, c)?;
    let model = owned(state, &owner, model_id)?;
    let tickets = state.db_read(|db| db.tickets_of(&model.id))?;
    let list: Vec<_> = tickets
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "type": if t.backend { "backend" } else { "" },
                "pub": t.public,
                "author": t.author,
                "accessdomains": t.accessdomains,
                "until": iso_ms(t.until_ms),
                "revoked": t.revoked,
            })
        })
        .collect();
    Ok((StatusCode::OK, serde_json::json!({"version": VERSION, "tickets": list})))
}

fn revoke_ticket(
    state: &AppState,
    c: &Credentials,
    model_id: &str,
    id: &str,
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let owner = backend_partner(state, c)?;
    let model = owned(state, &owner, model_id)?;
    if !state.db_call(|db| db.revoke_ticket(&model.id, id, now_ms()))? {
        return Err(SdError::not_found("ticket"));
    }
    Ok((StatusCode::OK, serde_json::json!({"version": VERSION})))
}

fn ticket_refused(message: &str) -> SdError {
    SdError::new(StatusCode::FORBIDDEN, "SdTicketValidationError", message)
}

fn open_session(
    state: &AppState,
    c: &Credentials,
    secret: &str,
    origin: Option<&str>,
) -> Result<(StatusCode, serde_json::Value), SdError> {
    if secret.is_empty()
        || secret.len() > 128
        || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SdError::new(
            StatusCode::BAD_REQUEST,
            "SdTicketValidationError",
            "the ticket is malformed",
        ));
    }
    let ticket = state
        .db_read(|db| db.ticket_by_secret(&auth::secret_hash(secret)))?
        .ok_or_else(|| ticket_refused("the ticket is not valid"))?;
    if ticket.revoked {
        return Err(ticket_refused("the ticket has been revoked"));
    }
    if ticket.until_ms <= now_ms() {
        return Err(ticket_refused("the ticket has expired"));
    }
    let model = state
        .db_read(|db| db.partner_model(&ticket.model_id))?
        .ok_or_else(|| ticket_refused("the ticket's model is gone"))?;
    if let Some(ip) = c.peer {
        state
            .rate_limit(&state.sessions_per_model, "sessions", &format!("{}|{ip}", model.id))
            .map_err(SdError::rate_limited)?;
    }
    let (settings, force): (EmbedSettings, bool) =
        state.db_read(|db| -> Result<_, strata_pipeline::PipelineError> {
            Ok((db.embed_settings(&model.id)?, db.force_require_token(&model.partner_id)?))
        })?;
    match (ticket.backend, origin) {
        (_, _) if ticket.public && !ticket.backend => {}
        (true, None) if settings.backendaccess => {}
        (true, None) => return Err(ticket_refused("backend access to this model is turned off")),
        (_, None) => return Err(ticket_refused("an embed ticket needs the browser's Origin")),
        (_, Some(o)) => {
            if !strata_pipeline::embed::origin_allowed(o, &ticket.accessdomains, &settings.accessdomains) {
                return Err(ticket_refused(&format!("origin {o:?} is not allowed for this model")));
            }
        }
    }
    if settings.require_token || force {
        // The ticket and a JWT: the token's owner, scope and model must fit.
        permits(&jwt(state, c)?, &model, "auth.session")?;
    }
    let now = now_ms();
    let session = EmbedSession {
        id: auth::uuid_v4(),
        model_id: model.id.clone(),
        ticket_id: ticket.id.clone(),
        origin: origin.map(str::to_string),
        created_at: now,
        expires_at: now + SESSION_MS,
        closed_at: None,
    };
    state.db_call(|db| db.create_embed_session(&session))?;
    let base = format!("{}/api/v2/session/{}", state.public_url, session.id);
    Ok((
        StatusCode::CREATED,
        serde_json::json!({
            "version": VERSION,
            "sessionId": session.id,
            "model": model_json(state, &model),
            "file": {},
            "setting": {},
            "statistic": {},
            "viewer": {"config": {}},
            "viewerSettingsVersion": "1.0",
            "actions": [
                {"name": "close", "title": "Close session", "href": format!("{base}/close"), "method": "POST"},
            ],
            "templates": [],
            "parameters": {},
            "exports": export_definitions(),
            "outputs": {},
        }),
    ))
}

/// The exports every model has: its printable mesh (STL) and its print
/// stream's manifest.
const EXPORTS: [(&str, &str, &str); 2] = [
    ("model-stl", "Printable model (STL)", "content"),
    ("print-manifest", "Print stream manifest (JSON)", "manifest"),
];

fn export_definitions() -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (order, (id, name, _)) in EXPORTS.iter().enumerate() {
        map.insert(
            id.to_string(),
            serde_json::json!({"id": id, "uid": id, "name": name, "type": "download", "dependency": [],
                "order": order, "hidden": false, "displayname": name}),
        );
    }
    serde_json::Value::Object(map)
}

/// `PUT /api/v2/session/{id}/export` (and `/export/cache`) `{exports: {id}
/// | [ids], parameters}`: each export with its download link once the
/// model is processed, or a `delay` to ask again while it is processed.
fn export(
    state: &AppState,
    id: &str,
    origin: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let session = live_session(state, id, origin)?;
    let body = json_body(body)?;
    let wanted: Vec<String> = match body.get("exports") {
        Some(serde_json::Value::Object(o)) => {
            o.get("id").and_then(|v| v.as_str()).map(|s| vec![s.to_string()]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => {
            a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    if wanted.is_empty() {
        return Err(invalid("exports names the export to compute: {\"exports\": {\"id\": \"model-stl\"}}"));
    }
    let model = state
        .db_read(|db| db.partner_model(&session.model_id))?
        .ok_or_else(|| SdError::not_found("model"))?;
    let mut out = serde_json::Map::new();
    for want in wanted {
        let Some((eid, name, what)) = EXPORTS.iter().find(|(e, _, _)| *e == want) else {
            return Err(SdError::new(
                StatusCode::NOT_FOUND,
                "SdErrorEntityNotFound",
                format!("no export {want:?}"),
            ));
        };
        let mut e = serde_json::json!({"id": eid, "uid": eid, "name": name, "type": "download", "dependency": [],
            "hidden": false, "version": model.content_id.clone().unwrap_or_default()});
        match model.status {
            strata_pipeline::db::ModelStatus::Processed => {
                let href = asset_url(state, &session.id, eid);
                let (format, content_type) =
                    if *what == "content" { ("stl", "model/stl") } else { ("json", "application/json") };
                e["content"] =
                    serde_json::json!([{"format": format, "href": href, "contentType": content_type}]);
                e["status_computation"] = "success".into();
                e["status_collect"] = "success".into();
            }
            strata_pipeline::db::ModelStatus::Processing | strata_pipeline::db::ModelStatus::NotUploaded => {
                e["delay"] = 1000.into();
            }
            strata_pipeline::db::ModelStatus::Error => {
                e["msg"] =
                    model.error.clone().unwrap_or_else(|| "the model could not be processed".into()).into();
                e["status_computation"] = "unrecoverableerror".into();
            }
        }
        out.insert(eid.to_string(), e);
    }
    Ok((StatusCode::OK, serde_json::json!({"version": VERSION, "exports": out, "outputs": {}})))
}

/// `GET /api/v2/model/{id}/file/download` with a JWT granting
/// `file.download` for the model: its printable mesh.
async fn download(
    state: &AppState,
    c: &Credentials,
    id: &str,
    range: Option<&str>,
) -> Result<Response, SdError> {
    let claims = jwt(state, c)?;
    let model = owned(state, &claims.sub, id)?;
    permits(&claims, &model, "file.download")?;
    let content = processed_content(state, &model, "model file")?;
    let blob =
        content.repaired_blob.or(content.original_blob).ok_or_else(|| SdError::not_found("model file"))?;
    Ok(super::blob_stream(state, &blob, "model/stl", Some(&format!("{}.stl", model.name)), range).await?)
}

fn asset_message(session: &str, export: &str, expires: i64) -> String {
    crate::auth::capability_message("GET", &format!("/api/v2/session/{session}/export/{export}"), expires)
}

/// Where a session's computed export is downloaded:
/// `/api/v2/session/{id}/export/{export}.{expires}.{signature}` (the
/// SDK's `downloadExport` path, whose last segment is opaque), valid as
/// long as the model resource's signed URLs and only while the session
/// lives.
fn asset_url(state: &AppState, session: &str, export: &str) -> String {
    let expires = (now_ms() + state.config.capability_url_ttl.as_millis() as i64) / 1000;
    let signature = crate::auth::sign(&state.secret, &asset_message(session, export, expires));
    format!("{}/api/v2/session/{session}/export/{export}.{expires}.{signature}", state.public_url)
}

/// `GET /api/v2/session/{id}/export/{asset}`: a signed export of a live
/// session (403 for a forged or expired link, 410 once the session is
/// closed); a browser's `Origin`, when sent, must be the session's.
async fn download_export(
    state: &AppState,
    id: &str,
    asset: &str,
    origin: Option<&str>,
    range: Option<&str>,
) -> Result<Response, SdError> {
    let forbidden = |m: &str| SdError::new(StatusCode::FORBIDDEN, "SdErrorForbidden", m.to_string());
    let mut parts = asset.rsplitn(3, '.');
    let (Some(signature), Some(expires), Some(export)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(forbidden("the export link is malformed"));
    };
    let expires: i64 = expires.parse().map_err(|_| forbidden("the export link is malformed"))?;
    if !crate::auth::verify(&state.secret, &asset_message(id, export, expires), signature) {
        return Err(forbidden("the export link's signature does not match"));
    }
    if expires.saturating_mul(1000) <= now_ms() {
        return Err(forbidden("the export link has expired; compute the export again"));
    }
    let session = state.db_read(|db| db.embed_session(id))?.ok_or_else(|| SdError::not_found("session"))?;
    // A plain link (no Origin) is the signed URL's own credential.
    let origin = origin.map(str::to_string).or_else(|| session.origin.clone());
    let session = check_live(session, origin.as_deref())?;
    let model = state
        .db_read(|db| db.partner_model(&session.model_id))?
        .ok_or_else(|| SdError::not_found("model"))?;
    let content = processed_content(state, &model, "export")?;
    match EXPORTS.iter().find(|(e, _, _)| *e == export).map(|(_, _, what)| *what) {
        Some("content") => {
            let blob = content
                .repaired_blob
                .or(content.original_blob)
                .ok_or_else(|| SdError::not_found("export"))?;
            Ok(super::blob_stream(state, &blob, "model/stl", Some(&format!("{}.stl", model.name)), range)
                .await?)
        }
        Some(_) => {
            let blob = content.manifest_blob.ok_or_else(|| SdError::not_found("export"))?;
            Ok(super::blob_response(state, &blob, "application/json", Some("manifest.json")).await?)
        }
        None => Err(SdError::not_found("export")),
    }
}

/// The stored content of `model` once processed, else 404 naming `what`.
fn processed_content(
    state: &AppState,
    model: &PartnerModel,
    what: &str,
) -> Result<strata_pipeline::db::ModelRecord, SdError> {
    model
        .content_id
        .as_deref()
        .filter(|_| model.status == strata_pipeline::db::ModelStatus::Processed)
        .map(|c| state.db_read(|db| db.model(c)))
        .transpose()?
        .flatten()
        .ok_or_else(|| SdError::not_found(what))
}

/// A session's calls come from where it was opened.
fn live_session(state: &AppState, id: &str, origin: Option<&str>) -> Result<EmbedSession, SdError> {
    let session = state.db_read(|db| db.embed_session(id))?.ok_or_else(|| SdError::not_found("session"))?;
    check_live(session, origin)
}

/// `session`, if it is open and `origin` is where it was opened.
fn check_live(session: EmbedSession, origin: Option<&str>) -> Result<EmbedSession, SdError> {
    if session.origin.is_some() && session.origin.as_deref() != origin {
        return Err(SdError::new(
            StatusCode::FORBIDDEN,
            "SdErrorForbidden",
            "the session was opened from another origin",
        ));
    }
    if session.closed_at.is_some() || session.expires_at <= now_ms() {
        return Err(SdError::new(StatusCode::GONE, "SdSessionGoneError", "the session is closed or expired"));
    }
    Ok(session)
}

fn close_session(
    state: &AppState,
    id: &str,
    origin: Option<&str>,
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let session = live_session(state, id, origin)?;
    state.db_call(|db| db.close_embed_session(&session.id, now_ms()))?;
    Ok((StatusCode::OK, serde_json::json!({"version": VERSION})))
}

fn get_model(
    state: &AppState,
    c: &Credentials,
    id: &str,
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let claims = jwt(state, c)?;
    let model = owned(state, &claims.sub, id)?;
    permits(&claims, &model, "get.model")?;
    let settings = state.db_read(|db| db.embed_settings(&model.id))?;
    model_answer(state, &model, &settings, Some(&claims))
}

fn patch_model(
    state: &AppState,
    c: &Credentials,
    id: &str,
    body: &[u8],
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let owner = backend_partner(state, c)?;
    let model = owned(state, &owner, id)?;
    let body = json_body(body)?;
    let mut settings = state.db_read(|db| db.embed_settings(&model.id))?;
    if let Some(d) = domains_field(body.get("accessdomains"))? {
        settings.accessdomains = d;
    }
    for (key, slot) in
        [("backendaccess", &mut settings.backendaccess), ("require_token", &mut settings.require_token)]
    {
        match body.get(key) {
            None => {}
            Some(serde_json::Value::Bool(b)) => *slot = *b,
            Some(_) => return Err(invalid(format!("{key} is a boolean"))),
        }
    }
    state.db_call(|db| db.set_embed_settings(&model.id, &settings))?;
    model_answer(state, &model, &settings, None)
}

/// The answer of `GET` and `PATCH /api/v2/model/{id}`: the model, and as
/// the spec gates them by permission, its authorisation settings
/// (`setting.auth.ticket.get.*`, `setting.auth.token.get.*`) and its
/// statistic (`get.statistic.*`). `claims` is `None` for the owner acting
/// as a backend, who sees everything.
fn model_answer(
    state: &AppState,
    model: &PartnerModel,
    settings: &EmbedSettings,
    claims: Option<&Claims>,
) -> Result<(StatusCode, serde_json::Value), SdError> {
    let may = |permission: &str| claims.is_none_or(|c| c.grants(permission) || c.grants("backend"));
    let mut auth = serde_json::Map::new();
    if may("setting.auth.ticket.get.*") {
        auth.insert(
            "ticket".into(),
            serde_json::json!({"accessdomains": settings.accessdomains, "backendaccess": settings.backendaccess,
                "pub": false}),
        );
    }
    if may("setting.auth.token.get.*") {
        auth.insert("token".into(), serde_json::json!({"require_token": settings.require_token}));
    }
    let statistic = if may("get.statistic.*") {
        let (sessions, last) = state.db_read(|db| db.session_statistic(&model.id))?;
        let mut s = serde_json::json!({"numsessions": sessions});
        if let Some(last) = last {
            s["lastsession"] = iso_ms(last).into();
        }
        s
    } else {
        serde_json::json!({})
    };
    let setting = if auth.is_empty() { serde_json::json!({}) } else { serde_json::json!({"auth": auth}) };
    Ok((
        StatusCode::OK,
        serde_json::json!({"version": VERSION, "model": model_json(state, model), "file": {},
            "setting": setting, "statistic": statistic}),
    ))
}
