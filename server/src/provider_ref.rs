//! The reference provider (`strata provider`): a working model-healing
//! service that speaks seed 002's protocol from the provider's side, the
//! way a third party would, using only what Strata sends it.
//!
//! - `POST /repair`: a Standard-Webhooks-signed job request. Without a
//!   linked `account` it refuses with RFC 9457 problem JSON (403, with
//!   where to get a link token); otherwise it answers 202 and, in the
//!   background, downloads the input URL, repairs the model with
//!   strata-core, uploads the binary STL to the output URL with its
//!   SHA-256, and reports completion to `callback_url`, signed.
//! - `POST /link-token {nonce, issuer, audience?, account}`: the link
//!   token a user hands to Strata (HS256 with the shared secret, `typ:
//!   link+jwt`, five minutes). Any account name is accepted.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use warp::Filter;
use warp::reply::Response;

use crate::ServerError;
use crate::providers::{key_bytes, sign, verify};

struct Provider {
    secret: String,
    base: String,
    server: Option<String>,
    http: reqwest::Client,
    seen: Mutex<HashSet<String>>,
}

fn now_secs() -> i64 {
    strata_pipeline::db::now_ms() / 1000
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: &str, extra: serde_json::Value) -> Response {
    let mut body = serde_json::json!({
        "type": kind,
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(b), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    let mut resp = Response::new(body.to_string().into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/problem+json"));
    resp
}

/// Binds `listen`, prints the service URL (`http://ADDR/repair`) as the
/// first line on stdout, and serves until the process ends.
pub async fn run(listen: &str, secret: String, server: Option<String>) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind { addr: listen.to_string(), source })?;
    let addr: SocketAddr =
        listener.local_addr().map_err(|source| ServerError::Bind { addr: listen.to_string(), source })?;
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("strata-provider/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ServerError::Pool(e.to_string()))?;
    let provider = Arc::new(Provider {
        secret,
        base: base.clone(),
        server: server.map(|s| s.trim_end_matches('/').to_string()),
        http,
        seen: Mutex::new(HashSet::new()),
    });
    println!("{base}/repair");
    let p = provider.clone();
    let repair = warp::path!("repair")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::bytes())
        .map(move |h: http::HeaderMap, body: bytes::Bytes| take_job(&p, &h, &body));
    let p = provider.clone();
    let link = warp::path!("link-token")
        .and(warp::post())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::bytes())
        .map(move |body: bytes::Bytes| link_token(&p, &body));
    let routes = repair.or(link).unify().boxed();
    let builder =
        Arc::new(hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

fn take_job(p: &Arc<Provider>, h: &http::HeaderMap, body: &[u8]) -> Response {
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let checked = verify(
        std::slice::from_ref(&p.secret),
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        body,
        now_secs(),
    );
    let delivery = match checked {
        Ok(id) => id,
        Err(e) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "about:blank",
                "Unauthorized",
                &e.to_string(),
                serde_json::json!({}),
            );
        }
    };
    let Ok(job) = serde_json::from_slice::<serde_json::Value>(body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "about:blank",
            "Bad Request",
            "the body is not JSON",
            serde_json::json!({}),
        );
    };
    let id = job["job_id"].as_str().unwrap_or("?").to_string();
    if job["account"].as_str().is_none_or(str::is_empty) {
        println!("job {id}: refused: no linked account");
        return problem(
            StatusCode::FORBIDDEN,
            &format!("{}/problems/account-link-required", p.base),
            "Account link required",
            "this service works for linked accounts: get a link token and post it to your Strata server",
            serde_json::json!({"registration": format!("{}/link-token", p.base)}),
        );
    }
    let answer = serde_json::json!({"accepted": id}).to_string();
    let fresh = p.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(delivery);
    if fresh {
        let p = p.clone();
        tokio::spawn(async move {
            let outcome = work(&p, &job).await;
            let (status, result, error) = match &outcome {
                Ok((sha256, size)) => {
                    ("succeeded", serde_json::json!({"sha256": sha256, "size": size}), None)
                }
                Err(e) => ("failed", serde_json::Value::Null, Some(e.clone())),
            };
            let report =
                serde_json::json!({"job_id": id, "status": status, "result": result, "error": error});
            let reported = report_done(&p, &job, &report.to_string()).await;
            match (&outcome, reported) {
                (Ok((_, size)), Ok(())) => println!("job {id}: repaired, {size} bytes uploaded, reported"),
                (Err(e), Ok(())) => println!("job {id}: failed ({e}), reported"),
                (_, Err(e)) => println!("job {id}: could not report completion: {e}"),
            }
        });
    }
    let mut resp = Response::new(answer.into());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// Downloads, repairs and uploads; the result's SHA-256 and size.
