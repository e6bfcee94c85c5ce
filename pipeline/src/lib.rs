//! # strata-pipeline
//!
//! Drives `strata-core` over whole catalogs and keeps the results in the
//! model store that the server reads.
//!
//! - [`process::process`]: one model's CPU work: parse, validate, repair
//!   when needed, render a snapshot, slice, pack the stream.
//! - [`ingest::ingest`]: a catalog through that work. A reader thread feeds
//!   a bounded channel; rayon workers process the models; one writer
//!   thread stores the results. Back-pressure bounds the models in flight,
//!   so memory does not grow with the catalog.
//! - [`blob`]: content-addressed blobs (originals, repaired meshes,
//!   snapshots, manifests, chunks) behind the [`blob::BlobStore`] trait.
//! - [`buffers`]: page-aligned, recycled buffers for the inputs' bytes, so
//!   the store writes originals straight from them.
//! - [`db`]: the metadata repository over SQLite, with portable SQL and
//!   numbered migrations, and the durable job queue.
//! - [`store`]: the data directory, opened by one process at a time
//!   ([`store::Store`]: lock, blobs, database connections, upload spool,
//!   recovery of a killed process's work).
//! - [`lifecycle`]: the partner model's lifecycle over the store: uploads
//!   accepted with their jobs, jobs run, status changes written with their
//!   model rows, callbacks and job completions in one transaction.
//! - [`embed`]: the rules for embedding models in web pages (origins,
//!   ticket expiry).
//! - [`ids`]: random ids and secrets.
//! - [`cache`]: a bounded, least-recently-used cache of derived files
//!   on disk (snapshots rendered on demand).
//! - [`prints`]: the print-status machine and what counts as a print.

pub mod blob;
pub mod buffers;
pub mod cache;
pub mod db;
pub mod embed;
pub mod ids;
pub mod ingest;
pub mod lifecycle;
pub mod objstore;
pub mod prints;
pub mod process;
pub mod providers;
pub mod store;
pub mod tus;

use std::path::PathBuf;

pub use strata_core as core;

/// Anything that goes wrong in the pipeline or the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The model is not one Strata can parse.
    #[error("{0}")]
    Parse(#[from] strata_core::ParseError),
    /// The model has no faces.
    #[error("the model has no triangles")]
    Empty,
    /// Every face was degenerate (collapsed, zero-area) or a copy, so
    /// repair removed them all: said apart from "not a volume", whose
    /// edge counts (all zero here) would only puzzle.
    #[error(
        "all {0} triangles are degenerate (a repeated vertex, zero area) or copies: nothing is left to print"
    )]
    AllDegenerate(usize),
    /// Still not a valid volume after repair (a soup, an open sheet).
    #[error("not a printable volume even after repair: {0}")]
    NotAVolume(String),
    /// Slicing refused the model (too tall for the layer height, ...).
    #[error("{0}")]
    Slice(#[from] strata_core::slice::SliceError),
    /// The stream could not be packed.
    #[error("{0}")]
    Stream(#[from] strata_core::stream::StreamError),
    /// Processing took longer than the job's time limit.
    #[error("processing passed the job's time limit of {0} s")]
    TimeLimit(u64),
    /// The model's derived artefacts would take more of the store than one
    /// model may.
    #[error(
        "the model's stream, snapshot and repair would store {bytes} bytes, over the {limit}-byte limit per model"
    )]
    StoredBytesLimit {
        /// Bytes the artefacts take.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The snapshot could not be rendered.
    #[error("{0}")]
    Render(#[from] strata_core::render::RenderError),
    /// Processing the model panicked: a bug, caught so the catalog goes on.
    #[error("internal error while processing (please report): {0}")]
    Panic(String),
    /// The metadata database failed.
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    /// The metadata database holds something this build cannot read.
    #[error("database: {0}")]
    Schema(String),
    /// Another process holds the data directory.
    #[error(
        "{} is in use by {holder} (a strata serve or ingest); stop it, or give this one another --data",
        dir.display()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Who holds it (`process PID`).
        holder: String,
    },
    /// The object store holding the blobs failed or refused a request.
    #[error("object store {what}: {source}{causes}")]
    ObjectStore {
        /// The store and what was asked of it.
        what: String,
        /// What the store (or the client) said.
        #[source]
        source: Box<object_store::Error>,
        /// The causes under `source` its message does not repeat, each
        /// after `": "` (empty when there are none).
        causes: String,
    },
    /// The blobs' location (`--blobs`) is not one Strata can use.
    #[error("blobs: {0}")]
    BlobLocation(String),
    /// A blob the store said it staged is not there to publish.
    #[error("blob {0} was staged but is missing; nothing was recorded")]
    MissingBlob(String),
}

impl PipelineError {
    /// Whether this says a file or object is not there (a blob that was
    /// never stored), as opposed to a store that failed.
    pub fn is_missing(&self) -> bool {
        match self {
            PipelineError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            PipelineError::ObjectStore { source, .. } => {
                matches!(**source, object_store::Error::NotFound { .. })
            }
            _ => false,
        }
    }

    /// A stable machine-readable code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Io { .. } => "io",
            PipelineError::Parse(e) => e.code(),
            PipelineError::Empty => "empty",
            PipelineError::AllDegenerate(_) => "all_degenerate",
            PipelineError::NotAVolume(_) => "not_a_volume",
            PipelineError::Slice(e) => e.code(),
            PipelineError::Stream(e) => e.code(),
            PipelineError::TimeLimit(_) => "time_limit",
            PipelineError::StoredBytesLimit { .. } => "stored_bytes_limit",
            PipelineError::Render(_) => "render",
            PipelineError::Panic(_) => "panic",
            PipelineError::Db(_) | PipelineError::Schema(_) => "database",
            PipelineError::Locked { .. } => "locked",
            PipelineError::MissingBlob(_) => "missing_blob",
            PipelineError::ObjectStore { .. } => "object_store",
            PipelineError::BlobLocation(_) => "blob_location",
        }
    }
}

impl From<rusqlite::Error> for PipelineError {
    fn from(e: rusqlite::Error) -> PipelineError {
        PipelineError::Db(e.into())
    }
}
