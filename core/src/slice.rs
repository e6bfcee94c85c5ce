//! Slicing: cut a mesh into layers of closed polygons.
//!
//! # Layers
//! The mesh's lowest z is the bottom of layer 0, which is `first_layer`
//! thick; every later layer is `layer_height` thick; layers continue while
//! their bottom is below the mesh's top (by more than 1e-6 of the height:
//! thinner is rounding noise). Each layer is cut by one plane at
//! its middle, as slicers do.
//!
//! # Units
//! Polygon coordinates are integers in **nanometres** (`1 unit = 1e-6` file
//! units, i.e. 1 nm when the file is in millimetres) in `i64`, as
//! PrusaSlicer scales them: exact, order-independent arithmetic for areas
//! and nesting, and ±9.2e12 mm of range. Areas are computed in `i128`.
//!
//! # How
//! - A vertex exactly on a plane counts as above it. Then a face crosses a
//!   plane iff its lowest vertex is below and its highest is not, and it
//!   crosses in exactly one segment whose ends lie on two of its edges; faces
//!   lying in the plane give nothing. An edge's crossing point is computed
//!   from the edge alone (lower vertex id first), so the two faces of an edge
//!   get bit-identical points.
//! - Faces are bucketed into the layers they cross in one pass over the
//!   faces; layers are then cut in parallel with rayon.
//! - Segments are chained through the mesh's edges (each crossing edge is a
//!   node joining the two segments of its two faces), not by searching for
//!   nearby endpoints, and without trusting the winding, so flipped faces do
//!   not break a contour.
//! - Chains that do not close (open meshes) are joined end to start across
//!   gaps up to [`GAP_NM`]; what still does not close is counted per layer,
//!   never a panic or an endless loop.
//! - Orientation comes from nesting first: a polygon wholly inside an even
//!   number of others is an outer boundary (counter-clockwise seen from
//!   +Z), inside an odd number a hole (clockwise). That needs no trust in
//!   the winding, so a few flipped faces change nothing.
//! - Each contour also keeps the winding's vote (its segments' faces,
//!   counted for and against its direction; a mesh inside out as a whole is
//!   turned first). Where the vote disagrees with nesting (a body embedded
//!   in another, a cavity) or contours cross (bodies that intersect), the
//!   layer becomes the union of the contours as the winding orients them,
//!   under the positive fill rule (i_overlay): what a printer should print,
//!   and what the union of the bodies' own sections gives (the reference in
//!   `tests/fixtures/slice_areas.json`).

use glam::DVec3;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mesh::IndexedMesh;

/// Nanometres per file unit.
pub const NM_PER_UNIT: f64 = 1e6;
/// Open chains whose ends are this close (nm) are joined.
pub const GAP_NM: i64 = 10_000;
/// At most this many layers (a 0.2 mm layer height covers 200 m).
pub const MAX_LAYERS: usize = 1_000_000;

/// A point of a layer, in nanometres.
pub type Point = [i64; 2];

/// How to slice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceOptions {
    /// Thickness of every layer after the first (file units, mm).
    pub layer_height: f64,
    /// Thickness of the first layer.
    pub first_layer: f64,
}

impl Default for SliceOptions {
    fn default() -> SliceOptions {
        SliceOptions { layer_height: 0.2, first_layer: 0.2 }
    }
}

/// Bounds on one slicing run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceLimits {
    /// At most this many layers.
    pub max_layers: usize,
    /// Give up when this instant passes (checked before every layer).
    pub deadline: Option<std::time::Instant>,
}

impl Default for SliceLimits {
    fn default() -> SliceLimits {
        SliceLimits { max_layers: MAX_LAYERS, deadline: None }
    }
}

/// Why a mesh could not be sliced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SliceError {
    /// A layer height that is not a positive finite number.
    #[error("layer height {0} must be a positive number")]
    BadLayerHeight(f64),
    /// The mesh is so tall for the layer height that it would need more
    /// layers than the limit ([`SliceLimits::max_layers`]).
    #[error(
        "{layers} layers needed (the mesh is {height} tall at {layer_height} per layer); the limit is {limit}"
    )]
    TooManyLayers {
        /// Layers needed.
        layers: u64,
        /// The mesh's height.
        height: f64,
        /// The requested layer height.
        layer_height: f64,
        /// The most layers allowed.
        limit: u64,
    },
    /// The deadline ([`SliceLimits::deadline`]) passed before every layer
    /// was cut.
    #[error("slicing passed the job's time limit after {done} of {layers} layers")]
    TimeLimit {
        /// Layers cut, at least.
        done: u64,
        /// Layers needed.
        layers: u64,
    },
}

