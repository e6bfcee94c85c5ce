//! Resumable uploads (tus 1.0: core, creation, checksum, expiration,
//! termination) onto a model awaiting its bytes.
//!
//! An upload is a row (`tus_uploads`: declared length, acknowledged
//! offset, expiry) and a file `DATA/tus/{id}`. A `PATCH` appends to the
//! file from the acknowledged offset (dropping any tail a crash left
//! unacknowledged), syncs it, and only then moves the row's offset,
//! compare-and-swap from the offset the client named: so an offset the
//! server answered survives a crash, and two requests racing on one
//! upload cannot both land. When the offset reaches the length the file
//! is hashed, moved into the spool and accepted exactly as a one-shot
//! `PUT` upload is ([`Lifecycle::accept_upload`]), and the row goes; when
//! it cannot be accepted now (the partner's queue is full) the bytes and
//! the offset go back to before the last `PATCH`, which the client sends
//! again after `Retry-After`.

use std::path::PathBuf;
use std::time::Duration;

use crate::PipelineError;
use crate::db::{ModelStatus, PartnerModel, TusUpload, now_ms};
use crate::lifecycle::{AcceptError, Lifecycle, Transition, UploadJob};

/// How long an expired upload still answers 410 before it is forgotten
/// (then 404).
const GONE_GRACE_MS: i64 = 24 * 3600 * 1000;

/// Why a resumable upload request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TusError {
    /// No such upload (never made, terminated, or long expired).
    #[error("no such upload")]
    NotFound,
    /// The upload expired; its bytes are gone.
    #[error("the upload expired; create it again")]
    Expired,
    /// The client's offset is not the server's.
    #[error("Upload-Offset {got} does not match the upload's offset {expected}; ask with HEAD")]
    OffsetMismatch {
        /// The offset the server has.
        expected: u64,
        /// The offset the request named.
        got: u64,
    },
    /// The declared length or the bytes sent go past a limit.
    #[error("{what} is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The model is not waiting for an upload.
    #[error("the model is already {0}; create a new model")]
    NotAwaiting(&'static str),
    /// The model's uploads are queued past the partner's share.
    #[error(transparent)]
    Accept(#[from] AcceptError),
    /// A file of the upload could not be read or written.
    #[error("upload file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] PipelineError),
}

/// What a finished upload became.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The bytes' SHA-256 (hex).
    pub sha256: String,
    /// The model's move to `processing`.
    pub transition: Transition,
}

impl Lifecycle {
    /// Where the upload `id`'s bytes are kept.
    pub fn tus_file(&self, id: &str) -> PathBuf {
        self.store().dir().join("tus").join(id)
    }

