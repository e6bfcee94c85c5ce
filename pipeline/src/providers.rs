//! External service providers (seed 002), the lifecycle's side: the
//! registry, account links, and a provider job from the user's request to
//! the model made of its result.
//!
//! The HTTP side (signing, verifying, sending requests, signed URLs) is the
//! server's; every state change goes through here, each one transaction.
//!
//! # A provider job, in one direction
//! 1. [`Lifecycle::request_service`]: the job (`queued`) and its
//!    `provider_request` queue job commit together, so the request is sent
//!    even across a crash.
//! 2. The server's sender sends it: `sent`, then `accepted` (202) or
//!    `refused` (the provider's problem is kept and relayed).
//! 3. The provider uploads its result through the signed output URL
//!    ([`Lifecycle::provider_result_path`]; `running`) and reports
//!    completion; [`Lifecycle::accept_provider_result`] makes the result a
//!    new model, child of the job's model, processed (validated, repaired,
//!    sliced) like any upload; the job is `done`.
//! 4. A job still open at its deadline is `timed_out`. Every end is
//!    announced to the user on the model's callback URL.

use std::path::PathBuf;
use std::time::Duration;

use crate::PipelineError;
use crate::db::{
    JobKind, ModelStatus, NewCallback, NewJob, PartnerModel, ProviderJob, ProviderJobStatus,
    ProviderJobUpdate, Service, ServiceType, now_ms,
};
use crate::lifecycle::{AcceptError, Lifecycle, UploadJob, iso8601};

/// Tries to send a provider request before it is given up.
pub const REQUEST_ATTEMPTS: u32 = 8;

/// Why a provider operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A field is missing or wrong.
    #[error("{message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such thing (or not the caller's).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The model cannot be worked on yet.
    #[error("{0}")]
    NotReady(String),
    /// The job is no longer open.
    #[error("the job is already {0}")]
    Finished(ProviderJobStatus),
    /// The result does not match what the provider reported.
    #[error("{0}")]
    Mismatch(String),
    /// Too many uploads are waiting.
    #[error("{0}")]
    Busy(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] PipelineError),
}

impl From<AcceptError> for ServiceError {
    fn from(e: AcceptError) -> ServiceError {
        match e {
            AcceptError::Store(e) => ServiceError::Store(e),
            e @ AcceptError::QueueFull { .. } => ServiceError::Busy(e.to_string()),
            e => ServiceError::NotReady(e.to_string()),
        }
    }
}

/// A service to register.
#[derive(Debug, Clone)]
pub struct NewService<'a> {
    /// The registering partner.
    pub owner_id: &'a str,
    /// Its name in the registry.
    pub name: &'a str,
    /// What it offers.
    pub description: &'a str,
    /// Its type's name (`model-healing`, ...).
    pub kind: &'a str,
    /// Where requests go (an http(s) URL; the server checks its address).
    pub service_url: &'a str,
    /// `POST` (default) or `PUT`.
    pub service_method: Option<&'a str>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { field, message: message.into() }
}

