//! Scoped JWTs for model-id calls and embedding (seed 003), issued and
//! checked the RFC 8725 way.
//!
//! - Keys are Ed25519 (`alg: EdDSA`, fixed: a token naming any other
//!   algorithm, `none` included, is refused before its signature is
//!   looked at, so an HS256 token "signed" with our public key goes
//!   nowhere). Each key has a `kid`; tokens are signed with the newest and
//!   checked with whichever key their `kid` names exactly (no paths, no
//!   lookups). Keys live in `DATA/jwt-keys.json` (0600, written
//!   atomically); [`Keyring::rotate`] adds a key and keeps the old ones for
//!   checking until they are retired. The public keys are served as a JWK
//!   set at `/.well-known/jwks.json`.
//! - Headers that point elsewhere for a key (`jku`, `x5u`, `jwk`, `x5c`)
//!   are refused outright: nothing is ever fetched.
//! - `typ` is checked per token kind (`at+jwt` for access tokens, RFC
//!   9068), so a token of one kind cannot stand in for another.
//! - `iss` (this server), `aud` (this server's API), `sub` (the partner),
//!   `exp`, `nbf`, `iat` (all required, with [`LEEWAY_SECS`] of leeway),
//!   `scope` (space-separated) and `jti` are required; claims of the wrong
//!   JSON type (an `exp` given as a string) fail to parse.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "jwt-keys.json";

/// The clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// `typ` of the access tokens this server issues.
pub const ACCESS_TYP: &str = "at+jwt";
/// The longest an issued token lives.
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// Permissions a token may carry. `backend` stands for the backend-only
/// ones (ticket creation, settings that enforce product features): it is
/// only issued to a partner's own servers (`strata admin issue-jwt`, or
/// a partner credential), never to a browser user.
pub const SCOPES: &[&str] = &[
    "backend",
    "auth.session",
    "get.model",
    "file.download",
    "get.export.*",
    "compute.export.*",
    "get.output.*",
    "setting.auth.ticket.get.*",
    "setting.auth.token.get.*",
    "get.statistic.*",
];

/// What a token may say and must say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: this server.
    pub iss: String,
    /// Audience: this server's API.
    pub aud: String,
    /// Subject: the partner's id.
    pub sub: String,
    /// Space-separated permissions (see [`SCOPES`]).
    pub scope: String,
    /// The one model it is for, when limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Not before, unix seconds.
    pub nbf: u64,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
}

impl Claims {
    /// Whether the token grants `permission` (exactly, or through a
    /// `prefix.*` scope).
    pub fn grants(&self, permission: &str) -> bool {
        self.scope.split(' ').any(|s| {
            s == permission || s.strip_suffix('*').is_some_and(|prefix| permission.starts_with(prefix))
        })
    }
}

/// Why a token was not issued or not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a JWT at all (or not one this server could have issued).
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// The header names an algorithm other than EdDSA (`none` included).
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// The header's `typ` is not the one this use expects.
    #[error("the token is not of the expected type")]
    Type,
    /// No key of this server has the token's `kid`.
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The header points elsewhere for a key (`jku`, `x5u`, `jwk`, `x5c`).
    #[error("the token's header points at a key elsewhere, which is never trusted")]
    ForeignKey,
    /// The signature does not verify.
    #[error("the token's signature is not valid")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not this server.
    #[error("the token was issued by someone else")]
    Issuer,
    /// `aud` is not this server's API.
    #[error("the token is meant for someone else")]
    Audience,
    /// A claim is missing or of the wrong type.
    #[error("the token's claims are missing or malformed")]
    Claims,
    /// A scope asked for is unknown, or not for this holder.
    #[error("scope {0:?} cannot be issued here")]
    Scope(String),
    /// The key file could not be read or written.
    #[error("the JWT keys: {0}")]
    Keys(String),
}

/// One signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// PKCS#8 (DER) of the Ed25519 key pair, base64.
    pkcs8: String,
    /// The raw 32-byte public key, base64url (the JWK's `x`).
    x: String,
    /// Unix seconds.
    created: u64,
}

/// What `DATA/jwt-keys.json` holds: the issuer name fixed when the file
/// was made (so `strata serve` and `strata admin issue-jwt` agree), and
/// the keys, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyFile {
    issuer: String,
    keys: Vec<StoredKey>,
}

/// This server's JWT keys: the newest signs, all verify.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<StoredKey>,
    decoding: BTreeMap<String, DecodingKey>,
    issuer: String,
}

