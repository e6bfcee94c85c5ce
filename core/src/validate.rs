//! Validation: what is wrong with a mesh, as data.
//!
//! [`validate`] never fails: a broken mesh is exactly what it is for. It
//! returns a [`ValidationReport`] whose fields follow the definitions of the
//! independent reference tools in `datasets/MANIFEST.tsv`, so the numbers
//! can be checked against them:
//!
//! - a face is *collapsed* when two of its vertex ids are equal; collapsed
//!   faces have no edges and belong to no body;
//! - a face is *degenerate* when it is collapsed or its area is exactly 0
//!   in `f64` (collinear vertices);
//! - edges are undirected pairs of vertex ids of the non-collapsed faces; an
//!   edge used once is a *boundary* edge, by more than two faces
//!   *non-manifold*, and by two faces that traverse it in the same direction
//!   *misoriented* (one of them is flipped);
//! - *duplicate faces* are extra copies of a face on the same three vertices,
//!   in either orientation;
//! - *bodies* are groups of faces connected through shared edges (any
//!   number of faces per edge);
//! - *watertight* means at least one face and every edge used exactly twice;
//!   *winding-consistent* means no misoriented edge; a *valid volume* is
//!   watertight, winding-consistent and encloses a positive volume.
//!
//! # Memory
//!
//! Edge analysis buckets half-edges by their lower vertex id, one range of
//! vertex ids at a time, so the scratch space is a fixed fraction of the
//! mesh rather than a table of every edge. Ranges run in parallel and share
//! a lock-free union-find over faces for the bodies.

use std::sync::atomic::{AtomicU32, Ordering};

use glam::Vec3;
use rayon::prelude::*;
use serde::Serialize;

use crate::mesh::{IndexedMesh, SoupStats};

/// Everything validation measured about one mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValidationReport {
    /// Facets in the source file (including any left out as non-finite).
    pub triangles: u64,
    /// Faces in the indexed mesh.
    pub faces: u64,
    /// Unique vertices after welding.
    pub vertices: u64,
    /// Lower corner of the axis-aligned bounding box (`None` when empty).
    pub bbox_min: Option<[f32; 3]>,
    /// Upper corner of the axis-aligned bounding box.
    pub bbox_max: Option<[f32; 3]>,
    /// Surface area, every face counted.
    pub area: f64,
    /// Signed enclosed volume; negative when the surface is inside out.
    pub volume: f64,
    /// Every edge used by exactly two faces.
    pub watertight: bool,
    /// No edge traversed twice in the same direction.
    pub winding_consistent: bool,
    /// Watertight, winding-consistent and with positive volume.
    pub is_volume: bool,
    /// Vertices used by faces, minus edges, plus faces (2 for a sphere).
    pub euler_number: i64,
    /// Edge-connected groups of faces.
    pub bodies: u64,
    /// Distinct undirected edges.
    pub edges: u64,
    /// Edges used by one face (the rims of holes).
    pub boundary_edges: u64,
    /// Edges used by more than two faces.
    pub nonmanifold_edges: u64,
    /// Edges whose two faces disagree on orientation.
    pub misoriented_edges: u64,
    /// Collapsed or zero-area faces.
    pub degenerate_faces: u64,
    /// Extra copies of faces on the same three vertices.
    pub duplicate_faces: u64,
    /// Stored normals more than 45 degrees from the winding's normal.
    pub normal_mismatches: u64,
    /// Stored normals that are zero (harmless, reported for completeness).
    pub zero_normals: u64,
    /// Facets left out because of NaN or infinite coordinates.
    pub nonfinite_facets: u64,
    /// Pairs of faces that cross each other, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_intersections: Option<u64>,
}

/// What [`validate`] should compute beyond the always-on checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Count self-intersecting face pairs (costly: a BVH query per face).
    pub self_intersections: bool,
}

