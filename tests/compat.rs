//! The clients partners already run, pointed at `strata serve` with only
//! the host changed. Each test replays the requests one public client
//! sends (its paths, methods, headers and bodies, as read from its source)
//! and asserts exactly what that client reads back:
//!
//! - `DoWhileGeek/authentise-services` (Python, `requests`):
//!   `session.py`, `model.py`.
//! - `sunny/authentise` (Ruby, `rest-client`): `api/users.rb`,
//!   `api/warehouse.rb`, `api/print.rb`, `api.rb` and its specs.
//! - `nebumind-GmbH/Example-Authentise-Session` (Python): sessions, API
//!   tokens as HTTP Basic, form-encoded models, uploads that must answer 204.
//! - `erikkvale/authentise-api-ing` (Python): `auto-align`, the locations
//!   in the body's `resources`.
//! - api3 clients (`karlalopez/Authentise-Store`, the `Aaww` and
//!   `Authentize` gems): parameters in queries, form bodies on GET and
//!   POST, an `Api-Key` header; errors in the real service's envelope.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{client, get_json_as, login, multipart, partner, rt, serve, upload_model};

/// What Python's `requests` sends on every call.
fn python(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    r.header("user-agent", "python-requests/2.31.0")
        .header("accept", "*/*")
        .header("connection", "keep-alive")
}

/// What Ruby's `rest-client` sends with `accept: :json`.
fn ruby(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    r.header("user-agent", "rest-client/2.1.0 (linux x86_64) ruby/3.2.2p53")
        .header("accept", "application/json")
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The `session` cookie's value from a `Set-Cookie` header.
fn session_cookie(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().expect("ascii");
    let pair = set.split(';').next().expect("pair");
    pair.strip_prefix("session=").unwrap_or_else(|| panic!("{set}")).to_string()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().expect("ascii").to_string()
}

/// Polls a model resource until it leaves `processing` (as the clients'
/// `_wait_on_status` loops do).
async fn wait_processed(c: &reqwest::Client, uri: &str, cookie: &str) -> Value {
    for _ in 0..600 {
        let m = get_json_as(c, uri, cookie).await;
        if m["status"] != "processing" && m["status"] != "not-uploaded" {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{uri} never finished processing");
}

#[test]
fn authentise_services_python_session_upload_status_and_download() {
    let s = serve(&["--allow-signup"]);
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        // Session.create_user: JSON, must be 201.
        let body = json!({"username": "pyshop", "email": "py@shop.example", "name": "Py Shop", "password": "s3cret-pass"});
        let r = python(c.post(format!("{base}/users/"))).json(&body).send().await.expect("users");
        assert_eq!(r.status(), StatusCode::CREATED);
        // Session(): POST /sessions/ as JSON; 403 is "bad user credentials".
        let bad = json!({"username": "pyshop", "password": "nope-nope"});
        let r = python(c.post(format!("{base}/sessions/"))).json(&bad).send().await.expect("sessions");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let good = json!({"username": "pyshop", "password": "s3cret-pass"});
        let r = python(c.post(format!("{base}/sessions/"))).json(&good).send().await.expect("sessions");
        assert!(r.status().is_success());
        let session = session_cookie(&r);
        let cookie = format!("session={session}");
        // Model.upload_model: allowed_transformations and a callback.
        let payload = json!({"name": "cube.stl", "allowed_transformations": {"resize": true, "rotation": false}});
        let post = python(c.post(format!("{base}/model/"))).header("cookie", &cookie).json(&payload).send().await.expect("model");
        assert!(post.status().is_success(), "{}", post.status());
        let upload = header(&post, "x-upload-location");
        let model_uri = header(&post, "location");
        assert!(model_uri.ends_with('/'), "{model_uri}");
        let put = python(c.put(&upload)).header("content-type", "application/octet-stream").body(cube.clone()).send().await.expect("put");
        assert!(put.status().is_success(), "{}", put.status());
        // _get_model_status reads name and status; download_model GETs
        // payload["content"] without the cookie.
        let m = wait_processed(&c, &model_uri, &cookie).await;
        assert_eq!((m["name"].as_str(), m["status"].as_str()), (Some("cube.stl"), Some("processed")));
        assert_eq!(m["allowed_transformations"], json!({"resize": true, "rotation": false}));
        let content = m["content"].as_str().expect("content URL");
        let got = python(c.get(content)).send().await.expect("download");
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.expect("bytes").to_vec(), cube, "the download is the upload");
        // Streamed from its file, so a broken download resumes with a Range.
        let part = c.get(content).header("range", "bytes=100-").send().await.expect("range");
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header(&part, "content-range"), format!("bytes 100-{}/{}", cube.len() - 1, cube.len()));
        assert_eq!(part.bytes().await.expect("bytes").to_vec(), cube[100..].to_vec());
        let past = c.get(content).header("range", format!("bytes={}-", cube.len())).send().await.expect("416");
        assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        // The capability is for that one path and expires: a changed
        // signature or another model's path is refused.
        let forged = format!("{}0", content.trim_end_matches(|ch: char| ch.is_ascii_hexdigit()));
        assert_eq!(c.get(&forged).send().await.expect("forged").status(), StatusCode::FORBIDDEN);
        let expired = content.replace("expires=", "expires=1").replace("&signature", "0&signature");
        assert_eq!(c.get(&expired).send().await.expect("expired").status(), StatusCode::FORBIDDEN);
        let snapshot = c.get(m["snapshot"].as_str().expect("snapshot")).send().await.expect("snapshot");
        assert_eq!(snapshot.headers()["content-type"], "image/png");
        // The plain authenticated route still works, and not without it.
        let plain = format!("{}content", model_uri);
        assert_eq!(c.get(&plain).header("cookie", &cookie).send().await.expect("plain").status(), StatusCode::OK);
        assert_eq!(c.get(&plain).send().await.expect("anonymous").status(), StatusCode::UNAUTHORIZED);
    });
}

