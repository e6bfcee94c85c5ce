//! Hardening for the open internet (issue 18): what every response says
//! about its type, and the checks on where the server sends requests.

use reqwest::StatusCode;

use crate::server::{client, login, partner, rt, serve, upload_model};

/// Every response carries `nosniff`; chunks are attachments named by their
/// index, snapshots show inline under a file name (U6).
#[test]
fn responses_say_their_type_and_downloads_their_disposition() {
    let s = serve(&[]);
    let p = partner(&s.data, "Headers");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let (id, model) = upload_model(&c, base, &cookie, crate::util::cube()).await;
        let token = crate::printer::new_token(&c, base, &p["api_key"], &model).await;
        let nosniff = |r: &reqwest::Response| {
            r.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let disposition = |r: &reqwest::Response| {
            r.headers().get("content-disposition").and_then(|v| v.to_str().ok()).map(str::to_string)
        };

        let r = c.get(format!("{base}/streams/{token}/chunks/0")).send().await.expect("chunk");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(nosniff(&r).as_deref(), Some("nosniff"));
        assert_eq!(disposition(&r).as_deref(), Some("attachment; filename=\"chunk-000000.zst\""));

        for url in
            [format!("{base}/model/{id}/snapshot"), format!("{base}/model/{id}/snapshot?view=top&size=64")]
        {
            let r = c.get(&url).header("cookie", &cookie).send().await.expect("snapshot");
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            assert_eq!(r.headers()["content-type"], "image/png");
            assert_eq!(nosniff(&r).as_deref(), Some("nosniff"), "{url}");
            assert_eq!(disposition(&r).as_deref(), Some("inline; filename=\"snapshot.png\""), "{url}");
        }

        // JSON answers and JSON errors, authenticated or not.
        for (url, status) in [
            (format!("{base}/streams/{token}/manifest"), StatusCode::OK),
            (format!("{base}/prints/{token}"), StatusCode::OK),
            (format!("{base}/streams/not-a-token/manifest"), StatusCode::NOT_FOUND),
            (format!("{base}/model/{id}/"), StatusCode::UNAUTHORIZED),
            (format!("{base}/no/such/route"), StatusCode::NOT_FOUND),
        ] {
            let r = c.get(&url).send().await.expect("json");
            assert_eq!(r.status(), status, "{url}");
            assert!(
                r.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("application/json")),
                "{url}"
            );
            assert_eq!(nosniff(&r).as_deref(), Some("nosniff"), "{url}");
        }
    });
}

/// A callback URL on a public address but a port other than 80 and 443
/// is refused, and so is every IPv6 form that carries an internal IPv4
/// address (F1); the delivery log says why without naming addresses.
#[test]
fn callbacks_to_odd_ports_and_disguised_internal_addresses_are_refused() {
    let s = serve(&["--callback-retry-base-ms", "50", "--callback-give-up-secs", "1"]);
    let p = partner(&s.data, "Callbacks");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        for (url, why) in [
            ("http://93.184.216.34:8080/hook", "port 8080"),
            ("http://[::127.0.0.1]/hook", "not a public address"),
            ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "not a public address"),
            ("http://[2002:7f00:1::1]/hook", "not a public address"),
            ("http://[::ffff:0:7f00:1]/hook", "not a public address"),
            ("http://192.0.0.170/hook", "not a public address"),
            ("http://localhost:80/hook", "resolves to an address that is not public"),
        ] {
            let (id, _) = crate::server::upload_model_with_callback(
                &c,
                base,
                &cookie,
                crate::util::cube(),
                serde_json::json!({"url": url}),
            )
            .await;
            let log = wait_for_attempt(&c, base, &cookie, &id).await;
            let error = log["callbacks"][0]["attempts"][0]["error"].as_str().unwrap_or_default().to_string();
            assert!(error.contains(why), "{url}: {log}");
            if url.contains("localhost") {
                // What the name resolves to stays unsaid.
                assert!(!error.contains("127.0.0.1") && !error.contains("::1"), "{url}: {error}");
            }
        }
    });
}

