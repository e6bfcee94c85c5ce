//! Blobs in S3-compatible object storage (`--blobs s3://bucket/prefix`),
//! through `object_store`'s S3 client.
//!
//! Keys are `PREFIX/blobs/ab/abcdef...`, the same layout as the data
//! directory's, so a store can be copied between the two with ordinary
//! tools. Blobs are content-addressed, so a key always holds the same
//! bytes: a write is a conditional create (`If-None-Match: *`), and a
//! create that finds the key taken has nothing left to do. Blobs of
//! [`MULTIPART_MIN`] or more go up as multipart uploads, a part at a time,
//! so a 500 MB model never needs one 500 MB request to succeed whole.
//! An object store's write is durable when it returns, so staging is
//! storing and publishing has nothing left to do.
//!
//! The pipeline is synchronous (rayon workers) and the server is async,
//! so the store owns a small tokio runtime of its own: every request runs
//! there, awaited by async callers ([`ObjectBlobStore::read`]) or waited
//! for by synchronous ones (the [`BlobStore`] methods). Waiting on a
//! channel, never `block_on`, is what lets a synchronous call come from any
//! thread, a runtime's own included, without a panic.
//!
//! Credentials and the endpoint come from the usual AWS variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP` for a loopback endpoint).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::PipelineError;
use crate::blob::{BlobId, BlobStore};

/// HTTP methods, as [`ObjectBlobStore::presign`] takes them.
pub use object_store::signer::Method;

/// Blobs this large or larger are uploaded in parts.
pub const MULTIPART_MIN: usize = 16 << 20;

/// The size of each part of a multipart upload (S3's least is 5 MiB).
const PART: usize = 8 << 20;

/// How often a single-request create is tried when it fails in transit.
const CREATE_ATTEMPTS: u64 = 3;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Where blobs are kept, as the `--blobs` setting names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BlobLocation {
    /// Under the data directory (`DATA/blobs`), the embedded default.
    #[default]
    Local,
    /// In an S3-compatible bucket, under a prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (no leading or trailing `/`; empty for none).
        prefix: String,
    },
}

