//! # Brief overview
//!
//! `strata-core` turns the bytes of a 3D model into an indexed triangle mesh
//! and says what is wrong with it. It does no network I/O, holds no global
//! state, spawns no async tasks, and never panics on input: every input
//! either loads (possibly with [`Warning`]s) or gives a [`ParseError`] that
//! names the byte offset or line and the reason.
//!
//! The path every upload takes:
//!
//! 1. [`ModelBytes`] maps or reads a file (or wraps bytes already in memory).
//! 2. [`stl::parse`] detects binary or ASCII STL without trusting the header
//!    and yields an [`stl::Stl`]: binary facets stay in the mapped bytes and
//!    are read in place; ASCII is parsed with `nom`.
//! 3. [`mesh::weld`] turns the triangle soup into an [`IndexedMesh`] (unique
//!    `glam::Vec3` vertices, `[u32; 3]` faces), in parallel with rayon.
//! 4. [`validate::validate`] measures it into a [`ValidationReport`]:
//!    volume, area, bodies, Euler number and every kind of defect.
//!
//! [`inspect`] runs all four for one model.

pub mod error;
pub mod format;
pub mod intersect;
pub mod mesh;
pub mod obj;
pub mod render;
pub mod repair;
pub mod slice;
pub mod source;
pub mod stl;
pub mod stream;
pub mod synth;
pub mod threemf;
pub mod validate;
mod warning;

pub use error::{Error, ParseError};
pub use mesh::{IndexedMesh, SoupStats, WeldOptions};
pub use repair::{RepairLog, RepairOptions, Repaired, repair};
pub use source::ModelBytes;
pub use validate::{ValidateOptions, ValidationReport};
pub use warning::Warning;

/// A model loaded, welded and validated.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `"ascii"`, `"binary"`, `"obj"` or `"3mf"`.
    pub format: &'static str,
    /// Everything the loader decided on the file's behalf.
    pub warnings: Vec<Warning>,
    /// The welded mesh.
    pub mesh: IndexedMesh,
    /// The validation report.
    pub report: ValidationReport,
}

/// Parses, welds and validates one model held in memory: STL (binary or
/// ASCII), Wavefront OBJ or 3MF, told apart by content ([`format::detect`]),
/// never by file name.
pub fn inspect(
    bytes: &[u8],
    weld: &WeldOptions,
    validate: &ValidateOptions,
) -> Result<Inspection, ParseError> {
    inspect_within(bytes, weld, validate, &threemf::Limits::default())
}

/// [`inspect`], a 3MF read within `limits` (the bytes its XML may inflate
/// to, the memory its mesh may take).
pub fn inspect_within(
    bytes: &[u8],
    weld: &WeldOptions,
    validate: &ValidateOptions,
    limits: &threemf::Limits,
) -> Result<Inspection, ParseError> {
    let (name, triangles) = match format::detect(bytes) {
        format::Format::Stl => {
            let stl = stl::parse(bytes)?;
            let (mesh, soup) = mesh::weld_stl(&stl, weld)?;
            return Ok(finish(stl.format.name(), stl.warnings, mesh, soup, validate));
        }
        format::Format::Obj => ("obj", obj::parse(bytes)?.mesh),
        format::Format::ThreeMf => ("3mf", threemf::parse_within(bytes, limits)?.mesh),
    };
    let (mesh, soup) = mesh::weld(&triangles, weld)?;
    let warnings = if triangles.triangles.is_empty() { vec![Warning::Empty] } else { Vec::new() };
    Ok(finish(name, warnings, mesh, soup, validate))
}

fn finish(
    format: &'static str,
    mut warnings: Vec<Warning>,
    mesh: IndexedMesh,
    soup: SoupStats,
    validate: &ValidateOptions,
) -> Inspection {
    if let Some(first) = soup.first_nonfinite {
        warnings.push(Warning::NonFiniteFacets { count: soup.nonfinite_facets, first });
    }
    let report = validate::validate(&mesh, &soup, validate);
    Inspection { format, warnings, mesh, report }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
pub(crate) mod testutil {
    pub(crate) use crate::synth::cube_facets;
}
