//! The server's rows: partners and their sessions, the models partners
//! create (each pointing at a content-addressed `models` row once its bytes
//! are processed), and print tokens with their printers' status.
//!
//! Secrets are never stored: passwords as argon2id PHC strings, API keys
//! and session ids as their SHA-256 (they are long random values, so a
//! plain hash is enough and lets them be looked up).

use super::sql::{DbError, OptionalExt, Row, params};
use serde::Serialize;

use super::{Db, now_ms};
use crate::PipelineError;

/// Partners, sessions, partner models and print tokens.
pub(super) const MIGRATION_2: &str = r#"
CREATE TABLE partners (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,
    username        TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,         -- argon2id PHC string
    api_key_hash    TEXT NOT NULL UNIQUE,  -- SHA-256 hex of the API key
    created_at      BIGINT NOT NULL
);
CREATE TABLE sessions (
    id_hash         TEXT PRIMARY KEY,      -- SHA-256 hex of the cookie value
    partner_id      TEXT NOT NULL REFERENCES partners (id),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE TABLE partner_models (
    id              TEXT PRIMARY KEY,
    partner_id      TEXT NOT NULL REFERENCES partners (id),
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,         -- not-uploaded | processing | processed | error
    content_id      TEXT,                  -- models.id (SHA-256 of the upload)
    error_code      TEXT,
    error           TEXT,
    callback_url    TEXT,
    callback_method TEXT,
    tokens_created  BIGINT NOT NULL DEFAULT 0,
    streams_pulled  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX partner_models_by_partner ON partner_models (partner_id, created_at);
CREATE TABLE print_tokens (
    token                TEXT PRIMARY KEY,
    partner_id           TEXT NOT NULL REFERENCES partners (id),
    model_id             TEXT,             -- partner_models.id; empty until a legacy upload
    receiver_email       TEXT,
    print_value          TEXT,             -- the decimal as sent, never a float
    print_value_currency TEXT NOT NULL,
    partner_job_id       TEXT,
    print_limit          BIGINT,
    prints_started       BIGINT NOT NULL DEFAULT 0,
    expires_at           BIGINT,
    revoked              BIGINT NOT NULL DEFAULT 0,
    printing_job_status  TEXT,
    printing_percentage  DOUBLE PRECISION,
    minutes_left         DOUBLE PRECISION,
    message              TEXT,
    total_time           DOUBLE PRECISION,
    printer_model        TEXT,
    version              BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX print_tokens_by_model ON print_tokens (model_id);
"#;

/// A partner account (without its secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partner {
    /// Random id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Contact e-mail.
    pub email: String,
    /// Login name.
    pub username: String,
}

super::vocab::text_enum! {
    /// Where a partner's model stands (seed 000's names).
    pub enum ModelStatus ("model status") {
        /// Created; its bytes have not been uploaded.
        NotUploaded = "not-uploaded",
        /// Uploaded and acknowledged; being processed.
        Processing = "processing",
        /// Printable: its stream, snapshot and content are stored.
        Processed = "processed",
        /// Processing failed; the error says why.
        Error = "error",
    }
}

/// One move of a partner model's status and what goes with it, written
/// in one transaction by [`Db::set_partner_model_status`]: all of it, or
/// nothing when the model is no longer in `from` (a lost race).
#[derive(Debug, Clone, Copy)]
pub struct StatusChange<'a> {
    /// The status the model must be in (compare and swap).
    pub from: ModelStatus,
    /// The status it moves to.
    pub to: ModelStatus,
    /// The stored model it now names (kept when `None`).
    pub content_id: Option<&'a str>,
    /// The error code and message (cleared when `None`).
    pub error: Option<(&'a str, &'a str)>,
    /// The processed model's row, written with the move.
    pub record: Option<&'a super::ModelRecord>,
    /// The announcement to queue.
    pub callback: Option<&'a super::NewCallback>,
    /// The job it starts or ends.
    pub job: super::JobEffect<'a>,
}

impl StatusChange<'_> {
    /// A bare move from `from` to `to`.
    pub fn new(from: ModelStatus, to: ModelStatus) -> StatusChange<'static> {
        StatusChange {
            from,
            to,
            content_id: None,
            error: None,
            record: None,
            callback: None,
            job: super::JobEffect::None,
        }
    }
}