fn new_key(now: u64) -> Result<StoredKey, JwtError> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| JwtError::Keys(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| JwtError::Keys(e.to_string()))?;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(StoredKey {
        kid: crate::auth::random_hex(8),
        pkcs8: base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref()),
        x: b64url.encode(pair.public_key().as_ref()),
        created: now,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Keyring {
    /// The keys in `path`, made (one key, atomically, mode 0600) when the
    /// file is missing, with `issuer` as the name this server gives itself
    /// in `iss` and `aud` (kept in the file from then on).
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<Keyring, JwtError> {
        let read = |bytes: &[u8]| {
            serde_json::from_slice::<KeyFile>(bytes)
                .map_err(|e| JwtError::Keys(format!("{}: {e}", path.display())))
        };
        let file = match std::fs::read(path) {
            Ok(bytes) => read(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = KeyFile { issuer: issuer.to_string(), keys: vec![new_key(now_secs())?] };
                write_keys(path, &file, false)?;
                // Another process may have made the file first: its keys win.
                read(&std::fs::read(path).map_err(|e| JwtError::Keys(e.to_string()))?)?
            }
            Err(e) => return Err(JwtError::Keys(format!("{}: {e}", path.display()))),
        };
        Keyring::from_keys(file.keys, &file.issuer)
    }

    /// The name this server gives itself in `iss` and `aud`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn from_keys(keys: Vec<StoredKey>, issuer: &str) -> Result<Keyring, JwtError> {
        if keys.is_empty() {
            return Err(JwtError::Keys("the key file holds no key".into()));
        }
        let mut decoding = BTreeMap::new();
        for k in &keys {
            let key = DecodingKey::from_ed_components(&k.x).map_err(|e| JwtError::Keys(e.to_string()))?;
            decoding.insert(k.kid.clone(), key);
        }
        Ok(Keyring { keys, decoding, issuer: issuer.to_string() })
    }

    /// Adds a new signing key to `path`, keeping the old ones for checking
    /// tokens already issued; the new key's `kid`.
    pub fn rotate(path: &Path, issuer: &str) -> Result<(Keyring, String), JwtError> {
        let mut ring = Keyring::load_or_create(path, issuer)?;
        let key = new_key(now_secs())?;
        let kid = key.kid.clone();
        ring.keys.push(key);
        let file = KeyFile { issuer: ring.issuer.clone(), keys: ring.keys };
        write_keys(path, &file, true)?;
        ring = Keyring::from_keys(file.keys, &file.issuer)?;
        Ok((ring, kid))
    }

    /// The public keys as a JWK set (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": k.x, "kid": k.kid, "alg": "EdDSA", "use": "sig"}))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Issues an access token for partner `sub` with `scopes` (each one of
    /// [`SCOPES`]; `backend` only when `backend_allowed`), optionally for
    /// one model, living `ttl_secs` (at most [`MAX_TTL_SECS`]).
    pub fn issue(
        &self,
        sub: &str,
        scopes: &[String],
        model: Option<&str>,
        ttl_secs: u64,
        backend_allowed: bool,
    ) -> Result<String, JwtError> {
        for s in scopes {
            if !SCOPES.contains(&s.as_str()) || (s == "backend" && !backend_allowed) {
                return Err(JwtError::Scope(s.clone()));
            }
        }
        if scopes.is_empty() {
            return Err(JwtError::Scope(String::new()));
        }
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.issuer.clone(),
            sub: sub.to_string(),
            scope: scopes.join(" "),
            model: model.map(str::to_string),
            exp: now + ttl_secs.clamp(1, MAX_TTL_SECS),
            nbf: now,
            iat: now,
            jti: crate::auth::uuid_v4(),
        };
        self.sign(&claims, ACCESS_TYP)
    }

    fn sign(&self, claims: &Claims, typ: &str) -> Result<String, JwtError> {
        let key = self.keys.last().ok_or_else(|| JwtError::Keys("no signing key".into()))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(&key.pkcs8)
            .map_err(|e| JwtError::Keys(e.to_string()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_string());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der))
            .map_err(|e| JwtError::Keys(e.to_string()))
    }

    /// Checks an access token (see the module documentation); its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_typ(token, ACCESS_TYP)
    }

    fn verify_typ(&self, token: &str, typ: &str) -> Result<Claims, JwtError> {
        if token.len() > 8192 {
            return Err(JwtError::Malformed);
        }
        // The header is read on its own first, so that nothing about an
        // unacceptable token (its algorithm, where it says its key is) is
        // ever acted on.
        let header = raw_header(token)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("EdDSA") {
            return Err(JwtError::Algorithm);
        }
        if ["jku", "x5u", "jwk", "x5c", "x5t", "crit"].iter().any(|h| header.get(*h).is_some()) {
            return Err(JwtError::ForeignKey);
        }
        if header.get("typ").and_then(|t| t.as_str()).map(str::to_ascii_lowercase).as_deref() != Some(typ) {
            return Err(JwtError::Type);
        }
        let kid = header.get("kid").and_then(|k| k.as_str()).ok_or(JwtError::UnknownKey)?;
        let key = self.decoding.get(kid).ok_or(JwtError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => JwtError::Signature,
                K::ExpiredSignature => JwtError::Expired,
                K::ImmatureSignature => JwtError::NotYetValid,
                K::InvalidIssuer => JwtError::Issuer,
                K::InvalidAudience => JwtError::Audience,
                K::InvalidAlgorithm => JwtError::Algorithm,
                K::MissingRequiredClaim(_) | K::Json(_) => JwtError::Claims,
                _ => JwtError::Malformed,
            }
        })?;
        // `iat` in the future is as suspect as `nbf` in the future.
        if data.claims.iat > now_secs() + LEEWAY_SECS {
            return Err(JwtError::NotYetValid);
        }
        Ok(data.claims)
    }
}

