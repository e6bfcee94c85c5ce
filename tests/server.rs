//! `strata serve` end to end over real HTTP on loopback: the binary is
//! started on port 0 with a fresh data directory, and every call goes
//! through reqwest.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{run, strata};

/// A running `strata serve`, killed on drop.
pub(crate) struct Served {
    child: std::process::Child,
    pub(crate) base: String,
    _dir: Option<tempfile::TempDir>,
    pub(crate) data: std::path::PathBuf,
}

impl Served {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(extra: &[&str]) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut served = serve_in(&data, extra);
    served._dir = Some(dir);
    served
}

/// `strata serve` on an existing data directory (to restart a server on
/// what a killed one left).
pub(crate) fn serve_in(data: &Path, extra: &[&str]) -> Served {
    let data = data.to_path_buf();
    let mut child = strata()
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data.to_str().expect("utf-8")])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("first line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Served { child, base, _dir: None, data }
}

pub(crate) fn partner(data: &Path, name: &str) -> Value {
    let out = run(&[
        "admin",
        "create-partner",
        name,
        "--email",
        "ops@shop.example",
        "--data",
        data.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

/// GET `url` and parse the answer as JSON.
pub(crate) async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    c.get(url).send().await.expect("GET").json().await.expect("JSON")
}

/// GET `url` with the session `cookie`: the JSON of a 2xx answer.
pub(crate) async fn get_json_as(c: &reqwest::Client, url: &str, cookie: &str) -> Value {
    let r = c.get(url).header("cookie", cookie).send().await.expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.expect("JSON")
}

/// POST /model/ with `body`: (Location, X-Upload-Location, the created
/// model), after checking that it was created.
pub(crate) async fn create_model(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    body: Value,
) -> (String, String, Value) {
    let r =
        c.post(format!("{base}/model/")).header("cookie", cookie).json(&body).send().await.expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ascii").to_string();
    let upload = r.headers()["x-upload-location"].to_str().expect("ascii").to_string();
    (location, upload, r.json().await.expect("json"))
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

pub(crate) async fn login(c: &reqwest::Client, base: &str, p: &Value) -> String {
    let r = c
        .post(format!("{base}/sessions"))
        .json(&json!({"username": p["username"], "password": p["password"]}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()["set-cookie"].to_str().expect("ascii").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().expect("pair").to_string()
}

/// Creates and uploads a model; returns its id once processed.
pub(crate) async fn upload_model(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    bytes: Vec<u8>,
) -> (String, Value) {
    upload_model_with_callback(c, base, cookie, bytes, json!({"url": "", "method": "POST"})).await
}

/// [`upload_model`] with a callback.
pub(crate) async fn upload_model_with_callback(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    bytes: Vec<u8>,
    callback: Value,
) -> (String, Value) {
    let (location, upload, created) =
        create_model(c, base, cookie, json!({"name": "Authentise logo", "callback": callback})).await;
    assert_eq!(created["status"], "not-uploaded");
    assert!(location.ends_with(&format!("/model/{}/", created["id"].as_str().expect("id"))), "{location}");
    let sha = strata_core::stream::sha256_hex(&bytes);
    let r = c
        .put(&upload)
        .header("content-type", "application/octet-stream")
        .header("x-content-sha256", &sha)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    // The server hashed the body as it streamed in, and agrees.
    assert_eq!(r.headers().get("x-content-sha256").and_then(|v| v.to_str().ok()), Some(sha.as_str()));
    // 204 as S3-style upload URLs answer, with the digest as the ETag.
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(r.headers().get("etag").and_then(|v| v.to_str().ok()), Some(format!("\"{sha}\"").as_str()));
    let id = created["id"].as_str().expect("id").to_string();
    for _ in 0..600 {
        let m = get_json_as(c, &location, cookie).await;
        if m["status"] != "processing" {
            return (id, m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("model never finished processing");
}

#[test]
fn the_whole_flow_upload_token_stream_and_status() {
    let s = serve(&[]);
    let p = partner(&s.data, "Print Shop");
    assert_eq!(p["api_key"].as_str().map(str::len), Some(32));
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        assert_eq!(c.get(format!("{base}/healthz")).send().await.expect("health").status(), StatusCode::OK);
        let cookie = login(&c, base, &p).await;
        let (id, model) = upload_model(&c, base, &cookie, cube.clone()).await;
        assert_eq!(model["status"], "processed", "{model}");
        assert_eq!(model["validation"]["is_volume"], true, "{model}");
        assert_eq!(model["sha256"].as_str(), Some(strata_core::stream::sha256_hex(&cube).as_str()));
        // The snapshot is a PNG; the content is the STL.
        let snap = c.get(format!("{base}/models/{id}/snapshot")).header("cookie", &cookie).send().await.expect("snap");
        assert_eq!(snap.headers()["content-type"], "image/png");
        assert_eq!(&snap.bytes().await.expect("png")[1..4], b"PNG");
        let big = c.get(format!("{base}/models/{id}/snapshot?view=top&size=64")).header("cookie", &cookie).send().await.expect("snap");
        assert_eq!(big.status(), StatusCode::OK);
        let png = big.bytes().await.expect("png");
        let info = png::Decoder::new(std::io::Cursor::new(&png[..])).read_info().expect("png");
        assert_eq!((info.info().width, info.info().height), (64, 64));

        // A token: exact money, currency default, X-Token-Location.
        let r = c.post(format!("{base}/tokens")).json(&json!({"api_key": p["api_key"], "receiver_email": "ann@example.com", "model": model["uri"], "print_value": 10.56, "partner_job_id": "job-123"})).send().await.expect("token");
        assert_eq!(r.status(), StatusCode::CREATED);
        let widget = r.headers()["x-token-location"].to_str().expect("ascii").to_string();
        let t: Value = r.json().await.expect("json");
        let token = t["token"].as_str().expect("token").to_string();
        assert!(widget.ends_with(&format!("/widget?token={token}")));
        assert_eq!(t["print_value"].to_string(), "10.56");
        assert_eq!(t["print_value_currency"], "USD");

        // The printer pulls the manifest and every chunk, checking hashes.
        let manifest: Value = c.get(format!("{base}/streams/{token}/manifest")).send().await.expect("m").json().await.expect("json");
        assert_eq!(manifest["model_sha256"], model["sha256"]);
        for (i, chunk) in manifest["chunks"].as_array().expect("chunks").iter().enumerate() {
            let r = c.get(format!("{base}/streams/{token}/chunks/{i}")).send().await.expect("chunk");
            assert_eq!(r.status(), StatusCode::OK);
            let etag = r.headers()["etag"].to_str().expect("ascii").to_string();
            assert!(r.headers()["cache-control"].to_str().expect("ascii").contains("immutable"));
            let bytes = r.bytes().await.expect("bytes");
            assert_eq!(strata_core::stream::sha256_hex(&bytes), chunk["sha256"].as_str().expect("sha"));
            assert_eq!(etag, format!("\"{}\"", chunk["sha256"].as_str().expect("sha")));
            // Resume: a range gives the tail; a cached copy gets 304.
            let r = c.get(format!("{base}/streams/{token}/chunks/{i}")).header("range", "bytes=10-").send().await.expect("range");
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.bytes().await.expect("tail"), bytes.slice(10..));
            let r = c.get(format!("{base}/streams/{token}/chunks/{i}")).header("range", format!("bytes={}-", bytes.len())).send().await.expect("range");
            assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(r.headers()["content-range"], format!("bytes */{}", bytes.len()).as_str());
            let r = c.get(format!("{base}/streams/{token}/chunks/{i}")).header("if-none-match", &etag).send().await.expect("304");
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        }
        let r = c.get(format!("{base}/streams/{token}/chunks/999")).send().await.expect("404");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c.get(format!("{base}/streams/{}/manifest", "0".repeat(32))).send().await.expect("404");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // Status: the machine, with 409 naming what is allowed.
        let post = |body: Value| c.post(format!("{base}/prints/{token}/status")).json(&body).send();
        let r = post(json!({"printing_job_status": "SUCCESS"})).await.expect("status");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], "illegal_transition");
        assert_eq!(e["error"]["allowed"], json!(["WARMING_UP"]));
        assert_eq!(post(json!({"printing_job_status": "WARMING_UP", "printer_model": "MK4"})).await.expect("s").status(), StatusCode::OK);
        let r = post(json!({"printing_job_status": "PRINTING", "printing_percentage": 42.0, "minutes_left": 30})).await.expect("s");
        assert_eq!(r.status(), StatusCode::OK);
        let now: Value = r.json().await.expect("json");
        assert_eq!(now["printing_job_status_name"], "PRINTING");
        assert_eq!(post(json!({"printing_job_status": "PRINTING", "printing_percentage": 142.0})).await.expect("s").status(), StatusCode::UNPROCESSABLE_ENTITY);

        // The partner reads it back: ETag, Retry-After, then 304.
        let r = c.get(format!("{base}/tokens/{token}")).header("cookie", &cookie).send().await.expect("read");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["retry-after"], "5");
        let etag = r.headers()["etag"].to_str().expect("ascii").to_string();
        let read: Value = r.json().await.expect("json");
        assert_eq!(read["printing_percentage"], 42.0);
        assert_eq!(read["printer_model"], "MK4");
        let r = c.get(format!("{base}/tokens/{token}")).header("cookie", &cookie).header("if-none-match", &etag).send().await.expect("read");
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(post(json!({"printing_job_status": "SUCCESS", "printing_percentage": 100.0})).await.expect("s").status(), StatusCode::OK);
        assert_eq!(post(json!({"printing_job_status": "CONFIRMED_SUCCESS"})).await.expect("s").status(), StatusCode::OK);
        let r = post(json!({"printing_job_status": "PRINTING"})).await.expect("s");
        assert_eq!(r.status(), StatusCode::CONFLICT, "final");

        // The legacy status call sees the same, in its envelope.
        let legacy: Value = c.get(format!("{base}/api3/api_get_partner_print_status?api_key={}&token={token}", p["api_key"].as_str().expect("key"))).send().await.expect("legacy").json().await.expect("json");
        assert_eq!(legacy["status"]["code"], "ok");
        assert_eq!(legacy["data"]["printing_job_status"], "CONFIRMED_SUCCESS");
        assert_eq!(legacy["data"]["printing_job_status_name"], "CONFIRMED_SUCCESS");

        // Popularity counters.
        let m = get_json_as(&c, &format!("{base}/models/{id}"), &cookie).await;
        assert_eq!(m["popularity"]["tokens_created"], 1);
        assert_eq!(m["popularity"]["streams_pulled"], 1);

        // The widget page for the token, and for an unknown one.
        let page = c.get(&widget).send().await.expect("widget");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.expect("html").contains("Authentise logo"));
        let gone = c.get(format!("{base}/widget?token=nope")).send().await.expect("widget");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);

        // Logging out ends the session on the server.
        let r = c.delete(format!("{base}/sessions/current")).header("cookie", &cookie).send().await.expect("logout");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = c.get(format!("{base}/models/{id}")).header("cookie", &cookie).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    });
}

