//! Callbacks: when a partner model's status changes, its callback URL gets
//! a signed JSON body, retried with exponential back-off until it is
//! accepted or the retry window (24 h by default) closes.
//!
//! # What the partner receives
//! `POST` (or `PUT`, as the model asked) with `Content-Type:
//! application/json` and the body `{"event": "model.status", "uri", "id",
//! "name", "status", "previous_status", "error", "changed"}`, signed the
//! Standard Webhooks way (<https://www.standardwebhooks.com>), so the
//! partner can verify it with any of that spec's libraries:
//! - `webhook-id`: the delivery id (the same on every retry, so the
//!   receiver can drop duplicates);
//! - `webhook-timestamp`: unix seconds when this attempt was signed;
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
//!   `"{webhook-id}.{webhook-timestamp}.{body}"` under the partner's
//!   callback secret (`whsec_` + base64 key bytes, printed by
//!   `strata admin create-partner`). Signing the timestamp lets the
//!   receiver refuse replays of an old delivery;
//! - `x-strata-attempt`: 1 for the first try.
//!
//! Any 2xx answer is a delivery. 410 Gone stops the deliveries at once.
//! Anything else (another status, a redirect, a refused connection, no
//! answer within 10 s) is retried after `base * 2^(attempt-1)` (capped at
//! an hour, with up to 10% jitter), or after the endpoint's own
//! `Retry-After` when that is longer. Every attempt is logged and readable
//! at `GET /model/{id}/callbacks`.
//!
//! # Server-side request forgery
//! A callback URL is chosen by whoever holds a partner session, so by
//! default the server refuses to call addresses that are not public
//! (loopback, private, link-local, unique-local, unspecified, multicast):
//! the host is resolved, every address is checked, and the request goes to
//! the checked address (so a DNS answer cannot change between the check
//! and the call). `--allow-private-callbacks` lifts this for local set-ups.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_pipeline::db::{CallbackAttempt, now_ms};

use crate::auth;
use crate::state::AppState;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is left to its sender before it counts as
/// abandoned (longer than any attempt).
const LEASE_MS: i64 = 60_000;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Deliveries sent at once.
const CONCURRENT: usize = 16;

