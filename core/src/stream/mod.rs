//! The chunked stream format: what printers pull.
//!
//! A sliced model becomes a JSON [`Manifest`] plus chunks. Each chunk is an
//! independent zstd frame holding whole consecutive layers, so a printer
//! can fetch, check and decode any chunk on its own and resume at a layer
//! boundary after a dropped connection. The byte layout is specified in
//! `docs/stream-format.md`; this module is its reference implementation.
//!
//! Trust runs one way: the manifest is checked for consistency first
//! ([`Manifest::check`]), then each chunk against the manifest (length,
//! SHA-256, declared and actual decompressed size, then its contents), so a
//! corrupted, truncated or hostile chunk gives a [`StreamError`] before it
//! can cost more memory than the manifest allows.

mod codec;
#[cfg(test)]
mod tests;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::slice::{Layer, SliceOptions};

/// The `format` field of every manifest.
pub const FORMAT: &str = "strata-stream";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Default raw (uncompressed) chunk size to aim for.
pub const DEFAULT_CHUNK_TARGET: usize = 256 * 1024;
/// zstd level: level 3 is within 10% of level 19's ratio on geometry at
/// 30-40x the speed (measured in `../shared/crates.md`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Integer coordinates per file unit (1 nm when the file is in mm).
pub const COORDINATE_SCALE: f64 = crate::slice::NM_PER_UNIT;

/// The manifest: everything a printer needs before the first chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// SHA-256 (hex) of the model file's bytes the stream was sliced from.
    pub model_sha256: String,
    /// Integer polygon coordinates per file unit.
    pub coordinate_scale: f64,
    /// The slicing parameters.
    pub slicing: SliceOptions,
    /// Number of layers.
    pub layer_count: u32,
    /// The height of each layer's cutting plane, in the model's own
    /// coordinates (not moved onto the bed).
    pub layer_z: Vec<f64>,
    /// The model's bounding box, or `None` for an empty model.
    pub bbox: Option<BoundingBox>,
    /// The raw chunk size the encoder aimed for.
    pub chunk_target_bytes: u64,
    /// The chunks, in layer order.
    pub chunks: Vec<ChunkInfo>,
    /// SHA-256 (hex) over the chunks' binary SHA-256 digests, concatenated
    /// in order: one value that pins every chunk and their order.
    pub stream_sha256: String,
}

/// An axis-aligned box in file units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundingBox {
    /// Lowest corner.
    pub min: [f64; 3],
    /// Highest corner.
    pub max: [f64; 3],
}

/// One chunk as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkInfo {
    /// Position in [`Manifest::chunks`].
    pub index: u32,
    /// File name next to the manifest (`chunk-000000.zst`).
    pub file: String,
    /// First layer in the chunk.
    pub first_layer: u32,
    /// Last layer in the chunk (inclusive).
    pub last_layer: u32,
    /// Compressed length: the chunk file's size.
    pub bytes: u64,
    /// Decompressed length.
    pub raw_bytes: u64,
    /// SHA-256 (hex) of the compressed bytes.
    pub sha256: String,
}

/// A manifest with its chunks' bytes, in memory.
#[derive(Debug, Clone)]
pub struct EncodedStream {
    /// The manifest.
    pub manifest: Manifest,
    /// Compressed chunks, in the manifest's order.
    pub chunks: Vec<Vec<u8>>,
}

/// How to pack layers.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Raw bytes per chunk to aim for; a chunk closes before the layer that
    /// would take it past this (a single larger layer gets its own chunk).
    pub chunk_target: usize,
    /// zstd compression level.
    pub level: i32,
}

impl Default for EncodeOptions {
    fn default() -> EncodeOptions {
        EncodeOptions { chunk_target: DEFAULT_CHUNK_TARGET, level: DEFAULT_ZSTD_LEVEL }
    }
}

/// What the encoder records about the model itself.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// SHA-256 (hex) of the model file.
    pub sha256: String,
    /// The model's bounding box.
    pub bbox: Option<BoundingBox>,
}

/// Bounds a decoder holds a hostile stream to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Refuse a chunk that would decompress to more than this, whatever
    /// its manifest says.
    pub max_chunk_raw_bytes: u64,
    /// Refuse a manifest longer than this.
    pub max_manifest_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_chunk_raw_bytes: 256 << 20, max_manifest_bytes: 64 << 20 }
    }
}

