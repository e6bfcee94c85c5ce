//! The repository's one connection type over two backends: SQLite
//! (rusqlite, embedded, the default) and PostgreSQL (tokio-postgres).
//!
//! Every query is written once, in the subset both run: TEXT, BIGINT and
//! DOUBLE PRECISION columns, booleans as 0/1 integers, unix-millisecond
//! timestamps, `$n` parameters numbered in the order they first appear
//! (SQLite numbers `$name` parameters by first appearance, so `$2` before
//! `$1` would bind the wrong values there), no backend-only functions.
//! Where the dialects really differ (claiming a queue row, reading the
//! schema catalogue) the caller asks [`Conn::backend`].
//!
//! Values cross the boundary as [`Value`]s: a parameter is bound as the
//! type the statement wants (PostgreSQL types every parameter when it
//! prepares, so an `i64` binds to a BIGINT, an INTEGER or a DOUBLE
//! PRECISION), and a column is read back into the Rust type asked for
//! whatever the backend stored (so `bool` reads a 0/1 BIGINT on both).
//!
//! Transactions ([`Conn::begin`]) have the same isolation on both: SQLite's
//! `BEGIN IMMEDIATE` takes the database's write lock at once; PostgreSQL's
//! take one transaction-scoped advisory lock, the same lock for every
//! writer, so a read-then-write transaction never interleaves with another
//! server's. Single-statement queue claims do not take it: they use
//! `FOR UPDATE SKIP LOCKED` and never wait for a transaction.
//!
//! The repository is synchronous (the pipeline's rayon workers and the
//! server's blocking threads call it), so PostgreSQL's client futures are
//! driven with a plain executor on the calling thread, while the
//! connections' socket tasks run on one small runtime of their own: this
//! works from any thread, inside a tokio runtime or not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Where the metadata lives (`--database`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DatabaseLocation {
    /// `DATA/meta.db` (the default).
    #[default]
    InDataDir,
    /// A SQLite file elsewhere (`sqlite://PATH`).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (`postgres://...` or `postgresql://...`).
    Postgres(String),
}

impl DatabaseLocation {
    /// Reads `--database`: `sqlite://PATH`, `postgres://...` or
    /// `postgresql://...` (a libpq connection URL).
    pub fn parse(s: &str) -> Result<DatabaseLocation, String> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("{s}: a sqlite:// URL needs a file path (sqlite:///var/strata/meta.db)"));
            }
            return Ok(DatabaseLocation::Sqlite(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| format!("{}: not a PostgreSQL URL: {e}", redact(s)))?;
            return Ok(DatabaseLocation::Postgres(s.to_string()));
        }
        Err(format!("{}: --database takes sqlite://PATH or postgres://USER@HOST:PORT/DB", redact(s)))
    }

    /// Whether several machines may share it (servers and workers
    /// elsewhere see the same rows).
    pub fn is_shared(&self) -> bool {
        matches!(self, DatabaseLocation::Postgres(_))
    }

    /// How it is shown in logs: a password in the URL is hidden.
    pub fn display(&self, data_dir: &std::path::Path) -> String {
        match self {
            DatabaseLocation::InDataDir => data_dir.join("meta.db").display().to_string(),
            DatabaseLocation::Sqlite(p) => p.display().to_string(),
            DatabaseLocation::Postgres(url) => redact(url),
        }
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(split) => split,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused or failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed (or its connection is gone).
    #[error("{}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The connection task could not run (the runtime is shutting down).
    #[error("postgresql: connecting: {0}")]
    Connect(String),
    /// A query that must return a row returned none.
    #[error("the query returned no row")]
    NoRows,
    /// A column held something the Rust type asked for cannot take.
    #[error("column {index}: {message}")]
    Column {
        /// The column's position.
        index: usize,
        /// What was found.
        message: String,
    },
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgresql: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("postgresql: {e}: {cause}"),
            None => format!("postgresql: {e}"),
        },
    }
}

impl DbError {
    /// Whether the database was busy (locked past the timeout): worth
    /// retrying, a 503 to a client.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            DbError::Postgres(e) => {
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
                            || *c == tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS
                    })
            }
            _ => false,
        }
    }

    /// Whether a UNIQUE or PRIMARY KEY constraint refused a write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            DbError::Postgres(e) => e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// `query_row`'s "no row" as `None`.