#[test]
fn sunny_authentise_ruby_users_sessions_warehouse_and_print() {
    let s = serve(&["--allow-signup"]);
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        // Users.create_user: a form body, 201, reads json["uri"] and ["uuid"].
        let r = ruby(c.post(format!("{base}/users/")))
            .header("content-type", FORM)
            .body("email=test%40example.com&name=Test+User&username=testuser&password=password")
            .send()
            .await
            .expect("users");
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = header(&r, "location");
        let user: Value = r.json().await.expect("json");
        assert_eq!(user["uri"].as_str(), Some(location.as_str()));
        assert!(user["uuid"].as_str().is_some_and(|u| u.len() == 36), "{user}");
        let api_key = user["api_key"].as_str().expect("the key, shown once").to_string();
        // Users.create_session: a form body, 201, reads cookies["session"].
        let r = ruby(c.post(format!("{base}/sessions/")))
            .header("content-type", FORM)
            .body("username=testuser&password=password")
            .send()
            .await
            .expect("sessions");
        assert_eq!(r.status(), StatusCode::CREATED);
        let cookie = format!("session={}", session_cookie(&r));
        let me: Value = r.json().await.expect("json");
        assert_eq!((me["username"].as_str(), me["name"].as_str(), me["email"].as_str()), (Some("testuser"), Some("Test User"), Some("test@example.com")));
        assert_eq!(me["uri"], user["uri"]);
        // Errors: the clients raise with JSON.parse(response)["message"].
        let r = ruby(c.post(format!("{base}/sessions/"))).header("content-type", FORM).body("username=testuser&password=wrong").send().await.expect("bad");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.json::<Value>().await.expect("json")["message"].as_str().is_some_and(|m| !m.is_empty()));
        // Warehouse.create_model: JSON {name} with the cookie; 201 with
        // Location and X-Upload-Location.
        let r = ruby(c.post(format!("{base}/model/")))
            .header("content-type", "application/json")
            .header("cookie", &cookie)
            .body(r#"{"name":"Test"}"#)
            .send()
            .await
            .expect("model");
        assert_eq!(r.status(), StatusCode::CREATED);
        let (model_url, upload_url) = (header(&r, "location"), header(&r, "x-upload-location"));
        let r = ruby(c.post(format!("{base}/model/"))).header("content-type", "application/json").body(r#"{"name":"Test"}"#).send().await.expect("no cookie");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.json::<Value>().await.expect("json")["message"].is_string());
        // Warehouse.put_file: RestClient.put(url, string), which Net::HTTP
        // labels as a form.
        let r = ruby(c.put(&upload_url)).header("content-type", FORM).body(cube.clone()).send().await.expect("put");
        assert!(r.status().is_success(), "{}", r.status());
        // get_model (commented out in the gem, its fields documented).
        let m = wait_processed(&c, &model_url, &cookie).await;
        for field in ["name", "status", "snapshot", "content", "created", "updated"] {
            assert!(m[field].is_string(), "{field} in {m}");
        }
        assert_eq!(m["analyses.manifold"], true, "a cube is a closed volume");
        assert_eq!(m["analyses"]["manifold"], true);
        assert_eq!((m["parents"].clone(), m["children"].clone()), (json!([]), json!([])));
        // Print.create_token: print_value 42 and partner_job_id 43 as
        // numbers, the model URI with its trailing slash; reads
        // X-Token-Location from a 201.
        let body = json!({"api_key": api_key, "model": model_url, "receiver_email": "example@example.com", "print_value": 42, "print_value_currency": "EUR", "partner_job_id": 43});
        let r = ruby(c.post(format!("{base}/token/"))).json(&body).send().await.expect("token");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(header(&r, "x-token-location").contains("/widget?token="));
        let t: Value = r.json().await.expect("json");
        assert_eq!((t["partner_job_id"].as_str(), t["print_value"].to_string().as_str()), (Some("43"), "42"));
        // ...and without the trailing slash, and as a bare id.
        let trimmed = model_url.trim_end_matches('/').to_string();
        let id = trimmed.rsplit('/').next().expect("id").to_string();
        for reference in [trimmed, id] {
            let body = json!({"api_key": api_key, "model": reference, "print_value": "1.00"});
            let r = ruby(c.post(format!("{base}/token"))).json(&body).send().await.expect("token");
            assert_eq!(r.status(), StatusCode::CREATED, "{reference}");
        }
        // A partner_job_id that is neither is refused with a clear error.
        let body = json!({"api_key": api_key, "model": model_url, "partner_job_id": {"a": 1}});
        let r = ruby(c.post(format!("{base}/token/"))).json(&body).send().await.expect("token");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    });
}

