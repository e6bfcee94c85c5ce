//! The rules for embedding a model in web pages (seed 003): which browser
//! origins a ticket admits, and what a ticket's request must say.
//!
//! An origin is `scheme://host[:port]` exactly as browsers serialise it
//! (RFC 6454): a lower-case scheme, an ASCII host (IDNs arrive as
//! punycode), an optional port. An allowed entry matches an origin only
//! when scheme, host and port are all equal; `*.example.com` (with its
//! scheme) admits subdomains of `example.com` by name, never
//! `example.com` itself and never a host that merely ends in the text
//! (`ok.com.evil.com` is not `*.ok.com`'s). `null`, a path, userinfo, a
//! query or anything non-ASCII is not an origin.

/// A parsed origin: scheme, host (lower-case), port (the scheme's default
/// made explicit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

impl Origin {
    /// `text` as an origin, or `None` when it is not one (`null`, a path,
    /// userinfo, a query, non-ASCII, another scheme than http(s)).
    pub fn parse(text: &str) -> Option<Origin> {
        Origin::parse_pattern(text, false)
    }

    fn parse_pattern(text: &str, wildcard: bool) -> Option<Origin> {
        if !text.is_ascii() || text.len() > 300 {
            return None;
        }
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let port_default = default_port(&scheme)?;
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '\\', ' ']) {
            return None;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().ok()?),
            _ => (rest, port_default),
        };
        let host = host.to_ascii_lowercase();
        let labels_ok = |h: &str| {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        let ok = match host.strip_prefix("*.") {
            Some(base) if wildcard => labels_ok(base),
            _ => labels_ok(&host) || (host.starts_with('[') && host.ends_with(']')),
        };
        ok.then_some(Origin { scheme, host, port })
    }

    /// Whether this origin is admitted by `entry` (an origin, or a
    /// `scheme://*.domain[:port]` wildcard).
    pub fn matches(&self, entry: &str) -> bool {
        let Some(allowed) = Origin::parse_pattern(entry.trim(), true) else { return false };
        if allowed.scheme != self.scheme || allowed.port != self.port {
            return false;
        }
        match allowed.host.strip_prefix("*.") {
            Some(base) => self.host.strip_suffix(base).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => allowed.host == self.host,
        }
    }
}

/// Whether the browser `origin` (the `Origin` header) may open a session
/// on a ticket allowing `ticket_domains`, or when those are empty the
/// model's `model_domains`.
pub fn origin_allowed(origin: &str, ticket_domains: &[String], model_domains: &[String]) -> bool {
    let Some(origin) = Origin::parse(origin) else { return false };
    let entries = if ticket_domains.is_empty() { model_domains } else { ticket_domains };
    entries.iter().any(|e| origin.matches(e))
}

/// Checks an allowed-origin entry as a partner gives it: an origin or a
/// wildcard, with a scheme.
pub fn valid_entry(entry: &str) -> bool {
    Origin::parse_pattern(entry.trim(), true).is_some()
}

/// A ticket's `until` (`YYYYMMDDhhmmss`, UTC) as unix ms.
pub fn parse_until(until: &str) -> Option<i64> {
    if until.len() != 14 || !until.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| until[a..b].parse::<i32>().ok();
    let date = jiff::civil::Date::new(
        i16::try_from(n(0, 4)?).ok()?,
        i8::try_from(n(4, 6)?).ok()?,
        i8::try_from(n(6, 8)?).ok()?,
    )
    .ok()?;
    let time = jiff::civil::Time::new(
        i8::try_from(n(8, 10)?).ok()?,
        i8::try_from(n(10, 12)?).ok()?,
        i8::try_from(n(12, 14)?).ok()?,
        0,
    )
    .ok()?;
    let ts = date.to_datetime(time).to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_exact_origins_and_explicit_wildcards_are_admitted() {
        let allowed = list(&["https://ok.com", "https://*.shop.example", "http://localhost:3000"]);
        for good in [
            "https://ok.com",
            "https://OK.com",
            "https://ok.com:443",
            "https://a.shop.example",
            "https://a.b.shop.example",
            "http://localhost:3000",
        ] {
            assert!(origin_allowed(good, &allowed, &[]), "{good} refused");
        }
        for bad in [
            "https://ok.com.evil.com",
            "https://evil.com/?ok.com",
            "https://evil.com#ok.com",
            "https://ok.com/",
            "https://user@ok.com",
            "null",
            "",
            "ok.com",
            "http://ok.com",
            "https://ok.com:8443",
            "https://shop.example",
            "https://evilshop.example",
            "https://xn--k-ewa.com",
            "https://ök.com",
            "http://localhost:3001",
            "ftp://ok.com",
        ] {
            assert!(!origin_allowed(bad, &allowed, &[]), "{bad:?} admitted");
        }
        // The ticket's list replaces the model's; an empty one defers to it.
        assert!(origin_allowed("https://model.example", &[], &list(&["https://model.example"])));
        assert!(!origin_allowed(
            "https://model.example",
            &list(&["https://ok.com"]),
            &list(&["https://model.example"])
        ));
        assert!(!origin_allowed("https://ok.com", &[], &[]));
        assert!(
            valid_entry("https://*.x.com") && !valid_entry("*.x.com") && !valid_entry("https://x.com/path")
        );
    }

    #[test]
    fn until_is_a_utc_timestamp_of_fourteen_digits() {
        assert_eq!(parse_until("20261202120000"), Some(1_796_212_800_000));
        for bad in
            ["2026120212000", "20261302120000", "20260230120000", "20261202250000", "2026-12-02T12:00", "x"]
        {
            assert_eq!(parse_until(bad), None, "{bad}");
        }
    }
}
