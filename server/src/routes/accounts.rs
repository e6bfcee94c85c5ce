//! Accounts as 3DIAX's user service has them: sessions (`/sessions/`),
//! self sign-up (`/users/`, off unless the operator allows it) and API
//! tokens (`/api_tokens/`, HTTP Basic credentials for scripts and
//! printers). Bodies may be JSON or HTML forms, as the clients send both.

use std::sync::Arc;

use http::StatusCode;
use warp::Filter;
use warp::reply::Response;

use super::partners::small_body;
use super::{Credentials, credentials, partner_of, with_state};
use crate::api::{self, ApiError, Peer, finish, parse_body};
use crate::auth;
use crate::state::AppState;
use strata_pipeline::db::{ApiToken, Partner, now_ms};

/// The account routes.
pub fn routes(state: Arc<AppState>) -> warp::filters::BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let idle = state.config.small_pace();
    let login = warp::path!("sessions")
        .and(warp::post())
        .and(s())
        .and(warp::ext::optional::<Peer>())
        .and(small_body(idle))
        .then(|st: Arc<AppState>, peer: Option<Peer>, ct: Option<String>, body: bytes::Bytes| async move {
            finish(login(&st, peer, ct.as_deref(), &body).await)
        });
    let session = || warp::path!("sessions").or(warp::path!("sessions" / "current")).unify();
    let current = session()
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|st: Arc<AppState>, c: Credentials| finish(current_user(&st, &c)));
    let logout = session()
        .and(warp::delete())
        .and(s())
        .and(credentials())
        .map(|st: Arc<AppState>, c: Credentials| finish(logout(&st, &c)));
    let signup = warp::path!("users")
        .and(warp::post())
        .and(s())
        .and(warp::ext::optional::<Peer>())
        .and(small_body(idle))
        .then(|st: Arc<AppState>, peer: Option<Peer>, ct: Option<String>, body: bytes::Bytes| async move {
            finish(signup(&st, peer, ct.as_deref(), &body).await)
        });
    let user = warp::path!("users" / String).and(warp::get()).and(s()).and(credentials()).map(
        |id: String, st: Arc<AppState>, c: Credentials| {
            finish(partner_of(&st, &c).and_then(|p| {
                if p.id != id {
                    return Err(ApiError::not_found("user"));
                }
                Ok(api::json(StatusCode::OK, &user_json(&st, &p)))
            }))
        },
    );
    let patch_user = warp::path!("users" / String)
        .and(warp::patch())
        .and(s())
        .and(credentials())
        .and(small_body(idle))
        .map(|id: String, st: Arc<AppState>, c: Credentials, ct: Option<String>, body: bytes::Bytes| {
            finish(patch_user(&st, &c, &id, ct.as_deref(), &body))
        });
    let new_token =
        warp::path!("api_tokens").and(warp::post()).and(s()).and(credentials()).and(small_body(idle)).map(
            |st: Arc<AppState>, c: Credentials, ct: Option<String>, body: bytes::Bytes| {
                finish(create_api_token(&st, &c, ct.as_deref(), &body))
            },
        );
    let list_tokens = warp::path!("api_tokens")
        .and(warp::get())
        .and(s())
        .and(credentials())
        .map(|st: Arc<AppState>, c: Credentials| finish(list_api_tokens(&st, &c)));
    let revoke_token =
        warp::path!("api_tokens" / String).and(warp::delete()).and(s()).and(credentials()).map(
            |id: String, st: Arc<AppState>, c: Credentials| {
                finish(partner_of(&st, &c).and_then(|p| {
                    if !st.db_call(|db| db.revoke_api_token(&id, &p.id))? {
                        return Err(ApiError::not_found("API token"));
                    }
                    Ok(api::empty(StatusCode::NO_CONTENT))
                }))
            },
        );
    let new_jwt = warp::path!("jwt").and(warp::post()).and(s()).and(credentials()).and(small_body(idle)).map(
        |st: Arc<AppState>, c: Credentials, ct: Option<String>, body: bytes::Bytes| {
            finish(issue_jwt(&st, &c, ct.as_deref(), &body))
        },
    );
    let jwks = warp::path!(".well-known" / "jwks.json").and(warp::get()).and(s()).map(|st: Arc<AppState>| {
        let mut resp = api::json(StatusCode::OK, &st.jwt.jwks());
        resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("max-age=300"));
        resp
    });
    login
        .or(new_jwt)
        .unify()
        .or(jwks)
        .unify()
        .or(current)
        .unify()
        .or(logout)
        .unify()
        .or(signup)
        .unify()
        .or(user)
        .unify()
        .or(patch_user)
        .unify()
        .or(new_token)
        .unify()
        .or(list_tokens)
        .unify()
        .or(revoke_token)
        .unify()
        .boxed()
}

