//! Embedding as ShapeDiver's Geometry Backend API v2 has it, over real
//! HTTP: tickets, sessions from allowed origins, backend access,
//! `require_token`, closing, object-level authorisation, CORS, and the
//! API's error bodies.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{client, create_model, login, partner, rt, serve};

/// `{"error", "desc", "message"}`, all strings, as the SDK's
/// `processError` reads them; the error type.
async fn sd_error(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.expect("json");
    for field in ["error", "desc", "message"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    body["error"].as_str().unwrap_or_default().to_string()
}

pub(crate) fn until(in_secs: i64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(in_secs.max(0) as u64);
    let secs = t.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    // YYYYMMDDhhmmss in UTC, from the civil calendar.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub(crate) async fn ticket(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    model: &str,
    body: Value,
) -> String {
    let r = c
        .post(format!("{base}/api/v2/model/{model}/ticket"))
        .header("cookie", cookie)
        .json(&body)
        .send()
        .await
        .expect("ticket");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    assert!(body["version"].is_string() && body["model"]["id"] == model && body["model"]["stat"].is_string());
    body["ticket"].as_str().expect("ticket").to_string()
}

async fn session(c: &reqwest::Client, base: &str, ticket: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = c.post(format!("{base}/api/v2/ticket/{ticket}"));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("session")
}

#[test]
fn tickets_open_sessions_only_from_allowed_origins_and_for_their_owner() {
    let s = serve(&[]);
    let shop = partner(&s.data, "Shop");
    let rival = partner(&s.data, "Rival");
    rt().block_on(async {
        let c = client();
        let base = s.base.as_str();
        let cookie = login(&c, base, &shop).await;
        let rival_cookie = login(&c, base, &rival).await;
        let (_, _, model) = create_model(&c, base, &cookie, json!({"name": "ring"})).await;
        let id = model["id"].as_str().expect("id");

        // An embed ticket for one origin and a wildcard.
        let embed = ticket(
            &c,
            base,
            &cookie,
            id,
            json!({"type": "", "pub": false, "until": until(3600),
            "accessdomains": ["https://ok.com", "https://*.shop.example"]}),
        )
        .await;
        let r = session(&c, base, &embed, Some("https://ok.com")).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["access-control-allow-origin"], "https://ok.com");
        let opened: Value = r.json().await.expect("json");
        for field in [
            "version",
            "sessionId",
            "model",
            "file",
            "setting",
            "statistic",
            "viewer",
            "viewerSettingsVersion",
            "actions",
            "templates",
        ] {
            assert!(!opened[field].is_null(), "{field} missing in {opened}");
        }
        assert_eq!(opened["model"]["id"], id);
        assert_eq!(
            session(&c, base, &embed, Some("https://a.shop.example")).await.status(),
            StatusCode::CREATED
        );
        for bad in [
            Some("https://ok.com.evil.com"),
            Some("https://evil.com/?ok.com"),
            Some("null"),
            Some("http://ok.com"),
            Some("https://ok.com:8443"),
            Some("https://OK.com.evil.com"),
            Some("https://shop.example"),
            Some("https://xn--k-ewa.com"),
            None,
        ] {
            let kind = sd_error(session(&c, base, &embed, bad).await, StatusCode::FORBIDDEN).await;
            assert_eq!(kind, "SdTicketValidationError", "{bad:?}");
        }
        // Malformed and unknown tickets.
        let kind = sd_error(
            session(&c, base, "not%20a%20ticket", Some("https://ok.com")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(kind, "SdTicketValidationError");
        let kind = sd_error(
            session(&c, base, &"ab".repeat(32), Some("https://ok.com")).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(kind, "SdTicketValidationError");

        // A public ticket skips the origin check.
        let public =
            ticket(&c, base, &cookie, id, json!({"type": "", "pub": true, "until": until(3600)})).await;
        assert_eq!(
            session(&c, base, &public, Some("https://anywhere.example")).await.status(),
            StatusCode::CREATED
        );

        // A backend ticket works without Origin while backend access is on.
        let backend =
            ticket(&c, base, &cookie, id, json!({"type": "backend", "pub": false, "until": until(3600)}))
                .await;
        assert_eq!(session(&c, base, &backend, None).await.status(), StatusCode::CREATED);
        let r = c
            .patch(format!("{base}/api/v2/model/{id}"))
            .header("cookie", &cookie)
            .json(&json!({"backendaccess": false}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::OK);
        let kind = sd_error(session(&c, base, &backend, None).await, StatusCode::FORBIDDEN).await;
        assert_eq!(kind, "SdTicketValidationError");

        // Another partner sees none of it: 404 as for a missing model.
        let r = c
            .post(format!("{base}/api/v2/model/{id}/ticket"))
            .header("cookie", &rival_cookie)
            .json(&json!({"type": "", "pub": true, "until": until(60)}))
            .send()
            .await
            .expect("ticket");
        assert_eq!(sd_error(r, StatusCode::NOT_FOUND).await, "SdErrorEntityNotFound");
        let r = c
            .get(format!("{base}/api/v2/model/{id}/ticket"))
            .header("cookie", &rival_cookie)
            .send()
            .await
            .expect("list");
        assert_eq!(sd_error(r, StatusCode::NOT_FOUND).await, "SdErrorEntityNotFound");
        let r = c
            .post(format!("{base}/api/v2/model/{id}/ticket"))
            .json(&json!({"type": "", "pub": true, "until": until(60)}))
            .send()
            .await
            .expect("ticket");
        assert_eq!(sd_error(r, StatusCode::UNAUTHORIZED).await, "SdErrorUnauthorized");

        // Bad ticket requests name their field.
        for bad in [
            json!({"type": "", "until": until(60)}),
            json!({"type": "", "pub": true, "until": "2026"}),
            json!({"type": "", "pub": true, "until": until(60), "accessdomains": ["ok.com"]}),
            json!({"type": "admin", "pub": true, "until": until(60)}),
        ] {
            let r = c
                .post(format!("{base}/api/v2/model/{id}/ticket"))
                .header("cookie", &cookie)
                .json(&bad)
                .send()
                .await
                .expect("ticket");
            assert_eq!(sd_error(r, StatusCode::BAD_REQUEST).await, "SdRequestValidationError", "{bad}");
        }

        // The owner lists tickets (no secrets) and revokes one.
        let r = c
            .get(format!("{base}/api/v2/model/{id}/ticket"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("list");
        let list: Value = r.json().await.expect("json");
        let tickets = list["tickets"].as_array().expect("tickets");
        assert_eq!(tickets.len(), 3);
        assert!(!list.to_string().contains(&embed), "a ticket's secret was listed");
        let public_id = tickets.iter().find(|t| t["pub"] == true).expect("public")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let r = c
            .delete(format!("{base}/api/v2/model/{id}/ticket/{public_id}"))
            .header("cookie", &rival_cookie)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c
            .delete(format!("{base}/api/v2/model/{id}/ticket/{public_id}"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::OK);
        let kind = sd_error(
            session(&c, base, &public, Some("https://anywhere.example")).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(kind, "SdTicketValidationError");

        // An expired ticket.
        let short = ticket(&c, base, &cookie, id, json!({"type": "", "pub": true, "until": until(2)})).await;
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
        assert_eq!(
            sd_error(session(&c, base, &short, None).await, StatusCode::FORBIDDEN).await,
            "SdTicketValidationError"
        );
    });
}

#[test]
fn sessions_close_once_from_their_origin_and_require_token_needs_a_jwt() {
    let s = serve(&[]);
    let shop = partner(&s.data, "Shop");
    let rival = partner(&s.data, "Rival");
    rt().block_on(async {
        let c = client();
        let base = s.base.as_str();
        let cookie = login(&c, base, &shop).await;
        let rival_cookie = login(&c, base, &rival).await;
        let (_, _, model) = create_model(&c, base, &cookie, json!({"name": "ring"})).await;
        let id = model["id"].as_str().expect("id");
        let embed = ticket(
            &c,
            base,
            &cookie,
            id,
            json!({"type": "", "pub": false, "until": until(3600),
            "accessdomains": ["https://ok.com"]}),
        )
        .await;
        let opened: Value =
            session(&c, base, &embed, Some("https://ok.com")).await.json().await.expect("json");
        let sid = opened["sessionId"].as_str().expect("session id");
        let close = |origin: &'static str| {
            c.post(format!("{base}/api/v2/session/{sid}/close")).header("origin", origin).send()
        };
        assert_eq!(
            sd_error(close("https://evil.com").await.expect("close"), StatusCode::FORBIDDEN).await,
            "SdErrorForbidden"
        );
        assert_eq!(close("https://ok.com").await.expect("close").status(), StatusCode::OK);
        assert_eq!(
            sd_error(close("https://ok.com").await.expect("close"), StatusCode::GONE).await,
            "SdSessionGoneError"
        );
        let r =
            c.post(format!("{base}/api/v2/session/{}/close", "0".repeat(36))).send().await.expect("close");
        assert_eq!(sd_error(r, StatusCode::NOT_FOUND).await, "SdErrorEntityNotFound");

        // CORS preflight for the SDK's headers.
        let r = c
            .request(reqwest::Method::OPTIONS, format!("{base}/api/v2/ticket/{embed}"))
            .header("origin", "https://ok.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, x-shapediver-origin")
            .send()
            .await
            .expect("preflight");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let allowed =
            r.headers()["access-control-allow-headers"].to_str().expect("ascii").to_ascii_lowercase();
        for h in ["authorization", "content-type", "x-shapediver-origin"] {
            assert!(allowed.contains(h), "{h} not allowed: {allowed}");
        }
        assert_eq!(r.headers()["access-control-expose-headers"], "Content-Disposition");

        // require_token: the ticket and a JWT granting auth.session.
        let r = c
            .patch(format!("{base}/api/v2/model/{id}"))
            .header("cookie", &cookie)
            .json(&json!({"require_token": true}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            sd_error(session(&c, base, &embed, Some("https://ok.com")).await, StatusCode::UNAUTHORIZED).await,
            "SdTokenMissingError"
        );
        let mint = |cookie: &str, scope: &'static str| {
            c.post(format!("{base}/jwt/"))
                .header("cookie", cookie.to_string())
                .json(&json!({"scope": scope}))
                .send()
        };
        let token = |r: reqwest::Response| async move {
            r.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_string()
        };
        let good = token(mint(&cookie, "auth.session").await.expect("mint")).await;
        let wrong_scope = token(mint(&cookie, "get.model").await.expect("mint")).await;
        let rivals = token(mint(&rival_cookie, "auth.session").await.expect("mint")).await;
        let with = |jwt: String| {
            c.post(format!("{base}/api/v2/ticket/{embed}"))
                .header("origin", "https://ok.com")
                .bearer_auth(jwt)
                .send()
        };
        assert_eq!(
            sd_error(with("garbage".into()).await.expect("session"), StatusCode::UNAUTHORIZED).await,
            "SdJwtValidationError"
        );
        let tampered = format!("{}x", &good[..good.len() - 1]);
        assert_eq!(
            sd_error(with(tampered).await.expect("session"), StatusCode::UNAUTHORIZED).await,
            "SdJwtValidationError"
        );
        assert_eq!(
            sd_error(with(wrong_scope).await.expect("session"), StatusCode::FORBIDDEN).await,
            "SdErrorForbidden"
        );
        assert_eq!(
            sd_error(with(rivals.clone()).await.expect("session"), StatusCode::FORBIDDEN).await,
            "SdErrorForbidden"
        );
        assert_eq!(with(good.clone()).await.expect("session").status(), StatusCode::CREATED);

        // Model-id calls need a JWT for the model's owner with get.model.
        let r = c.get(format!("{base}/api/v2/model/{id}")).send().await.expect("get");
        assert_eq!(sd_error(r, StatusCode::UNAUTHORIZED).await, "SdTokenMissingError");
        let r = c.get(format!("{base}/api/v2/model/{id}")).bearer_auth(&good).send().await.expect("get");
        assert_eq!(sd_error(r, StatusCode::FORBIDDEN).await, "SdErrorForbidden");
        let r = c.get(format!("{base}/api/v2/model/{id}")).bearer_auth(&rivals).send().await.expect("get");
        assert_eq!(sd_error(r, StatusCode::NOT_FOUND).await, "SdErrorEntityNotFound");
        let reader = token(mint(&cookie, "get.model").await.expect("mint")).await;
        let r = c.get(format!("{base}/api/v2/model/{id}")).bearer_auth(&reader).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        let got: Value = r.json().await.expect("json");
        assert_eq!(got["model"]["id"].as_str(), Some(id));
        // Settings and statistics only with the permissions that name them.
        assert_eq!((&got["setting"], &got["statistic"]), (&json!({}), &json!({})), "{got}");
        let settings_reader =
            token(mint(&cookie, "get.model setting.auth.token.get.* get.statistic.*").await.expect("mint"))
                .await;
        let r = c
            .get(format!("{base}/api/v2/model/{id}"))
            .bearer_auth(&settings_reader)
            .send()
            .await
            .expect("get");
        let got: Value = r.json().await.expect("json");
        assert_eq!(got["setting"]["auth"], json!({"token": {"require_token": true}}), "{got}");
        // The session opened and closed first, and the one with the JWT.
        assert_eq!(got["statistic"]["numsessions"], 2, "{got}");
        assert!(got["statistic"]["lastsession"].as_str().is_some_and(|t| t.ends_with('Z')), "{got}");
        // A user's JWT cannot change the model's settings (backend only).
        let r = c
            .patch(format!("{base}/api/v2/model/{id}"))
            .bearer_auth(&reader)
            .json(&json!({"require_token": false}))
            .send()
            .await
            .expect("patch");
        assert_eq!(sd_error(r, StatusCode::FORBIDDEN).await, "SdErrorForbidden");
    });
}

#[test]
fn a_session_exports_the_uploaded_model_and_its_manifest() {
    let s = serve(&[]);
    let shop = partner(&s.data, "Shop");
    rt().block_on(async {
        let c = client();
        let base = s.base.as_str();
        let cookie = login(&c, base, &shop).await;
        let bytes = crate::util::cube();
        let (id, _) = crate::server::upload_model(&c, base, &cookie, bytes.clone()).await;
        let public =
            ticket(&c, base, &cookie, &id, json!({"type": "", "pub": true, "until": until(3600)})).await;
        let opened: Value =
            session(&c, base, &public, Some("https://ok.com")).await.json().await.expect("json");
        assert_eq!(opened["exports"]["model-stl"]["type"], "download");
        let sid = opened["sessionId"].as_str().expect("session id");
        let export = |body: Value| {
            c.put(format!("{base}/api/v2/session/{sid}/export"))
                .header("origin", "https://ok.com")
                .json(&body)
                .send()
        };
        let r = export(json!({"exports": {"id": "model-stl"}, "parameters": {}})).await.expect("export");
        assert_eq!(r.status(), StatusCode::OK);
        let done: Value = r.json().await.expect("json");
        let href = done["exports"]["model-stl"]["content"][0]["href"].as_str().expect("href").to_string();
        let got = c.get(&href).send().await.expect("asset");
        assert_eq!(got.status(), StatusCode::OK);
        assert!(got.headers()["content-disposition"].to_str().expect("ascii").contains("attachment"));
        assert_eq!(
            got.bytes().await.expect("bytes").as_ref(),
            bytes.as_slice(),
            "the export is not the upload"
        );
        let r = export(json!({"exports": ["print-manifest"]})).await.expect("export");
        let done: Value = r.json().await.expect("json");
        let href =
            done["exports"]["print-manifest"]["content"][0]["href"].as_str().expect("href").to_string();
        let manifest: Value = c.get(&href).send().await.expect("asset").json().await.expect("manifest");
        assert_eq!(manifest["model_sha256"], strata_core::stream::sha256_hex(&bytes));
        let r = export(json!({"exports": {"id": "gcode"}})).await.expect("export");
        assert_eq!(sd_error(r, StatusCode::NOT_FOUND).await, "SdErrorEntityNotFound");
        let r = export(json!({})).await.expect("export");
        assert_eq!(sd_error(r, StatusCode::BAD_REQUEST).await, "SdRequestValidationError");
        // Export links are the SDK's session asset path, signed, for the
        // session's origin, and end with the session.
        assert!(href.contains(&format!("/api/v2/session/{sid}/export/print-manifest.")), "{href}");
        let last = if href.ends_with('0') { "1" } else { "0" };
        let forged = format!("{}{last}", &href[..href.len() - 1]);
        let r = c.get(&forged).send().await.expect("forged");
        assert_eq!(sd_error(r, StatusCode::FORBIDDEN).await, "SdErrorForbidden");
        let r = c.get(&href).header("origin", "https://evil.com").send().await.expect("origin");
        assert_eq!(sd_error(r, StatusCode::FORBIDDEN).await, "SdErrorForbidden");
        let r = c.get(&href).header("origin", "https://ok.com").send().await.expect("origin");
        assert_eq!(r.status(), StatusCode::OK);
        let r = c
            .post(format!("{base}/api/v2/session/{sid}/close"))
            .header("origin", "https://ok.com")
            .send()
            .await
            .expect("close");
        assert_eq!(r.status(), StatusCode::OK);
        let r = c.get(&href).send().await.expect("closed");
        assert_eq!(sd_error(r, StatusCode::GONE).await, "SdSessionGoneError");

        // The model file by model id, with a JWT granting file.download.
        let mint = |scope: &'static str| {
            c.post(format!("{base}/jwt/"))
                .header("cookie", cookie.clone())
                .json(&json!({"scope": scope, "model": id}))
                .send()
        };
        let jwt =
            mint("file.download").await.expect("mint").json::<Value>().await.expect("json")["access_token"]
                .as_str()
                .expect("token")
                .to_string();
        let r = c
            .get(format!("{base}/api/v2/model/{id}/file/download"))
            .bearer_auth(&jwt)
            .send()
            .await
            .expect("download");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), bytes.as_slice());
        let other =
            mint("get.model").await.expect("mint").json::<Value>().await.expect("json")["access_token"]
                .as_str()
                .expect("token")
                .to_string();
        let r = c
            .get(format!("{base}/api/v2/model/{id}/file/download"))
            .bearer_auth(&other)
            .send()
            .await
            .expect("download");
        assert_eq!(sd_error(r, StatusCode::FORBIDDEN).await, "SdErrorForbidden");
    });
}

#[test]
fn rate_limits_answer_429_with_retry_after_and_keep_partners_apart() {
    let s = serve(&["--requests-per-key-per-minute", "5", "--sessions-per-model-per-ip-per-hour", "2"]);
    let shop = partner(&s.data, "Shop");
    let other = partner(&s.data, "Other");
    rt().block_on(async {
        let c = client();
        let base = s.base.as_str();
        let cookie = login(&c, base, &shop).await;
        let other_cookie = login(&c, base, &other).await;
        // Five partner requests pass (the model and the ticket among them).
        let (_, _, model) = create_model(&c, base, &cookie, json!({"name": "ring"})).await;
        let id = model["id"].as_str().expect("id");
        let public =
            ticket(&c, base, &cookie, id, json!({"type": "", "pub": true, "until": until(3600)})).await;
        for _ in 0..3 {
            let r = c.get(format!("{base}/model/")).header("cookie", &cookie).send().await.expect("list");
            assert_eq!(r.status(), StatusCode::OK);
        }
        let r = c.get(format!("{base}/model/")).header("cookie", &cookie).send().await.expect("list");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        assert_eq!(r.headers()["ratelimit-limit"], "5");
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "rate_limited");
        // The other partner is not slowed by the first one's burst.
        let r = c.get(format!("{base}/model/")).header("cookie", &other_cookie).send().await.expect("list");
        assert_eq!(r.status(), StatusCode::OK);
        // Sessions per model per address: the third in the hour is refused
        // the way the SDK waits on (Retry-After in seconds).
        for _ in 0..2 {
            assert_eq!(session(&c, base, &public, None).await.status(), StatusCode::CREATED);
        }
        let r = session(&c, base, &public, None).await;
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(sd_error(r, StatusCode::TOO_MANY_REQUESTS).await, "SdRateLimitErrorGeneric");
    });
}

#[test]
fn force_require_token_makes_every_session_of_the_partner_need_a_jwt() {
    let s = serve(&[]);
    let shop = partner(&s.data, "Shop");
    let rival = partner(&s.data, "Rival");
    rt().block_on(async {
        let c = client();
        let base = s.base.as_str();
        let cookie = login(&c, base, &shop).await;
        let rival_cookie = login(&c, base, &rival).await;
        let me: Value = c
            .get(format!("{base}/sessions/current"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("me")
            .json()
            .await
            .expect("json");
        let uid = me["uuid"].as_str().expect("uuid").to_string();
        let (_, _, model) = create_model(&c, base, &cookie, json!({"name": "ring"})).await;
        let id = model["id"].as_str().expect("id");
        let public =
            ticket(&c, base, &cookie, id, json!({"type": "", "pub": true, "until": until(3600)})).await;
        assert_eq!(session(&c, base, &public, None).await.status(), StatusCode::CREATED);
        // Another partner cannot set it for this one.
        let r = c
            .patch(format!("{base}/users/{uid}/"))
            .header("cookie", &rival_cookie)
            .json(&json!({"force_require_token": true}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(session(&c, base, &public, None).await.status(), StatusCode::CREATED);
        let r = c
            .patch(format!("{base}/users/{uid}/"))
            .header("cookie", &cookie)
            .json(&json!({"force_require_token": "yes"}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = c
            .patch(format!("{base}/users/{uid}/"))
            .header("cookie", &cookie)
            .json(&json!({"force_require_token": true}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.expect("json")["force_require_token"], true);
        assert_eq!(
            sd_error(session(&c, base, &public, None).await, StatusCode::UNAUTHORIZED).await,
            "SdTokenMissingError"
        );
        let jwt: Value = c
            .post(format!("{base}/jwt/"))
            .header("cookie", &cookie)
            .json(&json!({"scope": "auth.session", "model": id}))
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("json");
        let r = c
            .post(format!("{base}/api/v2/ticket/{public}"))
            .bearer_auth(jwt["access_token"].as_str().expect("token"))
            .send()
            .await
            .expect("session");
        assert_eq!(r.status(), StatusCode::CREATED);
    });
}