/// Why a stream could not be written or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The manifest is not JSON of the expected shape.
    #[error("manifest: {0}")]
    ManifestSyntax(String),
    /// The manifest is larger than [`Limits::max_manifest_bytes`].
    #[error("manifest is {bytes} bytes; the limit is {limit}")]
    ManifestTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The `format` field is not [`FORMAT`].
    #[error("not a Strata stream (format {0:?})")]
    UnknownFormat(String),
    /// A version this code does not read.
    #[error("stream format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    /// The manifest contradicts itself (layers not covered, counts that
    /// disagree).
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(String),
    /// No chunk with this index.
    #[error("no chunk {index} (the stream has {count})")]
    NoSuchChunk {
        /// Asked for.
        index: usize,
        /// Chunks in the stream.
        count: usize,
    },
    /// No layer with this index.
    #[error("no layer {index} (the stream has {count})")]
    NoSuchLayer {
        /// Asked for.
        index: u64,
        /// Layers in the stream.
        count: u32,
    },
    /// The chunk's length is not the manifest's (truncated or padded).
    #[error("chunk {chunk}: {actual} bytes, the manifest says {expected} (truncated or altered)")]
    ChunkLength {
        /// Chunk index.
        chunk: usize,
        /// From the manifest.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// The chunk's SHA-256 is not the manifest's.
    #[error("chunk {chunk}: SHA-256 {actual} does not match the manifest's {expected}")]
    ChunkHash {
        /// Chunk index.
        chunk: usize,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The whole-stream hash is not the manifest's.
    #[error("stream SHA-256 {actual} does not match the manifest's {expected}")]
    StreamHash {
        /// From the manifest.
        expected: String,
        /// Computed from the chunk hashes.
        actual: String,
    },
    /// The chunk would decompress to more than allowed: a decompression
    /// bomb, or a manifest that understates it.
    #[error("chunk {chunk}: decompresses to more than {allowed} bytes ({reason})")]
    TooLarge {
        /// Chunk index.
        chunk: usize,
        /// The bound that was hit.
        allowed: u64,
        /// Which bound, and what the frame declared.
        reason: String,
    },
    /// zstd could not decompress the chunk.
    #[error("chunk {chunk}: not a valid zstd frame: {reason}")]
    Decompress {
        /// Chunk index.
        chunk: usize,
        /// zstd's reason.
        reason: String,
    },
    /// The decompressed payload is not well formed.
    #[error("chunk {chunk}: malformed payload at byte {offset}: {reason}")]
    Corrupt {
        /// Chunk index.
        chunk: usize,
        /// Offset in the decompressed payload.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// zstd failed while compressing.
    #[error("compression failed: {0}")]
    Compress(String),
}

impl StreamError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StreamError::ManifestSyntax(_) => "manifest_syntax",
            StreamError::ManifestTooLarge { .. } => "manifest_too_large",
            StreamError::UnknownFormat(_) => "unknown_format",
            StreamError::UnsupportedVersion(_) => "unsupported_version",
            StreamError::Inconsistent(_) => "manifest_inconsistent",
            StreamError::NoSuchChunk { .. } => "no_such_chunk",
            StreamError::NoSuchLayer { .. } => "no_such_layer",
            StreamError::ChunkLength { .. } => "chunk_length",
            StreamError::ChunkHash { .. } => "chunk_hash",
            StreamError::StreamHash { .. } => "stream_hash",
            StreamError::TooLarge { .. } => "decompression_limit",
            StreamError::Decompress { .. } => "decompress",
            StreamError::Corrupt { .. } => "corrupt_chunk",
            StreamError::Compress(_) => "compress",
        }
    }

    /// The chunk the error is about, if any.
    pub fn chunk(&self) -> Option<usize> {
        match self {
            StreamError::ChunkLength { chunk, .. }
            | StreamError::ChunkHash { chunk, .. }
            | StreamError::TooLarge { chunk, .. }
            | StreamError::Decompress { chunk, .. }
            | StreamError::Corrupt { chunk, .. } => Some(*chunk),
            _ => None,
        }
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char])
        .collect()
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// [`sha256_hex`] of everything `reader` yields, read 1 MiB at a time (for
/// files too large to hold, such as a finished resumable upload).
pub fn sha256_hex_of_reader(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hex(&hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The file name of chunk `index`.
pub fn chunk_file_name(index: usize) -> String {
    format!("chunk-{index:06}.zst")
}

/// Packs layers into chunks (see the module documentation). Layers are
/// encoded and chunks compressed in parallel.
pub fn encode(
    layers: &[Layer],
    model: &ModelInfo,
    slicing: &SliceOptions,
    options: &EncodeOptions,
) -> Result<EncodedStream, StreamError> {
    let encoded: Vec<Vec<u8>> = layers.par_iter().map(codec::encode_layer).collect();
    // Group consecutive layers up to the target.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut size) = (0usize, 0usize);
    for (i, e) in encoded.iter().enumerate() {
        if i > start && size + e.len() > options.chunk_target {
            groups.push(start..i);
            (start, size) = (i, 0);
        }
        size += e.len();
    }
    if start < encoded.len() {
        groups.push(start..encoded.len());
    }
    let packed: Vec<(Vec<u8>, u64)> = groups
        .par_iter()
        .map(|range| {
            let raw = codec::chunk_payload(range.start, &encoded[range.clone()]);
            let compressed = zstd::bulk::compress(&raw, options.level)
                .map_err(|e| StreamError::Compress(e.to_string()))?;
            Ok((compressed, raw.len() as u64))
        })
        .collect::<Result<_, StreamError>>()?;
    let mut infos = Vec::with_capacity(groups.len());
    let mut chunks = Vec::with_capacity(groups.len());
    for (i, (range, (bytes, raw_bytes))) in groups.iter().zip(packed).enumerate() {
        infos.push(ChunkInfo {
            index: i as u32,
            file: chunk_file_name(i),
            first_layer: range.start as u32,
            last_layer: (range.end - 1) as u32,
            bytes: bytes.len() as u64,
            raw_bytes,
            sha256: sha256_hex(&bytes),
        });
        chunks.push(bytes);
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: VERSION,
        model_sha256: model.sha256.clone(),
        coordinate_scale: COORDINATE_SCALE,
        slicing: *slicing,
        layer_count: layers.len() as u32,
        layer_z: layers.iter().map(|l| l.z).collect(),
        bbox: model.bbox,
        chunk_target_bytes: options.chunk_target as u64,
        stream_sha256: stream_hash(&infos)?,
        chunks: infos,
    };
    Ok(EncodedStream { manifest, chunks })
}

/// The whole-stream hash over the chunks' digests (see
/// [`Manifest::stream_sha256`]).
pub fn stream_hash(chunks: &[ChunkInfo]) -> Result<String, StreamError> {
    let mut h = Sha256::new();
    for c in chunks {
        let digest = unhex(&c.sha256).ok_or_else(|| {
            StreamError::Inconsistent(format!(
                "chunk {}: sha256 {:?} is not 64 hex digits",
                c.index, c.sha256
            ))
        })?;
        h.update(digest);
    }
    Ok(hex(&h.finalize()))
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

impl Manifest {
    /// Parses and checks a manifest (see [`Manifest::check`]).
    pub fn from_json(bytes: &[u8], limits: &Limits) -> Result<Manifest, StreamError> {
        if bytes.len() > limits.max_manifest_bytes {
            return Err(StreamError::ManifestTooLarge {
                bytes: bytes.len(),
                limit: limits.max_manifest_bytes,
            });
        }
        // The version is read before the whole shape so that a newer
        // manifest says "unsupported version", not "unknown field".
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| StreamError::ManifestSyntax(e.to_string()))?;
        let format = head.format.unwrap_or_default();
        if format != FORMAT {
            return Err(StreamError::UnknownFormat(format));
        }
        match head.version {
            Some(VERSION) => {}
            Some(v) => return Err(StreamError::UnsupportedVersion(v)),
            None => return Err(StreamError::ManifestSyntax("missing field `version`".to_string())),
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| StreamError::ManifestSyntax(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks that the manifest agrees with itself: the chunks cover the
    /// layers exactly once and in order, each layer has a z, the hashes are
    /// well formed and the stream hash matches the chunk hashes.
    pub fn check(&self) -> Result<(), StreamError> {
        let bad = |s: String| Err(StreamError::Inconsistent(s));
        if self.format != FORMAT {
            return Err(StreamError::UnknownFormat(self.format.clone()));
        }
        if self.version != VERSION {
            return Err(StreamError::UnsupportedVersion(self.version));
        }
        if self.layer_z.len() != self.layer_count as usize {
            return bad(format!("{} layer heights for {} layers", self.layer_z.len(), self.layer_count));
        }
        if self.coordinate_scale != COORDINATE_SCALE {
            return bad(format!(
                "coordinate_scale {} (this build reads {COORDINATE_SCALE})",
                self.coordinate_scale
            ));
        }
        let mut next = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.index as usize != i {
                return bad(format!("chunk at position {i} has index {}", c.index));
            }
            if u64::from(c.first_layer) != next || c.last_layer < c.first_layer {
                return bad(format!(
                    "chunk {i} holds layers {}..={}, expected to start at layer {next}",
                    c.first_layer, c.last_layer
                ));
            }
            if c.file != chunk_file_name(i) {
                return bad(format!("chunk {i} is named {:?}, expected {:?}", c.file, chunk_file_name(i)));
            }
            next = u64::from(c.last_layer) + 1;
        }
        if next != u64::from(self.layer_count) {
            return bad(format!("chunks cover {next} layers of {}", self.layer_count));
        }
        let actual = stream_hash(&self.chunks)?;
        if actual != self.stream_sha256 {
            return Err(StreamError::StreamHash { expected: self.stream_sha256.clone(), actual });
        }
        Ok(())
    }

    /// The chunk holding layer `layer`.
    pub fn chunk_of_layer(&self, layer: u64) -> Result<usize, StreamError> {
        if layer >= u64::from(self.layer_count) {
            return Err(StreamError::NoSuchLayer { index: layer, count: self.layer_count });
        }
        Ok(self.chunks.partition_point(|c| u64::from(c.last_layer) < layer))
    }
}

/// Checks chunk `index` against the manifest and decodes its layers.
/// The manifest must have passed [`Manifest::check`].
pub fn decode_chunk(
    manifest: &Manifest,
    index: usize,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<Layer>, StreamError> {
    let info =
        manifest.chunks.get(index).ok_or(StreamError::NoSuchChunk { index, count: manifest.chunks.len() })?;
    if bytes.len() as u64 != info.bytes {
        return Err(StreamError::ChunkLength {
            chunk: index,
            expected: info.bytes,
            actual: bytes.len() as u64,
        });
    }
    let actual = sha256_hex(bytes);
    if actual != info.sha256 {
        return Err(StreamError::ChunkHash { chunk: index, expected: info.sha256.clone(), actual });
    }
    let raw = decompress(index, bytes, info.raw_bytes, limits)?;
    let layers = codec::decode_payload(index, &raw, info, &manifest.layer_z)?;
    Ok(layers)
}

/// Decompresses one frame into at most `declared` bytes (and at most the
/// limit), refusing before allocating when the frame header already says
/// more.
fn decompress(chunk: usize, bytes: &[u8], declared: u64, limits: &Limits) -> Result<Vec<u8>, StreamError> {
    if declared > limits.max_chunk_raw_bytes {
        return Err(StreamError::TooLarge {
            chunk,
            allowed: limits.max_chunk_raw_bytes,
            reason: format!("the manifest declares {declared} bytes, over the decoder's limit"),
        });
    }
    match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if size > declared => {
            return Err(StreamError::TooLarge {
                chunk,
                allowed: declared,
                reason: format!("the frame header declares {size} bytes, the manifest {declared}"),
            });
        }
        Ok(_) => {}
        Err(_) => {
            return Err(StreamError::Decompress { chunk, reason: "no valid zstd frame header".to_string() });
        }
    }
    let raw = zstd::bulk::decompress(bytes, declared as usize).map_err(|e| {
        let reason = e.to_string();
        if reason.contains("too small") {
            StreamError::TooLarge {
                chunk,
                allowed: declared,
                reason: "the frame holds more than the manifest declares".to_string(),
            }
        } else {
            StreamError::Decompress { chunk, reason }
        }
    })?;
    if raw.len() as u64 != declared {
        return Err(StreamError::Corrupt {
            chunk,
            offset: raw.len(),
            reason: format!("decompressed to {} bytes, the manifest says {declared}", raw.len()),
        });
    }
    Ok(raw)
}

/// Checks and decodes a whole stream held in memory.
pub fn decode(stream: &EncodedStream, limits: &Limits) -> Result<Vec<Layer>, StreamError> {
    stream.manifest.check()?;
    if stream.chunks.len() != stream.manifest.chunks.len() {
        return Err(StreamError::Inconsistent(format!(
            "{} chunks present, the manifest lists {}",
            stream.chunks.len(),
            stream.manifest.chunks.len()
        )));
    }
    let per_chunk: Vec<Vec<Layer>> = stream
        .chunks
        .par_iter()
        .enumerate()
        .map(|(i, bytes)| decode_chunk(&stream.manifest, i, bytes, limits))
        .collect::<Result<_, _>>()?;
    Ok(per_chunk.into_iter().flatten().collect())
}