async fn wait_for_attempt(c: &reqwest::Client, base: &str, cookie: &str, id: &str) -> serde_json::Value {
    for _ in 0..200 {
        let log = crate::server::get_json_as(c, &format!("{base}/model/{id}/callbacks"), cookie).await;
        if log["callbacks"][0]["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no callback attempt for {id}");
}

/// A declared `Content-Length` over the limit is refused before the body
/// is read, on both upload routes (U1), and a legacy upload onto a revoked
/// token is refused whether its fields come before or after the file.
#[test]
fn oversized_uploads_and_revoked_tokens_are_refused_before_the_body() {
    use std::io::{Read, Write};
    let s = serve(&["--upload-limit-mib", "1"]);
    let p = partner(&s.data, "Uploads");
    let key = p["api_key"].as_str().expect("key").to_string();
    let base = s.base.clone();
    let (upload, token) = rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &p).await;
        let (_, upload, _) =
            crate::server::create_model(&c, &base, &cookie, serde_json::json!({"name": "big"})).await;
        let r = c.get(format!("{base}/api3/api_create_partner_token?api_key={key}")).send().await.expect("t");
        let created: serde_json::Value = r.json().await.expect("json");
        let token = created["data"]["token"].as_str().expect("token").to_string();
        (upload, token)
    });
    let addr = base.trim_start_matches("http://").to_string();
    let spool = s.data.join("uploads");
    let spooled = || std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    // Headers only, declaring 600 MiB: the answer comes with no byte sent.
    let declared = |request_line: String, extra: &str| {
        let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        write!(conn, "{request_line}\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\n\r\n", 600u64 << 20)
            .expect("send");
        let mut answer = vec![0u8; 4096];
        let n = conn.read(&mut answer).expect("an answer before any body byte");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let path = upload.trim_start_matches(&base).to_string();
    let answer = declared(format!("PUT {path} HTTP/1.1"), "Content-Type: application/octet-stream\r\n");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    let answer = declared(
        format!("POST /api3/api_upload_partner_stl?api_key={key}&token={token} HTTP/1.1"),
        "Content-Type: multipart/form-data; boundary=xyz\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(spooled(), 0, "nothing was spooled");

    rt().block_on(async {
        let c = client();
        let r = c.delete(format!("{base}/tokens/{token}?api_key={key}")).send().await.expect("revoke");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let cube = crate::util::cube();
        let fields = [
            ("api_key", key.as_str()),
            ("token", token.as_str()),
            ("receiver_email", "a@b.example"),
            ("print_value", "1"),
        ];
        for fields_first in [true, false] {
            let body = if fields_first {
                crate::server::multipart("b0undary", &fields, &cube)
            } else {
                // The file first, then the fields.
                let mut b = crate::server::multipart("b0undary", &[], &cube);
                let end = b"--b0undary--\r\n";
                b.truncate(b.len() - end.len());
                for (k, v) in fields {
                    b.extend_from_slice(
                        format!("--b0undary\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                            .as_bytes(),
                    );
                }
                b.extend_from_slice(end);
                b
            };
            let r = client()
                .post(format!("{base}/api3/api_upload_partner_stl"))
                .header("content-type", "multipart/form-data; boundary=b0undary")
                .body(body)
                .send()
                .await
                .expect("upload");
            let text = r.text().await.expect("body");
            assert!(text.contains("token has been revoked"), "fields first: {fields_first}: {text}");
        }
    });
    assert_eq!(spooled(), 0, "no spool file is left behind");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Login as a weapon (A1, L4): a hundred concurrent wrong passwords run at
/// most the limit's number of hashes (the rest are 429 or 503 with
/// `Retry-After`) and memory stays bounded; one address spraying names is
/// limited too; an unknown name costs the same hash as a known one.
#[test]
fn concurrent_wrong_passwords_hash_only_up_to_the_limit_and_names_do_not_show() {
    let s = serve(&[]);
    let a = partner(&s.data, "Shop A");
    let base = s.base.clone();
    rt().block_on(async {
        let c = client();
        let login = |user: String, password: String| {
            let c = c.clone();
            let url = format!("{base}/sessions");
            async move {
                c.post(url).json(&serde_json::json!({"username": user, "password": password})).send().await
            }
        };
        // Timing first, on a quiet server: the median of a few tries each.
        let timed = |user: &'static str| {
            let login = &login;
            async move {
                let mut ms = Vec::new();
                for i in 0..5 {
                    let started = std::time::Instant::now();
                    let r = login(user.to_string(), format!("wrong-{i}")).await.expect("login");
                    assert_eq!(r.status(), StatusCode::FORBIDDEN);
                    ms.push(started.elapsed().as_secs_f64());
                }
                ms.sort_by(f64::total_cmp);
                ms[2]
            }
        };
        let known_name: &'static str =
            Box::leak(a["username"].as_str().expect("name").to_string().into_boxed_str());
        let known = timed(known_name).await;
        let unknown = timed("nobody-by-this-name").await;
        assert!(
            unknown > known * 0.25,
            "an unknown name answers in {unknown:.4} s, a known one in {known:.4} s"
        );

        let before = rss_kib(s.pid());
        let attempts: Vec<_> = (0..100).map(|i| login("victim".into(), format!("guess-{i}"))).collect();
        let answers = futures_util::future::join_all(attempts).await;
        let mut hashed = 0;
        for r in answers {
            let r = r.expect("answer");
            match r.status() {
                StatusCode::FORBIDDEN => hashed += 1,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(r.headers().contains_key("retry-after"));
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!(hashed <= 20, "{hashed} wrong passwords were checked, the limit is 20 a minute");
        let grown = rss_kib(s.pid()).saturating_sub(before);
        assert!(grown < 200 * 1024, "the server grew by {grown} KiB");
    });
    // One address spraying distinct names, on a server of its own: limited
    // over all names.
    let sprayed = serve(&[]);
    let base = sprayed.base.clone();
    rt().block_on(async {
        let c = client();
        let mut limited = None;
        for i in 0..80 {
            let r = c
                .post(format!("{base}/sessions"))
                .json(&serde_json::json!({"username": format!("sprayed-{i}-{}", "x".repeat(4000)), "password": "pw"}))
                .send()
                .await
                .expect("answer");
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                limited = Some(i);
                break;
            }
        }
        let at = limited.expect("an address is limited over all names");
        assert!(at <= 60, "limited only after {at} names");
    });
}

/// Sends `head` (with a Content-Length far beyond what follows), then a
/// byte every `every`, and returns the answer and how long it took.
fn drip(addr: &str, head: &str, every: std::time::Duration) -> (String, std::time::Duration) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_millis(10))).expect("timeout");
    let started = std::time::Instant::now();
    conn.write_all(head.as_bytes()).expect("head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < std::time::Duration::from_secs(60) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if let Ok(n) = conn.read(&mut buf) {
                        answer.extend_from_slice(&buf[..n]);
                    }
                    break;
                }
            }
            Err(_) => {
                // Nothing yet: the next byte, slowly.
                std::thread::sleep(every);
                if conn.write_all(b" ").is_err() {
                    // Closed: whatever was answered is in the buffer.
                    let _ = conn.read_to_end(&mut answer);
                    break;
                }
            }
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