pub trait OptionalExt<T> {
    /// `Ok(None)` where the query returned no row.
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExt<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) | Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A value crossing to or from the database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// What can be bound to a `$n` parameter.
pub trait Param {
    /// The value bound.
    fn value(&self) -> Value<'_>;
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, Param::value)
    }
}

impl Param for i64 {
    fn value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}

impl Param for i32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Param for u32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Param for u16 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

/// The parameters of one statement: `params![a, b, c]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::db::sql::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::db::sql::Param),+] as &[&dyn $crate::db::sql::Param] };
}
pub(crate) use params;

/// What a column can be read into.
pub trait Column: Sized {
    /// The Rust value of `v`, or what was wrong with it.
    fn column(v: Value<'_>) -> Result<Self, String>;
}

impl<T: Column> Column for Option<T> {
    fn column(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::column(v).map(Some),
        }
    }
}

fn found(v: Value<'_>) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => format!("the integer {i}"),
        Value::Real(f) => format!("the float {f}"),
        Value::Text(t) => format!("the text {t:?}"),
        Value::Blob(b) => format!("{} bytes", b.len()),
    }
}

impl Column for i64 {
    fn column(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i),
            v => Err(format!("expected an integer, found {}", found(v))),
        }
    }
}

impl Column for u32 {
    fn column(v: Value<'_>) -> Result<Self, String> {
        let i = i64::column(v)?;
        u32::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
}

impl Column for u64 {
    fn column(v: Value<'_>) -> Result<Self, String> {
        let i = i64::column(v)?;
        u64::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
}

impl Column for u16 {
    fn column(v: Value<'_>) -> Result<Self, String> {
        let i = i64::column(v)?;
        u16::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
}

impl Column for bool {
    fn column(v: Value<'_>) -> Result<Self, String> {
        Ok(i64::column(v)? != 0)
    }
}

impl Column for f64 {
    fn column(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            v => Err(format!("expected a number, found {}", found(v))),
        }
    }
}

impl Column for String {
    fn column(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Text(t) => Ok(t.to_string()),
            v => Err(format!("expected text, found {}", found(v))),
        }
    }
}

impl Column for Vec<u8> {
    fn column(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            Value::Text(t) => Ok(t.as_bytes().to_vec()),
            v => Err(format!("expected bytes, found {}", found(v))),
        }
    }
}

/// One row of a result.
pub enum Row<'a> {
    /// From SQLite.
    Sqlite(&'a rusqlite::Row<'a>),
    /// From PostgreSQL.
    Postgres(&'a tokio_postgres::Row),
}

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Row::Sqlite(_) => "Row::Sqlite",
            Row::Postgres(_) => "Row::Postgres",
        })
    }
}

impl Row<'_> {
    /// Column `index` as a `T`.
    pub fn get<T: Column>(&self, index: usize) -> Result<T, DbError> {
        let column = |message: String| DbError::Column { index, message };
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef as V;
                let v = match r.get_ref(index)? {
                    V::Null => Value::Null,
                    V::Integer(i) => Value::Int(i),
                    V::Real(f) => Value::Real(f),
                    V::Text(t) => Value::Text(std::str::from_utf8(t).map_err(|e| column(e.to_string()))?),
                    V::Blob(b) => Value::Blob(b),
                };
                T::column(v).map_err(column)
            }
            Row::Postgres(r) => {
                let columns = r.columns();
                let Some(c) = columns.get(index) else {
                    return Err(column(format!("the row has {} columns", columns.len())));
                };
                let ty = c.type_();
                let v = if *ty == Type::INT8 {
                    r.try_get::<_, Option<i64>>(index)?.map_or(Value::Null, Value::Int)
                } else if *ty == Type::INT4 {
                    r.try_get::<_, Option<i32>>(index)?.map_or(Value::Null, |i| Value::Int(i.into()))
                } else if *ty == Type::INT2 {
                    r.try_get::<_, Option<i16>>(index)?.map_or(Value::Null, |i| Value::Int(i.into()))
                } else if *ty == Type::BOOL {
                    r.try_get::<_, Option<bool>>(index)?.map_or(Value::Null, |b| Value::Int(b.into()))
                } else if *ty == Type::FLOAT8 {
                    r.try_get::<_, Option<f64>>(index)?.map_or(Value::Null, Value::Real)
                } else if *ty == Type::FLOAT4 {
                    r.try_get::<_, Option<f32>>(index)?.map_or(Value::Null, |f| Value::Real(f.into()))
                } else if *ty == Type::BYTEA {
                    r.try_get::<_, Option<&[u8]>>(index)?.map_or(Value::Null, Value::Blob)
                } else if is_text(ty) {
                    r.try_get::<_, Option<&str>>(index)?.map_or(Value::Null, Value::Text)
                } else {
                    return Err(column(format!(
                        "PostgreSQL type {ty} has no portable reading (CAST it in the query)"
                    )));
                };
                T::column(v).map_err(column)
            }
        }
    }
}

