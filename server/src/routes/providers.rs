//! External service providers (seed 002) over HTTP: the registry
//! (`/service/`), account links, provider jobs (`/jobs/`), the provider's
//! completion reports, and its temporary input and output URLs. Every
//! path also answers under `/v1/`. The rules live in
//! [`strata_pipeline::providers`] and [`crate::providers`]; this module
//! translates.

use std::sync::Arc;

use http::StatusCode;
use warp::Filter;
use warp::reply::Response;

use super::{Credentials, credentials, either, model_ref_id, partner_of, with_state};
use crate::api::{self, ApiError, finish, parse_json};
use crate::providers::{self as prov, LinkError, SignatureError, UrlError};
use crate::state::AppState;
use strata_pipeline::db::{
    LinkOutcome, ProviderJob, ProviderJobStatus, ProviderJobUpdate, Service, ServiceType, now_ms,
};
use strata_pipeline::providers::{NewService, ServiceError};

/// How long a link request's nonce is good for.
const LINK_REQUEST_TTL_MS: i64 = 10 * 60 * 1000;
/// The longest overlap a rotation may ask for.
const MAX_OVERLAP_SECS: i64 = 7 * 24 * 3600;

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let message = e.to_string();
        match e {
            ServiceError::Invalid { field, .. } => {
                let code = match field {
                    "name" => "invalid_name",
                    "description" => "invalid_description",
                    "type" => "invalid_type",
                    "service_url" => "invalid_service_url",
                    "service_method" => "invalid_service_method",
                    _ => "invalid_options",
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::NotReady(_) => ApiError::new(StatusCode::CONFLICT, "model_not_ready", message),
            ServiceError::Finished(_) => ApiError::new(StatusCode::CONFLICT, "job_finished", message),
            ServiceError::Mismatch(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "result_mismatch", message)
            }
            ServiceError::Busy(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", message)
                .with_header("retry-after", "30"),
            ServiceError::Store(e) => e.into(),
            _ => ApiError::internal(message),
        }
    }
}

fn unauthorized(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
}

fn url_refused(e: UrlError) -> ApiError {
    let code = if e == UrlError::Expired { "expired" } else { "invalid_signature" };
    ApiError::new(StatusCode::FORBIDDEN, code, e.to_string())
}

fn service_uri(state: &AppState, id: &str) -> String {
    format!("{}/service/{id}/", state.public_url)
}

fn job_uri(state: &AppState, id: &str) -> String {
    format!("{}/jobs/{id}/", state.public_url)
}

fn service_json(state: &AppState, s: &Service) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "uri": service_uri(state, &s.id),
        "name": s.name,
        "description": s.description,
        "type": s.kind,
        "service_url": s.service_url,
        "service_method": s.service_method,
        "created": super::iso8601(s.created_at),
    })
}

fn job_json(state: &AppState, j: &ProviderJob) -> serde_json::Value {
    serde_json::json!({
        "id": j.id,
        "uri": job_uri(state, &j.id),
        "status": j.status,
        "service": service_uri(state, &j.service_id),
        "model": super::model_uri(state, &j.model_id),
        "result_model": j.result_model.as_deref().map(|m| super::model_uri(state, m)),
        "problem": j.problem.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
        "error": j.error,
        "deadline": super::iso8601(j.deadline_at),
        "created": super::iso8601(j.created_at),
        "updated": super::iso8601(j.updated_at),
    })
}

/// The last path segment of a URI, or the id itself.
fn ref_id(reference: &str) -> &str {
    let path = reference.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// The provider routes, under their names and again under `/v1/`.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    warp::path("v1").and(unversioned(state.clone())).or(unversioned(state)).unify().boxed()
}