    /// A new resumable upload of `length` bytes for `model`, which must be
    /// awaiting its bytes; expiring after `ttl`.
    pub fn create_tus_upload(
        &self,
        model: &PartnerModel,
        length: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<TusUpload, TusError> {
        if length > limit {
            return Err(TusError::TooLarge { what: "Upload-Length", bytes: length, limit });
        }
        if model.status != ModelStatus::NotUploaded {
            return Err(TusError::NotAwaiting(model.status.as_str()));
        }
        let now = now_ms();
        let upload = TusUpload {
            id: crate::ids::random_hex(16),
            model_id: model.id.clone(),
            length,
            offset: 0,
            expires_at: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        };
        let path = self.tus_file(&upload.id);
        let io = |source| TusError::Io { path: path.clone(), source };
        std::fs::create_dir_all(path.parent().unwrap_or(&path)).map_err(io)?;
        std::fs::File::create(&path).map_err(io)?;
        self.db().insert_tus_upload(&upload, now)?;
        Ok(upload)
    }

    /// The upload `id` as it stands: [`TusError::Expired`] past its
    /// expiry (its file removed), [`TusError::NotFound`] when unknown.
    pub fn tus_upload(&self, id: &str) -> Result<TusUpload, TusError> {
        let upload = self.db().tus_upload(id)?.ok_or(TusError::NotFound)?;
        if upload.expires_at <= now_ms() {
            let _ = std::fs::remove_file(self.tus_file(id));
            return Err(TusError::Expired);
        }
        Ok(upload)
    }

    /// The upload `id`, ready for bytes at `offset`: its offset must be
    /// `offset`, and `sent` more bytes (when declared) must fit its length.
    pub fn tus_before_append(&self, id: &str, offset: u64, sent: Option<u64>) -> Result<TusUpload, TusError> {
        let upload = self.tus_upload(id)?;
        if upload.offset != offset {
            return Err(TusError::OffsetMismatch { expected: upload.offset, got: offset });
        }
        if let Some(n) = sent
            && upload.offset.saturating_add(n) > upload.length
        {
            return Err(TusError::TooLarge {
                what: "the upload with this PATCH",
                bytes: upload.offset.saturating_add(n),
                limit: upload.length,
            });
        }
        Ok(upload)
    }

    /// Records that `upload`'s file now holds `new_offset` bytes, synced;
    /// when that is all of it, finishes it (see the module documentation).
    pub fn tus_appended(&self, upload: &TusUpload, new_offset: u64) -> Result<Option<Finished>, TusError> {
        if !self.db().advance_tus_upload(&upload.id, upload.offset, new_offset)? {
            let now = self.tus_upload(&upload.id)?;
            return Err(TusError::OffsetMismatch { expected: now.offset, got: upload.offset });
        }
        if new_offset < upload.length {
            return Ok(None);
        }
        self.finish_tus_upload(upload).map(Some)
    }

    fn finish_tus_upload(&self, upload: &TusUpload) -> Result<Finished, TusError> {
        let path = self.tus_file(&upload.id);
        let io = |source| TusError::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        let sha256 = crate::core::stream::sha256_hex_of_reader(file).map_err(io)?;
        let model = self.db().partner_model(&upload.model_id)?.ok_or(TusError::NotFound)?;
        let (spool, spool_path) = self.store().new_spool(&model.id);
        std::fs::rename(&path, &spool_path).map_err(io)?;
        let job = UploadJob { spool, sha256: sha256.clone(), size: upload.length };
        match self.accept_upload(&model, &job) {
            Ok(transition) => {
                self.db().delete_tus_upload(&upload.id)?;
                Ok(Finished { sha256, transition })
            }
            Err(AcceptError::AlreadyUploaded) => {
                let _ = std::fs::remove_file(&spool_path);
                self.db().delete_tus_upload(&upload.id)?;
                Err(TusError::NotAwaiting("uploaded"))
            }
            Err(e) => {
                // Not accepted now (a full queue, a busy store): the bytes
                // go back and the offset to before this PATCH, so the
                // client sends its last piece again and nothing is lost.
                std::fs::rename(&spool_path, &path).map_err(io)?;
                self.db().advance_tus_upload(&upload.id, upload.length, upload.offset)?;
                Err(e.into())
            }
        }
    }

    /// Ends the upload `id` and removes its bytes (tus termination).
    pub fn terminate_tus_upload(&self, id: &str) -> Result<(), TusError> {
        self.tus_upload(id)?;
        self.db().delete_tus_upload(id)?;
        let _ = std::fs::remove_file(self.tus_file(id));
        Ok(())
    }

    /// Removes the files of expired uploads and files no upload names
    /// (left by a crash between creating one and recording it), and
    /// forgets uploads expired a day ago; how many files went.
    pub fn sweep_tus_uploads(&self) -> Result<usize, TusError> {
        let forgotten = self.db().purge_expired_tus_uploads(now_ms(), GONE_GRACE_MS)?;
        let live = self.db().tus_upload_expiries()?;
        let now = now_ms();
        let dir = self.store().dir().join("tus");
        let mut removed = 0;
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A file without a row, or whose row expired (kept a while so
            // its client gets 410), holds bytes nobody can finish.
            // A file younger than a minute may belong to an upload being
            // created now, whose row is not written yet.
            let fresh = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < Duration::from_secs(60)));
            let keep =
                live.get(&name).is_some_and(|&expires| expires > now) || (fresh && !live.contains_key(&name));
            if (!keep || forgotten.contains(&name)) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Partner;
    use crate::lifecycle::LifecycleConfig;
    use crate::process::ProcessOptions;

    fn open(dir: &std::path::Path, queue: u64) -> Lifecycle {
        let config = LifecycleConfig {
            public_url: "http://strata.test".into(),
            callback_give_up: Duration::from_secs(60),
            queue_per_partner: queue,
            memory_budget: 1 << 30,
            process: ProcessOptions::default(),
        };
        Lifecycle::open(dir, 2, config).expect("open").0
    }

    /// The last PATCH of an upload whose partner's queue is full gives the
    /// bytes and the offset back (nothing is lost); sent again once there
    /// is room, the upload is accepted with the file's digest.
    #[test]
    fn a_full_queue_at_the_last_byte_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = crate::core::synth::to_binary_stl("cube", &crate::core::synth::cube_facets());
        let upload = {
            let life = open(dir.path(), 0);
            let p = Partner {
                id: "p1".into(),
                name: "Shop".into(),
                email: "a@b.c".into(),
                username: "shop".into(),
            };
            life.db().create_partner(&p, "hash", "key", "whsec_c2VjcmV0").expect("partner");
            let m = PartnerModel::new("m1".into(), "p1".into(), "Cube".into(), ModelStatus::NotUploaded, 0);
            life.db().create_partner_model(&m).expect("model");
            let upload = life
                .create_tus_upload(&m, bytes.len() as u64, 1 << 20, Duration::from_secs(60))
                .expect("created");
            let over = life.create_tus_upload(&m, 2 << 20, 1 << 20, Duration::from_secs(60));
            assert!(matches!(over, Err(TusError::TooLarge { .. })));
            // The route writes and syncs the bytes, then reports them.
            std::fs::write(life.tus_file(&upload.id), &bytes).expect("write");
            let e = life.tus_appended(&upload, bytes.len() as u64).expect_err("queue full");
            assert!(matches!(e, TusError::Accept(AcceptError::QueueFull { .. })), "{e}");
            let now = life.tus_upload(&upload.id).expect("still there");
            assert_eq!(now.offset, 0, "the offset went back to before the PATCH");
            assert_eq!(std::fs::read(life.tus_file(&upload.id)).expect("bytes kept"), bytes);
            assert!(matches!(
                life.tus_before_append(&upload.id, 7, None),
                Err(TusError::OffsetMismatch { expected: 0, got: 7 })
            ));
            now
        };
        let life = open(dir.path(), 8);
        let done = life.tus_appended(&upload, bytes.len() as u64).expect("accepted").expect("finished");
        assert_eq!(done.sha256, crate::core::stream::sha256_hex(&bytes));
        assert!(matches!(life.tus_upload(&upload.id), Err(TusError::NotFound)));
        let m = life.db().partner_model("m1").expect("q").expect("model");
        assert_eq!(m.status, ModelStatus::Processing);
    }

