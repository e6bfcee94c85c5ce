//! The metadata repository: models, their status, validation reports and
//! artefact references, in SQLite (embedded, compiled in).
//!
//! The SQL is the portable subset that PostgreSQL runs unchanged (TEXT,
//! BIGINT, DOUBLE PRECISION, `$n` parameters, no SQLite-only functions);
//! timestamps are unix milliseconds and booleans 0/1 integers, so a
//! PostgreSQL backend needs only its own connection type. Migrations are
//! numbered and recorded in `schema_migrations`; a database newer than this
//! build is refused rather than misread.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::PipelineError;

mod callbacks;
mod counters;
mod embed;
mod jobs;
mod partners;
mod resources;
mod services;
pub mod sql;
mod tus;
mod vocab;

pub use callbacks::{Callback, CallbackAttempt, CallbackState, NewCallback};
pub use counters::WindowCount;
pub use embed::{EmbedSession, EmbedSettings, Ticket};
pub use jobs::{Job, JobEffect, JobKind, JobStatus, NewJob};
pub use partners::{
    ModelQuery, ModelSort, ModelStatus, Partner, PartnerModel, PrintToken, PrintUpdate, StatusChange,
};
pub use resources::{ApiToken, Lineage, Snapshot, SnapshotStatus};
pub use services::{
    LinkOutcome, ProviderJob, ProviderJobStatus, ProviderJobUpdate, Service, ServiceLink, ServiceType,
};
pub use sql::{Backend, DatabaseLocation, DbError};
pub use tus::TusUpload;

use sql::{Conn, params};

/// The migrations, in order; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE models (
    id              TEXT PRIMARY KEY,      -- SHA-256 of the original bytes
    file_name       TEXT NOT NULL,         -- the name it was first ingested under
    owner           TEXT,
    status          TEXT NOT NULL,         -- ok | repaired | failed
    error_code      TEXT,
    error           TEXT,
    format          TEXT,
    size_bytes      BIGINT NOT NULL,
    triangles       BIGINT,
    volume          DOUBLE PRECISION,
    layers          BIGINT,
    chunks          BIGINT,
    report          TEXT,                  -- JSON: validation and repair
    original_blob   TEXT,
    repaired_blob   TEXT,
    snapshot_blob   TEXT,
    manifest_blob   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX models_status ON models (status);
"#,
    partners::MIGRATION_2,
    callbacks::MIGRATION_3,
    resources::MIGRATION_4,
    jobs::MIGRATION_5,
    embed::MIGRATION_6,
    services::MIGRATION_7,
    embed::MIGRATION_8,
    tus::MIGRATION_9,
    counters::MIGRATION_10,
];

/// One model's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecord {
    /// SHA-256 of the original bytes.
    pub id: String,
    /// The file name it was first ingested under.
    pub file_name: String,
    /// Who owns it (a partner id), if known.
    pub owner: Option<String>,
    /// `ok`, `repaired` or `failed`.
    pub status: String,
    /// The error's stable code, when failed.
    pub error_code: Option<String>,
    /// The error, when failed.
    pub error: Option<String>,
    /// The format read.
    pub format: Option<String>,
    /// Size of the original.
    pub size_bytes: i64,
    /// Triangles in the original.
    pub triangles: Option<i64>,
    /// Volume of the printable mesh.
    pub volume: Option<f64>,
    /// Layers in the stream.
    pub layers: Option<i64>,
    /// Chunks in the stream.
    pub chunks: Option<i64>,
    /// Validation and repair report (JSON).
    pub report: Option<String>,
    /// Blob ids of the artefacts.
    pub original_blob: Option<String>,
    /// Repaired binary STL.
    pub repaired_blob: Option<String>,
    /// Snapshot PNG.
    pub snapshot_blob: Option<String>,
    /// Stream manifest JSON (its chunks are blobs named by their SHA-256).
    pub manifest_blob: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// The repository: one connection and the queries the pipeline and the
/// server share.
#[derive(Debug)]
pub struct Db {
    conn: Conn,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const COLUMNS: &str = "id, file_name, owner, status, error_code, error, format, size_bytes, triangles, volume, \
     layers, chunks, report, original_blob, repaired_blob, snapshot_blob, manifest_blob, created_at, updated_at";

/// Switches `conn` to WAL. SQLite answers `SQLITE_BUSY` at once, without
/// the busy handler, when another connection is switching the same new
/// file, so this waits and retries for as long as the busy timeout.
fn wal_mode(conn: &Connection) -> Result<(), PipelineError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// What opening a database does about migrations it lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migrations {
    /// Applies them (the embedded default: one process owns the store).
    #[default]
    Apply,
    /// Refuses to open a database that lacks any ([`PipelineError::Schema`]
    /// naming `strata migrate`): servers of a fleet leave schema changes to
    /// an operator's explicit `strata migrate`.
    Require,
}

