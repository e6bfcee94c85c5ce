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

/// `n` random bytes from the OS generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    // The OS generator failing is not something to go on from.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
    bytes
}

/// `n` random bytes as lower-case hex (2n digits) from the OS generator.
pub fn random_hex(n: usize) -> String {
    hex(&random_bytes(n))
}

/// A random number from the OS generator (for jitter, not for secrets).
pub fn random_u64() -> u64 {
    random_bytes(8).iter().fold(0, |n, &b| n << 8 | u64::from(b))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The message an upload URL signs: method, model and expiry, so none of
/// them can be changed without the signature failing.
pub fn upload_message(model_id: &str, expires: i64) -> String {
    format!("PUT\n/uploads/{model_id}\n{expires}")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cookies_are_found_by_exact_name() {
        assert_eq!(cookie(Some("a=1; session=xyz; b=2"), "session"), Some("xyz"));
        assert_eq!(cookie(Some("mysession=xyz"), "session"), None);
        assert_eq!(cookie(None, "session"), None);
        assert_eq!(random_hex(16).len(), 32);
    }
}
