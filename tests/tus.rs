//! Resumable uploads, tus 1.0 (issue 18, U2), with a real tus client:
//! PyPI's `tuspy` (pinned in `tests/tus/requirements.txt`) run by
//! `tests/tus/upload.py`. Half a model is sent, the server is killed with
//! SIGKILL and started again on the same data, and the client resumes
//! from the offset the new server reports; then every refusal of the
//! protocol, over raw requests.
//!
//! The Python interpreter is `STRATA_TUS_PYTHON` (default `python3`); when
//! it cannot import `tusclient` the test says it skipped, unless
//! `STRATA_REQUIRE_TUS=1` (set by `.ci/run`, which installs it in a
//! virtualenv) makes that a failure.

use std::path::PathBuf;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{client, create_model, get_json_as, login, partner, rt, serve, serve_in};

fn python() -> String {
    std::env::var("STRATA_TUS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tus/upload.py")
}

/// Why tuspy cannot run here, if it cannot.
fn missing() -> Option<String> {
    let probe = std::process::Command::new(python()).args(["-c", "import tusclient"]).output();
    match probe {
        Ok(o) if o.status.success() => None,
        _ => Some(format!(
            "{} cannot import tusclient (python3 -m venv V && V/bin/pip install -r tests/tus/requirements.txt, then STRATA_TUS_PYTHON=V/bin/python)",
            python()
        )),
    }
}