/// Where a database's schema stands against this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The newest migration applied (0 for a new database).
    pub applied: i64,
    /// The newest migration this build knows.
    pub known: i64,
}

impl SchemaStatus {
    /// The migrations this build would apply, in order.
    pub fn pending(&self) -> std::ops::RangeInclusive<i64> {
        (self.applied + 1)..=self.known
    }

    /// Whether the database is newer than this build (it refuses to use it).
    pub fn is_newer(&self) -> bool {
        self.applied > self.known
    }
}

/// Refuses a schema this build would have to change (`what` names the
/// database).
fn require_current(status: SchemaStatus, what: &str) -> Result<(), PipelineError> {
    if status.is_newer() {
        return Err(newer_schema(status));
    }
    if status.applied < status.known {
        return Err(PipelineError::Schema(format!(
            "{what}: schema version {} is older than this build ({}); run `strata migrate` first",
            status.applied, status.known
        )));
    }
    Ok(())
}

fn newer_schema(status: SchemaStatus) -> PipelineError {
    PipelineError::Schema(format!(
        "schema version {} is newer than this build ({}); upgrade strata",
        status.applied, status.known
    ))
}

impl Db {
    /// Opens (creating and migrating) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Db, PipelineError> {
        Db::open_with(path, Migrations::Apply)
    }

    /// Opens the SQLite database at `path`, migrating it or requiring it
    /// migrated.
    pub fn open_with(path: &Path, migrations: Migrations) -> Result<Db, PipelineError> {
        if migrations == Migrations::Require {
            require_current(Db::schema_status(path)?, &path.display().to_string())?;
        }
        let conn = Connection::open(path)?;
        // WAL: readers (the server) never block the ingest writer; a crash
        // loses at most the transaction in flight.
        // The timeout first: switching to WAL takes a lock too, and another
        // process may be opening the same new store.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        wal_mode(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(64);
        let db = Db { conn: Conn::Sqlite(conn) };
        db.migrate()?;
        Ok(db)
    }

    /// Opens the database at `location` (`DATA/meta.db` for the default),
    /// migrating it or requiring it migrated.
    pub fn open_location(
        location: &DatabaseLocation,
        data_dir: &Path,
        migrations: Migrations,
    ) -> Result<Db, PipelineError> {
        match location {
            DatabaseLocation::InDataDir => Db::open_with(&data_dir.join("meta.db"), migrations),
            DatabaseLocation::Sqlite(path) => Db::open_with(path, migrations),
            DatabaseLocation::Postgres(url) => Db::open_postgres(Conn::postgres(url)?, migrations),
        }
    }

    /// A PostgreSQL session, migrated or required migrated.
    fn open_postgres(conn: Conn, migrations: Migrations) -> Result<Db, PipelineError> {
        let db = Db { conn };
        if migrations == Migrations::Require {
            require_current(db.applied_schema()?, "the PostgreSQL database")?;
        }
        db.migrate()?;
        Ok(db)
    }

    /// Which backend this repository is on.
    pub fn backend(&self) -> Backend {
        self.conn.backend()
    }

    /// Where the schema of the open database stands.
    fn applied_schema(&self) -> Result<SchemaStatus, PipelineError> {
        let known = MIGRATIONS.len() as i64;
        let exists = match self.conn.backend() {
            Backend::Sqlite => self.conn.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                params![],
                |r| r.get::<bool>(0),
            )?,
            Backend::Postgres => self.conn.query_row(
                "SELECT to_regclass('schema_migrations') IS NOT NULL",
                params![],
                |r| r.get::<bool>(0),
            )?,
        };
        let applied = if exists {
            self.conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                params![],
                |r| r.get(0),
            )?
        } else {
            0
        };
        Ok(SchemaStatus { applied, known })
    }

    /// Where the schema of the SQLite database at `path` stands, without
    /// changing anything (a missing file is a new database, at 0).
    pub fn schema_status(path: &Path) -> Result<SchemaStatus, PipelineError> {
        let known = MIGRATIONS.len() as i64;
        if !path.exists() {
            return Ok(SchemaStatus { applied: 0, known });
        }
        // Read-write but never created: a WAL database's readers need its
        // shared-memory file, which a read-only open may not make.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let table: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let applied = match table {
            Some(_) => {
                conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?
            }
            None => 0,
        };
        Ok(SchemaStatus { applied, known })
    }

    /// Where the schema at `location` stands, without changing anything.
    pub fn schema_status_at(
        location: &DatabaseLocation,
        data_dir: &Path,
    ) -> Result<SchemaStatus, PipelineError> {
        match location {
            DatabaseLocation::InDataDir => Db::schema_status(&data_dir.join("meta.db")),
            DatabaseLocation::Sqlite(path) => Db::schema_status(path),
            DatabaseLocation::Postgres(url) => Db { conn: Conn::postgres(url)? }.applied_schema(),
        }
    }

    /// Applies what the database at `location` lacks; where it stood
    /// before and after. A database newer than this build is refused.
    pub fn migrate_at(
        location: &DatabaseLocation,
        data_dir: &Path,
    ) -> Result<(SchemaStatus, SchemaStatus), PipelineError> {
        let before = Db::schema_status_at(location, data_dir)?;
        if before.is_newer() {
            return Err(newer_schema(before));
        }
        let db = Db::open_location(location, data_dir, Migrations::Apply)?;
        Ok((before, db.applied_schema()?))
    }

    /// Starts a write transaction holding the writer lock at once
    /// (`BEGIN IMMEDIATE` on SQLite: with several connections in WAL mode,
    /// a deferred transaction that reads and then writes fails at once
    /// with `SQLITE_BUSY` when another connection wrote in between, where
    /// an immediate one waits its turn under the busy timeout; the same
    /// lock on PostgreSQL, see [`sql`]).
    fn begin(&self) -> Result<sql::Tx<'_>, PipelineError> {
        Ok(self.conn.begin()?)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Db, PipelineError> {
        let db = Db { conn: Conn::Sqlite(Connection::open_in_memory()?) };
        db.migrate()?;
        Ok(db)
    }

    /// Applies the migrations this build knows and the database lacks.
    ///
    /// Each step reads the applied version inside its own write
    /// transaction, so two processes opening a new store at once (an
    /// ingest and a `models list` beside it, or two servers) never both
    /// apply one step: the second waits for the write lock, then sees the
    /// step done.
    fn migrate(&self) -> Result<(), PipelineError> {
        loop {
            let tx = self.begin()?;
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                params![],
            )?;
            let applied: i64 =
                tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", params![], |r| {
                    r.get(0)
                })?;
            if applied > MIGRATIONS.len() as i64 {
                return Err(newer_schema(SchemaStatus { applied, known: MIGRATIONS.len() as i64 }));
            }
            let Some(sql) = MIGRATIONS.get(applied as usize) else {
                return Ok(());
            };
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                params![applied + 1, now_ms()],
            )?;
            tx.commit()?;
        }
    }

    /// The ids of the models in the store (to skip what is done); with
    /// `except_failed`, those that failed are left out (to retry them).
    pub fn model_ids(&self, except_failed: bool) -> Result<std::collections::HashSet<String>, PipelineError> {
        let sql = if except_failed {
            "SELECT id FROM models WHERE status <> 'failed'"
        } else {
            "SELECT id FROM models"
        };
        Ok(self.conn.query_map(sql, params![], |r| r.get(0))?.into_iter().collect())
    }

    /// Inserts or replaces several rows in one transaction (one commit for
    /// a group of models, as the ingest writer does).
    pub fn put_models<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a ModelRecord>,
    ) -> Result<(), PipelineError> {
        let tx = self.begin()?;
        for m in rows {
            self.put_model(m)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Inserts or replaces a model's row in one statement.
    pub fn put_model(&self, m: &ModelRecord) -> Result<(), PipelineError> {
        self.conn.execute(
            &format!(
                "INSERT INTO models ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 $14, $15, $16, $17, $18, $19) ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 error_code = excluded.error_code, error = excluded.error, report = excluded.report, \
                 repaired_blob = excluded.repaired_blob, snapshot_blob = excluded.snapshot_blob, \
                 manifest_blob = excluded.manifest_blob, layers = excluded.layers, chunks = excluded.chunks, \
                 updated_at = excluded.updated_at"
            ),
            params![
                m.id,
                m.file_name,
                m.owner,
                m.status,
                m.error_code,
                m.error,
                m.format,
                m.size_bytes,
                m.triangles,
                m.volume,
                m.layers,
                m.chunks,
                m.report,
                m.original_blob,
                m.repaired_blob,
                m.snapshot_blob,
                m.manifest_blob,
                m.created_at,
                m.updated_at
            ],
        )?;
        Ok(())
    }

    /// One model by id, or by a unique id prefix of at least 8 digits.
    pub fn model(&self, id: &str) -> Result<Option<ModelRecord>, PipelineError> {
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let upper = format!("{}g", id.to_ascii_lowercase());
        let rows: Vec<ModelRecord> = self.conn.query_map(
            &format!("SELECT {COLUMNS} FROM models WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 2"),
            params![id.to_ascii_lowercase(), upper],
            row_to_model,
        )?;
        Ok(if rows.len() == 1 { rows.into_iter().next() } else { None })
    }

    /// The models with these exact ids (a page of a listing in one query).
    pub fn models_by_id(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, ModelRecord>, PipelineError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let binds: Vec<&dyn sql::Param> = ids.iter().map(|id| id as &dyn sql::Param).collect();
        let rows = self.conn.query_map(
            &format!("SELECT {COLUMNS} FROM models WHERE id IN ({})", marks.join(", ")),
            &binds,
            row_to_model,
        )?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            out.insert(row.id.clone(), row);
        }
        Ok(out)
    }

    /// All models, by file name.
    pub fn models(&self) -> Result<Vec<ModelRecord>, PipelineError> {
        Ok(self.conn.query_map(
            &format!("SELECT {COLUMNS} FROM models ORDER BY file_name, id"),
            params![],
            row_to_model,
        )?)
    }
}

