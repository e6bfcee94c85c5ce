//! Entry points for the cargo-fuzz targets in `fuzz/` (`range`, `checksum`,
//! `signatures`, `json_body`, `multipart`): each takes arbitrary bytes,
//! runs one of the server's parsers of untrusted input on them and
//! asserts what must hold whatever the bytes. They are public only so
//! that the fuzz crate can reach parsers that are private to the routes;
//! nothing else should call them.
//!
//! `tests/fuzz_corpus.rs` replays the kept corpus (`fuzz/corpus/server/`)
//! through every entry point on each `cargo test`.

use std::sync::OnceLock;

use futures_util::TryStreamExt;
use warp::Buf;

use crate::routes::printers::parse_range;
use crate::routes::tus::parse_checksum;

/// `Range` against a body length: the first 8 bytes are the length, the
/// rest the header. An accepted range is non-empty and inside the body.
pub fn range(data: &[u8]) {
    let (len, header) = split_u64(data);
    let len = len % (1 << 40);
    if let Some((start, end)) = parse_range(&String::from_utf8_lossy(header), len) {
        assert!(start < end && end <= len, "{start}..{end} of {len}");
    }
}

/// `Upload-Checksum`: refused, or exactly 32 bytes of a `sha256` value.
pub fn checksum(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    if parse_checksum(&header).is_ok() {
        assert!(header.trim_start().to_ascii_lowercase().starts_with("sha256 "), "{header:?}");
    }
}

/// Capability signatures, provider (Standard Webhooks) signatures and
/// JWTs: the input's lines are the signature, headers and token; none of
/// them verifies without the key, and none panics.
pub fn signatures(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(5, '\n');
    let (a, b, c, d) = (lines.next(), lines.next(), lines.next(), lines.next());
    let body = lines.next().unwrap_or("").as_bytes();
    let key = b"strata-fuzz-capability-key";
    let message = a.unwrap_or("");
    let forged = b.unwrap_or("");
    if forged != crate::auth::sign(key, message) {
        assert!(!crate::auth::verify(key, message, forged));
    }
    let secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
    assert!(crate::providers::verify(&secrets, a, b, c, body, 1_700_000_000).is_err());
    if let Some(keys) = keyring() {
        for token in [a, b, c, d].into_iter().flatten() {
            assert!(keys.verify(token).is_err(), "a forged JWT verified: {token:?}");
        }
    }
}

/// JSON and form bodies: parsed, or refused with a 4xx. The first byte
/// picks the content type.
pub fn json_body(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else { return };
    let content_type =
        [Some("application/json"), Some("application/x-www-form-urlencoded"), Some("text/plain"), None]
            [usize::from(kind % 4)];
    if let Err(e) = crate::api::parse_body(content_type, body) {
        assert!(e.status.is_client_error(), "{}", e.status);
    }
    let _ = crate::api::parse_json::<serde_json::Value>(Some("application/json"), body);
}

/// A `multipart/form-data` body through warp's parser, as the legacy
/// upload reads it (every part's name and data, fields capped). The first
/// line is the boundary. The number of parts read whole.
pub fn multipart(data: &[u8]) -> usize {
    let (boundary, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"X"[..], data),
    };
    let boundary = String::from_utf8_lossy(boundary).replace(['\r', '"'], "");
    // A header a client could send at all (hyper refuses the others).
    let Ok(content_type) =
        http::HeaderValue::from_str(&format!("multipart/form-data; boundary=\"{boundary}\""))
    else {
        return 0;
    };
    let request = warp::test::request().method("POST").header("content-type", content_type).body(body);
    let filter = warp::multipart::form().max_length(Some(1 << 20));
    runtime().block_on(async move {
        let Ok(mut form) = request.filter(&filter).await else { return 0 };
        let mut parts = 0;
        while let Ok(Some(mut part)) = form.try_next().await {
            let _ = (part.name().len(), part.filename(), part.content_type());
            let mut total = 0usize;
            loop {
                match part.data().await {
                    Some(Ok(chunk)) => total += chunk.remaining(),
                    Some(Err(_)) => return parts,
                    None => break,
                }
                assert!(total <= 1 << 20, "more data than the whole form");
            }
            parts += 1;
        }
        parts
    })
}

fn split_u64(data: &[u8]) -> (u64, &[u8]) {
    let mut len = [0u8; 8];
    let n = data.len().min(8);
    len[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(len), &data[n..])
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime")
    })
}

fn keyring() -> Option<&'static crate::jwt::Keyring> {
    static KEYS: OnceLock<Option<crate::jwt::Keyring>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("strata-fuzz-jwt-{}.json", std::process::id()));
        let keys = crate::jwt::Keyring::load_or_create(&path, "strata-fuzz").ok();
        let _ = std::fs::remove_file(&path);
        keys
    })
    .as_ref()
}
