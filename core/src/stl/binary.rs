//! Binary STL as a borrowed view over the file's bytes.
//!
//! Layout: an 80-byte header, a little-endian `u32` facet count, then one
//! 50-byte record per facet (normal, three vertices, each three `f32`, and a
//! `u16` attribute word). Records start at offset 84, so they are not 4-byte
//! aligned: [`RawFacet`] is made of byte arrays (alignment 1), which lets
//! `bytemuck` view any byte slice as records without copying, and makes the
//! float decoding explicit little-endian on every host.

use bytemuck::{Pod, Zeroable};

use super::FacetSource;

/// Header length in bytes.
pub const HEADER_LEN: usize = 80;
/// Offset of the first facet record.
pub const RECORDS_START: usize = 84;
/// Size of one facet record.
pub const RECORD_LEN: usize = 50;

type F32Bytes = [u8; 4];

/// One binary STL facet record exactly as it lies in the file.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct RawFacet {
    normal: [F32Bytes; 3],
    vertices: [[F32Bytes; 3]; 3],
    attribute: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<RawFacet>() == RECORD_LEN);
const _: () = assert!(std::mem::align_of::<RawFacet>() == 1);

#[inline(always)]
fn vec3(v: &[F32Bytes; 3]) -> [f32; 3] {
    [f32::from_le_bytes(v[0]), f32::from_le_bytes(v[1]), f32::from_le_bytes(v[2])]
}

impl RawFacet {
    /// The stored normal (often zero: many exporters leave it out).
    #[inline]
    pub fn normal(&self) -> [f32; 3] {
        vec3(&self.normal)
    }

    /// The three vertices in file order.
    #[inline(always)]
    pub fn vertices(&self) -> [[f32; 3]; 3] {
        [vec3(&self.vertices[0]), vec3(&self.vertices[1]), vec3(&self.vertices[2])]
    }

    /// The attribute word (a colour in some Magics/VisCAM files).
    #[inline]
    pub fn attribute(&self) -> u16 {
        u16::from_le_bytes(self.attribute)
    }
}

impl std::fmt::Debug for RawFacet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFacet")
            .field("normal", &self.normal())
            .field("vertices", &self.vertices())
            .field("attribute", &self.attribute())
            .finish()
    }
}

/// Views `bytes` as facet records. `bytes.len()` must be a multiple of 50.
pub(crate) fn records(bytes: &[u8]) -> &[RawFacet] {
    bytemuck::cast_slice(bytes)
}

impl FacetSource for [RawFacet] {
    #[inline]
    fn facet_count(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn vertices(&self, i: usize) -> [[f32; 3]; 3] {
        self[i].vertices()
    }

    #[inline]
    fn normal(&self, i: usize) -> [f32; 3] {
        self[i].normal()
    }
}

/// Serialises facets as a binary STL: the writer the tests, benches and
/// (later) repair use. `header` is cut or padded to 80 bytes.
pub fn write_binary(
    header: &[u8],
    facets: impl ExactSizeIterator<Item = ([f32; 3], [[f32; 3]; 3])>,
) -> Vec<u8> {
    let n = facets.len();
    let mut out = Vec::with_capacity(RECORDS_START + RECORD_LEN * n);
    let mut head = [b' '; HEADER_LEN];
    let take = header.len().min(HEADER_LEN);
    head[..take].copy_from_slice(&header[..take]);
    out.extend_from_slice(&head);
    let count = u32::try_from(n).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (normal, vertices) in facets.take(count as usize) {
        for c in normal {
            out.extend_from_slice(&c.to_le_bytes());
        }
        for v in vertices {
            for c in v {
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out.extend_from_slice(&[0, 0]);
    }
    out
}
