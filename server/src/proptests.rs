//! Property tests of the server's small parsers, on every `cargo test`:
//! arbitrary input never panics, and what is accepted is within bounds.
//! They stand beside the cargo-fuzz targets of the core (`fuzz/`), which
//! do not build this crate.

use base64::Engine;
use proptest::prelude::*;

use crate::routes::printers::parse_range;
use crate::routes::tus::parse_checksum;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any `Range` header: `None`, or a non-empty range inside the body.
    #[test]
    fn ranges_are_inside_the_body(header in "\\PC{0,40}", len in 0u64..1_000_000) {
        if let Some((start, end)) = parse_range(&header, len) {
            prop_assert!(start < end && end <= len, "{header:?} -> {start}..{end} of {len}");
        }
    }

    /// Well-formed `bytes=a-b`: exactly RFC 9110's answer.
    #[test]
    fn byte_ranges_follow_rfc_9110(a in 0u64..2000, b in 0u64..2000, len in 0u64..1500) {
        let expect = (a <= b && a < len).then(|| (a, (b + 1).min(len)));
        prop_assert_eq!(parse_range(&format!("bytes={a}-{b}"), len), expect);
        let suffix = (b > 0 && len > 0).then(|| (len.saturating_sub(b), len));
        prop_assert_eq!(parse_range(&format!("bytes=-{b}"), len), suffix);
    }

    /// `Upload-Checksum`: anything parses or is refused; a real sha256
    /// digest comes back as its bytes.
    #[test]
    fn checksums_parse_or_are_refused(header in "\\PC{0,80}", digest in any::<[u8; 32]>()) {
        let _ = parse_checksum(&header);
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        prop_assert_eq!(parse_checksum(&format!("sha256 {b64}")).ok(), Some(digest));
        let sha1 = format!("sha1 {b64}");
        prop_assert!(parse_checksum(&sha1).is_err());
    }

    /// Capability signatures: only the right HMAC verifies.
    #[test]
    fn only_the_right_signature_verifies(key in proptest::collection::vec(any::<u8>(), 1..64), message in "\\PC{0,100}", forged in "\\PC{0,140}") {
        let good = crate::auth::sign(&key, &message);
        prop_assert!(crate::auth::verify(&key, &message, &good));
        if forged != good {
            prop_assert!(!crate::auth::verify(&key, &message, &forged));
        }
        let other = format!("{message}x");
        prop_assert!(!crate::auth::verify(&key, &other, &good));
    }

    /// Provider requests (Standard Webhooks): arbitrary headers and bodies
    /// are refused, never accepted or panicked on.
    #[test]
    fn forged_provider_requests_are_refused(
        id in proptest::option::of("\\PC{0,80}"),
        ts in proptest::option::of("[0-9 -]{0,20}"),
        sigs in proptest::option::of("\\PC{0,200}"),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
        let r = crate::providers::verify(&secrets, id.as_deref(), ts.as_deref(), sigs.as_deref(), &body, 1_700_000_000);
        prop_assert!(r.is_err());
    }

    /// JSON and form bodies: parsed or refused with a 4xx, whatever the bytes.
    #[test]
    fn bodies_parse_or_are_refused(body in proptest::collection::vec(any::<u8>(), 0..300), kind in 0usize..4) {
        let content_type = [Some("application/json"), Some("application/x-www-form-urlencoded"), Some("text/plain"), None][kind];
        if let Err(e) = crate::api::parse_body(content_type, &body) {
            prop_assert!(e.status.is_client_error(), "{}", e.status);
        }
        let _ = crate::api::form_to_json(&body);
        let _ = crate::api::parse_json::<serde_json::Value>(Some("application/json"), &body);
    }
}
