//! Callback deliveries: one row per status change to announce, and one per
//! attempt to deliver it, so the partner can read exactly what was sent,
//! when, and what their endpoint answered.
//!
//! A delivery is queued in the same transaction as the status change it
//! announces, so a crash can neither lose the announcement nor send one
//! for a change that was rolled back. The server's sender claims a due
//! delivery by moving its next attempt forward (a lease): a sender that
//! dies mid-attempt leaves it to be retried when the lease runs out.

use super::sql::{DbError, OptionalExt, Row, params};
use serde::Serialize;

use super::{Db, now_ms};
use crate::PipelineError;

/// Deliveries, their attempts, and each partner's signing secret.
pub(super) const MIGRATION_3: &str = r#"
ALTER TABLE partners ADD COLUMN callback_secret TEXT;
CREATE TABLE callbacks (
    id              TEXT PRIMARY KEY,
    model_id        TEXT NOT NULL REFERENCES partner_models (id),
    url             TEXT NOT NULL,
    method          TEXT NOT NULL,
    body            TEXT NOT NULL,         -- the JSON sent, fixed when queued
    state           TEXT NOT NULL,         -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    give_up_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX callbacks_due ON callbacks (state, next_attempt_at);
CREATE INDEX callbacks_by_model ON callbacks (model_id, created_at);
CREATE TABLE callback_attempts (
    callback_id     TEXT NOT NULL REFERENCES callbacks (id),
    attempt         BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    status_code     BIGINT,                -- the endpoint's HTTP status, if it answered
    error           TEXT,                  -- why the attempt failed, if it did
    duration_ms     BIGINT NOT NULL,
    PRIMARY KEY (callback_id, attempt)
);
"#;

super::vocab::text_enum! {
    /// Where a delivery stands.
    pub enum CallbackState ("callback state") {
        /// Not delivered yet; attempted again at `next_attempt_at`.
        Pending = "pending",
        /// The endpoint answered 2xx.
        Delivered = "delivered",
        /// Given up: the retry window closed, or the endpoint answered 410.
        Failed = "failed",
    }
}

/// A delivery to queue with a status change.
#[derive(Debug, Clone)]
pub struct NewCallback {
    /// Random id (sent as `X-Strata-Delivery`).
    pub id: String,
    /// The partner's endpoint.
    pub url: String,
    /// `POST` or `PUT`.
    pub method: String,
    /// The JSON body.
    pub body: String,
    /// Unix ms after which no attempt is made.
    pub give_up_at: i64,
}

/// A queued delivery, with what is needed to send and sign it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Callback {
    /// Random id.
    pub id: String,
    /// The partner model whose status changed.
    pub model_id: String,
    /// The endpoint.
    pub url: String,
    /// `POST` or `PUT`.
    pub method: String,
    /// The JSON body.
    pub body: String,
    /// Where it stands.
    pub state: CallbackState,
    /// Attempts made so far.
    pub attempts: i64,
    /// Unix ms of the next attempt (while pending).
    pub next_attempt_at: i64,
    /// Unix ms after which it is given up.
    pub give_up_at: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// One attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackAttempt {
    /// 1 for the first.
    pub attempt: i64,
    /// Unix ms when it started.
    pub at: i64,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<i64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

const CALLBACK_COLUMNS: &str =
    "id, model_id, url, method, body, state, attempts, next_attempt_at, give_up_at, created_at, updated_at";

fn row_to_callback(r: &Row<'_>) -> Result<Callback, DbError> {
    Ok(Callback {
        id: r.get(0)?,
        model_id: r.get(1)?,
        url: r.get(2)?,
        method: r.get(3)?,
        body: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        give_up_at: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

impl Db {
    /// Queues a delivery (inside the caller's transaction, when there is
    /// one: see [`Db::set_partner_model_status`]).
    pub(super) fn queue_callback(
        &self,
        model_id: &str,
        c: &NewCallback,
        now: i64,
    ) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO callbacks (id, model_id, url, method, body, state, attempts, next_attempt_at, \
             give_up_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $6, $6)",
            params![c.id, model_id, c.url, c.method, c.body, now, c.give_up_at],
        )?;
        self.conn.notify(super::sql::CALLBACKS_CHANNEL)?;
        Ok(())
    }

    /// Claims up to `limit` deliveries due at `now`: each one's next attempt
    /// moves to `now + lease_ms`, so no other sender takes it meanwhile.
    /// Returns them with the owning partner's signing secret.
    pub fn claim_due_callbacks(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<(Callback, Option<String>)>, PipelineError> {
        // The select and the lease in one transaction, so two senders
        // (two servers) never both take a delivery: SQLite's writer lock,
        // and on PostgreSQL the deliveries' rows locked (others' skipped).
        let tx = self.begin()?;
        let skip_locked = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE OF c SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let due: Vec<(Callback, Option<String>)> = {
            self.conn.query_map(&format!(
                "SELECT {}, p.callback_secret FROM callbacks c \
                 JOIN partner_models m ON m.id = c.model_id JOIN partners p ON p.id = m.partner_id \
                 WHERE c.state = 'pending' AND c.next_attempt_at <= $1 ORDER BY c.next_attempt_at LIMIT $2{skip_locked}",
                CALLBACK_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ")
            ), params![now, limit], |r| Ok((row_to_callback(r)?, r.get(11)?)))?
        };
        for (c, _) in &due {
            self.conn.execute(
                "UPDATE callbacks SET next_attempt_at = $1 WHERE id = $2",
                params![now.saturating_add(lease_ms), c.id],
            )?;
        }
        tx.commit()?;
        Ok(due)
    }

    /// The earliest next attempt among pending deliveries (so the sender
    /// can sleep until then).
    pub fn next_callback_due(&self) -> Result<Option<i64>, PipelineError> {
        Ok(self.conn.query_row(
            "SELECT MIN(next_attempt_at) FROM callbacks WHERE state = 'pending'",
            params![],
            |r| r.get(0),
        )?)
    }

    /// Records an attempt and what follows: `delivered`, another attempt
    /// at `retry_at`, or `failed` when `retry_at` is `None`.
    pub fn record_callback_attempt(
        &self,
        id: &str,
        a: &CallbackAttempt,
        delivered: bool,
        retry_at: Option<i64>,
    ) -> Result<(), PipelineError> {
        let tx = self.begin()?;
        self.conn.execute(
            "INSERT INTO callback_attempts (callback_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![id, a.attempt, a.at, a.status_code, a.error, a.duration_ms],
        )?;
        let state = match (delivered, retry_at) {
            (true, _) => CallbackState::Delivered,
            (false, Some(_)) => CallbackState::Pending,
            (false, None) => CallbackState::Failed,
        };
        self.conn.execute(
            "UPDATE callbacks SET state = $1, attempts = $2, next_attempt_at = COALESCE($3, next_attempt_at), \
             updated_at = $4 WHERE id = $5",
            params![state, a.attempt, retry_at, now_ms(), id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A model's deliveries, oldest first, each with its attempts (two
    /// queries, however many deliveries).
    pub fn callbacks_of(
        &self,
        model_id: &str,
    ) -> Result<Vec<(Callback, Vec<CallbackAttempt>)>, PipelineError> {
        let mut out: Vec<(Callback, Vec<CallbackAttempt>)> = self
            .conn
            .query_map(
                &format!(
                    "SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE model_id = $1 ORDER BY created_at, id"
                ),
                params![model_id],
                row_to_callback,
            )?
            .into_iter()
            .map(|c| (c, Vec::new()))
            .collect();
        let index: std::collections::HashMap<String, usize> =
            out.iter().enumerate().map(|(i, (c, _))| (c.id.clone(), i)).collect();
        let attempts = self.conn.query_map(
            "SELECT a.callback_id, a.attempt, a.at, a.status_code, a.error, a.duration_ms \
             FROM callback_attempts a JOIN callbacks c ON c.id = a.callback_id \
             WHERE c.model_id = $1 ORDER BY a.callback_id, a.attempt",
            params![model_id],
            |r| {
                let attempt = CallbackAttempt {
                    attempt: r.get(1)?,
                    at: r.get(2)?,
                    status_code: r.get(3)?,
                    error: r.get(4)?,
                    duration_ms: r.get(5)?,
                };
                Ok((r.get::<String>(0)?, attempt))
            },
        )?;
        for (callback_id, attempt) in attempts {
            if let Some(&i) = index.get(&callback_id) {
                out[i].1.push(attempt);
            }
        }
        Ok(out)
    }

    /// Gives every partner without a callback secret (made before
    /// callbacks were signed) a fresh one from `fresh`; their usernames.
    pub fn backfill_callback_secrets(
        &self,
        fresh: impl Fn() -> String,
    ) -> Result<Vec<String>, PipelineError> {
        let missing: Vec<(String, String)> = self.conn.query_map(
            "SELECT id, username FROM partners WHERE callback_secret IS NULL",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (id, _) in &missing {
            self.conn.execute(
                "UPDATE partners SET callback_secret = $1 WHERE id = $2 AND callback_secret IS NULL",
                params![fresh(), id],
            )?;
        }
        Ok(missing.into_iter().map(|(_, username)| username).collect())
    }

    /// A partner's callback signing secret, by username.
    pub fn callback_secret_of(&self, username: &str) -> Result<Option<String>, PipelineError> {
        Ok(self
            .conn
            .query_row("SELECT callback_secret FROM partners WHERE username = $1", params![username], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Partner, PartnerModel};

    fn db_with_model(db: Db) -> Db {
        let p =
            Partner { id: "p1".into(), name: "Shop".into(), email: "a@b.c".into(), username: "shop".into() };
        db.create_partner(&p, "hash", "key", "secret").expect("partner");
        let mut m = PartnerModel::new(
            "m1".into(),
            "p1".into(),
            "Cube".into(),
            crate::db::ModelStatus::NotUploaded,
            0,
        );
        m.callback_url = Some("http://example.com/hook".into());
        m.callback_method = Some("POST".into());
        db.create_partner_model(&m).expect("model");
        db
    }

    fn new_callback(id: &str) -> NewCallback {
        NewCallback {
            id: id.into(),
            url: "http://example.com/hook".into(),
            method: "POST".into(),
            body: "{}".into(),
            give_up_at: i64::MAX,
        }
    }

    #[test]
    fn partners_without_a_callback_secret_get_one_once() {
        for db in crate::db::testing::backends() {
            let db = db_with_model(db);
            db.conn.execute("UPDATE partners SET callback_secret = NULL", params![]).expect("an old partner");
            assert_eq!(db.backfill_callback_secrets(|| "whsec_new".into()).expect("backfill"), ["shop"]);
            assert_eq!(db.callback_secret_of("shop").expect("q").as_deref(), Some("whsec_new"));
            assert!(db.backfill_callback_secrets(|| "whsec_other".into()).expect("again").is_empty());
            assert_eq!(db.callback_secret_of("shop").expect("q").as_deref(), Some("whsec_new"));
        }
    }

    #[test]
    fn a_status_change_queues_its_callback_and_a_lost_race_queues_none() {
        for db in crate::db::testing::backends() {
            let db = db_with_model(db);
            let cb = new_callback("c1");
            assert!(
                db.set_partner_model_status(
                    "m1",
                    &crate::db::StatusChange {
                        callback: Some(&cb),
                        ..crate::db::StatusChange::new(
                            crate::db::ModelStatus::NotUploaded,
                            crate::db::ModelStatus::Processing
                        )
                    }
                )
                .expect("set")
            );
            // The compare-and-swap fails: nothing is queued for a change that
            // did not happen.
            let again = new_callback("c2");
            assert!(
                !db.set_partner_model_status(
                    "m1",
                    &crate::db::StatusChange {
                        callback: Some(&again),
                        ..crate::db::StatusChange::new(
                            crate::db::ModelStatus::NotUploaded,
                            crate::db::ModelStatus::Processing
                        )
                    }
                )
                .expect("set")
            );
            let queued = db.callbacks_of("m1").expect("log");
            assert_eq!(queued.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(), ["c1"]);
        }
    }

    #[test]
    fn a_claim_is_a_lease_and_attempts_are_logged() {
        for db in crate::db::testing::backends() {
            let db = db_with_model(db);
            db.set_partner_model_status(
                "m1",
                &crate::db::StatusChange {
                    callback: Some(&new_callback("c1")),
                    ..crate::db::StatusChange::new(
                        crate::db::ModelStatus::NotUploaded,
                        crate::db::ModelStatus::Processing,
                    )
                },
            )
            .expect("set");
            let now = now_ms();
            let claimed = db.claim_due_callbacks(now, 60_000, 10).expect("claim");
            assert_eq!(claimed.len(), 1);
            assert_eq!(claimed[0].1.as_deref(), Some("secret"));
            // Leased: not due again until the lease ends.
            assert!(db.claim_due_callbacks(now, 60_000, 10).expect("claim").is_empty());
            assert_eq!(db.claim_due_callbacks(now + 60_000, 60_000, 10).expect("claim").len(), 1);
            let failed =
                CallbackAttempt { attempt: 1, at: now, status_code: Some(500), error: None, duration_ms: 3 };
            db.record_callback_attempt("c1", &failed, false, Some(now + 10)).expect("record");
            let ok = CallbackAttempt {
                attempt: 2,
                at: now + 10,
                status_code: Some(204),
                error: None,
                duration_ms: 2,
            };
            db.record_callback_attempt("c1", &ok, true, None).expect("record");
            let log = db.callbacks_of("m1").expect("log");
            assert_eq!(log[0].0.state, CallbackState::Delivered);
            assert_eq!(log[0].0.attempts, 2);
            assert_eq!(log[0].1, vec![failed.clone(), ok.clone()]);
            assert!(db.claim_due_callbacks(i64::MAX, 1, 10).expect("claim").is_empty(), "delivered is final");
            // A second delivery's attempts are its own, not the first's.
            assert!(
                db.set_partner_model_status(
                    "m1",
                    &crate::db::StatusChange {
                        callback: Some(&new_callback("c2")),
                        ..crate::db::StatusChange::new(
                            crate::db::ModelStatus::Processing,
                            crate::db::ModelStatus::Processed
                        )
                    }
                )
                .expect("set")
            );
            let other = CallbackAttempt {
                attempt: 1,
                at: now + 20,
                status_code: None,
                error: Some("x".into()),
                duration_ms: 1,
            };
            db.record_callback_attempt("c2", &other, false, None).expect("record");
            let log = db.callbacks_of("m1").expect("log");
            assert_eq!(log.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
            assert_eq!(log[0].1, vec![failed, ok]);
            assert_eq!(log[1].1, vec![other]);
        }
    }
}
