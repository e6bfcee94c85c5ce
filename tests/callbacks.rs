//! Callbacks end to end: a real HTTP receiver on loopback that fails on
//! purpose, a partner checking every signature with its own HMAC, the
//! delivery log, a callback given up, and the refusal to call private
//! addresses by default.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use crate::server::{client, get_json_as, login, partner, rt, serve, upload_model_with_callback};

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    method: String,
    path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
    at: Instant,
}

/// A tiny HTTP/1.1 endpoint: answers the first requests from `script`
/// (a status line and any headers) and 204 after, recording everything.
pub(crate) struct Receiver {
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(crate) fn start(script: &[&'static str]) -> Receiver {
        Receiver::serve(script, false)
    }

    /// Answers the first attempt of the n-th distinct delivery (by
    /// `webhook-id`) with `script[n]`, and every retry with 204: what a
    /// test of one delivery's fate needs whatever order they arrive in.
    fn per_delivery(script: &[&'static str]) -> Receiver {
        Receiver::serve(script, true)
    }

    fn serve(script: &[&'static str], per_delivery: bool) -> Receiver {
        let script = script.to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut deliveries: Vec<String> = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&mut stream) else { continue };
                let id = req.headers.get("webhook-id").cloned().unwrap_or_default();
                let n = {
                    let mut log = log.lock().expect("lock");
                    log.push(req);
                    log.len()
                };
                let status = if per_delivery {
                    if deliveries.contains(&id) {
                        "204 No Content"
                    } else {
                        deliveries.push(id);
                        script.get(deliveries.len() - 1).copied().unwrap_or("204 No Content")
                    }
                } else {
                    script.get(n - 1).copied().unwrap_or("204 No Content")
                };
                let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { url, seen }
    }

    pub(crate) fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").clone()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received { method, path, headers, body: String::from_utf8(body).ok()?, at: Instant::now() })
}

/// The partner's side of the signature check, written from the Standard
/// Webhooks recipe with the hmac crate: HMAC-SHA256 under the key bytes
/// of `whsec_<base64>` over `id.timestamp.body`, sent as `v1,<base64>`.
fn signature_is_valid(secret: &str, r: &Received) -> bool {
    let (Some(id), Some(ts), Some(sig)) =
        (r.headers.get("webhook-id"), r.headers.get("webhook-timestamp"), r.headers.get("webhook-signature"))
    else {
        return false;
    };
    let Some(b64) = sig.strip_prefix("v1,") else { return false };
    let key = crate::util::base64_decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"));
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    mac.verify_slice(&crate::util::base64_decode(b64)).is_ok()
}

/// Logs `p` in and uploads the cube with `callback`: (cookie, model id,
/// model once processed).
async fn upload_hooked(
    c: &reqwest::Client,
    base: &str,
    p: &Value,
    callback: Value,
) -> (String, String, Value) {
    let cookie = login(c, base, p).await;
    let (id, model) = upload_model_with_callback(c, base, &cookie, crate::util::cube(), callback).await;
    (cookie, id, model)
}

async fn log_of(c: &reqwest::Client, base: &str, cookie: &str, id: &str) -> Value {
    get_json_as(c, &format!("{base}/models/{id}/callbacks"), cookie).await
}

/// Polls the delivery log until `done` holds (or fails after 20 s).
async fn wait_for(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let log = log_of(c, base, cookie, id).await;
        if done(&log) {
            return log;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the deliveries never settled: {log:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn states(log: &Value) -> Vec<&str> {
    log["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .map(|c| c["state"].as_str().expect("state"))
        .collect()
}

#[test]
fn status_changes_are_called_back_signed_retried_and_logged() {
    let receiver = Receiver::start(&["500 Internal Server Error", "500 Internal Server Error"]);
    let s = serve(&[
        "--allow-private-callbacks",
        "--callback-retry-base-ms",
        "100",
        "--callback-give-up-secs",
        "3",
    ]);
    let p = partner(&s.data, "Print Shop");
    let secret =
        p["callback_secret"].as_str().expect("create-partner prints the callback secret").to_string();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let hook = format!("{}/hooks/model", receiver.url);
        let (cookie, id, model) = upload_hooked(&c, base, &p, json!({"url": hook, "method": "PUT"})).await;
        assert_eq!(model["status"], "processed");

        // Two changes (processing, processed); the first two requests get
        // a 500, so there are four requests in all.
        let log = wait_for(&c, base, &cookie, &id, |l| states(l) == ["delivered", "delivered"]).await;
        let seen = receiver.seen();
        assert_eq!(seen.len(), 4, "{seen:#?}");
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        for r in &seen {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/hooks/model"));
            assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
            assert!(signature_is_valid(&secret, r), "bad signature on {r:#?}");
            assert!(!signature_is_valid("whsec_QW5vdGhlciBzZWNyZXQ=", r));
            let ts: u64 = r.headers["webhook-timestamp"].parse().expect("unix seconds");
            assert!(ts.abs_diff(now) < 300, "timestamp {ts} vs now {now}");
        }
        // Retries carry the same delivery id and count their attempts.
        let ids: Vec<(&str, &str)> = seen
            .iter()
            .map(|r| (r.headers["webhook-id"].as_str(), r.headers["x-strata-attempt"].as_str()))
            .collect();
        for (delivery, attempt) in &ids {
            let tries = ids.iter().filter(|(d, _)| d == delivery).count();
            assert!(attempt.parse::<usize>().expect("attempt") <= tries, "{ids:?}");
        }
        let bodies: Vec<Value> =
            seen.iter().map(|r| serde_json::from_str(&r.body).expect("json body")).collect();
        let processed =
            bodies.iter().find(|b| b["status"] == "processed").expect("the processed announcement");
        assert_eq!(processed["uri"], model["uri"]);
        assert_eq!(processed["previous_status"], "processing");
        assert_eq!(processed["event"], "model.status");
        assert!(bodies.iter().any(|b| b["status"] == "processing" && b["previous_status"] == "not-uploaded"));

        // The log shows every attempt with what the endpoint answered.
        let attempts: Vec<&Value> = log["callbacks"]
            .as_array()
            .expect("list")
            .iter()
            .flat_map(|c| c["attempts"].as_array().expect("a"))
            .collect();
        assert_eq!(attempts.len(), 4);
        assert_eq!(attempts.iter().filter(|a| a["status_code"] == 500).count(), 2, "{log:#}");
        assert_eq!(attempts.iter().filter(|a| a["status_code"] == 204 && a["error"].is_null()).count(), 2);
        assert!(attempts.iter().any(|a| a["error"].as_str().is_some_and(|e| e.contains("HTTP 500"))));

        // An endpoint that never answers: retried with growing waits, then
        // given up when the window (3 s here) closes.
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = format!("http://{}/hook", closed.local_addr().expect("addr"));
        drop(closed);
        let (dead_id, _) =
            upload_model_with_callback(&c, base, &cookie, crate::util::cube(), json!({"url": dead})).await;
        let log = wait_for(&c, base, &cookie, &dead_id, |l| states(l) == ["failed", "failed"]).await;
        for d in log["callbacks"].as_array().expect("list") {
            let n = d["attempts"].as_array().expect("attempts").len();
            // Fixed 100 ms waits would make ~30 attempts in 3 s; doubling
            // ones make about five.
            assert!((3..=8).contains(&n), "{n} attempts: {d:#}");
            assert!(
                d["attempts"][0]["error"].as_str().is_some_and(|e| e.contains("cannot connect")),
                "{d:#}"
            );
            assert!(d["next_attempt"].is_null());
        }
        // Another partner's model log is not readable.
        let other = partner(&s.data, "Other Shop");
        let oc = login(&c, base, &other).await;
        let r =
            c.get(format!("{base}/models/{id}/callbacks")).header("cookie", &oc).send().await.expect("log");
        assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    });
}

#[test]
fn callbacks_to_private_addresses_are_refused_by_default() {
    let receiver = Receiver::start(&[]);
    let s = serve(&[]);
    let p = partner(&s.data, "Print Shop");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let (cookie, id, _) =
            upload_hooked(&c, base, &p, json!({"url": format!("{}/hook", receiver.url)})).await;
        let log = wait_for(&c, base, &cookie, &id, |l| {
            l["callbacks"].as_array().is_some_and(|cs| {
                cs.len() == 2 && cs.iter().all(|c| c["attempts"].as_array().is_some_and(|a| !a.is_empty()))
            })
        })
        .await;
        for d in log["callbacks"].as_array().expect("list") {
            let e = d["attempts"][0]["error"].as_str().expect("an error");
            assert!(e.contains("127.0.0.1") && e.contains("not a public address"), "{e}");
        }
        assert!(receiver.seen().is_empty(), "a private address was called");

        // A callback URL that is not http(s) is refused when the model is made.
        let r = c
            .post(format!("{base}/models"))
            .header("cookie", &cookie)
            .json(&json!({"name": "x", "callback": {"url": "file:///etc/passwd"}}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "invalid_callback");
    });
}

#[test]
fn gone_stops_deliveries_and_retry_after_is_honoured() {
    // The first delivery: 503 asking for 2 s; the second: 410 Gone
    // (whichever of its retry and the second delivery arrives first).
    let receiver = Receiver::per_delivery(&["503 Service Unavailable\r\nretry-after: 2", "410 Gone"]);
    let s = serve(&["--allow-private-callbacks", "--callback-retry-base-ms", "100"]);
    let p = partner(&s.data, "Print Shop");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let (cookie, id, _) =
            upload_hooked(&c, base, &p, json!({"url": format!("{}/hook", receiver.url)})).await;
        let log =
            wait_for(&c, base, &cookie, &id, |l| states(l).len() == 2 && !states(l).contains(&"pending"))
                .await;
        let seen = receiver.seen();
        let id_of = |r: &Received| r.headers["webhook-id"].clone();
        // Request 1 got the 503 and asked for 2 s: its delivery waited that
        // long (not the 100 ms back-off) before trying again.
        let busy = id_of(&seen[0]);
        let retry = seen[1..].iter().find(|r| id_of(r) == busy).expect("the 503 was retried");
        let waited = retry.at - seen[0].at;
        assert!(waited >= Duration::from_millis(1900), "retried after {waited:?}");
        // The second delivery got 410 Gone: it failed at once, for good.
        let gone_id = seen.iter().map(id_of).find(|i| *i != busy).expect("a second delivery");
        assert_ne!(gone_id, busy, "{seen:#?}");
        let find = |id: &str| {
            log["callbacks"]
                .as_array()
                .expect("list")
                .iter()
                .find(|d| d["id"] == id)
                .expect("the delivery")
                .clone()
        };
        let gone = find(&gone_id);
        assert_eq!(gone["state"], "failed", "{gone:#}");
        assert_eq!(gone["attempts"].as_array().expect("attempts").len(), 1, "410 stops at once: {gone:#}");
        assert_eq!(gone["attempts"][0]["status_code"], 410);
        assert_eq!(find(&busy)["state"], "delivered");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            receiver.seen().iter().filter(|r| id_of(r) == gone_id).count(),
            1,
            "a gone endpoint was called again"
        );
    });
}