/// Validates a mesh; `soup` carries what welding saw in the source file.
pub fn validate(mesh: &IndexedMesh, soup: &SoupStats, options: &ValidateOptions) -> ValidationReport {
    let bbox = bounding_box(&mesh.vertices);
    let ((sums, used), edges) =
        rayon::join(|| rayon::join(|| face_sums(mesh), || used_vertices(mesh)), || edge_stats(mesh));
    let nonempty = edges.good_faces > 0;
    let watertight = nonempty && edges.boundary == 0 && edges.nonmanifold == 0;
    let winding_consistent = nonempty && edges.misoriented == 0;
    ValidationReport {
        triangles: soup.facets,
        faces: mesh.faces.len() as u64,
        vertices: mesh.vertices.len() as u64,
        bbox_min: bbox.map(|b| b.0.to_array()),
        bbox_max: bbox.map(|b| b.1.to_array()),
        area: sums.area,
        volume: sums.volume,
        watertight,
        winding_consistent,
        is_volume: watertight && winding_consistent && sums.volume > 0.0,
        euler_number: used as i64 - edges.edges as i64 + edges.good_faces as i64,
        bodies: edges.bodies,
        edges: edges.edges,
        boundary_edges: edges.boundary,
        nonmanifold_edges: edges.nonmanifold,
        misoriented_edges: edges.misoriented,
        degenerate_faces: sums.degenerate,
        duplicate_faces: edges.duplicate_faces,
        normal_mismatches: soup.normal_mismatches,
        zero_normals: soup.zero_normals,
        nonfinite_facets: soup.nonfinite_facets,
        self_intersections: options
            .self_intersections
            .then(|| crate::intersect::count_self_intersections(mesh)),
    }
}

fn bounding_box(vertices: &[Vec3]) -> Option<(Vec3, Vec3)> {
    if vertices.is_empty() {
        return None;
    }
    let empty = || (Vec3::INFINITY, Vec3::NEG_INFINITY);
    let bounds = vertices
        .par_chunks(1 << 14)
        .map(|c| c.iter().fold(empty(), |(lo, hi), v| (lo.min(*v), hi.max(*v))))
        .reduce(empty, |a, b| (a.0.min(b.0), a.1.max(b.1)));
    Some(bounds)
}

#[derive(Debug, Default, Clone, Copy)]
struct FaceSums {
    area: f64,
    volume: f64,
    degenerate: u64,
}

/// Area, signed volume and degenerate faces, summed per fixed chunk and
/// then in order, so the result does not depend on the thread count.
///
/// The volume is the flux of the field `(x, 0, 0)` through the surface
/// (divergence theorem), the form trimesh uses. For a closed, consistently
/// wound mesh every such form gives the same, translation-invariant number;
/// for an open or inconsistent one the forms differ, and this one makes our
/// figure comparable with the reference tools'.
fn face_sums(mesh: &IndexedMesh) -> FaceSums {
    let parts: Vec<FaceSums> = mesh
        .faces
        .par_chunks(4096)
        .map(|chunk| {
            let mut s = FaceSums::default();
            for f in chunk {
                let [a, b, c] = f.map(|i| mesh.vertices[i as usize].as_dvec3());
                let cross = (b - a).cross(c - a);
                // Same formula as the reference (sqrt of the sum of squares
                // in f64), so "area exactly zero" means the same thing.
                let area = 0.5 * cross.length();
                s.area += area;
                s.volume += cross.x * (a.x + b.x + c.x) / 6.0;
                if is_collapsed(f) || area == 0.0 {
                    s.degenerate += 1;
                }
            }
            s
        })
        .collect();
    parts.iter().fold(FaceSums::default(), |acc, p| FaceSums {
        area: acc.area + p.area,
        volume: acc.volume + p.volume,
        degenerate: acc.degenerate + p.degenerate,
    })
}

#[inline(always)]
fn is_collapsed(f: &[u32; 3]) -> bool {
    f[0] == f[1] || f[1] == f[2] || f[0] == f[2]
}

/// Vertices referenced by at least one non-collapsed face.
fn used_vertices(mesh: &IndexedMesh) -> u64 {
    let mut bits = vec![0u64; mesh.vertices.len().div_ceil(64)];
    for f in mesh.faces.iter().filter(|f| !is_collapsed(f)) {
        for &v in f {
            bits[v as usize / 64] |= 1 << (v % 64);
        }
    }
    bits.iter().map(|w| u64::from(w.count_ones())).sum()
}

