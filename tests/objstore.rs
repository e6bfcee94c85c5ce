//! Blobs in S3-compatible object storage (`--blobs s3://bucket/prefix`),
//! against a real S3 server: s3s-fs, run inside this test binary on a
//! loopback port with SigV4 authentication on, so every request the
//! object-store client makes, and every presigned URL, is really checked.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{client, get_json_as, login, partner, rt, upload_model};
use crate::util::{run, strata};

const BUCKET: &str = "strata-test";
const KEY: &str = "strata-test-key";
const SECRET: &str = "strata-test-secret-0123456789";

/// An s3s-fs server on 127.0.0.1, its files under a temporary root (the
/// bucket is a directory there), stopped when dropped.
pub(crate) struct S3 {
    pub(crate) endpoint: String,
    root: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3 {
    pub(crate) fn start() -> S3 {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join(BUCKET)).expect("bucket");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let service = {
            let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
            b.build()
        };
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                // Without it every GET's body waits for the client's
                // delayed ACK (40 ms).
                let _ = socket.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3 { endpoint, root, runtime: Some(runtime) }
    }

    /// Stops the server: its listener and connections close.
    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// The AWS variables a client of this server needs (never none: with
    /// no keys the client would ask a cloud metadata address).
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// The files under `bucket/prefix/blobs`, as blob ids.
    pub(crate) fn blob_ids(&self, prefix: &str) -> Vec<String> {
        let dir = self.root.path().join(BUCKET).join(prefix).join("blobs");
        let mut ids = Vec::new();
        walk(&dir, &mut |p| {
            if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
            {
                ids.push(name.to_string());
            }
        });
        ids.sort();
        ids
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// `strata serve` on `data` with `env` set; `(child, base URL)`, or the
/// process's output when it exits before serving.
pub(crate) fn serve_with_env(
    data: &Path,
    env: &[(&'static str, String)],
    extra: &[&str],
) -> Result<(KillOnDrop, String), String> {
    let mut child = strata()
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data.to_str().expect("utf-8")])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    match line.split_whitespace().find(|w| w.starts_with("http://")) {
        Some(base) => Ok((KillOnDrop(child), base.to_string())),
        None => {
            let out = child.wait_with_output().expect("output");
            Err(format!("{line}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

/// `strata printer` pulls, verifies and prints the whole stream of `token`
/// from `base` into `out`: it must succeed with every layer of
/// `manifest`; its JSON summary.
pub(crate) fn print_all(base: &str, token: &str, out: &Path, manifest: &Value) -> Value {
    let printed = run(&[
        "printer",
        "--server",
        base,
        "--token",
        token,
        "--out",
        out.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let summary: Value = serde_json::from_slice(&printed.stdout).expect("json");
    assert_eq!(summary["status"], "SUCCESS", "{summary}");
    assert_eq!(summary["layers"], manifest["layer_count"], "{summary}");
    summary
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole partner and printer flow with blobs in a bucket: every blob
/// (original, manifest, chunks, snapshot) is an object under the prefix and
/// none is a file in the data directory; downloads stream from the bucket
/// with ranges; then, with `--presign-chunks-secs`, printers are sent to
/// presigned URLs that the S3 server checks (a tampered one is refused).
#[test]
fn blobs_in_a_bucket_serve_uploads_downloads_and_printers() {
    let mut s3 = S3::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let p = partner(&data, "Bucket Shop");
    let cube = crate::util::cube();
    let (server, base) =
        serve_with_env(&data, &s3.env(), &["--blobs", "s3://strata-test/eu/catalog"]).expect("serves");
    let (id, cookie, token, manifest) = rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &p).await;
        let (id, model) = upload_model(&c, &base, &cookie, cube.clone()).await;
        assert_eq!(model["status"], "processed", "{model}");

        // The original streams back from the bucket, whole and by range.
        let content = format!("{base}/model/{id}/content");
        let r = c.get(&content).header("cookie", &cookie).send().await.expect("content");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-length"], cube.len().to_string().as_str());
        assert_eq!(r.bytes().await.expect("bytes"), cube);
        let r = c
            .get(&content)
            .header("cookie", &cookie)
            .header("range", "bytes=80-99")
            .send()
            .await
            .expect("range");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["content-range"], format!("bytes 80-99/{}", cube.len()).as_str());
        assert_eq!(r.bytes().await.expect("bytes"), cube[80..100]);
        let r = c
            .get(&content)
            .header("cookie", &cookie)
            .header("range", "bytes=999999-")
            .send()
            .await
            .expect("416");
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        // The snapshot, rendered from the bucket's copy and stored there.
        let snap = c
            .get(format!("{base}/models/{id}/snapshot?view=top&size=64"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("snap");
        assert_eq!(snap.status(), StatusCode::OK);
        assert_eq!(&snap.bytes().await.expect("png")[1..4], b"PNG");

        // A printer pulls every chunk through the server, checking hashes.
        let r = c
            .post(format!("{base}/tokens"))
            .json(
                &json!({"api_key": p["api_key"], "receiver_email": "ann@example.com", "model": model["uri"]}),
            )
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), StatusCode::CREATED);
        let token = r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
        let manifest: Value = get_json_as(&c, &format!("{base}/streams/{token}/manifest"), &cookie).await;
        assert_eq!(manifest["model_sha256"], model["sha256"]);
        for (i, chunk) in manifest["chunks"].as_array().expect("chunks").iter().enumerate() {
            let r = c.get(format!("{base}/streams/{token}/chunks/{i}")).send().await.expect("chunk");
            assert_eq!(r.status(), StatusCode::OK);
            let bytes = r.bytes().await.expect("bytes");
            assert_eq!(strata_core::stream::sha256_hex(&bytes), chunk["sha256"].as_str().expect("sha"));
        }
        (id, cookie, token, manifest)
    });
    drop(server);

    // Every blob is an object under the prefix, named by its digest; the
    // data directory holds none.
    let ids = s3.blob_ids("eu/catalog");
    assert!(ids.contains(&strata_core::stream::sha256_hex(&cube)), "the original is in the bucket: {ids:?}");
    for chunk in manifest["chunks"].as_array().expect("chunks") {
        assert!(
            ids.iter().any(|i| i == chunk["sha256"].as_str().expect("sha")),
            "chunk {chunk} is in the bucket"
        );
    }
    let mut local = Vec::new();
    walk(&data.join("blobs"), &mut |p| local.push(p.to_path_buf()));
    assert!(local.is_empty(), "blobs written to the data directory: {local:?}");
    for id in &ids {
        let path: PathBuf = s3.root.path().join(BUCKET).join("eu/catalog/blobs").join(&id[..2]).join(id);
        let bytes = std::fs::read(&path).expect("object");
        assert_eq!(
            &strata_core::stream::sha256_hex(&bytes),
            id,
            "{} holds the bytes its key names",
            path.display()
        );
    }

    // Redirects: the printer is sent to a presigned URL that the S3 server
    // checks, and keeps its Range.
    let (_server, base) = serve_with_env(
        &data,
        &s3.env(),
        &["--blobs", "s3://strata-test/eu/catalog", "--presign-chunks-secs", "60"],
    )
    .expect("serves");
    rt().block_on(async {
        let no_follow = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let chunk = &manifest["chunks"][0];
        let sha = chunk["sha256"].as_str().expect("sha");
        let r = no_follow.get(format!("{base}/streams/{token}/chunks/0")).send().await.expect("chunk");
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let location = r.headers()["location"].to_str().expect("ascii").to_string();
        assert!(location.starts_with(&s3.endpoint), "{location}");
        assert!(location.contains("X-Amz-Signature="), "{location}");
        assert!(location.contains(&format!("/eu/catalog/blobs/{}/{sha}", &sha[..2])), "{location}");
        let bytes = no_follow.get(&location).send().await.expect("presigned").bytes().await.expect("bytes");
        assert_eq!(strata_core::stream::sha256_hex(&bytes), sha);
        // reqwest follows the redirect with the printer's Range.
        let r = client()
            .get(format!("{base}/streams/{token}/chunks/0"))
            .header("range", "bytes=4-")
            .send()
            .await
            .expect("range");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.expect("tail"), bytes.slice(4..));
        // A tampered signature, or another key, is refused by the S3 server.
        let sig = location.find("X-Amz-Signature=").expect("signature") + "X-Amz-Signature=".len();
        let mut forged = location.clone().into_bytes();
        forged[sig] = if forged[sig] == b'0' { b'1' } else { b'0' };
        let r = no_follow.get(String::from_utf8(forged).expect("ascii")).send().await.expect("forged");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let other = location.replace(sha, &"0".repeat(64));
        let r = no_follow.get(&other).send().await.expect("other key");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // The token is still checked first.
        let r =
            no_follow.get(format!("{base}/streams/{}/chunks/0", "0".repeat(32))).send().await.expect("404");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let ready: Value =
            client().get(format!("{base}/readyz")).send().await.expect("ready").json().await.expect("json");
        assert_eq!(ready["store"], "ok", "{ready}");
    });

    // The printer client follows the redirects: it pulls, verifies and
    // prints the whole stream from the bucket and reports success.
    let summary = print_all(&base, &token, &dir.path().join("print"), &manifest);
    let total: u64 = manifest["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["bytes"].as_u64().expect("bytes"))
        .sum();
    assert_eq!(summary["bytes_downloaded"], total, "{summary}");

    // The bucket goes away: readiness says so, and a download is a 500
    // (logged), not a 404 that would tell a client the model is gone.
    s3.stop();
    rt().block_on(async {
        let r = client().get(format!("{base}/readyz")).send().await.expect("ready");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready: Value = r.json().await.expect("json");
        assert!(ready["store"].as_str().is_some_and(|s| s.contains("cannot be listed")), "{ready}");
        let r = client()
            .get(format!("{base}/model/{id}/content"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("content");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    });
}

/// `strata ingest --blobs s3://...` stores a catalog's blobs in the bucket;
/// a wrong secret, an unknown bucket or a malformed location fail at start
/// with an error naming them; presigned redirects need a bucket.
#[test]
fn ingest_into_a_bucket_and_bad_bucket_settings_fail_at_start() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    let models = crate::util::repo_datasets();
    let cube = models.join("numpystl_cube_binary_solidheader.stl");
    let out = strata()
        .args(["ingest", "--data", d, "--blobs", "s3://strata-test/ingested", cube.to_str().expect("utf-8")])
        .envs(s3.env())
        .output()
        .expect("ingest");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids = s3.blob_ids("ingested");
    let sha = strata_core::stream::sha256_hex(&std::fs::read(&cube).expect("cube"));
    assert!(ids.contains(&sha), "{ids:?}");
    let listed = run(&["models", "list", "--data", d, "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed[0]["status"], "ok", "{listed}");
    for blob in ["original_blob", "manifest_blob", "snapshot_blob"] {
        let id = listed[0][blob].as_str().unwrap_or_else(|| panic!("{blob}: {listed}"));
        assert!(ids.iter().any(|i| i == id), "{blob} {id} is in the bucket: {ids:?}");
    }

    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let mut wrong = s3.env();
    wrong[1].1 = "not-the-secret".to_string();
    let e = serve_with_env(&data, &wrong, &["--blobs", "s3://strata-test/ingested"]).err().expect("refused");
    assert!(e.contains("s3://strata-test/ingested") && e.contains("cannot be listed"), "{e}");
    let e = serve_with_env(&data, &s3.env(), &["--blobs", "s3://no-such-bucket"]).err().expect("refused");
    assert!(e.contains("s3://no-such-bucket"), "{e}");
    let bad = strata().args(["serve", "--data", d, "--blobs", "s3://Not_A_Bucket"]).output().expect("serve");
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("is not a bucket name"), "{}", text(&bad));
    let bad = strata().args(["serve", "--data", d, "--presign-chunks-secs", "60"]).output().expect("serve");
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("needs --blobs s3://"), "{}", text(&bad));
}

/// The object store through the library: small blobs by a conditional
/// create, large ones (over the multipart threshold) in parts, both read
/// back whole, by range and by presigned URL; storing the same bytes twice
/// is a no-op; a missing blob is told apart from a failure.
#[test]
fn the_object_store_writes_large_blobs_in_parts_and_reads_them_back() {
    use strata_pipeline::blob::{BlobId, BlobStore};
    use strata_pipeline::objstore::{BlobLocation, MULTIPART_MIN, Method, ObjectBlobStore};
    let s3 = S3::start();
    let env = s3.env();
    let settings: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let location = BlobLocation::parse("s3://strata-test/lib").expect("location");
    let store = ObjectBlobStore::open_with(&location, &settings).expect("opens");
    let small = b"a small blob".to_vec();
    let large: Vec<u8> = (0..MULTIPART_MIN + 3 * 1024 * 1024 + 7)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let small_id = store.put(&small).expect("small");
    let large_id = store.put(&large).expect("large");
    assert_eq!(store.put(&large).expect("again"), large_id);
    // A conditional create of a key that exists: the server may answer 412
    // before reading the body and close the connection; either way the
    // blob is stored, so it is a success (a whole catalog of similar models
    // stores the same chunks and snapshots again and again).
    for _ in 0..3 {
        assert_eq!(store.put(&small).expect("small again"), small_id);
    }
    let medium = vec![7u8; 3 << 20];
    let medium_id = store.put(&medium).expect("medium");
    // Workers of a catalog run store the same blob at the same moment (the
    // same chunks, the same snapshot): every one of them succeeds. (The
    // 412-before-the-body race this can provoke against a separate s3s-fs
    // process does not happen reliably in-process; the stand-in server of
    // `a_create_refused_mid_body_is_a_success_when_the_object_exists`
    // reproduces it deterministically.)
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..4 {
                    assert_eq!(store.put(&medium).expect("medium again"), medium_id);
                }
            });
        }
    });
    assert_eq!(store.get(&small_id).expect("get"), small);
    assert_eq!(store.get(&large_id).expect("get"), large);
    assert!(store.contains(&large_id).expect("contains"));
    let absent = BlobId::of(b"never stored");
    assert!(!store.contains(&absent).expect("contains"));
    let missing = store.get(&absent).expect_err("absent");
    assert!(missing.is_missing(), "{missing}");
    let mut listed = store.list().expect("list");
    listed.sort();
    let mut want = vec![small_id.clone(), large_id.clone(), medium_id.clone()];
    want.sort();
    assert_eq!(listed, want);
    // The object on the server's disk is the whole blob.
    let path =
        s3.root.path().join(BUCKET).join("lib/blobs").join(&large_id.as_str()[..2]).join(large_id.as_str());
    assert_eq!(std::fs::metadata(&path).expect("object").len(), large.len() as u64);

    rt().block_on(async {
        use futures_util::TryStreamExt;
        assert_eq!(store.size(&large_id).await.expect("size"), large.len() as u64);
        let start = MULTIPART_MIN as u64 - 5;
        let part: Vec<bytes::Bytes> = store
            .stream(&large_id, start..start + 1000)
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("bytes");
        assert_eq!(part.concat(), large[start as usize..start as usize + 1000]);
        let url = store.presign(Method::GET, &small_id, Duration::from_secs(30)).await.expect("presign");
        let got = client().get(&url).send().await.expect("get");
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.expect("bytes"), small);
    });

    // Wrong credentials: refused at open, naming the store.
    let mut wrong = settings.clone();
    wrong[1].1 = "wrong";
    let e = ObjectBlobStore::open_with(&location, &wrong).expect_err("refused");
    assert!(e.to_string().contains("s3://strata-test/lib"), "{e}");
    assert!(!e.is_missing());
}

/// With blobs in a bucket, a provider's input URL is a presigned GET of
/// the model in the bucket (checked by the S3 server: a tampered one is
/// refused), expiring within the URL lifetime; its output URL stays the
/// server's, which checks the result's size and digest.
#[test]
fn providers_download_their_input_from_the_bucket_by_a_presigned_url() {
    use crate::providers::{job_until, register, request_job, stand_in};
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let p = partner(&data, "Provider User");
    let (_server, base) =
        serve_with_env(&data, &s3.env(), &["--blobs", "s3://strata-test/prov", "--allow-private-callbacks"])
            .expect("serves");
    let (accepting, requests) = stand_in(202, "{}");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &p).await;
        let cube = crate::util::cube();
        let (model, _) = upload_model(&c, &base, &cookie, cube.clone()).await;
        let (service, _secret) = register(&c, &base, &cookie, &accepting).await;
        let job_uri = request_job(&c, &base, &cookie, &service, &model).await;
        let job = job_until(&c, &job_uri, &cookie, &["queued", "sent"]).await;
        assert_eq!(job["status"], "accepted", "{job}");
        let (_, body) = requests.recv_timeout(Duration::from_secs(10)).expect("the request");
        let sent: Value = serde_json::from_slice(&body).expect("json");
        let input = sent["input"]["url"].as_str().expect("input").to_string();
        let sha = strata_core::stream::sha256_hex(&cube);
        assert!(input.starts_with(&s3.endpoint), "{input}");
        assert!(input.contains(&format!("/prov/blobs/{}/{sha}?", &sha[..2])), "{input}");
        let expires: u64 = input
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("X-Amz-Expires="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no X-Amz-Expires in {input}"));
        assert!((1..=15 * 60).contains(&expires), "{expires}");
        let r = c.get(&input).send().await.expect("input");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), cube.as_slice());
        let r = c.get(&input).header("range", "bytes=0-9").send().await.expect("range");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), &cube[..10]);
        let forged = input.replace("X-Amz-Expires=", "X-Amz-Expires=9");
        assert_eq!(c.get(&forged).send().await.expect("forged").status(), StatusCode::FORBIDDEN);
        let output = sent["output"]["upload_url"].as_str().expect("output");
        assert!(output.starts_with(&base), "the output URL stays the server's: {output}");
    });
}

