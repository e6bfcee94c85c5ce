//! The 3DIAX resources beside models and tokens (migration 4): what a
//! model allows other services to do with it, lineage between models, API
//! tokens (HTTP Basic credentials for scripts and printers) and snapshot
//! resources.
//!
//! API token secrets are long random values, stored only as their SHA-256
//! (like API keys and session ids).

use super::sql::{OptionalExt, params};
use serde::Serialize;

use super::{Db, Partner, now_ms};
use crate::PipelineError;

/// Allowed transformations, lineage, API tokens and snapshots.
pub(super) const MIGRATION_4: &str = r#"
ALTER TABLE partner_models ADD COLUMN allowed_resize BIGINT NOT NULL DEFAULT 0;
ALTER TABLE partner_models ADD COLUMN allowed_rotation BIGINT NOT NULL DEFAULT 0;
CREATE TABLE model_lineage (
    parent_id       TEXT NOT NULL REFERENCES partner_models (id),
    child_id        TEXT NOT NULL REFERENCES partner_models (id),
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX model_lineage_by_child ON model_lineage (child_id);
CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,      -- the uuid a client sends as the Basic user name
    partner_id      TEXT NOT NULL REFERENCES partners (id),
    name            TEXT NOT NULL,
    secret_hash     TEXT NOT NULL,         -- SHA-256 hex of the secret
    revoked         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);
CREATE INDEX api_tokens_by_partner ON api_tokens (partner_id);
CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,
    model_id        TEXT NOT NULL REFERENCES partner_models (id),
    view            TEXT NOT NULL,         -- iso | front | top | side
    width           BIGINT NOT NULL,
    height          BIGINT NOT NULL,
    status          TEXT NOT NULL,         -- processing | processed | error
    blob            TEXT,                  -- the PNG's blob id once processed
    error           TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX snapshots_by_model ON snapshots (model_id);
"#;

/// An API token (without its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// The uuid (the Basic user name).
    pub id: String,
    /// Owner.
    pub partner_id: String,
    /// What the owner called it.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
}

super::vocab::text_enum! {
    /// The status of a snapshot resource.
    pub enum SnapshotStatus ("snapshot status") {
        /// Being rendered.
        Processing = "processing",
        /// Rendered; the PNG is stored.
        Processed = "processed",
        /// Rendering failed.
        Error = "error",
    }
}

/// A snapshot resource: one rendering of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Random id.
    pub id: String,
    /// The partner model rendered.
    pub model_id: String,
    /// `iso`, `front`, `top` or `side`.
    pub view: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Where rendering stands.
    pub status: SnapshotStatus,
    /// The PNG's blob id once processed.
    pub blob: Option<String>,
    /// Why rendering failed.
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A model's parents and children (ids).
pub type Lineage = (Vec<String>, Vec<String>);

const SNAPSHOT_COLUMNS: &str =
    "id, model_id, view, width, height, status, blob, error, created_at, updated_at";

