//! Problems that do not stop a model from loading but that a person should
//! hear about: the parser decided something on the user's behalf.

use serde::ser::SerializeStruct;

/// A decision the loader took on a file that was not quite well formed.
///
/// Serialised as `{"code": ..., "message": ...}`, the same shape as errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A binary STL whose 80-byte header starts with `solid`, which naive
    /// readers mistake for ASCII; the size (`84 + 50 * n`) decided.
    BinarySolidHeader,
    /// Bytes after the last facet record of a binary STL; they were ignored.
    TrailingBytes {
        /// How many bytes.
        bytes: u64,
    },
    /// The header's facet count is larger than the whole records the file
    /// holds; the records present were read.
    DeclaredCountMismatch {
        /// Count from the header.
        declared: u32,
        /// Whole 50-byte records in the file.
        records: u64,
    },
    /// Facets with a NaN or infinite coordinate; they were left out of the mesh.
    NonFiniteFacets {
        /// How many facets.
        count: u64,
        /// Index of the first one in the file.
        first: u64,
    },
    /// ASCII STL that ends without `endsolid`.
    MissingEndsolid,
    /// Text after the last `endsolid` that is not another solid; ignored.
    TrailingText {
        /// 1-based line where it starts.
        line: u64,
    },
    /// The file holds no facets at all.
    Empty,
}

impl Warning {
    /// Stable identifier, e.g. `"trailing_bytes"`.
    pub fn code(&self) -> &'static str {
        match self {
            Warning::BinarySolidHeader => "binary_solid_header",
            Warning::TrailingBytes { .. } => "trailing_bytes",
            Warning::DeclaredCountMismatch { .. } => "declared_count_mismatch",
            Warning::NonFiniteFacets { .. } => "non_finite_facets",
            Warning::MissingEndsolid => "missing_endsolid",
            Warning::TrailingText { .. } => "trailing_text",
            Warning::Empty => "empty",
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::BinarySolidHeader => f.write_str(
                "binary STL whose header starts with 'solid'; read as binary because its size is 84 + 50 x facets",
            ),
            Warning::TrailingBytes { bytes } => {
                write!(f, "{bytes} bytes after the last facet record were ignored")
            }
            Warning::DeclaredCountMismatch { declared, records } => write!(
                f,
                "header declares {declared} facets but the file holds {records} whole records; read {records}"
            ),
            Warning::NonFiniteFacets { count, first } => write!(
                f,
                "{count} facets with NaN or infinite coordinates (first: facet {first}) were left out of the mesh"
            ),
            Warning::MissingEndsolid => f.write_str("ASCII STL ends without 'endsolid'"),
            Warning::TrailingText { line } => {
                write!(f, "text after the last 'endsolid' (from line {line}) was ignored")
            }
            Warning::Empty => f.write_str("the file holds no facets"),
        }
    }
}

impl serde::Serialize for Warning {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Warning", 2)?;
        st.serialize_field("code", self.code())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}