fn row_to_model(r: &sql::Row<'_>) -> Result<ModelRecord, DbError> {
    Ok(ModelRecord {
        id: r.get(0)?,
        file_name: r.get(1)?,
        owner: r.get(2)?,
        status: r.get(3)?,
        error_code: r.get(4)?,
        error: r.get(5)?,
        format: r.get(6)?,
        size_bytes: r.get(7)?,
        triangles: r.get(8)?,
        volume: r.get(9)?,
        layers: r.get(10)?,
        chunks: r.get(11)?,
        report: r.get(12)?,
        original_blob: r.get(13)?,
        repaired_blob: r.get(14)?,
        snapshot_blob: r.get(15)?,
        manifest_blob: r.get(16)?,
        created_at: r.get(17)?,
        updated_at: r.get(18)?,
    })
}

/// Databases for tests on both backends.
///
/// PostgreSQL is used when `STRATA_TEST_POSTGRES` names a server
/// (`scripts/test-services.sh start` prints it); each call gets a schema of
/// its own there, so tests never see each other's rows. Without it the
/// PostgreSQL half is skipped with a message, unless
/// `STRATA_REQUIRE_POSTGRES=1` (`.ci/run`) makes that a failure.
#[doc(hidden)]
pub mod testing {
    use super::{DatabaseLocation, Db};