/// The sender: runs for the server's life, claiming due deliveries and
/// sending them, at most [`CONCURRENT`] at a time.
pub(crate) async fn run(state: Arc<AppState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    loop {
        let claimed = state.db_call(|db| db.claim_due_callbacks(now_ms(), LEASE_MS, CONCURRENT as i64));
        match claimed {
            Ok(due) => {
                for (callback, secret) in due {
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let st = state.clone();
                    tokio::spawn(async move {
                        deliver(&st, callback, secret).await;
                        drop(permit);
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "callbacks: cannot read the queue"),
        }
        // Sleep until the next delivery is due, a new one is queued, or a
        // second has passed (a lease may have run out meanwhile).
        let next = state.db_read(|db| db.next_callback_due()).ok().flatten();
        let wait = next.map_or(Duration::from_secs(1), |at| {
            Duration::from_millis((at - now_ms()).clamp(0, 1000) as u64)
        });
        if wait.is_zero() && slots.available_permits() == 0 {
            // Everything is busy: wait for a slot rather than spin.
            let _ = slots.acquire().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
            _ = state.callbacks_due.notified() => {}
        }
    }
}

async fn deliver(state: &AppState, c: strata_pipeline::db::Callback, secret: Option<String>) {
    let attempt = c.attempts + 1;
    let at = now_ms();
    let started = Instant::now();
    let outcome = match secret {
        Some(secret) => send(state, &c, &secret, attempt).await,
        None => Err("the partner has no callback secret".to_string()),
    };
    let (status_code, error, retry_after) = match &outcome {
        Ok((code, _)) if (200..300).contains(code) => (Some(i64::from(*code)), None, None),
        Ok((410, _)) => {
            (Some(410), Some("the endpoint answered 410 Gone: no more attempts".to_string()), None)
        }
        Ok((code, wait)) => {
            (Some(i64::from(*code)), Some(format!("the endpoint answered HTTP {code}")), *wait)
        }
        Err(e) => (None, Some(e.clone()), None),
    };
    let delivered = error.is_none();
    let gone = status_code == Some(410);
    let outcome = if delivered {
        "delivered"
    } else if gone {
        "gone"
    } else {
        "failed"
    };
    metrics::counter!("strata_callback_deliveries_total", "outcome" => outcome).increment(1);
    let wait =
        backoff(state, attempt).max(retry_after.map_or(0, |s| s.min(MAX_BACKOFF.as_secs()) as i64 * 1000));
    let retry_at = (!delivered && !gone).then(|| now_ms() + wait).filter(|t| *t <= c.give_up_at);
    let record = CallbackAttempt {
        attempt,
        at,
        status_code,
        error,
        duration_ms: started.elapsed().as_millis() as i64,
    };
    if let Err(e) = state.db_call(|db| db.record_callback_attempt(&c.id, &record, delivered, retry_at)) {
        tracing::error!(delivery = %c.id, attempt, error = %e, "callbacks: cannot record the attempt");
    }
}

/// The wait before attempt `attempt + 1`, in ms.
fn backoff(state: &AppState, attempt: i64) -> i64 {
    let base = state.config.callback_retry_base.as_millis() as i64;
    let exp = base.saturating_mul(1i64 << (attempt - 1).clamp(0, 40));
    let capped = exp.min(MAX_BACKOFF.as_millis() as i64).max(1);
    let jitter = auth::random_u64() % (capped as u64 / 10 + 1);
    capped + jitter as i64
}

/// The Standard Webhooks signature of one delivery: `v1,` and the base64
/// HMAC-SHA256 of `"{id}.{timestamp}.{body}"` under the secret's key
/// bytes (the base64 after `whsec_`; a secret without the prefix is used
/// as it is).
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = match secret.strip_prefix("whsec_").map(|k| engine.decode(k)) {
        Some(Ok(key)) => key,
        _ => secret.as_bytes().to_vec(),
    };
    format!("v1,{}", engine.encode(auth::hmac_sha256(&key, &format!("{id}.{timestamp}.{body}"))))
}

/// A new callback secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    strata_pipeline::ids::callback_secret()
}

/// One attempt: the HTTP status and its `Retry-After` in seconds, or why
/// there was no answer.
async fn send(
    state: &AppState,
    c: &strata_pipeline::db::Callback,
    secret: &str,
    attempt: i64,
) -> Result<(u16, Option<u64>), String> {
    // Checked here for a clear message; the client's resolver checks again
    // when it connects, so a name that changes its answer in between
    // (rebinding) cannot slip through, and the connection goes to an
    // address that passed.
    check_destination(&c.url, state.config.allow_private_callbacks, &state.config.callback_ports).await?;
    let url = reqwest::Url::parse(&c.url).map_err(|e| format!("bad URL: {e}"))?;
    let client = &state.callback_http;
    let timestamp = now_ms() / 1000;
    let signature = signature(secret, &c.id, timestamp, &c.body);
    let method = if c.method == "PUT" { reqwest::Method::PUT } else { reqwest::Method::POST };
    let response = client
        .request(method, url)
        .header("content-type", "application/json")
        .header("webhook-id", &c.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("x-strata-attempt", attempt.to_string())
        .body(c.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let retry_after =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(retry_after_secs);
    Ok((response.status().as_u16(), retry_after))
}

/// A `Retry-After` value in seconds: delay-seconds, or an HTTP date
/// (RFC 9110 10.2.3; a date in the past is no wait).
fn retry_after_secs(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).map_or(0, |d| d.as_secs()))
}

/// The one HTTP client callbacks go out through: no redirects, a timeout
/// per attempt, and a resolver that refuses names with a private address
/// unless they are allowed (so connections go only to checked addresses).
pub(crate) fn client(allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .dns_resolver(Arc::new(CheckedResolver { allow_private }))
        .user_agent(concat!("strata-callbacks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Resolves with the system resolver, then refuses the name if any of its
/// addresses is not public (unless private ones are allowed).
#[derive(Debug)]
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("refused: {host} resolves to an address that is not public").into();
                return Err(refused);
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    // The resolver's refusal is somewhere in the chain of causes.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.starts_with("refused:") {
            return text;
        }
        source = s.source();
    }
    // Never the error's own text: it may name the address connected to.
    if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_request() || e.is_body() {
        "the connection failed while sending".to_string()
    } else {
        "no valid HTTP answer".to_string()
    }
}

/// Whether `ip` is an address on the public internet.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // IETF protocol assignments 192.0.0/24, 6to4 relays 192.88.99/24.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 192 && o[1] == 88 && o[2] == 99)
                // Shared address space (carrier-grade NAT), 100.64/10.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // Benchmarking, 198.18/15; reserved, 240/4.
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            // Forms that carry an IPv4 address: the address is what counts.
            // IPv4-compatible ::a.b.c.d (also :: and ::1), mapped
            // ::ffff:a.b.c.d, translated ::ffff:0:a.b.c.d, NAT64
            // 64:ff9b::/96.
            if s[..6] == [0; 6]
                || s[..6] == [0, 0, 0, 0, 0, 0xffff]
                || s[..6] == [0, 0, 0, 0, 0xffff, 0]
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            {
                return is_public(IpAddr::V4(low));
            }
            // 6to4 2002:a.b.c.d::/48.
            if s[0] == 0x2002 {
                let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_multicast()
                // Local-use NAT64 64:ff9b:1::/48, discard-only 100::/64.
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
                // Teredo 2001::/32 (tunnels to an address it hides) and
                // the rest of the IETF block 2001::/23 but for its
                // global-unicast assignments.
                || (s[0] == 0x2001 && s[1] == 0)
                // Unique local fc00::/7, link-local fe80::/10, site-local
                // fec0::/10.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // Documentation 2001:db8::/32 and 3fff::/20.
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] & 0xfff0) == 0x3ff0)
        }
    }
}

