//! Logs and metrics of `strata serve`: JSON lines in request spans that
//! never hold a secret, Prometheus metrics that count what happened, and
//! readiness.

use std::io::BufRead;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{client, login, partner, rt, upload_model};
use crate::util::strata;

#[test]
fn logs_are_json_in_request_spans_without_secrets_and_metrics_count_the_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let mut child = strata()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().expect("utf-8"),
            "--log-format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("address").to_string();
    let p = partner(&data, "Log Shop");
    let key = p["api_key"].as_str().expect("key").to_string();
    let mut secrets = vec![key.clone(), p["password"].as_str().expect("password").to_string()];
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &p).await;
        secrets.push(cookie.trim_start_matches("session=").to_string());
        let (id, model) = upload_model(&c, &base, &cookie, crate::util::cube()).await;
        let content = model["content"].as_str().expect("content URL").to_string();
        secrets.push(content.split("signature=").nth(1).expect("signature").to_string());
        assert_eq!(c.get(&content).send().await.expect("content").status(), StatusCode::OK);
        let r = c
            .post(format!("{base}/token/"))
            .json(&json!({"api_key": key, "model": id, "print_value": "1"}))
            .send()
            .await
            .expect("token");
        let token = r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
        secrets.push(token.clone());
        assert_eq!(
            c.get(format!("{base}/streams/{token}/manifest")).send().await.expect("m").status(),
            StatusCode::OK
        );
        let legacy = c
            .get(format!("{base}/api3/api_get_partner_print_status?api_key={key}&token={token}"))
            .send()
            .await
            .expect("legacy");
        assert_eq!(legacy.status(), StatusCode::OK);
        let ready: Value =
            c.get(format!("{base}/readyz")).send().await.expect("ready").json().await.expect("json");
        assert_eq!(ready, json!({"status": "ok", "database": "ok", "store": "ok"}));
        let metrics =
            c.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
        for needle in [
            r#"strata_http_requests_total{route="/model",method="POST""#,
            "strata_upload_bytes_total",
            "strata_jobs_pending",
            "strata_job_duration_seconds_bucket",
            r#"strata_pipeline_stage_seconds_count{stage="slice"}"#,
            "strata_content_bytes_total",
        ] {
            assert!(metrics.contains(needle), "{needle} not in /metrics:\n{metrics}");
        }
        assert!(!metrics.contains(&token) && !metrics.contains(&key), "a secret is a metric label");
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let mut requests = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["fields"]["message"] == "request" {
            requests += 1;
            assert!(v["span"]["request_id"].is_string() && v["span"]["route"].is_string(), "{line}");
        }
    }
    assert!(requests >= 8, "{requests} request lines in\n{text}");
    assert!(text.contains(r#""partner":""#), "the partner is not in the spans:\n{text}");
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret reached the log: {secret}\n{text}");
    }
}