/// A model a partner created (`POST /models`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartnerModel {
    /// Random id (the URI's last segment).
    pub id: String,
    /// Owner.
    pub partner_id: String,
    /// Name given at creation.
    pub name: String,
    /// Where it stands.
    pub status: ModelStatus,
    /// The content's id in `models` once uploaded.
    pub content_id: Option<String>,
    /// Why processing failed.
    pub error_code: Option<String>,
    /// Why processing failed, for people.
    pub error: Option<String>,
    /// Where status changes are posted.
    pub callback_url: Option<String>,
    /// The callback's HTTP method.
    pub callback_method: Option<String>,
    /// Print tokens created for it.
    pub tokens_created: i64,
    /// Stream manifests pulled by printers.
    pub streams_pulled: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Whether other services may resize it (3DIAX `allowed_transformations`).
    pub allowed_resize: bool,
    /// Whether other services may rotate it.
    pub allowed_rotation: bool,
}

impl PartnerModel {
    /// A new model of `partner_id`'s in `status`, with no content yet.
    pub fn new(id: String, partner_id: String, name: String, status: ModelStatus, now: i64) -> PartnerModel {
        PartnerModel {
            id,
            partner_id,
            name,
            status,
            content_id: None,
            error_code: None,
            error: None,
            callback_url: None,
            callback_method: None,
            tokens_created: 0,
            streams_pulled: 0,
            created_at: now,
            updated_at: now,
            allowed_resize: false,
            allowed_rotation: false,
        }
    }
}

