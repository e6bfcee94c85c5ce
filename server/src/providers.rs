//! External service providers (seed 002), the HTTP side: shared secrets,
//! Standard Webhooks signatures both ways, link tokens, the provider's
//! temporary credentials (signed URLs), and the sender that delivers
//! provider requests from the durable job queue.
//!
//! # Shared secrets
//! A service's secret is `whsec_` and the base64 of 32 bytes derived from
//! the server's key (`DATA/secret.key`) with HMAC-SHA256 over the
//! service id and the secret's generation. Nothing secret is stored in
//! the database, and it is shown once, at registration or rotation.
//! Rotation (`POST /service/{id}/secret`, signed with the current secret)
//! moves to the next generation; the previous one is accepted until the
//! overlap window closes. Every HMAC with a secret uses the bytes that its
//! base64 decodes to, as the Standard Webhooks libraries do.
//!
//! # Signatures
//! Requests to a provider and the provider's completion reports carry
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,` and
//! the base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"`). Inbound, the
//! timestamp must be within [`TOLERANCE_SECS`] of now, the signature header
//! at most [`MAX_SIGNATURE_HEADER`] bytes, and each candidate signature is
//! compared in constant time (`Mac::verify_slice`) with the exact body
//! bytes received; a delivery id is recorded only after its signature
//! verified, and a second delivery with the same id is a no-op.
//!
//! # Temporary credentials
//! The provider gets two URLs, signed with a key derived from the server's
//! key (key id `kid`): a GET-only input URL for the job's model (Range
//! allowed) and a PUT-only output URL capped at `max` bytes that requires
//! `X-Content-SHA256`. The signature covers the method, the path, and
//! every query parameter (job, service, model, cap, expiry, key id), so
//! none can be changed; both expire, and both work only while the job is
//! open, for that job's model.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use strata_pipeline::db::{JobKind, ProviderJob, ProviderJobStatus, ProviderJobUpdate, Service, now_ms};

use crate::state::AppState;

/// How far a signed timestamp may be from now, in seconds (Standard
/// Webhooks' default).
pub const TOLERANCE_SECS: i64 = 300;
/// The longest `webhook-signature` header looked at.
pub const MAX_SIGNATURE_HEADER: usize = 2048;
/// The longest `webhook-id`.
const MAX_DELIVERY_ID: usize = 256;
/// The longest time a link token may live (`exp - iat`).
pub const LINK_TOKEN_MAX_SECS: i64 = 600;
/// The signing key id of provider URLs.
const URL_KID: &str = "1";
/// How long a provider request's job is leased while it is sent.
const LEASE_MS: i64 = 60_000;
/// Requests sent at once.
const CONCURRENT: usize = 8;
/// The largest problem document relayed from a provider.
const MAX_PROBLEM: usize = 16 * 1024;

type HmacSha256 = Hmac<Sha256>;

fn engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The key bytes of a `whsec_` secret (a secret without the prefix is
/// used as it is).
pub fn key_bytes(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_").map(|k| engine().decode(k)) {
        Some(Ok(key)) => key,
        _ => secret.as_bytes().to_vec(),
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// Service `id`'s secret of `generation`, derived from the server key.
pub fn service_secret(server_key: &[u8], id: &str, generation: i64) -> String {
    let mut m = mac(server_key);
    m.update(format!("strata service secret\n{id}\n{generation}").as_bytes());
    format!("whsec_{}", engine().encode(m.finalize().into_bytes()))
}

/// The secrets a service's signatures are accepted under now: the
/// current one, and the previous one inside its overlap window.
pub fn accepted_secrets(state: &AppState, s: &Service) -> Vec<String> {
    let mut secrets = vec![service_secret(&state.secret, &s.id, s.secret_generation)];
    if s.secret_generation > 1 && s.previous_until.is_some_and(|t| t > now_ms()) {
        secrets.push(service_secret(&state.secret, &s.id, s.secret_generation - 1));
    }
    secrets
}

/// The Standard Webhooks signature header value of one message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(&key_bytes(secret));
    m.update(format!("{id}.{timestamp}.").as_bytes());
    m.update(body);
    format!("v1,{}", engine().encode(m.finalize().into_bytes()))
}

/// Why a signed request was refused (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A `webhook-*` header is missing.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// A header is malformed or too long.
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    /// The timestamp is too far from now.
    #[error("the webhook-timestamp is more than {TOLERANCE_SECS} s from the server's clock")]
    Stale,
    /// No signature matches.
    #[error("no signature in webhook-signature matches the body")]
    Mismatch,
}