/// Bodies without a minimum rate or deadline (L2): a JSON body dripping a
/// byte a second on an unauthenticated route is dropped at its deadline,
/// an upload dripping below the least rate after its grace, each with 408
/// `body_too_slow`, and the upload leaves no spool file.
#[test]
fn dripping_bodies_are_dropped_at_their_deadline_or_rate() {
    let s = serve(&[
        "--body-deadline-secs",
        "3",
        "--body-grace-secs",
        "2",
        "--body-min-rate",
        "100",
        "--upload-deadline-secs",
        "600",
    ]);
    let p = partner(&s.data, "Drips");
    let base = s.base.clone();
    let addr = base.trim_start_matches("http://").to_string();
    let every = std::time::Duration::from_millis(700);
    for path in ["/sessions", "/tokens", "/prints/0123456789abcdef0123456789abcdef/status"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        let (answer, took) = drip(&addr, &head, every);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("body_too_slow"), "{path}: {answer}");
        assert!(took < std::time::Duration::from_secs(10), "{path}: held {took:?}");
    }
    let upload = rt().block_on(async {
        let c = client();
        let cookie = login(&c, &base, &p).await;
        let (_, upload, _) =
            crate::server::create_model(&c, &base, &cookie, serde_json::json!({"name": "drip"})).await;
        upload
    });
    let path = upload.trim_start_matches(&base).to_string();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\nsolid");
    let (answer, took) = drip(&addr, &head, every);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("bytes a second"), "{answer}");
    assert!(took < std::time::Duration::from_secs(10), "held {took:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        std::fs::read_dir(s.data.join("uploads")).map(|d| d.count()).unwrap_or(0),
        0,
        "no spool file left"
    );
}