#[derive(Debug, Default, Clone, Copy)]
struct EdgeStats {
    good_faces: u64,
    edges: u64,
    boundary: u64,
    nonmanifold: u64,
    misoriented: u64,
    duplicate_faces: u64,
    bodies: u64,
}

impl std::ops::AddAssign for EdgeStats {
    fn add_assign(&mut self, o: EdgeStats) {
        self.good_faces += o.good_faces;
        self.edges += o.edges;
        self.boundary += o.boundary;
        self.nonmanifold += o.nonmanifold;
        self.misoriented += o.misoriented;
        self.duplicate_faces += o.duplicate_faces;
        self.bodies += o.bodies;
    }
}

/// A half-edge filed under its lower vertex.
#[derive(Clone, Copy, Default)]
struct HalfEdge {
    /// The higher vertex of the edge.
    hi: u32,
    /// The face's third vertex (finds duplicate faces).
    third: u32,
    /// Face index, with bit 31 set when the face runs lo -> hi.
    face_dir: u32,
}

const DIR: u32 = 1 << 31;
/// Faces per block. Each block records which passes (ranges of vertex
/// ids) its half-edges fall into, so a pass reads only the blocks that can
/// contribute: vertex ids follow first occurrence, so most blocks touch
/// one or two passes even when a few of their faces reach far back.
const BLOCK: usize = 256;
/// At most one bit per pass in a block's mask.
const MAX_PASSES: usize = 64;

fn edge_stats(mesh: &IndexedMesh) -> EdgeStats {
    let faces = &mesh.faces;
    let nv = mesh.vertices.len();
    if faces.is_empty() || nv == 0 {
        return EdgeStats::default();
    }
    // Scratch per pass: about 1/20 of the half-edges, 12 bytes each, so two
    // workers plus the union-find stay within half the mesh's own size.
    let half_edges = faces.len() * 3;
    let passes = half_edges.div_ceil((half_edges / 20).max(1 << 16)).clamp(1, MAX_PASSES);
    let width = nv.div_ceil(passes);
    let masks: Vec<u64> = faces
        .par_chunks(BLOCK)
        .map(|block| {
            let mut mask = 0u64;
            for f in block.iter().filter(|f| !is_collapsed(f)) {
                for (x, y) in [(f[0], f[1]), (f[1], f[2]), (f[2], f[0])] {
                    mask |= 1 << (x.min(y) as usize / width);
                }
            }
            mask
        })
        .collect();
    let parent: Vec<AtomicU32> = (0..faces.len() as u32).map(AtomicU32::new).collect();

    let mut total = (0..passes)
        .into_par_iter()
        .with_max_len(1)
        .map_init(PassScratch::default, |scratch, p| {
            let lo = (p * width).min(nv) as u32;
            let hi = ((p + 1) * width).min(nv) as u32;
            scratch.blocks.clear();
            scratch.blocks.extend((0..masks.len()).filter(|&b| masks[b] & (1 << p) != 0));
            edge_pass(faces, lo, hi, &parent, scratch)
        })
        .reduce(EdgeStats::default, |mut a, b| {
            a += b;
            a
        });
    total.good_faces = faces.par_iter().filter(|f| !is_collapsed(f)).count() as u64;
    total.bodies = (0..faces.len())
        .into_par_iter()
        .filter(|&f| !is_collapsed(&faces[f]) && parent[f].load(Ordering::Relaxed) == f as u32)
        .count() as u64;
    total
}

/// Calls `visit(lo, half_edge)` for every half-edge of a non-collapsed face
/// of the given blocks whose lower vertex lies in `lo..hi`.
#[inline(always)]
fn for_each_half_edge(
    faces: &[[u32; 3]],
    blocks: &[usize],
    lo: u32,
    hi: u32,
    mut visit: impl FnMut(u32, HalfEdge),
) {
    for &b in blocks {
        let start = b * BLOCK;
        let end = (start + BLOCK).min(faces.len());
        for (k, f) in faces[start..end].iter().enumerate() {
            if is_collapsed(f) {
                continue;
            }
            let face = (start + k) as u32;
            for (x, y, z) in [(f[0], f[1], f[2]), (f[1], f[2], f[0]), (f[2], f[0], f[1])] {
                let (l, h, dir) = if x < y { (x, y, DIR) } else { (y, x, 0) };
                if l >= lo && l < hi {
                    visit(l, HalfEdge { hi: h, third: z, face_dir: face | dir });
                }
            }
        }
    }
}

