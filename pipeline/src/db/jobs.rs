//! The durable job queue (migration 5): work that must survive a crash,
//! written in the same transaction as the state change that calls for it.
//!
//! A worker claims a due job with a lease (one statement, so two claims
//! never take the same job), renews the lease while it works, and then
//! completes it or fails it (to be retried after a back-off, or given up
//! after `max_attempts`). Completion and failure are fenced: only the
//! worker holding the lease can end a job, so a worker whose lease ran out
//! and whose job was taken over cannot overwrite the new holder's result.
//! A job whose lease ran out is due again. The same interface will carry
//! provider jobs and the scale-out workers.

use super::sql::{DbError, OptionalExt, Row, params};
use serde::Serialize;

use super::Db;
use crate::PipelineError;

/// The jobs table.
pub(super) const MIGRATION_5: &str = r#"
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,         -- process_upload | ...
    subject         TEXT NOT NULL,         -- what it works on (a partner model id)
    partner_id      TEXT,
    payload         TEXT NOT NULL,         -- JSON, read by the job's kind
    status          TEXT NOT NULL,         -- queued | running | done | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    max_attempts    BIGINT NOT NULL,
    run_after       BIGINT NOT NULL,
    locked_by       TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, run_after);
CREATE INDEX jobs_by_partner ON jobs (partner_id, status);
-- The printer of a token's current print (its X-Printer-Id), so that the
-- same printer resuming is told apart from a second printer.
ALTER TABLE print_tokens ADD COLUMN printer_id TEXT;
"#;

super::vocab::text_enum! {
    /// What a job does.
    pub enum JobKind ("job kind") {
        /// Process an acknowledged upload (its spool file) into the store
        /// and set its model's status.
        ProcessUpload = "process_upload",
        /// Send a provider job's request to its service (the subject is
        /// the provider job's id); run by the server's provider sender.
        ProviderRequest = "provider_request",
    }
}

super::vocab::text_enum! {
    /// Where a job stands.
    pub enum JobStatus ("job status") {
        /// Waiting to be claimed (from `run_after` on).
        Queued = "queued",
        /// Claimed; its holder renews the lease.
        Running = "running",
        /// Finished.
        Done = "done",
        /// Given up.
        Failed = "failed",
    }
}

/// A job to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Random id.
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// What it works on.
    pub subject: String,
    /// Whose work it is (for per-partner admission).
    pub partner_id: Option<String>,
    /// The kind's parameters, as JSON.
    pub payload: String,
    /// Tries before it is given up.
    pub max_attempts: u32,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Random id.
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// What it works on.
    pub subject: String,
    /// Whose work it is.
    pub partner_id: Option<String>,
    /// The kind's parameters, as JSON.
    pub payload: String,
    /// Where it stands.
    pub status: JobStatus,
    /// Claims so far (the current one included).
    pub attempts: u32,
    /// Tries before it is given up.
    pub max_attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

/// How a status change ends or starts a job in its own transaction.
#[derive(Debug, Clone, Copy)]
pub enum JobEffect<'a> {
    /// Nothing.
    None,
    /// Queue this job.
    Enqueue(&'a NewJob),
    /// Complete this job (`id`, the worker holding it).
    Complete(&'a str, &'a str),
}

const JOB_COLUMNS: &str =
    "id, kind, subject, partner_id, payload, status, attempts, max_attempts, last_error";

fn row_to_job(r: &Row<'_>) -> Result<Job, DbError> {
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        subject: r.get(2)?,
        partner_id: r.get(3)?,
        payload: r.get(4)?,
        status: r.get(5)?,
        attempts: u32::try_from(r.get::<i64>(6)?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(r.get::<i64>(7)?).unwrap_or(u32::MAX),
        last_error: r.get(8)?,
    })
}