impl BlobLocation {
    /// Parses `local` (or an empty string) or `s3://bucket[/prefix]`.
    pub fn parse(s: &str) -> Result<BlobLocation, String> {
        let s = s.trim();
        if s.is_empty() || s == "local" {
            return Ok(BlobLocation::Local);
        }
        let Some(rest) = s.strip_prefix("s3://") else {
            return Err(format!("'{s}': blobs are 'local' or s3://BUCKET[/PREFIX]"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules, checked here so a typo is named before
        // any request.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(format!(
                "'{s}': '{bucket}' is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") && !prefix.is_empty() {
            return Err(format!("'{s}': the prefix '{prefix}' has an empty, '.' or '..' part"));
        }
        if prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!("'{s}': the prefix has a control character"));
        }
        Ok(BlobLocation::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobLocation::Local => f.write_str("local"),
            BlobLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            BlobLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Blobs in one bucket, under one prefix.
#[derive(Debug)]
pub struct ObjectBlobStore {
    s3: Arc<AmazonS3>,
    /// `PREFIX/blobs` (or `blobs`).
    root: ObjectPath,
    /// Shown in errors and logs: `s3://bucket/prefix`.
    name: String,
    runtime: Runtime,
    /// Uploads started by `stage` that `publish` has not waited for yet.
    pending: std::sync::Mutex<std::collections::HashMap<BlobId, Vec<Pending>>>,
    /// Uploads in flight at once, over every caller.
    uploads: Arc<tokio::sync::Semaphore>,
}

/// One staged upload in flight.
type Pending = tokio::task::JoinHandle<Result<(), object_store::Error>>;

/// Staged uploads in flight at once: enough to overlap a model's chunks
/// and several workers' models, few enough to keep memory bounded.
const UPLOADS_IN_FLIGHT: usize = 32;

/// The store's own runtime, shut down without waiting when dropped (a
/// runtime dropped inside another one's task would otherwise panic).
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn handle(&self) -> &tokio::runtime::Handle {
        // Only `drop` takes the runtime out.
        match &self.0 {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is taken only when dropped"),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn s3_error(name: &str, what: impl std::fmt::Display, source: object_store::Error) -> PipelineError {
    // The client's own causes (a refused connection, a TLS failure) sit
    // deep in the chain and are what an operator needs to read.
    let said = source.to_string();
    let mut causes = String::new();
    let mut next = std::error::Error::source(&source);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !said.contains(&text) && !causes.contains(&text) {
            causes.push_str(": ");
            causes.push_str(&text);
        }
        next = cause.source();
    }
    PipelineError::ObjectStore { what: format!("{name}: {what}"), source: Box::new(source), causes }
}

impl ObjectBlobStore {
    /// Connects to the bucket of `location` with credentials from the
    /// environment and checks, with one listing request, that it is there
    /// and the credentials are accepted, so a bad setting fails at start,
    /// not at the first upload.
    pub fn open(location: &BlobLocation) -> Result<ObjectBlobStore, PipelineError> {
        ObjectBlobStore::open_with(location, &[])
    }

    /// [`ObjectBlobStore::open`] with `settings` over the environment's:
    /// pairs of an AWS variable's name, upper or lower case, with or
    /// without `AWS_` (`aws_endpoint`, `AWS_SECRET_ACCESS_KEY`), and its
    /// value.
    pub fn open_with(
        location: &BlobLocation,
        settings: &[(&str, &str)],
    ) -> Result<ObjectBlobStore, PipelineError> {
        let BlobLocation::S3 { bucket, prefix } = location else {
            return Err(PipelineError::BlobLocation("not an object store location".into()));
        };
        let name = location.to_string();
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in settings {
            let lower = key.to_ascii_lowercase();
            let key = lower
                .parse()
                .map_err(|e| PipelineError::BlobLocation(format!("{name}: setting {lower}: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        // A few quick retries, not object_store's default of ten over three
        // minutes: a request path (a download, a readiness probe) should
        // fail in seconds when the store is down, and say so.
        let retry =
            RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(10), ..RetryConfig::default() };
        let s3 = builder
            .with_bucket_name(bucket)
            .with_retry(retry)
            .build()
            .map_err(|e| PipelineError::BlobLocation(format!("{name}: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-s3")
            .enable_all()
            .build()
            .map_err(|source| PipelineError::Io { path: "tokio runtime".into(), source })?;
        let root = if prefix.is_empty() {
            ObjectPath::from("blobs")
        } else {
            ObjectPath::from(format!("{prefix}/blobs"))
        };
        let store = ObjectBlobStore {
            s3: Arc::new(s3),
            root,
            name,
            runtime: Runtime(Some(rt)),
            pending: std::sync::Mutex::new(std::collections::HashMap::new()),
            uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS_IN_FLIGHT)),
        };
        store.wait(store.probe()).map_err(|e| s3_error(&store.name, "the bucket cannot be listed", e))?;
        Ok(store)
    }

    /// The object key of a blob.
    fn key_of(&self, id: &BlobId) -> ObjectPath {
        self.root.clone().join(&id.as_str()[..2]).join(id.as_str())
    }

    /// One listing request under the root: the bucket exists and takes
    /// these credentials (at open, and for readiness checks).
    fn probe(&self) -> impl std::future::Future<Output = Result<(), object_store::Error>> + Send + 'static {
        let (s3, root) = (self.s3.clone(), self.root.clone());
        async move { s3.list(Some(&root)).next().await.transpose().map(|_| ()) }
    }

    /// A blob's whole bytes, as a future for [`Self::run`] or [`Self::wait`].
    fn fetch(
        &self,
        id: &BlobId,
    ) -> impl std::future::Future<Output = Result<Bytes, object_store::Error>> + Send + 'static {
        let (s3, key) = (self.s3.clone(), self.key_of(id));
        async move { s3.get(&key).await?.bytes().await }
    }

    /// Runs `future` on the store's runtime and waits for it from any
    /// thread (see the module documentation).
    fn wait<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, object_store::Error>> + Send + 'static,
    ) -> Result<T, object_store::Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.handle().spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: "the object store's runtime stopped before answering".into(),
            })
        })
    }

    /// Runs `future` on the store's runtime, awaited from another runtime.
    async fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, object_store::Error>> + Send + 'static,
    ) -> Result<T, object_store::Error> {
        match self.runtime.handle().spawn(future).await {
            Ok(result) => result,
            Err(e) => Err(object_store::Error::Generic { store: "S3", source: Box::new(e) }),
        }
    }

    async fn store(s3: Arc<AmazonS3>, key: ObjectPath, bytes: Bytes) -> Result<(), object_store::Error> {
        if bytes.len() < MULTIPART_MIN {
            let len = bytes.len() as u64;
            let mut attempt = 1;
            loop {
                let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                let e = match s3.put_opts(&key, PutPayload::from(bytes.clone()), opts).await {
                    // Content-addressed: whoever made it wrote these bytes.
                    Ok(_)
                    | Err(
                        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                    ) => return Ok(()),
                    Err(e) => e,
                };
                // A server may answer 412 to the create before it reads the
                // body and close the connection, so the client sees a broken
                // pipe, not the 412, and may even send the next request on
                // that dead connection (s3s does both when two workers store
                // the same chunk at once; object_store does not retry a PUT
                // that failed mid-body). A stored object of the right size
                // under this key holds these bytes; otherwise the write,
                // idempotent as every content-addressed one, is tried again.
                if s3.head(&key).await.is_ok_and(|meta| meta.size == len) {
                    return Ok(());
                }
                if attempt == CREATE_ATTEMPTS {
                    return Err(e);
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
        // A multipart upload cannot be conditional; ask first, so a blob
        // stored already is not uploaded again (a race only costs a second
        // upload of the same bytes).
        match s3.head(&key).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let upload = s3.put_multipart(&key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut offset = 0;
        while offset < bytes.len() {
            let end = (offset + PART).min(bytes.len());
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.put(bytes.slice(offset..end));
            offset = end;
        }
        writer.finish().await.map(|_| ())
    }

    /// A blob's bytes, from async code.
    pub async fn read(&self, id: &BlobId) -> Result<Bytes, PipelineError> {
        self.run(self.fetch(id)).await.map_err(|e| s3_error(&self.name, format!("blob {id}"), e))
    }

    /// A blob's size in bytes, from async code.
    pub async fn size(&self, id: &BlobId) -> Result<u64, PipelineError> {
        let (s3, key) = (self.s3.clone(), self.key_of(id));
        self.run(async move { s3.head(&key).await.map(|m| m.size) })
            .await
            .map_err(|e| s3_error(&self.name, format!("blob {id}"), e))
    }

    /// The bytes `range` of a blob as a stream, read from the store as the
    /// stream is polled (never held whole).
    pub async fn stream(
        &self,
        id: &BlobId,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, PipelineError> {
        if range.is_empty() {
            return Ok(futures_util::stream::empty().boxed());
        }
        let (s3, key) = (self.s3.clone(), self.key_of(id));
        let opts = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
        let result = self
            .run(async move { s3.get_opts(&key, opts).await })
            .await
            .map_err(|e| s3_error(&self.name, format!("blob {id}"), e))?;
        // The body's bytes are polled on the caller's runtime; reqwest's
        // connection task stays on the store's.
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// A presigned URL for `method` on a blob, valid for `ttl`: what a
    /// printer is redirected to, or a provider is handed.
    pub async fn presign(&self, method: Method, id: &BlobId, ttl: Duration) -> Result<String, PipelineError> {
        let (s3, key) = (self.s3.clone(), self.key_of(id));
        self.run(async move { s3.signed_url(method, &key, ttl).await })
            .await
            .map(|url| url.to_string())
            .map_err(|e| s3_error(&self.name, format!("presigning blob {id}"), e))
    }

    /// Whether the bucket answers and takes these credentials (one listing
    /// request, for readiness checks).
    pub async fn check(&self) -> Result<(), PipelineError> {
        self.run(self.probe()).await.map_err(|e| s3_error(&self.name, "the bucket cannot be listed", e))
    }

    /// Every blob id stored (for checks and tests).
    pub fn list(&self) -> Result<Vec<BlobId>, PipelineError> {
        let (s3, root) = (self.s3.clone(), self.root.clone());
        let metas = self
            .wait(async move { s3.list(Some(&root)).try_collect::<Vec<_>>().await })
            .map_err(|e| s3_error(&self.name, "listing", e))?;
        Ok(metas.iter().filter_map(|m| m.location.filename().and_then(BlobId::parse)).collect())
    }
}

impl BlobStore for ObjectBlobStore {
    fn put(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        let id = BlobId::of(bytes);
        self.stage_hashed(id.clone(), bytes)?;
        self.publish(std::slice::from_ref(&id))?;
        Ok(id)
    }

    fn stage(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        self.stage_hashed(BlobId::of(bytes), bytes)
    }

    /// Starts the upload and returns: a model's chunks, snapshot and
    /// manifest go up at once (each a round trip to the bucket) while the
    /// caller goes on; [`BlobStore::publish`] waits for them.
    fn stage_hashed(&self, id: BlobId, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        debug_assert_eq!(id, BlobId::of(bytes), "stage_hashed: id is not the bytes' digest");
        let (s3, key) = (self.s3.clone(), self.key_of(&id));
        let bytes = Bytes::copy_from_slice(bytes);
        let uploads = self.uploads.clone();
        let task = self.runtime.handle().spawn(async move {
            let _slot = uploads.acquire_owned().await;
            ObjectBlobStore::store(s3, key, bytes).await
        });
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() >= 4096 {
            // Stages never published (their caller failed first): keep
            // only what is still in flight.
            pending.retain(|_, tasks| {
                tasks.retain(|t| !t.is_finished());
                !tasks.is_empty()
            });
        }
        pending.entry(id.clone()).or_default().push(task);
        Ok(id)
    }

    /// Waits for the staged uploads of `ids`; the first failure is the
    /// answer (every one is waited for, so none is left running unseen).
    fn publish(&self, ids: &[BlobId]) -> Result<(), PipelineError> {
        let tasks: Vec<(BlobId, Pending)> = {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ids.iter()
                .filter_map(|id| pending.remove(id).map(|t| (id.clone(), t)))
                .flat_map(|(id, tasks)| tasks.into_iter().map(move |t| (id.clone(), t)))
                .collect()
        };
        let mut first = None;
        for (id, task) in tasks {
            let result = match futures_executor::block_on(task) {
                Ok(r) => r,
                Err(e) => Err(object_store::Error::Generic { store: "S3", source: Box::new(e) }),
            };
            if let Err(e) = result
                && first.is_none()
            {
                first = Some(s3_error(&self.name, format!("storing blob {id}"), e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn get(&self, id: &BlobId) -> Result<Vec<u8>, PipelineError> {
        let bytes = self.wait(self.fetch(id)).map_err(|e| s3_error(&self.name, format!("blob {id}"), e))?;
        // Without a copy when the client handed over the only reference.
        Ok(Vec::from(bytes))
    }

    fn contains(&self, id: &BlobId) -> Result<bool, PipelineError> {
        let (s3, key) = (self.s3.clone(), self.key_of(id));
        match self.wait(async move { s3.head(&key).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_error(&self.name, format!("blob {id}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_name_their_fault() {
        assert_eq!(BlobLocation::parse("local"), Ok(BlobLocation::Local));
        assert_eq!(BlobLocation::parse(""), Ok(BlobLocation::Local));
        assert_eq!(
            BlobLocation::parse("s3://strata-blobs/eu/catalog/"),
            Ok(BlobLocation::S3 { bucket: "strata-blobs".into(), prefix: "eu/catalog".into() })
        );
        assert_eq!(
            BlobLocation::parse("s3://strata-blobs"),
            Ok(BlobLocation::S3 { bucket: "strata-blobs".into(), prefix: String::new() })
        );
        assert_eq!(BlobLocation::parse("s3://b1b/x").map(|l| l.to_string()), Ok("s3://b1b/x".to_string()));
        for (bad, says) in [
            ("gs://bucket", "blobs are 'local' or s3://"),
            ("s3://Upper", "is not a bucket name"),
            ("s3://ab", "is not a bucket name"),
            ("s3://-bucket", "is not a bucket name"),
            ("s3://bucket/a//b", "empty, '.' or '..' part"),
            ("s3://bucket/a/../b", "empty, '.' or '..' part"),
            ("s3://bucket/a\u{7}b", "control character"),
        ] {
            let e = BlobLocation::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
