//! The widget (a page for a 400x400 iframe, reached by a token link), the
//! token holder's read-only view it polls, and the OpenAPI document.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use warp::Filter;
use warp::reply::Response;

use super::{live_token, with_state};
use crate::api::{self, ApiError, finish};
use crate::state::AppState;

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The widget routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let page = warp::path!("widget")
        .and(warp::get())
        .and(s())
        .and(warp::query::<TokenQuery>())
        .map(|st: Arc<AppState>, q: TokenQuery| widget(&st, q.token.as_deref().unwrap_or("")));
    let view = warp::path!("prints" / String)
        .and(warp::get())
        .and(s())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|token: String, st: Arc<AppState>, inm: Option<String>| {
            finish(print_view(&st, &token, inm.as_deref()))
        });
    let snapshot = warp::path!("prints" / String / "snapshot")
        .and(warp::get())
        .and(s())
        .then(|token: String, st: Arc<AppState>| async move { finish(snapshot(&st, &token).await) });
    page.or(view).unify().or(snapshot).unify().boxed()
}

/// What the token holder may see: the model's name, the value and the
/// print's progress (no partner ids, e-mails or job references).
fn print_view(state: &AppState, token: &str, if_none_match: Option<&str>) -> Result<Response, ApiError> {
    let t = live_token(state, token)?;
    let model = match &t.model_id {
        Some(id) => state.db_read(|db| db.partner_model(id))?,
        None => None,
    };
    if let Some(resp) = super::printers::status_not_modified(&t, if_none_match) {
        return Ok(resp);
    }
    let value = t.print_value.as_deref().and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok());
    let mut resp = api::json(
        StatusCode::OK,
        &serde_json::json!({
            "name": model.as_ref().map(|m| m.name.clone()),
            "model_status": model.as_ref().map(|m| m.status),
            "print_value": value,
            "print_value_currency": t.print_value_currency,
            "printing_job_status": t.printing_job_status,
            "printing_job_status_name": t.printing_job_status,
            "printing_job_status_label": t.printing_job_status.as_deref().map(super::printers::status_label),
            "printing_percentage": t.printing_percentage,
            "minutes_left": t.minutes_left,
        }),
    );
    super::printers::decorate_status(&mut resp, &t);
    Ok(resp)
}