fn unversioned(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let idle = state.config.small_pace();
    let body = move || super::partners::small_body(idle);
    let services = || either("service", "services");
    let register =
        services().and(warp::path::end()).and(warp::post()).and(s()).and(credentials()).and(body()).then(
            |st: Arc<AppState>, c: Credentials, ct: Option<String>, b: bytes::Bytes| async move {
                finish(register(&st, &c, ct.as_deref(), &b).await)
            },
        );
    let list = services()
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .map(|st: Arc<AppState>, c: Credentials, q: std::collections::HashMap<String, String>| {
            finish(list_services(&st, &c, q.get("type").map(String::as_str)))
        });
    let show = services()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|id: String, st: Arc<AppState>, c: Credentials| finish(show_service(&st, &c, &id)));
    let rotate = services()
        .and(warp::path::param::<String>())
        .and(warp::path("secret"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(warp::header::headers_cloned())
        .and(body())
        .map(|id: String, st: Arc<AppState>, h: http::HeaderMap, _ct: Option<String>, b: bytes::Bytes| {
            finish(rotate(&st, &id, &h, &b))
        });
    let link_request = services()
        .and(warp::path::param::<String>())
        .and(warp::path("link-requests"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(credentials())
        .map(|id: String, st: Arc<AppState>, c: Credentials| finish(link_request(&st, &c, &id)));
    let link = services()
        .and(warp::path::param::<String>())
        .and(warp::path("links"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(body())
        .map(|id: String, st: Arc<AppState>, c: Credentials, ct: Option<String>, b: bytes::Bytes| {
            finish(link(&st, &c, &id, ct.as_deref(), &b))
        });
    let show_link = services()
        .and(warp::path::param::<String>())
        .and(warp::path("links"))
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|id: String, st: Arc<AppState>, c: Credentials| finish(show_link(&st, &c, &id)));
    let request = warp::path("jobs")
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(credentials())
        .and(body())
        .map(|st: Arc<AppState>, c: Credentials, ct: Option<String>, b: bytes::Bytes| {
            finish(request_job(&st, &c, ct.as_deref(), &b))
        });
    let jobs = warp::path("jobs")
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|st: Arc<AppState>, c: Credentials| finish(list_jobs(&st, &c)));
    let job = warp::path("jobs")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|id: String, st: Arc<AppState>, c: Credentials| finish(show_job(&st, &c, &id)));
    let report = warp::path("jobs")
        .and(warp::path::param::<String>())
        .and(warp::path("callback"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(warp::header::headers_cloned())
        .and(body())
        .map(|id: String, st: Arc<AppState>, h: http::HeaderMap, _ct: Option<String>, b: bytes::Bytes| {
            finish(completion(&st, &id, &h, &b))
        });
    let raw_query = || warp::query::raw().or(warp::any().map(String::new)).unify();
    let input = warp::path!("provider" / "models" / String / "content")
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::optional::<String>("range"))
        .and(s())
        .then(
            |model: String, m: http::Method, q: String, range: Option<String>, st: Arc<AppState>| async move {
                finish(input(&st, &model, &m, &q, range.as_deref()).await)
            },
        );
    let output = warp::path!("provider" / "jobs" / String / "result")
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(s())
        .and(warp::body::stream())
        .then(|job: String, m: http::Method, q: String, h: http::HeaderMap, st: Arc<AppState>, body| async move {
            finish(output(st, &job, &m, &q, &h, Box::pin(body)).await)
        });
    register
        .or(list)
        .unify()
        .or(show)
        .unify()
        .or(rotate)
        .unify()
        .or(link_request)
        .unify()
        .or(link)
        .unify()
        .or(show_link)
        .unify()
        .or(request)
        .unify()
        .or(jobs)
        .unify()
        .or(job)
        .unify()
        .or(report)
        .unify()
        .or(input)
        .unify()
        .or(output)
        .unify()
        .boxed()
}

fn text_field<'a>(v: &'a serde_json::Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field} must be a string"),
        )),
    }
}