#[test]
fn nebumind_python_api_tokens_as_basic_form_models_and_204_uploads() {
    let s = serve(&[]);
    let p = partner(&s.data, "Nebu Shop");
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        // _init_session: JSON with an explicit content-type; the cookie is
        // the part of Set-Cookie before the first ';'.
        let body = json!({"username": p["username"], "password": p["password"]});
        let r = python(c.post(format!("{base}/sessions/")))
            .header("content-type", "application/json")
            .json(&body)
            .send()
            .await
            .expect("session");
        r.error_for_status_ref().expect("2xx");
        let cookie = header(&r, "set-cookie").split(';').next().expect("pair").to_string();
        // _get_api_key: POST /api_tokens/ {name} with the cookie.
        let r = python(c.post(format!("{base}/api_tokens/")))
            .header("content-type", "application/json")
            .header("cookie", &cookie)
            .json(&json!({"name": "create-bureau"}))
            .send()
            .await
            .expect("api token");
        assert!(r.status().is_success());
        let auth: Value = r.json().await.expect("json");
        let (uuid, secret) = (
            auth["uuid"].as_str().expect("uuid").to_string(),
            auth["secret"].as_str().expect("secret").to_string(),
        );
        assert_eq!(auth["name"], "create-bureau");
        // post_and_upload: a form body with Basic auth; must be 201.
        let r = python(c.post(format!("{base}/model/")))
            .basic_auth(&uuid, Some(&secret))
            .header("content-type", FORM)
            .body("name=cube.stl&type=stl")
            .send()
            .await
            .expect("model");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "x-ignored-fields"), "type", "what is not implemented is said");
        let (uri, upload) = (header(&r, "location"), header(&r, "x-upload-location"));
        // The upload must answer exactly 204.
        let r = python(c.put(&upload))
            .basic_auth(&uuid, Some(&secret))
            .header("content-type", "application/octet-stream")
            .body(cube.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&r, "etag"), format!("\"{}\"", strata_core::stream::sha256_hex(&cube)));
        // get_by_url with Basic: size, surface_area_mm, volume_mm,
        // snapshot_content, against trimesh's values in the manifest.
        let mut m = Value::Null;
        for _ in 0..600 {
            m = python(c.get(&uri))
                .basic_auth(&uuid, Some(&secret))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if m["snapshot_content"].is_string() {
                break;
            }
            assert!(m["size"].is_object(), "size is an object even before processing: {m}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rows = crate::util::manifest(&crate::util::repo_datasets());
        let row =
            rows.iter().find(|r| r.file() == "numpystl_cube_binary_solidheader.stl").expect("the cube's row");
        let (lo, hi) = (row.triple("bbox_min"), row.triple("bbox_max"));
        for (i, axis) in ["x", "y", "z"].iter().enumerate() {
            assert!((m["size"][axis].as_f64().expect("size") - (hi[i] - lo[i])).abs() < 1e-6, "{m}");
        }
        assert!((m["surface_area_mm"].as_f64().expect("area") - row.f64("tm_area")).abs() < 1e-6);
        assert!((m["volume_mm"].as_f64().expect("volume") - row.f64("tm_volume")).abs() < 1e-6);
        // list(url, filters) sends the filters as a form body on a GET.
        let listed: Value = python(c.get(format!("{base}/model/")))
            .basic_auth(&uuid, Some(&secret))
            .header("content-type", FORM)
            .body("name=cube*")
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(listed["resources"][0]["uri"].as_str(), Some(uri.as_str()));
        // The API token works on every partner route instead of a cookie.
        let body = json!({"model": uri, "print_value": "3.50"});
        let r = c
            .post(format!("{base}/token/"))
            .basic_auth(&uuid, Some(&secret))
            .json(&body)
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), StatusCode::CREATED);
        let token = r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
        let r = c
            .get(format!("{base}/token/{token}/"))
            .basic_auth(&uuid, Some(&secret))
            .send()
            .await
            .expect("read");
        assert_eq!(r.status(), StatusCode::OK);
        // A wrong secret, and a revoked token, are 401 with a Basic challenge.
        let r = c.get(&uri).basic_auth(&uuid, Some("wrong")).send().await.expect("wrong");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(header(&r, "www-authenticate").starts_with("Basic"));
        let listing: Value = get_json_as(&c, &format!("{base}/api_tokens/"), &cookie).await;
        assert_eq!(listing["resources"][0]["uuid"].as_str(), Some(uuid.as_str()));
        assert!(listing["resources"][0].get("secret").is_none(), "the secret is shown once");
        let r = c
            .delete(format!("{base}/api_tokens/{uuid}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = c.get(&uri).basic_auth(&uuid, Some(&secret)).send().await.expect("revoked");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Another partner's token never reaches this partner's models.
        let other = partner(&s.data, "Other Shop");
        let other_cookie = login(&c, base, &other).await;
        let r = c
            .post(format!("{base}/api_tokens/"))
            .header("cookie", &other_cookie)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .expect("token");
        let o: Value = r.json().await.expect("json");
        let r = c
            .get(&uri)
            .basic_auth(o["uuid"].as_str().expect("u"), o["secret"].as_str())
            .send()
            .await
            .expect("other");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    });
}