impl SliceError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SliceError::BadLayerHeight(_) => "bad_layer_height",
            SliceError::TooManyLayers { .. } => "too_many_layers",
            SliceError::TimeLimit { .. } => "time_limit",
        }
    }
}

/// One closed polygon: its points in order, the closing edge implied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Polygon {
    /// Points in nanometres; counter-clockwise for an outer boundary,
    /// clockwise for a hole.
    pub points: Vec<Point>,
}

impl Polygon {
    /// Twice the signed area in nm² (positive counter-clockwise).
    pub fn area2(&self) -> i128 {
        let n = self.points.len();
        (0..n)
            .map(|i| {
                let (a, b) = (self.points[i], self.points[(i + 1) % n]);
                i128::from(a[0]) * i128::from(b[1]) - i128::from(b[0]) * i128::from(a[1])
            })
            .sum()
    }

    /// Whether this is a hole (clockwise).
    pub fn is_hole(&self) -> bool {
        self.area2() < 0
    }
}

/// One layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    /// Height of the cutting plane (file units, the model's own z).
    pub z: f64,
    /// Outer boundaries and holes.
    pub polygons: Vec<Polygon>,
    /// Chains that stayed open (holes in the mesh wider than [`GAP_NM`]).
    pub open_chains: u32,
}

impl Layer {
    /// Net area in file units² (outer boundaries minus holes).
    pub fn area(&self) -> f64 {
        let twice: i128 = self.polygons.iter().map(Polygon::area2).sum();
        twice as f64 / 2.0 / (NM_PER_UNIT * NM_PER_UNIT)
    }

    /// Number of holes.
    pub fn holes(&self) -> usize {
        self.polygons.iter().filter(|p| p.is_hole()).count()
    }
}

/// Plane heights for a mesh spanning `zmin..=zmax`, at most [`MAX_LAYERS`].
pub fn plane_heights(zmin: f64, zmax: f64, options: &SliceOptions) -> Result<Vec<f64>, SliceError> {
    plane_heights_within(zmin, zmax, options, MAX_LAYERS)
}

/// [`plane_heights`], at most `max_layers` of them.
pub fn plane_heights_within(
    zmin: f64,
    zmax: f64,
    options: &SliceOptions,
    max_layers: usize,
) -> Result<Vec<f64>, SliceError> {
    for h in [options.layer_height, options.first_layer] {
        if !(h.is_finite() && h > 0.0) {
            return Err(SliceError::BadLayerHeight(h));
        }
    }
    let (h, first) = (options.layer_height, options.first_layer);
    let rest = ((zmax - zmin - first) / h).ceil().max(0.0);
    let layers = 1.0 + rest;
    if !layers.is_finite() || layers > max_layers as f64 {
        return Err(SliceError::TooManyLayers {
            layers: layers as u64,
            height: zmax - zmin,
            layer_height: h,
            limit: max_layers as u64,
        });
    }
    // Same arithmetic as tests/fixtures/slice_reference.py, so the planes
    // are the reference's planes to the last bit.
    // A last layer starting within 1e-6 of the height below the top holds
    // only rounding noise (f32 against f64 coordinates): not a layer.
    let end = zmax - 1e-6 * (zmax - zmin);
    let mut z = Vec::with_capacity(layers as usize);
    let mut i = 0usize;
    loop {
        let lo = if i == 0 { zmin } else { zmin + first + (i - 1) as f64 * h };
        if i > 0 && lo >= end {
            break;
        }
        let thick = if i == 0 { first } else { h };
        z.push(lo + thick / 2.0);
        i += 1;
    }
    Ok(z)
}

/// Slices a mesh (see the module documentation).
pub fn slice(mesh: &IndexedMesh, options: &SliceOptions) -> Result<Vec<Layer>, SliceError> {
    slice_within(mesh, options, &SliceLimits::default())
}