/// `POST /service/`: registers a service; its secret is in this answer
/// only.
async fn register(
    state: &Arc<AppState>,
    c: &Credentials,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let v = api::parse_body(ct, body)?;
    let url = text_field(&v, "service_url")?.unwrap_or("").trim().to_string();
    let new = NewService {
        owner_id: &partner.id,
        name: text_field(&v, "name")?.unwrap_or(""),
        description: text_field(&v, "description")?.unwrap_or(""),
        kind: text_field(&v, "type")?.unwrap_or(""),
        service_url: &url,
        service_method: text_field(&v, "service_method")?,
    };
    // The rules on the fields first (cheap), then where the URL leads.
    if ServiceType::parse(new.kind).is_none() || new.service_url.is_empty() {
        return Err(state.life_call(|life| life.register_service(&new)).err().map_or_else(
            || {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_service_url",
                    "service_url is required",
                )
            },
            ApiError::from,
        ));
    }
    prov::check_destination(state, &url).await.map_err(|why| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_service_url",
            format!("service_url is refused: {why} (the operator can allow private addresses)"),
        )
    })?;
    let s = state.life_call(|life| life.register_service(&new))?;
    let mut answer = service_json(state, &s);
    answer["secret"] = prov::service_secret(&state.secret, &s.id, s.secret_generation).into();
    tracing::info!(service = %s.id, owner = %partner.id, kind = %s.kind, "service registered");
    Ok(api::with_location(api::json(StatusCode::CREATED, &answer), &service_uri(state, &s.id)))
}

fn list_services(state: &AppState, c: &Credentials, kind: Option<&str>) -> Result<Response, ApiError> {
    partner_of(state, c)?;
    let kind =
        match kind {
            None | Some("") => None,
            Some(k) => Some(ServiceType::parse(k).ok_or_else(|| {
                ApiError::bad_request("invalid_type", format!("{k:?} is not a service type"))
            })?),
        };
    let list = state.db_read(|db| db.services(kind))?;
    let services: Vec<serde_json::Value> = list.iter().map(|s| service_json(state, s)).collect();
    Ok(api::json(StatusCode::OK, &serde_json::json!({"services": services})))
}

fn service(state: &AppState, id: &str) -> Result<Service, ApiError> {
    state.db_read(|db| db.service(id))?.ok_or_else(|| ApiError::not_found("service"))
}

fn show_service(state: &AppState, c: &Credentials, id: &str) -> Result<Response, ApiError> {
    partner_of(state, c)?;
    Ok(api::json(StatusCode::OK, &service_json(state, &service(state, id)?)))
}

/// Checks a request signed by service `s` (current or overlapping
/// secret), and takes its delivery id once; false for a replay.
fn signed_by(state: &AppState, s: &Service, h: &http::HeaderMap, body: &[u8]) -> Result<bool, ApiError> {
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let id = prov::verify(
        &prov::accepted_secrets(state, s),
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        body,
        now_ms() / 1000,
    )
    .map_err(unauthorized)?;
    Ok(state.db_call(|db| db.record_provider_delivery(&s.id, &id, now_ms()))?)
}

/// `POST /service/{id}/secret`, signed with the current secret: the next
/// secret; the current one stays valid for `overlap_seconds` (default a
/// day, at most a week).
fn rotate(state: &AppState, id: &str, h: &http::HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let Ok(s) = service(state, id) else { return Err(unauthorized(SignatureError::Mismatch)) };
    // Only the current secret may rotate.
    let current = Service { previous_until: None, ..s.clone() };
    if !signed_by(state, &current, h, body)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_delivery",
            "this webhook-id was used already",
        ));
    }
    let v: serde_json::Value =
        if body.is_empty() { serde_json::json!({}) } else { parse_json(Some("application/json"), body)? };
    let overlap = match v.get("overlap_seconds") {
        None | Some(serde_json::Value::Null) => 24 * 3600,
        Some(n) => n.as_i64().filter(|n| (0..=MAX_OVERLAP_SECS).contains(n)).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_overlap",
                format!("overlap_seconds is 0 to {MAX_OVERLAP_SECS}"),
            )
        })?,
    };
    let until = now_ms() + overlap * 1000;
    if !state.db_call(|db| db.rotate_service_secret(&s.id, s.secret_generation, until))? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "concurrent_rotation",
            "the secret was rotated meanwhile",
        ));
    }
    tracing::info!(service = %s.id, "service secret rotated");
    Ok(api::json(
        StatusCode::CREATED,
        &serde_json::json!({
            "secret": prov::service_secret(&state.secret, &s.id, s.secret_generation + 1),
            "previous_valid_until": super::iso8601(until),
        }),
    ))
}