#[test]
fn erikkvale_python_auto_align_and_locations_in_the_body() {
    let s = serve(&[]);
    let p = partner(&s.data, "Tutorial Shop");
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        // session.post(url='.../model', json={'auto-align': False, 'name': ...})
        let r = python(c.post(format!("{base}/model")))
            .header("cookie", &cookie)
            .json(&json!({"auto-align": false, "name": "demo model"}))
            .send()
            .await
            .expect("model");
        assert_eq!(r.status(), StatusCode::CREATED, "auto-align is accepted");
        assert_eq!(header(&r, "x-ignored-fields"), "auto-align");
        let created: Value = r.json().await.expect("json");
        let unpacked = &created["resources"][0];
        let (model_url, upload_url) =
            (unpacked["uri"].as_str().expect("uri"), unpacked["upload-location"].as_str().expect("upload"));
        let r = python(c.put(upload_url))
            .header("content-type", "application/octet-stream")
            .body(cube)
            .send()
            .await
            .expect("put");
        assert!(r.status().is_success());
        // _wait_on_status(session, model_url, ('error', 'processed'))
        let m = wait_processed(&c, model_url, &cookie).await;
        assert_eq!(m["status"], "processed");
    });
}

#[test]
fn model_lists_filter_sort_and_page_the_3diax_way() {
    let s = serve(&[]);
    let p = partner(&s.data, "List Shop");
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (first, _) = upload_model(&c, base, &cookie, cube.clone()).await;
        // Models named as clients name them, one derived from the first.
        let parent = format!("{base}/model/{first}/");
        for (name, parents) in [("Bracket A", json!([])), ("bracket b", json!([parent])), ("Gear", json!([]))]
        {
            let r = c
                .post(format!("{base}/model/"))
                .header("cookie", &cookie)
                .json(&json!({"name": name, "parents": parents}))
                .send()
                .await
                .expect("model");
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let list = |q: &str| {
            let c = c.clone();
            let (url, cookie) = (format!("{base}/model/?{q}"), cookie.clone());
            async move { get_json_as(&c, &url, &cookie).await }
        };
        let names = |v: &Value| -> Vec<String> {
            v["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .map(|m| m["name"].as_str().expect("name").to_string())
                .collect()
        };
        assert_eq!(names(&list("name=*bracket*").await), ["bracket b", "Bracket A"]);
        assert_eq!(names(&list("name=bracket").await).len(), 2, "a part of the name");
        assert_eq!(names(&list("name=gear*&status=not-uploaded").await), ["Gear"]);
        // sort=+status,-name as written: the '+' arrives as a space.
        assert_eq!(
            names(&list("sort=+status,-name").await),
            ["Gear", "bracket b", "Bracket A", "Authentise logo"]
        );
        assert_eq!(names(&list("sort=%2Bname").await), ["Authentise logo", "Bracket A", "bracket b", "Gear"]);
        let page = list("sort=name&per_page=3").await;
        assert_eq!(page["meta"]["count"], 4);
        assert_eq!(page["meta"]["pages"], 2);
        let next = page["links"]["next"].as_str().expect("next");
        assert!(page["links"]["prev"].is_null());
        let second = get_json_as(&c, next, &cookie).await;
        assert_eq!(names(&second), ["Gear"]);
        assert!(second["links"]["next"].is_null());
        let r = c
            .get(format!("{base}/model/?sort=size"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("bad sort");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "invalid_sort");
        // Lineage: the child names its parent, the parent its child.
        let child = list("name=bracket+b").await["resources"][0].clone();
        assert_eq!(child["parents"], json!([parent]));
        let p_model = get_json_as(&c, &parent, &cookie).await;
        assert_eq!(p_model["children"], json!([child["uri"]]));
        // The OpenAPI document names both.
        let spec: Value =
            c.get(format!("{base}/openapi.json")).send().await.expect("spec").json().await.expect("json");
        for path in [
            "/model/",
            "/models",
            "/model/{id}/",
            "/models/{id}",
            "/token/",
            "/tokens",
            "/token/{token}/",
            "/tokens/{token}",
            "/users/",
            "/api_tokens/",
            "/model/{id}/snapshot/{snapshot}/",
        ] {
            assert!(spec["paths"][path].is_object(), "{path} is not in /openapi.json");
        }
        // Strata's first listing keeps its shape.
        let old = get_json_as(&c, &format!("{base}/models?name=gear"), &cookie).await;
        assert_eq!(old["models"][0]["name"], "Gear");
        assert_eq!(old["page"], 1);
    });
}

#[test]
fn snapshots_are_resources_with_a_json_status_and_a_png_content() {
    let s = serve(&[]);
    let p = partner(&s.data, "Snap Shop");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (id, _) = upload_model(&c, base, &cookie, crate::util::cube()).await;
        let r = c
            .post(format!("{base}/model/{id}/snapshot/"))
            .header("cookie", &cookie)
            .json(&json!({"view": "top", "width": 96, "height": 64}))
            .send()
            .await
            .expect("snapshot");
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = header(&r, "location");
        assert!(location.contains(&format!("/model/{id}/snapshot/")), "{location}");
        let mut snap = Value::Null;
        for _ in 0..600 {
            snap = get_json_as(&c, &location, &cookie).await;
            if snap["status"] != "processing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(snap["status"], "processed", "{snap}");
        let png = c.get(snap["content"].as_str().expect("content")).send().await.expect("png");
        assert_eq!(png.headers()["content-type"], "image/png");
        let bytes = png.bytes().await.expect("bytes");
        let info = png::Decoder::new(std::io::Cursor::new(&bytes[..])).read_info().expect("a PNG");
        assert_eq!((info.info().width, info.info().height), (96, 64));
        // A form body works too; a bad view or size is a clear error.
        let r = c
            .post(format!("{base}/model/{id}/snapshot"))
            .header("cookie", &cookie)
            .header("content-type", FORM)
            .body("camera=front&size=32")
            .send()
            .await
            .expect("form");
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = c
            .post(format!("{base}/model/{id}/snapshot/"))
            .header("cookie", &cookie)
            .json(&json!({"view": "under"}))
            .send()
            .await
            .expect("bad");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = c
            .post(format!("{base}/model/{id}/snapshot/"))
            .header("cookie", &cookie)
            .json(&json!({"size": 5000}))
            .send()
            .await
            .expect("bad");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Another partner sees none of it.
        let other = partner(&s.data, "Other");
        let oc = login(&c, base, &other).await;
        assert_eq!(
            c.get(&location).header("cookie", &oc).send().await.expect("other").status(),
            StatusCode::NOT_FOUND
        );
        let r = c
            .post(format!("{base}/model/{id}/snapshot/"))
            .header("cookie", &oc)
            .json(&json!({}))
            .send()
            .await
            .expect("other");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    });
}