/// A print token and its print's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrintToken {
    /// The token (32 hex digits).
    pub token: String,
    /// Owner.
    pub partner_id: String,
    /// The partner model printed (absent for a legacy token before upload).
    pub model_id: Option<String>,
    /// The customer.
    pub receiver_email: Option<String>,
    /// The decimal as sent.
    pub print_value: Option<String>,
    /// ISO 4217 code.
    pub print_value_currency: String,
    /// The partner's reference.
    pub partner_job_id: Option<String>,
    /// Most prints allowed, if limited.
    pub print_limit: Option<i64>,
    /// Prints started so far.
    pub prints_started: i64,
    /// Unix ms after which the token is refused, if any.
    pub expires_at: Option<i64>,
    /// Revoked by the partner.
    pub revoked: bool,
    /// The printer's status, once a print started.
    pub printing_job_status: Option<String>,
    /// Percent done.
    pub printing_percentage: Option<f64>,
    /// Estimated minutes left.
    pub minutes_left: Option<f64>,
    /// Printer owner's message.
    pub message: Option<String>,
    /// Seconds printed so far.
    pub total_time: Option<f64>,
    /// Printer model.
    pub printer_model: Option<String>,
    /// The printer of the current print (its `X-Printer-Id`), if it said.
    pub printer_id: Option<String>,
    /// Bumped on every status change (the ETag).
    pub version: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl PrintToken {
    /// A new token of `partner_id`'s for `model_id`, in USD, with no order
    /// details, limits or print yet.
    pub fn new(token: String, partner_id: String, model_id: Option<String>, now: i64) -> PrintToken {
        PrintToken {
            token,
            partner_id,
            model_id,
            receiver_email: None,
            print_value: None,
            print_value_currency: "USD".into(),
            partner_job_id: None,
            print_limit: None,
            prints_started: 0,
            expires_at: None,
            revoked: false,
            printing_job_status: None,
            printing_percentage: None,
            minutes_left: None,
            message: None,
            total_time: None,
            printer_model: None,
            printer_id: None,
            version: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A printer's status report.
#[derive(Debug, Clone, PartialEq)]
pub struct PrintUpdate {
    /// The new status.
    pub status: String,
    /// Percent done.
    pub percentage: Option<f64>,
    /// Estimated minutes left.
    pub minutes_left: Option<f64>,
    /// Message.
    pub message: Option<String>,
    /// Seconds printed.
    pub total_time: Option<f64>,
    /// Printer model.
    pub printer_model: Option<String>,
    /// Whether this report starts a new print (counted against the
    /// token's limit), by the printer `printer_id`.
    pub new_print: bool,
    /// The reporting printer's id, recorded when a new print starts.
    pub printer_id: Option<String>,
}

/// A partner's model listing filter.
#[derive(Debug, Clone, Default)]
pub struct ModelQuery {
    /// The name, case-insensitive: with `*` wildcards a pattern the whole
    /// name must match, without them a part the name contains (3DIAX).
    pub name: Option<String>,
    /// Exact status.
    pub status: Option<ModelStatus>,
    /// The uploaded bytes' SHA-256 (hex), exactly.
    pub sha256: Option<String>,
    /// Sort keys in order, each ascending or not; newest first when empty.
    pub sort: Vec<(ModelSort, bool)>,
    /// Zero-based page.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// What a model listing can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSort {
    /// The name (case-insensitive).
    Name,
    /// The status.
    Status,
    /// Creation time.
    Created,
    /// Last change.
    Updated,
}

impl ModelSort {
    /// The key of a 3DIAX `sort` item (`name`, `status`, `created`, `updated`).
    pub fn parse(key: &str) -> Option<ModelSort> {
        match key {
            "name" => Some(ModelSort::Name),
            "status" => Some(ModelSort::Status),
            "created" => Some(ModelSort::Created),
            "updated" => Some(ModelSort::Updated),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            ModelSort::Name => "LOWER(name)",
            ModelSort::Status => "status",
            ModelSort::Created => "created_at",
            ModelSort::Updated => "updated_at",
        }
    }
}

impl ModelQuery {
    /// The WHERE clause after `partner_id = $1` and its parameters, built
    /// from only the filters given (an untyped `$n IS NULL OR ...` cannot
    /// be prepared on PostgreSQL), with `%`, `_` and `\` in the name
    /// escaped so they match themselves.
    fn filter(&self) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut args = Vec::new();
        if let Some(name) = &self.name {
            let escaped: String = name
                .to_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    '*' => vec!['%'],
                    c => vec![c],
                })
                .collect();
            let pattern = if name.contains('*') { escaped } else { format!("%{escaped}%") };
            args.push(pattern);
            sql.push_str(&format!(" AND LOWER(name) LIKE ${} ESCAPE '\\'", args.len() + 1));
        }
        if let Some(status) = &self.status {
            args.push(status.as_str().to_string());
            sql.push_str(&format!(" AND status = ${}", args.len() + 1));
        }
        if let Some(sha) = &self.sha256 {
            args.push(sha.to_ascii_lowercase());
            sql.push_str(&format!(" AND content_id = ${}", args.len() + 1));
        }
        (sql, args)
    }

    fn order(&self) -> String {
        if self.sort.is_empty() {
            return "created_at DESC, id".into();
        }
        let mut keys: Vec<String> = self
            .sort
            .iter()
            .map(|(k, asc)| format!("{} {}", k.column(), if *asc { "ASC" } else { "DESC" }))
            .collect();
        keys.push("id".into());
        keys.join(", ")
    }
}

const MODEL_COLUMNS: &str = "id, partner_id, name, status, content_id, error_code, error, callback_url, \
     callback_method, tokens_created, streams_pulled, created_at, updated_at, allowed_resize, allowed_rotation";

const TOKEN_COLUMNS: &str = "token, partner_id, model_id, receiver_email, print_value, print_value_currency, \
     partner_job_id, print_limit, prints_started, expires_at, revoked, printing_job_status, printing_percentage, \
     minutes_left, message, total_time, printer_model, version, created_at, updated_at, printer_id";