/// Whether the server closed `conn` within `limit` (a read answers 0 or an
/// error rather than timing out).
fn closed_within(conn: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    conn.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a 408, say) and then the close.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            }
        }
    }
}

/// Connections that never time out (L1, L3): silent sockets and sockets
/// that sent only a prefix of the HTTP/2 preface are closed at the header
/// deadline; past the global cap new connections are closed at once, and
/// a client gets through again once they are gone.
#[test]
fn silent_and_half_preface_connections_are_closed_and_the_cap_holds() {
    use std::io::Write;
    let s = serve(&["--header-read-timeout-secs", "2", "--max-connections", "30"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut silent: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect(&addr).expect("connect")).collect();
    let mut half: Vec<_> = (0..5)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).expect("connect");
            c.write_all(b"PRI * HTTP/2.0\r\n").expect("prefix");
            c
        })
        .collect();
    // Five more fill the cap of 30; the next ones are closed at once.
    let mut filling: Vec<_> = (0..5).map(|_| std::net::TcpStream::connect(&addr).expect("connect")).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut over = std::net::TcpStream::connect(&addr).expect("the kernel accepts");
    assert!(closed_within(&mut over, std::time::Duration::from_millis(1500)), "over the cap, left open");
    let started = std::time::Instant::now();
    for (i, c) in silent.iter_mut().chain(half.iter_mut()).chain(filling.iter_mut()).enumerate() {
        assert!(
            closed_within(c, std::time::Duration::from_secs(8)),
            "connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    // Room again: a real request is served.
    let r =
        rt().block_on(async { client().get(format!("{}/healthz", s.base)).send().await.expect("healthz") });
    assert_eq!(r.status(), StatusCode::OK);
}

/// A 3MF package holding `model` as its model part.
fn three_mf(model: &str) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflate = zip::write::SimpleFileOptions::default();
    zip.start_file("3D/3dmodel.model", deflate).expect("zip entry");
    zip.write_all(model.as_bytes()).expect("zip write");
    zip.finish().expect("zip finish").into_inner()
}

