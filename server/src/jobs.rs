//! The job runner: acknowledged work taken from the durable queue in the
//! metadata database and done on the CPU pool.
//!
//! An upload is acknowledged (204) only after its spool file is synced
//! and its job is written in the same transaction as the model's move to
//! `processing`; this runner claims due jobs with a lease it renews while
//! it works, and records the result, the model's status, the callback and
//! the job's completion in one transaction. A process killed at any point
//! leaves the job queued or running; the next start makes running jobs
//! due again and keeps their spools, so every acknowledged upload reaches
//! `processed` or `error`, and each status change is announced once.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::AppState;
use strata_pipeline::db::{Job, JobEffect, JobKind, JobStatus, ModelStatus, NewJob, PartnerModel, now_ms};

/// How long a claimed job is its holder's without a heartbeat.
const LEASE_MS: i64 = 5 * 60_000;
/// How often a running job's lease is renewed.
const HEARTBEAT: Duration = Duration::from_secs(60);
/// Tries of a job that fails on the store (disk full, database busy).
const MAX_ATTEMPTS: u32 = 5;
/// The first retry's wait; each later one doubles it.
const RETRY_BASE_MS: i64 = 10_000;

/// What a `process_upload` job needs: the spool file (a name under
/// `DATA/uploads`) and what was measured while it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UploadJob {
    /// The spool file's name in `DATA/uploads`.
    pub(crate) spool: String,
    /// Its SHA-256, computed while it streamed in.
    pub(crate) sha256: String,
    /// Its size.
    pub(crate) size: u64,
}

/// The job that processes `model`'s spooled upload.
pub(crate) fn upload_job(model: &PartnerModel, upload: &UploadJob) -> NewJob {
    NewJob {
        id: crate::auth::uuid_v4(),
        kind: JobKind::ProcessUpload,
        subject: model.id.clone(),
        partner_id: Some(model.partner_id.clone()),
        payload: serde_json::to_string(upload).unwrap_or_default(),
        max_attempts: MAX_ATTEMPTS,
    }
}

/// The spool file a pending job still needs, if it is an upload's.
pub(crate) fn spool_of(job: &Job) -> Option<String> {
    (job.kind == JobKind::ProcessUpload)
        .then(|| serde_json::from_str::<UploadJob>(&job.payload).ok().map(|u| u.spool))
        .flatten()
}

