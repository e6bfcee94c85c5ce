//! Which reader a model's bytes need, decided from the content alone (a
//! file name can lie as easily as an STL header).
//!
//! The rules are the ones [`crate::stl::parse`] documents, in the same order:
//! a binary STL whose size is exactly `84 + 50 * count` wins (its header may
//! say anything, even `PK` or `v 0 0 0`); then a zip container is 3MF; then
//! text that does not start with `solid` but has OBJ `v`/`f` lines is OBJ;
//! everything else goes to the STL parser, which names what is wrong.

use crate::stl;

/// A model format Strata reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Binary or ASCII STL (or bytes only the STL parser can explain).
    Stl,
    /// Wavefront OBJ text.
    Obj,
    /// A 3MF zip package.
    ThreeMf,
}

/// The format of `bytes`.
pub fn detect(bytes: &[u8]) -> Format {
    let text = stl::looks_like_text(bytes);
    if stl::exact_binary(bytes, text).is_some() {
        Format::Stl
    } else if stl::is_zip(bytes) {
        Format::ThreeMf
    } else if text && !stl::starts_with_solid(bytes) && stl::looks_like_obj(bytes) {
        Format::Obj
    } else {
        Format::Stl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides() {
        let cube = crate::synth::to_binary_stl("PK\x03\x04 v 0 0 0", &crate::synth::cube_facets());
        assert_eq!(detect(&cube), Format::Stl, "an exact-size binary STL wins over its header");
        assert_eq!(detect(b"PK\x03\x04 anything"), Format::ThreeMf);
        assert_eq!(detect(b"# obj\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"), Format::Obj);
        assert_eq!(detect(b"solid x\nendsolid x\n"), Format::Stl);
        assert_eq!(detect(b""), Format::Stl);
        assert_eq!(detect(b"hello"), Format::Stl, "the STL parser names what is wrong");
    }
}