/// Models that cost far more than their bytes fail with the limit's code,
/// quickly, and the server goes on serving (Z1, P3).
#[test]
fn tall_models_and_amplifying_3mfs_fail_with_their_limit() {
    let s = serve(&["--max-model-memory-mib", "64", "--max-3mf-xml-mib", "1"]);
    let p = partner(&s.data, "Bombs");
    // 284 bytes: a tetrahedron 200 m tall, a million layers at 0.2 mm.
    let tall = {
        let v = [[0.0f32, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 200_000.0]];
        let mut stl = vec![0u8; 80];
        stl.extend_from_slice(&4u32.to_le_bytes());
        for f in [[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]] {
            stl.extend_from_slice(&[0u8; 12]);
            for i in f {
                for c in v[i] {
                    stl.extend_from_slice(&c.to_le_bytes());
                }
            }
            stl.extend_from_slice(&[0u8; 2]);
        }
        stl
    };
    assert_eq!(tall.len(), 284);
    let triangle = r#"<object id="1"><mesh><vertices><vertex x="0" y="0" z="0"/><vertex x="1" y="0" z="0"/>
        <vertex x="0" y="1" z="0"/><vertex x="0" y="0" z="1"/></vertices><triangles><triangle v1="0" v2="2" v3="1"/>
        <triangle v1="0" v2="1" v3="3"/><triangle v1="1" v2="2" v3="3"/><triangle v1="0" v2="3" v3="2"/></triangles></mesh></object>"#;
    let group: String = (0..1000)
        .map(|i| format!(r#"<component objectid="1" transform="1 0 0 0 1 0 0 0 1 {} 0 0"/>"#, 2 * i))
        .collect();
    let amplified = three_mf(&format!(
        r#"<model unit="millimeter"><resources>{triangle}<object id="2"><components>{group}</components></object></resources><build>{}</build></model>"#,
        r#"<item objectid="2"/>"#.repeat(1000)
    ));
    let inflating = three_mf(&format!(
        r#"<model unit="millimeter"><resources>{triangle}</resources>{}<build><item objectid="1"/></build></model>"#,
        "<!-- padding -->\n".repeat(100_000)
    ));
    assert!(inflating.len() < 64 << 10, "{} bytes deflated", inflating.len());
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        for (name, bytes, code, says) in [
            ("tall", tall, "too_many_layers", "the limit is 100000"),
            ("amplified", amplified, "memory_limit", "over the job's 67108864-byte memory limit"),
            ("inflating", inflating, "bad_container", "over the 1048576-byte limit"),
        ] {
            let clock = std::time::Instant::now();
            let (_, model) = upload_model(&c, base, &cookie, bytes).await;
            assert_eq!(model["status"], "error", "{name}: {model}");
            assert_eq!(model["error"]["code"], code, "{name}: {model}");
            let message = model["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{name}: {model}");
            assert!(
                clock.elapsed() < std::time::Duration::from_secs(10),
                "{name} took {:?}",
                clock.elapsed()
            );
        }
        // Still serving, and a real model is processed beside them.
        let (_, cube) = upload_model(&c, base, &cookie, crate::util::cube()).await;
        assert_eq!(cube["status"], "processed", "{cube}");
    });
}

