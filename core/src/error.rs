//! Error types of `strata-core`, one enum per operation family plus the
//! umbrella [`Error`] that adds the file the failure belongs to.
//!
//! Every variant carries enough to point a person at the problem (a byte
//! offset, a line number, a count) and a stable machine-readable
//! [`code`](ParseError::code) that the CLI and the server put into their JSON
//! errors, so partners can branch on it without parsing prose.

use std::path::PathBuf;

/// Why bytes could not be read as a model.
///
/// Parsing either succeeds (possibly with [`Warning`](crate::Warning)s) or
/// fails with one of these; it never panics and never allocates from a count
/// that the file itself declares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than the 84 bytes a binary STL needs, and not ASCII STL either.
    ///
    /// # How to fix
    /// The file is empty or cut off before its header ends; export it again.
    #[error("file is {len} bytes: too short for a binary STL (84-byte minimum) and not ASCII STL")]
    TooShort {
        /// The file's length in bytes.
        len: u64,
    },

    /// A binary STL that ends inside a facet record.
    ///
    /// # How to fix
    /// The upload or download was interrupted; transfer the file again.
    #[error(
        "binary STL truncated: header declares {declared} facets ({expected} bytes) \
         but the file ends at byte {len}, inside facet record {facet}"
    )]
    Truncated {
        /// Facet count written in the header.
        declared: u32,
        /// File size the header implies, `84 + 50 * declared`.
        expected: u64,
        /// Actual file size.
        len: u64,
        /// Index of the incomplete facet record.
        facet: u64,
    },

    /// ASCII STL whose text does not follow the grammar.
    ///
    /// # How to fix
    /// The message names the line; usually an exporter wrote a bad number
    /// (`vertex 0 0 blah`) or the file was cut off mid-facet.
    #[error("line {line}: {reason}")]
    AsciiSyntax {
        /// 1-based line number (CR, LF and CRLF all end a line).
        line: u64,
        /// Byte offset of the problem from the start of the file.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },

    /// A line of a text format (OBJ) that breaks its grammar.
    ///
    /// # How to fix
    /// The message names the line: usually a bad number or a face that
    /// points at a vertex the file never defined.
    #[error("{format} line {line}: {reason}")]
    Syntax {
        /// The format, e.g. `"OBJ"`.
        format: &'static str,
        /// 1-based line number.
        line: u64,
        /// Byte offset of the start of that line.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A container format (3MF) whose package or model is broken or unsafe.
    ///
    /// # How to fix
    /// The message says what: an unreadable zip, a model part over the size
    /// limit (a zip bomb), a reference to a missing object, a bad number.
    #[error("{format}: {reason}")]
    Container {
        /// The format, e.g. `"3MF"`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// More facets than one mesh can index with 32-bit vertex ids.
    #[error("{facets} facets is more than one mesh can index with 32-bit ids")]
    TooLarge {
        /// Facets in the file.
        facets: u64,
    },

    /// The mesh the file builds would take more memory than the job may
    /// spend on it (a few bytes of 3MF can name one object a million times).
    ///
    /// # How to fix
    /// Split the model, or raise the job's memory limit (`max_model_memory_mib`).
    #[error("the mesh would take {bytes} bytes or more, over the job's {limit}-byte memory limit")]
    OverBudget {
        /// Bytes counted when the limit was passed.
        bytes: u64,
        /// The limit.
        limit: u64,
    },

    /// A format Strata recognises but cannot read yet, or no known format.
    #[error("{detected}: not a format Strata reads (STL, OBJ and 3MF are)")]
    Unsupported {
        /// What the bytes look like.
        detected: &'static str,
    },
}

impl ParseError {
    /// Stable identifier for APIs and scripts, e.g. `"truncated"`.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::TooShort { .. } => "too_short",
            ParseError::Truncated { .. } => "truncated",
            ParseError::AsciiSyntax { .. } => "ascii_syntax",
            ParseError::Syntax { format: "OBJ", .. } => "obj_syntax",
            ParseError::Syntax { .. } => "syntax",
            ParseError::Container { .. } => "bad_container",
            ParseError::TooLarge { .. } => "too_large",
            ParseError::OverBudget { .. } => "memory_limit",
            ParseError::Unsupported { .. } => "unsupported_format",
        }
    }
}

/// Any failure of `strata-core`, tied to the file it happened to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, mapped or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a model Strata can parse.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why it could not be parsed.
        #[source]
        source: ParseError,
    },
}

impl Error {
    /// Stable identifier, as [`ParseError::code`], with `"io"` for I/O.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Parse { source, .. } => source.code(),
        }
    }

    /// The reason without the file name (for reports that carry the name
    /// in a field of their own).
    pub fn reason(&self) -> String {
        match self {
            Error::Io { source, .. } => source.to_string(),
            Error::Parse { source, .. } => source.to_string(),
        }
    }
}
