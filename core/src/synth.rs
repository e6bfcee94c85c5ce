//! Synthetic meshes for tests, benchmarks and fuzz seeds.
//!
//! Large inputs are generated rather than committed: a torus of any size
//! (closed, genus 1, so its Euler number is 0 and its volume is known in
//! closed form up to faceting), and midpoint subdivision of real models,
//! bit-compatible with `../shared/datasets/tools/make_large.py`.

use crate::stl::Facet;

/// The 12 facets of the cube `[0, 2]^3`, outward-facing, with normals.
pub fn cube_facets() -> Vec<Facet> {
    let quads: [([f32; 3], [[f32; 3]; 4]); 6] = [
        ([0.0, 0.0, -1.0], [[0., 0., 0.], [0., 2., 0.], [2., 2., 0.], [2., 0., 0.]]),
        ([0.0, 0.0, 1.0], [[0., 0., 2.], [2., 0., 2.], [2., 2., 2.], [0., 2., 2.]]),
        ([0.0, -1.0, 0.0], [[0., 0., 0.], [2., 0., 0.], [2., 0., 2.], [0., 0., 2.]]),
        ([0.0, 1.0, 0.0], [[0., 2., 0.], [0., 2., 2.], [2., 2., 2.], [2., 2., 0.]]),
        ([-1.0, 0.0, 0.0], [[0., 0., 0.], [0., 0., 2.], [0., 2., 2.], [0., 2., 0.]]),
        ([1.0, 0.0, 0.0], [[2., 0., 0.], [2., 2., 0.], [2., 2., 2.], [2., 0., 2.]]),
    ];
    quads
        .iter()
        .flat_map(|&(normal, [a, b, c, d])| {
            [Facet { normal, vertices: [a, b, c] }, Facet { normal, vertices: [a, c, d] }]
        })
        .collect()
}

/// A closed torus of `2 * rings * segments` outward-facing facets, major
/// radius 10 and minor radius 3, centred on the origin. Each grid point is
/// computed once, so shared corners are bit-identical and weld exactly.
pub fn torus(rings: usize, segments: usize) -> Vec<Facet> {
    let (rings, segments) = (rings.max(3), segments.max(3));
    let point = |i: usize, j: usize| -> [f32; 3] {
        let u = (i % rings) as f64 / rings as f64 * std::f64::consts::TAU;
        let v = (j % segments) as f64 / segments as f64 * std::f64::consts::TAU;
        let r = 10.0 + 3.0 * v.cos();
        [(r * u.cos()) as f32, (r * u.sin()) as f32, (3.0 * v.sin()) as f32]
    };
    let grid: Vec<[f32; 3]> =
        (0..rings).flat_map(|i| (0..segments).map(move |j| (i, j))).map(|(i, j)| point(i, j)).collect();
    let at = |i: usize, j: usize| grid[(i % rings) * segments + (j % segments)];
    let mut out = Vec::with_capacity(2 * rings * segments);
    for i in 0..rings {
        for j in 0..segments {
            let (a, b, c, d) = (at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1));
            out.push(Facet { normal: [0.0; 3], vertices: [a, b, c] });
            out.push(Facet { normal: [0.0; 3], vertices: [a, c, d] });
        }
    }
    out
}

/// Midpoint subdivision, 1 -> 4 facets per level, exactly as the dataset's
/// `make_large.py`: midpoints in f64 from f32, rounded to f32, so facets
/// sharing an edge get bit-identical midpoints and topology is preserved.
pub fn subdivide(facets: &[Facet], levels: u32) -> Vec<Facet> {
    let mut cur = facets.to_vec();
    for _ in 0..levels {
        let mid = |p: [f32; 3], q: [f32; 3]| -> [f32; 3] {
            std::array::from_fn(|k| ((f64::from(p[k]) + f64::from(q[k])) / 2.0) as f32)
        };
        let mut next = Vec::with_capacity(cur.len() * 4);
        for f in &cur {
            let [a, b, c] = f.vertices;
            let (ab, bc, ca) = (mid(a, b), mid(b, c), mid(c, a));
            for vertices in [[a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca]] {
                next.push(Facet { normal: f.normal, vertices });
            }
        }
        cur = next;
    }
    cur
}

/// Binary STL bytes for `facets`.
pub fn to_binary_stl(header: &str, facets: &[Facet]) -> Vec<u8> {
    crate::stl::binary::write_binary(header.as_bytes(), facets.iter().map(|f| (f.normal, f.vertices)))
}

/// ASCII STL text for `facets` (shortest round-trip float formatting).
pub fn to_ascii_stl(name: &str, facets: &[Facet]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(facets.len() * 200 + 64);
    let _ = writeln!(s, "solid {name}");
    for f in facets {
        let [nx, ny, nz] = f.normal;
        let _ = writeln!(s, "  facet normal {nx:e} {ny:e} {nz:e}\n    outer loop");
        for [x, y, z] in f.vertices {
            let _ = writeln!(s, "      vertex {x:e} {y:e} {z:e}");
        }
        s.push_str("    endloop\n  endfacet\n");
    }
    let _ = writeln!(s, "endsolid {name}");
    s
}

/// What [`damage`] did, for checking a repair against the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Faces deleted (each leaves a 3-edge hole; no two are neighbours).
    pub holes: usize,
    /// Faces whose winding was reversed.
    pub flipped: usize,
    /// Extra copies of faces appended.
    pub duplicates: usize,
    /// Collapsed faces (a repeated vertex) appended.
    pub degenerate: usize,
}

/// Damages a closed mesh on purpose, deterministically: `per_kind` faces
/// each deleted, flipped, duplicated, and collapsed copies appended, spread
/// over the mesh at fixed prime strides so no two holes touch. A perfect
/// repair gives back the original face count and volume exactly.
pub fn damage(facets: &[Facet], per_kind: usize) -> (Vec<Facet>, Damage) {
    let n = facets.len();
    if n < 8 * per_kind || per_kind == 0 {
        return (facets.to_vec(), Damage { holes: 0, flipped: 0, duplicates: 0, degenerate: 0 });
    }
    let stride = (n / per_kind).max(2);
    // Holes at even indices along one stride, flips and copies at odd
    // offsets of it: never the same face, never two holes side by side.
    let hole = |i: usize| i.is_multiple_of(stride) && i / stride < per_kind;
    let flip = |i: usize| i % stride == stride / 2 + 1 && i / stride < per_kind;
    let mut out: Vec<Facet> = Vec::with_capacity(n + 2 * per_kind);
    for (i, f) in facets.iter().enumerate() {
        if hole(i) {
            continue;
        }
        let mut f = *f;
        if flip(i) {
            f.vertices.swap(1, 2);
        }
        out.push(f);
    }
    for k in 0..per_kind {
        let i = k * stride + stride / 3 + 1;
        out.push(facets[i]);
        let [a, b, _] = facets[i + 1].vertices;
        out.push(Facet { normal: [0.0; 3], vertices: [a, a, b] });
    }
    (out, Damage { holes: per_kind, flipped: per_kind, duplicates: per_kind, degenerate: per_kind })
}