/// A keep-alive HTTP/1 connection idle after its answer is closed after
/// the header timeout (hyper starts it again for every next request);
/// within it, the connection serves the next request (L1).
#[test]
fn idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    use std::io::{Read, Write};
    let s = serve(&["--header-read-timeout-secs", "2"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    let ask = |conn: &mut std::net::TcpStream| {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: strata\r\n\r\n").expect("send");
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("\"ok\"") {
            let n = conn.read(&mut buf).expect("answer");
            assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    };
    ask(&mut conn);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    ask(&mut conn);
    let idle = std::time::Instant::now();
    assert!(
        closed_within(&mut conn, std::time::Duration::from_secs(6)),
        "an idle keep-alive connection stayed open"
    );
    let after = idle.elapsed();
    assert!(after >= std::time::Duration::from_millis(1500), "closed too soon: {after:?}");
}

/// Every version of these crates in `Cargo.lock` is at least the release
/// that fixed what the reason names (a Cargo.lock edited by hand, or a
/// `cargo update --precise` downgrade, fails here); and the SQLite that
/// rusqlite bundles is one with the fixes we rely on.
#[test]
fn dependencies_in_cargo_lock_meet_their_security_floors() {
    const FLOORS: &[(&str, &str, &str)] = &[
        ("h2", "0.4.4", "RUSTSEC-2024-0332, CONTINUATION frame flood"),
        ("hyper", "1.4.0", "the HTTP/1 header read timeout that also closes idle keep-alive connections"),
        ("idna", "1.0.0", "RUSTSEC-2024-0421, punycode labels that pass host checks"),
        ("url", "2.5.4", "idna 1.0 (host checks of callback and provider URLs)"),
        ("crossbeam-channel", "0.5.15", "RUSTSEC-2025-0024, double free on drop"),
        ("tokio", "1.44.2", "RUSTSEC-2025-0023, broadcast channel unsoundness"),
        ("zip", "2.3.0", "CVE-2025-29787, path traversal through symlinks"),
        ("ring", "0.17.12", "RUSTSEC-2025-0009, AES panic on overflow"),
        ("rustls", "0.23.18", "RUSTSEC-2024-0399, a panic in the server acceptor"),
        ("jsonwebtoken", "12.0.0", "RFC 8725 algorithm checks"),
    ];
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).expect("Cargo.lock");
    let parse =
        |v: &str| -> Vec<u64> { v.split(['.', '-', '+']).take(3).map(|p| p.parse().unwrap_or(0)).collect() };
    for (name, floor, why) in FLOORS {
        let versions: Vec<&str> = lock
            .split("[[package]]")
            .filter(|p| p.lines().any(|l| l == format!("name = \"{name}\"")))
            .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"')))
            .collect();
        for v in &versions {
            assert!(parse(v) >= parse(floor), "{name} {v} is older than {floor}: {why}");
        }
        // A crate that leaves the tree needs no floor; say so, so the table
        // is pruned rather than silently passing.
        if versions.is_empty() {
            eprintln!("note: {name} is no longer in Cargo.lock; its floor can go");
        }
    }
    // SQLite 3.44 or later (CVE-2023-7104 was fixed in 3.43.1).
    let sqlite = rusqlite::version();
    assert!(parse(sqlite) >= parse("3.44.0"), "bundled SQLite {sqlite}");
}

/// Whether the SPDX expression `license` is satisfied by `allow`: `OR`
/// (also the old `/`) needs one side, `AND` both, `WITH` names one
/// licence with its exception.
fn license_allowed(license: &str, allow: &[String]) -> bool {
    let spaced = license.replace('(', " ( ").replace(')', " ) ").replace('/', " OR ");
    let tokens: Vec<String> = spaced.split_whitespace().map(str::to_string).collect();
    fn expr(t: &[String], i: &mut usize, allow: &[String]) -> bool {
        let mut any = term(t, i, allow);
        while t.get(*i).is_some_and(|s| s.eq_ignore_ascii_case("or")) {
            *i += 1;
            any |= term(t, i, allow);
        }
        any
    }
    fn term(t: &[String], i: &mut usize, allow: &[String]) -> bool {
        let mut all = factor(t, i, allow);
        while t.get(*i).is_some_and(|s| s.eq_ignore_ascii_case("and")) {
            *i += 1;
            all &= factor(t, i, allow);
        }
        all
    }
    fn factor(t: &[String], i: &mut usize, allow: &[String]) -> bool {
        let Some(first) = t.get(*i).cloned() else { return false };
        *i += 1;
        if first == "(" {
            let inner = expr(t, i, allow);
            *i += 1; // ")"
            return inner;
        }
        let mut id = first;
        if t.get(*i).is_some_and(|s| s == "WITH") {
            id = format!("{id} WITH {}", t.get(*i + 1).cloned().unwrap_or_default());
            *i += 2;
        }
        allow.contains(&id)
    }
    let mut i = 0;
    expr(&tokens, &mut i, allow) && i == tokens.len()
}

/// Every package in the build, ours included, is under a licence on
/// `deny.toml`'s allow list (cargo-deny's licence check, without needing
/// cargo-deny installed); a copyleft-only crate fails here.
#[test]
fn every_dependency_license_is_on_the_allow_list() {
    let root = env!("CARGO_MANIFEST_DIR");
    let deny: toml_edit::DocumentMut =
        std::fs::read_to_string(format!("{root}/deny.toml")).expect("deny.toml").parse().expect("TOML");
    let allow: Vec<String> = deny["licenses"]["allow"]
        .as_array()
        .expect("licenses.allow")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert!(license_allowed("MIT OR LGPL-2.1-or-later", &allow));
    assert!(!license_allowed("GPL-3.0-only", &allow));
    assert!(!license_allowed("MIT AND GPL-3.0-only", &allow));
    assert!(license_allowed("(MIT OR Apache-2.0) AND Unicode-3.0", &allow));
    // The packages built for this machine (others need not be downloaded).
    let rustc = std::process::Command::new("rustc").arg("-vV").output().expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            &host,
            "--manifest-path",
        ])
        .arg(format!("{root}/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    assert!(packages.len() > 100, "{} packages", packages.len());
    let refused: Vec<String> = packages
        .iter()
        .filter(|p| !p["license"].as_str().is_some_and(|l| license_allowed(l, &allow)))
        .map(|p| format!("{} {}: {}", p["name"], p["version"], p["license"]))
        .collect();
    assert!(refused.is_empty(), "licences not on deny.toml's allow list:\n{}", refused.join("\n"));
}
