//! The job runner: acknowledged work taken from the durable queue and run
//! on the CPU pool, through [`strata_pipeline::lifecycle`].
//!
//! The runner holds no business rules: it claims due jobs with a lease
//! (as many at once as the CPU pool has threads), renews the lease while
//! a job runs, and turns each [`JobReport`] into logs and metrics. What a
//! job does, and what its end writes (the model's row and status, its
//! callback, the job's completion, in one transaction), is the
//! lifecycle's.

use std::sync::Arc;
use std::time::Duration;

use crate::state::AppState;
use strata_pipeline::db::Job;
use strata_pipeline::lifecycle::{JobOutcome, JobReport};

/// How long a claimed job is its holder's without a heartbeat, in ms.
fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.job_lease.as_millis()).unwrap_or(i64::MAX).max(1000)
}

/// Runs for the server's life.
pub(crate) async fn run(state: Arc<AppState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(state.config.workers.max(1)));
    let mut last_sweep = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        // Housekeeping, once a minute: expired sessions go.
        if last_sweep.elapsed() >= Duration::from_secs(60) {
            last_sweep = std::time::Instant::now();
            if let Ok(Err(e)) = state.with_life(|life| life.sweep()).await {
                tracing::warn!(error = %e, "cannot remove expired sessions");
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let worker = state.worker_id.clone();
        let lease = lease_ms(&state);
        match state.with_life(move |life| life.claim(&worker, lease)).await {
            Ok(Ok(Some(job))) => {
                let st = state.clone();
                tokio::spawn(async move {
                    run_one(st, job).await;
                    drop(permit);
                });
            }
            Ok(Ok(None)) => {
                drop(permit);
                tokio::select! {
                    _ = state.jobs_due.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Ok(Err(e)) => {
                drop(permit);
                tracing::error!(error = %e, "jobs: cannot claim");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e, "jobs: cannot claim");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_one(state: Arc<AppState>, job: Job) {
    let started = std::time::Instant::now();
    let (tx, mut done) = tokio::sync::oneshot::channel();
    let st = state.clone();
    let running = job.clone();
    state.pool.spawn(move || {
        let report = st.life.run_job(&running, &st.worker_id);
        let _ = tx.send(report);
    });
    let lease = lease_ms(&state);
    // Five heartbeats a lease: a worker loses a job only when it missed
    // several in a row (stopped, or cut off from the database).
    let mut beat = tokio::time::interval(Duration::from_millis((lease as u64 / 5).max(200)));
    beat.tick().await;
    loop {
        tokio::select! {
            report = &mut done => {
                metrics::histogram!("strata_job_duration_seconds", "kind" => job.kind.as_str())
                    .record(started.elapsed().as_secs_f64());
                if let Ok(report) = report {
                    tracing::debug!(job = %job.id, total_s = started.elapsed().as_secs_f64(), "job ended");
                    record(&state, &job, &report);
                }
                break;
            }
            _ = beat.tick() => {
                let (id, worker) = (job.id.clone(), state.worker_id.clone());
                if !matches!(state.with_life(move |life| life.heartbeat(&id, &worker, lease)).await, Ok(true)) {
                    tracing::warn!(job = %job.id, "lost its lease");
                }
            }
        }
    }
}

/// Logs and metrics of a finished run; wakes the callback sender when the
/// run queued an announcement.
fn record(state: &AppState, job: &Job, report: &JobReport) {
    if report.announced {
        state.callbacks_due.notify_one();
    }
    if let Some(times) = &report.times {
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
    }
    match &report.outcome {
        JobOutcome::Retried(in_ms) => {
            tracing::warn!(job = %job.id, model = %job.subject, retry_in_s = in_ms / 1000, "job failed on the store; retried")
        }
        JobOutcome::Failed(code) => {
            tracing::info!(job = %job.id, model = %job.subject, code = %code, "model failed")
        }
        JobOutcome::Processed => match &report.times {
            Some(t) => tracing::debug!(
                job = %job.id, model = %job.subject,
                parse_s = t.parse, repair_s = t.repair, render_s = t.render, slice_s = t.slice,
                encode_s = t.encode, store_s = t.store, commit_s = t.commit,
                "model processed"
            ),
            None => tracing::debug!(job = %job.id, model = %job.subject, "model processed"),
        },
        _ => {}
    }
}
