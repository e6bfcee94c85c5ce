//! Secrets: random ids, password hashes, key hashes and signed URLs.
//!
//! Passwords are argon2id (the crate's defaults: m=19 MiB, t=2, p=1);
//! API keys and session ids are long random values, stored as their
//! SHA-256 and compared by looking the hash up. Upload URLs are signed
//! with HMAC-SHA256 under the server's secret and checked with
//! `Mac::verify_slice` (constant time; a hand-written compare over `zip`
//! would accept an empty signature).

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use strata_pipeline::ids::{random_bytes, random_hex, uuid_v4};

/// A random number from the OS generator (for jitter, not for secrets).
pub fn random_u64() -> u64 {
    random_bytes(8).iter().fold(0, |n, &b| n << 8 | u64::from(b))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// SHA-256 hex of a secret (API key, session id) for storage and lookup.
pub fn secret_hash(secret: &str) -> String {
    strata_pipeline::core::stream::sha256_hex(secret.as_bytes())
}

/// The argon2id PHC string of `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(bytes).into()
}

/// A PHC string to verify against when the name is unknown, so an unknown
/// name costs the same hash as a known one (no enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

/// Whether `password` matches `hash`, or, with no hash (an unknown name),
/// `false` after the same work.
pub fn verify_password_or_decoy(password: &str, hash: Option<&str>) -> bool {
    match hash {
        Some(h) => verify_password(password, h),
        None => {
            let _ = verify_password(password, decoy_hash());
            false
        }
    }
}

/// Password checks that may wait for a hashing slot beyond those running.
pub const HASH_QUEUE: usize = 16;

/// Password hashing off the reactor, bounded: `slots` threads of its own
/// hash (each needs argon2's 19 MiB, reused by the same thread's allocator
/// arena, so memory stays at `slots` x 19 MiB however many requests come),
/// at most `queue` checks wait, and the rest are refused at once
/// ([`HashBusy`]) rather than queued without bound.
#[derive(Debug)]
pub struct HashPool {
    jobs: std::sync::mpsc::SyncSender<HashJob>,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// The hashing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once")]
pub struct HashBusy;

impl HashPool {
    /// A pool of `slots` hashing threads and `queue` waiting checks.
    pub fn new(slots: usize, queue: usize) -> HashPool {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<HashJob>(queue);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..slots.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("strata-hash-{i}")).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        HashPool { jobs }
    }

    /// Runs `f` (a password hash or check) on the pool's threads, or
    /// refuses when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashBusy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).map_err(|_| HashBusy)?;
        rx.await.map_err(|_| HashBusy)
    }
}

/// An HMAC-SHA256 over `message` under `key`, ready to finish or verify.
fn mac(key: &[u8], message: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(message.as_bytes());
    mac
}

/// HMAC-SHA256 of `message` under `key`, as bytes.
pub fn hmac_sha256(key: &[u8], message: &str) -> [u8; 32] {
    mac(key, message).finalize().into_bytes().into()
}

/// HMAC-SHA256 of `message` under `key`, as hex.
pub fn sign(key: &[u8], message: &str) -> String {
    hex(&hmac_sha256(key, message))
}

/// Whether `signature_hex` is the HMAC-SHA256 of `message` under `key`
/// (constant time in the signature's bytes).
pub fn verify(key: &[u8], message: &str, signature_hex: &str) -> bool {
    let Some(sig) = unhex(signature_hex) else { return false };
    mac(key, message).verify_slice(&sig).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    // Signatures are 32 bytes; anything much longer is not one.
    if s.len() > 128 {
        return None;
    }
    ::hex::decode(s).ok()
}

/// The message a capability URL signs: its method, its path and its
/// expiry (unix seconds), so none of them can be changed without the
/// signature failing.
pub fn capability_message(method: &str, path: &str, expires: i64) -> String {
    format!("{method}\n{path}\n{expires}")
}

/// The message an upload URL signs (a capability to `PUT /uploads/{id}`).
pub fn upload_message(model_id: &str, expires: i64) -> String {
    capability_message("PUT", &format!("/uploads/{model_id}"), expires)
}

/// The user name and password of an `Authorization: Basic` header.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || value.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The value of cookie `name` in a `Cookie` header (parsed by `headers`).
pub fn cookie(header: Option<&str>, name: &str) -> Option<String> {
    use headers::Header;
    let value = http::HeaderValue::from_str(header?).ok()?;
    let cookies = headers::Cookie::decode(&mut std::iter::once(&value)).ok()?;
    cookies.get(name).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_pool_runs_a_few_queues_a_few_and_refuses_the_rest() {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        rt.block_on(async {
            let pool = std::sync::Arc::new(HashPool::new(1, 2));
            let (release, hold) = std::sync::mpsc::channel::<()>();
            let hold = std::sync::Arc::new(std::sync::Mutex::new(hold));
            let job =
                |pool: std::sync::Arc<HashPool>,
                 hold: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>| {
                    tokio::spawn(async move {
                        pool.run(move || {
                            let _ = hold.lock().map(|h| h.recv());
                        })
                        .await
                    })
                };
            // The first is taken by the one thread, then the queue fills.
            let mut tasks = vec![job(pool.clone(), hold.clone())];
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            tasks.extend((0..5).map(|_| job(pool.clone(), hold.clone())));
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            for _ in 0..3 {
                let _ = release.send(());
            }
            let mut ran = 0;
            let mut refused = 0;
            for t in tasks {
                match t.await.expect("task") {
                    Ok(()) => ran += 1,
                    Err(HashBusy) => refused += 1,
                }
            }
            assert_eq!((ran, refused), (3, 3), "one running, two queued, three refused");
        });
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn signatures_refuse_every_mutation() {
        let key = b"secret";
        let msg = upload_message("m1", 100);
        let sig = sign(key, &msg);
        assert!(verify(key, &msg, &sig));
        for bad in ["", "0", &sig[..sig.len() - 2], &format!("{sig}00"), &format!("{sig}{sig}"), "zz"] {
            assert!(!verify(key, &msg, bad), "{bad:?} accepted");
        }
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!verify(key, &msg, &String::from_utf8(flipped).expect("hex")));
        assert!(!verify(key, &upload_message("m2", 100), &sig), "other model");
        assert!(!verify(key, &upload_message("m1", 101), &sig), "other expiry");
        assert!(!verify(b"other", &msg, &sig), "other key");
    }

    #[test]
    fn basic_credentials_and_uuids() {
        // RFC 7617's example.
        assert_eq!(
            basic_credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(basic_credentials("basic YTpiOmM="), Some(("a".into(), "b:c".into())));
        for bad in ["Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Basic !!!", "Basic YWJj", "Basic", ""] {
            assert_eq!(basic_credentials(bad), None, "{bad:?}");
        }
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4', "{u}");
        assert!(matches!(u.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{u}");
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        assert_eq!(cookie(Some("a=1; session=xyz; b=2"), "session").as_deref(), Some("xyz"));
        assert_eq!(cookie(Some("mysession=xyz"), "session"), None);
        assert_eq!(cookie(None, "session"), None);
        assert_eq!(random_hex(16).len(), 32);
    }
}
