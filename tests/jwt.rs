//! Scoped JWTs over real HTTP: minted by a partner route and by `strata
//! admin issue-jwt`, checked against the published JWK set with an
//! independent Ed25519 verifier (aws-lc-rs), limited to the partner's own
//! models, and the crate's version floor read from Cargo.lock.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{client, create_model, login, partner, rt, serve};

pub(crate) fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// The header and claims of `token`, after checking its Ed25519
/// signature with the key the JWK set names by its `kid`.
fn verified(token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: Value = serde_json::from_slice(&b64url(parts[0])).expect("header");
    let claims: Value = serde_json::from_slice(&b64url(parts[1])).expect("claims");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} is not published", header["kid"]));
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    let public = b64url(key["x"].as_str().expect("x"));
    let message = format!("{}.{}", parts[0], parts[1]);
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &public)
        .verify(message.as_bytes(), &b64url(parts[2]))
        .expect("the signature verifies with the published key");
    (header, claims)
}

#[test]
fn partners_mint_scoped_jwts_that_the_published_keys_verify() {
    let s = serve(&[]);
    let shop = partner(&s.data, "Shop");
    let rival = partner(&s.data, "Rival");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &s.base, &shop).await;
        let rival_cookie = login(&c, &s.base, &rival).await;
        let (uri, _, model) = create_model(&c, &s.base, &cookie, json!({"name": "part"})).await;
        let jwks: Value = c
            .get(format!("{}/.well-known/jwks.json", s.base))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        let r = c
            .post(format!("{}/jwt/", s.base))
            .header("cookie", &cookie)
            .json(&json!({"scope": ["get.model", "file.download"], "model": uri, "ttl": 600}))
            .send()
            .await
            .expect("mint");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(600)));
        let (header, claims) = verified(body["access_token"].as_str().expect("token"), &jwks);
        assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("EdDSA"), Some("at+jwt")));
        assert_eq!(claims["scope"], "get.model file.download");
        assert_eq!(claims["model"], model["id"]);
        assert_eq!(claims["iss"], claims["aud"]);
        let (exp, iat) = (claims["exp"].as_u64().expect("exp"), claims["iat"].as_u64().expect("iat"));
        assert_eq!(exp - iat, 600);
        // Another partner's model is not found, as a missing one; an
        // unknown scope is refused; no credentials, no token.
        let r = c
            .post(format!("{}/jwt/", s.base))
            .header("cookie", &rival_cookie)
            .json(&json!({"scope": "get.model", "model": uri}))
            .send()
            .await
            .expect("mint");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c
            .post(format!("{}/jwt/", s.base))
            .header("cookie", &cookie)
            .json(&json!({"scope": "get.model admin"}))
            .send()
            .await
            .expect("mint");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "invalid_scope");
        let r = c
            .post(format!("{}/jwt/", s.base))
            .json(&json!({"scope": "get.model"}))
            .send()
            .await
            .expect("mint");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        // The CLI signs with the same keys (the server's running).
        let data = s.data.to_str().expect("utf-8");
        let username = shop["username"].as_str().expect("username");
        let out = crate::util::run(&[
            "admin",
            "issue-jwt",
            "--data",
            data,
            "--partner",
            username,
            "--scope",
            "backend",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).expect("utf-8");
        let (_, cli_claims) = verified(token.trim(), &jwks);
        assert_eq!(cli_claims["scope"], "backend");
        // The same partner as the route's token, with the same issuer.
        assert_eq!((&cli_claims["sub"], &cli_claims["iss"]), (&claims["sub"], &claims["iss"]));
        let out = crate::util::run(&[
            "admin",
            "issue-jwt",
            "--data",
            data,
            "--partner",
            "nobody",
            "--scope",
            "get.model",
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no partner \"nobody\""));
        let rival_model = &model["id"];
        let rival_name = rival["username"].as_str().expect("username");
        let out = crate::util::run(&[
            "admin",
            "issue-jwt",
            "--data",
            data,
            "--partner",
            rival_name,
            "--scope",
            "get.model",
            "--model",
            rival_model.as_str().expect("id"),
        ]);
        assert!(!out.status.success(), "a token for another partner's model was issued");
    });
}

