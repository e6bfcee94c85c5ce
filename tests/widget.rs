//! The widget in a real headless Chromium, driven over the DevTools
//! protocol: it must show the model's snapshot, name and value, follow the
//! print's status live (polling with the server's Retry-After hints), fit
//! a 400x400 frame, and say clearly when a link is not valid.
//!
//! Chromium comes from Debian (`apt-get install chromium`); `.ci/run`
//! installs it and sets `STRATA_REQUIRE_BROWSER=1`, so in CI a missing
//! browser is a failure. Elsewhere the test says it skipped, so the
//! README's test command still passes with only the Rust toolchain.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::server::{client, login, partner, rt, serve, upload_model};
use crate::util::repo_datasets;

/// A headless Chromium with one page of 400x400, killed on drop.
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<String> {
    let candidates =
        [std::env::var("STRATA_CHROMIUM").unwrap_or_default(), "chromium".into(), "chromium-browser".into()];
    candidates.into_iter().filter(|c| !c.is_empty()).find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl Browser {
    /// Starts the browser, or `None` (with a note) when there is none and
    /// none is required.
    fn launch() -> Option<Browser> {
        let Some(exe) = chromium() else {
            assert!(
                std::env::var_os("STRATA_REQUIRE_BROWSER").is_none(),
                "STRATA_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)"
            );
            eprintln!(
                "skipped: no chromium on this machine (apt-get install chromium to run the widget test)"
            );
            return None;
        };
        let profile = tempfile::tempdir().expect("profile");
        // The flags a closed sandbox needs: no sandbox as root, no GPU, and
        // no background connections to Google's hosts.
        let mut child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let endpoint =
            rx.recv_timeout(Duration::from_secs(30)).expect("chromium printed its DevTools address");
        let (ws, _) = tungstenite::connect(endpoint.as_str()).expect("DevTools connection");
        let mut b = Browser { child, ws, session: String::new(), next_id: 0, _profile: profile };
        let target = b.call(
            "Target.createTarget",
            json!({"url": "about:blank", "newWindow": true, "width": 400, "height": 400}),
        );
        let attached =
            b.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        b.session = attached["sessionId"].as_str().expect("session").to_string();
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 400, "height": 400, "deviceScaleFactor": 1, "mobile": false}),
        );
        b.call("Page.enable", json!({}));
        Some(b)
    }

    /// Sends one command and waits for its answer (events are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).expect("send");
        loop {
            let reply = self.ws.read().expect("read");
            let Ok(text) = reply.to_text() else { continue };
            let v: Value = serde_json::from_str(text).expect("json");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("document.readyState === 'complete'", Duration::from_secs(20));
    }

    /// Waits until `expression` is true in the page.
    fn wait_for(&mut self, expression: &str, limit: Duration) {
        let started = Instant::now();
        while self.eval(expression) != json!(true) {
            assert!(
                started.elapsed() < limit,
                "{expression} never held; page: {}",
                self.eval("document.body && document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        crate::util::base64_decode(r["data"].as_str().expect("data"))
    }
}

/// Every element of the page lies inside the 400x400 frame and nothing
/// scrolls.
const FITS: &str = "(() => { const d = document.documentElement; \
    const inside = [...document.querySelectorAll('body *')].every(e => { const r = e.getBoundingClientRect(); \
    return r.width === 0 || (r.left >= 0 && r.top >= 0 && r.right <= 400 && r.bottom <= 400); }); \
    return inside && d.scrollWidth <= 400 && d.scrollHeight <= 400; })()";

#[test]
fn the_widget_shows_the_print_live_in_a_400_by_400_frame() {
    let Some(mut browser) = Browser::launch() else { return };
    let s = serve(&[]);
    let p = partner(&s.data, "Print Shop");
    let spot = std::fs::read(repo_datasets().join("spot.obj")).expect("spot");
    let (token, base) = rt().block_on(async {
        let c = client();
        let base = s.base.clone();
        let cookie = login(&c, &base, &p).await;
        let (_, model) = upload_model(&c, &base, &cookie, spot).await;
        let r = c
            .post(format!("{base}/tokens"))
            .json(&json!({"api_key": p["api_key"], "receiver_email": "ann@example.com", "model": model["uri"], "print_value": "4.20", "print_value_currency": "EUR"}))
            .send()
            .await
            .expect("token");
        let token = r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
        let r = c.post(format!("{base}/prints/{token}/status")).json(&json!({"printing_job_status": "WARMING_UP"})).send().await.expect("status");
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        (token, base)
    });

    browser.open(&format!("{base}/widget?token={token}"));
    browser.wait_for(
        "document.getElementById('status').dataset.status === 'WARMING_UP'",
        Duration::from_secs(10),
    );
    assert_eq!(browser.eval("document.getElementById('name').textContent"), "Authentise logo");
    assert_eq!(browser.eval("document.getElementById('value').textContent"), "4.20 EUR");
    assert_eq!(browser.eval("document.getElementById('status').textContent"), "Warming up");
    // The snapshot really loaded (a broken image has no natural size).
    browser.wait_for("document.getElementById('snap').complete", Duration::from_secs(10));
    assert!(
        browser.eval("document.getElementById('snap').naturalWidth").as_u64().unwrap_or(0) > 0,
        "the snapshot did not load"
    );
    assert_eq!(browser.eval(FITS), json!(true), "the widget overflows its 400x400 frame");

    // The screenshot: exactly the frame, and not blank (the snapshot, the
    // text and the bar draw something).
    let png = browser.screenshot();
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("png");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("frame");
    assert_eq!((info.width, info.height), (400, 400));
    let channels = info.color_type.samples();
    let inked =
        pixels[..info.buffer_size()].chunks(channels).filter(|p| p[..3].iter().any(|&c| c < 200)).count();
    let share = inked as f64 / (400.0 * 400.0);
    assert!(share > 0.05 && share < 0.9, "{:.1}% of the frame is drawn", share * 100.0);

    // Live: the printer reports progress; the page picks it up on its next
    // poll (Retry-After: 5 while warming up), without a reload.
    rt().block_on(async {
        let r = client()
            .post(format!("{base}/prints/{token}/status"))
            .json(&json!({"printing_job_status": "PRINTING", "printing_percentage": 42}))
            .send()
            .await
            .expect("status");
        assert_eq!(r.status(), reqwest::StatusCode::OK);
    });
    browser
        .wait_for("document.getElementById('status').dataset.status === 'PRINTING'", Duration::from_secs(15));
    assert_eq!(browser.eval("document.getElementById('status').textContent"), "Printing · 42%");
    assert_eq!(browser.eval("document.getElementById('bar').style.width"), "42%");
    assert_eq!(browser.eval("performance.getEntriesByType('navigation').length"), 1, "the page reloaded");

    // An unknown token gets a clear page, still inside the frame.
    browser.open(&format!("{base}/widget?token={}", "0".repeat(32)));
    assert_eq!(browser.eval("document.getElementById('name').textContent"), "Link not valid");
    assert!(
        browser
            .eval("document.body.innerText")
            .as_str()
            .is_some_and(|t| t.contains("unknown or has expired"))
    );
    assert_eq!(browser.eval(FITS), json!(true));
}