/// Checks where a callback or a provider request goes: http(s), no
/// credentials in the URL, a port of `ports` (all ports when private
/// addresses are allowed), and only public addresses unless private ones
/// are allowed. The reason is never what an internal name resolves to.
pub(crate) async fn check_destination(url: &str, allow_private: bool, ports: &[u16]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("refused: scheme {} (only http and https)", parsed.scheme()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("refused: a URL with credentials".into());
    }
    let host = parsed.host_str().ok_or("the URL has no host")?.to_string();
    let port = parsed.port_or_known_default().ok_or("the URL has no port")?;
    if allow_private {
        return Ok(());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let (addrs, literal): (Vec<SocketAddr>, bool) = match bare.parse::<IpAddr>() {
        Ok(ip) => (vec![SocketAddr::new(ip, port)], true),
        Err(_) => match tokio::net::lookup_host((bare, port)).await {
            Ok(a) => (a.collect(), false),
            Err(_) => return Err(format!("cannot resolve {host}")),
        },
    };
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if addrs.iter().any(|a| !is_public(a.ip())) {
        let what =
            if literal { "is not a public address" } else { "resolves to an address that is not public" };
        return Err(format!(
            "refused: {host} {what} (start the server with --allow-private-callbacks to allow it)"
        ));
    }
    if !ports.contains(&port) {
        let allowed: Vec<String> = ports.iter().map(u16::to_string).collect();
        return Err(format!("refused: port {port} (allowed: {})", allowed.join(", ")));
    }
    Ok(())
}

/// The delivery log of a model, as `GET /model/{id}/callbacks` answers it.
pub(crate) fn log_json(state: &AppState, model_id: &str) -> Result<serde_json::Value, crate::api::ApiError> {
    let log = state.db_read(|db| db.callbacks_of(model_id))?;
    let iso = crate::routes::iso8601;
    let deliveries: Vec<serde_json::Value> = log
        .into_iter()
        .map(|(c, attempts)| {
            serde_json::json!({
                "id": c.id,
                "url": c.url,
                "method": c.method,
                "state": c.state,
                "body": serde_json::from_str::<serde_json::Value>(&c.body).unwrap_or(serde_json::Value::Null),
                "attempts": attempts.iter().map(|a| serde_json::json!({
                    "attempt": a.attempt,
                    "at": iso(a.at),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                })).collect::<Vec<_>>(),
                "next_attempt": (c.state == strata_pipeline::db::CallbackState::Pending).then(|| iso(c.next_attempt_at)),
                "give_up_at": iso(c.give_up_at),
                "created": iso(c.created_at),
            })
        })
        .collect();
    Ok(serde_json::json!({"callbacks": deliveries}))
}

#[cfg(test)]
mod retry_tests {
    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(super::retry_after_secs(" 120 "), Some(120));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let secs = super::retry_after_secs(&httpdate::fmt_http_date(later)).expect("a date");
        assert!((3590..=3600).contains(&secs), "{secs}");
        assert_eq!(super::retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0), "past: no wait");
        assert_eq!(super::retry_after_secs("soon"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        // The spec's published vector (also Svix's), byte for byte; the
        // expected value was checked independently with Python's hmac.
        let body = r#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = signature(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            body,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert_ne!(
            signature("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_other", 1_649_367_553, body),
            sig
        );
        assert!(new_secret().starts_with("whsec_") && new_secret() != new_secret());
    }

    #[test]
    fn destinations_are_checked_for_scheme_credentials_port_and_address() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let check = |url: &str| rt.block_on(check_destination(url, false, &[80, 443]));
        assert_eq!(check("https://93.184.216.34/hook"), Ok(()));
        assert_eq!(check("http://93.184.216.34:80/hook"), Ok(()));
        for (url, why) in [
            ("http://93.184.216.34:8080/hook", "port 8080"),
            ("http://93.184.216.34:22/", "port 22"),
            ("ftp://93.184.216.34/", "scheme ftp"),
            ("http://user:pw@93.184.216.34/", "credentials"),
            ("http://[::127.0.0.1]/", "not a public address"),
            ("http://[::ffff:0:7f00:1]/", "not a public address"),
            ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data", "not a public address"),
            ("http://[2002:7f00:1::1]/", "not a public address"),
            ("http://192.0.0.170/", "not a public address"),
        ] {
            let e = check(url).expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
        }
        // A name with an internal address: refused, without saying which.
        let e = check("http://localhost/hook").expect_err("localhost");
        assert!(e.contains("resolves to an address that is not public"), "{e}");
        assert!(!e.contains("127.0.0.1") && !e.contains("::1"), "{e}");
        // The operator's own port list.
        assert_eq!(rt.block_on(check_destination("http://93.184.216.34:8443/", false, &[8443])), Ok(()));
        // Private addresses allowed: any port (local set-ups).
        assert_eq!(rt.block_on(check_destination("http://127.0.0.1:9/", true, &[80, 443])), Ok(()));
    }

    #[test]
    fn only_public_addresses_are_called() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            // Every transition form is judged by the IPv4 address it carries.
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "fec0::1",
            "3fff::1",
            "192.0.0.8",
            "192.0.0.170",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private} counted as public");
        }
        for public in
            ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "64:ff9b::5db8:d822", "2002:5db8:d822::1"]
        {
            assert!(is_public(public.parse().expect("ip")), "{public} counted as private");
        }
    }
}