/// `PATCH /users/{id}/` `{force_require_token: bool}`: whether every
/// embedding session on the partner's models needs a JWT besides the
/// ticket (seed 003's account-wide setting).
fn patch_user(
    state: &AppState,
    c: &Credentials,
    id: &str,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    if partner.id != id {
        return Err(ApiError::not_found("user"));
    }
    let body = parse_body(ct, body)?;
    let force = match &body["force_require_token"] {
        serde_json::Value::Bool(b) => *b,
        _ => return Err(ApiError::bad_request("invalid_field", "force_require_token is a boolean")),
    };
    state.db_call(|db| db.set_force_require_token(&partner.id, force))?;
    let mut user = user_json(state, &partner);
    user["force_require_token"] = force.into();
    Ok(api::json(StatusCode::OK, &user))
}

/// `POST /jwt/` `{scope: ["get.model", ...] | "a b", model?, ttl?}`: a
/// scoped access token for the partner's own use or to hand to a browser
/// user, limited to one of its models when `model` is given (another
/// partner's model is 404, as a missing one). Partner credentials are the
/// partner's backend, so `backend` may be asked for.
fn issue_jwt(state: &AppState, c: &Credentials, ct: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let body = parse_body(ct, body)?;
    let scopes: Vec<String> = match &body["scope"] {
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        serde_json::Value::Array(items) => {
            items.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>().ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_scope",
                    "scope is a list of strings or one space-separated string",
                )
            })?
        }
        _ => return Err(ApiError::bad_request("missing_scope", "scope is required")),
    };
    let model = match body["model"].as_str() {
        Some(m) => Some(super::owned_model(state, &partner, super::model_ref_id(m))?.id),
        None => None,
    };
    let ttl = body["ttl"].as_u64().unwrap_or(3600).min(crate::jwt::MAX_TTL_SECS);
    let token = state.jwt.issue(&partner.id, &scopes, model.as_deref(), ttl, true).map_err(|e| match e {
        crate::jwt::JwtError::Scope(_) => ApiError::bad_request("invalid_scope", e.to_string()),
        e => ApiError::internal(e),
    })?;
    Ok(api::json(
        StatusCode::CREATED,
        &serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl}),
    ))
}

/// The 3DIAX user resource.
fn user_json(state: &AppState, p: &Partner) -> serde_json::Value {
    serde_json::json!({
        "uri": format!("{}/users/{}/", state.public_url, p.id),
        "uuid": p.id,
        "username": p.username,
        "name": p.name,
        "email": p.email,
    })
}

/// A string field of a JSON-or-form body, or 400 naming it.
fn text(body: &serde_json::Value, field: &str) -> Result<String, ApiError> {
    match &body[field] {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Null => {
            Err(ApiError::bad_request("missing_field", format!("{field} is required")))
        }
        _ => Err(ApiError::bad_request("invalid_field", format!("{field} must be a string"))),
    }
}

/// 503 with `Retry-After` when the password-hashing queue is full.
fn hash_busy(e: crate::auth::HashBusy) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", format!("{e}; try again in a second"))
        .with_header("retry-after", "1")
}

async fn login(
    state: &Arc<AppState>,
    peer: Option<Peer>,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let body = parse_body(ct, body)?;
    let (username, password) = (text(&body, "username")?, text(&body, "password")?);
    // Counted before any hash is computed, per name and per address.
    if let Err(wait) = state.login_attempt(&username, peer.map(|Peer(a)| a.ip())) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many login attempts; try again in {wait} s"),
        )
        .with_header("retry-after", wait.to_string()));
    }
    let found = state.db_read(|db| db.partner_login(&username))?;
    // Argon2 is deliberately slow: off the reactor, a few at once, and the
    // same work for an unknown name as for a known one.
    let (partner, hash) = found.map_or((None, None), |(p, h)| (Some(p), Some(h)));
    let valid = state
        .hashing
        .run(move || crate::auth::verify_password_or_decoy(&password, hash.as_deref()))
        .await
        .map_err(hash_busy)?;
    let Some(partner) = partner.filter(|_| valid) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "wrong username or password",
        ));
    };
    state.login_succeeded(&username, peer.map(|Peer(a)| a.ip()));
    // A new id at every login (no fixation); only its hash is stored.
    let session = auth::random_hex(32);
    let ttl = state.config.session_ttl;
    let expires = now_ms() + ttl.as_millis() as i64;
    state.db_call(|db| db.create_session(&auth::secret_hash(&session), &partner.id, expires))?;
    let secure = if state.public_url.starts_with("https://") { "; Secure" } else { "" };
    let cookie =
        format!("session={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", ttl.as_secs());
    // The 3DIAX user resource at the top level, Strata's fields beside it.
    let mut answer = user_json(state, &partner);
    answer["partner"] = serde_json::to_value(&partner).map_err(ApiError::internal)?;
    answer["expires"] = serde_json::Value::String(super::iso8601(expires));
    let mut resp = api::json(StatusCode::CREATED, &answer);
    if let Ok(v) = http::HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    Ok(resp)
}