impl Db {
    /// Adds a partner; `Ok(false)` when the username is taken. The
    /// callback secret signs the partner's callbacks, so unlike the other
    /// secrets it is kept as it is.
    pub fn create_partner(
        &self,
        partner: &Partner,
        password_hash: &str,
        api_key_hash: &str,
        callback_secret: &str,
    ) -> Result<bool, PipelineError> {
        let result = self.conn.execute(
            "INSERT INTO partners (id, name, email, username, password_hash, api_key_hash, callback_secret, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            params![
                partner.id,
                partner.name,
                partner.email,
                partner.username,
                password_hash,
                api_key_hash,
                callback_secret,
                now_ms()
            ],
        );
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A partner and its password hash, by username.
    pub fn partner_login(&self, username: &str) -> Result<Option<(Partner, String)>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, email, username, password_hash FROM partners WHERE username = $1",
                params![username],
                |r| Ok((row_to_partner(r)?, r.get(4)?)),
            )
            .optional()?)
    }

    /// The partner holding an API key (by the key's hash).
    pub fn partner_by_api_key(&self, api_key_hash: &str) -> Result<Option<Partner>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, email, username FROM partners WHERE api_key_hash = $1",
                params![api_key_hash],
                row_to_partner,
            )
            .optional()?)
    }

    /// Starts a session.
    pub fn create_session(
        &self,
        id_hash: &str,
        partner_id: &str,
        expires_at: i64,
    ) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO sessions (id_hash, partner_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            params![id_hash, partner_id, now_ms(), expires_at],
        )?;
        Ok(())
    }

    /// The partner of a live session (expired ones are deleted on sight).
    pub fn session_partner(&self, id_hash: &str, now: i64) -> Result<Option<Partner>, PipelineError> {
        // A read only: expired sessions are removed by `delete_expired_sessions`,
        // not by a write on every authenticated request.
        Ok(self
            .conn
            .query_row("SELECT p.id, p.name, p.email, p.username FROM sessions s JOIN partners p ON p.id = s.partner_id \
                 WHERE s.id_hash = $1 AND s.expires_at > $2", params![id_hash, now], row_to_partner)
            .optional()?)
    }

    /// Removes the sessions that have expired; how many.
    pub fn delete_expired_sessions(&self, now: i64) -> Result<usize, PipelineError> {
        Ok(self.conn.execute("DELETE FROM sessions WHERE expires_at <= $1", params![now])?)
    }

    /// Ends a session; whether it existed.
    pub fn delete_session(&self, id_hash: &str) -> Result<bool, PipelineError> {
        Ok(self.conn.execute("DELETE FROM sessions WHERE id_hash = $1", params![id_hash])? > 0)
    }

    /// Adds a partner model.
    pub fn create_partner_model(&self, m: &PartnerModel) -> Result<(), PipelineError> {
        self.conn.execute(
            &format!(
                "INSERT INTO partner_models ({MODEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15)"
            ),
            params![
                m.id,
                m.partner_id,
                m.name,
                m.status,
                m.content_id,
                m.error_code,
                m.error,
                m.callback_url,
                m.callback_method,
                m.tokens_created,
                m.streams_pulled,
                m.created_at,
                m.updated_at,
                i64::from(m.allowed_resize),
                i64::from(m.allowed_rotation)
            ],
        )?;
        Ok(())
    }

    /// A partner model by id, whoever owns it (callers check the owner).
    pub fn partner_model(&self, id: &str) -> Result<Option<PartnerModel>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {MODEL_COLUMNS} FROM partner_models WHERE id = $1"),
                params![id],
                row_to_partner_model,
            )
            .optional()?)
    }

    /// What a printer needs to reach a partner model's stream, in one
    /// query (the chunk path runs it on every request): the model's status
    /// and its stream manifest's blob id, once processed.
    pub fn model_stream(&self, id: &str) -> Result<Option<(ModelStatus, Option<String>)>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT m.status, c.manifest_blob FROM partner_models m \
                 LEFT JOIN models c ON c.id = m.content_id WHERE m.id = $1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// A partner's models, filtered, sorted (newest first by default) and
    /// paged.
    pub fn partner_models(
        &self,
        partner_id: &str,
        q: &ModelQuery,
    ) -> Result<Vec<PartnerModel>, PipelineError> {
        let (filter, args) = q.filter();
        let n = args.len();
        let per_page = i64::from(q.per_page.max(1));
        let offset = i64::from(q.page) * per_page;
        let mut values: Vec<&dyn super::sql::Param> = vec![&partner_id];
        values.extend(args.iter().map(|a| a as &dyn super::sql::Param));
        values.push(&per_page);
        values.push(&offset);
        let rows = self.conn.query_map(
            &format!(
                "SELECT {MODEL_COLUMNS} FROM partner_models WHERE partner_id = $1{filter} ORDER BY {} \
             LIMIT ${} OFFSET ${}",
                q.order(),
                n + 2,
                n + 3
            ),
            &values,
            row_to_partner_model,
        )?;
        Ok(rows)
    }

    /// How many of a partner's models pass `q`'s filters (paging aside).
    pub fn count_partner_models(&self, partner_id: &str, q: &ModelQuery) -> Result<u64, PipelineError> {
        let (filter, args) = q.filter();
        let mut values: Vec<&dyn super::sql::Param> = vec![&partner_id];
        values.extend(args.iter().map(|a| a as &dyn super::sql::Param));
        let n: i64 = self.conn.query_row(
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM partner_models WHERE partner_id = $1{filter}"),
            &values,
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Moves a partner model to `status`, only from `from` (a compare and
    /// swap, so two uploads cannot both start processing); whether it moved.
    /// The callback announcing the change is queued, and `job` queued or
    /// completed, in the same transaction, and only when the model did
    /// move: an acknowledged upload is never without its job, and a job's
    /// result is never recorded twice.
    #[allow(clippy::too_many_arguments)]
    pub fn set_partner_model_status(
        &self,
        id: &str,
        change: &StatusChange<'_>,
    ) -> Result<bool, PipelineError> {
        let tx = self.begin()?;
        let now = now_ms();
        let error = change.error;
        let moved = self.conn.execute(
            "UPDATE partner_models SET status = $1, content_id = COALESCE($2, content_id), error_code = $3, \
             error = $4, updated_at = $5 WHERE id = $6 AND status = $7",
            params![
                change.to,
                change.content_id,
                error.map(|e| e.0),
                error.map(|e| e.1),
                now,
                id,
                change.from
            ],
        )? > 0;
        if moved {
            if let Some(row) = change.record {
                self.put_model(row)?;
            }
            if let Some(c) = change.callback {
                self.queue_callback(id, c, now)?;
            }
            match change.job {
                super::JobEffect::None => {}
                super::JobEffect::Enqueue(j) => self.enqueue_job(j, now)?,
                super::JobEffect::Complete(job_id, worker) => {
                    self.complete_job(job_id, worker, now)?;
                }
            }
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Counts a pulled stream for a model's popularity.
    pub fn count_stream_pull(&self, model_id: &str) -> Result<(), PipelineError> {
        self.conn.execute(
            "UPDATE partner_models SET streams_pulled = streams_pulled + 1 WHERE id = $1",
            params![model_id],
        )?;
        Ok(())
    }

    /// Adds a print token (and counts it on its model).
    pub fn create_token(&self, t: &PrintToken) -> Result<(), PipelineError> {
        let tx = self.begin()?;
        self.conn.execute(
            &format!(
                "INSERT INTO print_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
            ),
            params![
                t.token,
                t.partner_id,
                t.model_id,
                t.receiver_email,
                t.print_value,
                t.print_value_currency,
                t.partner_job_id,
                t.print_limit,
                t.prints_started,
                t.expires_at,
                i64::from(t.revoked),
                t.printing_job_status,
                t.printing_percentage,
                t.minutes_left,
                t.message,
                t.total_time,
                t.printer_model,
                t.version,
                t.created_at,
                t.updated_at,
                t.printer_id
            ],
        )?;
        if let Some(model) = &t.model_id {
            self.conn.execute(
                "UPDATE partner_models SET tokens_created = tokens_created + 1 WHERE id = $1",
                params![model],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Revokes `partner_id`'s token (printers get 404 from then on);
    /// whether it was theirs and live.
    pub fn revoke_token(&self, token: &str, partner_id: &str) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE print_tokens SET revoked = 1, version = version + 1, updated_at = $1 \
             WHERE token = $2 AND partner_id = $3 AND revoked = 0",
            params![now_ms(), token, partner_id],
        )? > 0)
    }

    /// A token by its value.
    pub fn token(&self, token: &str) -> Result<Option<PrintToken>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM print_tokens WHERE token = $1"),
                params![token],
                row_to_token,
            )
            .optional()?)
    }

    /// Fills in a legacy token's upload: its model and order details, only
    /// while it has none (so two racing uploads cannot both attach);
    /// whether it was attached.
    pub fn attach_token(&self, t: &PrintToken) -> Result<bool, PipelineError> {
        let tx = self.begin()?;
        let attached = self.attach_token_unwrapped(t)?;
        tx.commit()?;
        Ok(attached)
    }

    /// [`Db::attach_token`] inside the caller's transaction.
    fn attach_token_unwrapped(&self, t: &PrintToken) -> Result<bool, PipelineError> {
        let attached = self.conn.execute(
            "UPDATE print_tokens SET model_id = $1, receiver_email = $2, print_value = $3, \
             print_value_currency = $4, partner_job_id = $5, version = version + 1, updated_at = $6 \
             WHERE token = $7 AND model_id IS NULL AND revoked = 0",
            params![
                t.model_id,
                t.receiver_email,
                t.print_value,
                t.print_value_currency,
                t.partner_job_id,
                now_ms(),
                t.token
            ],
        )? > 0;
        if attached && let Some(model) = &t.model_id {
            self.conn.execute(
                "UPDATE partner_models SET tokens_created = tokens_created + 1 WHERE id = $1",
                params![model],
            )?;
        }
        Ok(attached)
    }

    /// A legacy upload, all or nothing: the token's new model (already
    /// `processing`), the token's order details (only while it has no
    /// model, so two racing uploads cannot both attach), and the job that
    /// processes it. Whether it was recorded (false: the token had its
    /// file already).
    pub fn record_legacy_upload(
        &self,
        model: &PartnerModel,
        token: &PrintToken,
        job: &super::NewJob,
    ) -> Result<bool, PipelineError> {
        let tx = self.begin()?;
        self.create_partner_model(model)?;
        if !self.attach_token_unwrapped(token)? {
            // Dropping the transaction rolls the model back.
            return Ok(false);
        }
        self.enqueue_job(job, now_ms())?;
        tx.commit()?;
        Ok(true)
    }

    /// Records a printer's report if the token is still at `expected_version`
    /// (so two racing reports cannot both pass the state check); whether
    /// it was recorded. A report that starts a new print counts it and
    /// records its printer. (SQLite numbers `$n` parameters in the order
    /// they first appear, not by their digits, so every statement here
    /// names them in that order.)
    pub fn update_print(
        &self,
        token: &str,
        expected_version: i64,
        u: &PrintUpdate,
    ) -> Result<bool, PipelineError> {
        let started = i64::from(u.new_print);
        Ok(self.conn.execute(
            "UPDATE print_tokens SET printing_job_status = $1, printing_percentage = $2, minutes_left = $3, \
             message = COALESCE($4, message), total_time = COALESCE($5, total_time), \
             printer_model = COALESCE($6, printer_model), prints_started = prints_started + $7, \
             printer_id = CASE WHEN $7 = 1 THEN $8 ELSE printer_id END, \
             version = version + 1, updated_at = $9 WHERE token = $10 AND version = $11",
            params![
                u.status,
                u.percentage,
                u.minutes_left,
                u.message,
                u.total_time,
                u.printer_model,
                started,
                u.printer_id,
                now_ms(),
                token,
                expected_version
            ],
        )? > 0)
    }
}

fn row_to_partner(r: &Row<'_>) -> Result<Partner, DbError> {
    Ok(Partner { id: r.get(0)?, name: r.get(1)?, email: r.get(2)?, username: r.get(3)? })
}

fn row_to_partner_model(r: &Row<'_>) -> Result<PartnerModel, DbError> {
    Ok(PartnerModel {
        id: r.get(0)?,
        partner_id: r.get(1)?,
        name: r.get(2)?,
        status: r.get(3)?,
        content_id: r.get(4)?,
        error_code: r.get(5)?,
        error: r.get(6)?,
        callback_url: r.get(7)?,
        callback_method: r.get(8)?,
        tokens_created: r.get(9)?,
        streams_pulled: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        allowed_resize: r.get::<i64>(13)? != 0,
        allowed_rotation: r.get::<i64>(14)? != 0,
    })
}

fn row_to_token(r: &Row<'_>) -> Result<PrintToken, DbError> {
    Ok(PrintToken {
        token: r.get(0)?,
        partner_id: r.get(1)?,
        model_id: r.get(2)?,
        receiver_email: r.get(3)?,
        print_value: r.get(4)?,
        print_value_currency: r.get(5)?,
        partner_job_id: r.get(6)?,
        print_limit: r.get(7)?,
        prints_started: r.get(8)?,
        expires_at: r.get(9)?,
        revoked: r.get::<i64>(10)? != 0,
        printing_job_status: r.get(11)?,
        printing_percentage: r.get(12)?,
        minutes_left: r.get(13)?,
        message: r.get(14)?,
        total_time: r.get(15)?,
        printer_model: r.get(16)?,
        version: r.get(17)?,
        created_at: r.get(18)?,
        updated_at: r.get(19)?,
        printer_id: r.get(20)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(id: &str, username: &str) -> Partner {
        Partner { id: id.into(), name: "Shop".into(), email: "a@b.co".into(), username: username.into() }
    }

    #[test]
    fn partners_sessions_and_expiry() {
        for db in crate::db::testing::backends() {
            let db = db;
            assert!(db.create_partner(&partner("p1", "shop"), "hash", "key1", "s1").expect("create"));
            assert!(
                !db.create_partner(&partner("p2", "shop"), "hash", "key2", "s2").expect("dup"),
                "username taken"
            );
            assert_eq!(db.partner_by_api_key("key1").expect("q").map(|p| p.id), Some("p1".into()));
            assert!(db.partner_by_api_key("nope").expect("q").is_none());
            db.create_session("s1", "p1", 1_000).expect("session");
            assert!(db.session_partner("s1", 999).expect("q").is_some());
            assert!(db.session_partner("s1", 1_000).expect("q").is_none(), "expired");
            assert_eq!(db.delete_expired_sessions(1_000).expect("clean"), 1);
            db.create_session("s2", "p1", i64::MAX).expect("session");
            assert!(db.delete_session("s2").expect("delete"));
            assert!(db.session_partner("s2", 0).expect("q").is_none());
        }
    }

    #[test]
    fn status_moves_only_from_the_expected_state_and_tokens_count() {
        for db in crate::db::testing::backends() {
            let db = db;
            db.create_partner(&partner("p1", "shop"), "h", "k", "s").expect("create");
            let m = PartnerModel::new(
                "m1".into(),
                "p1".into(),
                "Logo".into(),
                crate::db::ModelStatus::NotUploaded,
                1,
            );
            db.create_partner_model(&m).expect("model");
            assert!(
                db.set_partner_model_status(
                    "m1",
                    &crate::db::StatusChange {
                        content_id: Some("abc"),
                        ..crate::db::StatusChange::new(
                            crate::db::ModelStatus::NotUploaded,
                            crate::db::ModelStatus::Processing
                        )
                    }
                )
                .expect("cas")
            );
            assert!(
                !db.set_partner_model_status(
                    "m1",
                    &crate::db::StatusChange::new(
                        crate::db::ModelStatus::NotUploaded,
                        crate::db::ModelStatus::Processing
                    )
                )
                .expect("cas")
            );
            let q = ModelQuery { name: Some("LOG".into()), per_page: 10, ..ModelQuery::default() };
            assert_eq!(db.partner_models("p1", &q).expect("list").len(), 1);
            assert_eq!(db.partner_models("p2", &q).expect("list").len(), 0);
            let t = PrintToken {
                print_value: Some("10.56".into()),
                ..PrintToken::new("t1".into(), "p1".into(), Some("m1".into()), 1)
            };
            db.create_token(&t).expect("token");
            assert_eq!(db.partner_model("m1").expect("q").map(|m| m.tokens_created), Some(1));
            let u = PrintUpdate {
                status: "WARMING_UP".into(),
                percentage: Some(0.0),
                minutes_left: None,
                message: None,
                total_time: None,
                printer_model: Some("MK4".into()),
                new_print: true,
                printer_id: Some("printer-a".into()),
            };
            assert!(db.update_print("t1", 0, &u).expect("update"));
            assert!(!db.update_print("t1", 0, &u).expect("stale"), "a stale version is refused");
            let now = db.token("t1").expect("q").expect("token");
            assert_eq!((now.version, now.prints_started, now.print_value.as_deref()), (1, 1, Some("10.56")));
            assert_eq!(now.printer_id.as_deref(), Some("printer-a"));
            // A report within the same print counts nothing and keeps the printer.
            let more = PrintUpdate { status: "PRINTING".into(), new_print: false, printer_id: None, ..u };
            assert!(db.update_print("t1", 1, &more).expect("update"));
            let now = db.token("t1").expect("q").expect("token");
            assert_eq!((now.prints_started, now.printer_id.as_deref()), (1, Some("printer-a")));
        }
    }
}
