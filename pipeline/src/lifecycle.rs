//! The partner model's lifecycle: the one service that moves a model
//! through `not-uploaded -> processing -> processed | error`, over the
//! [`Store`].
//!
//! Every move is one transaction ([`Db::set_partner_model_status`]): the
//! status, the processed model's row, the callback announcing the change
//! and the job it starts or ends commit together or not at all. Routes,
//! the job runner and the CLI call this module; none of them writes a
//! status, a job or a callback row of its own.
//!
//! # An upload, in one direction
//! 1. The server spools the body ([`Store::new_spool`]), synced, and calls
//!    [`Lifecycle::accept_upload`]: admission (a bounded queue per
//!    partner), then `not-uploaded -> processing` with its `process_upload`
//!    job. Only then is the upload acknowledged.
//! 2. A worker claims the job with a lease ([`Lifecycle::claim`]), renews
//!    it ([`Lifecycle::heartbeat`]) and runs it ([`Lifecycle::run_job`]):
//!    the spool through [`crate::ingest::ingest_upload_timed`] (parse,
//!    repair, render, slice, pack; blobs staged and published), then
//!    `processing -> processed | error` with the model row, the callback
//!    and the job's completion. A store failure is retried with back-off;
//!    the spool goes once the job is finished.
//! 3. A process killed anywhere leaves the job queued or running; the next
//!    [`Lifecycle::open`] makes it due again, so every acknowledged upload
//!    ends `processed` or `error` and each change is announced once.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PipelineError;
use crate::blob::{BlobId, BlobStore};
use crate::db::{
    Db, Job, JobEffect, JobKind, JobStatus, ModelStatus, NewCallback, NewJob, PartnerModel, PrintToken,
    StatusChange, now_ms,
};
use crate::ingest::MemoryBudget;
use crate::process::{ProcessOptions, StageTimes};
use crate::store::{Recovered, Store};

/// Tries of a job that fails on the store (disk full, database busy).
pub const MAX_ATTEMPTS: u32 = 5;
/// The first retry's wait; each later one doubles it.
const RETRY_BASE_MS: i64 = 10_000;

/// What a `process_upload` job needs: the spool file (a name under
/// `DATA/uploads`) and what was measured while it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadJob {
    /// The spool file's name in `DATA/uploads`.
    pub spool: String,
    /// Its SHA-256, computed while it streamed in.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// The spool file a pending job still needs, if it is an upload's.
pub fn spool_of(job: &Job) -> Option<String> {
    (job.kind == JobKind::ProcessUpload)
        .then(|| serde_json::from_str::<UploadJob>(&job.payload).ok().map(|u| u.spool))
        .flatten()
}

/// How the lifecycle is run.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// The base URL resources are named under (`{public_url}/model/{id}/`
    /// in callbacks).
    pub public_url: String,
    /// How long a callback is retried.
    pub callback_give_up: Duration,
    /// Uploads one partner may have waiting to be processed.
    pub queue_per_partner: u64,
    /// What the models being processed may take together (bytes).
    pub memory_budget: u64,
    /// How models are processed.
    pub process: ProcessOptions,
}

/// Why an upload was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The partner already has as many uploads waiting as it may.
    #[error("{waiting} of your uploads are waiting to be processed; send this one again shortly")]
    QueueFull {
        /// Uploads waiting.
        waiting: u64,
    },
    /// The model (or the token) already has its upload.
    #[error("already uploaded")]
    AlreadyUploaded,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] PipelineError),
}

/// What a status change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The model moved (it was still in the expected status).
    pub moved: bool,
    /// A callback was queued with the move.
    pub announced: bool,
}

/// How a job run ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// The model is `processed`.
    Processed,
    /// The model is `error`, with this code.
    Failed(String),
    /// The store failed; the job is due again in this many ms.
    Retried(i64),
    /// Nothing to do (finished by an earlier holder, or gone), or this
    /// worker no longer held the job.
    Skipped,
}

/// One job run, for the runner's logs and metrics.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// How it ended.
    pub outcome: JobOutcome,
    /// Whether a callback was queued (the sender should wake).
    pub announced: bool,
    /// Time spent in each pipeline stage, when the pipeline ran.
    pub times: Option<StageTimes>,
}