/// The PostgreSQL types read and bound as text.
fn is_text(ty: &Type) -> bool {
    [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(ty)
}

/// A parameter as either backend binds it.
struct Bind<'a>(Value<'a>);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => V::Null,
            Value::Int(i) => V::Integer(i),
            Value::Real(f) => V::Real(f),
            Value::Text(t) => V::Text(t.as_bytes()),
            Value::Blob(b) => V::Blob(b),
        }))
    }
}

impl std::fmt::Debug for Bind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Bind<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        let mismatch = || -> BoxError { format!("{:?} cannot be bound to a {ty} parameter", self.0).into() };
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(i)?.to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    (i as f64).to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (i != 0).to_sql(ty, out)
                } else {
                    Err(mismatch())
                }
            }
            Value::Real(f) => {
                if *ty == Type::FLOAT8 {
                    f.to_sql(ty, out)
                } else if *ty == Type::FLOAT4 {
                    (f as f32).to_sql(ty, out)
                } else {
                    Err(mismatch())
                }
            }
            Value::Text(t) => {
                if is_text(ty) {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                } else {
                    Err(mismatch())
                }
            }
            Value::Blob(b) => {
                if *ty == Type::BYTEA {
                    b.to_sql(ty, out)
                } else {
                    Err(mismatch())
                }
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The runtime the PostgreSQL connections' socket tasks run on.
fn pg_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-postgres")
            .enable_all()
            .build()
            // Only fails when the OS refuses a thread: nothing works then.
            .expect("the PostgreSQL runtime starts")
    })
}

/// A PostgreSQL session: the client, its URL (to reconnect after the
/// server closed it) and its prepared statements.
pub struct PgConn {
    config: tokio_postgres::Config,
    client: RefCell<tokio_postgres::Client>,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    in_transaction: std::cell::Cell<bool>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").field("statements", &self.statements.borrow().len()).finish()
    }
}

/// The advisory lock every PostgreSQL write transaction takes ("STRATA").
const WRITE_LOCK: i64 = 0x5354_5241_5441;

fn pg_connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, DbError> {
    let config = config.clone();
    let task = pg_runtime().spawn(async move {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes; the
            // client's next call then fails and the session reconnects.
            let _ = connection.await;
        });
        Ok::<_, tokio_postgres::Error>(client)
    });
    match futures_executor::block_on(task) {
        Ok(client) => Ok(client?),
        Err(join) => Err(DbError::Connect(join.to_string())),
    }
}

impl PgConn {
    fn connect(config: tokio_postgres::Config) -> Result<PgConn, DbError> {
        let client = pg_connect(&config)?;
        Ok(PgConn {
            config,
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
            in_transaction: std::cell::Cell::new(false),
        })
    }