/// Buffers one rayon worker reuses from pass to pass: allocating them per
/// pass cost a page fault per 4 KiB, which showed up as a quarter of the
/// validation time.
#[derive(Default)]
struct PassScratch {
    blocks: Vec<usize>,
    start: Vec<u32>,
    cursor: Vec<u32>,
    entries: Vec<HalfEdge>,
}

fn edge_pass(
    faces: &[[u32; 3]],
    lo: u32,
    hi: u32,
    parent: &[AtomicU32],
    scratch: &mut PassScratch,
) -> EdgeStats {
    let PassScratch { blocks, start, cursor, entries } = scratch;
    let width = (hi - lo) as usize;
    start.clear();
    start.resize(width + 1, 0);
    for_each_half_edge(faces, blocks, lo, hi, |l, _| start[(l - lo) as usize + 1] += 1);
    for i in 0..width {
        start[i + 1] += start[i];
    }
    cursor.clear();
    cursor.extend_from_slice(&start[..width]);
    entries.clear();
    entries.resize(start[width] as usize, HalfEdge::default());
    for_each_half_edge(faces, blocks, lo, hi, |l, e| {
        let slot = &mut cursor[(l - lo) as usize];
        entries[*slot as usize] = e;
        *slot += 1;
    });

    let mut stats = EdgeStats::default();
    for v in 0..width {
        let bucket = &mut entries[start[v] as usize..start[v + 1] as usize];
        if bucket.len() > 1 {
            bucket.sort_unstable_by_key(|e| (u64::from(e.hi) << 32) | u64::from(e.third));
        }
        for run in bucket.chunk_by(|a, b| a.hi == b.hi) {
            stats.edges += 1;
            match run.len() {
                1 => stats.boundary += 1,
                2 => {
                    if (run[0].face_dir ^ run[1].face_dir) & DIR == 0 {
                        stats.misoriented += 1;
                    }
                }
                _ => stats.nonmanifold += 1,
            }
            let first = run[0].face_dir & !DIR;
            for e in &run[1..] {
                union(parent, first, e.face_dir & !DIR);
            }
            // Each face is counted on its (lowest, middle) edge only, where
            // its third vertex is above `hi`; the run is sorted by third.
            let hi_v = run[0].hi;
            stats.duplicate_faces +=
                run.windows(2).filter(|w| w[0].third > hi_v && w[0].third == w[1].third).count() as u64;
        }
    }
    stats
}

fn find(parent: &[AtomicU32], mut x: u32) -> u32 {
    loop {
        let p = parent[x as usize].load(Ordering::Relaxed);
        if p == x {
            return x;
        }
        let gp = parent[p as usize].load(Ordering::Relaxed);
        if gp != p {
            // Path halving; losing this race only costs a longer path.
            let _ = parent[x as usize].compare_exchange_weak(p, gp, Ordering::Relaxed, Ordering::Relaxed);
        }
        x = gp;
    }
}