impl JobReport {
    fn new(outcome: JobOutcome, announced: bool) -> JobReport {
        JobReport { outcome, announced, times: None }
    }
}

/// The lifecycle service over a [`Store`].
#[derive(Debug)]
pub struct Lifecycle {
    store: Store,
    config: LifecycleConfig,
    /// Held across a partner's queue count and the enqueue it admits, so
    /// concurrent uploads cannot all pass the count (one process owns the
    /// store, so a process-wide lock is enough).
    admission: Mutex<()>,
    memory: MemoryBudget,
}

impl Lifecycle {
    /// Opens the store under `dir` ([`Store::open`]: lock, recovery) and
    /// tells models that a version without jobs left `processing` that
    /// they were interrupted (with their callbacks), so their partners
    /// know to upload again.
    pub fn open(
        dir: &Path,
        connections: usize,
        config: LifecycleConfig,
    ) -> Result<(Lifecycle, Recovered, usize), PipelineError> {
        Lifecycle::open_with(dir, connections, config, &crate::store::StoreOptions::default())
    }

    /// [`Lifecycle::open`], migrating the store's database or requiring it
    /// migrated.
    pub fn open_with(
        dir: &Path,
        connections: usize,
        config: LifecycleConfig,
        options: &crate::store::StoreOptions,
    ) -> Result<(Lifecycle, Recovered, usize), PipelineError> {
        let (store, recovered) = Store::open_with(dir, connections, options)?;
        let memory = MemoryBudget::new(config.memory_budget);
        let life = Lifecycle { store, config, admission: Mutex::new(()), memory };
        let interrupted = life.recover_orphans()?;
        Ok((life, recovered, interrupted))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A database connection (see [`Store::db`]).
    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.store.db()
    }

    /// The settings.
    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// A model's URI, as callbacks and the API name it.
    pub fn model_uri(&self, id: &str) -> String {
        format!("{}/model/{id}/", self.config.public_url)
    }

    /// Whether `partner` may queue another upload now (checked before a
    /// body is read, and again, atomically, when it is accepted).
    pub fn admit(&self, partner: &str) -> Result<(), AcceptError> {
        let waiting = self.db().pending_jobs_of(partner)?;
        if waiting >= self.config.queue_per_partner {
            return Err(AcceptError::QueueFull { waiting });
        }
        Ok(())
    }

    /// Accepts `model`'s spooled upload: admission, then `not-uploaded ->
    /// processing` with its job, in one transaction. After `Ok` the upload
    /// may be acknowledged: it will be processed, even across a crash.
    pub fn accept_upload(&self, model: &PartnerModel, upload: &UploadJob) -> Result<Transition, AcceptError> {
        if self.store.is_shared() {
            // Not worth a trip to the bucket when another upload won.
            let now = self.db().partner_model(&model.id)?;
            if now.is_none_or(|m| m.status != ModelStatus::NotUploaded) {
                return Err(AcceptError::AlreadyUploaded);
            }
        }
        self.share_spool(upload)?;
        let job = upload_job(model, upload);
        let _admission = self.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.admit(&model.partner_id)?;
        let change = StatusChange {
            // The bytes' digest from the start, so a client can find what
            // it uploaded (`GET /model/?sha256=`) while it is processed.
            content_id: Some(&upload.sha256),
            job: JobEffect::Enqueue(&job),
            ..StatusChange::new(ModelStatus::NotUploaded, ModelStatus::Processing)
        };
        let moved = self.set_status(model, &change)?;
        if !moved.moved {
            return Err(AcceptError::AlreadyUploaded);
        }
        self.drop_shared_spool(upload);
        Ok(moved)
    }