#[test]
fn partners_never_see_each_others_models_or_tokens() {
    let s = serve(&[]);
    let a = partner(&s.data, "Shop A");
    let b = partner(&s.data, "Shop B");
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let ca = login(&c, base, &a).await;
        let cb = login(&c, base, &b).await;
        let (id, model) = upload_model(&c, base, &ca, cube).await;
        for path in [format!("/models/{id}"), format!("/models/{id}/snapshot"), format!("/models/{id}/content")] {
            let r = c.get(format!("{base}{path}")).header("cookie", &cb).send().await.expect("get");
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(!r.text().await.expect("body").contains(&id));
        }
        let list = get_json_as(&c, &format!("{base}/models"), &cb).await;
        assert_eq!(list["models"], json!([]));
        // B's key cannot make a token for A's model.
        let r = c.post(format!("{base}/tokens")).json(&json!({"api_key": b["api_key"], "model": model["uri"], "print_value": "1.00"})).send().await.expect("token");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c.post(format!("{base}/tokens")).json(&json!({"api_key": a["api_key"], "model": model["uri"], "print_value": "1.00", "receiver_email": "ann@example.com"})).send().await.expect("token");
        let token = r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
        let r = c.get(format!("{base}/tokens/{token}")).header("cookie", &cb).send().await.expect("read");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // The legacy API answers errors with 200 and its error envelope.
        let r = c.get(format!("{base}/api3/api_get_partner_print_status?api_key={}&token={token}", b["api_key"].as_str().expect("key"))).send().await.expect("legacy");
        assert_eq!(r.headers()["x-strata-error"], "not_found");
        assert_eq!(r.json::<Value>().await.expect("json")["status"]["code"], "error");
    });
}