async fn snapshot(state: &AppState, token: &str) -> Result<Response, ApiError> {
    let t = live_token(state, token)?;
    let model = t.model_id.as_ref().map(|id| state.db_read(|db| db.partner_model(id))).transpose()?.flatten();
    let content =
        model.and_then(|m| m.content_id).map(|c| state.db_read(|db| db.model(&c))).transpose()?.flatten();
    let blob = content.and_then(|c| c.snapshot_blob).ok_or_else(|| ApiError::not_found("snapshot"))?;
    super::blob_response(state, &blob, "image/png", None).await
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn widget(state: &AppState, token: &str) -> Response {
    let (status, body) = match live_token(state, token) {
        Ok(t) => {
            let name = t
                .model_id
                .as_ref()
                .and_then(|id| state.db_read(|db| db.partner_model(id)).ok().flatten())
                .map(|m| m.name)
                .unwrap_or_else(|| "Your model".into());
            let value = match &t.print_value {
                Some(v) => format!("{} {}", html_escape(v), html_escape(&t.print_value_currency)),
                None => String::new(),
            };
            (StatusCode::OK, page(&html_escape(&name), &value, Some(&t.token)))
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            page(
                "Link not valid",
                "This print link is unknown or has expired. Ask the shop for a new one.",
                None,
            ),
        ),
    };
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    // Made to be framed by partner sites; scripts only from here.
    h.insert(
        "content-security-policy",
        http::HeaderValue::from_static("default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self'"),
    );
    resp
}

fn page(name: &str, value: &str, token: Option<&str>) -> String {
    let (img, script) = match token {
        Some(t) => (
            format!(r#"<img id="snap" src="/prints/{t}/snapshot" alt="" width="220" height="220">"#),
            format!(
                r#"<script>
const token = "{t}";
let etag = null;
async function poll() {{
  let wait = 5;
  try {{
    const r = await fetch("/prints/" + token, {{headers: etag ? {{"If-None-Match": etag}} : {{}}}});
    const ra = parseInt(r.headers.get("Retry-After") || "", 10);
    if (!Number.isNaN(ra)) wait = ra; else if (r.ok || r.status === 304) wait = 0;
    if (r.status === 200) {{
      etag = r.headers.get("ETag");
      const s = await r.json();
      const el = document.getElementById("status");
      el.dataset.status = s.printing_job_status || "NONE";
      el.textContent = s.printing_job_status_label
        ? s.printing_job_status_label + (s.printing_percentage != null ? " · " + Math.round(s.printing_percentage) + "%" : "")
        : (s.model_status === "processed" ? "Ready to print" : "Preparing your model…");
      document.getElementById("bar").style.width = (s.printing_percentage || 0) + "%";
    }} else if (r.status === 404) {{
      document.getElementById("status").textContent = "This print link has expired.";
      document.getElementById("status").dataset.status = "EXPIRED";
      return;
    }}
  }} catch (e) {{ wait = 10; }}
  if (wait > 0) setTimeout(poll, wait * 1000);
}}
poll();
</script>"#
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{name}</title>
<style>
html,body{{margin:0;padding:0;width:100%;height:100%;overflow:hidden;font:14px system-ui,sans-serif;color:#222;background:#fff}}
main{{box-sizing:border-box;max-width:400px;max-height:400px;height:100%;padding:12px;display:flex;flex-direction:column;align-items:center;gap:6px}}
h1{{font-size:16px;margin:0;text-align:center;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:100%}}
img{{max-width:220px;max-height:220px;object-fit:contain}}
#track{{width:90%;height:8px;background:#eee;border-radius:4px}}#bar{{height:100%;width:0;background:#2a7;border-radius:4px}}
</style></head>
<body><main>{img}<h1 id="name">{name}</h1><div id="value">{value}</div>
<div id="track"><div id="bar"></div></div><div id="status" data-status="LOADING">Loading…</div></main>{script}</body></html>"#
    )
}

/// The OpenAPI 3.1 description of every route, each 3DIAX path under both
/// names (`/model/...` and `/models/...`, `/token/...` and `/tokens/...`).
pub fn openapi() -> serde_json::Value {
    let op = |summary: &str, auth: &str| serde_json::json!({"summary": summary, "description": auth, "responses": {"default": {"description": "JSON; errors are {\"error\": {\"code\", \"message\"}, \"message\"}"}}});
    let param = |name: &str| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
    let token_param = serde_json::json!([param("token")]);
    let id_param = serde_json::json!([param("id")]);
    let snap_param = serde_json::json!([param("id"), param("snapshot")]);
    let partner = "session cookie or HTTP Basic (API token uuid:secret)";
    let mut paths = serde_json::json!({
        "/healthz": {"get": op("Liveness", "none")},
        "/readyz": {"get": op("Readiness: {status, database, store}; 503 naming what fails", "none")},
        "/metrics": {"get": op("Prometheus metrics (text format)", "none")},
        "/openapi.json": {"get": op("This document", "none")},
        "/sessions/": {
            "post": op("Log in with {username, password} (JSON or form); sets the session cookie; answers the user resource {uri, uuid, username, name, email}", "none"),
            "get": op("The current user", partner),
            "delete": op("Log out", "session cookie"),
        },
        "/sessions/current": {"get": op("The current user", partner), "delete": op("Log out", "session cookie")},
        "/users/": {"post": op("Sign up {email, name, password, username} (JSON or form): 201, Location, the user resource plus api_key and callback_secret (shown once); only with --allow-signup, limited per address", "none")},
        "/users/{id}/": {"parameters": id_param, "get": op("Your user resource", partner), "patch": op("Set {force_require_token}: every embedding session on your models then needs a JWT", partner)},
        "/api_tokens/": {
            "post": op("Create an API token {name}: 201 {uuid, secret, name}; the secret is shown once; use it as HTTP Basic uuid:secret", partner),
            "get": op("Your API tokens (without secrets)", partner),
        },
        "/api_tokens/{id}/": {"parameters": id_param, "delete": op("Revoke an API token", partner)},
        "/model/": {
            "post": op("Create a model {name, callback: {url, method}, allowed_transformations: {resize, rotation}, parents: [model URI]} (JSON or form; other fields ignored and named in X-Ignored-Fields); Location and X-Upload-Location headers, and resources[0] {uri, upload-location}", partner),
            "get": op("List own models: ?name= (a part, or a pattern with *), status=, sort=+status,-name (name, status, created, updated), page=, per_page=; {resources, links {self, next, prev}, meta {count, page, per_page, pages}} (the plural /models keeps {models, page, per_page})", partner),
        },
        "/model/{id}/": {"parameters": id_param, "get": op("A model: name, status, analyses.manifold, parents, children, allowed_transformations, size, surface_area_mm, volume_mm, validation, repair log; content, snapshot and manifest as signed URLs valid an hour", partner)},
        "/model/{id}/snapshot": {"parameters": id_param, "get": op("PNG snapshot (?view=iso|front|top|side&size=16..2048)", "partner credentials or a signed URL"), "post": op("Create a snapshot resource {view or camera: iso|front|top|side, size | width, height}: 201 and Location", partner)},
        "/model/{id}/snapshot/{snapshot}/": {"parameters": snap_param, "get": op("A snapshot resource: {status: processing|processed|error, content (signed PNG URL), view, width, height}", partner)},
        "/model/{id}/snapshot/{snapshot}/content": {"parameters": snap_param, "get": op("The snapshot's PNG", "partner credentials or a signed URL")},
        "/model/{id}/content": {"parameters": id_param, "get": op("The printable STL", "partner credentials or a signed URL")},
        "/model/{id}/manifest": {"parameters": id_param, "get": op("The stream manifest", "partner credentials or a signed URL")},
        "/model/{id}/callbacks": {"parameters": id_param, "get": op("The callback delivery log: each status change sent, its attempts, HTTP codes and errors. Callbacks are signed the Standard Webhooks way: webhook-id, webhook-timestamp, webhook-signature: v1,base64(HMAC-SHA256(key of whsec_ callback_secret, id + \".\" + timestamp + \".\" + body)); 410 Gone stops retries, Retry-After is honoured", partner)},
        "/uploads/{id}": {"parameters": id_param, "put": op("Upload the model bytes (any content type) to the signed URL: 204 with ETag and X-Content-SHA256; send X-Content-SHA256 to have it checked (422 digest_mismatch)", "signed URL"), "post": op("tus 1.0 creation (Tus-Resumable: 1.0.0, Upload-Length): 201 with Location /files/{upload}; OPTIONS lists the extensions (creation, checksum with sha256, expiration, termination)", "signed URL")},
        "/files/{upload}": {"parameters": [param("upload")], "head": op("tus: Upload-Offset, Upload-Length, Upload-Expires (404 unknown, 410 expired)", "the upload's URL"), "patch": op("tus: append application/offset+octet-stream at Upload-Offset (409 mismatch), Upload-Checksum: sha256 <base64> (460 mismatch), 413 past the length; the model is processed when the last byte lands", "the upload's URL"), "delete": op("tus termination: 204, the bytes removed", "the upload's URL")},
        "/token/": {"post": op("Create a print token {api_key, receiver_email, model (URI or id), print_value, print_value_currency, partner_job_id (string or number), print_limit?, expires_in? (seconds)} (JSON or form; api_key may be replaced by partner credentials); X-Token-Location and Location headers", "api_key in body, or partner credentials")},
        "/token/{token}/": {"parameters": token_param, "get": op("A token and its print status (ETag, Retry-After)", "partner credentials or ?api_key"), "delete": op("Revoke the token: printers and the widget get 404 from then on", "partner credentials or ?api_key")},
        "/streams/{token}/manifest": {"parameters": token_param, "get": op("The stream manifest", "token")},
        "/streams/{token}/chunks/{index}": {"parameters": [param("token"), {"name": "index", "in": "path", "required": true, "schema": {"type": "integer"}}], "get": op("A zstd chunk (ETag, Range, If-None-Match)", "token")},
        "/prints/{token}/status": {"parameters": token_param, "post": op("Report {printing_job_status, printing_percentage, minutes_left, message, total_time, printer_model}", "token")},
        "/prints/{token}": {"parameters": token_param, "get": op("What the token holder sees (the widget polls it)", "token")},
        "/prints/{token}/snapshot": {"parameters": token_param, "get": op("The model's snapshot for the widget", "token")},
        "/widget": {"get": op("The 400x400 widget page (?token=)", "token")},
        "/api3/api_create_partner_token": {"get": op("Legacy: create a token (api_key in the query, a form body or an Api-Key header); also POST", "api_key"), "post": op("Legacy: create a token", "api_key")},
        "/api3/api_upload_partner_stl": {"post": op("Legacy: multipart upload (api_key, token, receiver_email, stl_file, print_value, print_value_currency, partner_job_id; fields in the query or the form)", "api_key")},
        "/api3/api_get_partner_print_status": {"get": op("Legacy: print status (api_key, token in the query or a form body); errors are HTTP 200 {status: {code: error, description, extended_description}}; also POST", "api_key"), "post": op("Legacy: print status", "api_key")},
    });
    // JWTs and embedding (kept apart: one `json!` of everything is past
    // the macro's recursion limit).
    let embed = serde_json::json!({
        "/jwt/": {"post": op("Mint a scoped access token {scope: [get.model, file.download, auth.session, get.export.*, backend, ...] | \"a b\", model?, ttl? (s, at most a day)}: 201 {access_token, token_type: Bearer, expires_in}; EdDSA, typ at+jwt", partner)},
        "/.well-known/jwks.json": {"get": op("The public keys JWTs are checked with (Ed25519 JWK set, by kid)", "none")},
        "/api/v2/model/{id}": {"parameters": id_param, "get": op("Geometry Backend v2: the model {version, model {id, stat}, setting.auth}; errors {error: Sd...Error, desc, message}", "JWT granting get.model"), "patch": op("Set {accessdomains, backendaccess, require_token}", "backend: partner credentials or a JWT with the backend scope")},
        "/api/v2/model/{id}/ticket": {"parameters": id_param, "post": op("Create a ticket {type: backend | \"\", pub, until: YYYYMMDDhhmmss, accessdomains?, author?}: 201 {version, ticket (shown once), ticketId, model, file, setting, statistic}", "backend"), "get": op("The model's tickets, without secrets", "backend")},
        "/api/v2/model/{id}/ticket/{snapshot}": {"parameters": snap_param, "delete": op("Revoke a ticket (by ticketId) and end its sessions", "backend")},
        "/api/v2/model/{id}/file/download": {"parameters": id_param, "get": op("The printable STL (Range)", "JWT granting file.download")},
        "/api/v2/ticket/{token}": {"parameters": token_param, "post": op("Open a session: 201 {version, sessionId, model, file, setting, statistic, viewer, viewerSettingsVersion, actions, templates, parameters, exports, outputs}; the browser Origin must be allowed unless pub; require_token needs a JWT granting auth.session", "ticket (and Origin, JWT)")},
        "/api/v2/session/{id}/close": {"parameters": id_param, "post": op("Close the session; later calls are 410 SdSessionGoneError", "session id (and its Origin)")},
        "/api/v2/session/{id}/export": {"parameters": id_param, "put": op("Compute exports {exports: {id} | [ids]}: each with content [{format, href}] once processed, else a delay (ms) to ask /export/cache again", "session id (and its Origin)")},
        "/api/v2/session/{id}/export/cache": {"parameters": id_param, "put": op("Ask again for exports still pending", "session id (and its Origin)")},
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (paths.as_object_mut(), embed) {
        map.extend(extra);
    }
    let signed = "Standard Webhooks signature with the service's shared secret";
    let providers = serde_json::json!({
        "/service/": {
            "post": op("Register a service {name, description, type: model-healing | support-generation | slicing | packing | nesting | estimation, service_url, service_method}: 201, Location, {id, uri, ..., secret} (whsec_..., shown once); service_url must be public http(s) on port 80/443 unless the operator allows private addresses", partner),
            "get": op("The registry {services: [...]} (?type=)", partner),
        },
        "/service/{id}/": {"parameters": id_param, "get": op("A service (never its secret)", partner)},
        "/service/{id}/secret": {"parameters": id_param, "post": op("Rotate the secret {overlap_seconds?}: 201 {secret, previous_valid_until}; the current secret stays valid for the overlap", signed)},
        "/service/{id}/link-requests": {"parameters": id_param, "post": op("A link request: 201 {nonce, expires_at, audience, issuer} for the provider's link token", partner)},
        "/service/{id}/links": {"parameters": id_param, "post": op("Link your account {token: HS256 link+jwt from the provider}: 201 {id, service, account}; a nonce or jti used twice is 409, any other failure 401", partner), "get": op("Your link at this service", partner)},
        "/jobs/": {"post": op("Ask a service to work on a model {service, model, options}: 202, Location", partner), "get": op("Your provider jobs {jobs: [...]}", partner)},
        "/jobs/{id}": {"parameters": id_param, "get": op("A provider job {id, status: queued | sent | accepted | refused | running | done | failed | timed_out, service, model, result_model, problem, error}", partner)},
        "/jobs/{id}/callback": {"parameters": id_param, "post": op("The provider's completion report {job_id, status: succeeded | failed, result: {sha256, size}, error}; a repeated webhook-id is answered 200 and not acted on", signed)},
        "/provider/models/{id}/content": {"parameters": id_param, "get": op("A provider job's input (Range allowed)", "the signed input URL of the job request")},
        "/provider/jobs/{id}/result": {"parameters": id_param, "put": op("A provider job's result (X-Content-SHA256 required, at most max bytes)", "the signed output URL of the job request")},
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (paths.as_object_mut(), providers) {
        let versioned: Vec<(String, serde_json::Value)> =
            extra.iter().map(|(path, item)| (format!("/v1{path}"), item.clone())).collect();
        map.extend(extra);
        map.extend(versioned);
    }
    // Strata's first names for the same routes.
    if let Some(map) = paths.as_object_mut() {
        let aliases: Vec<(String, serde_json::Value)> = map
            .iter()
            .filter_map(|(path, item)| {
                let plural = if let Some(rest) = path.strip_prefix("/model/") {
                    format!("/models/{rest}")
                } else if let Some(rest) = path.strip_prefix("/token/") {
                    format!("/tokens/{rest}")
                } else {
                    return None;
                };
                let plural = plural.trim_end_matches('/').to_string();
                Some((plural, item.clone()))
            })
            .collect();
        map.extend(aliases);
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Strata", "version": env!("CARGO_PKG_VERSION"), "description": "Stream 3D models to printers. Every path also answers with or without its trailing slash."},
        "paths": paths,
    })
}