    /// The sweep removes the files of expired uploads and old files no
    /// upload names, and keeps live uploads and files just created (whose
    /// row may not be written yet).
    #[test]
    fn the_sweep_keeps_live_and_fresh_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let life = open(dir.path(), 8);
        let p =
            Partner { id: "p1".into(), name: "Shop".into(), email: "a@b.c".into(), username: "shop".into() };
        life.db().create_partner(&p, "hash", "key", "whsec_c2VjcmV0").expect("partner");
        let m = PartnerModel::new("m1".into(), "p1".into(), "Cube".into(), ModelStatus::NotUploaded, 0);
        life.db().create_partner_model(&m).expect("model");
        let live = life.create_tus_upload(&m, 100, 1 << 20, Duration::from_secs(60)).expect("live");
        let expired = life.create_tus_upload(&m, 100, 1 << 20, Duration::ZERO).expect("expired");
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let orphan = life.tus_file("0123456789abcdef0123456789abcdef");
        std::fs::write(&orphan, b"left by a crash").expect("orphan");
        std::fs::File::options().write(true).open(&orphan).and_then(|f| f.set_modified(old)).expect("age it");
        let fresh = life.tus_file("fedcba9876543210fedcba9876543210");
        std::fs::write(&fresh, b"being created").expect("fresh");
        assert_eq!(life.sweep_tus_uploads().expect("sweep"), 2);
        assert!(life.tus_file(&live.id).exists());
        assert!(fresh.exists());
        assert!(!orphan.exists());
        assert!(!life.tus_file(&expired.id).exists());
        // The expired upload still answers 410 (its row is kept a while).
        assert!(matches!(life.tus_upload(&expired.id), Err(TusError::Expired)));
    }
}