/// [`slice()`] within `limits`: too many layers is refused before any work,
/// and a deadline that passes stops the cutting.
pub fn slice_within(
    mesh: &IndexedMesh,
    options: &SliceOptions,
    limits: &SliceLimits,
) -> Result<Vec<Layer>, SliceError> {
    if mesh.faces.is_empty() {
        plane_heights_within(0.0, 0.0, options, limits.max_layers)?;
        return Ok(Vec::new());
    }
    let (zmin, zmax) = mesh.vertices.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(f64::from(v.z)), hi.max(f64::from(v.z)))
    });
    let z = plane_heights_within(zmin, zmax, options, limits.max_layers)?;
    let buckets = bucket_faces(mesh, &z);
    // A mesh wound inside out as a whole still slices the right way up.
    let inverted = crate::mesh::signed_volume(&mesh.vertices, mesh.faces.iter()) < 0.0;
    let done = std::sync::atomic::AtomicU64::new(0);
    let layers: Option<Vec<Layer>> = z
        .par_iter()
        .zip(buckets.par_iter())
        .map(|(&plane, faces)| {
            if limits.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return None;
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(cut_layer(mesh, plane, faces, inverted))
        })
        .collect();
    layers.ok_or_else(|| SliceError::TimeLimit { done: done.into_inner(), layers: z.len() as u64 })
}

/// For each plane, the faces that cross it: zmin < z <= zmax (a vertex on
/// the plane counts as above). One pass to count, one to fill.
fn bucket_faces(mesh: &IndexedMesh, z: &[f64]) -> Vec<Vec<u32>> {
    // Planes are sorted: the first plane above `lo` and the last at or
    // below `hi`, by binary search.
    // Planes after the first are evenly spaced: guess the index by
    // arithmetic, then settle it against the actual heights, so the result
    // is exactly the binary search's.
    let step = if z.len() > 2 { (z[z.len() - 1] - z[1]) / (z.len() - 2) as f64 } else { 0.0 };
    let above = |v: f64| -> usize {
        // The number of planes at or below `v`.
        let mut i = if step > 0.0 && v > z[1] {
            (((v - z[1]) / step) as usize + 1).min(z.len())
        } else {
            z.partition_point(|&p| p <= v).min(2)
        };
        while i > 0 && z[i - 1] > v {
            i -= 1;
        }
        while i < z.len() && z[i] <= v {
            i += 1;
        }
        i
    };
    let ranges: Vec<(u32, u32)> = mesh
        .faces
        .par_iter()
        .with_min_len(1 << 14)
        .map(|f| {
            let zs = f.map(|i| f64::from(mesh.vertices[i as usize].z));
            let first = above(zs[0].min(zs[1]).min(zs[2]));
            let last = above(zs[0].max(zs[1]).max(zs[2]));
            (first as u32, last.max(first) as u32)
        })
        .collect();
    let mut counts = vec![0usize; z.len()];
    for &(first, last) in &ranges {
        for c in &mut counts[first as usize..last as usize] {
            *c += 1;
        }
    }
    let mut buckets: Vec<Vec<u32>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (i, &(first, last)) in ranges.iter().enumerate() {
        for b in &mut buckets[first as usize..last as usize] {
            b.push(i as u32);
        }
    }
    buckets
}

/// A segment of a layer: between the crossing points of two mesh edges.
#[derive(Clone, Copy)]
struct Segment {
    ends: [(u64, Point); 2],
    /// +1 when ends[0] -> ends[1] runs the way the face's winding says
    /// (counter-clockwise around the solid, seen from +Z), -1 against, 0
    /// when it cannot tell (a segment of zero length, at a vertex on the
    /// plane).
    direction: i8,
}

fn edge_key(a: u32, b: u32) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (u64::from(lo) << 32) | u64::from(hi)
}

/// Where the edge between vertices `a` and `b` crosses the plane, computed
/// from the lower id first so both faces of the edge agree exactly.
fn crossing(mesh: &IndexedMesh, a: u32, b: u32, plane: f64) -> Point {
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let (p, q) = (mesh.vertices[a as usize].as_dvec3(), mesh.vertices[b as usize].as_dvec3());
    let t = (plane - p.z) / (q.z - p.z);
    let x: DVec3 = p + (q - p) * t;
    [(x.x * NM_PER_UNIT).round() as i64, (x.y * NM_PER_UNIT).round() as i64]
}

