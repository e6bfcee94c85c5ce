//! The contract test with ShapeDiver's own client: the real npm package
//! `@shapediver/sdk.geometry-api-sdk-v2` 3.4.0, run by Node against
//! `strata serve` (`tests/sdk/contract.cjs`): a session by ticket, an
//! export computed and downloaded (the bytes are the upload's), the model
//! by id with a JWT, closing, and each error type as the SDK's
//! `processError` reads it.
//!
//! It needs `node` and the package (`npm ci --prefix tests/sdk`); without
//! them it says it skipped, unless `STRATA_REQUIRE_SDK=1` (set by
//! `.ci/run`, which installs both) makes that a failure.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::embed::{ticket, until};
use crate::server::{client, login, partner, rt, serve, upload_model};

const SDK_VERSION: &str = "3.4.0";

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("sdk")
}

/// Why the SDK cannot run here, if it cannot.
fn missing() -> Option<String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed (apt-get install nodejs npm)".into());
    }
    let package = sdk_dir().join("node_modules/@shapediver/sdk.geometry-api-sdk-v2/package.json");
    let Ok(text) = std::fs::read_to_string(&package) else {
        return Some(format!("the SDK is not installed (npm ci --prefix {})", sdk_dir().display()));
    };
    let version =
        serde_json::from_str::<Value>(&text).ok().and_then(|v| v["version"].as_str().map(String::from));
    (version.as_deref() != Some(SDK_VERSION))
        .then(|| format!("the installed SDK is {version:?}, not {SDK_VERSION} (npm ci --prefix tests/sdk)"))
}

async fn mint(c: &reqwest::Client, base: &str, cookie: &str, body: Value) -> String {
    let r = c.post(format!("{base}/jwt/")).header("cookie", cookie).json(&body).send().await.expect("mint");
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_string()
}