#[test]
fn bad_requests_get_json_errors_with_codes() {
    let s = serve(&["--upload-limit-mib", "1"]);
    let p = partner(&s.data, "Shop");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let code = |v: Value| v["error"]["code"].as_str().map(str::to_string);
        let r = c.get(format!("{base}/no/such/route")).send().await.expect("404");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.headers().contains_key("x-request-id"));
        assert_eq!(code(r.json().await.expect("json")).as_deref(), Some("not_found"));
        let r = c
            .post(format!("{base}/sessions"))
            .json(&json!({"username": p["username"], "password": "wrong"}))
            .send()
            .await
            .expect("403");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(code(r.json().await.expect("json")).as_deref(), Some("invalid_credentials"));
        let r = c
            .post(format!("{base}/sessions"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("400");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(code(r.json().await.expect("json")).as_deref(), Some("malformed_json"));
        let r = c
            .post(format!("{base}/sessions"))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .expect("415");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let r = c
            .post(format!("{base}/sessions"))
            .header("content-type", "application/json")
            .body(vec![b' '; 100_000])
            .send()
            .await
            .expect("413");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = c.get(format!("{base}/models")).send().await.expect("401");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let spec: Value =
            c.get(format!("{base}/openapi.json")).send().await.expect("spec").json().await.expect("json");
        assert!(spec["paths"]["/streams/{token}/chunks/{index}"].is_object());

        let cookie = login(&c, base, &p).await;
        let (_, upload, _) = create_model(&c, base, &cookie, json!({"name": "x"})).await;
        // Tampered signature, over the limit: refused, and the model can
        // still be uploaded after. (Any content type is taken: the bytes
        // are read by their content, and Ruby's Net::HTTP labels a PUT
        // body as a form.)
        let last = if upload.ends_with('0') { '1' } else { '0' };
        let tampered = format!("{}{last}", &upload[..upload.len() - 1]);
        let r = c
            .put(&tampered)
            .header("content-type", "application/octet-stream")
            .body("solid")
            .send()
            .await
            .expect("403");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = client()
            .put(&upload)
            .header("content-type", "application/octet-stream")
            .body(vec![0u8; 2 * 1024 * 1024])
            .send()
            .await;
        // The server may answer 413 before reading it all (or close); it
        // then closes the connection, so the unread rest of the body is
        // never taken for a next request.
        if let Ok(r) = r {
            assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(r.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
        }
        // A body that does not match the digest its sender computed is
        // refused and not kept; the model still takes a clean upload.
        let r = c
            .put(&upload)
            .header("content-type", "application/octet-stream")
            .header("x-content-sha256", "0".repeat(64))
            .body("solid nonsense")
            .send()
            .await
            .expect("422");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "digest_mismatch");
        // Garbage is accepted as an upload and ends as an error status.
        let r = c
            .put(&upload)
            .header("content-type", "application/octet-stream")
            .body("solid nonsense")
            .send()
            .await
            .expect("204");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = c
            .put(&upload)
            .header("content-type", "application/octet-stream")
            .body("again")
            .send()
            .await
            .expect("409");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let id = upload.split("/uploads/").nth(1).and_then(|s| s.split('?').next()).expect("id").to_string();
        let mut status = Value::Null;
        for _ in 0..200 {
            status = get_json_as(&c, &format!("{base}/models/{id}"), &cookie).await;
            if status["status"] != "processing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status["status"], "error", "{status}");
        assert!(status["error"]["code"].is_string());
        // A token for a model that is not processed is refused.
        let r = c
            .post(format!("{base}/tokens"))
            .json(&json!({"api_key": p["api_key"], "model": id, "print_value": 1}))
            .send()
            .await
            .expect("409");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        // Order fields on a processed model: each bad one named.
        let cube = crate::util::cube();
        let (good, _) = upload_model(&c, base, &cookie, cube).await;
        for (field, bad, want) in [
            ("print_value", json!(-1), "invalid_print_value"),
            ("print_value", json!(1e30), "invalid_print_value"),
            ("print_value_currency", json!("XYZ"), "invalid_currency"),
            ("receiver_email", json!("nope"), "invalid_email"),
        ] {
            let mut body = json!({"api_key": p["api_key"], "model": good, "print_value": "5.00"});
            body[field] = bad;
            let r = c.post(format!("{base}/tokens")).json(&body).send().await.expect("422");
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
            assert_eq!(code(r.json().await.expect("json")).as_deref(), Some(want), "{field}");
        }
        let r = c
            .post(format!("{base}/tokens"))
            .json(&json!({"api_key": "0".repeat(32), "model": good}))
            .send()
            .await
            .expect("403");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    });
}