    /// The client, reconnected first if the server closed the last one
    /// (outside a transaction only: one cut in the middle fails).
    fn client(&self) -> Result<std::cell::Ref<'_, tokio_postgres::Client>, DbError> {
        if self.client.borrow().is_closed() && !self.in_transaction.get() {
            let fresh = pg_connect(&self.config)?;
            *self.client.borrow_mut() = fresh;
            self.statements.borrow_mut().clear();
        }
        Ok(self.client.borrow())
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let client = self.client()?;
        let statement = futures_executor::block_on(client.prepare(sql))?;
        drop(client);
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let statement = self.statement(sql)?;
        let binds: Vec<Bind<'_>> = params.iter().map(|p| Bind(p.value())).collect();
        let client = self.client()?;
        Ok(futures_executor::block_on(client.query(&statement, &pg_params(&binds)))?)
    }

    fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, DbError> {
        let statement = self.statement(sql)?;
        let binds: Vec<Bind<'_>> = params.iter().map(|p| Bind(p.value())).collect();
        let client = self.client()?;
        Ok(futures_executor::block_on(client.execute(&statement, &pg_params(&binds)))?)
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        let client = self.client()?;
        Ok(futures_executor::block_on(client.batch_execute(sql))?)
    }
}

/// The channel a queued job is announced on (PostgreSQL `NOTIFY`), so
/// idle workers on other machines wake at once instead of at their next
/// poll.
pub const JOBS_CHANNEL: &str = "strata_jobs";
/// The channel a queued callback delivery is announced on.
pub const CALLBACKS_CHANNEL: &str = "strata_callbacks";

/// Listens on PostgreSQL `channels` for the process's life, calling
/// `wake(channel)` for every notification; reconnects (after a second)
/// when the connection drops, and wakes every channel then, since
/// notifications sent meanwhile are lost. Returns once the first
/// connection listens, or its error.
pub fn listen(
    url: &str,
    channels: &[&'static str],
    wake: impl Fn(&str) + Send + Sync + 'static,
) -> Result<(), DbError> {
    let config: tokio_postgres::Config = url.parse()?;
    let channels: Vec<&'static str> = channels.to_vec();
    let wake = std::sync::Arc::new(wake);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), DbError>>(1);
    pg_runtime().spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match listen_once(&config, &channels, wake.as_ref(), &mut ready).await {
                Ok(()) => {}
                Err(e) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            for c in &channels {
                wake(c);
            }
        }
    });
    ready_rx.recv().unwrap_or(Ok(()))
}

async fn listen_once(
    config: &tokio_postgres::Config,
    channels: &[&'static str],
    wake: &(dyn Fn(&str) + Send + Sync),
    ready: &mut Option<std::sync::mpsc::SyncSender<Result<(), DbError>>>,
) -> Result<(), DbError> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.channel().to_string()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let listens: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
    client.batch_execute(&listens).await?;
    if let Some(tx) = ready.take() {
        let _ = tx.send(Ok(()));
    }
    while let Some(channel) = rx.recv().await {
        wake(&channel);
    }
    driver.abort();
    Ok(())
}

/// `binds` as tokio-postgres takes parameters.
fn pg_params<'a>(binds: &'a [Bind<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect()
}

/// One connection to either backend.
#[derive(Debug)]
pub enum Conn {
    /// SQLite.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL.
    Postgres(Box<PgConn>),
}

impl Conn {
    /// Connects to PostgreSQL at `url`.
    pub fn postgres(url: &str) -> Result<Conn, DbError> {
        let config: tokio_postgres::Config = url.parse()?;
        Conn::postgres_with(config)
    }

