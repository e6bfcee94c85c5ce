//! Migration 7: external service providers (seed 002): the registry of
//! services, link requests and account links, the jobs users ask
//! providers to do, and the delivery ids already taken from providers.
//!
//! A service's shared secret is not stored: it is derived from the
//! server's key and the service's secret generation (see the server's
//! `providers` module), so the database alone never reveals it. Rotation
//! moves to the next generation and keeps the previous one valid until
//! `previous_until`.

use super::sql::{DbError, OptionalExt, Row, params};
use serde::Serialize;

use super::{Db, NewCallback, NewJob};
use crate::PipelineError;

/// Services, link requests, links, provider jobs, delivery ids.
pub(super) const MIGRATION_7: &str = r#"
CREATE TABLE services (
    id                  TEXT PRIMARY KEY,
    owner_id            TEXT NOT NULL,          -- the partner that registered it
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    kind                TEXT NOT NULL,          -- model-healing | ...
    service_url         TEXT NOT NULL,
    service_method      TEXT NOT NULL,
    secret_generation   BIGINT NOT NULL,
    previous_until      BIGINT,                 -- the previous generation's end (unix ms)
    created_at          BIGINT NOT NULL
);
CREATE INDEX services_by_kind ON services (kind);
CREATE TABLE service_link_requests (
    nonce_hash          TEXT PRIMARY KEY,       -- SHA-256 of the nonce
    service_id          TEXT NOT NULL REFERENCES services (id),
    partner_id          TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    used_at             BIGINT
);
CREATE TABLE service_links (
    id                  TEXT PRIMARY KEY,
    service_id          TEXT NOT NULL REFERENCES services (id),
    partner_id          TEXT NOT NULL,
    account             TEXT NOT NULL,          -- the provider's account id (the JWT's sub)
    created_at          BIGINT NOT NULL,
    UNIQUE (service_id, partner_id)
);
CREATE TABLE service_jtis (
    service_id          TEXT NOT NULL,
    jti                 TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    PRIMARY KEY (service_id, jti)
);
CREATE TABLE provider_jobs (
    id                  TEXT PRIMARY KEY,
    service_id          TEXT NOT NULL REFERENCES services (id),
    partner_id          TEXT NOT NULL,
    model_id            TEXT NOT NULL REFERENCES partner_models (id),
    options             TEXT NOT NULL,          -- JSON object
    status              TEXT NOT NULL,
    problem             TEXT,                   -- the provider's RFC 9457 refusal, JSON
    error               TEXT,
    result_model        TEXT,
    result_sha256       TEXT,
    result_size         BIGINT,
    deadline_at         BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX provider_jobs_by_partner ON provider_jobs (partner_id, created_at);
CREATE INDEX provider_jobs_open ON provider_jobs (status, deadline_at);
CREATE TABLE provider_deliveries (
    service_id          TEXT NOT NULL,
    delivery_id         TEXT NOT NULL,
    received_at         BIGINT NOT NULL,
    PRIMARY KEY (service_id, delivery_id)
);
"#;

super::vocab::text_enum! {
    /// What a service does (3DIAX's service types).
    pub enum ServiceType ("service type") {
        /// Repairs models.
        ModelHealing = "model-healing",
        /// Adds supports.
        SupportGeneration = "support-generation",
        /// Slices.
        Slicing = "slicing",
        /// Packs build volumes.
        Packing = "packing",
        /// Nests parts.
        Nesting = "nesting",
        /// Estimates cost or time.
        Estimation = "estimation",
    }
}

super::vocab::text_enum! {
    /// Where a provider job stands.
    pub enum ProviderJobStatus ("provider job status") {
        /// Waiting for its request to go out.
        Queued = "queued",
        /// Its request is being sent.
        Sent = "sent",
        /// The provider took it (202).
        Accepted = "accepted",
        /// The provider refused it (its problem is relayed).
        Refused = "refused",
        /// The provider uploaded a result.
        Running = "running",
        /// The result is a new model.
        Done = "done",
        /// The provider reported a failure, or its result was unusable.
        Failed = "failed",
        /// No completion before the job's deadline.
        TimedOut = "timed_out",
    }
}

impl ProviderJobStatus {
    /// Whether the job can still change.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Sent | Self::Accepted | Self::Running)
    }
}