/// Runs for the server's life: as many jobs at once as the CPU pool has
/// threads, each claimed with a lease that a heartbeat renews.
pub(crate) async fn run(state: Arc<AppState>) {
    recover_orphans(&state);
    let slots = Arc::new(tokio::sync::Semaphore::new(state.config.workers.max(1)));
    let mut last_sweep = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        // Housekeeping, once a minute: expired sessions go.
        if last_sweep.elapsed() >= Duration::from_secs(60) {
            last_sweep = std::time::Instant::now();
            if let Err(e) = state.db().delete_expired_sessions(now_ms()) {
                tracing::warn!(error = %e, "cannot remove expired sessions");
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let claimed = state.db().claim_job(&state.worker_id, &[JobKind::ProcessUpload], now_ms(), LEASE_MS);
        match claimed {
            Ok(Some(job)) => {
                let st = state.clone();
                tokio::spawn(async move {
                    run_one(st, job).await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    _ = state.jobs_due.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e, "jobs: cannot claim");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Models a version without jobs left `processing` for ever: they are
/// told they were interrupted (and their callbacks say so), so the
/// partner knows to upload again.
fn recover_orphans(state: &AppState) {
    let orphans = match state.db().processing_without_job() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "jobs: cannot list interrupted models");
            return;
        }
    };
    for id in orphans {
        let Ok(Some(model)) = state.db().partner_model(&id) else { continue };
        let error =
            ("interrupted", "processing was interrupted and the upload was not kept; upload it again");
        if let Err(e) = crate::callbacks::set_status(
            state,
            &model,
            ModelStatus::Processing,
            ModelStatus::Error,
            None,
            Some(error),
            JobEffect::None,
        ) {
            tracing::error!(model = %id, error = %e, "cannot record the interruption");
        }
    }
}

async fn run_one(state: Arc<AppState>, job: Job) {
    let started = std::time::Instant::now();
    let (tx, mut done) = tokio::sync::oneshot::channel();
    let st = state.clone();
    let running = job.clone();
    state.pool.spawn(move || {
        process_upload(&st, &running);
        let _ = tx.send(());
    });
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            _ = &mut done => {
                metrics::histogram!("strata_job_duration_seconds", "kind" => job.kind.as_str())
                    .record(started.elapsed().as_secs_f64());
                break;
            }
            _ = beat.tick() => {
                let until = now_ms() + LEASE_MS;
                if !matches!(state.db().heartbeat_job(&job.id, &state.worker_id, until), Ok(true)) {
                    tracing::warn!(job = %job.id, "lost its lease");
                }
            }
        }
    }
}

/// One `process_upload` job, on the CPU pool: the spool through the
/// pipeline into the store, then the model's status, its callback and the
/// job's completion in one transaction, then the spool removed. A store
/// failure is retried with back-off; after the last try the model is
/// `error` with code `store`.
fn process_upload(state: &AppState, job: &Job) {
    let fail = |message: String| {
        let retry_at = now_ms() + RETRY_BASE_MS.saturating_mul(1 << job.attempts.min(16).saturating_sub(1));
        match state.db().fail_job(&job.id, &state.worker_id, &message, Some(retry_at), now_ms()) {
            Ok(Some(JobStatus::Queued)) => {
                tracing::warn!(job = %job.id, model = %job.subject, error = %message, retry_in_s = (retry_at - now_ms()) / 1000, "job failed; retried")
            }
            Ok(Some(_)) => finish_model(state, job, None, Some(("store", &message)), false),
            Ok(None) => {}
            Err(e) => tracing::error!(job = %job.id, error = %e, "cannot record the job's failure"),
        }
    };
    let Ok(upload) = serde_json::from_str::<UploadJob>(&job.payload) else {
        return finish_model(
            state,
            job,
            None,
            Some(("internal", "the job's parameters are unreadable")),
            true,
        );
    };
    let model = match state.db().partner_model(&job.subject) {
        Ok(Some(m)) if m.status == ModelStatus::Processing => m,
        // Finished by an earlier holder, or gone: nothing left to do.
        Ok(_) => {
            let _ = state.db().complete_job(&job.id, &state.worker_id, now_ms());
            return;
        }
        Err(e) => return fail(e.to_string()),
    };
    let spool = state.uploads.join(&upload.spool);
    if !spool.is_file() {
        return finish_model(
            state,
            job,
            None,
            Some(("upload_lost", "the uploaded bytes are missing from the server; upload again")),
            true,
        );
    }
    let cost = strata_pipeline::ingest::estimated_cost(&spool, upload.size);
    let _reserved = state.memory.reserve(cost);
    let options = strata_pipeline::process::ProcessOptions::default();
    // SAFETY: the spool file is this server's own: written whole, synced
    // and closed by the upload handler under a random name in
    // DATA/uploads, which only this process writes to (it holds the data
    // directory's lock), and removed only after its job is finished and
    // this map is dropped.
    let mapped = unsafe { strata_pipeline::core::ModelBytes::map(&spool) };
    let result = mapped.map_err(|e| e.to_string()).and_then(|bytes| {
        strata_pipeline::ingest::ingest_upload_timed(
            bytes.as_bytes(),
            Some(upload.sha256.clone()),
            &model.name,
            Some(model.partner_id.clone()),
            &state.blobs,
            &options,
        )
        .map_err(|e| e.to_string())
    });
    let result = result.map(|(row, report, times)| {
        for (stage, seconds) in [
            ("hash", times.hash),
            ("parse", times.parse),
            ("repair", times.repair),
            ("render", times.render),
            ("slice", times.slice),
            ("encode", times.encode),
            ("store", times.store),
            ("commit", times.commit),
        ] {
            metrics::histogram!("strata_pipeline_stage_seconds", "stage" => stage).record(seconds);
        }
        (row, report)
    });
    let (row, report) = match result.and_then(|(row, report)| {
        state.db().put_model(&row).map(|()| (row, report)).map_err(|e| e.to_string())
    }) {
        Ok(stored) => stored,
        Err(message) => return fail(message),
    };
    match &report.error {
        Some(e) => finish_model(state, job, Some(&row.id), Some((e.code, &e.message)), true),
        None => finish_model(state, job, Some(&row.id), None, true),
    }
    let _ = std::fs::remove_file(&spool);
}

/// Records the job's outcome on its model (`processed`, or `error` with
/// `error`), completing the job in the same transaction when `complete`.
fn finish_model(
    state: &AppState,
    job: &Job,
    content: Option<&str>,
    error: Option<(&str, &str)>,
    complete: bool,
) {
    let Ok(Some(model)) = state.db().partner_model(&job.subject) else { return };
    let to = if error.is_some() { ModelStatus::Error } else { ModelStatus::Processed };
    let effect = if complete { JobEffect::Complete(&job.id, &state.worker_id) } else { JobEffect::None };
    match crate::callbacks::set_status(state, &model, ModelStatus::Processing, to, content, error, effect) {
        Ok(true) => {}
        // Already finished: the job is done either way.
        Ok(false) => {
            if complete {
                let _ = state.db().complete_job(&job.id, &state.worker_id, now_ms());
            }
        }
        Err(e) => tracing::error!(model = %job.subject, error = %e, "cannot record the processing outcome"),
    }
    if let Ok(u) = serde_json::from_str::<UploadJob>(&job.payload)
        && error.is_some_and(|(code, _)| code != "store")
    {
        let _ = std::fs::remove_file(state.uploads.join(u.spool));
    }
}
