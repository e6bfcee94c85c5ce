//! External service providers (seed 002) end to end: registration, account
//! links, signed requests, temporary credentials, completion reports, with
//! the reference provider as a second real process, and an attack test for
//! every rule (signatures, link tokens, signed URLs, tenants, SSRF).

use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{
    client, get_json_as, login, partner, rt, serve, upload_model, upload_model_with_callback,
};
use crate::util::{repo_datasets, strata};

fn holed_sphere() -> Vec<u8> {
    std::fs::read(repo_datasets().join("assimp_sphere_with_hole.stl")).expect("the sphere")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A provider stand-in on loopback: answers every request with `status`
/// and `body` (or never, when `status` is 0), and hands each request's
/// headers and body to the test.
pub(crate) fn stand_in(status: u16, body: &'static str) -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jobs", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut payload = vec![0; length];
            let _ = reader.read_exact(&mut payload);
            let _ = tx.send((head, payload));
            if status == 0 {
                held.push(stream);
                continue;
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, rx)
}

pub(crate) async fn register(c: &reqwest::Client, base: &str, cookie: &str, url: &str) -> (String, String) {
    let r = c
        .post(format!("{base}/service/"))
        .header("cookie", cookie)
        .json(&json!({"name": "FixMyPrint", "description": "repairs models", "type": "model-healing",
                      "service_url": url, "service_method": "POST"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ascii").to_string();
    let body: Value = r.json().await.expect("json");
    assert_eq!(location, body["uri"].as_str().expect("uri"));
    let secret = body["secret"].as_str().expect("the secret, once").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(&secret[6..]).expect("b64").len(), 32);
    (body["id"].as_str().expect("id").to_string(), secret)
}

/// Polls the job until its status is not one of `passing`.
pub(crate) async fn job_until(c: &reqwest::Client, uri: &str, cookie: &str, passing: &[&str]) -> Value {
    for _ in 0..600 {
        let j: Value = get_json_as(c, uri, cookie).await;
        if !passing.contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job stayed in {passing:?}");
}

pub(crate) async fn request_job(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    service: &str,
    model: &str,
) -> String {
    let r = c
        .post(format!("{base}/jobs/"))
        .header("cookie", cookie)
        .json(&json!({"service": format!("{base}/service/{service}/"), "model": format!("{base}/model/{model}/"), "options": {"quality": "high"}}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().expect("ascii").to_string();
    let j: Value = r.json().await.expect("json");
    assert_eq!(j["uri"], location.as_str());
    location
}

/// The Standard Webhooks signature, computed here with hmac (not the
/// server's code).
fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let key =
        base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).expect("key");
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    m.update(format!("{id}.{ts}.").as_bytes());
    m.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_reference_provider_refuses_an_unlinked_user_then_repairs_a_linked_users_model() {
    let served = serve(&["--allow-private-callbacks"]);
    let user = partner(&served.data, "Gareth");
    let owner = partner(&served.data, "FixMyPrint");
    let base = served.base.clone();
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &user).await;
        let owner_cookie = login(&c, &base, &owner).await;
        // The user's callbacks go to a closed port: the log shows what was sent.
        let hook = format!("http://127.0.0.1:{}/hook", free_port());
        let sphere = holed_sphere();
        let (model, parent) = upload_model_with_callback(
            &c,
            &base,
            &cookie,
            sphere.clone(),
            json!({"url": hook, "method": "POST"}),
        )
        .await;
        assert_eq!(parent["status"], "processed");
        let port = free_port();
        let service_url = format!("http://127.0.0.1:{port}/repair");
        let (service, secret) = register(&c, &base, &owner_cookie, &service_url).await;
        let mut provider = strata()
            .args([
                "provider",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--secret",
                &secret,
                "--server",
                &base,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("provider starts");
        let mut lines = std::io::BufReader::new(provider.stdout.take().expect("stdout")).lines();
        assert_eq!(lines.next().expect("a line").expect("utf-8"), service_url);

        // The registry, by type; the secret is never listed.
        let list: Value = get_json_as(&c, &format!("{base}/service/?type=model-healing"), &cookie).await;
        assert_eq!(list["services"][0]["id"], service.as_str());
        assert!(list["services"][0].get("secret").is_none());
        let none: Value = get_json_as(&c, &format!("{base}/v1/services?type=slicing"), &cookie).await;
        assert_eq!(none["services"], json!([]));

        // No linked account: the provider's refusal reaches the user.
        let job = request_job(&c, &base, &cookie, &service, &model).await;
        let refused = job_until(&c, &job, &cookie, &["queued", "sent"]).await;
        assert_eq!(refused["status"], "refused", "{refused}");
        assert_eq!(refused["problem"]["status"], 403);
        assert_eq!(refused["problem"]["title"], "Account link required");
        assert_eq!(refused["problem"]["registration"], format!("http://127.0.0.1:{port}/link-token"));

        // Link: a nonce from Strata, a token from the provider, posted back.
        let r = c
            .post(format!("{base}/service/{service}/link-requests"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("link request");
        assert_eq!(r.status(), StatusCode::CREATED);
        let req: Value = r.json().await.expect("json");
        assert_eq!(
            (req["audience"].as_str(), req["issuer"].as_str()),
            (Some(base.as_str()), Some(service.as_str()))
        );
        let token: Value = c
            .post(format!("http://127.0.0.1:{port}/link-token"))
            .json(&json!({"nonce": req["nonce"], "issuer": req["issuer"], "account": "gareth-42"}))
            .send()
            .await
            .expect("provider")
            .json()
            .await
            .expect("json");
        let link = |token: Value| {
            c.post(format!("{base}/service/{service}/links"))
                .header("cookie", &cookie)
                .json(&json!({"token": token}))
                .send()
        };
        let r = link(token["token"].clone()).await.expect("link");
        assert_eq!(r.status(), StatusCode::CREATED);
        let linked: Value = r.json().await.expect("json");
        assert_eq!(linked["account"], "gareth-42");
        let again = link(token["token"].clone()).await.expect("link");
        assert_eq!(again.status(), StatusCode::CONFLICT, "a link token counts once");

        // Linked: repaired by the provider, the result a child model.
        let job = request_job(&c, &base, &cookie, &service, &model).await;
        let done = job_until(&c, &job, &cookie, &["queued", "sent", "accepted", "running"]).await;
        assert_eq!(done["status"], "done", "{done}");
        let child_uri = done["result_model"].as_str().expect("result model").to_string();
        let mut child = Value::Null;
        for _ in 0..600 {
            child = get_json_as(&c, &child_uri, &cookie).await;
            if child["status"] != "processing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(child["status"], "processed", "{child}");
        assert_eq!(child["parents"], json!([format!("{base}/model/{model}/")]));
        assert_eq!(child["analyses"]["manifold"], true);
        // The provider repaired it: the result has no open edges from the
        // start, where the upload had its hole.
        assert!(parent["validation_before_repair"]["boundary_edges"].as_u64().unwrap_or(0) > 0, "{parent}");
        assert_eq!(child["validation_before_repair"]["boundary_edges"], 0, "{child}");
        assert_ne!(child["sha256"], parent["sha256"]);
        let parent_now: Value = get_json_as(&c, &format!("{base}/model/{model}/"), &cookie).await;
        assert_eq!(parent_now["children"], json!([child_uri]));

        // The user was told each end on the model's callback URL.
        let log: Value = get_json_as(&c, &format!("{base}/model/{model}/callbacks"), &cookie).await;
        let told: Vec<&str> = log["callbacks"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|d| d["body"]["event"] == "job.status")
            .filter_map(|d| d["body"]["status"].as_str())
            .collect();
        assert!(told.contains(&"refused") && told.contains(&"done"), "{log}");
        let _ = provider.kill();
        let _ = provider.wait();
        let logged: Vec<String> = lines.take(2).map_while(Result::ok).collect();
        assert!(logged.iter().any(|l| l.contains("refused")), "{logged:?}");
    });
}

#[test]
fn a_provider_that_never_answers_times_out_and_the_user_is_told() {
    let served = serve(&["--allow-private-callbacks", "--provider-timeout-secs", "2"]);
    let user = partner(&served.data, "Gareth");
    let base = served.base.clone();
    let (silent, requests) = stand_in(0, "");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &user).await;
        let hook = format!("http://127.0.0.1:{}/hook", free_port());
        let (model, _) = upload_model_with_callback(
            &c,
            &base,
            &cookie,
            crate::util::cube(),
            json!({"url": hook, "method": "POST"}),
        )
        .await;
        let (service, _) = register(&c, &base, &cookie, &silent).await;
        let job = request_job(&c, &base, &cookie, &service, &model).await;
        let ended = job_until(&c, &job, &cookie, &["queued", "sent", "accepted"]).await;
        assert_eq!(ended["status"], "timed_out", "{ended}");
        assert!(ended["error"].as_str().expect("why").contains("deadline"), "{ended}");
        // The request did reach the provider, signed.
        let (head, body) = requests.recv_timeout(Duration::from_secs(5)).expect("a request");
        assert!(head.contains("webhook-signature: v1,"), "{head}");
        let sent: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(sent["account"], Value::Null);
        assert_eq!(sent["type"], "model-healing");
        let log: Value = get_json_as(&c, &format!("{base}/model/{model}/callbacks"), &cookie).await;
        assert!(
            log["callbacks"].as_array().expect("list").iter().any(|d| d["body"]["status"] == "timed_out"),
            "{log}"
        );
    });
}

#[test]
fn signed_requests_urls_and_reports_refuse_every_forgery() {
    let served = serve(&["--allow-private-callbacks", "--upload-limit-mib", "1"]);
    let user = partner(&served.data, "Gareth");
    let other = partner(&served.data, "Mallory");
    let base = served.base.clone();
    let (accepting, requests) = stand_in(202, "{}");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &user).await;
        let mallory = login(&c, &base, &other).await;
        let cube = crate::util::cube();
        let (model, _) = upload_model(&c, &base, &cookie, cube.clone()).await;
        let (other_model, _) = upload_model(&c, &base, &mallory, cube.clone()).await;
        let (service, secret) = register(&c, &base, &cookie, &accepting).await;
        let job_uri = request_job(&c, &base, &cookie, &service, &model).await;
        let job = job_until(&c, &job_uri, &cookie, &["queued", "sent"]).await;
        assert_eq!(job["status"], "accepted");
        let (head, body) = requests.recv_timeout(Duration::from_secs(10)).expect("the request");
        // What the provider got verifies with the shared secret, computed
        // independently here.
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no {name} in {head}"))
                .trim()
                .to_string()
        };
        let ts: i64 = header("webhook-timestamp").parse().expect("ts");
        assert_eq!(header("webhook-signature"), sign(&secret, &header("webhook-id"), ts, &body));
        let sent: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(sent["model"]["sha256"], sha256(&cube));
        assert_eq!(sent["model"]["size"], cube.len());
        assert_eq!(sent["options"]["quality"], "high");
        let input = sent["input"]["url"].as_str().expect("input").to_string();
        let output = sent["output"]["upload_url"].as_str().expect("output").to_string();
        assert_eq!(sent["output"]["max_bytes"], 1024 * 1024);
        let callback = sent["callback_url"].as_str().expect("callback").to_string();

        // The input URL: GET, Range, the model's bytes.
        let r = c.get(&input).send().await.expect("input");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), cube.as_slice());
        let r = c.get(&input).header("range", "bytes=0-9").send().await.expect("range");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), &cube[..10]);
        // Every mutation of a signed part is 403 with a JSON error.
        let (path, query) = input.split_once('?').expect("query");
        let mutate = |from: &str, to: &str| format!("{path}?{}", query.replacen(from, to, 1));
        let sig = query.rsplit_once("sig=").expect("sig").1.to_string();
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
        let exp = query.split('&').find_map(|p| p.strip_prefix("exp=")).expect("exp").to_string();
        let mut forged = vec![
            input.replace(&format!("/models/{model}/"), &format!("/models/{other_model}/")),
            mutate(&format!("exp={exp}"), &format!("exp={}", exp.parse::<i64>().expect("n") + 3600)),
            mutate(&format!("service={service}"), "service=00000000-0000-4000-8000-000000000000"),
            mutate("kid=1", "kid=2"),
            mutate("kid=1", "kid=../../dev/null"),
            mutate(&sig, std::str::from_utf8(&flipped).expect("hex")),
            mutate(&sig, &sig[..sig.len() - 2]),
            mutate(&format!("sig={sig}"), "sig="),
            mutate(&sig, &format!("{sig}{sig}")),
            format!("{input}&exp={exp}"),
            format!("{input}&extra=1"),
            path.to_string(),
        ];
        let job_id = job["id"].as_str().expect("id").to_string();
        forged.push(mutate(&format!("job={job_id}"), "job=00000000-0000-4000-8000-000000000000"));
        for url in &forged {
            let r = c.get(url).send().await.expect("forged");
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
            let e: Value = r.json().await.expect("a JSON error");
            assert!(e["error"]["code"].is_string() && e["message"].is_string(), "{e}");
        }
        // Another method on the GET URL.
        // Refused before any body is read, so each on a connection of its own.
        let r = client().put(&input).body("x").send().await.expect("put");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = client().delete(&input).send().await.expect("delete");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // The output URL: PUT only, capped, with its digest.
        let repaired = holed_sphere();
        assert_eq!(client().get(&output).send().await.expect("get").status(), StatusCode::FORBIDDEN);
        let r = client().put(&output).body(repaired.clone()).send().await.expect("put");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the SHA-256 is required");
        let r = client()
            .put(&output)
            .header("x-content-sha256", sha256(b"other"))
            .body(repaired.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let big = vec![0u8; 1024 * 1024 + 1];
        // Refused before the body is read, so on a connection of its own.
        let r = client()
            .put(&output)
            .header("x-content-sha256", sha256(&big))
            .body(big)
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let other_job =
            output.replace(&format!("/jobs/{job_id}/"), "/jobs/00000000-0000-4000-8000-000000000000/");
        let r = client()
            .put(&other_job)
            .header("x-content-sha256", sha256(&repaired))
            .body(repaired.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = c
            .put(&output)
            .header("x-content-sha256", sha256(&repaired))
            .body(repaired.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);

        // Completion reports: every forgery is 401, none is 5xx.
        let report = json!({"job_id": job_id, "status": "succeeded",
                            "result": {"sha256": sha256(&repaired), "size": repaired.len()}})
        .to_string();
        // Forgeries may be refused before their body is read: a connection each.
        let post = |id: String, ts: i64, sig: String, body: String| {
            client()
                .post(&callback)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body)
                .send()
        };
        let t = now();
        let good = sign(&secret, "done_1", t, report.as_bytes());
        let wrong_secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        let reserialised =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&report).expect("json"))
                .expect("json");
        let attacks: Vec<(String, i64, String, String)> = vec![
            ("done_1".into(), t, sign(&wrong_secret, "done_1", t, report.as_bytes()), report.clone()),
            ("done_1".into(), t + 360, sign(&secret, "done_1", t + 360, report.as_bytes()), report.clone()),
            ("done_1".into(), t - 360, sign(&secret, "done_1", t - 360, report.as_bytes()), report.clone()),
            ("done_1".into(), t, good.clone(), reserialised),
            ("done_2".into(), t, good.clone(), report.clone()),
            ("done_1".into(), t, "v1,".into(), report.clone()),
            ("done_1".into(), t, String::new(), report.clone()),
            ("done_1".into(), t, good[..good.len() - 3].into(), report.clone()),
            ("done_1".into(), t, format!("{good}A"), report.clone()),
            ("done_1".into(), t, "v1,@@@@".into(), report.clone()),
            ("done_1".into(), t, vec![good.as_str(); 1000].join(" "), report.clone()),
            ("done_1".into(), t, format!("v1,{}", "A".repeat(64 * 1024)), report.clone()),
        ];
        for (i, (id, ts, sig, body)) in attacks.into_iter().enumerate() {
            let oversized = sig.len() > 60 * 1024;
            let r = post(id, ts, sig, body).await.expect("attack");
            if oversized {
                // Beyond the server's header limit: refused before routing.
                assert!(
                    [StatusCode::UNAUTHORIZED, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE]
                        .contains(&r.status()),
                    "attack {i}: {}",
                    r.status()
                );
            } else {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attack {i}");
            }
        }
        let r = client().post(&callback).body(report.clone()).send().await.expect("unsigned");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // The real report, then its replay: processed once.
        let r = post("done_1".into(), t, good.clone(), report.clone()).await.expect("report");
        assert_eq!(r.status(), StatusCode::OK);
        let first: Value = r.json().await.expect("json");
        assert_eq!(first["status"], "done", "{first}");
        let r = post("done_1".into(), t, good.clone(), report.clone()).await.expect("replay");
        assert_eq!(r.status(), StatusCode::OK);
        let replay: Value = r.json().await.expect("json");
        assert_eq!(replay["duplicate"], true);
        let parent: Value = get_json_as(&c, &format!("{base}/model/{model}/"), &cookie).await;
        assert_eq!(parent["children"].as_array().map(Vec::len), Some(1), "one result model");
        // The job is finished: its URLs no longer work.
        assert_eq!(c.get(&input).send().await.expect("input").status(), StatusCode::FORBIDDEN);

        // Other tenants: 404 for ids that exist, as for ids that do not.
        for url in [job_uri.clone(), format!("{base}/jobs/00000000-0000-4000-8000-000000000000")] {
            let r = c.get(&url).header("cookie", &mallory).send().await.expect("bola");
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{url}");
        }
        let r = c
            .post(format!("{base}/jobs/"))
            .header("cookie", &mallory)
            .json(&json!({"service": service, "model": model}))
            .send()
            .await
            .expect("bola");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "another user's model");
        let listed: Value = get_json_as(&c, &format!("{base}/jobs/"), &mallory).await;
        assert_eq!(listed["jobs"], json!([]));
        let r = c
            .get(format!("{base}/service/{service}/links"))
            .header("cookie", &mallory)
            .send()
            .await
            .expect("bola");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(c.get(&job_uri).send().await.expect("anon").status(), StatusCode::UNAUTHORIZED);
    });
}