/// Checks a signed request's headers and exact body against `secrets`;
/// its delivery id.
pub fn verify(
    secrets: &[String],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<String, SignatureError> {
    let id = id.ok_or(SignatureError::Missing("webhook-id"))?;
    if id.is_empty() || id.len() > MAX_DELIVERY_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignatureError::Malformed("webhook-id"));
    }
    let timestamp = timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let ts: i64 = timestamp.trim().parse().map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    if (now_secs - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let signatures = signatures.ok_or(SignatureError::Missing("webhook-signature"))?;
    if signatures.len() > MAX_SIGNATURE_HEADER {
        return Err(SignatureError::Malformed("webhook-signature"));
    }
    let keys: Vec<Vec<u8>> = secrets.iter().map(|s| key_bytes(s)).collect();
    for candidate in signatures.split(' ').filter(|s| !s.is_empty()) {
        let Some(("v1", sig)) = candidate.split_once(',') else { continue };
        let Ok(sig) = engine().decode(sig) else { continue };
        if sig.len() != 32 {
            continue;
        }
        for key in &keys {
            let mut m = mac(key);
            m.update(format!("{id}.{ts}.").as_bytes());
            m.update(body);
            if m.verify_slice(&sig).is_ok() {
                return Ok(id.to_string());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// The claims of a link token that matter after it verified.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LinkClaims {
    /// The provider's account id.
    pub sub: String,
    /// The link request's nonce.
    pub nonce: String,
    /// The token's id (single use).
    pub jti: String,
    /// Issued at (unix s).
    pub iat: i64,
    /// Expiry (unix s).
    pub exp: i64,
}

/// Why a link token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a compact JWT, or not JSON.
    #[error("the token is not a JWT")]
    Malformed,
    /// Not `alg: HS256`, or it names a key elsewhere.
    #[error("a link token is signed with HS256 and the service's shared secret, naming no other key")]
    Algorithm,
    /// Not `typ: link+jwt`.
    #[error("a link token has typ link+jwt")]
    Type,
    /// The signature does not verify under the service's secret.
    #[error("the token is not signed with the service's shared secret")]
    Signature,
    /// Expired, not yet valid, or living longer than allowed.
    #[error("{0}")]
    Time(String),
    /// `iss`, `aud` or another claim is wrong or missing.
    #[error("{0}")]
    Claims(String),
}

/// Checks a link token for service `service_id` at `audience` under
/// `secrets`.
pub fn verify_link(
    secrets: &[String],
    token: &str,
    service_id: &str,
    audience: &str,
    now_secs: i64,
) -> Result<LinkClaims, LinkError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    if token.len() > 4096 {
        return Err(LinkError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(LinkError::Malformed);
    };
    let header: serde_json::Map<String, serde_json::Value> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(LinkError::Malformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256")
        || ["jku", "x5u", "jwk", "x5c", "kid", "crit"].iter().any(|k| header.contains_key(*k))
    {
        return Err(LinkError::Algorithm);
    }
    if header.get("typ").and_then(|t| t.as_str()).map(str::to_ascii_lowercase).as_deref() != Some("link+jwt")
    {
        return Err(LinkError::Type);
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 30;
    v.validate_nbf = true;
    v.set_issuer(&[service_id]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let mut last = LinkError::Signature;
    for secret in secrets {
        let Ok(key) = DecodingKey::from_secret(&key_bytes(secret)) else { continue };
        match jsonwebtoken::decode::<LinkClaims>(token, &key, &v) {
            Ok(data) => {
                let c = data.claims;
                if c.exp - c.iat > LINK_TOKEN_MAX_SECS {
                    return Err(LinkError::Time(format!(
                        "a link token lives at most {LINK_TOKEN_MAX_SECS} s (exp - iat)"
                    )));
                }
                if c.iat > now_secs + 30 {
                    return Err(LinkError::Time("the token is issued in the future".into()));
                }
                let ok = |s: &str| !s.is_empty() && s.len() <= 256;
                if !ok(&c.sub) || !ok(&c.nonce) || !ok(&c.jti) {
                    return Err(LinkError::Claims("sub, nonce and jti are 1 to 256 characters".into()));
                }
                return Ok(c);
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::InvalidSignature => LinkError::Signature,
                    K::ExpiredSignature => LinkError::Time("the token has expired".into()),
                    K::ImmatureSignature => LinkError::Time("the token is not valid yet".into()),
                    K::InvalidIssuer => LinkError::Claims(format!("iss must be the service id {service_id}")),
                    K::InvalidAudience => LinkError::Claims(format!("aud must be {audience}")),
                    K::InvalidAlgorithm => LinkError::Algorithm,
                    K::MissingRequiredClaim(c) => LinkError::Claims(format!("the {c} claim is required")),
                    K::Json(_) => LinkError::Claims(
                        "claims must be iss, aud, sub, nonce and jti strings and iat, exp numbers".into(),
                    ),
                    _ => LinkError::Malformed,
                };
                if last != LinkError::Signature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn url_key(state: &AppState, kid: &str) -> Option<Vec<u8>> {
    // Only known key ids; an unknown one is never looked up anywhere.
    (kid == URL_KID).then(|| {
        let mut m = mac(&state.secret);
        m.update(format!("strata provider url key\n{kid}").as_bytes());
        m.finalize().into_bytes().to_vec()
    })
}

/// The query parameters a provider URL signs, in order.
pub(crate) const INPUT_PARAMS: [&str; 4] = ["job", "service", "exp", "kid"];
/// The output URL's.
pub(crate) const OUTPUT_PARAMS: [&str; 5] = ["job", "service", "max", "exp", "kid"];

fn url_message(method: &str, path: &str, params: &[(&str, String)]) -> String {
    let mut m = format!("{method}\n{path}");
    for (k, v) in params {
        m.push('\n');
        m.push_str(k);
        m.push('=');
        m.push_str(v);
    }
    m
}

fn signed_url(state: &AppState, method: &str, path: &str, params: &[(&str, String)]) -> String {
    let key = url_key(state, URL_KID).unwrap_or_default();
    let mut m = mac(&key);
    m.update(url_message(method, path, params).as_bytes());
    let sig = crate::auth::hex(&m.finalize().into_bytes());
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}{path}?{}&sig={sig}", state.public_url, query.join("&"))
}

/// The provider's input URL for `job` and when it expires (unix s).
pub fn input_url(state: &AppState, job: &ProviderJob) -> (String, i64) {
    let exp = url_expiry(state, job);
    let params = [
        ("job", job.id.clone()),
        ("service", job.service_id.clone()),
        ("exp", exp.to_string()),
        ("kid", URL_KID.to_string()),
    ];
    (signed_url(state, "GET", &format!("/provider/models/{}/content", job.model_id), &params), exp)
}

/// With blobs in a bucket: the provider's input URL as a presigned GET of
/// the model's original in the bucket, so the provider downloads it from
/// the object store, not through this server; `None` with local blobs (or
/// when signing fails, logged: the server's own signed URL then serves).
/// Unlike the server's URL, which is refused once the job ends, a
/// presigned URL stays valid until it expires (at most
/// `--provider-url-ttl-secs`, and never past the job's deadline).
async fn presigned_input(
    state: &AppState,
    job: &ProviderJob,
    content: &strata_pipeline::db::ModelRecord,
) -> Option<(String, i64)> {
    let bucket = state.blobs().object()?;
    let blob = content.original_blob.as_deref().and_then(strata_pipeline::blob::BlobId::parse)?;
    let exp = url_expiry(state, job);
    let ttl = Duration::from_secs(u64::try_from(exp - now_ms() / 1000).ok().filter(|&s| s > 0)?);
    match bucket.presign(strata_pipeline::objstore::Method::GET, &blob, ttl).await {
        Ok(url) => Some((url, exp)),
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "providers: cannot presign the input; sending the server's URL");
            None
        }
    }
}

/// The provider's output URL for `job`, its size cap and expiry.
pub fn output_url(state: &AppState, job: &ProviderJob) -> (String, u64, i64) {
    let exp = url_expiry(state, job);
    let max = state.config.upload_limit;
    let params = [
        ("job", job.id.clone()),
        ("service", job.service_id.clone()),
        ("max", max.to_string()),
        ("exp", exp.to_string()),
        ("kid", URL_KID.to_string()),
    ];
    (signed_url(state, "PUT", &format!("/provider/jobs/{}/result", job.id), &params), max, exp)
}

fn url_expiry(state: &AppState, job: &ProviderJob) -> i64 {
    let ttl_end = now_ms() + state.config.provider_url_ttl.as_millis() as i64;
    ttl_end.min(job.deadline_at.max(now_ms())) / 1000
}

/// Why a provider URL was refused (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A parameter is missing, repeated, unknown or malformed.
    #[error("the URL is malformed: {0}")]
    Malformed(String),
    /// Unknown key id.
    #[error("the URL names an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("the URL's signature does not match")]
    Signature,
    /// Expired.
    #[error("the URL has expired")]
    Expired,
}

/// Checks a provider URL: `method path?raw_query` must carry exactly
/// `names` (each once) and `sig`, signed and unexpired. The parameters by
/// name.
pub fn check_url(
    state: &AppState,
    method: &str,
    path: &str,
    raw_query: &str,
    names: &[&str],
) -> Result<std::collections::HashMap<String, String>, UrlError> {
    let mut seen = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        if !(names.contains(&k.as_ref()) || k == "sig") {
            return Err(UrlError::Malformed(format!("unexpected parameter {k}")));
        }
        if seen.insert(k.to_string(), v.to_string()).is_some() {
            return Err(UrlError::Malformed(format!("{k} is given twice")));
        }
    }
    let get = |k: &str| seen.get(k).cloned().ok_or_else(|| UrlError::Malformed(format!("{k} is missing")));
    let sig = get("sig")?;
    let key = url_key(state, &get("kid")?).ok_or(UrlError::UnknownKey)?;
    let params: Vec<(&str, String)> =
        names.iter().map(|k| get(k).map(|v| (*k, v))).collect::<Result<_, _>>()?;
    let sig = (sig.len() == 64).then(|| ::hex::decode(&sig).ok()).flatten().ok_or(UrlError::Signature)?;
    let mut m = mac(&key);
    m.update(url_message(method, path, &params).as_bytes());
    m.verify_slice(&sig).map_err(|_| UrlError::Signature)?;
    let exp: i64 = get("exp")?.parse().map_err(|_| UrlError::Malformed("exp".into()))?;
    if exp.saturating_mul(1000) <= now_ms() {
        return Err(UrlError::Expired);
    }
    Ok(seen)
}

/// Checks where a service says requests go, as callbacks are checked
/// (`callbacks::check_destination`).
pub async fn check_destination(state: &AppState, url: &str) -> Result<(), String> {
    crate::callbacks::check_destination(
        url,
        state.config.allow_private_callbacks,
        &state.config.callback_ports,
    )
    .await
}

/// The sender: runs for the server's life, claiming due provider requests
/// from the job queue and sending them, and timing out overdue jobs.
pub(crate) async fn run(state: Arc<AppState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    loop {
        let st = state.clone();
        match state.with_life(|life| life.time_out_provider_jobs()).await {
            Ok(Ok((n, announced))) => {
                if n > 0 {
                    tracing::info!(jobs = n, "provider jobs timed out");
                }
                if announced > 0 {
                    st.callbacks_due.notify_one();
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "providers: cannot time out overdue jobs"),
            Err(e) => tracing::error!(error = %e, "providers: cannot time out overdue jobs"),
        }
        while slots.available_permits() > 0 {
            let worker = state.worker_id.clone();
            let claimed =
                state.db_call(|db| db.claim_job(&worker, &[JobKind::ProviderRequest], now_ms(), LEASE_MS));
            let job = match claimed {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "providers: cannot read the queue");
                    break;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let st = state.clone();
            tokio::spawn(async move {
                send(&st, &job).await;
                drop(permit);
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = state.providers_due.notified() => {}
        }
    }
}

/// One provider request: the job's body, signed, to the service; the job
/// then `accepted` or `refused`, or the queue job retried with back-off.
async fn send(state: &AppState, queued: &strata_pipeline::db::Job) {
    let worker = state.worker_id.clone();
    let done = |state: &AppState| {
        let _ = state.db_call(|db| db.complete_job(&queued.id, &worker, now_ms()));
    };
    type Loaded = (
        ProviderJob,
        Option<Service>,
        Option<strata_pipeline::db::ServiceLink>,
        Option<strata_pipeline::db::PartnerModel>,
        Option<strata_pipeline::db::ModelRecord>,
    );
    let loaded = state.db_read(|db| -> Result<Option<Loaded>, strata_pipeline::PipelineError> {
        let Some(job) = db.provider_job(&queued.subject)? else { return Ok(None) };
        let service = db.service(&job.service_id)?;
        let link = db.link_of(&job.service_id, &job.partner_id)?;
        let model = db.partner_model(&job.model_id)?;
        let content = match model.as_ref().and_then(|m| m.content_id.clone()) {
            Some(id) => db.model(&id)?,
            None => None,
        };
        Ok(Some((job, service, link, model, content)))
    });
    let (job, service, link, model, content) = match loaded {
        Ok(Some((job, Some(s), link, Some(m), Some(c)))) => (job, s, link, m, c),
        Ok(_) => return done(state),
        Err(e) => {
            tracing::error!(error = %e, "providers: cannot read the job");
            return;
        }
    };
    if !job.status.is_open() || job.status == ProviderJobStatus::Running {
        return done(state);
    }
    let open = [ProviderJobStatus::Queued, ProviderJobStatus::Sent];
    let _ = state.life_call(|life| {
        life.move_provider_job(&job, &open, ProviderJobStatus::Sent, ProviderJobUpdate::default())
    });
    let (input, input_exp) = match presigned_input(state, &job, &content).await {
        Some(presigned) => presigned,
        None => input_url(state, &job),
    };
    let (output, max_bytes, output_exp) = output_url(state, &job);
    let iso = crate::routes::iso8601;
    let options: serde_json::Value = serde_json::from_str(&job.options).unwrap_or_default();
    let body = serde_json::json!({
        "job_id": job.id,
        "type": service.kind,
        "account": link.map(|l| l.account),
        "model": {
            "id": model.id,
            "sha256": content.id,
            "size": content.size_bytes,
            "format": content.format,
        },
        "input": {"url": input, "expires_at": iso(input_exp * 1000)},
        "output": {"upload_url": output, "max_bytes": max_bytes, "expires_at": iso(output_exp * 1000)},
        "callback_url": format!("{}/jobs/{}/callback", state.public_url, job.id),
        "options": options,
    })
    .to_string();
    let secret = service_secret(&state.secret, &service.id, service.secret_generation);
    let delivery = format!("req_{}", job.id);
    let timestamp = now_ms() / 1000;
    let method = if service.service_method == "PUT" { reqwest::Method::PUT } else { reqwest::Method::POST };
    let sent = state
        .callback_http
        .request(method, &service.service_url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign(&secret, &delivery, timestamp, body.as_bytes()))
        .body(body)
        .send()
        .await;
    let outcome = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let is_problem = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.contains("json"));
            let text = if is_problem { read_capped(resp, MAX_PROBLEM).await } else { None };
            Ok((status, text))
        }
        Err(e) => Err(if e.is_timeout() { "no answer in time".to_string() } else { describe(&e) }),
    };
    let sent_or_queued = [ProviderJobStatus::Queued, ProviderJobStatus::Sent];
    match outcome {
        Ok((status, _)) if (200..300).contains(&status) => {
            let _ = state.life_call(|life| {
                life.move_provider_job(
                    &job,
                    &sent_or_queued,
                    ProviderJobStatus::Accepted,
                    ProviderJobUpdate::default(),
                )
            });
            tracing::info!(job = %job.id, service = %service.id, status, "provider accepted the job");
            done(state);
        }
        Ok((status, text)) if (400..500).contains(&status) && !matches!(status, 408 | 425 | 429) => {
            let problem = relayed_problem(status, text.as_deref());
            let update = ProviderJobUpdate { problem: Some(&problem), ..ProviderJobUpdate::default() };
            let moved = state.life_call(|life| {
                life.move_provider_job(&job, &sent_or_queued, ProviderJobStatus::Refused, update)
            });
            if moved.is_ok_and(|(_, announced)| announced) {
                state.callbacks_due.notify_one();
            }
            tracing::info!(job = %job.id, service = %service.id, status, "provider refused the job");
            done(state);
        }
        other => {
            let why = match other {
                Ok((status, _)) => format!("the provider answered HTTP {status}"),
                Err(e) => e,
            };
            let wait = 2_000i64.saturating_mul(1 << queued.attempts.clamp(0, 12));
            let retry_at = now_ms() + wait;
            let failed = state.db_call(|db| db.fail_job(&queued.id, &worker, &why, Some(retry_at), now_ms()));
            tracing::warn!(job = %job.id, service = %service.id, error = %why, "provider request failed");
            if let Ok(Some(strata_pipeline::db::JobStatus::Failed)) = failed {
                let error = format!("the request could not be delivered: {why}");
                let update = ProviderJobUpdate { error: Some(&error), ..ProviderJobUpdate::default() };
                let moved = state.life_call(|life| {
                    life.move_provider_job(&job, &sent_or_queued, ProviderJobStatus::Failed, update)
                });
                if moved.is_ok_and(|(_, announced)| announced) {
                    state.callbacks_due.notify_one();
                }
            }
        }
    }
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Option<String> {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(Ok(piece)) = stream.next().await {
        if buf.len() + piece.len() > cap {
            return None;
        }
        buf.extend_from_slice(&piece);
    }
    String::from_utf8(buf).ok()
}

/// The problem relayed to the user: the provider's RFC 9457 object (its
/// string, number and link fields, nothing else), or one made from the
/// status when it sent none.
fn relayed_problem(status: u16, text: Option<&str>) -> String {
    let mut problem = serde_json::Map::new();
    if let Some(serde_json::Value::Object(given)) = text.and_then(|t| serde_json::from_str(t).ok()) {
        for (k, v) in given {
            if k.len() <= 64 && (v.is_string() || v.is_number()) {
                problem.insert(k, v);
            }
        }
    }
    problem.insert("status".into(), status.into());
    problem.entry("type").or_insert_with(|| "about:blank".into());
    problem.entry("title").or_insert_with(|| {
        http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("refused").into()
    });
    serde_json::Value::Object(problem).to_string()
}

fn describe(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.starts_with("refused:") {
            return text;
        }
        source = s.source();
    }
    if e.is_connect() { "cannot connect".to_string() } else { "the request failed".to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_vector_and_refuse_every_oddity() {
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let (id, ts) = ("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553);
        let good = sign(secret, id, ts, body);
        assert_eq!(good, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        let secrets = vec![secret.to_string()];
        let check = |sig: &str, ts_header: &str, body: &[u8], now: i64| {
            verify(&secrets, Some(id), Some(ts_header), Some(sig), body, now)
        };
        assert_eq!(check(&good, "1649367553", body, ts).as_deref(), Ok(id));
        assert_eq!(
            check(&format!("v1,bogus {good}"), "1649367553", body, ts).as_deref(),
            Ok(id),
            "any of several"
        );
        assert_eq!(check(&good, "1649367553", body, ts + 301), Err(SignatureError::Stale));
        assert_eq!(check(&good, "1649367553", body, ts - 301), Err(SignatureError::Stale));
        assert!(check(&good, "1649367553", body, ts + 300).is_ok());
        let reserialised = br#"{"email": "test@example.com", "username": "test_user"}"#;
        assert_eq!(check(&good, "1649367553", reserialised, ts), Err(SignatureError::Mismatch));
        let mut plus_one = engine().decode(&good[3..]).expect("b64");
        plus_one.push(0);
        for bad in [
            "v1,".to_string(),
            String::new(),
            "v".to_string(),
            good[..good.len() - 4].to_string(),
            format!("v1,{}", engine().encode(&plus_one)),
            "v1,!!!not-base64!!!".to_string(),
            good.replace("v1,", "v2,"),
        ] {
            assert_eq!(check(&bad, "1649367553", body, ts), Err(SignatureError::Mismatch), "{bad:?}");
        }
        let many = vec![good.as_str(); 1000].join(" ");
        assert_eq!(check(&many, "1649367553", body, ts), Err(SignatureError::Malformed("webhook-signature")));
        assert_eq!(check(&good, "soon", body, ts), Err(SignatureError::Malformed("webhook-timestamp")));
        assert_eq!(
            verify(&secrets, None, Some("1"), Some(&good), body, ts),
            Err(SignatureError::Missing("webhook-id"))
        );
    }

    #[test]
    fn derived_secrets_differ_per_service_and_generation() {
        let key = b"server key";
        let a1 = service_secret(key, "a", 1);
        assert!(a1.starts_with("whsec_") && key_bytes(&a1).len() == 32);
        assert_eq!(a1, service_secret(key, "a", 1));
        assert_ne!(a1, service_secret(key, "a", 2));
        assert_ne!(a1, service_secret(key, "b", 1));
        assert_ne!(a1, service_secret(b"other key", "a", 1));
    }

    #[test]
    fn problems_keep_only_plain_fields() {
        let p: serde_json::Value = serde_json::from_str(&relayed_problem(
            402,
            Some(r#"{"type":"https://fix.example/pay","title":"Payment required","detail":"top up","registration":"https://fix.example/r","nested":{"x":1}}"#),
        ))
        .expect("json");
        assert_eq!(p["status"], 402);
        assert_eq!(p["registration"], "https://fix.example/r");
        assert!(p.get("nested").is_none());
        let p: serde_json::Value = serde_json::from_str(&relayed_problem(403, Some("<html>"))).expect("json");
        assert_eq!((p["type"].as_str(), p["title"].as_str()), (Some("about:blank"), Some("Forbidden")));
    }
}