    /// On a shared store, puts the spooled upload into the blob store
    /// under its SHA-256 (where the pipeline keeps originals anyway)
    /// before it is acknowledged, so a worker on any machine can process
    /// it and the bytes survive this machine.
    fn share_spool(&self, upload: &UploadJob) -> Result<(), PipelineError> {
        if !self.store.is_shared() {
            return Ok(());
        }
        let spool = self.store.uploads().join(&upload.spool);
        // SAFETY: the spool file is this process's own (see process_upload)
        // and is not written again once its upload is spooled.
        let mapped = unsafe { crate::core::ModelBytes::map(&spool) }.map_err(|e| PipelineError::Io {
            path: spool.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let bytes = mapped.as_bytes();
        let id = BlobId::of_known(&upload.sha256, bytes);
        let blobs = self.store.blobs();
        blobs.publish(&[blobs.stage_hashed(id, bytes)?])
    }

    /// On a shared store the spool is not needed once its job is queued:
    /// the job reads the bytes from the blob store.
    fn drop_shared_spool(&self, upload: &UploadJob) {
        if self.store.is_shared() {
            let _ = std::fs::remove_file(self.store.uploads().join(&upload.spool));
        }
    }

    /// Accepts a legacy (api3) upload: `model`, created `processing`, is
    /// attached to `token` and its job queued in one transaction; refused
    /// when the token already has a model.
    pub fn accept_legacy_upload(
        &self,
        model: &PartnerModel,
        token: &PrintToken,
        upload: &UploadJob,
    ) -> Result<(), AcceptError> {
        self.share_spool(upload)?;
        let job = upload_job(model, upload);
        let _admission = self.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.admit(&model.partner_id)?;
        if !self.db().record_legacy_upload(model, token, &job)? {
            return Err(AcceptError::AlreadyUploaded);
        }
        self.drop_shared_spool(upload);
        Ok(())
    }

    /// Moves `model` as `change` says (its announcement added when the
    /// model has a callback URL), all in one transaction.
    pub fn set_status(
        &self,
        model: &PartnerModel,
        change: &StatusChange<'_>,
    ) -> Result<Transition, PipelineError> {
        let callback = self.announcement(model, change.from, change.to, change.error);
        let change = StatusChange { callback: callback.as_ref(), ..*change };
        let moved = self.db().set_partner_model_status(&model.id, &change)?;
        Ok(Transition { moved, announced: moved && callback.is_some() })
    }

    fn announcement(
        &self,
        model: &PartnerModel,
        from: ModelStatus,
        to: ModelStatus,
        error: Option<(&str, &str)>,
    ) -> Option<NewCallback> {
        let url = model.callback_url.clone()?;
        let now = now_ms();
        let body = serde_json::json!({
            "event": "model.status",
            "uri": self.model_uri(&model.id),
            "id": model.id,
            "name": model.name,
            "status": to,
            "previous_status": from,
            "error": error.map(|(code, message)| serde_json::json!({"code": code, "message": message})),
            "changed": iso8601(now),
        });
        Some(NewCallback {
            id: crate::ids::random_hex(16),
            url,
            method: model.callback_method.clone().unwrap_or_else(|| "POST".to_string()),
            body: body.to_string(),
            give_up_at: now.saturating_add(self.config.callback_give_up.as_millis() as i64),
        })
    }

    /// Claims the next due job for `worker`, leased for `lease_ms`.
    pub fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<Job>, PipelineError> {
        self.db().claim_job(worker, &[JobKind::ProcessUpload], now_ms(), lease_ms)
    }

    /// Renews `worker`'s lease on `job` for `lease_ms`; false when the
    /// lease was lost (taken over after it ran out).
    pub fn heartbeat(&self, job: &str, worker: &str, lease_ms: i64) -> bool {
        matches!(self.db().heartbeat_job(job, worker, now_ms() + lease_ms), Ok(true))
    }

    /// Housekeeping: expired sessions go, and shared counters' windows
    /// older than two hours (the longest limit's window is one); how many
    /// sessions.
    pub fn sweep(&self) -> Result<usize, PipelineError> {
        self.db().sweep_counters(now_ms() - 2 * 3_600_000)?;
        self.db().delete_expired_sessions(now_ms())
    }

    /// Runs a claimed job to its end (on a CPU thread: it parses, repairs,
    /// renders and slices).
    pub fn run_job(&self, job: &Job, worker: &str) -> JobReport {
        match job.kind {
            JobKind::ProcessUpload => self.process_upload(job, worker),
            // Sent by the server's provider sender, never claimed here.
            JobKind::ProviderRequest => JobReport::new(JobOutcome::Skipped, false),
        }
    }

    /// One `process_upload` job: the spool through the pipeline into the
    /// store, then the model's row, its status, its callback and the job's
    /// completion in one transaction, then the spool removed. A store
    /// failure is retried with back-off; after the last try the model is
    /// `error` with code `store`.
    fn process_upload(&self, job: &Job, worker: &str) -> JobReport {
        let Ok(upload) = serde_json::from_str::<UploadJob>(&job.payload) else {
            return self.finish(job, worker, None, Some(("internal", "the job's parameters are unreadable")));
        };
        let model = match self.db().partner_model(&job.subject) {
            Ok(Some(m)) if m.status == ModelStatus::Processing => m,
            // Finished by an earlier holder, or gone: nothing left to do.
            Ok(_) => {
                let _ = self.db().complete_job(&job.id, worker, now_ms());
                return JobReport::new(JobOutcome::Skipped, false);
            }
            Err(e) => return self.retry_or_give_up(job, worker, &e.to_string()),
        };
        let spool = self.store.uploads().join(&upload.spool);
        let lost = ("upload_lost", "the uploaded bytes are missing from the server; upload again");
        let shared = self.store.is_shared();
        if !shared && !spool.is_file() {
            return self.finish(job, worker, None, Some(lost));
        }
        let cost = crate::ingest::estimated_cost(&spool, upload.size);
        let reserved = self.memory.reserve(cost);
        let input = if shared {
            // Put there under its digest before the upload was acknowledged.
            let Some(id) = BlobId::parse(&upload.sha256) else {
                return self.finish(job, worker, None, Some(lost));
            };
            match self.store.blobs().contains(&id) {
                Ok(true) => self.store.blobs().get(&id).map(Input::Fetched).map_err(|e| e.to_string()),
                Ok(false) => return self.finish(job, worker, None, Some(lost)),
                Err(e) => Err(e.to_string()),
            }
        } else {
            // SAFETY: the spool file is this process's own: written whole,
            // synced and closed before its job was queued, under a random
            // name in DATA/uploads, which only the holder of the data
            // directory's lock writes to; it is removed only after its job
            // is finished and this map is dropped.
            unsafe { crate::core::ModelBytes::map(&spool) }.map(Input::Mapped).map_err(|e| e.to_string())
        };
        let result = input.and_then(|bytes| {
            crate::ingest::ingest_upload_timed(
                bytes.as_bytes(),
                Some(upload.sha256.clone()),
                &model.name,
                Some(model.partner_id.clone()),
                self.store.blobs(),
                &self.config.process,
                shared,
            )
            .map_err(|e| e.to_string())
        });
        drop(reserved);
        let (row, report, times) = match result {
            Ok(done) => done,
            Err(message) => return self.retry_or_give_up(job, worker, &message),
        };
        let error = report.error.as_ref().map(|e| (e.code, e.message.as_str()));
        let change = StatusChange {
            content_id: Some(&row.id),
            error,
            record: Some(&row),
            job: JobEffect::Complete(&job.id, worker),
            ..StatusChange::new(ModelStatus::Processing, outcome_status(error))
        };
        let mut done = match self.set_status(&model, &change) {
            Ok(t) => {
                if !t.moved {
                    let _ = self.db().complete_job(&job.id, worker, now_ms());
                }
                let outcome = match error {
                    Some((code, _)) => JobOutcome::Failed(code.to_string()),
                    None => JobOutcome::Processed,
                };
                let _ = std::fs::remove_file(&spool);
                JobReport::new(outcome, t.announced)
            }
            Err(e) => self.retry_or_give_up(job, worker, &e.to_string()),
        };
        done.times = Some(times);
        done
    }

    /// A store failure: the job is due again after a back-off while tries
    /// remain, else its model is `error` with code `store`.
    fn retry_or_give_up(&self, job: &Job, worker: &str, message: &str) -> JobReport {
        let retry_at = now_ms() + RETRY_BASE_MS.saturating_mul(1 << job.attempts.min(16).saturating_sub(1));
        match self.db().fail_job(&job.id, worker, message, Some(retry_at), now_ms()) {
            Ok(Some(JobStatus::Queued)) => JobReport::new(JobOutcome::Retried(retry_at - now_ms()), false),
            Ok(Some(_)) => {
                // Failed for good (the job is ended); the spool is kept no
                // longer.
                let report = self.finish_unfenced(job, Some(("store", message)));
                if let Ok(u) = serde_json::from_str::<UploadJob>(&job.payload) {
                    let _ = std::fs::remove_file(self.store.uploads().join(u.spool));
                }
                report
            }
            Ok(None) | Err(_) => JobReport::new(JobOutcome::Skipped, false),
        }
    }

    /// Ends `job` with its model `error` (`error`), or `processed`, in one
    /// transaction with the job's completion; the spool goes.
    fn finish(
        &self,
        job: &Job,
        worker: &str,
        content: Option<&str>,
        error: Option<(&str, &str)>,
    ) -> JobReport {
        let Ok(Some(model)) = self.db().partner_model(&job.subject) else {
            let _ = self.db().complete_job(&job.id, worker, now_ms());
            return JobReport::new(JobOutcome::Skipped, false);
        };
        let change = StatusChange {
            content_id: content,
            error,
            job: JobEffect::Complete(&job.id, worker),
            ..StatusChange::new(ModelStatus::Processing, outcome_status(error))
        };
        let announced = match self.set_status(&model, &change) {
            Ok(t) if t.moved => t.announced,
            _ => {
                let _ = self.db().complete_job(&job.id, worker, now_ms());
                false
            }
        };
        if let Ok(u) = serde_json::from_str::<UploadJob>(&job.payload) {
            let _ = std::fs::remove_file(self.store.uploads().join(u.spool));
        }
        let outcome = error.map_or(JobOutcome::Processed, |(code, _)| JobOutcome::Failed(code.to_string()));
        JobReport::new(outcome, announced)
    }

    /// The model of a job already ended (given up) moves to `error`.
    fn finish_unfenced(&self, job: &Job, error: Option<(&str, &str)>) -> JobReport {
        let Ok(Some(model)) = self.db().partner_model(&job.subject) else {
            return JobReport::new(JobOutcome::Skipped, false);
        };
        let change =
            StatusChange { error, ..StatusChange::new(ModelStatus::Processing, outcome_status(error)) };
        let announced = self.set_status(&model, &change).is_ok_and(|t| t.announced);
        let outcome = error.map_or(JobOutcome::Processed, |(code, _)| JobOutcome::Failed(code.to_string()));
        JobReport::new(outcome, announced)
    }

    /// Models a version without jobs left `processing` for ever are told
    /// they were interrupted; how many.
    fn recover_orphans(&self) -> Result<usize, PipelineError> {
        let orphans = self.db().processing_without_job()?;
        let mut told = 0;
        for id in orphans {
            let Some(model) = self.db().partner_model(&id)? else { continue };
            let error =
                ("interrupted", "processing was interrupted and the upload was not kept; upload it again");
            let change = StatusChange {
                error: Some(error),
                ..StatusChange::new(ModelStatus::Processing, ModelStatus::Error)
            };
            if self.set_status(&model, &change)?.moved {
                told += 1;
            }
        }
        Ok(told)
    }
}

/// An upload's bytes as a job reads them.
enum Input {
    /// The local spool file, mapped.
    Mapped(crate::core::ModelBytes),
    /// Fetched from the shared blob store.
    Fetched(Vec<u8>),
}

impl Input {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Input::Mapped(m) => m.as_bytes(),
            Input::Fetched(v) => v,
        }
    }
}