/// A link token as a provider would make it, with `claims` over the
/// defaults and header `typ`.
fn link_token(secret: &str, typ: &str, claims: Value) -> String {
    let key =
        base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some(typ.into());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&key).expect("key"))
        .expect("jwt")
}

#[test]
fn link_tokens_are_single_use_bound_to_their_nonce_and_strictly_checked() {
    let served = serve(&["--allow-private-callbacks"]);
    let user = partner(&served.data, "Gareth");
    let other = partner(&served.data, "Mallory");
    let base = served.base.clone();
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &user).await;
        let mallory = login(&c, &base, &other).await;
        let (service, secret) = register(&c, &base, &cookie, "http://127.0.0.1:9/repair").await;
        let nonce = |who: String| {
            let c = c.clone();
            let url = format!("{base}/service/{service}/link-requests");
            async move {
                let r = c.post(url).header("cookie", who).send().await.expect("nonce");
                assert_eq!(r.status(), StatusCode::CREATED);
                r.json::<Value>().await.expect("json")["nonce"].as_str().expect("nonce").to_string()
            }
        };
        let claims = |nonce: &str, jti: &str| {
            json!({"iss": service, "aud": base, "sub": "gareth-42", "nonce": nonce, "jti": jti,
                   "iat": now(), "exp": now() + 300})
        };
        let post = |who: &str, token: String| {
            c.post(format!("{base}/service/{service}/links"))
                .header("cookie", who)
                .json(&json!({"token": token}))
                .send()
        };
        let n = nonce(cookie.clone()).await;
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims(&n, "j-attack");
            f(&mut c);
            link_token(&secret, "link+jwt", c)
        };
        let none_alg = {
            let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!("{}.{}.", b64(&json!({"alg": "none", "typ": "link+jwt"})), b64(&claims(&n, "j-none")))
        };
        let other_secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([9u8; 32]));
        let attacks = vec![
            ("typ JWT", link_token(&secret, "JWT", claims(&n, "j1"))),
            ("alg none", none_alg),
            ("another secret", link_token(&other_secret, "link+jwt", claims(&n, "j2"))),
            ("aud", with(&|c| c["aud"] = json!("https://evil.example"))),
            ("iss", with(&|c| c["iss"] = json!("another-service"))),
            (
                "expired",
                with(&|c| {
                    c["iat"] = json!(now() - 900);
                    c["exp"] = json!(now() - 600);
                }),
            ),
            ("lives 15 min", with(&|c| c["exp"] = json!(now() + 900))),
            ("exp string", with(&|c| c["exp"] = json!("never"))),
            (
                "no exp",
                with(&|c| {
                    c.as_object_mut().expect("obj").remove("exp");
                }),
            ),
            ("unknown nonce", with(&|c| c["nonce"] = json!("0123456789abcdef0123456789abcdef"))),
            ("garbage", "not.a.jwt".to_string()),
        ];
        for (what, token) in attacks {
            let r = post(&cookie, token).await.expect("attack");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        }
        // Another user cannot use Gareth's nonce, even with a valid token.
        let r = post(&mallory, link_token(&secret, "link+jwt", claims(&n, "j-m"))).await.expect("hijack");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // The good token links; its nonce and its jti count once.
        let r = post(&cookie, link_token(&secret, "link+jwt", claims(&n, "j-good"))).await.expect("link");
        assert_eq!(r.status(), StatusCode::CREATED);
        let r =
            post(&cookie, link_token(&secret, "link+jwt", claims(&n, "j-other"))).await.expect("nonce again");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let n2 = nonce(cookie.clone()).await;
        let r =
            post(&cookie, link_token(&secret, "link+jwt", claims(&n2, "j-good"))).await.expect("jti again");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let shown: Value = get_json_as(&c, &format!("{base}/service/{service}/links"), &cookie).await;
        assert_eq!(shown["account"], "gareth-42");

        // Rotation, signed with the current secret; the old one still
        // verifies inside the overlap, and cannot rotate again.
        let rotate = |secret: &str, id: &str| {
            let body = json!({"overlap_seconds": 600}).to_string();
            let t = now();
            c.post(format!("{base}/service/{service}/secret"))
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", t.to_string())
                .header("webhook-signature", sign(secret, id, t, body.as_bytes()))
                .body(body)
                .send()
        };
        assert_eq!(rotate(&other_secret, "rot_0").await.expect("forged").status(), StatusCode::UNAUTHORIZED);
        let r = rotate(&secret, "rot_1").await.expect("rotate");
        assert_eq!(r.status(), StatusCode::CREATED);
        let rotated: Value = r.json().await.expect("json");
        let new_secret = rotated["secret"].as_str().expect("secret").to_string();
        assert!(new_secret.starts_with("whsec_") && new_secret != secret);
        assert_eq!(
            rotate(&secret, "rot_1").await.expect("replay").status(),
            StatusCode::UNAUTHORIZED,
            "old secret"
        );
        assert_eq!(rotate(&secret, "rot_2").await.expect("old").status(), StatusCode::UNAUTHORIZED);
        let n3 = nonce(cookie.clone()).await;
        let r =
            post(&cookie, link_token(&secret, "link+jwt", claims(&n3, "j-old"))).await.expect("old secret");
        assert_eq!(r.status(), StatusCode::CREATED, "the previous secret inside its overlap");
        let n4 = nonce(cookie.clone()).await;
        let r = post(&cookie, link_token(&new_secret, "link+jwt", claims(&n4, "j-new")))
            .await
            .expect("new secret");
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = rotate(&new_secret, "rot_3").await.expect("rotate");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            rotate(&new_secret, "rot_3").await.expect("replay").status(),
            StatusCode::UNAUTHORIZED,
            "the id again, now under an old secret"
        );
    });
}