#[test]
fn a_taken_port_is_a_clear_error_not_a_panic() {
    let s = serve(&[]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let out = run(&["serve", "--listen", &addr, "--data", s.data.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on") && !err.contains("panicked"), "{err}");
}

#[test]
fn a_half_sent_request_is_cut_off_by_the_header_timeout() {
    use std::io::{Read, Write};
    let s = serve(&[]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("half");
    slow.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    // Cut off by the 10 s header timeout: not held for ever, and not
    // refused at once either (which would prove nothing about the timer).
    let held = started.elapsed();
    assert!(held > Duration::from_secs(5) && held < Duration::from_secs(20), "held for {held:?}");
    assert!(
        buf.is_empty() || !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "the half request was served"
    );
}

#[test]
fn wrong_passwords_are_rate_limited_per_account() {
    let s = serve(&[]);
    let a = partner(&s.data, "Shop A");
    let b = partner(&s.data, "Shop B");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let try_login = |user: &Value, password: &str| {
            c.post(format!("{base}/sessions")).json(&json!({"username": user, "password": password})).send()
        };
        for i in 0..20 {
            let r = try_login(&a["username"], &format!("guess-{i}")).await.expect("login");
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "attempt {i}");
        }
        // The 21st, and even the right password, wait for the window.
        for password in ["guess-20", a["password"].as_str().expect("password")] {
            let r = try_login(&a["username"], password).await.expect("login");
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            let wait: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
            assert!((1..=61).contains(&wait), "retry-after {wait}");
            assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "too_many_attempts");
        }
        // Another account is not affected.
        let r = try_login(&b["username"], b["password"].as_str().expect("password")).await.expect("login");
        assert_eq!(r.status(), StatusCode::CREATED);
    });
}