impl Lifecycle {
    /// Registers a service (secret generation 1).
    pub fn register_service(&self, new: &NewService<'_>) -> Result<Service, ServiceError> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(invalid("name", "name must be 1 to 200 printable characters"));
        }
        if new.description.chars().count() > 4000 {
            return Err(invalid("description", "description is at most 4000 characters"));
        }
        let kind = ServiceType::parse(new.kind).ok_or_else(|| {
            let names: Vec<&str> = ServiceType::ALL.iter().map(|k| k.as_str()).collect();
            invalid("type", format!("type must be one of {}", names.join(", ")))
        })?;
        let url = new.service_url.trim();
        if url.len() > 2048 || !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid("service_url", "service_url must be an http(s) URL of at most 2048 bytes"));
        }
        let method = new.service_method.unwrap_or("POST").to_ascii_uppercase();
        if !matches!(method.as_str(), "POST" | "PUT") {
            return Err(invalid("service_method", "service_method must be POST or PUT"));
        }
        let s = Service {
            id: crate::ids::uuid_v4(),
            owner_id: new.owner_id.to_string(),
            name: name.to_string(),
            description: new.description.to_string(),
            kind,
            service_url: url.to_string(),
            service_method: method,
            secret_generation: 1,
            previous_until: None,
            created_at: now_ms(),
        };
        self.db().create_service(&s)?;
        Ok(s)
    }

    /// Asks service `service_id` to work on `partner_id`'s model
    /// `model_id` (processed, with content) with `options`; the job must
    /// be done within `timeout`.
    pub fn request_service(
        &self,
        partner_id: &str,
        service_id: &str,
        model_id: &str,
        options: &serde_json::Value,
        timeout: Duration,
    ) -> Result<ProviderJob, ServiceError> {
        if !options.is_object() && !options.is_null() {
            return Err(invalid("options", "options must be an object"));
        }
        let db = self.db();
        db.service(service_id)?.ok_or(ServiceError::NotFound("service"))?;
        let model = match db.partner_model(model_id)? {
            Some(m) if m.partner_id == partner_id => m,
            _ => return Err(ServiceError::NotFound("model")),
        };
        if model.status != ModelStatus::Processed || model.content_id.is_none() {
            return Err(ServiceError::NotReady(format!(
                "the model is {}; a service works on processed models",
                model.status
            )));
        }
        let now = now_ms();
        let job = ProviderJob {
            id: crate::ids::uuid_v4(),
            service_id: service_id.to_string(),
            partner_id: partner_id.to_string(),
            model_id: model.id.clone(),
            options: if options.is_null() { "{}".to_string() } else { options.to_string() },
            status: ProviderJobStatus::Queued,
            problem: None,
            error: None,
            result_model: None,
            result_sha256: None,
            result_size: None,
            deadline_at: now.saturating_add(timeout.as_millis() as i64),
            created_at: now,
            updated_at: now,
        };
        let send = NewJob {
            id: crate::ids::uuid_v4(),
            kind: JobKind::ProviderRequest,
            subject: job.id.clone(),
            partner_id: Some(partner_id.to_string()),
            payload: "{}".to_string(),
            max_attempts: REQUEST_ATTEMPTS,
        };
        db.create_provider_job(&job, &send)?;
        Ok(job)
    }

    /// Moves `job` from one of `from` to `to` with `update`; when `to`
    /// ends the job, the user is told on the model's callback URL in the
    /// same transaction. Whether it moved, and whether a callback was
    /// queued.
    pub fn move_provider_job(
        &self,
        job: &ProviderJob,
        from: &[ProviderJobStatus],
        to: ProviderJobStatus,
        update: ProviderJobUpdate<'_>,
    ) -> Result<(bool, bool), PipelineError> {
        let announcement = if to.is_open() { None } else { self.job_announcement(job, to, &update)? };
        let update = ProviderJobUpdate { callback: announcement.as_ref(), ..update };
        let moved = self.db().move_provider_job(&job.id, from, to, &update, now_ms())?;
        Ok((moved, moved && announcement.is_some()))
    }

    fn job_announcement(
        &self,
        job: &ProviderJob,
        to: ProviderJobStatus,
        update: &ProviderJobUpdate<'_>,
    ) -> Result<Option<NewCallback>, PipelineError> {
        let Some(model) = self.db().partner_model(&job.model_id)? else { return Ok(None) };
        let Some(url) = model.callback_url.clone() else { return Ok(None) };
        let now = now_ms();
        let base = &self.config().public_url;
        let body = serde_json::json!({
            "event": "job.status",
            "uri": format!("{base}/jobs/{}/", job.id),
            "id": job.id,
            "status": to,
            "service": format!("{base}/service/{}/", job.service_id),
            "model": self.model_uri(&job.model_id),
            "result_model": update.result_model.map(|m| self.model_uri(m)),
            "error": update.error,
            "problem": update.problem.and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
            "changed": iso8601(now),
        });
        Ok(Some(NewCallback {
            id: crate::ids::random_hex(16),
            url,
            method: model.callback_method.clone().unwrap_or_else(|| "POST".to_string()),
            body: body.to_string(),
            give_up_at: now.saturating_add(self.config().callback_give_up.as_millis() as i64),
        }))
    }

    /// Where provider job `id`'s uploaded result is kept until it becomes
    /// a model (`DATA/provider-results/{id}`; the directory is made).
    pub fn provider_result_path(&self, id: &str) -> Result<PathBuf, PipelineError> {
        let dir = self.store().dir().join("provider-results");
        std::fs::create_dir_all(&dir).map_err(|source| PipelineError::Io { path: dir.clone(), source })?;
        Ok(dir.join(id))
    }

    /// The provider reported `job` done with a result of `sha256` and
    /// `size`: the uploaded result must be exactly that. It becomes a new
    /// model of the user's, child of the job's model, queued for
    /// processing like an upload, and the job is `done`. The new model's id
    /// and whether a callback was queued.
    pub fn accept_provider_result(
        &self,
        job: &ProviderJob,
        sha256: &str,
        size: u64,
    ) -> Result<(String, bool), ServiceError> {
        if !job.status.is_open() {
            return Err(ServiceError::Finished(job.status));
        }
        let (Some(have_sha), Some(have_size)) = (&job.result_sha256, job.result_size) else {
            return Err(ServiceError::Mismatch("no result was uploaded to the output URL".into()));
        };
        if !have_sha.eq_ignore_ascii_case(sha256) || u64::try_from(have_size).ok() != Some(size) {
            return Err(ServiceError::Mismatch(format!(
                "the uploaded result has SHA-256 {have_sha} and {have_size} bytes; the report said {sha256} and {size}"
            )));
        }
        let parent = self.db().partner_model(&job.model_id)?.ok_or(ServiceError::NotFound("model"))?;
        let service = self.db().service(&job.service_id)?.ok_or(ServiceError::NotFound("service"))?;
        let child = PartnerModel {
            callback_url: parent.callback_url.clone(),
            callback_method: parent.callback_method.clone(),
            allowed_resize: parent.allowed_resize,
            allowed_rotation: parent.allowed_rotation,
            ..PartnerModel::new(
                crate::ids::uuid_v4(),
                parent.partner_id.clone(),
                format!("{} ({})", parent.name, service.name).chars().take(200).collect(),
                ModelStatus::NotUploaded,
                now_ms(),
            )
        };
        let kept = self.provider_result_path(&job.id)?;
        let (spool_name, spool) = self.store().new_spool(&child.id);
        std::fs::rename(&kept, &spool).map_err(|source| PipelineError::Io { path: kept.clone(), source })?;
        let upload = UploadJob { spool: spool_name, sha256: have_sha.to_ascii_lowercase(), size };
        let created = (|| -> Result<(), ServiceError> {
            self.db().create_partner_model(&child)?;
            self.db().add_lineage(&child.id, std::slice::from_ref(&parent.id))?;
            self.accept_upload(&child, &upload)?;
            Ok(())
        })();
        if let Err(e) = created {
            // Back where the provider may upload again.
            let _ = std::fs::rename(&spool, &kept);
            return Err(e);
        }
        let update = ProviderJobUpdate { result_model: Some(&child.id), ..ProviderJobUpdate::default() };
        let (_, announced) = self.move_provider_job(
            job,
            &[ProviderJobStatus::Running, ProviderJobStatus::Accepted, ProviderJobStatus::Sent],
            ProviderJobStatus::Done,
            update,
        )?;
        Ok((child.id, announced))
    }

    /// Open jobs past their deadline become `timed_out`, each announced;
    /// how many, and how many callbacks were queued.
    pub fn time_out_provider_jobs(&self) -> Result<(usize, usize), PipelineError> {
        let overdue = self.db().overdue_provider_jobs(now_ms())?;
        let (mut moved, mut announced) = (0, 0);
        for job in overdue {
            let update = ProviderJobUpdate {
                error: Some("the provider did not finish the job before its deadline"),
                ..ProviderJobUpdate::default()
            };
            let open = [
                ProviderJobStatus::Queued,
                ProviderJobStatus::Sent,
                ProviderJobStatus::Accepted,
                ProviderJobStatus::Running,
            ];
            let (m, a) = self.move_provider_job(&job, &open, ProviderJobStatus::TimedOut, update)?;
            moved += usize::from(m);
            announced += usize::from(a);
            if m && let Ok(path) = self.provider_result_path(&job.id) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok((moved, announced))
    }
}