#[test]
fn sign_up_is_off_by_default_and_limited_per_address() {
    let closed = serve(&[]);
    let open = serve(&["--allow-signup", "--signups-per-hour", "2"]);
    rt().block_on(async {
        let c = client();
        let user = |n: u32| json!({"username": format!("user{n}"), "email": "a@b.example", "name": "A", "password": "long enough"});
        let r = c.post(format!("{}/users/", closed.base)).json(&user(0)).send().await.expect("closed");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "signup_disabled");
        let base = &open.base;
        let r = c.post(format!("{base}/users/")).json(&json!({"username": "x y", "email": "a@b.example", "name": "A", "password": "long enough"})).send().await.expect("bad");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(c.post(format!("{base}/users/")).json(&user(1)).send().await.expect("1").status(), StatusCode::CREATED);
        assert_eq!(c.post(format!("{base}/users/")).json(&user(1)).send().await.expect("dup").status(), StatusCode::CONFLICT);
        let r = c.post(format!("{base}/users/")).json(&user(2)).send().await.expect("3");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(header(&r, "retry-after").parse::<u64>().is_ok_and(|s| s > 0 && s <= 3600));
    });
}

/// A legacy call's JSON, after checking it answered HTTP 200 as the old
/// service always did.
async fn legacy(r: reqwest::RequestBuilder) -> Value {
    let r = r.send().await.expect("legacy call");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

#[test]
fn api3_clients_parameters_every_way_and_errors_in_the_real_envelope() {
    let s = serve(&[]);
    let p = partner(&s.data, "Legacy Shop");
    let key = p["api_key"].as_str().expect("key").to_string();
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let api = |call: &str| format!("{base}/api3/{call}");
        // authentise_create_token: requests.get(url, data={'api_key': KEY}),
        // a form body on a GET.
        let created = legacy(python(c.get(api("api_create_partner_token"))).header("content-type", FORM).body(format!("api_key={key}"))).await;
        assert_eq!(created["status"]["code"], "ok");
        let token = created["data"]["token"].as_str().expect("token").to_string();
        // Also POSTed as a form, and GET with the key as an Api-Key header
        // (RestClient.get(url, api_key: key) sends it so).
        let posted = legacy(c.post(api("api_create_partner_token")).header("content-type", FORM).body(format!("api_key={key}"))).await;
        assert_eq!(posted["status"]["code"], "ok");
        let header_key = legacy(ruby(c.get(api("api_create_partner_token"))).header("api-key", &key)).await;
        assert_eq!(header_key["status"]["code"], "ok");
        // The recorded answer for a token with no print yet, byte for byte.
        let status_url = format!("{}?api_key={key}&token={token}", api("api_get_partner_print_status"));
        let r = ruby(c.get(&status_url)).send().await.expect("status");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.text().await.expect("body"),
            r#"{"status":{"code":"error","description":"System error","extended_description":"token does not have print order associated\n"}}"#
        );
        // Every other error: 200, the envelope, no data (a client checks
        // 'data' not in resp), a reason ending in a newline.
        let other_token = legacy(c.get(format!("{}?api_key={key}", api("api_create_partner_token")))).await["data"]["token"].as_str().expect("t").to_string();
        let revoke = c.delete(format!("{base}/token/{other_token}/?api_key={key}")).send().await.expect("revoke");
        assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
        for (query, reason) in [
            (format!("api_key={key}&token={}", "0".repeat(32)), "token does not exist\n"),
            (format!("api_key=nope&token={token}"), "invalid api_key\n"),
            (format!("token={token}"), "api_key is required\n"),
            (format!("api_key={key}"), "token is required\n"),
            (format!("api_key={key}&token={other_token}"), "token has been revoked\n"),
        ] {
            let e = legacy(c.get(format!("{}?{query}", api("api_get_partner_print_status")))).await;
            assert_eq!(e["status"]["code"], "error", "{query}");
            assert_eq!(e["status"]["description"], "System error");
            assert_eq!(e["status"]["extended_description"], reason, "{query}");
            assert!(e.get("data").is_none());
        }
        // authentise_upload_stl: requests.post(url, data=payload,
        // files={'stl_file': f}): the fields first, then the file.
        let fields = [("api_key", key.as_str()), ("token", token.as_str()), ("receiver_email", "ann@example.com"), ("print_value", "12.5"), ("print_value_currency", "USD")];
        let body = multipart("4f1c0f6b2a7e4c1d9b3a", &fields, &cube);
        let done = legacy(python(c.post(api("api_upload_partner_stl"))).header("content-type", "multipart/form-data; boundary=4f1c0f6b2a7e4c1d9b3a").body(body)).await;
        assert_eq!(done["status"]["code"], "ok", "{done}");
        assert!(done["data"]["ssl_token_link"].as_str().is_some_and(|l| l.ends_with(&token)));
        // A form without a file: the reason, in the envelope.
        let e = legacy(c.post(api("api_upload_partner_stl")).header("content-type", FORM).body(format!("api_key={key}&token={other_token}&receiver_email=a%40b.example&print_value=1&stl_file="))).await;
        assert_eq!(e["status"]["extended_description"], "token has been revoked\n");
        // Once a printer reports, Ruby's get_status reads
        // printing_job_status_name.downcase; the Store compares == 'SUCCESS'.
        for _ in 0..600 {
            if c.get(format!("{base}/streams/{token}/manifest")).send().await.expect("m").status() == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (status, pct) in [("WARMING_UP", 0.0), ("PRINTING", 20.0), ("SUCCESS", 100.0)] {
            let r = c.post(format!("{base}/prints/{token}/status")).json(&json!({"printing_job_status": status, "printing_percentage": pct})).send().await.expect("report");
            assert_eq!(r.status(), StatusCode::OK);
            let data = legacy(ruby(c.get(&status_url)))
                .await["data"]
                .clone();
            assert_eq!(data["printing_job_status_name"].as_str().map(str::to_lowercase), Some(status.to_lowercase()));
            assert_eq!(data["printing_job_status"], status);
            assert_eq!(data["printing_percentage"], pct);
        }
    });
}

/// `/openapi.json` cannot drift from the routes: every path and method it
/// lists (under both names) reaches a route of the server; none is
/// answered by the router's "no such route" or 405.
#[test]
fn every_path_in_the_openapi_document_is_served() {
    let s = serve(&[]);
    rt().block_on(async {
        let c = client();
        let spec: Value =
            c.get(format!("{}/openapi.json", s.base)).send().await.expect("spec").json().await.expect("json");
        let paths = spec["paths"].as_object().expect("paths");
        assert!(paths.len() >= 40, "{} paths", paths.len());
        for (path, item) in paths {
            let concrete = path
                .replace("{token}", &"0".repeat(32))
                .replace("{index}", "0")
                .replace("{id}", "00000000-0000-4000-8000-000000000000")
                .replace("{snapshot}", "00000000-0000-4000-8000-000000000001");
            for method in ["get", "post", "put", "delete"] {
                if item.get(method).is_none() {
                    continue;
                }
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let r = c.request(m, format!("{}{concrete}", s.base)).send().await.expect("request");
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no such route"),
                    "{method} {path} is documented but not served: {status} {body}"
                );
            }
        }
    });
}