#[test]
fn a_stalled_upload_is_dropped_and_the_model_can_be_uploaded_again() {
    use std::io::{Read, Write};
    let s = serve(&["--body-idle-timeout-secs", "2"]);
    let p = partner(&s.data, "Print Shop");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (location, upload, _) = create_model(&c, base, &cookie, json!({"name": "slow"})).await;
        let path = upload.trim_start_matches(base.as_str()).to_string();
        let addr = base.trim_start_matches("http://").to_string();
        // Ten bytes of a promised thousand, then silence: refused after the
        // configured 2 s, for an upload and for a small JSON body alike.
        let stall = |head: String| {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
                write!(slow, "{head}Content-Length: 1000\r\n\r\nsolid abcd").expect("send");
                slow.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
                let mut buf = Vec::new();
                let _ = slow.read_to_end(&mut buf);
                (String::from_utf8_lossy(&buf).into_owned(), started.elapsed())
            })
        };
        let json = stall("POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".into());
        let (answer, held) =
            stall(format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"))
                .await
                .expect("join");
        for (answer, held) in [(answer, held), json.await.expect("join")] {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("body_timeout"), "{answer}");
            assert!(held >= Duration::from_millis(1500) && held < Duration::from_secs(15), "held {held:?}");
        }
        // Nothing was kept: the model still waits for its upload, which works.
        let m = get_json_as(&c, &location, &cookie).await;
        assert_eq!(m["status"], "not-uploaded");
        assert_eq!(
            std::fs::read_dir(s.data.join("uploads")).map(|d| d.count()).unwrap_or(0),
            0,
            "a spool file stayed"
        );
        let cube = crate::util::cube();
        let r = c
            .put(&upload)
            .header("content-type", "application/octet-stream")
            .body(cube)
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    });
}