/// Lock-free union: the larger root is linked under the smaller one with a
/// compare-and-swap, retried if another thread moved it meanwhile. Parents
/// only ever decrease, so every path ends at a root.
fn union(parent: &[AtomicU32], a: u32, b: u32) {
    let (mut a, mut b) = (a, b);
    loop {
        a = find(parent, a);
        b = find(parent, b);
        if a == b {
            return;
        }
        let (small, large) = if a < b { (a, b) } else { (b, a) };
        if parent[large as usize].compare_exchange(large, small, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{WeldOptions, weld};
    use crate::stl::Facet;

    fn report(facets: &[Facet]) -> ValidationReport {
        let (mesh, soup) = weld(facets, &WeldOptions::default()).expect("welds");
        validate(&mesh, &soup, &ValidateOptions::default())
    }

    #[test]
    fn unit_cube_is_a_valid_volume() {
        let r = report(&crate::testutil::cube_facets());
        assert_eq!((r.triangles, r.vertices, r.edges), (12, 8, 18));
        assert!(r.watertight && r.winding_consistent && r.is_volume);
        assert_eq!((r.euler_number, r.bodies), (2, 1));
        assert!((r.volume - 8.0).abs() < 1e-12, "{}", r.volume);
        assert!((r.area - 24.0).abs() < 1e-12);
        assert_eq!(r.bbox_min, Some([0.0; 3]));
        assert_eq!(r.bbox_max, Some([2.0; 3]));
        assert_eq!(r.normal_mismatches, 0);
    }

    #[test]
    fn flipped_face_hole_duplicate_and_degenerate_are_counted() {
        let base = crate::testutil::cube_facets();

        let mut flipped = base.clone();
        flipped[0].vertices.swap(1, 2);
        let r = report(&flipped);
        assert_eq!(r.misoriented_edges, 3);
        assert!(r.watertight && !r.winding_consistent && !r.is_volume);
        assert_eq!(r.normal_mismatches, 1);

        let r = report(&base[1..]);
        assert_eq!((r.boundary_edges, r.watertight, r.euler_number), (3, false, 1));

        let mut dup = base.clone();
        let mut copy = base[4];
        copy.vertices.swap(0, 1);
        dup.push(copy);
        let r = report(&dup);
        assert_eq!((r.duplicate_faces, r.nonmanifold_edges), (1, 3));

        let mut degenerate = base.clone();
        let [a, b, _] = base[0].vertices;
        let mid = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0, (a[2] + b[2]) / 2.0];
        degenerate.push(Facet { normal: [0.0; 3], vertices: [a, b, a] });
        degenerate.push(Facet { normal: [0.0; 3], vertices: [a, mid, b] });
        let r = report(&degenerate);
        assert_eq!(r.degenerate_faces, 2);
    }

    #[test]
    fn inside_out_cube_has_negative_volume_and_is_not_a_volume() {
        let mut f = crate::testutil::cube_facets();
        for facet in &mut f {
            facet.vertices.swap(1, 2);
        }
        let r = report(&f);
        assert!(r.watertight && r.winding_consistent && !r.is_volume);
        assert!((r.volume + 8.0).abs() < 1e-12);
    }

    #[test]
    fn two_cubes_touching_on_an_edge_are_one_body_with_a_nonmanifold_edge() {
        let mut f = crate::testutil::cube_facets();
        let offset = [2.0, 2.0, 0.0];
        f.extend(crate::testutil::cube_facets().iter().map(|c| Facet {
            normal: c.normal,
            vertices: c.vertices.map(|v| [v[0] + offset[0], v[1] + offset[1], v[2] + offset[2]]),
        }));
        let r = report(&f);
        assert_eq!((r.nonmanifold_edges, r.bodies), (1, 1));
    }

    #[test]
    fn empty_mesh() {
        let r = report(&[]);
        assert_eq!((r.triangles, r.vertices, r.bodies, r.euler_number), (0, 0, 0, 0));
        assert!(!r.watertight && !r.winding_consistent && !r.is_volume);
        assert_eq!(r.bbox_min, None);
    }

    #[test]
    fn many_passes_agree_with_one() {
        // A grid big enough to need several edge passes; every interior
        // edge is shared by two faces, the rim is boundary.
        let n = 300usize;
        let mut facets = Vec::new();
        for i in 0..n {
            for j in 0..n {
                let (x, y) = (i as f32, j as f32);
                facets.push(Facet {
                    normal: [0.0; 3],
                    vertices: [[x, y, 0.0], [x + 1.0, y, 0.0], [x + 1.0, y + 1.0, 0.0]],
                });
                facets.push(Facet {
                    normal: [0.0; 3],
                    vertices: [[x, y, 0.0], [x + 1.0, y + 1.0, 0.0], [x, y + 1.0, 0.0]],
                });
            }
        }
        let r = report(&facets);
        let edges = 3 * n * n + 2 * n;
        assert_eq!(r.edges as usize, edges);
        assert_eq!(r.boundary_edges as usize, 4 * n);
        assert_eq!((r.bodies, r.euler_number, r.misoriented_edges), (1, 1, 0));
    }
}
