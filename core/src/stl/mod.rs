//! STL parsing: format detection, the zero-copy binary view and the ASCII
//! parser.
//!
//! Detection never trusts the header text. Many real binary files start
//! with `solid` (the ASCII keyword), so the decision is made in this order:
//!
//! 1. `size == 84 + 50 * count` (computed in 64 bits): binary.
//! 2. A zip container: 3MF, not STL.
//! 3. Text (no control bytes in the first 4 KiB) starting with `solid`:
//!    ASCII STL. A binary file's floats and counts put NUL and other control
//!    bytes into any 4 KiB sample, so this cannot misfire on real binaries.
//! 4. Other text: not STL (OBJ is named as such).
//! 5. At least 84 bytes: binary whose count disagrees with its size. Extra
//!    bytes are ignored with a warning; a count larger than the whole records
//!    present is corrected with a warning; a file that ends inside a record
//!    is [`ParseError::Truncated`].

mod ascii;
pub mod binary;

pub use binary::RawFacet;

use crate::{ParseError, Warning};

/// Which STL encoding a file used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StlFormat {
    /// Text: `solid` / `facet normal` / `vertex` ... `endsolid`.
    Ascii,
    /// 80-byte header, `u32` count, 50-byte records.
    Binary,
}

impl StlFormat {
    /// `"ascii"` or `"binary"`, the names used in reports.
    pub fn name(self) -> &'static str {
        match self {
            StlFormat::Ascii => "ascii",
            StlFormat::Binary => "binary",
        }
    }
}

/// One facet read from ASCII STL (binary facets stay in the file as
/// [`RawFacet`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Facet {
    /// The stored normal.
    pub normal: [f32; 3],
    /// The three vertices in file order.
    pub vertices: [[f32; 3]; 3],
}

/// Random access to a file's facets, whatever their encoding.
///
/// The mesh builder is generic over this so each encoding gets its own
/// monomorphised hot loop instead of a branch per vertex.
pub trait FacetSource: Sync {
    /// Number of facets.
    fn facet_count(&self) -> usize;
    /// Vertices of facet `i`.
    fn vertices(&self, i: usize) -> [[f32; 3]; 3];
    /// Stored normal of facet `i`.
    fn normal(&self, i: usize) -> [f32; 3];
}

impl FacetSource for [Facet] {
    #[inline]
    fn facet_count(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn vertices(&self, i: usize) -> [[f32; 3]; 3] {
        self[i].vertices
    }

    #[inline]
    fn normal(&self, i: usize) -> [f32; 3] {
        self[i].normal
    }
}

/// A parsed STL file. Binary facets are borrowed from the input bytes.
#[derive(Debug)]
pub struct Stl<'a> {
    /// The encoding that was detected.
    pub format: StlFormat,
    /// What the parser had to decide on the file's behalf.
    pub warnings: Vec<Warning>,
    /// Number of `solid ... endsolid` blocks (ASCII only; 0 for binary).
    pub solids: usize,
    facets: Storage<'a>,
}

/// The facets of a parsed file, borrowed in their own encoding.
#[derive(Debug, Clone, Copy)]
pub enum Facets<'a> {
    /// Records still in the file's bytes.
    Binary(&'a [RawFacet]),
    /// Facets decoded from text.
    Ascii(&'a [Facet]),
}

impl Facets<'_> {
    /// Number of facets.
    pub fn len(&self) -> usize {
        match self {
            Facets::Binary(r) => r.len(),
            Facets::Ascii(f) => f.len(),
        }
    }

    /// Whether there are no facets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
enum Storage<'a> {
    Binary(&'a [RawFacet]),
    Ascii(Vec<Facet>),
}

impl<'a> Stl<'a> {
    /// The facets, in file order.
    pub fn facets(&self) -> Facets<'_> {
        match &self.facets {
            Storage::Binary(r) => Facets::Binary(r),
            Storage::Ascii(f) => Facets::Ascii(f),
        }
    }

    /// Number of facets read.
    pub fn facet_count(&self) -> usize {
        self.facets().len()
    }
}

const SAMPLE_LEN: usize = 4096;