fn current_user(state: &AppState, c: &Credentials) -> Result<Response, ApiError> {
    let p = partner_of(state, c)?;
    Ok(api::json(StatusCode::OK, &user_json(state, &p)))
}

fn logout(state: &AppState, c: &Credentials) -> Result<Response, ApiError> {
    super::session_partner(state, c.cookie.as_deref())?;
    if let Some(id) = auth::cookie(c.cookie.as_deref(), "session") {
        state.db_call(|db| db.delete_session(&auth::secret_hash(&id)))?;
    }
    let mut resp = api::empty(StatusCode::NO_CONTENT);
    if let Ok(v) = http::HeaderValue::from_str("session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0") {
        resp.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `POST /users/`: self sign-up, when the operator turned it on; limited
/// per client address. 201 with `Location`, the user resource, and the
/// account's API key and callback secret (shown once).
async fn signup(
    state: &Arc<AppState>,
    peer: Option<Peer>,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !state.config.allow_signup {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signup_disabled",
            "this server does not take sign-ups; ask its operator for an account",
        ));
    }
    let body = parse_body(ct, body)?;
    let account = crate::accounts::NewAccount {
        name: text(&body, "name")?,
        email: text(&body, "email")?,
        username: text(&body, "username")?,
        password: text(&body, "password")?,
    };
    crate::accounts::check(&account)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_account", e.to_string()))?;
    if let Some(Peer(addr)) = peer
        && let Err(wait) = state.signup_allowed(addr.ip())
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_signups",
            format!("too many accounts from this address; try again in {wait} s"),
        )
        .with_header("retry-after", wait.to_string()));
    }
    let st = state.clone();
    // Hashing the password takes a slot of the same bounded pool as logins.
    let made =
        state.hashing.run(move || crate::accounts::create(&st.db(), &account)).await.map_err(hash_busy)?;
    let made = match made {
        Ok(m) => m,
        Err(crate::accounts::AccountError::UsernameTaken(u)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "username_taken",
                format!("the username {u:?} is taken"),
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let mut answer = user_json(state, &made.partner);
    answer["api_key"] = serde_json::Value::String(made.api_key);
    answer["callback_secret"] = serde_json::Value::String(made.callback_secret);
    Ok(api::with_location(
        api::json(StatusCode::CREATED, &answer),
        answer["uri"].as_str().unwrap_or_default(),
    ))
}

fn api_token_json(state: &AppState, t: &ApiToken) -> serde_json::Value {
    serde_json::json!({
        "uri": format!("{}/api_tokens/{}/", state.public_url, t.id),
        "uuid": t.id,
        "name": t.name,
        "created": super::iso8601(t.created_at),
    })
}

/// `POST /api_tokens/ {name}`: 201 `{uuid, secret, name}`; the secret is
/// shown once and stored only as its hash.
fn create_api_token(
    state: &AppState,
    c: &Credentials,
    ct: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let body = parse_body(ct, body)?;
    let name = text(&body, "name")?;
    if !api::valid_name(&name) {
        return Err(api::invalid_name());
    }
    let secret = auth::random_hex(32);
    let token = ApiToken {
        id: auth::uuid_v4(),
        partner_id: partner.id,
        name: name.trim().to_string(),
        created_at: now_ms(),
    };
    state.db_call(|db| db.create_api_token(&token, &auth::secret_hash(&secret)))?;
    let mut answer = api_token_json(state, &token);
    answer["secret"] = serde_json::Value::String(secret);
    Ok(api::with_location(
        api::json(StatusCode::CREATED, &answer),
        answer["uri"].as_str().unwrap_or_default(),
    ))
}

fn list_api_tokens(state: &AppState, c: &Credentials) -> Result<Response, ApiError> {
    let partner = partner_of(state, c)?;
    let tokens = state.db_read(|db| db.api_tokens(&partner.id))?;
    let resources: Vec<_> = tokens.iter().map(|t| api_token_json(state, t)).collect();
    Ok(api::json(StatusCode::OK, &serde_json::json!({"resources": resources})))
}
