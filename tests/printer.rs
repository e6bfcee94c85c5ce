//! `strata printer` against a real `strata serve`: the client pulls and
//! verifies the stream, reports its progress, survives `kill -9` and damaged
//! files, and refuses a stream whose bytes do not match their hashes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{client, get_json, get_json_as, login, partner, rt, serve, upload_model};
use crate::util::{run, strata};

/// The volume of the generated torus (major radius 10, minor 3):
/// 2 pi^2 R r^2, an oracle that owes nothing to our code.
const TORUS_VOLUME: f64 = 2.0 * std::f64::consts::PI * std::f64::consts::PI * 10.0 * 9.0;

fn torus(dir: &Path) -> Vec<u8> {
    let path = dir.join("torus.stl");
    let out = run(&["generate", "torus", path.to_str().expect("utf-8"), "--triangles", "200000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(path).expect("torus")
}

pub(crate) async fn new_token(c: &reqwest::Client, base: &str, key: &Value, model: &Value) -> String {
    let r = c
        .post(format!("{base}/tokens"))
        // One print: a printer killed and restarted resumes that print
        // (issue 16: it used to be refused the stream once it had started).
        .json(&json!({"api_key": key, "receiver_email": "ann@example.com", "model": model["uri"], "print_value": "4.20", "print_limit": 1}))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let t: Value = r.json().await.expect("json");
    // Money comes back as it was sent, trailing zero and all.
    assert_eq!(t["print_value"].to_string(), "4.20", "{t}");
    t["token"].as_str().expect("token").to_string()
}

async fn print_status(c: &reqwest::Client, base: &str, token: &str) -> Value {
    get_json(c, &format!("{base}/prints/{token}")).await
}

fn printer(base: &str, token: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["printer", "--server", base, "--token", token, "--out", out.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    run(&args)
}

fn layers_printed(out: &Path) -> u64 {
    std::fs::read(out.join("progress.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["layers_printed"].as_u64())
        .unwrap_or(0)
}

#[test]
fn the_printer_prints_resumes_after_kill_and_repairs_its_files() {
    let s = serve(&[]);
    let p = partner(&s.data, "Print Shop");
    let work = tempfile::tempdir().expect("tempdir");
    let model_bytes = torus(work.path());
    let out = work.path().join("print");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (_, model) = upload_model(&c, base, &cookie, model_bytes).await;
        assert_eq!(model["status"], "processed", "{model}");
        let token = new_token(&c, base, &p["api_key"], &model).await;
        let manifest = get_json(&c, &format!("{base}/streams/{token}/manifest")).await;
        let chunks = manifest["chunks"].as_array().expect("chunks").clone();
        let layers = manifest["layer_count"].as_u64().expect("layers");
        assert!(chunks.len() >= 2, "the test needs a stream of several chunks: {}", chunks.len());

        // A slow print, killed (SIGKILL: no clean-up) part-way through the
        // first chunk's layers.
        let mut child = strata()
            .args(["printer", "--server", base, "--token", &token, "--out", out.to_str().expect("utf-8")])
            .args(["--layer-delay-ms", "100"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("printer starts");
        let started = Instant::now();
        while layers_printed(&out) < 3 {
            assert!(started.elapsed() < Duration::from_secs(60), "the printer made no progress");
            assert!(child.try_wait().expect("wait").is_none(), "the printer ended early");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        let resumed_from = layers_printed(&out);
        let mid = print_status(&c, base, &token).await;
        assert_eq!(mid["printing_job_status"], "PRINTING", "{mid}");
        let pct = mid["printing_percentage"].as_f64().expect("percentage");
        assert!(pct > 0.0 && pct < 100.0, "{mid}");

        // Damage what is on disk: the first chunk's verified copy gets a
        // flipped byte, and the second is half downloaded.
        let first = out.join("chunk-000000.zst");
        let mut bytes = std::fs::read(&first).expect("the first chunk was saved");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&first, &bytes).expect("damage");
        // Fetched as the printer (its id is in its output directory): while
        // its print is in progress, anyone else is refused the stream.
        let printer_id = std::fs::read_to_string(out.join("printer-id")).expect("the printer's id");
        let other = c.get(format!("{base}/streams/{token}/chunks/1")).send().await.expect("c");
        assert_eq!(other.status(), reqwest::StatusCode::CONFLICT, "another printer got the stream");
        let second = c
            .get(format!("{base}/streams/{token}/chunks/1"))
            .header("x-printer-id", printer_id.trim())
            .send()
            .await
            .expect("c")
            .bytes()
            .await
            .expect("b");
        let half = second.len() / 2;
        let _ = std::fs::remove_file(out.join("chunk-000001.zst"));
        std::fs::write(out.join("chunk-000001.zst.part"), &second[..half]).expect("part");

        // The second run finishes: the damaged chunk is fetched again, the
        // partial one continues with a Range request, printed layers are
        // not printed again.
        let o = printer(base, &token, &out, &["--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: Value = serde_json::from_slice(&o.stdout).expect("json summary");
        assert_eq!(summary["status"], "SUCCESS");
        assert_eq!(summary["layers"], layers);
        assert_eq!(summary["layers_resumed"], resumed_from);
        assert_eq!(summary["chunks_resumed"], 1, "{summary}");
        assert_eq!(summary["chunks_reused"], 0, "a damaged chunk was used: {summary}");
        let rest: u64 = chunks[2..].iter().map(|c| c["bytes"].as_u64().expect("bytes")).sum();
        let expected = chunks[0]["bytes"].as_u64().expect("bytes") + (second.len() - half) as u64 + rest;
        assert_eq!(summary["bytes_downloaded"], expected, "{summary}");
        // Decoded layers stacked back up give the torus's volume.
        let volume = summary["volume"].as_f64().expect("volume");
        assert!((volume - TORUS_VOLUME).abs() / TORUS_VOLUME < 0.01, "volume {volume} vs {TORUS_VOLUME}");

        // The server heard the end, and the folder is a valid stream.
        let end = print_status(&c, base, &token).await;
        assert_eq!(end["printing_job_status"], "SUCCESS", "{end}");
        assert_eq!(end["printing_percentage"], 100.0);
        let read = get_json_as(&c, &format!("{base}/tokens/{token}"), &cookie).await;
        assert!(read["printer_model"].as_str().expect("model").starts_with("strata-printer/"), "{read}");
        assert!(read["total_time"].as_f64().is_some(), "{read}");
        let verify = run(&["stream", "verify", out.to_str().expect("utf-8")]);
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
        assert!(!out.join("chunk-000001.zst.part").exists());

        // A third run has nothing to do and fetches nothing.
        let o = printer(base, &token, &out, &["--json"]);
        assert!(o.status.success());
        let again: Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(
            (again["status"].as_str(), again["bytes_downloaded"].as_u64()),
            (Some("SUCCESS"), Some(0))
        );
    });
}

#[test]
fn the_printer_refuses_bad_bytes_and_bad_arguments() {
    let s = serve(&[]);
    let p = partner(&s.data, "Print Shop");
    let work = tempfile::tempdir().expect("tempdir");
    let cube = crate::util::cube();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (_, model) = upload_model(&c, base, &cookie, cube).await;
        let token = new_token(&c, base, &p["api_key"], &model).await;

        // An unknown token: a clear error, nothing reported.
        let o = printer(base, &"0".repeat(32), &work.path().join("a"), &[]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("404") && err.contains("token"), "{err}");

        // Not a URL, not a token.
        let o = printer("localhost:1", &token, &work.path().join("b"), &[]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("not an http(s) URL"));
        let o = printer(base, "../../etc", &work.path().join("b"), &[]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("is not a token"));

        // A folder that holds another stream is not overwritten.
        let other = work.path().join("other");
        std::fs::create_dir_all(&other).expect("dir");
        let foreign = run(&[
            "slice",
            crate::util::repo_datasets().join("assimp_sphere_with_hole.stl").to_str().expect("utf-8"),
            other.to_str().expect("utf-8"),
        ]);
        assert!(foreign.status.success(), "{}", String::from_utf8_lossy(&foreign.stderr));
        let before = std::fs::read(other.join("manifest.json")).expect("manifest");
        let o = printer(base, &token, &other, &[]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("holds another stream"));
        assert_eq!(std::fs::read(other.join("manifest.json")).expect("manifest"), before);

        // The server's chunk no longer matches its manifest (a damaged
        // disk): the printer never prints it, and reports FAILURE.
        let manifest = get_json(&c, &format!("{base}/streams/{token}/manifest")).await;
        let sha = manifest["chunks"][0]["sha256"].as_str().expect("sha");
        let blob = s.data.join("blobs").join(&sha[..2]).join(sha);
        let mut bytes = std::fs::read(&blob).expect("the chunk blob");
        bytes[0] ^= 0xff;
        std::fs::write(&blob, &bytes).expect("damage");
        let out = work.path().join("c");
        let o = printer(base, &token, &out, &[]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("do not match the manifest"), "{err}");
        assert!(!out.join("chunk-000000.zst").exists(), "a bad chunk was kept");
        let st = print_status(&c, base, &token).await;
        assert_eq!(st["printing_job_status"], "FAILURE", "{st}");
    });
}