#[test]
fn one_address_cannot_hold_more_than_its_share_of_connections() {
    use std::io::Read;
    let s = serve(&["--max-connections-per-ip", "4"]);
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().expect("addr");
    let held: Vec<std::net::TcpStream> =
        (0..4).map(|_| std::net::TcpStream::connect(addr).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The fifth from the same address is closed at once.
    let mut fifth = std::net::TcpStream::connect(addr).expect("connect");
    fifth.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // Closed (EOF or reset), not merely silent until the read timeout.
    match fifth.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the fifth connection was not closed: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "closed only after {:?}", started.elapsed());
    // Another address (127.0.0.2 is loopback too) is still served.
    rt().block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
        let mut other = socket.connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        other.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
    // Once the first four go, the address is welcome again.
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let r = rt().block_on(async {
        client().get(format!("{}/healthz", s.base)).send().await.expect("health").status()
    });
    assert_eq!(r, StatusCode::OK);
}

#[test]
fn tokens_expire_run_out_of_prints_and_can_be_revoked() {
    let s = serve(&[]);
    let p = partner(&s.data, "Print Shop");
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (_, model) = upload_model(&c, base, &cookie, cube).await;
        let token = |extra: Value| {
            let mut body = json!({"api_key": p["api_key"], "model": model["uri"], "print_value": "1.00"});
            for (k, v) in extra.as_object().expect("object") {
                body[k] = v.clone();
            }
            let c = c.clone();
            async move {
                let r = c.post(format!("{base}/tokens")).json(&body).send().await.expect("token");
                assert_eq!(r.status(), StatusCode::CREATED);
                r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string()
            }
        };
        let manifest = |t: String| c.get(format!("{base}/streams/{t}/manifest")).send();

        // One print allowed (regression, issue 16): the printer that
        // started it resumes after a restart without using the token up,
        // and a second printer is refused, during the print and after.
        let once = token(json!({"print_limit": 1})).await;
        let as_printer = |id: &'static str, r: reqwest::RequestBuilder| r.header("x-printer-id", id);
        let report = |id: &'static str, status: &'static str| {
            let (c, once) = (c.clone(), once.clone());
            async move {
                let body = json!({"printing_job_status": status});
                as_printer(id, c.post(format!("{base}/prints/{once}/status")))
                    .json(&body)
                    .send()
                    .await
                    .expect("report")
            }
        };
        let pull = |id: &'static str| as_printer(id, c.get(format!("{base}/streams/{once}/manifest"))).send();
        assert_eq!(pull("printer-a").await.expect("m").status(), StatusCode::OK);
        assert_eq!(report("printer-a", "WARMING_UP").await.status(), StatusCode::OK);
        // Printer a restarts: it pulls the stream and warms up again.
        assert_eq!(pull("printer-a").await.expect("m").status(), StatusCode::OK);
        assert_eq!(report("printer-a", "WARMING_UP").await.status(), StatusCode::OK);
        assert_eq!(report("printer-a", "PRINTING").await.status(), StatusCode::OK);
        assert_eq!(pull("printer-a").await.expect("m").status(), StatusCode::OK);
        let r = pull("printer-b").await.expect("m");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "print_in_progress");
        let r = report("printer-b", "WARMING_UP").await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(report("printer-a", "SUCCESS").await.status(), StatusCode::OK);
        let r = pull("printer-b").await.expect("m");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "print_limit_reached");
        let r = report("printer-b", "WARMING_UP").await;
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "print_limit_reached");
        let t: Value = c
            .get(format!("{base}/tokens/{once}?api_key={}", p["api_key"].as_str().expect("key")))
            .send()
            .await
            .expect("t")
            .json()
            .await
            .expect("json");
        assert_eq!(t["prints_started"], 1, "the resumed print counted once");

        // Expired: gone for printers and the widget alike.
        let brief = token(json!({"expires_in": 1})).await;
        assert_eq!(manifest(brief.clone()).await.expect("m").status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(manifest(brief.clone()).await.expect("m").status(), StatusCode::NOT_FOUND);
        let w = c.get(format!("{base}/widget?token={brief}")).send().await.expect("widget");
        assert_eq!(w.status(), StatusCode::NOT_FOUND);

        // Revoked by its partner (not by another one): 404 from then on.
        let live = token(json!({})).await;
        let other = partner(&s.data, "Other Shop");
        let r = c
            .delete(format!("{base}/tokens/{live}?api_key={}", other["api_key"].as_str().expect("key")))
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(manifest(live.clone()).await.expect("m").status(), StatusCode::OK);
        let r =
            c.delete(format!("{base}/tokens/{live}")).header("cookie", &cookie).send().await.expect("revoke");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(manifest(live.clone()).await.expect("m").status(), StatusCode::NOT_FOUND);
        let r = c.get(format!("{base}/streams/{live}/chunks/0")).send().await.expect("chunk");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c
            .post(format!("{base}/prints/{live}/status"))
            .json(&json!({"printing_job_status": "WARMING_UP"}))
            .send()
            .await
            .expect("status");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    });
}