    /// Connects to PostgreSQL with `config`.
    pub fn postgres_with(mut config: tokio_postgres::Config) -> Result<Conn, DbError> {
        if config.get_application_name().is_none() {
            config.application_name("strata");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(Conn::Postgres(Box::new(PgConn::connect(config)?)))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one statement; the rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<usize, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(|p| Bind(p.value()))))?)
            }
            Conn::Postgres(c) => Ok(usize::try_from(c.execute(sql, params)?).unwrap_or(usize::MAX)),
        }
    }

    /// Runs several statements without parameters (migrations).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.batch(sql),
        }
    }

    /// The first row of a query, read by `f`; [`DbError::NoRows`] when
    /// there is none (see [`OptionalExt::optional`]).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(params.iter().map(|p| Bind(p.value()))))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(DbError::NoRows),
                }
            }
            Conn::Postgres(c) => match c.query(sql, params)?.first() {
                Some(r) => f(&Row::Postgres(r)),
                None => Err(DbError::NoRows),
            },
        }
    }

    /// Every row of a query, each read by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(params.iter().map(|p| Bind(p.value()))))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r))?);
                }
                Ok(out)
            }
            Conn::Postgres(c) => c.query(sql, params)?.iter().map(|r| f(&Row::Postgres(r))).collect(),
        }
    }

    /// Announces `channel` to PostgreSQL listeners (delivered when the
    /// surrounding transaction commits, so a woken worker sees the row);
    /// nothing on SQLite, whose one process wakes its own workers.
    pub fn notify(&self, channel: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(_) => self.execute("SELECT pg_notify($1, '')", &[&channel]).map(drop),
        }
    }

    /// Starts a write transaction holding the database's writer lock
    /// (see the module's documentation); rolled back when dropped
    /// uncommitted.
    pub fn begin(&self) -> Result<Tx<'_>, DbError> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            Conn::Postgres(c) => {
                c.batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
                c.in_transaction.set(true);
            }
        }
        Ok(Tx { conn: self, done: false })
    }

    fn end(&self, sql: &str) -> Result<(), DbError> {
        let result = self.execute_batch(sql);
        if let Conn::Postgres(c) = self {
            c.in_transaction.set(false);
        }
        result
    }
}

/// A transaction in progress: statements go through the connection it
/// derefs to.
#[derive(Debug)]
pub struct Tx<'a> {
    conn: &'a Conn,
    done: bool,
}

impl Tx<'_> {
    /// Commits.
    pub fn commit(mut self) -> Result<(), DbError> {
        self.done = true;
        self.conn.end("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.end("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_read_and_bad_ones_named() {
        assert_eq!(
            DatabaseLocation::parse("sqlite:///tmp/x.db"),
            Ok(DatabaseLocation::Sqlite("/tmp/x.db".into()))
        );
        let pg = DatabaseLocation::parse("postgres://strata:pw@127.0.0.1:5432/strata").expect("pg");
        assert!(pg.is_shared());
        assert_eq!(pg.display(std::path::Path::new("/d")), "postgres://strata:***@127.0.0.1:5432/strata");
        let e = DatabaseLocation::parse("mysql://x").expect_err("unknown scheme");
        assert!(e.contains("sqlite://PATH or postgres://"), "{e}");
        let e = DatabaseLocation::parse("sqlite://").expect_err("no path");
        assert!(e.contains("needs a file path"), "{e}");
        let e = DatabaseLocation::parse("postgres://u:secret@h:notaport/db").expect_err("bad port");
        assert!(e.contains("not a PostgreSQL URL") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn sqlite_values_cross_both_ways() {
        let conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().expect("db"));
        conn.execute_batch("CREATE TABLE t (i BIGINT, f DOUBLE PRECISION, s TEXT, b BIGINT)").expect("table");
        conn.execute("INSERT INTO t VALUES ($1, $2, $3, $4)", params![7_i64, 1.5_f64, "x", true])
            .expect("insert");
        conn.execute(
            "INSERT INTO t VALUES ($1, $2, $3, $4)",
            params![None::<i64>, None::<f64>, None::<&str>, false],
        )
        .expect("nulls");
        let rows = conn
            .query_map("SELECT i, f, s, b FROM t ORDER BY i", params![], |r| {
                Ok((
                    r.get::<Option<i64>>(0)?,
                    r.get::<Option<f64>>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<bool>(3)?,
                ))
            })
            .expect("rows");
        assert_eq!(rows, vec![(None, None, None, false), (Some(7), Some(1.5), Some("x".into()), true)]);
        let e =
            conn.query_row("SELECT s FROM t WHERE i = 7", params![], |r| r.get::<i64>(0)).expect_err("type");
        assert!(e.to_string().contains("expected an integer, found the text \"x\""), "{e}");
        let none = conn.query_row("SELECT i FROM t WHERE i = 8", params![], |r| r.get::<i64>(0)).optional();
        assert_eq!(none.expect("no error"), None);
        {
            let tx = conn.begin().expect("begin");
            tx.execute("DELETE FROM t", params![]).expect("delete");
        }
        let n = conn.query_row("SELECT COUNT(*) FROM t", params![], |r| r.get::<i64>(0)).expect("count");
        assert_eq!(n, 2, "an uncommitted transaction rolls back when dropped");
    }
}