/// A registered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Random id.
    pub id: String,
    /// The partner that registered it.
    pub owner_id: String,
    /// Its name in the registry.
    pub name: String,
    /// What it offers, for people.
    pub description: String,
    /// What it does.
    pub kind: ServiceType,
    /// Where requests are sent.
    pub service_url: String,
    /// `POST` or `PUT`.
    pub service_method: String,
    /// The current secret's generation (1 at registration).
    pub secret_generation: i64,
    /// Until when (unix ms) the previous generation is still accepted.
    pub previous_until: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}

/// A user's account at a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceLink {
    /// Random id.
    pub id: String,
    /// The service.
    pub service_id: String,
    /// The user (partner).
    pub partner_id: String,
    /// The provider's account id.
    pub account: String,
    /// Unix ms.
    pub created_at: i64,
}

/// What linking an account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The link, new or updated.
    Linked(ServiceLink),
    /// No live link request of this user and service has the nonce.
    UnknownNonce,
    /// The nonce was used already.
    NonceUsed,
    /// The token's `jti` was used already.
    JtiUsed,
}

/// A job a user asked a provider to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderJob {
    /// Random id.
    pub id: String,
    /// The service.
    pub service_id: String,
    /// The user (partner).
    pub partner_id: String,
    /// The model worked on.
    pub model_id: String,
    /// The user's options for the provider, a JSON object.
    pub options: String,
    /// Where it stands.
    pub status: ProviderJobStatus,
    /// The provider's refusal (RFC 9457 problem JSON).
    pub problem: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The model made of the result.
    pub result_model: Option<String>,
    /// The uploaded result's SHA-256.
    pub result_sha256: Option<String>,
    /// The uploaded result's size.
    pub result_size: Option<i64>,
    /// Unix ms by which it must be done.
    pub deadline_at: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// What a move of a provider job changes besides its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderJobUpdate<'a> {
    /// The provider's refusal.
    pub problem: Option<&'a str>,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// The model made of the result.
    pub result_model: Option<&'a str>,
    /// The user's announcement, queued in the same transaction.
    pub callback: Option<&'a NewCallback>,
}

const SERVICE_COLUMNS: &str = "id, owner_id, name, description, kind, service_url, service_method, \
                               secret_generation, previous_until, created_at";
const JOB_COLUMNS: &str = "id, service_id, partner_id, model_id, options, status, problem, error, \
                           result_model, result_sha256, result_size, deadline_at, created_at, updated_at";

fn row_to_service(r: &Row<'_>) -> Result<Service, DbError> {
    Ok(Service {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        kind: r.get(4)?,
        service_url: r.get(5)?,
        service_method: r.get(6)?,
        secret_generation: r.get(7)?,
        previous_until: r.get(8)?,
        created_at: r.get(9)?,
    })
}