/// Waits for the script, killing it after `limit` so a hang fails the test
/// with what it printed instead of holding the run.
fn wait_or_kill(mut child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the SDK script did not finish in {limit:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn shapediver_sdk_opens_exports_downloads_and_closes_and_reads_every_error() {
    if let Some(why) = missing() {
        assert!(std::env::var_os("STRATA_REQUIRE_SDK").is_none(), "STRATA_REQUIRE_SDK is set but {why}");
        eprintln!("skipped: the SDK contract test needs the npm SDK: {why}");
        return;
    }
    let served = serve(&["--sessions-per-model-per-ip-per-hour", "4"]);
    let shop = partner(&served.data, "Shop");
    let base = served.base.clone();
    let cube = crate::util::cube();
    let prepared = rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &shop).await;
        let (model, _) = upload_model(&c, &base, &cookie, cube.clone()).await;
        let (locked, _) = upload_model(&c, &base, &cookie, cube.clone()).await;
        let backend = json!({"type": "backend", "pub": false, "until": until(3600)});
        let open = ticket(&c, &base, &cookie, &model, backend.clone()).await;
        let locked_ticket = ticket(&c, &base, &cookie, &locked, backend.clone()).await;
        let r = c
            .post(format!("{base}/api/v2/model/{model}/ticket"))
            .header("cookie", &cookie)
            .json(&backend)
            .send()
            .await
            .expect("ticket");
        let made: Value = r.json().await.expect("json");
        let revoked = made["ticket"].as_str().expect("ticket").to_string();
        let newest = made["ticketId"].as_str().expect("ticketId").to_string();
        let r = c
            .delete(format!("{base}/api/v2/model/{model}/ticket/{newest}"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::OK);
        let r = c
            .patch(format!("{base}/api/v2/model/{locked}"))
            .header("cookie", &cookie)
            .json(&json!({"require_token": true}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::OK);
        let jwt = mint(&c, &base, &cookie, json!({"scope": ["get.model"], "model": model})).await;
        let no_scope = mint(&c, &base, &cookie, json!({"scope": ["file.download"], "model": model})).await;
        let any_model = mint(&c, &base, &cookie, json!({"scope": ["get.model"]})).await;
        let locked_jwt = mint(&c, &base, &cookie, json!({"scope": ["auth.session"], "model": locked})).await;
        // An expired token, signed with the server's own key, so only the
        // expiry refuses it.
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: Value = serde_json::from_slice(&crate::jwt::b64url(parts[0])).expect("header");
        let mut claims: Value = serde_json::from_slice(&crate::jwt::b64url(parts[1])).expect("claims");
        let iat = claims["iat"].as_i64().expect("iat");
        claims["iat"] = (iat - 7200).into();
        claims["nbf"] = (iat - 7200).into();
        claims["exp"] = (iat - 3600).into();
        let expired = crate::jwt::signed_with_server_key(&served.data, &header, &claims);
        vec![
            ("TICKET", open),
            ("REVOKED_TICKET", revoked),
            ("LOCKED_TICKET", locked_ticket),
            ("MODEL_ID", model),
            ("JWT", jwt),
            ("JWT_NO_SCOPE", no_scope),
            ("JWT_ANY_MODEL", any_model),
            ("LOCKED_JWT", locked_jwt),
            ("EXPIRED_JWT", expired),
        ]
    });
    let out = std::process::Command::new("node")
        .arg(sdk_dir().join("contract.cjs"))
        .current_dir(sdk_dir())
        .env("STRATA_BASE", &base)
        .envs(prepared.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let out = wait_or_kill(out, std::time::Duration::from_secs(120));
    assert!(out.status.success(), "the SDK failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let model = &prepared.iter().find(|(k, _)| *k == "MODEL_ID").expect("model").1;

    assert_eq!(got["session"]["modelId"], model.as_str(), "{got}");
    assert_eq!(got["session"]["modelStat"], "confirmed");
    assert!(got["session"]["exports"].as_array().expect("exports").iter().any(|e| e == "model-stl"));
    // Downloaded through the SDK: the bytes are the upload's.
    assert_eq!(got["download"]["kind"], "export");
    assert_eq!(got["download"]["size"], cube.len());
    assert_eq!(got["download"]["sha256"], strata_core::stream::sha256_hex(&cube));
    assert_eq!(got["manifest"]["model_sha256"], strata_core::stream::sha256_hex(&cube));
    assert_eq!(got["model"]["id"], model.as_str());
    assert_eq!(got["lockedSession"]["modelId"].as_str().map(str::len), Some(36));

    // Each error, as processError types it: the SDK's own enum values.
    let errors = &got["errors"];
    for (case, status, kind) in [
        ("sessionGone", 410, "SdSessionGoneError"),
        ("exportGone", 410, "SdSessionGoneError"),
        ("revokedTicket", 403, "SdTicketValidationError"),
        ("garbageTicket", 400, "SdTicketValidationError"),
        ("unknownTicket", 403, "SdTicketValidationError"),
        ("tokenMissing", 401, "SdTokenMissingError"),
        ("jwtInvalid", 401, "SdJwtValidationError"),
        ("jwtExpired", 401, "SdJwtValidationError"),
        ("forbidden", 403, "SdErrorForbidden"),
        ("notFound", 404, "SdErrorEntityNotFound"),
        ("rateLimited", 429, "SdRateLimitErrorGeneric"),
    ] {
        let e = &errors[case];
        assert_eq!(e["isResponseError"], true, "{case}: {e}");
        assert_eq!((e["status"].as_u64(), e["type"].as_str()), (Some(status), Some(kind)), "{case}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {e}");
        assert!(
            e["desc"].as_str().is_some_and(|d| !d.is_empty() && d != "No error description provided"),
            "{case}: {e}"
        );
    }
    let wait: u64 =
        errors["rateLimited"]["retryAfter"].as_str().and_then(|s| s.parse().ok()).expect("Retry-After");
    assert!((1..=3600).contains(&wait), "{wait}");
}