fn outcome_status(error: Option<(&str, &str)>) -> ModelStatus {
    if error.is_some() { ModelStatus::Error } else { ModelStatus::Processed }
}

/// The job that processes `model`'s spooled upload.
fn upload_job(model: &PartnerModel, upload: &UploadJob) -> NewJob {
    NewJob {
        id: crate::ids::uuid_v4(),
        kind: JobKind::ProcessUpload,
        subject: model.id.clone(),
        partner_id: Some(model.partner_id.clone()),
        payload: serde_json::to_string(upload).unwrap_or_default(),
        max_attempts: MAX_ATTEMPTS,
    }
}

/// Unix ms as RFC 3339 UTC to the second (`2026-12-01T10:00:00Z`), the
/// form the API's timestamps take.
pub fn iso8601(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms.div_euclid(1000) * 1000)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{CallbackState, Partner};

    fn config(queue: u64) -> LifecycleConfig {
        LifecycleConfig {
            public_url: "http://strata.test".into(),
            callback_give_up: Duration::from_secs(60),
            queue_per_partner: queue,
            memory_budget: 1 << 30,
            process: ProcessOptions::default(),
        }
    }

    /// A partner `p1` and a `not-uploaded` model `id` with a callback URL.
    fn model(life: &Lifecycle, id: &str) -> PartnerModel {
        let p =
            Partner { id: "p1".into(), name: "Shop".into(), email: "a@b.c".into(), username: "shop".into() };
        let _ = life.db().create_partner(&p, "hash", "key", "whsec_c2VjcmV0");
        let mut m = PartnerModel::new(id.into(), "p1".into(), "Cube".into(), ModelStatus::NotUploaded, 0);
        m.callback_url = Some("http://example.com/hook".into());
        life.db().create_partner_model(&m).expect("model");
        m
    }

    /// Spools `bytes` as an upload of `model`, as the server does.
    fn spool(life: &Lifecycle, model: &PartnerModel, bytes: &[u8]) -> UploadJob {
        let (name, path) = life.store().new_spool(&model.id);
        std::fs::write(&path, bytes).expect("spool");
        UploadJob { spool: name, sha256: crate::core::stream::sha256_hex(bytes), size: bytes.len() as u64 }
    }

    /// The stores each test runs on: the embedded default, and the
    /// metadata on PostgreSQL (shared: uploads go to the blob store before
    /// they are acknowledged) when the tests have a server.
    fn stores() -> Vec<crate::store::StoreOptions> {
        let mut out = vec![crate::store::StoreOptions::default()];
        if let Some(database) = crate::db::testing::fresh_postgres() {
            out.push(crate::store::StoreOptions { database, ..Default::default() });
        }
        out
    }

    fn cube() -> Vec<u8> {
        crate::core::synth::to_binary_stl("cube", &crate::core::synth::cube_facets())
    }

    #[test]
    fn an_accepted_upload_survives_a_restart_and_ends_processed_announced_once() {
        for options in stores() {
            let shared = options.database.is_shared();
            let dir = tempfile::tempdir().expect("tempdir");
            let (life, _, _) = Lifecycle::open_with(dir.path(), 2, config(8), &options).expect("open");
            let m = model(&life, "m1");
            let upload = spool(&life, &m, &cube());
            let t = life.accept_upload(&m, &upload).expect("accepted");
            assert!(t.moved && t.announced);
            // Shared: the bytes are in the blob store under their digest, and
            // the local spool is gone.
            let in_blobs =
                life.store().blobs().contains(&BlobId::parse(&upload.sha256).expect("id")).expect("q");
            assert_eq!((in_blobs, life.store().uploads().join(&upload.spool).exists()), (shared, !shared));
            assert!(matches!(life.accept_upload(&m, &upload), Err(AcceptError::AlreadyUploaded)));
            // Claimed, then the process dies mid-job: the lease is never ended.
            assert!(life.claim("w1", 300).expect("claim").is_some());
            drop(life);
            // An unacknowledged spool (no job names it) left by the same crash.
            std::fs::write(dir.path().join("uploads/stray"), b"x").expect("stray");

            let (life, recovered, interrupted) =
                Lifecycle::open_with(dir.path(), 2, config(8), &options).expect("reopen");
            // Alone, the restarted process takes the job back at once; sharing
            // the database, it leaves running jobs to their leases (the holder
            // may be alive elsewhere) and the job is due when the lease ends.
            let expected = if shared { (0, 0, 1, 0) } else { (1, 1, 1, 0) };
            assert_eq!(
                (recovered.requeued, recovered.spools_kept, recovered.spools_removed, interrupted),
                expected
            );
            if shared {
                assert!(life.claim("w2", 60_000).expect("claim").is_none(), "taken while its lease runs");
                std::thread::sleep(Duration::from_millis(400));
            }
            let job = life.claim("w2", 60_000).expect("claim").expect("due again after the restart");
            assert_eq!(job.attempts, 2);
            let report = life.run_job(&job, "w2");
            assert_eq!(report.outcome, JobOutcome::Processed);
            assert!(report.announced && report.times.is_some());
            let done = life.db().partner_model("m1").expect("q").expect("model");
            assert_eq!(done.status, ModelStatus::Processed);
            // The stored model the status names was written with it.
            let stored =
                life.db().model(done.content_id.as_deref().expect("content")).expect("q").expect("row");
            assert_eq!(stored.id, upload.sha256);
            assert!(!life.store().uploads().join(&upload.spool).exists(), "the spool outlived its job");
            assert!(life.claim("w2", 60_000).expect("claim").is_none(), "the job is done");
            // One announcement per change: processing, then processed.
            let log = life.db().callbacks_of("m1").expect("log");
            let said: Vec<String> = log
                .iter()
                .map(|(c, _)| {
                    let body: serde_json::Value = serde_json::from_str(&c.body).expect("json");
                    assert_eq!(body["uri"], "http://strata.test/model/m1/");
                    assert_eq!(c.state, CallbackState::Pending);
                    body["status"].as_str().unwrap_or_default().to_string()
                })
                .collect();
            assert_eq!(said, ["processing", "processed"]);
        }
    }

    #[test]
    fn a_bad_model_ends_in_error_with_its_code_and_the_queue_is_bounded() {
        for options in stores() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (life, _, _) = Lifecycle::open_with(dir.path(), 1, config(1), &options).expect("open");
            let first = model(&life, "m1");
            let second = model(&life, "m2");
            let bad = spool(&life, &first, b"solid nothing\nthis is not an stl\n");
            life.accept_upload(&first, &bad).expect("accepted");
            let other = spool(&life, &second, &cube());
            match life.accept_upload(&second, &other) {
                Err(AcceptError::QueueFull { waiting: 1 }) => {}
                other => panic!("a second upload passed a queue of one: {other:?}"),
            }
            assert_eq!(
                life.db().partner_model("m2").expect("q").expect("m2").status,
                ModelStatus::NotUploaded
            );
            let job = life.claim("w1", 60_000).expect("claim").expect("job");
            let report = life.run_job(&job, "w1");
            let JobOutcome::Failed(code) = &report.outcome else { panic!("{report:?}") };
            let m = life.db().partner_model("m1").expect("q").expect("m1");
            assert_eq!((m.status, m.error_code.as_deref()), (ModelStatus::Error, Some(code.as_str())));
            // The queue has room again.
            life.accept_upload(&second, &other).expect("admitted once the first is done");
        }
    }

    #[test]
    fn a_lost_spool_fails_the_model_instead_of_retrying_for_ever() {
        for options in stores() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (life, _, _) = Lifecycle::open_with(dir.path(), 1, config(8), &options).expect("open");
            let m = model(&life, "m1");
            let upload = spool(&life, &m, &cube());
            life.accept_upload(&m, &upload).expect("accepted");
            let lost = match life.store().blobs() {
                // Shared: the bytes were in the blob store; lose them there.
                crate::blob::Blobs::Local(fs) if options.database.is_shared() => {
                    fs.path_of(&BlobId::parse(&upload.sha256).expect("id"))
                }
                _ => life.store().uploads().join(&upload.spool),
            };
            std::fs::remove_file(lost).expect("lose it");
            let job = life.claim("w1", 60_000).expect("claim").expect("job");
            assert_eq!(life.run_job(&job, "w1").outcome, JobOutcome::Failed("upload_lost".into()));
            assert!(life.claim("w1", 60_000).expect("claim").is_none());
        }
    }
}