fn tuspy(args: &[&str]) -> Value {
    let out = std::process::Command::new(python()).arg(script()).args(args).output().expect("python runs");
    assert!(
        out.status.success(),
        "upload.py {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

fn sha256_b64(bytes: &[u8]) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// The client sends half, the server dies (SIGKILL) and comes back, the
/// client resumes where the new server says and the model is processed
/// from exactly the file's bytes.
#[test]
fn tuspy_resumes_an_upload_across_a_killed_server() {
    if let Some(why) = missing() {
        assert!(std::env::var("STRATA_REQUIRE_TUS").is_err(), "STRATA_REQUIRE_TUS is set but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let model = crate::util::repo_datasets().join("spot.obj");
    let bytes = std::fs::read(&model).expect("dataset model");
    let path = model.to_str().expect("utf-8");
    let half = bytes.len() / 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = serve_in(&data, &[]);
    let p = partner(&s.data, "Resumable");
    let (location, upload) = rt().block_on(async {
        let c = client();
        let cookie = login(&c, &s.base, &p).await;
        let (location, upload, _) = create_model(&c, &s.base, &cookie, json!({"name": "arm"})).await;
        (location.replace(&s.base, ""), upload)
    });
    let first = tuspy(&["start", &upload, path, &half.to_string(), "65536"]);
    let url = first["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&format!("{}/files/", s.base)), "{first}");
    assert!(first["offset"].as_u64().expect("offset") >= half as u64, "{first}");
    let acknowledged = first["offset"].as_u64().expect("offset");
    // Kill -9 (the helper's drop); the data directory stays.
    drop(s);
    let s = serve_in(&data, &[]);
    let moved = url.replacen(&url[..url.find("/files/").expect("path")], &s.base, 1);
    let second = tuspy(&["resume", &moved, path, "65536"]);
    assert_eq!(second["resumed_at"].as_u64(), Some(acknowledged), "the offset survived the crash: {second}");
    assert_eq!(second["offset"].as_u64(), Some(bytes.len() as u64), "{second}");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &s.base, &p).await;
        let location = format!("{}{location}", s.base);
        let mut m = Value::Null;
        for _ in 0..600 {
            m = get_json_as(&c, &location, &cookie).await;
            if m["status"] != "processing" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(m["sha256"].as_str(), Some(strata_core::stream::sha256_hex(&bytes).as_str()), "{m}");
        assert_eq!(m["status"], "processed", "{m}");
        // Done: the upload is gone.
        let r = c.head(&moved).header("tus-resumable", "1.0.0").send().await.expect("head");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    });
}

/// Every refusal: version 412, offset 409, checksum 460 (bytes dropped),
/// media type 415, over the limit 413, termination then 404, expiry 410;
/// every answer says `Tus-Resumable`, errors in the API's envelope.
#[test]
fn tus_refusals_have_their_status_and_leave_the_offset() {
    let s = serve(&["--upload-limit-mib", "1", "--tus-expiry-secs", "3"]);
    let p = partner(&s.data, "Tus refusals");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (_, upload, _) = create_model(&c, base, &cookie, json!({"name": "cube"})).await;
        let r = c.request(reqwest::Method::OPTIONS, &upload).send().await.expect("options");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        for (name, want) in [
            ("tus-version", "1.0.0"),
            ("tus-extension", "creation,checksum,expiration,termination"),
            ("tus-checksum-algorithm", "sha256"),
            ("tus-max-size", "1048576"),
        ] {
            assert_eq!(r.headers()[name], want, "{name}");
        }
        let post = |length: &str| {
            c.post(&upload).header("tus-resumable", "1.0.0").header("upload-length", length).send()
        };
        let r = c.post(&upload).header("upload-length", "10").send().await.expect("post");
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(r.headers()["tus-version"], "1.0.0");
        let r = post("2000000").await.expect("post");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()["tus-resumable"], "1.0.0");
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "too_large");
        let forged = upload.replace("signature=", "signature=00");
        let r = c.post(&forged).header("tus-resumable", "1.0.0").header("upload-length", "10").send().await;
        assert_eq!(r.expect("post").status(), StatusCode::FORBIDDEN);

        let cube = crate::util::cube();
        let r = post(&cube.len().to_string()).await.expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(r.headers().contains_key("upload-expires"));
        let files = r.headers()["location"].to_str().expect("ascii").to_string();
        let patch = |offset: u64, body: Vec<u8>| {
            c.patch(&files)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", offset.to_string())
                .body(body)
        };
        let offset =
            |r: &reqwest::Response| r.headers()["upload-offset"].to_str().expect("ascii").to_string();
        let first = cube[..100].to_vec();
        // A wrong checksum: 460, nothing kept.
        let r = patch(0, first.clone()).header("upload-checksum", format!("sha256 {}", sha256_b64(b"other")));
        let r = r.send().await.expect("patch");
        assert_eq!(r.status().as_u16(), 460);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "checksum_mismatch");
        let head = || c.head(&files).header("tus-resumable", "1.0.0").send();
        let r = head().await.expect("head");
        assert_eq!((r.status(), offset(&r)), (StatusCode::OK, "0".to_string()));
        assert_eq!(r.headers()["cache-control"], "no-store");
        // An algorithm we do not take: 400.
        let r = patch(0, first.clone()).header("upload-checksum", "md5 AAAA").send().await.expect("patch");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // The right one: 204 at the new offset.
        let r = patch(0, first.clone()).header("upload-checksum", format!("sha256 {}", sha256_b64(&first)));
        let r = r.send().await.expect("patch");
        assert_eq!((r.status(), offset(&r)), (StatusCode::NO_CONTENT, "100".to_string()));
        // A stale offset: 409 naming the server's.
        let r = patch(0, cube[..10].to_vec()).send().await.expect("patch");
        assert_eq!((r.status(), offset(&r)), (StatusCode::CONFLICT, "100".to_string()));
        // The wrong media type: 415.
        let r = c
            .patch(&files)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/octet-stream")
            .header("upload-offset", "100")
            .body(cube[100..].to_vec())
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // Past the declared length: 413, nothing kept.
        let mut long = cube[100..].to_vec();
        long.extend_from_slice(b"extra");
        let r = patch(100, long).send().await.expect("patch");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = head().await.expect("head");
        assert_eq!(offset(&r), "100");
        // A second PATCH while one is still sending its body: 423, and the
        // first one's bytes are not disturbed.
        let url = reqwest::Url::parse(&files).expect("location is a URL");
        let mut held = tokio::net::TcpStream::connect((url.host_str().expect("host"), url.port().expect("port")))
            .await
            .expect("connect");
        let rest = cube.len() - 100;
        let head_lines = format!(
            "PATCH {} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 100\r\nContent-Length: {rest}\r\n\r\n",
            url.path(),
            url.authority()
        );
        tokio::io::AsyncWriteExt::write_all(&mut held, head_lines.as_bytes()).await.expect("headers");
        tokio::io::AsyncWriteExt::write_all(&mut held, &cube[100..110]).await.expect("a first slice");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let r = patch(100, cube[100..].to_vec()).send().await.expect("patch");
        assert_eq!(r.status(), StatusCode::LOCKED);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "upload_busy");
        // The held PATCH finishes its body: the upload is complete.
        tokio::io::AsyncWriteExt::write_all(&mut held, &cube[110..]).await.expect("the rest");
        let mut answer = vec![0u8; 512];
        let n = tokio::io::AsyncReadExt::read(&mut held, &mut answer).await.expect("answer");
        let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 204"), "{answer}");
        assert!(answer.contains(&format!("upload-offset: {}", cube.len())), "{answer}");
        drop(held);
        // Finished: the upload is gone and the model has its bytes.
        assert_eq!(head().await.expect("head").status(), StatusCode::NOT_FOUND);
        let r = c.post(&upload).header("tus-resumable", "1.0.0").header("upload-length", "10").send().await;
        assert_eq!(r.expect("post").status(), StatusCode::CONFLICT, "the model is no longer awaiting bytes");

        // Termination: 204, then 404, on a second model's upload.
        let (_, upload, _) = create_model(&c, base, &cookie, json!({"name": "cube 2"})).await;
        let r = c.post(&upload).header("tus-resumable", "1.0.0").header("upload-length", "10").send().await;
        let r = r.expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        let files = r.headers()["location"].to_str().expect("ascii").to_string();
        let head = || c.head(&files).header("tus-resumable", "1.0.0").send();
        let r = c.delete(&files).header("tus-resumable", "1.0.0").send().await.expect("delete");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(head().await.expect("head").status(), StatusCode::NOT_FOUND);

        // Expiry: 410 once its time is up.
        let r = c.post(&upload).header("tus-resumable", "1.0.0").header("upload-length", "10").send().await;
        let r = r.expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        let files = r.headers()["location"].to_str().expect("ascii").to_string();
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        let r = c.head(&files).header("tus-resumable", "1.0.0").send().await.expect("head");
        assert_eq!(r.status(), StatusCode::GONE);
        let r = c
            .patch(&files)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .body(vec![0u8; 10])
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::GONE);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "expired");
    });
}
