//! Migration 6: embedding (seed 003): per-model tickets (stored as their
//! SHA-256; the ticket itself is shown once), browser sessions opened
//! with them, and each model's embedding settings.

use super::sql::{DbError, OptionalExt, Row, params};
use serde::Serialize;

use super::Db;
use crate::PipelineError;

/// Sessions by model, for the model's session statistics.
pub(super) const MIGRATION_8: &str = r#"
CREATE INDEX embed_sessions_by_model ON embed_sessions (model_id, created_at);
"#;

/// Tickets, sessions and embedding settings.
pub(super) const MIGRATION_6: &str = r#"
CREATE TABLE tickets (
    id              TEXT PRIMARY KEY,      -- public id (listing, revocation)
    secret_hash     TEXT NOT NULL UNIQUE,  -- SHA-256 of the ticket string
    model_id        TEXT NOT NULL REFERENCES partner_models (id),
    partner_id      TEXT NOT NULL,
    backend         BIGINT NOT NULL,       -- type backend (1) or embed (0)
    pub             BIGINT NOT NULL,       -- skips the origin check
    author          BIGINT NOT NULL,
    accessdomains   TEXT NOT NULL,         -- JSON array of origins
    until_ms        BIGINT NOT NULL,
    revoked         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);
CREATE INDEX tickets_by_model ON tickets (model_id);
CREATE TABLE embed_sessions (
    id              TEXT PRIMARY KEY,
    model_id        TEXT NOT NULL REFERENCES partner_models (id),
    ticket_id       TEXT NOT NULL REFERENCES tickets (id),
    origin          TEXT,                  -- the browser origin it was opened from
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    closed_at       BIGINT
);
CREATE TABLE model_embed (
    model_id        TEXT PRIMARY KEY REFERENCES partner_models (id),
    accessdomains   TEXT NOT NULL DEFAULT '[]',
    backendaccess   BIGINT NOT NULL DEFAULT 1,
    require_token   BIGINT NOT NULL DEFAULT 0
);
ALTER TABLE partners ADD COLUMN force_require_token BIGINT NOT NULL DEFAULT 0;
"#;

/// A ticket as stored (without its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ticket {
    /// Public id.
    pub id: String,
    /// The model it opens.
    pub model_id: String,
    /// Its owner.
    pub partner_id: String,
    /// A backend ticket (for servers) rather than an embed ticket.
    pub backend: bool,
    /// Admits any origin.
    #[serde(rename = "pub")]
    pub public: bool,
    /// Grants authoring.
    pub author: bool,
    /// Origins it admits (empty: the model's).
    pub accessdomains: Vec<String>,
    /// Unix ms it is valid until.
    pub until_ms: i64,
    /// Revoked by its owner.
    pub revoked: bool,
    /// Unix ms.
    pub created_at: i64,
}

/// A model's embedding settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbedSettings {
    /// Origins admitted by tickets without their own list.
    pub accessdomains: Vec<String>,
    /// Backend tickets work without an `Origin`.
    pub backendaccess: bool,
    /// Sessions need a JWT besides the ticket.
    pub require_token: bool,
}

impl Default for EmbedSettings {
    fn default() -> EmbedSettings {
        EmbedSettings { accessdomains: Vec::new(), backendaccess: true, require_token: false }
    }
}

/// A browser session opened with a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbedSession {
    /// Random id.
    pub id: String,
    /// The model.
    pub model_id: String,
    /// The ticket it was opened with.
    pub ticket_id: String,
    /// The browser origin it was opened from.
    pub origin: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// Unix ms, once closed.
    pub closed_at: Option<i64>,
}