fn cut_layer(mesh: &IndexedMesh, plane: f64, faces: &[u32], inverted: bool) -> Layer {
    let mut segments = Vec::with_capacity(faces.len());
    for &f in faces {
        let t = mesh.faces[f as usize];
        let above = t.map(|v| f64::from(mesh.vertices[v as usize].z) >= plane);
        let mut ends = [(0u64, [0i64; 2]); 2];
        let mut n = 0;
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            if above[k] != above[(k + 1) % 3] && n < 2 {
                ends[n] = (edge_key(a, b), crossing(mesh, a, b, plane));
                n += 1;
            }
        }
        if n == 2 {
            // The solid's contour runs along z x normal.
            let [a, b, c] = t.map(|v| mesh.vertices[v as usize].as_dvec3());
            let normal = (b - a).cross(c - a);
            let (dx, dy) = ((ends[1].1[0] - ends[0].1[0]) as f64, (ends[1].1[1] - ends[0].1[1]) as f64);
            let along = (dx * -normal.y + dy * normal.x) * if inverted { -1.0 } else { 1.0 };
            let direction = if along > 0.0 {
                1
            } else if along < 0.0 {
                -1
            } else {
                0
            };
            segments.push(Segment { ends, direction });
        }
    }
    let (chains, open) = chain(&segments);
    Layer { z: plane, polygons: orient(chains), open_chains: open }
}

/// Points in order, and the winding's vote on that order: +1 for each
/// segment walked the way its face's winding runs, -1 against.
type Chain = (Vec<Point>, i64);

/// Joins segments into closed chains through their shared edges; returns
/// the closed point loops and how many chains stayed open.
fn chain(segments: &[Segment]) -> (Vec<Chain>, u32) {
    // (edge key, segment, which end), sorted by key: a node's segments are
    // one run.
    let mut nodes: Vec<(u64, u32, u8)> = segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| [(seg.ends[0].0, s as u32, 0u8), (seg.ends[1].0, s as u32, 1u8)])
        .collect();
    nodes.sort_unstable();
    // Where each segment end sits in `nodes`, so a node's run (usually two
    // ends: the two faces of a manifold edge) is found by scanning its
    // neighbours rather than by searching.
    let mut position = vec![0u32; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        position[2 * n.1 as usize + n.2 as usize] = i as u32;
    }
    let run = |s: usize, end: usize| -> &[(u64, u32, u8)] {
        let at = position[2 * s + end] as usize;
        let key = nodes[at].0;
        let mut start = at;
        while start > 0 && nodes[start - 1].0 == key {
            start -= 1;
        }
        let mut stop = at + 1;
        while stop < nodes.len() && nodes[stop].0 == key {
            stop += 1;
        }
        &nodes[start..stop]
    };
    let mut used = vec![false; segments.len()];
    let mut closed = Vec::new();
    let mut open_chains: Vec<Chain> = Vec::new();
    // Walk from `s` leaving through end `out`; returns the chain and
    // whether the walk came back to where it started.
    let walk = |s: usize, out: usize, used: &mut Vec<bool>| -> (Chain, bool) {
        let start_key = segments[s].ends[1 - out].0;
        let mut points = vec![segments[s].ends[1 - out].1];
        let (mut cur, mut end) = (s, out);
        let mut vote = 0i64;
        used[s] = true;
        loop {
            let d = i64::from(segments[cur].direction);
            vote += if end == 1 { d } else { -d };
            let (key, p) = segments[cur].ends[end];
            if key == start_key {
                return ((points, vote), true);
            }
            points.push(p);
            match run(cur, end).iter().find(|n| !used[n.1 as usize]) {
                Some(&(_, next, at)) => {
                    used[next as usize] = true;
                    cur = next as usize;
                    end = 1 - at as usize;
                }
                None => return ((points, vote), false),
            }
        }
    };
    // Open chains first, from nodes used by a single segment, so each is
    // walked whole from one end.
    for (i, &(key, s, at)) in nodes.iter().enumerate() {
        let single = (i == 0 || nodes[i - 1].0 != key) && (i + 1 == nodes.len() || nodes[i + 1].0 != key);
        if single && !used[s as usize] {
            let (chain, _) = walk(s as usize, 1 - at as usize, &mut used);
            open_chains.push(chain);
        }
    }
    for s in 0..segments.len() {
        if !used[s] {
            let (chain, done) = walk(s, 1, &mut used);
            if done { closed.push(chain) } else { open_chains.push(chain) }
        }
    }
    let (joined, still_open) = join_gaps(open_chains);
    closed.extend(joined);
    (closed, still_open)
}