/// `POST /service/{id}/link-requests`: a nonce for the user to hand to the
/// provider, and what the provider's link token must say.
fn link_request(state: &AppState, c: &Credentials, id: &str) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let s = service(state, id)?;
    let nonce = crate::auth::random_hex(16);
    let expires = now_ms() + LINK_REQUEST_TTL_MS;
    state.db_call(|db| {
        db.create_link_request(&crate::auth::secret_hash(&nonce), &s.id, &partner.id, expires)
    })?;
    Ok(api::json(
        StatusCode::CREATED,
        &serde_json::json!({
            "nonce": nonce,
            "expires_at": super::iso8601(expires),
            "audience": state.public_url.trim_end_matches('/'),
            "issuer": s.id,
        }),
    ))
}

/// `POST /service/{id}/links {"token"}`: verifies the provider's link
/// token and stores the link.
fn link(
    state: &AppState,
    c: &Credentials,
    id: &str,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let s = service(state, id)?;
    let v = api::parse_body(ct, body)?;
    let token = text_field(&v, "token")?.unwrap_or("");
    let refused = |e: LinkError| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_link_token", e.to_string());
    let claims = prov::verify_link(
        &prov::accepted_secrets(state, &s),
        token,
        &s.id,
        state.public_url.trim_end_matches('/'),
        now_ms() / 1000,
    )
    .map_err(refused)?;
    let new = strata_pipeline::db::ServiceLink {
        id: crate::auth::uuid_v4(),
        service_id: s.id.clone(),
        partner_id: partner.id.clone(),
        account: claims.sub.clone(),
        created_at: now_ms(),
    };
    let nonce_hash = crate::auth::secret_hash(&claims.nonce);
    let outcome =
        state.db_call(|db| db.link_account(&new, &nonce_hash, &claims.jti, claims.exp * 1000, now_ms()))?;
    match outcome {
        LinkOutcome::Linked(l) => Ok(api::json(
            StatusCode::CREATED,
            &serde_json::json!({"id": l.id, "service": service_uri(state, &s.id), "account": l.account}),
        )),
        LinkOutcome::NonceUsed => {
            Err(ApiError::new(StatusCode::CONFLICT, "nonce_used", "this link request was used already"))
        }
        LinkOutcome::JtiUsed => {
            Err(ApiError::new(StatusCode::CONFLICT, "token_used", "this link token was used already"))
        }
        LinkOutcome::UnknownNonce => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_link_token",
            "the token's nonce is not a live link request of yours for this service",
        )),
    }
}

fn show_link(state: &AppState, c: &Credentials, id: &str) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let l = state.db_read(|db| db.link_of(id, &partner.id))?.ok_or_else(|| ApiError::not_found("link"))?;
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({"id": l.id, "service": service_uri(state, id), "account": l.account, "created": super::iso8601(l.created_at)}),
    ))
}

/// `POST /jobs/ {service, model, options}`: 202 and the job's location.
fn request_job(
    state: &AppState,
    c: &Credentials,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let v = api::parse_body(ct, body)?;
    let service = ref_id(text_field(&v, "service")?.unwrap_or("")).to_string();
    let model = model_ref_id(text_field(&v, "model")?.unwrap_or("")).to_string();
    let options = v.get("options").cloned().unwrap_or(serde_json::Value::Null);
    let timeout = state.config.provider_timeout;
    let job =
        state.life_call(|life| life.request_service(&partner.id, &service, &model, &options, timeout))?;
    state.providers_due.notify_one();
    let uri = job_uri(state, &job.id);
    Ok(api::with_location(api::json(StatusCode::ACCEPTED, &job_json(state, &job)), &uri))
}