fn domains(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

const TICKET_COLUMNS: &str =
    "id, model_id, partner_id, backend, pub, author, accessdomains, until_ms, revoked, created_at";

fn row_to_ticket(r: &Row<'_>) -> Result<Ticket, DbError> {
    Ok(Ticket {
        id: r.get(0)?,
        model_id: r.get(1)?,
        partner_id: r.get(2)?,
        backend: r.get::<i64>(3)? != 0,
        public: r.get::<i64>(4)? != 0,
        author: r.get::<i64>(5)? != 0,
        accessdomains: domains(&r.get::<String>(6)?),
        until_ms: r.get(7)?,
        revoked: r.get::<i64>(8)? != 0,
        created_at: r.get(9)?,
    })
}

impl Db {
    /// Stores a ticket under the SHA-256 of its secret.
    pub fn create_ticket(&self, t: &Ticket, secret_hash: &str) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO tickets (id, secret_hash, model_id, partner_id, backend, pub, author, accessdomains, \
             until_ms, revoked, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            params![
                t.id,
                secret_hash,
                t.model_id,
                t.partner_id,
                i64::from(t.backend),
                i64::from(t.public),
                i64::from(t.author),
                serde_json::to_string(&t.accessdomains).unwrap_or_else(|_| "[]".into()),
                t.until_ms,
                i64::from(t.revoked),
                t.created_at
            ],
        )?;
        Ok(())
    }

    /// The ticket whose secret hashes to `secret_hash`.
    pub fn ticket_by_secret(&self, secret_hash: &str) -> Result<Option<Ticket>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE secret_hash = $1"),
                params![secret_hash],
                row_to_ticket,
            )
            .optional()?)
    }

    /// A model's tickets, newest first.
    pub fn tickets_of(&self, model_id: &str) -> Result<Vec<Ticket>, PipelineError> {
        Ok(self.conn.query_map(
            &format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE model_id = $1 ORDER BY created_at DESC, id"),
            params![model_id],
            row_to_ticket,
        )?)
    }

    /// Revokes ticket `id` of `model_id` (and the sessions it opened);
    /// whether it existed.
    pub fn revoke_ticket(&self, model_id: &str, id: &str, now: i64) -> Result<bool, PipelineError> {
        let tx = self.begin()?;
        let found = self.conn.execute(
            "UPDATE tickets SET revoked = 1 WHERE id = $1 AND model_id = $2",
            params![id, model_id],
        )? > 0;
        self.conn.execute(
            "UPDATE embed_sessions SET closed_at = $1 WHERE ticket_id = $2 AND closed_at IS NULL",
            params![now, id],
        )?;
        tx.commit()?;
        Ok(found)
    }

    /// A model's embedding settings (the defaults when never set).
    pub fn embed_settings(&self, model_id: &str) -> Result<EmbedSettings, PipelineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT accessdomains, backendaccess, require_token FROM model_embed WHERE model_id = $1",
                params![model_id],
                |r| {
                    Ok(EmbedSettings {
                        accessdomains: domains(&r.get::<String>(0)?),
                        backendaccess: r.get::<i64>(1)? != 0,
                        require_token: r.get::<i64>(2)? != 0,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Sets a model's embedding settings.
    pub fn set_embed_settings(&self, model_id: &str, s: &EmbedSettings) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO model_embed (model_id, accessdomains, backendaccess, require_token) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model_id) DO UPDATE SET accessdomains = excluded.accessdomains, \
             backendaccess = excluded.backendaccess, require_token = excluded.require_token",
            params![
                model_id,
                serde_json::to_string(&s.accessdomains).unwrap_or_else(|_| "[]".into()),
                i64::from(s.backendaccess),
                i64::from(s.require_token)
            ],
        )?;
        Ok(())
    }

    /// Whether partner `id` requires a JWT for every session.
    pub fn force_require_token(&self, partner_id: &str) -> Result<bool, PipelineError> {
        Ok(self
            .conn
            .query_row("SELECT force_require_token FROM partners WHERE id = $1", params![partner_id], |r| {
                r.get::<i64>(0)
            })
            .optional()?
            .is_some_and(|v| v != 0))
    }

    /// Sets whether partner `id` requires a JWT for every session.
    pub fn set_force_require_token(&self, partner_id: &str, on: bool) -> Result<(), PipelineError> {
        self.conn.execute(
            "UPDATE partners SET force_require_token = $1 WHERE id = $2",
            params![i64::from(on), partner_id],
        )?;
        Ok(())
    }

    /// Records an opened session.
    pub fn create_embed_session(&self, s: &EmbedSession) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO embed_sessions (id, model_id, ticket_id, origin, created_at, expires_at, closed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![s.id, s.model_id, s.ticket_id, s.origin, s.created_at, s.expires_at, s.closed_at],
        )?;
        Ok(())
    }

    /// A session by id.
    pub fn embed_session(&self, id: &str) -> Result<Option<EmbedSession>, PipelineError> {
        Ok(self
            .conn
            .query_row("SELECT id, model_id, ticket_id, origin, created_at, expires_at, closed_at FROM embed_sessions \
                 WHERE id = $1", params![id], |r| {
                Ok(EmbedSession {
                    id: r.get(0)?,
                    model_id: r.get(1)?,
                    ticket_id: r.get(2)?,
                    origin: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                    closed_at: r.get(6)?,
                })
            })
            .optional()?)
    }

    /// Closes session `id`; whether it was open.
    pub fn close_embed_session(&self, id: &str, now: i64) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE embed_sessions SET closed_at = $1 WHERE id = $2 AND closed_at IS NULL",
            params![now, id],
        )? > 0)
    }

    /// How many sessions were opened on `model_id`, and when the last one
    /// was (unix ms): the API's `statistic.numsessions` and `lastsession`.
    pub fn session_statistic(&self, model_id: &str) -> Result<(u64, Option<i64>), PipelineError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*), MAX(created_at) FROM embed_sessions WHERE model_id = $1",
            params![model_id],
            |r| Ok((r.get::<i64>(0)? as u64, r.get(1)?)),
        )?)
    }
}