#[test]
fn the_jwt_crate_is_at_least_version_12() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"jsonwebtoken\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok())
        .expect("jsonwebtoken in Cargo.lock");
    assert!(version >= 12, "jsonwebtoken {version}: RFC 8725 checks need 12 or later");
}

/// A token with `header` and `claims`, signed with the server's own
/// newest key (read from its key file, as an attacker who stole nothing
/// could not): so each refusal below is the rule's, not a bad signature's.
pub(crate) fn signed_with_server_key(data: &std::path::Path, header: &Value, claims: &Value) -> String {
    let file: Value =
        serde_json::from_slice(&std::fs::read(data.join("jwt-keys.json")).expect("key file")).expect("json");
    let key = file["keys"].as_array().and_then(|k| k.last()).expect("a key");
    let der =
        base64::engine::general_purpose::STANDARD.decode(key["pkcs8"].as_str().expect("pkcs8")).expect("der");
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der).expect("pair");
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let sig = pair.sign(message.as_bytes());
    format!("{message}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[test]
fn expired_and_forged_jwts_are_refused_over_http_as_the_sdk_expects() {
    let s = serve(&[]);
    let shop = partner(&s.data, "Shop");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &s.base, &shop).await;
        let (_, _, model) = create_model(&c, &s.base, &cookie, json!({"name": "part"})).await;
        let id = model["id"].as_str().expect("id");
        let minted: Value = c
            .post(format!("{}/jwt/", s.base))
            .header("cookie", &cookie)
            .json(&json!({"scope": "get.model"}))
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("json");
        let good = minted["access_token"].as_str().expect("token").to_string();
        let parts: Vec<&str> = good.split('.').collect();
        let header: Value = serde_json::from_slice(&b64url(parts[0])).expect("header");
        let claims: Value = serde_json::from_slice(&b64url(parts[1])).expect("claims");
        let get = |token: String| c.get(format!("{}/api/v2/model/{id}", s.base)).bearer_auth(token).send();
        assert_eq!(get(good.clone()).await.expect("get").status(), StatusCode::OK);
        let now = claims["iat"].as_u64().expect("iat");
        let with = |k: &str, v: Value| {
            let mut c = claims.clone();
            c[k] = v;
            c
        };
        let mut hs = header.clone();
        hs["alg"] = "HS256".into();
        let mut none = header.clone();
        none["alg"] = "none".into();
        // A canary the jku header points at: it must never be connected to.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("canary");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut canary = header.clone();
        canary["jku"] = format!("http://{}/jwks.json", listener.local_addr().expect("addr")).into();
        let cases = [
            ("expired", signed_with_server_key(&s.data, &header, &with("exp", (now - 3600).into()))),
            ("not yet valid", signed_with_server_key(&s.data, &header, &with("nbf", (now + 3600).into()))),
            (
                "other audience",
                signed_with_server_key(&s.data, &header, &with("aud", "https://other.example".into())),
            ),
            (
                "exp as a string",
                signed_with_server_key(&s.data, &header, &with("exp", format!("{}", now + 600).into())),
            ),
            ("alg HS256", signed_with_server_key(&s.data, &hs, &claims)),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(none.to_string()),
                    parts[1]
                ),
            ),
            ("jku header", signed_with_server_key(&s.data, &canary, &claims)),
            ("a print token", "0".repeat(32)),
        ];
        for (what, token) in cases {
            let r = get(token).await.expect("get");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
            let body: Value = r.json().await.expect("json");
            // The viewer refreshes its token only on this error type.
            assert_eq!(body["error"], "SdJwtValidationError", "{what}: {body}");
        }
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the jku canary was contacted: {other:?}"),
        }
    });
}