/// Parses STL from bytes, detecting binary or ASCII as described in the
/// module documentation.
pub fn parse(bytes: &[u8]) -> Result<Stl<'_>, ParseError> {
    let len = bytes.len() as u64;
    let declared = declared_count(bytes);
    let text = looks_like_text(bytes);

    if let Some(n) = exact_binary(bytes, text) {
        let mut warnings = Vec::new();
        if starts_with_solid(bytes) {
            warnings.push(Warning::BinarySolidHeader);
        }
        return Ok(binary_stl(bytes, n as usize, warnings));
    }
    if is_zip(bytes) {
        return Err(ParseError::Unsupported { detected: "zip container (3MF)" });
    }
    if text {
        if starts_with_solid(bytes) {
            return parse_ascii(bytes);
        }
        if looks_like_obj(bytes) {
            return Err(ParseError::Unsupported { detected: "Wavefront OBJ" });
        }
        if !bytes.is_empty() {
            return Err(ParseError::Unsupported {
                detected: "text without the 'solid' keyword of ASCII STL",
            });
        }
    }
    let Some(n) = declared else {
        return Err(ParseError::TooShort { len });
    };

    let expected = 84 + 50 * u64::from(n);
    let body = len - 84;
    let records = body / 50;
    let mut warnings = Vec::new();
    if starts_with_solid(bytes) {
        warnings.push(Warning::BinarySolidHeader);
    }
    let count = if len > expected && !(n == 0 && body.is_multiple_of(50)) {
        warnings.push(Warning::TrailingBytes { bytes: len - expected });
        u64::from(n)
    } else if body.is_multiple_of(50) && records > 0 {
        // Fewer whole records than declared, or a zeroed count followed by
        // records (some streaming exporters never patch the count). A
        // header with no record at all is plain truncation, below.
        warnings.push(Warning::DeclaredCountMismatch { declared: n, records });
        records
    } else {
        return Err(ParseError::Truncated { declared: n, expected, len, facet: records });
    };
    // `count` is at most `records`, which the file's own length bounds.
    Ok(binary_stl(bytes, count as usize, warnings))
}

/// Parses bytes as ASCII STL without format detection (for callers that
/// know the encoding, and for fuzzing the grammar on its own).
pub fn parse_ascii(bytes: &[u8]) -> Result<Stl<'_>, ParseError> {
    let (facets, solids, warnings) = ascii::parse(bytes)?;
    Ok(finish(Stl { format: StlFormat::Ascii, warnings, solids, facets: Storage::Ascii(facets) }))
}

/// The facet count of a binary STL whose size is exactly `84 + 50 * count`.
///
/// An ASCII file whose bytes 80..84 happen to give the exact size needs a
/// count above ~5e8 (four printable bytes), i.e. a file of 25+ GB; the guard
/// keeps the rule total anyway.
pub(crate) fn exact_binary(bytes: &[u8], text: bool) -> Option<u32> {
    let n = declared_count(bytes)?;
    let exact = 84 + 50 * u64::from(n) == bytes.len() as u64;
    (exact && !(text && starts_with_solid(bytes) && n > 10_000_000)).then_some(n)
}

pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

fn binary_stl(bytes: &[u8], count: usize, warnings: Vec<Warning>) -> Stl<'_> {
    let end = binary::RECORDS_START + binary::RECORD_LEN * count;
    let facets = binary::records(&bytes[binary::RECORDS_START..end]);
    finish(Stl { format: StlFormat::Binary, warnings, solids: 0, facets: Storage::Binary(facets) })
}