fn owned_job(state: &AppState, c: &Credentials, id: &str) -> Result<ProviderJob, ApiError> {
    let partner = partner_of(state, c)?;
    match state.db_read(|db| db.provider_job(id))? {
        Some(j) if j.partner_id == partner.id => Ok(j),
        _ => Err(ApiError::not_found("job")),
    }
}

fn show_job(state: &AppState, c: &Credentials, id: &str) -> Result<Response, ApiError> {
    Ok(api::json(StatusCode::OK, &job_json(state, &owned_job(state, c, id)?)))
}

fn list_jobs(state: &AppState, c: &Credentials) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let jobs = state.db_read(|db| db.provider_jobs_of(&partner.id, 100))?;
    let jobs: Vec<serde_json::Value> = jobs.iter().map(|j| job_json(state, j)).collect();
    Ok(api::json(StatusCode::OK, &serde_json::json!({"jobs": jobs})))
}

/// A provider's completion report.
#[derive(Debug, serde::Deserialize)]
struct Completion {
    job_id: String,
    status: String,
    #[serde(default)]
    result: Option<CompletionResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct CompletionResult {
    sha256: String,
    size: u64,
}

/// `POST /jobs/{id}/callback`: the provider reports completion, signed
/// with its secret; a delivery id seen before is answered 200 and not
/// acted on again.
fn completion(state: &AppState, id: &str, h: &http::HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    // An unknown job gets the answer a bad signature gets.
    let Some(job) = state.db_read(|db| db.provider_job(id))? else {
        return Err(unauthorized(SignatureError::Mismatch));
    };
    let s = service(state, &job.service_id).map_err(|_| unauthorized(SignatureError::Mismatch))?;
    if !signed_by(state, &s, h, body)? {
        return Ok(api::json(
            StatusCode::OK,
            &serde_json::json!({"duplicate": true, "job": job_json(state, &job)}),
        ));
    }
    let report: Completion = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed completion report: {e}")))?;
    if report.job_id != job.id {
        return Err(ApiError::bad_request("wrong_job", "job_id is not the job of this callback URL"));
    }
    if !job.status.is_open() {
        return Err(ServiceError::Finished(job.status).into());
    }
    match (report.status.as_str(), report.result) {
        ("succeeded", Some(result)) => {
            let accepted =
                state.life_call(|life| life.accept_provider_result(&job, &result.sha256, result.size));
            match accepted {
                Ok((child, announced)) => {
                    if announced {
                        state.callbacks_due.notify_one();
                    }
                    state.jobs_due.notify_one();
                    tracing::info!(job = %job.id, model = %child, "provider result accepted");
                }
                Err(e @ (ServiceError::Mismatch(_) | ServiceError::Finished(_))) => {
                    let why = e.to_string();
                    let update = ProviderJobUpdate { error: Some(&why), ..ProviderJobUpdate::default() };
                    let open =
                        [ProviderJobStatus::Sent, ProviderJobStatus::Accepted, ProviderJobStatus::Running];
                    if state
                        .life_call(|life| {
                            life.move_provider_job(&job, &open, ProviderJobStatus::Failed, update)
                        })
                        .is_ok_and(|(_, a)| a)
                    {
                        state.callbacks_due.notify_one();
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        ("succeeded", None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "result_required",
                "a succeeded report names its result {sha256, size}",
            ));
        }
        ("failed", _) => {
            let why: String = report
                .error
                .unwrap_or_else(|| "the provider reported a failure".into())
                .chars()
                .take(1000)
                .collect();
            let update = ProviderJobUpdate { error: Some(&why), ..ProviderJobUpdate::default() };
            let open = [ProviderJobStatus::Sent, ProviderJobStatus::Accepted, ProviderJobStatus::Running];
            if state
                .life_call(|life| life.move_provider_job(&job, &open, ProviderJobStatus::Failed, update))?
                .1
            {
                state.callbacks_due.notify_one();
            }
        }
        (other, _) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_status",
                format!("status {other:?} is not succeeded or failed"),
            ));
        }
    }
    let job = state.db_read(|db| db.provider_job(id))?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(api::json(StatusCode::OK, &job_json(state, &job)))
}