impl Db {
    /// Queues a job (inside the caller's transaction, when there is one).
    pub fn enqueue_job(&self, j: &NewJob, now: i64) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO jobs (id, kind, subject, partner_id, payload, status, attempts, max_attempts, run_after, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $8, $8)",
            params![j.id, j.kind.as_str(), j.subject, j.partner_id, j.payload, JobStatus::Queued.as_str(), i64::from(j.max_attempts), now],
        )?;
        self.conn.notify(super::sql::JOBS_CHANNEL)?;
        Ok(())
    }

    /// Claims the oldest due job of `kinds` for `worker` until
    /// `now + lease_ms`: a queued job whose time has come, or a running one
    /// whose lease ran out (its holder died). One statement, so two claims
    /// never take the same job.
    pub fn claim_job(
        &self,
        worker: &str,
        kinds: &[JobKind],
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<Job>, PipelineError> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
        // PostgreSQL runs claims concurrently: the subquery's row is locked
        // and rows another claim holds are skipped, so two workers never
        // take one job and never wait for each other. SQLite runs one
        // writer at a time, and has no row locks to ask for.
        let skip_locked = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', locked_by = $1, lease_until = $2, attempts = attempts + 1, \
             updated_at = $3 WHERE id = (SELECT id FROM jobs WHERE kind IN ({}) AND \
             ((status = 'queued' AND run_after <= $3) OR (status = 'running' AND lease_until <= $3)) \
             ORDER BY run_after, created_at, id LIMIT 1{skip_locked}) RETURNING {JOB_COLUMNS}",
            names.join(", ")
        );
        Ok(self
            .conn
            .query_row(&sql, params![worker, now.saturating_add(lease_ms), now], row_to_job)
            .optional()?)
    }

    /// Renews `worker`'s lease on job `id`; whether it still holds it.
    pub fn heartbeat_job(&self, id: &str, worker: &str, lease_until: i64) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running'",
            params![lease_until, id, worker],
        )? > 0)
    }

    /// Marks job `id` done, if `worker` still holds it (fenced).
    pub fn complete_job(&self, id: &str, worker: &str, now: i64) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE jobs SET status = 'done', locked_by = NULL, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND locked_by = $3 AND status = 'running'",
            params![now, id, worker],
        )? > 0)
    }

    /// Records a failure of job `id` held by `worker`: queued again from
    /// `retry_at` while attempts remain (and `retry_at` is given), else
    /// failed for good. The status it ends in, or `None` when `worker` no
    /// longer held it.
    pub fn fail_job(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<Option<JobStatus>, PipelineError> {
        let tx = self.begin()?;
        let job = self
            .conn
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND locked_by = $2 AND status = 'running'"
                ),
                params![id, worker],
                row_to_job,
            )
            .optional()?;
        let Some(job) = job else { return Ok(None) };
        let (status, run_after) = match retry_at {
            Some(at) if job.attempts < job.max_attempts => (JobStatus::Queued, at),
            _ => (JobStatus::Failed, now),
        };
        self.conn.execute(
            "UPDATE jobs SET status = $1, run_after = $2, last_error = $3, locked_by = NULL, lease_until = NULL, \
             updated_at = $4 WHERE id = $5",
            params![status.as_str(), run_after, error, now, id],
        )?;
        tx.commit()?;
        Ok(Some(status))
    }

    /// Jobs queued or running for `partner_id` (admission control).
    pub fn pending_jobs_of(&self, partner_id: &str) -> Result<u64, PipelineError> {
        let n: i64 = self.conn.query_row(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE partner_id = $1 AND status IN ('queued', 'running')",
            params![partner_id],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Every job not yet finished, oldest first.
    pub fn pending_jobs(&self) -> Result<Vec<Job>, PipelineError> {
        let rows = self.conn.query_map(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id"
            ),
            params![],
            row_to_job,
        )?;
        Ok(rows)
    }

    /// Makes every running job due again at once: for the one process that
    /// holds the data directory's lock at start-up, any running job was
    /// left by a process that is gone. How many.
    pub fn requeue_running_jobs(&self, now: i64) -> Result<usize, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE jobs SET status = 'queued', locked_by = NULL, lease_until = NULL, run_after = $1, \
             updated_at = $1 WHERE status = 'running'",
            params![now],
        )?)
    }

    /// Partner models left `processing` with no job to finish them (by a
    /// version that kept no jobs, or a job given up without a status).
    pub fn processing_without_job(&self) -> Result<Vec<String>, PipelineError> {
        let ids = self.conn.query_map(
            "SELECT id FROM partner_models WHERE status = 'processing' AND id NOT IN \
             (SELECT subject FROM jobs WHERE status IN ('queued', 'running')) ORDER BY created_at, id",
            params![],
            |r| r.get(0),
        )?;
        Ok(ids)
    }

    /// A job by id.
    pub fn job(&self, id: &str) -> Result<Option<Job>, PipelineError> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), params![id], row_to_job)
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            kind: JobKind::ProcessUpload,
            subject: "m1".into(),
            partner_id: Some("p1".into()),
            payload: "{}".into(),
            max_attempts: 2,
        }
    }

    #[test]
    fn claims_are_leases_fenced_and_retried_until_given_up() {
        for db in crate::db::testing::backends() {
            let db = db;
            db.enqueue_job(&job("j1"), 100).expect("enqueue");
            assert_eq!(db.pending_jobs_of("p1").expect("count"), 1);
            assert!(
                db.claim_job("w1", &[JobKind::ProcessUpload], 99, 1000).expect("claim").is_none(),
                "not due yet"
            );
            let j = db.claim_job("w1", &[JobKind::ProcessUpload], 100, 1000).expect("claim").expect("a job");
            assert_eq!((j.id.as_str(), j.attempts, j.status), ("j1", 1, JobStatus::Running));
            assert!(
                db.claim_job("w2", &[JobKind::ProcessUpload], 500, 1000).expect("claim").is_none(),
                "leased"
            );
            assert!(db.heartbeat_job("j1", "w1", 2000).expect("beat"));
            assert!(!db.heartbeat_job("j1", "w2", 2000).expect("beat"), "not w2's");
            // The lease runs out: w2 takes the job over, and w1 can no longer end it.
            let j = db
                .claim_job("w2", &[JobKind::ProcessUpload], 2000, 1000)
                .expect("claim")
                .expect("taken over");
            assert_eq!(j.attempts, 2);
            assert!(!db.complete_job("j1", "w1", 2001).expect("fenced"));
            assert_eq!(db.fail_job("j1", "w1", "late", Some(3000), 2001).expect("fenced"), None);
            // The last attempt fails: given up, whatever the retry time.
            assert_eq!(
                db.fail_job("j1", "w2", "disk full", Some(3000), 2002).expect("fail"),
                Some(JobStatus::Failed)
            );
            let done = db.job("j1").expect("q").expect("job");
            assert_eq!((done.status, done.last_error.as_deref()), (JobStatus::Failed, Some("disk full")));
            assert_eq!(db.pending_jobs_of("p1").expect("count"), 0);
        }
    }

    #[test]
    fn a_failure_with_attempts_left_is_retried_later_and_running_jobs_requeue_at_start() {
        for db in crate::db::testing::backends() {
            let db = db;
            db.enqueue_job(&job("j1"), 0).expect("enqueue");
            db.claim_job("w1", &[JobKind::ProcessUpload], 0, 1000).expect("claim").expect("job");
            assert_eq!(db.fail_job("j1", "w1", "busy", Some(50), 10).expect("fail"), Some(JobStatus::Queued));
            assert!(
                db.claim_job("w1", &[JobKind::ProcessUpload], 49, 1000).expect("claim").is_none(),
                "backing off"
            );
            db.claim_job("w1", &[JobKind::ProcessUpload], 50, 1_000_000).expect("claim").expect("due again");
            assert_eq!(db.requeue_running_jobs(60).expect("requeue"), 1);
            let j =
                db.claim_job("w9", &[JobKind::ProcessUpload], 60, 1000).expect("claim").expect("requeued");
            assert!(db.complete_job(&j.id, "w9", 61).expect("complete"));
            assert!(db.pending_jobs().expect("pending").is_empty());
        }
    }
}