fn finish(mut stl: Stl<'_>) -> Stl<'_> {
    if stl.facet_count() == 0 {
        stl.warnings.push(Warning::Empty);
    }
    stl
}

fn declared_count(bytes: &[u8]) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(80..84)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

pub(crate) fn starts_with_solid(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    bytes[start..].len() >= 5 && bytes[start..start + 5].eq_ignore_ascii_case(b"solid")
}

/// No control bytes other than whitespace in the first 4 KiB. Bytes above
/// 0x7f are allowed so that UTF-8 or Latin-1 solid names stay text.
pub(crate) fn looks_like_text(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(SAMPLE_LEN)];
    sample.iter().all(|&b| b >= 0x20 && b != 0x7f || matches!(b, b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
}

pub(crate) fn looks_like_obj(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(SAMPLE_LEN)];
    sample.split(|&b| b == b'\n' || b == b'\r').any(|line| {
        let line = line.trim_ascii_start();
        line.starts_with(b"v ") || line.starts_with(b"f ") || line.starts_with(b"vn ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube_binary(header: &[u8]) -> Vec<u8> {
        let facets = crate::testutil::cube_facets();
        binary::write_binary(header, facets.iter().map(|f| (f.normal, f.vertices)))
    }

    #[test]
    fn binary_with_solid_header_is_binary() {
        let bytes = cube_binary(b"solid cube exported by a tool that lies");
        let stl = parse(&bytes).expect("parses");
        assert_eq!(stl.format, StlFormat::Binary);
        assert_eq!(stl.facet_count(), 12);
        assert_eq!(stl.warnings, vec![Warning::BinarySolidHeader]);
    }

    #[test]
    fn trailing_bytes_are_ignored_with_a_warning() {
        let mut bytes = cube_binary(b"plain");
        bytes.extend_from_slice(b"\n\0\0");
        let stl = parse(&bytes).expect("parses");
        assert_eq!(stl.facet_count(), 12);
        assert_eq!(stl.warnings, vec![Warning::TrailingBytes { bytes: 3 }]);
    }

    #[test]
    fn count_larger_than_records_reads_the_records() {
        let mut bytes = cube_binary(b"plain");
        bytes[80..84].copy_from_slice(&1000u32.to_le_bytes());
        let stl = parse(&bytes).expect("parses");
        assert_eq!(stl.facet_count(), 12);
        assert_eq!(stl.warnings, vec![Warning::DeclaredCountMismatch { declared: 1000, records: 12 }]);
    }

    #[test]
    fn zeroed_count_with_records_reads_the_records() {
        let mut bytes = cube_binary(b"plain");
        bytes[80..84].copy_from_slice(&0u32.to_le_bytes());
        let stl = parse(&bytes).expect("parses");
        assert_eq!(stl.facet_count(), 12);
        assert_eq!(stl.warnings, vec![Warning::DeclaredCountMismatch { declared: 0, records: 12 }]);
    }

    #[test]
    fn truncated_inside_a_record_is_an_error_with_offsets() {
        let bytes = cube_binary(b"plain");
        let cut = &bytes[..84 + 50 * 5 + 17];
        let err = parse(cut).expect_err("must fail");
        assert_eq!(err, ParseError::Truncated { declared: 12, expected: 684, len: 84 + 250 + 17, facet: 5 });
        assert_eq!(err.code(), "truncated");
        assert!(err.to_string().contains("inside facet record 5"), "{err}");
    }

    #[test]
    fn huge_declared_count_on_a_short_file_is_truncation() {
        let mut bytes = cube_binary(b"plain");
        bytes[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes.truncate(84 + 50 * 3 + 1);
        assert!(matches!(parse(&bytes), Err(ParseError::Truncated { declared: u32::MAX, .. })));
    }

    #[test]
    fn empty_and_short_inputs() {
        assert_eq!(parse(b"").unwrap_err(), ParseError::TooShort { len: 0 });
        assert_eq!(parse(&[0u8; 83]).unwrap_err(), ParseError::TooShort { len: 83 });
        let zero = cube_binary(b"x");
        let stl = parse(&zero[..84]).unwrap_err();
        // 84 bytes declaring 12 facets: ends inside record 0.
        assert!(matches!(stl, ParseError::Truncated { facet: 0, .. }));
        let mut empty = zero[..84].to_vec();
        empty[80..84].copy_from_slice(&0u32.to_le_bytes());
        let stl = parse(&empty).expect("an 84-byte file with count 0 is a valid empty STL");
        assert_eq!(stl.facet_count(), 0);
        assert_eq!(stl.warnings, vec![Warning::Empty]);
    }

    #[test]
    fn other_formats_are_named() {
        assert_eq!(
            parse(b"PK\x03\x04 rest of a zip").unwrap_err(),
            ParseError::Unsupported { detected: "zip container (3MF)" }
        );
        assert_eq!(
            parse(b"# obj\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n").unwrap_err(),
            ParseError::Unsupported { detected: "Wavefront OBJ" }
        );
    }
}