/// The open job a provider URL names, checked against the URL's other
/// parameters.
fn url_job(
    state: &AppState,
    params: &std::collections::HashMap<String, String>,
) -> Result<ProviderJob, ApiError> {
    let gone = || ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", "the URL's job is not open");
    let id = params.get("job").ok_or_else(gone)?;
    let job = state.db_read(|db| db.provider_job(id))?.ok_or_else(gone)?;
    if !job.status.is_open() || params.get("service") != Some(&job.service_id) {
        return Err(gone());
    }
    Ok(job)
}

/// `GET /provider/models/{id}/content?...`: the job's model, streamed
/// (Range allowed), for a valid input URL only.
async fn input(
    state: &AppState,
    model: &str,
    method: &http::Method,
    query: &str,
    range: Option<&str>,
) -> Result<Response, ApiError> {
    let path = format!("/provider/models/{model}/content");
    let params =
        prov::check_url(state, method.as_str(), &path, query, &prov::INPUT_PARAMS).map_err(url_refused)?;
    let job = url_job(state, &params)?;
    if job.model_id != model {
        return Err(url_refused(UrlError::Signature));
    }
    let content = state
        .db_read(|db| -> Result<_, strata_pipeline::PipelineError> {
            let Some(m) = db.partner_model(model)? else { return Ok(None) };
            let Some(id) = m.content_id else { return Ok(None) };
            Ok(db.model(&id)?.and_then(|r| r.original_blob))
        })?
        .ok_or_else(|| ApiError::not_found("content"))?;
    super::blob_stream(state, &content, "application/octet-stream", Some("model.stl"), range).await
}

/// `PUT /provider/jobs/{id}/result?...`: the provider's result, at most
/// `max` bytes, with its `X-Content-SHA256`, kept until the completion
/// report makes it a model.
async fn output<S, B>(
    state: Arc<AppState>,
    job_id: &str,
    method: &http::Method,
    query: &str,
    h: &http::HeaderMap,
    mut body: S,
) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let path = format!("/provider/jobs/{job_id}/result");
    let params =
        prov::check_url(&state, method.as_str(), &path, query, &prov::OUTPUT_PARAMS).map_err(url_refused)?;
    let job = url_job(&state, &params)?;
    if job.id != job_id {
        return Err(url_refused(UrlError::Signature));
    }
    let max: u64 = params.get("max").and_then(|m| m.parse().ok()).unwrap_or(0);
    let declared =
        h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(api::too_large(max));
    }
    let Some(expected) =
        h.get("x-content-sha256").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_ascii_lowercase())
    else {
        return Err(ApiError::bad_request(
            "digest_required",
            "the output URL needs an X-Content-SHA256 header",
        ));
    };
    let target = state.life.provider_result_path(&job.id)?;
    let partial = target.with_extension("part");
    let spooled = super::partners::spool_body(&partial, &mut body, max, state.config.upload_pace()).await;
    let (size, sha256) = match spooled {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    if sha256 != expected || size == 0 {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            format!("the body ({size} bytes) has SHA-256 {sha256}, X-Content-SHA256 said {expected}"),
        ));
    }
    tokio::fs::rename(&partial, &target).await.map_err(ApiError::internal)?;
    if !state.db_call(|db| db.record_provider_result(&job.id, &sha256, size as i64, now_ms()))? {
        let _ = tokio::fs::remove_file(&target).await;
        return Err(url_refused(UrlError::Signature));
    }
    let mut resp = api::empty(StatusCode::NO_CONTENT);
    if let Ok(v) = http::HeaderValue::from_str(&sha256) {
        resp.headers_mut().insert("x-content-sha256", v);
    }
    Ok(resp)
}