/// The JOSE header of `token` as JSON, unchecked.
fn raw_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

fn write_keys(path: &Path, keys: &KeyFile, replace: bool) -> Result<(), JwtError> {
    let err = |e: std::io::Error| JwtError::Keys(format!("{}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new().prefix(".jwt-keys").tempfile_in(dir).map_err(err)?;
    #[cfg(unix)]
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(err)?;
    let json = serde_json::to_vec_pretty(keys).map_err(|e| JwtError::Keys(e.to_string()))?;
    std::io::Write::write_all(&mut tmp, &json).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    if replace {
        tmp.persist(path).map_err(|e| err(e.error))?;
    } else {
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e.error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://strata.test";

    fn ring() -> (tempfile::TempDir, Keyring) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::load_or_create(&dir.path().join("jwt-keys.json"), ISS).expect("keys");
        (dir, ring)
    }

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with this header and these claims, signed by `ring`'s key
    /// (over exactly these bytes) when `sign`.
    fn forged(ring: &Keyring, header: serde_json::Value, claims: serde_json::Value) -> String {
        let key = ring.keys.last().expect("key");
        let der = base64::engine::general_purpose::STANDARD.decode(&key.pkcs8).expect("der");
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der).expect("pair");
        let message = format!("{}.{}", b64(&header), b64(&claims));
        let sig = pair.sign(message.as_bytes());
        format!("{message}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn good_claims() -> serde_json::Value {
        let now = now_secs();
        serde_json::json!({"iss": ISS, "aud": ISS, "sub": "p1", "scope": "get.model", "exp": now + 600,
            "nbf": now, "iat": now, "jti": "j1"})
    }

    fn good_header(ring: &Keyring) -> serde_json::Value {
        serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ring.keys.last().expect("key").kid})
    }

    #[test]
    fn an_issued_token_verifies_and_carries_its_scopes() {
        let (_dir, ring) = ring();
        let t = ring
            .issue("p1", &scopes(&["get.model", "get.export.*"]), Some("m1"), 600, false)
            .expect("issued");
        let c = ring.verify(&t).expect("verifies");
        assert_eq!((c.sub.as_str(), c.model.as_deref()), ("p1", Some("m1")));
        assert!(c.grants("get.model") && c.grants("get.export.stl") && !c.grants("backend"));
        // The forging helper makes tokens the verifier accepts when nothing
        // is wrong with them, so each refusal below is the rule's.
        ring.verify(&forged(&ring, good_header(&ring), good_claims())).expect("a well-formed forged token");
    }

    #[test]
    fn backend_and_unknown_scopes_are_not_issued_to_users() {
        let (_dir, ring) = ring();
        assert_eq!(
            ring.issue("p1", &scopes(&["backend"]), None, 60, false),
            Err(JwtError::Scope("backend".into()))
        );
        assert_eq!(
            ring.issue("p1", &scopes(&["admin"]), None, 60, true),
            Err(JwtError::Scope("admin".into()))
        );
        assert!(ring.issue("p1", &scopes(&["backend"]), None, 60, true).is_ok());
    }

    #[test]
    fn every_bad_header_is_refused_before_its_signature_is_checked() {
        let (_dir, ring) = ring();
        let kid = ring.keys.last().expect("key").kid.clone();
        let claims = good_claims();
        let cases = [
            (serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}), JwtError::Algorithm),
            (serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}), JwtError::Algorithm),
            (serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": kid}), JwtError::Algorithm),
            (serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}), JwtError::Type),
            (serde_json::json!({"alg": "EdDSA", "kid": kid}), JwtError::Type),
            (serde_json::json!({"alg": "EdDSA", "typ": "link+jwt", "kid": kid}), JwtError::Type),
            (serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "unknown"}), JwtError::UnknownKey),
            (
                serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "../../dev/null"}),
                JwtError::UnknownKey,
            ),
            (serde_json::json!({"alg": "EdDSA", "typ": "at+jwt"}), JwtError::UnknownKey),
            (
                serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": "http://127.0.0.1:9/jwks"}),
                JwtError::ForeignKey,
            ),
            (
                serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "x5u": "http://127.0.0.1:9/cert"}),
                JwtError::ForeignKey,
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                ring.verify(&forged(&ring, header.clone(), claims.clone())),
                Err(expected),
                "{header}"
            );
        }
        // `alg: none` with an empty signature, as the attack sends it.
        let none = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "at+jwt"})), b64(&claims));
        assert_eq!(ring.verify(&none), Err(JwtError::Algorithm));
        // HS256 "signed" with our public key as the HMAC secret.
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&ring.keys[0].x).expect("x");
        let hs_header = serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
        let message = format!("{}.{}", b64(&hs_header), b64(&claims));
        let mac = crate::auth::hmac_sha256(&public, &message);
        let hs = format!("{message}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac));
        assert_eq!(ring.verify(&hs), Err(JwtError::Algorithm));
    }

    #[test]
    fn bad_claims_times_and_signatures_are_refused() {
        let (_dir, ring) = ring();
        let header = good_header(&ring);
        let now = now_secs();
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good_claims();
            c[k] = v;
            c
        };
        let cases = [
            (with("exp", (now - 120).into()), JwtError::Expired),
            (with("nbf", (now + 600).into()), JwtError::NotYetValid),
            (with("iat", (now + 600).into()), JwtError::NotYetValid),
            (with("aud", "https://other.test".into()), JwtError::Audience),
            (with("iss", "https://other.test".into()), JwtError::Issuer),
            (with("exp", format!("{}", now + 600).into()), JwtError::Claims),
            (with("sub", serde_json::Value::Null), JwtError::Claims),
        ];
        for (claims, expected) in cases {
            assert_eq!(
                ring.verify(&forged(&ring, header.clone(), claims.clone())),
                Err(expected),
                "{claims}"
            );
        }
        // Within the leeway: an `exp` 30 s ago still passes.
        ring.verify(&forged(&ring, header.clone(), with("exp", (now - 30).into()))).expect("within leeway");
        // A changed payload breaks the signature; so does a truncated one.
        let t = ring.issue("p1", &scopes(&["get.model"]), None, 600, false).expect("issued");
        let mut parts: Vec<&str> = t.split('.').collect();
        let escalated = b64(&with("scope", "backend".into()));
        parts[1] = &escalated;
        assert_eq!(ring.verify(&parts.join(".")), Err(JwtError::Signature));
        let truncated = ring.verify(&t[..t.len() - 4]);
        assert!(matches!(truncated, Err(JwtError::Signature | JwtError::Malformed)), "{truncated:?}");
        // A print token (random hex) or garbage is not a JWT.
        assert_eq!(ring.verify(&crate::auth::random_hex(16)), Err(JwtError::Malformed));
        assert_eq!(ring.verify(""), Err(JwtError::Malformed));
    }

    #[test]
    fn a_rotated_ring_signs_with_the_new_key_and_still_checks_old_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwt-keys.json");
        let old = Keyring::load_or_create(&path, ISS).expect("keys");
        let before = old.issue("p1", &scopes(&["get.model"]), None, 600, false).expect("issued");
        let (ring, kid) = Keyring::rotate(&path, ISS).expect("rotated");
        let after = ring.issue("p1", &scopes(&["get.model"]), None, 600, false).expect("issued");
        assert_eq!(raw_header(&after).expect("h")["kid"], kid.as_str());
        ring.verify(&before).expect("an old token still verifies");
        // Reloaded from disk: the same two keys, both published.
        let again = Keyring::load_or_create(&path, ISS).expect("reload");
        again.verify(&after).expect("verifies after reload");
        assert_eq!(again.jwks()["keys"].as_array().map(Vec::len), Some(2));
        // The issuer is the file's, whatever a later opener proposes.
        let other_name = Keyring::load_or_create(&path, "https://elsewhere.test").expect("reload");
        assert_eq!(other_name.issuer(), ISS);
        // Another server's keys do not verify ours.
        let other = tempfile::tempdir().expect("tempdir");
        let stranger = Keyring::load_or_create(&other.path().join("k.json"), ISS).expect("keys");
        assert_eq!(stranger.verify(&after), Err(JwtError::UnknownKey));
    }
}