#[test]
fn service_urls_on_private_addresses_are_refused_unless_allowed() {
    let served = serve(&[]);
    let owner = partner(&served.data, "FixMyPrint");
    let base = served.base.clone();
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &owner).await;
        for url in [
            "http://127.0.0.1/repair",
            "http://localhost/repair",
            "http://[::1]/repair",
            "http://0.0.0.0/repair",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/repair",
            "http://2130706433/repair",
            "http://0177.0.0.1/repair",
            "http://10.0.0.1/repair",
            "http://172.16.0.1/repair",
            "http://192.168.1.1/repair",
            "http://100.64.0.1/repair",
            "http://[fc00::1]/repair",
            "http://[fe80::1]/repair",
            "https://93.184.216.34:8443/repair",
            "http://user:pw@93.184.216.34/repair",
            "file:///etc/passwd",
            "gopher://93.184.216.34/",
        ] {
            let r = c
                .post(format!("{base}/service/"))
                .header("cookie", &cookie)
                .json(&json!({"name": "x", "type": "model-healing", "service_url": url}))
                .send()
                .await
                .expect("register");
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
            let e: Value = r.json().await.expect("json");
            assert_eq!(e["error"]["code"], "invalid_service_url", "{url}: {e}");
        }
        let r = c
            .post(format!("{base}/service/"))
            .header("cookie", &cookie)
            .json(&json!({"name": "x", "type": "teleportation", "service_url": "https://93.184.216.34/"}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let listed: Value = get_json_as(&c, &format!("{base}/service/"), &cookie).await;
        assert_eq!(listed["services"], json!([]), "nothing was registered");
    });
}
