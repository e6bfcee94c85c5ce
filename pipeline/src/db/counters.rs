//! Migration 10: counters shared by every server on one database (rate
//! limits, login failures, sign-ups), so a client whose requests a load
//! balancer spreads over several servers meets one limit, not one per
//! server.
//!
//! Counts are kept in fixed windows (`window_start` is `now` rounded down
//! to the window): one upsert per counted request, which PostgreSQL and
//! SQLite both run atomically. A single server keeps its exact in-memory
//! token buckets instead; this table is used when the database is shared.

use super::sql::{OptionalExt, params};

use super::Db;
use crate::PipelineError;

/// The counters table.
pub(super) const MIGRATION_10: &str = r#"
CREATE TABLE counters (
    key             TEXT NOT NULL,         -- family and subject: "login:<hash>", "key:<partner>"
    window_start    BIGINT NOT NULL,       -- ms, the window's start
    n               BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX counters_by_window ON counters (window_start);
"#;

/// A count in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Counted so far in this window.
    pub n: i64,
    /// Milliseconds until the window ends.
    pub resets_in_ms: i64,
}

fn window(now: i64, window_ms: i64) -> (i64, i64) {
    let window_ms = window_ms.max(1);
    let start = now - now.rem_euclid(window_ms);
    (start, start + window_ms - now)
}

impl Db {
    /// Counts one more for `key` in the window of `window_ms` holding
    /// `now`; the count after it.
    pub fn count_hit(&self, key: &str, window_ms: i64, now: i64) -> Result<WindowCount, PipelineError> {
        let (start, resets_in_ms) = window(now, window_ms);
        let n = self.conn.query_row(
            "INSERT INTO counters (key, window_start, n) VALUES ($1, $2, 1) \
             ON CONFLICT (key, window_start) DO UPDATE SET n = counters.n + 1 RETURNING n",
            params![key, start],
            |r| r.get(0),
        )?;
        Ok(WindowCount { n, resets_in_ms })
    }

    /// `key`'s count in the window holding `now`, without counting.
    pub fn count_of(&self, key: &str, window_ms: i64, now: i64) -> Result<WindowCount, PipelineError> {
        let (start, resets_in_ms) = window(now, window_ms);
        let n = self
            .conn
            .query_row(
                "SELECT n FROM counters WHERE key = $1 AND window_start = $2",
                params![key, start],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(WindowCount { n, resets_in_ms })
    }

    /// Takes one back from `key`'s count in the window holding `now`.
    pub fn count_back(&self, key: &str, window_ms: i64, now: i64) -> Result<(), PipelineError> {
        let (start, _) = window(now, window_ms);
        self.conn.execute(
            "UPDATE counters SET n = n - 1 WHERE key = $1 AND window_start = $2 AND n > 0",
            params![key, start],
        )?;
        Ok(())
    }

    /// Forgets `key`'s counts.
    pub fn forget_count(&self, key: &str) -> Result<(), PipelineError> {
        self.conn.execute("DELETE FROM counters WHERE key = $1", params![key])?;
        Ok(())
    }

    /// Drops windows that started before `before`; how many.
    pub fn sweep_counters(&self, before: i64) -> Result<usize, PipelineError> {
        Ok(self.conn.execute("DELETE FROM counters WHERE window_start < $1", params![before])?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_per_key_and_window_and_come_back() {
        for db in crate::db::testing::backends() {
            let now = 1_000_000_123;
            assert_eq!(db.count_hit("a", 60_000, now).expect("hit").n, 1);
            let c = db.count_hit("a", 60_000, now + 5).expect("hit");
            assert_eq!(c.n, 2);
            assert_eq!(c.resets_in_ms, 60_000 - (now + 5) % 60_000);
            assert_eq!(db.count_of("b", 60_000, now).expect("read").n, 0, "keys are apart");
            db.count_back("a", 60_000, now).expect("back");
            assert_eq!(db.count_of("a", 60_000, now).expect("read").n, 1);
            // The next window starts from nothing.
            assert_eq!(db.count_hit("a", 60_000, now + 60_000).expect("hit").n, 1);
            db.forget_count("a").expect("forget");
            assert_eq!(db.count_of("a", 60_000, now + 60_000).expect("read").n, 0);
            db.count_hit("c", 60_000, now).expect("hit");
            assert_eq!(db.sweep_counters(now + 120_000).expect("sweep"), 1);
        }
    }
}