/// Joins open chains end to start across gaps up to [`GAP_NM`], greedily
/// (nearest start first); returns the loops that closed and the number of
/// chains still open.
fn join_gaps(mut open: Vec<Chain>) -> (Vec<Chain>, u32) {
    let near = |a: Point, b: Point| (a[0] - b[0]).abs() <= GAP_NM && (a[1] - b[1]).abs() <= GAP_NM;
    let mut closed = Vec::new();
    let mut left = 0;
    while let Some((mut chain, mut vote)) = open.pop() {
        while let (Some(&first), Some(&last)) = (chain.first(), chain.last()) {
            if chain.len() > 2 && near(last, first) {
                closed.push((chain, vote));
                break;
            }
            // The open chain whose start (or, reversed, end) is nearest.
            let dist = |p: Point| (p[0] - last[0]).abs().max((p[1] - last[1]).abs());
            let best = open
                .iter()
                .enumerate()
                .flat_map(|(i, (c, _))| [(dist(c[0]), i, false), (dist(c[c.len() - 1]), i, true)])
                .filter(|&(d, _, _)| d <= GAP_NM)
                .min();
            match best {
                Some((_, i, reversed)) => {
                    let (mut next, next_vote) = open.swap_remove(i);
                    if reversed {
                        next.reverse();
                    }
                    vote += if reversed { -next_vote } else { next_vote };
                    chain.extend(next);
                }
                None => {
                    left += 1;
                    break;
                }
            }
        }
    }
    (closed, left)
}

/// Cleans loops (repeated points, fewer than 3 points, zero area) and
/// orients them by nesting: even depth counter-clockwise, odd clockwise.
/// Where the faces' winding disagrees with nesting (a body embedded in
/// another) or contours cross (bodies that intersect), the layer is the
/// union of the contours as the winding orients them instead.
fn orient(loops: Vec<Chain>) -> Vec<Polygon> {
    // Each polygon with what the winding says it is: counter-clockwise
    // (solid inside) or not; `None` when its faces are split evenly.
    let (mut polygons, votes): (Vec<Polygon>, Vec<Option<bool>>) = loops
        .into_iter()
        .flat_map(|(points, vote)| split_at_repeats(points).into_iter().map(move |p| (p, vote)))
        .filter_map(|(mut points, vote)| {
            points.dedup();
            while points.len() > 1 && points.first() == points.last() {
                points.pop();
            }
            let p = Polygon { points };
            let area2 = p.area2();
            (p.points.len() >= 3 && area2 != 0)
                .then_some((p, (vote != 0).then_some((area2 > 0) == (vote > 0))))
        })
        .unzip();
    if polygons.len() < 2 {
        // Nothing to nest in: a lone polygon is an outer boundary.
        for p in &mut polygons {
            if p.area2() < 0 {
                p.points.reverse();
            }
        }
        return polygons;
    }
    let boxes: Vec<[i64; 4]> = polygons
        .iter()
        .map(|p| {
            p.points.iter().fold([i64::MAX, i64::MAX, i64::MIN, i64::MIN], |b, q| {
                [b[0].min(q[0]), b[1].min(q[1]), b[2].max(q[0]), b[3].max(q[1])]
            })
        })
        .collect();
    // "i is inside j" when i's bounding box is within j's and i's vertices
    // (up to PROBES of them, spread along it) that are not vertices of j
    // are all inside j. Contours touching at a corner share points, which
    // say nothing; contours of overlapping bodies cross, and are both outer
    // boundaries (as in trimesh's enclosure tree), not one a hole.
    let vertex_sets: Vec<Vec<Point>> = polygons
        .iter()
        .map(|p| {
            let mut v = p.points.clone();
            v.sort_unstable();
            v
        })
        .collect();
    // Contours that cross (bodies that intersect) are found on the way:
    // boxes that overlap without one holding the other, or probes falling
    // both inside and outside. Such a layer is then unioned.
    let mut crossing = false;
    let depth: Vec<usize> = (0..polygons.len())
        .map(|i| {
            let (bi, pts) = (boxes[i], &polygons[i].points);
            let step = pts.len().div_ceil(PROBES).max(1);
            (0..polygons.len())
                .filter(|&j| {
                    let bj = boxes[j];
                    let apart = bi[2] < bj[0] || bj[2] < bi[0] || bi[3] < bj[1] || bj[3] < bi[1];
                    if j == i || apart {
                        return false;
                    }
                    let within = bi[0] >= bj[0] && bi[1] >= bj[1] && bi[2] <= bj[2] && bi[3] <= bj[3];
                    let holds = bj[0] >= bi[0] && bj[1] >= bi[1] && bj[2] <= bi[2] && bj[3] <= bi[3];
                    if !within {
                        if !holds {
                            crossing = true;
                        }
                        return false;
                    }
                    let (mut inside, mut outside) = (0, 0);
                    for q in pts.iter().step_by(step) {
                        if vertex_sets[j].binary_search(q).is_ok() {
                            continue;
                        }
                        if contains(&polygons[j].points, *q) { inside += 1 } else { outside += 1 }
                    }
                    if inside > 0 && outside > 0 {
                        crossing = true;
                    }
                    inside > 0 && outside == 0
                })
                .count()
        })
        .collect();
    let mut disagree = false;
    for ((p, d), wound_ccw) in polygons.iter_mut().zip(depth).zip(&votes) {
        let ccw = p.area2() > 0;
        if ccw == (d % 2 == 1) {
            p.points.reverse();
        }
        disagree |= wound_ccw.is_some_and(|w| w != (d % 2 == 0));
    }
    if !crossing && !disagree {
        return polygons;
    }
    // Orient by the winding where it has a say, and union.
    for (p, wound_ccw) in polygons.iter_mut().zip(&votes) {
        if wound_ccw.is_some_and(|w| (p.area2() > 0) != w) {
            p.points.reverse();
        }
    }
    union_positive(&polygons)
}