/// A multipart body with one file part, written by hand (as old clients do).
pub(crate) fn multipart(boundary: &str, fields: &[(&str, &str)], file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"stl_file\"; filename=\"cube.stl\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[test]
fn the_legacy_api_creates_a_token_takes_a_multipart_upload_and_streams_it() {
    let s = serve(&[]);
    let p = partner(&s.data, "Old Shop");
    let key = p["api_key"].as_str().expect("key").to_string();
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let created = get_json(&c, &format!("{base}/api3/api_create_partner_token?api_key={key}")).await;
        assert_eq!(created["status"]["code"], "ok", "{created}");
        let token = created["data"]["token"].as_str().expect("token").to_string();
        let upload = |fields: Vec<(&'static str, String)>, file: Vec<u8>| {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let body = multipart("strataBoundary42", &fields, &file);
            c.post(format!("{base}/api3/api_upload_partner_stl?api_key={key}&token={token}"))
                .header("content-type", "multipart/form-data; boundary=strataBoundary42")
                .body(body)
                .send()
        };
        // A missing field is an error in the legacy envelope, and keeps
        // the token free for a good upload.
        let r = upload(vec![("receiver_email", "ann@example.com".into())], cube.clone()).await.expect("post");
        assert_eq!(r.status(), StatusCode::OK);
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["status"]["code"], "error");
        assert!(
            e["status"]["extended_description"].as_str().is_some_and(|d| d.contains("print_value")),
            "{e}"
        );
        let fields =
            vec![("receiver_email", "ann@example.com".to_string()), ("print_value", "12.50".to_string())];
        let r = upload(fields.clone(), cube.clone()).await.expect("post");
        assert_eq!(r.status(), StatusCode::OK);
        let done: Value = r.json().await.expect("json");
        assert_eq!(done["status"]["code"], "ok");
        assert_eq!(done["data"]["token_link"], format!("{base}/widget?token={token}").as_str());
        // Once processed, the token streams the uploaded bytes' model.
        let mut manifest = Value::Null;
        for _ in 0..200 {
            let r = c.get(format!("{base}/streams/{token}/manifest")).send().await.expect("manifest");
            if r.status() == StatusCode::OK {
                manifest = r.json().await.expect("json");
                break;
            }
            assert_eq!(r.status(), StatusCode::CONFLICT, "still processing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(manifest["model_sha256"].as_str(), Some(strata_core::stream::sha256_hex(&cube).as_str()));
        // A second upload for the same token is refused.
        let again = upload(fields, cube).await.expect("post");
        assert_eq!(again.headers()["x-strata-error"], "already_uploaded");
        assert_eq!(again.json::<Value>().await.expect("json")["status"]["code"], "error");
    });
}