impl Db {
    /// Records that `child` derives from each of `parents` (all the same
    /// partner's; the caller checks).
    pub fn add_lineage(&self, child: &str, parents: &[String]) -> Result<(), PipelineError> {
        let tx = self.begin()?;
        let now = now_ms();
        for parent in parents {
            self.conn.execute(
                "INSERT INTO model_lineage (parent_id, child_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (parent_id, child_id) DO NOTHING",
                params![parent, child, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The ids of the models `id` derives from and of those derived from
    /// it, each oldest link first.
    pub fn lineage(&self, id: &str) -> Result<(Vec<String>, Vec<String>), PipelineError> {
        let ids = |sql: &str| -> Result<Vec<String>, PipelineError> {
            let rows = self.conn.query_map(sql, params![id], |r| r.get(0))?;
            Ok(rows)
        };
        Ok((
            ids("SELECT parent_id FROM model_lineage WHERE child_id = $1 ORDER BY created_at, parent_id")?,
            ids("SELECT child_id FROM model_lineage WHERE parent_id = $1 ORDER BY created_at, child_id")?,
        ))
    }

    /// [`Db::lineage`] of several models at once (a page of a listing in
    /// two queries): each id's parents and children, oldest link first.
    pub fn lineages(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Lineage>, PipelineError> {
        let mut out: std::collections::HashMap<String, Lineage> =
            ids.iter().map(|id| ((*id).to_string(), Default::default())).collect();
        if ids.is_empty() {
            return Ok(out);
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let marks = marks.join(", ");
        let binds: Vec<&dyn super::sql::Param> = ids.iter().map(|id| id as &dyn super::sql::Param).collect();
        for row in
            self.conn.query_map(&format!(
            "SELECT child_id, parent_id FROM model_lineage WHERE child_id IN ({marks}) ORDER BY created_at, parent_id"
        ), &binds, |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)))?
        {
            let (child, parent) = row;
            out.entry(child).or_default().0.push(parent);
        }
        for row in self.conn.query_map(&format!(
            "SELECT parent_id, child_id FROM model_lineage WHERE parent_id IN ({marks}) ORDER BY created_at, child_id"
        ), &binds, |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)))?
        {
            let (parent, child) = row;
            out.entry(parent).or_default().1.push(child);
        }
        Ok(out)
    }

    /// Adds an API token.
    pub fn create_api_token(&self, t: &ApiToken, secret_hash: &str) -> Result<(), PipelineError> {
        self.conn.execute(
            "INSERT INTO api_tokens (id, partner_id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            params![t.id, t.partner_id, t.name, secret_hash, t.created_at],
        )?;
        Ok(())
    }

    /// The partner an API token `id` with a secret hashing to
    /// `secret_hash` belongs to, unless it was revoked.
    pub fn api_token_partner(&self, id: &str, secret_hash: &str) -> Result<Option<Partner>, PipelineError> {
        Ok(self
            .conn
            .query_row("SELECT p.id, p.name, p.email, p.username FROM api_tokens t JOIN partners p ON p.id = t.partner_id \
                 WHERE t.id = $1 AND t.secret_hash = $2 AND t.revoked = 0", params![id, secret_hash], |r| {
                Ok(Partner { id: r.get(0)?, name: r.get(1)?, email: r.get(2)?, username: r.get(3)? })
            })
            .optional()?)
    }

    /// A partner's live API tokens, oldest first.
    pub fn api_tokens(&self, partner_id: &str) -> Result<Vec<ApiToken>, PipelineError> {
        let rows = self.conn.query_map(
            "SELECT id, partner_id, name, created_at FROM api_tokens WHERE partner_id = $1 AND revoked = 0 \
             ORDER BY created_at, id",
            params![partner_id],
            |r| Ok(ApiToken { id: r.get(0)?, partner_id: r.get(1)?, name: r.get(2)?, created_at: r.get(3)? }),
        )?;
        Ok(rows)
    }

    /// Revokes `partner_id`'s API token `id`; whether it was theirs and live.
    pub fn revoke_api_token(&self, id: &str, partner_id: &str) -> Result<bool, PipelineError> {
        Ok(self.conn.execute(
            "UPDATE api_tokens SET revoked = 1 WHERE id = $1 AND partner_id = $2 AND revoked = 0",
            params![id, partner_id],
        )? > 0)
    }

    /// Adds a snapshot resource.
    pub fn create_snapshot(&self, s: &Snapshot) -> Result<(), PipelineError> {
        self.conn.execute(
            &format!(
                "INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            params![
                s.id,
                s.model_id,
                s.view,
                i64::from(s.width),
                i64::from(s.height),
                s.status.as_str(),
                s.blob,
                s.error,
                s.created_at,
                s.updated_at
            ],
        )?;
        Ok(())
    }

    /// Finishes a snapshot that is still processing: its PNG, or why not.
    pub fn finish_snapshot(&self, id: &str, result: Result<&str, &str>) -> Result<bool, PipelineError> {
        let (status, blob, error) = match result {
            Ok(blob) => (SnapshotStatus::Processed, Some(blob), None),
            Err(e) => (SnapshotStatus::Error, None, Some(e)),
        };
        Ok(self.conn.execute(
            "UPDATE snapshots SET status = $1, blob = $2, error = $3, updated_at = $4 WHERE id = $5 AND status = $6",
            params![status.as_str(), blob, error, now_ms(), id, SnapshotStatus::Processing.as_str()],
        )? > 0)
    }

    /// A snapshot resource by id, whoever owns its model (callers check).
    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, PipelineError> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1"), params![id], |r| {
                Ok(Snapshot {
                    id: r.get(0)?,
                    model_id: r.get(1)?,
                    view: r.get(2)?,
                    width: u32::try_from(r.get::<i64>(3)?).unwrap_or(0),
                    height: u32::try_from(r.get::<i64>(4)?).unwrap_or(0),
                    status: r.get(5)?,
                    blob: r.get(6)?,
                    error: r.get(7)?,
                    created_at: r.get(8)?,
                    updated_at: r.get(9)?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{ModelQuery, ModelSort, PartnerModel};

    fn setup(db: Db) -> Db {
        let p =
            Partner { id: "p1".into(), name: "Shop".into(), email: "a@b.co".into(), username: "shop".into() };
        db.create_partner(&p, "h", "k", "s").expect("partner");
        db
    }

    #[test]
    fn lineage_runs_both_ways() {
        for db in crate::db::testing::backends() {
            let db = setup(db);
            for id in ["a", "b", "c"] {
                db.create_partner_model(&PartnerModel::new(
                    id.into(),
                    "p1".into(),
                    id.into(),
                    crate::db::ModelStatus::Processed,
                    1,
                ))
                .expect("model");
            }
            db.add_lineage("c", &["a".into(), "b".into()]).expect("link");
            db.add_lineage("c", &["a".into()]).expect("twice is a no-op");
            assert_eq!(db.lineage("c").expect("q"), (vec!["a".to_string(), "b".to_string()], vec![]));
            assert_eq!(db.lineage("a").expect("q"), (vec![], vec!["c".to_string()]));
            let all = db.lineages(&["a", "c", "b"]).expect("batch");
            for id in ["a", "b", "c"] {
                assert_eq!(all[id], db.lineage(id).expect("q"), "{id}");
            }
        }
    }

    #[test]
    fn api_tokens_authenticate_until_revoked() {
        for db in crate::db::testing::backends() {
            let db = setup(db);
            let t =
                ApiToken { id: "u1".into(), partner_id: "p1".into(), name: "printer".into(), created_at: 1 };
            db.create_api_token(&t, "hash").expect("create");
            assert_eq!(db.api_token_partner("u1", "hash").expect("q").map(|p| p.id), Some("p1".into()));
            assert!(db.api_token_partner("u1", "other").expect("q").is_none(), "wrong secret");
            assert_eq!(db.api_tokens("p1").expect("list"), vec![t]);
            assert!(!db.revoke_api_token("u1", "p2").expect("revoke"), "not p2's");
            assert!(db.revoke_api_token("u1", "p1").expect("revoke"));
            assert!(db.api_token_partner("u1", "hash").expect("q").is_none(), "revoked");
        }
    }

    #[test]
    fn listing_filters_by_wildcards_literally_and_sorts_by_several_keys() {
        for db in crate::db::testing::backends() {
            let db = setup(db);
            let names = [
                ("m1", "Logo 50%", crate::db::ModelStatus::Processed),
                ("m2", "logo_a", crate::db::ModelStatus::Error),
                ("m3", "Box", crate::db::ModelStatus::Processed),
            ];
            for (i, (id, name, status)) in names.iter().enumerate() {
                db.create_partner_model(&PartnerModel::new(
                    (*id).into(),
                    "p1".into(),
                    (*name).into(),
                    *status,
                    i as i64,
                ))
                .expect("model");
            }
            let ids = |q: ModelQuery| -> Vec<String> {
                db.partner_models("p1", &ModelQuery { per_page: 10, ..q })
                    .expect("list")
                    .into_iter()
                    .map(|m| m.id)
                    .collect()
            };
            let named = |n: &str| ModelQuery { name: Some(n.into()), ..ModelQuery::default() };
            assert_eq!(ids(named("logo")), ["m2", "m1"], "a part, newest first");
            assert_eq!(ids(named("LOGO*")), ["m2", "m1"], "a prefix pattern");
            assert_eq!(ids(named("*x")), ["m3"], "a suffix pattern");
            assert_eq!(ids(named("logo")).len(), 2);
            assert_eq!(ids(named("50%")), ["m1"], "% matches itself");
            assert_eq!(ids(named("o_")), ["m2"], "_ matches itself");
            assert!(ids(named("%")).iter().all(|id| id == "m1"));
            let sorted = ModelQuery {
                sort: vec![(ModelSort::Status, false), (ModelSort::Name, true)],
                ..ModelQuery::default()
            };
            assert_eq!(ids(sorted.clone()), ["m3", "m1", "m2"]);
            assert_eq!(db.count_partner_models("p1", &named("logo")).expect("count"), 2);
            let second = ModelQuery { page: 1, per_page: 2, ..sorted };
            assert_eq!(db.partner_models("p1", &second).expect("page").len(), 1);
        }
    }
}
