//! Random ids and secrets from the OS generator.

/// `n` random bytes from the OS generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    // The OS generator failing is not something to go on from.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
    bytes
}

/// `n` random bytes as lower-case hex (2n digits).
pub fn random_hex(n: usize) -> String {
    hex::encode(random_bytes(n))
}

/// A random (version 4) UUID, hyphenated.
pub fn uuid_v4() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A fresh callback signing secret, as Standard Webhooks write them:
/// `whsec_` and the base64 of 32 random bytes.
pub fn callback_secret() -> String {
    use base64::Engine;
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(random_bytes(32)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_version_4_and_distinct() {
        let (a, b) = (super::uuid_v4(), super::uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
        assert!(super::callback_secret().starts_with("whsec_"));
    }
}