/// The union of oriented contours under the positive winding rule, with
/// i_overlay: a point is solid when it lies in more outer boundaries than
/// holes around it. For bodies that intersect, that is the union of their
/// sections, what a printer should print (and what trimesh reports: two
/// overlapping holes make one hole, not a hole and a sliver of solid).
fn union_positive(polygons: &[Polygon]) -> Vec<Polygon> {
    use i_overlay::core::fill_rule::FillRule;
    use i_overlay::core::overlay::Overlay;
    use i_overlay::core::overlay_rule::OverlayRule;
    use i_overlay::i_float::int::point::IntPoint;
    let contours: Vec<Vec<IntPoint<i64>>> =
        polygons.iter().map(|p| p.points.iter().map(|q| IntPoint::new(q[0], q[1])).collect()).collect();
    let mut overlay = Overlay::<i64>::new(contours.iter().map(Vec::len).sum());
    for c in &contours {
        overlay.add_contour(c, i_overlay::core::overlay::ShapeType::Subject);
    }
    overlay
        .overlay(OverlayRule::Subject, FillRule::Positive)
        .into_iter()
        .flatten()
        .map(|contour| Polygon { points: contour.into_iter().map(|q| [q.x, q.y]).collect() })
        .filter(|p| p.points.len() >= 3 && p.area2() != 0)
        .collect()
}

/// Cuts a loop that passes a point twice (two contours touching at a
/// corner, or chained through a non-manifold edge) into simple loops, so
/// each is oriented on its own.
fn split_at_repeats(points: Vec<Point>) -> Vec<Vec<Point>> {
    // The common case, no repeat, by sorting a copy: cheaper than hashing
    // every point.
    let mut sorted = points.clone();
    sorted.sort_unstable();
    if sorted.windows(2).all(|w| w[0] != w[1]) {
        return vec![points];
    }
    let mut out = Vec::new();
    let mut stack: Vec<Point> = Vec::with_capacity(points.len());
    let mut at: std::collections::HashMap<Point, usize> = std::collections::HashMap::new();
    for p in points {
        if let Some(&i) = at.get(&p) {
            let piece: Vec<Point> = stack.drain(i..).collect();
            for q in &piece[1..] {
                at.remove(q);
            }
            stack.push(p);
            out.push(piece);
        } else {
            at.insert(p, stack.len());
            stack.push(p);
        }
    }
    out.push(stack);
    out
}

/// Vertices of a polygon tested for lying inside another.
const PROBES: usize = 16;

/// Even-odd point-in-polygon (crossing number) in exact integer arithmetic.
fn contains(points: &[Point], p: Point) -> bool {
    let n = points.len();
    let mut inside = false;
    for i in 0..n {
        let (a, b) = (points[i], points[(i + 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            // x of the edge at p.y compared with p.x, without division.
            let lhs = i128::from(p[0] - a[0]) * i128::from(b[1] - a[1]);
            let rhs = i128::from(b[0] - a[0]) * i128::from(p[1] - a[1]);
            if (b[1] > a[1] && lhs < rhs) || (b[1] < a[1] && lhs > rhs) {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests;
