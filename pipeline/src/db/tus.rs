//! Migration 9: resumable uploads (tus 1.0). Each row is one upload in
//! progress onto a model that awaits its bytes: its declared length, the
//! offset acknowledged so far (the bytes up to it are synced in its file)
//! and when it expires.

use super::sql::{DbError, OptionalExt, Row, params};

use super::Db;
use crate::PipelineError;

/// Uploads in progress.
pub(super) const MIGRATION_9: &str = r#"
CREATE TABLE tus_uploads (
    id              TEXT PRIMARY KEY,      -- random, the capability in its URL
    model_id        TEXT NOT NULL REFERENCES partner_models (id),
    length          BIGINT NOT NULL,
    acked           BIGINT NOT NULL DEFAULT 0,  -- bytes synced and acknowledged
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX tus_uploads_by_expiry ON tus_uploads (expires_at);
"#;

/// One resumable upload as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusUpload {
    /// Its id (random; the capability in its URL).
    pub id: String,
    /// The model the bytes are for.
    pub model_id: String,
    /// The declared length (`Upload-Length`).
    pub length: u64,
    /// Bytes received, synced and acknowledged (`Upload-Offset`).
    pub offset: u64,
    /// When it expires, ms since the epoch.
    pub expires_at: i64,
}

fn from_row(r: &Row<'_>) -> Result<TusUpload, DbError> {
    Ok(TusUpload {
        id: r.get(0)?,
        model_id: r.get(1)?,
        length: r.get::<i64>(2)? as u64,
        offset: r.get::<i64>(3)? as u64,
        expires_at: r.get(4)?,
    })
}

impl Db {
    /// Records a new upload at offset 0.
    pub fn insert_tus_upload(&self, upload: &TusUpload, now: i64) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO tus_uploads (id, model_id, length, acked, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            params![upload.id, upload.model_id, upload.length as i64, upload.offset as i64, now, upload.expires_at],
        )?;
        Ok(())
    }

    /// The upload `id`, if it exists.
    pub fn tus_upload(&self, id: &str) -> Result<Option<TusUpload>, PipelineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, model_id, length, acked, expires_at FROM tus_uploads WHERE id = $1",
                params![id],
                from_row,
            )
            .optional()?)
    }

    /// Moves `id`'s offset from `from` to `to`; false when it was not at
    /// `from` (another request moved it) or is gone.
    pub fn advance_tus_upload(&self, id: &str, from: u64, to: u64) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE tus_uploads SET acked = $1 WHERE id = $2 AND acked = $3",
            params![to as i64, id, from as i64],
        )? > 0)
    }

    /// Forgets `id`; whether it existed.
    pub fn delete_tus_upload(&self, id: &str) -> Result<bool, PipelineError> {
        Ok(self.conn.execute("DELETE FROM tus_uploads WHERE id = $1", params![id])? > 0)
    }

    /// Every upload's id and expiry (ms since the epoch).
    pub fn tus_upload_expiries(&self) -> Result<std::collections::HashMap<String, i64>, PipelineError> {
        let rows = self
            .conn
            .query_map("SELECT id, expires_at FROM tus_uploads", params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.into_iter().collect())
    }

    /// Forgets the uploads expired before `now` (more than `grace` ms ago,
    /// so a client still gets 410 for a while); their ids.
    pub fn purge_expired_tus_uploads(&self, now: i64, grace: i64) -> Result<Vec<String>, PipelineError> {
        let ids = self.conn.query_map(
            "DELETE FROM tus_uploads WHERE expires_at < $1 RETURNING id",
            params![now.saturating_sub(grace)],
            |r| r.get(0),
        )?;
        Ok(ids)
    }
}