    /// The server's URL, if the tests have one.
    pub fn postgres_url() -> Option<String> {
        match std::env::var("STRATA_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(
                    std::env::var("STRATA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "STRATA_REQUIRE_POSTGRES=1 but STRATA_TEST_POSTGRES is not set (scripts/test-services.sh start)"
                );
                eprintln!(
                    "PostgreSQL half skipped: STRATA_TEST_POSTGRES is not set (scripts/test-services.sh start prints it)"
                );
                None
            }
        }
    }

    /// A fresh, empty schema on the test server, as a `--database` URL.
    pub fn fresh_postgres() -> Option<DatabaseLocation> {
        let url = postgres_url()?;
        let schema = format!("t_{}", crate::ids::random_hex(8));
        let conn = super::Conn::postgres(&url).unwrap_or_else(|e| panic!("STRATA_TEST_POSTGRES={url}: {e}"));
        conn.execute_batch(&format!("CREATE SCHEMA {schema}")).expect("create a test schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(DatabaseLocation::Postgres(format!("{url}{sep}options=-csearch_path%3D{schema}")))
    }

    /// An empty, migrated database on each backend: SQLite in memory, and
    /// PostgreSQL when the tests have one.
    pub fn backends() -> Vec<Db> {
        let mut out = vec![Db::open_in_memory().expect("SQLite in memory")];
        if let Some(location) = fresh_postgres() {
            let db = Db::open_location(&location, std::path::Path::new("."), super::Migrations::Apply)
                .expect("a PostgreSQL test schema");
            out.push(db);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the applied version was read outside the migration's
    /// transaction, so a `models list` beside a starting ingest could apply
    /// a step twice and make one of them fail ("table already exists").
    #[test]
    fn connections_opening_a_new_store_at_once_all_succeed() {
        for round in 0..10 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("meta.db");
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || Db::open(&path).map(|_| ()))
                })
                .collect();
            for t in opened {
                t.join().expect("no panic").unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
            let db = Db::open(&path).expect("open");
            let applied: i64 = db
                .conn
                .query_row("SELECT COUNT(*) FROM schema_migrations", params![], |r| r.get(0))
                .expect("count");
            assert_eq!(applied, MIGRATIONS.len() as i64);
        }
    }

    fn record(id: &str, name: &str) -> ModelRecord {
        ModelRecord {
            id: id.to_string(),
            file_name: name.to_string(),
            owner: None,
            status: "ok".into(),
            error_code: None,
            error: None,
            format: Some("binary".into()),
            size_bytes: 684,
            triangles: Some(12),
            volume: Some(8.0),
            layers: Some(10),
            chunks: Some(1),
            report: Some("{}".into()),
            original_blob: Some(id.to_string()),
            repaired_blob: None,
            snapshot_blob: None,
            manifest_blob: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn models_round_trip_and_ids_resolve_by_prefix() {
        for db in crate::db::testing::backends() {
            let db = db;
            let a = record(&"ab".repeat(32), "a.stl");
            let b = record(&format!("abcd{}", "0".repeat(60)), "b.stl");
            db.put_model(&a).expect("put");
            db.put_model(&b).expect("put");
            assert_eq!(db.model(&a.id).expect("query"), Some(a.clone()));
            assert_eq!(db.model("abababab").expect("query"), Some(a.clone()));
            assert_eq!(db.model("abab").expect("short prefix"), None);
            assert_eq!(db.model("'; DROP TABLE models; --").expect("not hex"), None);
            assert_eq!(db.models().expect("list").len(), 2);
            assert_eq!(db.model(&b.id).expect("query").map(|m| m.file_name), Some("b.stl".into()));
            let mut failed = a.clone();
            failed.status = "failed".into();
            db.put_model(&failed).expect("upsert");
            assert_eq!(db.model(&a.id).expect("query").map(|m| m.status), Some("failed".into()));
            assert_eq!(db.model_ids(false).expect("ids").len(), 2);
        }
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        Db::open(&path).expect("creates").put_model(&record(&"cd".repeat(32), "c.stl")).expect("put");
        let db = Db::open(&path).expect("reopens");
        assert_eq!(db.models().expect("list").len(), 1);
        db.conn.execute("INSERT INTO schema_migrations VALUES (99, 0)", params![]).expect("bump");
        drop(db);
        let e = Db::open(&path).expect_err("newer");
        assert!(e.to_string().contains("newer than this build"), "{e}");
    }

    /// The same database through several connections: a SQLite file, and
    /// PostgreSQL when the tests have one.
    fn shared_locations(dir: &Path) -> Vec<DatabaseLocation> {
        let mut out = vec![DatabaseLocation::Sqlite(dir.join("meta.db"))];
        out.extend(testing::fresh_postgres());
        out
    }

    /// Four workers claiming at once from their own connections never take
    /// one job twice, and take every job (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL, one writer at a time on SQLite).
    #[test]
    fn concurrent_claims_never_take_a_job_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        for location in shared_locations(dir.path()) {
            let open = || Db::open_location(&location, dir.path(), Migrations::Apply).expect("open");
            let db = open();
            let now = now_ms();
            for i in 0..200 {
                let job = NewJob {
                    id: format!("j{i:03}"),
                    kind: JobKind::ProcessUpload,
                    subject: format!("m{i}"),
                    partner_id: None,
                    payload: "{}".into(),
                    max_attempts: 3,
                };
                db.enqueue_job(&job, now).expect("enqueue");
            }
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let db = open();
                    std::thread::spawn(move || {
                        let mut mine = Vec::new();
                        while let Some(job) = db
                            .claim_job(&format!("w{w}"), &[JobKind::ProcessUpload], now, 60_000)
                            .expect("claim")
                        {
                            mine.push(job.id);
                        }
                        mine
                    })
                })
                .collect();
            let mut taken: Vec<String> =
                workers.into_iter().flat_map(|w| w.join().expect("no panic")).collect();
            let claimed = taken.len();
            taken.sort();
            taken.dedup();
            assert_eq!((claimed, taken.len()), (200, 200), "{location:?}: a job taken twice or not at all");
        }
    }

    /// Four senders claiming due callbacks at once (two servers and two
    /// workers) never take one delivery twice.
    #[test]
    fn concurrent_callback_claims_never_take_a_delivery_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        for location in shared_locations(dir.path()) {
            let open = || Db::open_location(&location, dir.path(), Migrations::Apply).expect("open");
            let db = open();
            let p =
                Partner { id: "p1".into(), name: "S".into(), email: "a@b.c".into(), username: "s".into() };
            db.create_partner(&p, "h", "k", "whsec_x").expect("partner");
            let m = PartnerModel::new("m1".into(), "p1".into(), "M".into(), ModelStatus::NotUploaded, 0);
            db.create_partner_model(&m).expect("model");
            let now = now_ms();
            for i in 0..120 {
                let c = NewCallback {
                    id: format!("c{i:03}"),
                    url: "http://example.com/hook".into(),
                    method: "POST".into(),
                    body: "{}".into(),
                    give_up_at: i64::MAX,
                };
                db.queue_callback("m1", &c, now).expect("queue");
            }
            let senders: Vec<_> = (0..4)
                .map(|_| {
                    let db = open();
                    std::thread::spawn(move || {
                        let mut mine = Vec::new();
                        loop {
                            let due = db.claim_due_callbacks(now, 60_000, 7).expect("claim");
                            if due.is_empty() {
                                break mine;
                            }
                            mine.extend(due.into_iter().map(|(c, _)| c.id));
                        }
                    })
                })
                .collect();
            let mut taken: Vec<String> =
                senders.into_iter().flat_map(|s| s.join().expect("no panic")).collect();
            let claimed = taken.len();
            taken.sort();
            taken.dedup();
            assert_eq!(
                (claimed, taken.len()),
                (120, 120),
                "{location:?}: a delivery taken twice or not at all"
            );
        }
    }

    /// A job or callback queued on one connection wakes a listener on
    /// another (PostgreSQL `LISTEN`/`NOTIFY`), once its transaction
    /// commits: how idle workers on other machines learn of work.
    #[test]
    fn queued_work_wakes_postgres_listeners_after_commit() {
        let Some(location) = testing::fresh_postgres() else { return };
        let DatabaseLocation::Postgres(url) = &location else { unreachable!("a PostgreSQL location") };
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tx = std::sync::Mutex::new(tx);
        sql::listen(url, &[sql::JOBS_CHANNEL, sql::CALLBACKS_CHANNEL], move |c| {
            let _ = tx.lock().expect("lock").send(c.to_string());
        })
        .expect("listens");
        let db = Db::open_location(&location, Path::new("."), Migrations::Apply).expect("open");
        let job = NewJob {
            id: "j1".into(),
            kind: JobKind::ProcessUpload,
            subject: "m1".into(),
            partner_id: None,
            payload: "{}".into(),
            max_attempts: 1,
        };
        {
            let tx = db.begin().expect("begin");
            db.enqueue_job(&job, now_ms()).expect("enqueue");
            assert!(
                rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
                "notified before the transaction committed"
            );
            tx.commit().expect("commit");
        }
        let woken = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("woken after the commit");
        assert_eq!(woken, sql::JOBS_CHANNEL);
    }

    /// PostgreSQL's schema follows the same rules as SQLite's: applied once
    /// by whoever opens first, refused when newer than this build, and
    /// required (not applied) under `--no-migrate`.
    #[test]
    fn postgres_migrations_run_once_and_a_newer_schema_is_refused() {
        let Some(location) = testing::fresh_postgres() else { return };
        let here = Path::new(".");
        let before = Db::schema_status_at(&location, here).expect("status");
        assert_eq!(before.applied, 0);
        let e = Db::open_location(&location, here, Migrations::Require).expect_err("required, not applied");
        assert!(e.to_string().contains("run `strata migrate` first"), "{e}");
        let (from, to) = Db::migrate_at(&location, here).expect("migrate");
        assert_eq!((from.applied, to.applied), (0, MIGRATIONS.len() as i64));
        let db = Db::open_location(&location, here, Migrations::Require).expect("current");
        assert_eq!(db.backend(), Backend::Postgres);
        db.conn.execute("INSERT INTO schema_migrations VALUES (99, 0)", params![]).expect("bump");
        let e = Db::open_location(&location, here, Migrations::Apply).expect_err("newer");
        assert!(e.to_string().contains("newer than this build"), "{e}");
    }
}
