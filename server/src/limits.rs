//! Request rate limits: token buckets per API key (partner) and per client
//! address on every partner route, and ShapeDiver's `session_rate_limit`
//! (sessions per model per client address per hour) on embedding.
//!
//! A bucket holds up to `limit` requests and refills at `limit` per
//! window; a request takes one token, or is refused with the seconds until
//! one is back. Buckets are kept per key, so one partner's burst never
//! slows another's. The table is bounded: past [`MAX_KEYS`] keys, full
//! buckets (idle keys) are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept before idle ones are dropped.
pub const MAX_KEYS: usize = 100_000;

/// A family of token buckets with one limit.
#[derive(Debug)]
pub struct Buckets {
    limit: u32,
    window: Duration,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// A refusal: the limit, and the whole seconds until a request may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Requests per window.
    pub limit: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Seconds until the next request passes.
    pub retry_after: u64,
}

impl Buckets {
    /// `limit` requests per `window` per key; a limit of 0 turns the
    /// family off.
    pub fn new(limit: u32, window: Duration) -> Buckets {
        Buckets { limit, window, buckets: Mutex::new(HashMap::new()) }
    }

    /// Requests per window (0: off).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes a token from `key`'s bucket.
    pub fn take(&self, key: &str) -> Result<(), Limited> {
        if self.limit == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.limit);
        let rate = capacity / self.window.as_secs_f64();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets
                .retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < capacity);
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - *tokens) / rate).ceil().max(1.0) as u64;
        Err(Limited { limit: self.limit, window_secs: self.window.as_secs(), retry_after: wait })
    }
}

impl Limited {
    /// The `Retry-After` and `RateLimit-*` headers of a 429 answer
    /// (draft-ietf-httpapi-ratelimit-headers).
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("retry-after", self.retry_after.to_string()),
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", "0".to_string()),
            ("ratelimit-reset", self.retry_after.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_keeps_keys_apart() {
        let b = Buckets::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            b.take("a").expect("within the limit");
        }
        let refused = b.take("a").expect_err("over the limit");
        assert_eq!((refused.limit, refused.window_secs), (3, 60));
        assert!((1..=20).contains(&refused.retry_after), "{refused:?}");
        // Another key is untouched by a's burst.
        b.take("b").expect("key b is not slowed by key a");
        // Off when the limit is 0.
        let off = Buckets::new(0, Duration::from_secs(1));
        for _ in 0..1000 {
            off.take("a").expect("off");
        }
        // Refills at limit per window.
        let fast = Buckets::new(10, Duration::from_millis(100));
        for _ in 0..10 {
            fast.take("k").expect("burst");
        }
        assert!(fast.take("k").is_err());
        std::thread::sleep(Duration::from_millis(30));
        fast.take("k").expect("refilled");
    }
}