async fn work(p: &Provider, job: &serde_json::Value) -> Result<(String, u64), String> {
    let input = job["input"]["url"].as_str().ok_or("no input URL")?;
    let resp = p.http.get(input).send().await.map_err(|e| format!("download: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("download: HTTP {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("download: {e}"))?;
    let stl = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use strata_pipeline::core;
        let inspection =
            core::inspect(&bytes, &core::WeldOptions::default(), &core::ValidateOptions::default())
                .map_err(|e| format!("cannot read the model: {e}"))?;
        let repaired = core::repair::repair_validated(
            inspection.mesh,
            &inspection.report,
            &core::RepairOptions::default(),
        );
        if repaired.mesh.faces.is_empty() {
            return Err("nothing printable is left after repair".into());
        }
        Ok(core::repair::to_binary_stl(&repaired.mesh, "strata reference provider repair"))
    })
    .await
    .map_err(|e| e.to_string())??;
    let sha256 = {
        use sha2::Digest;
        crate::auth::hex(&sha2::Sha256::digest(&stl))
    };
    let size = stl.len() as u64;
    let upload = job["output"]["upload_url"].as_str().ok_or("no output URL")?;
    let resp = p
        .http
        .put(upload)
        .header("x-content-sha256", &sha256)
        .body(stl)
        .send()
        .await
        .map_err(|e| format!("upload: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("upload: HTTP {}", resp.status()));
    }
    Ok((sha256, size))
}

async fn report_done(p: &Provider, job: &serde_json::Value, body: &str) -> Result<(), String> {
    let url = job["callback_url"].as_str().ok_or("no callback URL")?;
    let delivery = format!("done_{}", crate::auth::random_hex(12));
    let mut last = String::new();
    for attempt in 0..5u32 {
        let ts = now_secs();
        let sent = p
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&p.secret, &delivery, ts, body.as_bytes()))
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => return Err(format!("HTTP {}", r.status())),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
    }
    Err(last)
}

fn link_token(p: &Provider, body: &[u8]) -> Response {
    let bad =
        |m: &str| problem(StatusCode::BAD_REQUEST, "about:blank", "Bad Request", m, serde_json::json!({}));
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return bad("the body is not JSON");
    };
    let (Some(nonce), Some(issuer), Some(account)) =
        (req["nonce"].as_str(), req["issuer"].as_str(), req["account"].as_str())
    else {
        return bad("nonce, issuer and account are required");
    };
    let Some(audience) = req["audience"].as_str().map(str::to_string).or_else(|| p.server.clone()) else {
        return bad("audience is required (or start the provider with --server)");
    };
    let now = now_secs();
    let claims = serde_json::json!({
        "iss": issuer, "aud": audience, "sub": account, "nonce": nonce,
        "jti": crate::auth::random_hex(16), "iat": now, "exp": now + 300,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("link+jwt".into());
    let key = match jsonwebtoken::EncodingKey::from_secret(&key_bytes(&p.secret)) {
        Ok(key) => key,
        Err(e) => return bad(&e.to_string()),
    };
    match jsonwebtoken::encode(&header, &claims, &key) {
        Ok(token) => {
            let mut resp = Response::new(serde_json::json!({"token": token}).to_string().into());
            *resp.status_mut() = StatusCode::CREATED;
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => bad(&e.to_string()),
    }
}