fn row_to_link(r: &Row<'_>) -> Result<ServiceLink, DbError> {
    Ok(ServiceLink {
        id: r.get(0)?,
        service_id: r.get(1)?,
        partner_id: r.get(2)?,
        account: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn row_to_job(r: &Row<'_>) -> Result<ProviderJob, DbError> {
    Ok(ProviderJob {
        id: r.get(0)?,
        service_id: r.get(1)?,
        partner_id: r.get(2)?,
        model_id: r.get(3)?,
        options: r.get(4)?,
        status: r.get(5)?,
        problem: r.get(6)?,
        error: r.get(7)?,
        result_model: r.get(8)?,
        result_sha256: r.get(9)?,
        result_size: r.get(10)?,
        deadline_at: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

impl Db {
    /// Registers a service.
    pub fn create_service(&self, s: &Service) -> Result<(), PipelineError> {
        self.conn.execute(
            &format!(
                "INSERT INTO services ({SERVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            params![
                s.id,
                s.owner_id,
                s.name,
                s.description,
                s.kind.as_str(),
                s.service_url,
                s.service_method,
                s.secret_generation,
                s.previous_until,
                s.created_at
            ],
        )?;
        Ok(())
    }

    /// Service `id`.
    pub fn service(&self, id: &str) -> Result<Option<Service>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1"),
                params![id],
                row_to_service,
            )
            .optional()?)
    }

    /// The registry, oldest first, of one type or all.
    pub fn services(&self, kind: Option<ServiceType>) -> Result<Vec<Service>, PipelineError> {
        let rows = self.conn.query_map(
            &format!(
                "SELECT {SERVICE_COLUMNS} FROM services WHERE kind = $1 OR $2 = 1 ORDER BY created_at, id"
            ),
            params![kind.map_or("", ServiceType::as_str), i64::from(kind.is_none())],
            row_to_service,
        )?;
        Ok(rows)
    }

    /// Moves service `id` from secret generation `from` to the next,
    /// keeping `from` valid until `previous_until`; false when `from` was
    /// not the current one (a concurrent rotation won).
    pub fn rotate_service_secret(
        &self,
        id: &str,
        from: i64,
        previous_until: i64,
    ) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE services SET secret_generation = secret_generation + 1, previous_until = $1 \
             WHERE id = $2 AND secret_generation = $3",
            params![previous_until, id, from],
        )? > 0)
    }

    /// Records a link request: the nonce's hash, for `partner_id` and
    /// service `service_id`, until `expires_at`.
    pub fn create_link_request(
        &self,
        nonce_hash: &str,
        service_id: &str,
        partner_id: &str,
        expires_at: i64,
    ) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO service_link_requests (nonce_hash, service_id, partner_id, expires_at) \
             VALUES ($1, $2, $3, $4)",
            params![nonce_hash, service_id, partner_id, expires_at],
        )?;
        Ok(())
    }

    /// Links `link.partner_id`'s account `link.account` at service
    /// `link.service_id`, consuming the link request with `nonce_hash` and
    /// recording the token's `jti` (kept until `jti_until`), all in one
    /// transaction: a nonce or a `jti` counts once.
    pub fn link_account(
        &self,
        link: &ServiceLink,
        nonce_hash: &str,
        jti: &str,
        jti_until: i64,
        now: i64,
    ) -> Result<LinkOutcome, PipelineError> {
        let tx = self.begin()?;
        let request: Option<(String, String, i64, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT service_id, partner_id, expires_at, used_at FROM service_link_requests WHERE nonce_hash = $1",
                params![nonce_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        match request {
            Some((s, p, _, _)) if s != link.service_id || p != link.partner_id => {
                return Ok(LinkOutcome::UnknownNonce);
            }
            Some((_, _, _, Some(_))) => return Ok(LinkOutcome::NonceUsed),
            Some((_, _, expires, None)) if expires > now => {}
            _ => return Ok(LinkOutcome::UnknownNonce),
        }
        self.conn.execute("DELETE FROM service_jtis WHERE expires_at < $1", params![now])?;
        let fresh = self.conn.execute(
            "INSERT INTO service_jtis (service_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            params![link.service_id, jti, jti_until],
        )? > 0;
        if !fresh {
            return Ok(LinkOutcome::JtiUsed);
        }
        self.conn.execute(
            "UPDATE service_link_requests SET used_at = $1 WHERE nonce_hash = $2",
            params![now, nonce_hash],
        )?;
        self.conn.execute(
            "INSERT INTO service_links (id, service_id, partner_id, account, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (service_id, partner_id) DO UPDATE SET account = excluded.account, created_at = excluded.created_at",
            params![link.id, link.service_id, link.partner_id, link.account, link.created_at],
        )?;
        let stored = self.link_of(&link.service_id, &link.partner_id)?;
        tx.commit()?;
        Ok(stored.map_or(LinkOutcome::UnknownNonce, LinkOutcome::Linked))
    }

    /// `partner_id`'s link at service `service_id`.
    pub fn link_of(&self, service_id: &str, partner_id: &str) -> Result<Option<ServiceLink>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, service_id, partner_id, account, created_at FROM service_links \
                 WHERE service_id = $1 AND partner_id = $2",
                params![service_id, partner_id],
                row_to_link,
            )
            .optional()?)
    }

    /// `partner_id`'s links, oldest first.
    pub fn links_of(&self, partner_id: &str) -> Result<Vec<ServiceLink>, PipelineError> {
        let rows = self.conn.query_map(
            "SELECT id, service_id, partner_id, account, created_at FROM service_links \
             WHERE partner_id = $1 ORDER BY created_at, id",
            params![partner_id],
            row_to_link,
        )?;
        Ok(rows)
    }

    /// Records provider job `j` and the queue job that sends its request,
    /// in one transaction.
    pub fn create_provider_job(&self, j: &ProviderJob, send: &NewJob) -> Result<(), PipelineError> {
        let tx = self.begin()?;
        self.conn.execute(
            &format!(
                "INSERT INTO provider_jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            params![
                j.id,
                j.service_id,
                j.partner_id,
                j.model_id,
                j.options,
                j.status.as_str(),
                j.problem,
                j.error,
                j.result_model,
                j.result_sha256,
                j.result_size,
                j.deadline_at,
                j.created_at,
                j.updated_at
            ],
        )?;
        self.enqueue_job(send, j.created_at)?;
        tx.commit()?;
        Ok(())
    }

    /// Provider job `id`.
    pub fn provider_job(&self, id: &str) -> Result<Option<ProviderJob>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM provider_jobs WHERE id = $1"),
                params![id],
                row_to_job,
            )
            .optional()?)
    }

    /// `partner_id`'s provider jobs, newest first (at most `limit`).
    pub fn provider_jobs_of(&self, partner_id: &str, limit: i64) -> Result<Vec<ProviderJob>, PipelineError> {
        let rows = self.conn.query_map(&format!(
            "SELECT {JOB_COLUMNS} FROM provider_jobs WHERE partner_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        ), params![partner_id, limit], row_to_job)?;
        Ok(rows)
    }

    /// Moves provider job `id` to `to` if it is in one of `from`, with
    /// `update`'s fields and announcement, in one transaction; whether it
    /// moved.
    pub fn move_provider_job(
        &self,
        id: &str,
        from: &[ProviderJobStatus],
        to: ProviderJobStatus,
        update: &ProviderJobUpdate<'_>,
        now: i64,
    ) -> Result<bool, PipelineError> {
        let tx = self.begin()?;
        let Some(job) = self.provider_job(id)? else { return Ok(false) };
        if !from.contains(&job.status) {
            return Ok(false);
        }
        self.conn.execute(
            "UPDATE provider_jobs SET status = $1, problem = COALESCE($2, problem), error = COALESCE($3, error), \
             result_model = COALESCE($4, result_model), updated_at = $5 WHERE id = $6",
            params![to.as_str(), update.problem, update.error, update.result_model, now, id],
        )?;
        if let Some(c) = update.callback {
            self.queue_callback(&job.model_id, c, now)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Records the result provider job `id` uploaded (its digest and
    /// size) and moves it to `running`; false when the job is no longer
    /// open.
    pub fn record_provider_result(
        &self,
        id: &str,
        sha256: &str,
        size: i64,
        now: i64,
    ) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE provider_jobs SET status = 'running', result_sha256 = $1, result_size = $2, updated_at = $3 \
             WHERE id = $4 AND status IN ('queued', 'sent', 'accepted', 'running')",
            params![sha256, size, now, id],
        )? > 0)
    }

    /// Records delivery `delivery_id` from service `service_id`; false
    /// when it was recorded before (a replay or a retry).
    pub fn record_provider_delivery(
        &self,
        service_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "INSERT INTO provider_deliveries (service_id, delivery_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            params![service_id, delivery_id, now],
        )? > 0)
    }

    /// Open provider jobs whose deadline has passed.
    pub fn overdue_provider_jobs(&self, now: i64) -> Result<Vec<ProviderJob>, PipelineError> {
        let rows = self.conn.query_map(&format!(
            "SELECT {JOB_COLUMNS} FROM provider_jobs WHERE status IN ('queued', 'sent', 'accepted', 'running') \
             AND deadline_at <= $1 ORDER BY deadline_at LIMIT 100"
        ), params![now], row_to_job)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{JobKind, ModelStatus, Partner, PartnerModel};

    fn service(db: &Db) -> Service {
        let s = Service {
            id: "svc".into(),
            owner_id: "p1".into(),
            name: "Fix".into(),
            description: "repairs".into(),
            kind: ServiceType::ModelHealing,
            service_url: "https://fix.example/repair".into(),
            service_method: "POST".into(),
            secret_generation: 1,
            previous_until: None,
            created_at: 1,
        };
        db.create_service(&s).expect("service");
        s
    }

    #[test]
    fn a_nonce_and_a_jti_count_once_and_only_for_their_user() {
        for db in crate::db::testing::backends() {
            let db = db;
            let s = service(&db);
            db.create_link_request("n1", &s.id, "p1", 1_000).expect("request");
            db.create_link_request("n2", &s.id, "p1", 1_000).expect("request");
            let link = |partner: &str| ServiceLink {
                id: format!("l-{partner}"),
                service_id: s.id.clone(),
                partner_id: partner.into(),
                account: "acct-7".into(),
                created_at: 10,
            };
            // Another user holding the nonce cannot use it.
            assert_eq!(
                db.link_account(&link("p2"), "n1", "j1", 2_000, 10).expect("link"),
                LinkOutcome::UnknownNonce
            );
            // Expired.
            assert_eq!(
                db.link_account(&link("p1"), "n1", "j1", 2_000, 1_000).expect("link"),
                LinkOutcome::UnknownNonce
            );
            let LinkOutcome::Linked(l) = db.link_account(&link("p1"), "n1", "j1", 2_000, 10).expect("link")
            else {
                panic!("not linked")
            };
            assert_eq!(l.account, "acct-7");
            assert_eq!(
                db.link_account(&link("p1"), "n1", "j2", 2_000, 11).expect("link"),
                LinkOutcome::NonceUsed
            );
            assert_eq!(
                db.link_account(&link("p1"), "n2", "j1", 2_000, 11).expect("link"),
                LinkOutcome::JtiUsed
            );
            // The refused jti did not use up n2.
            assert!(matches!(
                db.link_account(&link("p1"), "n2", "j3", 2_000, 12).expect("link"),
                LinkOutcome::Linked(_)
            ));
            assert_eq!(db.links_of("p1").expect("links").len(), 1, "one link per user and service");
            assert!(db.links_of("p2").expect("links").is_empty());
        }
    }

    #[test]
    fn jobs_move_only_from_open_states_and_rotation_is_compare_and_swap() {
        for db in crate::db::testing::backends() {
            let db = db;
            let s = service(&db);
            let p = Partner {
                id: "p1".into(),
                name: "Shop".into(),
                email: "a@b.c".into(),
                username: "shop".into(),
            };
            db.create_partner(&p, "hash", "key", "secret").expect("partner");
            let m = PartnerModel::new("m1".into(), "p1".into(), "part".into(), ModelStatus::Processed, 1);
            db.create_partner_model(&m).expect("model");
            let job = ProviderJob {
                id: "j1".into(),
                service_id: s.id.clone(),
                partner_id: "p1".into(),
                model_id: "m1".into(),
                options: "{}".into(),
                status: ProviderJobStatus::Queued,
                problem: None,
                error: None,
                result_model: None,
                result_sha256: None,
                result_size: None,
                deadline_at: 100,
                created_at: 1,
                updated_at: 1,
            };
            let send = NewJob {
                id: "q1".into(),
                kind: JobKind::ProviderRequest,
                subject: "j1".into(),
                partner_id: Some("p1".into()),
                payload: "{}".into(),
                max_attempts: 3,
            };
            db.create_provider_job(&job, &send).expect("job");
            assert!(db.job("q1").expect("queue").is_some(), "its request is queued with it");
            let none = ProviderJobUpdate::default();
            let open = [ProviderJobStatus::Queued, ProviderJobStatus::Sent];
            assert!(db.move_provider_job("j1", &open, ProviderJobStatus::Accepted, &none, 2).expect("move"));
            assert!(!db.move_provider_job("j1", &open, ProviderJobStatus::Refused, &none, 3).expect("move"));
            assert_eq!(db.overdue_provider_jobs(100).expect("overdue").len(), 1);
            assert!(db.record_provider_result("j1", "ab", 3, 4).expect("result"));
            let failed = ProviderJobUpdate { error: Some("broken"), ..ProviderJobUpdate::default() };
            assert!(
                db.move_provider_job(
                    "j1",
                    &[ProviderJobStatus::Running],
                    ProviderJobStatus::Failed,
                    &failed,
                    5
                )
                .expect("move")
            );
            assert!(
                !db.record_provider_result("j1", "cd", 3, 6).expect("result"),
                "a finished job takes no result"
            );
            let j = db.provider_job("j1").expect("job").expect("there");
            assert_eq!(
                (j.status, j.error.as_deref(), j.result_sha256.as_deref()),
                (ProviderJobStatus::Failed, Some("broken"), Some("ab"))
            );
            assert!(db.overdue_provider_jobs(100).expect("overdue").is_empty());
            assert!(db.record_provider_delivery("svc", "d1", 1).expect("delivery"));
            assert!(!db.record_provider_delivery("svc", "d1", 2).expect("delivery"), "a replay");
            assert!(db.rotate_service_secret("svc", 1, 50).expect("rotate"));
            assert!(
                !db.rotate_service_secret("svc", 1, 50).expect("rotate"),
                "generation 1 is no longer current"
            );
            assert_eq!(db.service("svc").expect("svc").expect("there").secret_generation, 2);
        }
    }
}