/// A create answered 412 before the body is read, the connection closed
/// under the writer (a broken pipe for the client, as s3s does when two
/// workers store the same blob at once): the object the server says exists
/// (HEAD, same size) makes it a success, not a failed catalog run.
#[test]
fn a_create_refused_mid_body_is_a_success_when_the_object_exists() {
    use std::io::{Read, Write};
    use strata_pipeline::blob::BlobStore;
    use strata_pipeline::objstore::{BlobLocation, ObjectBlobStore};
    let blob = vec![9u8; 4 << 20];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let size = blob.len();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let answer = if head.starts_with("GET ") {
                let list = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>strata-test</Name><Prefix>x/blobs</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>";
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{list}",
                    list.len()
                )
            } else if head.starts_with("HEAD ") {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\netag: \"e\"\r\nlast-modified: Mon, 07 Dec 2026 20:00:00 GMT\r\n\r\n"
                )
            } else {
                // The PUT: refused before a byte of its body is read.
                let body = "<Error><Code>PreconditionFailed</Code></Error>";
                format!(
                    "HTTP/1.1 412 Precondition Failed\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(answer.as_bytes());
            if !head.starts_with("PUT ") {
                // Keep-alive requests are answered one per connection here.
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        }
    });
    let settings = [
        ("AWS_ACCESS_KEY_ID", KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let store =
        ObjectBlobStore::open_with(&BlobLocation::parse("s3://strata-test/x").expect("location"), &settings)
            .expect("opens");
    let id = store.put(&blob).expect("the object exists: a success");
    assert_eq!(id, strata_pipeline::blob::BlobId::of(&blob));
}
