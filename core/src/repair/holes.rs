//! Hole filling: find the boundary loops and triangulate each one.
//!
//! A loop is the chain of boundary half-edges around a hole, in the order
//! the faces run them. Fill triangles traverse every loop edge the other
//! way, so they continue the surrounding winding.
//!
//! - Loops of up to [`DP_LIMIT`] edges get the minimum-area triangulation
//!   (dynamic programming over the loop, Liepa's scheme without the
//!   dihedral term), which never adds a vertex, so a hole made by deleting
//!   faces is closed with the same number of faces. Triangles with zero area
//!   or with an edge the mesh already has (it would become non-manifold) are
//!   avoided whenever another choice exists.
//! - Larger loops are ear-clipped in the plane of their Newell normal,
//!   smallest angle first, refusing ears that contain another loop vertex;
//!   this handles large and non-planar holes in O(n^2) without the O(n^3)
//!   table.

use std::collections::HashSet;

use glam::DVec3;

use super::topology::{BOUNDARY, Topology, edge_key};

/// Loops up to this length use the exact minimum-area triangulation.
pub(crate) const DP_LIMIT: usize = 200;

/// The boundary loops of a mesh, as vertex sequences in boundary-edge
/// order (`v0 -> v1 -> ... -> v0`), each visiting a vertex once. Returns
/// the loops and the number of boundary chains that do not close (their
/// edges run against each other, which only happens where winding could
/// not be made consistent).
pub(crate) fn boundary_loops(faces: &[[u32; 3]], topo: &Topology) -> (Vec<Vec<u32>>, u64) {
    let mut out: Vec<(u32, u32)> = topo
        .twin
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == BOUNDARY)
        .map(|(h, _)| {
            let (f, k) = (h / 3, h % 3);
            (faces[f][k], faces[f][(k + 1) % 3])
        })
        .collect();
    out.sort_unstable();
    let mut used = vec![false; out.len()];
    // The first unused boundary edge leaving `v`, if any.
    let next_from = |v: u32, used: &[bool]| -> Option<usize> {
        let start = out.partition_point(|e| e.0 < v);
        (start..out.len()).take_while(|&i| out[i].0 == v).find(|&i| !used[i])
    };
    let mut loops = Vec::new();
    let mut open = 0;
    for first in 0..out.len() {
        if used[first] {
            continue;
        }
        used[first] = true;
        let start = out[first].0;
        let mut cycle = vec![start];
        let mut v = out[first].1;
        let mut closed = true;
        while v != start {
            match next_from(v, &used) {
                Some(i) => {
                    used[i] = true;
                    cycle.push(v);
                    v = out[i].1;
                }
                None => {
                    closed = false;
                    break;
                }
            }
        }
        if closed {
            split_simple(&cycle, &mut loops);
        } else {
            open += 1;
        }
    }
    (loops, open)
}

/// Cuts a closed walk that passes a vertex more than once (two holes
/// touching at a corner) into simple loops, dropping pieces under 3 edges.
fn split_simple(cycle: &[u32], loops: &mut Vec<Vec<u32>>) {
    let mut stack: Vec<u32> = Vec::with_capacity(cycle.len());
    let mut at = std::collections::HashMap::new();
    for &v in cycle {
        if let Some(&p) = at.get(&v) {
            let piece: Vec<u32> = stack.drain(p..).collect();
            for u in &piece[1..] {
                at.remove(u);
            }
            stack.push(v);
            if piece.len() >= 3 {
                loops.push(piece);
            }
        } else {
            at.insert(v, stack.len());
            stack.push(v);
        }
    }
    if stack.len() >= 3 {
        loops.push(stack);
    }
}

/// Edges a fill must not reuse: the mesh's own, plus those of the loops
/// filled before (two holes can share a pair of vertices).
pub(crate) struct Taken<'a> {
    pub(crate) topo: &'a Topology,
    pub(crate) added: HashSet<u64>,
}

impl Taken<'_> {
    fn has(&self, a: u32, b: u32) -> bool {
        self.topo.has_edge(a, b) || self.added.contains(&edge_key(a, b))
    }
}

/// Triangulates one loop; the triangles face the way the surrounding
/// surface does. Returns `None`, leaving the hole open, when every
/// triangulation would need a zero-area triangle or an edge the mesh
/// already has (which would become non-manifold): a fill must never add a
/// defect.
pub(crate) fn fill(lp: &[u32], vertices: &[glam::Vec3], taken: &mut Taken<'_>) -> Option<Vec<[u32; 3]>> {
    let pts: Vec<DVec3> = lp.iter().map(|&v| vertices[v as usize].as_dvec3()).collect();
    let tris = if lp.len() <= DP_LIMIT { min_area(lp, &pts, taken)? } else { ear_clip(&pts) };
    // Checked on loop positions, before mapping to vertex ids.
    let n = lp.len();
    let on_loop = |a: usize, b: usize| (a + 1) % n == b || (b + 1) % n == a;
    let mut diagonals = Vec::new();
    for &[i, k, j] in &tris {
        if (pts[k] - pts[i]).cross(pts[j] - pts[i]) == DVec3::ZERO {
            return None;
        }
        for (a, b) in [(i, k), (k, j), (j, i)] {
            if !on_loop(a, b) {
                diagonals.push(edge_key(lp[a], lp[b]));
            }
        }
    }
    // Every diagonal is shared by exactly two fill triangles; none may
    // exist already.
    if diagonals.iter().any(|&k| taken.has((k >> 32) as u32, k as u32)) {
        return None;
    }
    taken.added.extend(diagonals);
    // (i, k, j) with i < k < j runs the same way as the boundary; the fill
    // must run the other way.
    Some(tris.into_iter().map(|[i, k, j]| [lp[j], lp[k], lp[i]]).collect())
}

/// Cost of a fill triangle: first the number of bad properties (zero area;
/// a diagonal that already exists as a mesh edge), then the area.
type Cost = (u32, f64);

fn add(a: Cost, b: Cost) -> Cost {
    (a.0 + b.0, a.1 + b.1)
}

fn less(a: Cost, b: Cost) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Minimum-cost triangulation of a polygon by dynamic programming over
/// sub-chains `i..=j` (O(n^3) time, O(n^2) space).
fn min_area(lp: &[u32], pts: &[DVec3], taken: &Taken<'_>) -> Option<Vec<[usize; 3]>> {
    let n = pts.len();
    if n == 3 {
        return Some(vec![[0, 1, 2]]);
    }
    let idx = |i: usize, j: usize| i * n + j;
    let mut cost = vec![(0u32, 0.0f64); n * n];
    let mut best = vec![0usize; n * n];
    // A diagonal (not a loop edge) that already joins two loop vertices
    // somewhere else would be used three times once the hole is filled.
    let diagonal_penalty = |i: usize, j: usize| -> u32 {
        let loop_edge = j == i + 1 || (i == 0 && j == n - 1);
        u32::from(!loop_edge && taken.has(lp[i], lp[j]))
    };
    for len in 2..n {
        for i in 0..n - len {
            let j = i + len;
            let mut choice = (u32::MAX, f64::INFINITY);
            let mut at = i + 1;
            for k in i + 1..j {
                let area = 0.5 * (pts[k] - pts[i]).cross(pts[j] - pts[i]).length();
                let own = (u32::from(area == 0.0) + diagonal_penalty(i, j), area);
                let c = add(add(cost[idx(i, k)], cost[idx(k, j)]), own);
                if less(c, choice) {
                    choice = c;
                    at = k;
                }
            }
            cost[idx(i, j)] = choice;
            best[idx(i, j)] = at;
        }
    }
    if cost[idx(0, n - 1)].0 > 0 {
        return None;
    }
    let mut tris = Vec::with_capacity(n - 2);
    let mut stack = vec![(0usize, n - 1)];
    while let Some((i, j)) = stack.pop() {
        if j < i + 2 {
            continue;
        }
        let k = best[idx(i, j)];
        tris.push([i, k, j]);
        stack.push((i, k));
        stack.push((k, j));
    }
    Some(tris)
}

/// Ear clipping for large loops, smallest interior angle first.
fn ear_clip(pts: &[DVec3]) -> Vec<[usize; 3]> {
    let n = pts.len();
    // Newell's normal of the loop in boundary order: the direction the
    // boundary winds counter-clockwise around.
    let mut normal = DVec3::ZERO;
    for i in 0..n {
        let (a, b) = (pts[i], pts[(i + 1) % n]);
        normal += DVec3::new((a.y - b.y) * (a.z + b.z), (a.z - b.z) * (a.x + b.x), (a.x - b.x) * (a.y + b.y));
    }
    let normal = normal.normalize_or_zero();
    let (u, v) = if normal == DVec3::ZERO { (DVec3::X, DVec3::Y) } else { normal.any_orthonormal_pair() };
    let flat: Vec<[f64; 2]> = pts.iter().map(|p| [p.dot(u), p.dot(v)]).collect();
    let cross2 =
        |a: [f64; 2], b: [f64; 2], c: [f64; 2]| (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);

    let mut ring: Vec<usize> = (0..n).collect();
    let mut tris = Vec::with_capacity(n - 2);
    while ring.len() > 3 {
        let m = ring.len();
        let mut pick: Option<(f64, usize)> = None;
        let mut fallback: Option<(f64, usize)> = None;
        for r in 0..m {
            let (p, c, q) = (ring[(r + m - 1) % m], ring[r], ring[(r + 1) % m]);
            let (a, b) = (pts[p] - pts[c], pts[q] - pts[c]);
            let angle = a.angle_between(b);
            let convex = cross2(flat[p], flat[c], flat[q]) > 0.0;
            let angle = if convex { angle } else { std::f64::consts::TAU - angle };
            if fallback.is_none_or(|f| angle < f.0) {
                fallback = Some((angle, r));
            }
            if !convex || pick.is_some_and(|b| b.0 <= angle) {
                continue;
            }
            let inside = ring.iter().any(|&w| {
                w != p && w != c && w != q && {
                    let x = flat[w];
                    cross2(flat[p], flat[c], x) >= 0.0
                        && cross2(flat[c], flat[q], x) >= 0.0
                        && cross2(flat[q], flat[p], x) >= 0.0
                }
            });
            if !inside {
                pick = Some((angle, r));
            }
        }
        let Some((_, r)) = pick.or(fallback) else { break };
        let (p, c, q) = (ring[(r + m - 1) % m], ring[r], ring[(r + 1) % m]);
        tris.push(sorted3(p, c, q));
        ring.remove(r);
    }
    if ring.len() == 3 {
        tris.push(sorted3(ring[0], ring[1], ring[2]));
    }
    tris
}

/// Ring positions in loop order (all ears keep the ring's cyclic order, so
/// sorting the three positions keeps the triangle's orientation).
fn sorted3(a: usize, b: usize, c: usize) -> [usize; 3] {
    let mut t = [a, b, c];
    t.sort_unstable();
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::Vec3;

    fn square_loop(n: usize) -> Vec<Vec3> {
        // n points around a unit circle in the XY plane.
        (0..n)
            .map(|i| {
                let a = i as f32 / n as f32 * std::f32::consts::TAU;
                Vec3::new(a.cos(), a.sin(), 0.0)
            })
            .collect()
    }

    fn area(tris: &[[u32; 3]], v: &[Vec3]) -> f64 {
        tris.iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| v[i as usize].as_dvec3());
                0.5 * (b - a).cross(c - a).length()
            })
            .sum()
    }

    #[test]
    fn both_triangulators_cover_a_disc_with_n_minus_2_faces_facing_down() {
        for n in [3, 4, 17, DP_LIMIT, DP_LIMIT + 50] {
            let v = square_loop(n);
            let lp: Vec<u32> = (0..n as u32).collect();
            let topo = Topology::build(&[]);
            let tris = fill(&lp, &v, &mut Taken { topo: &topo, added: HashSet::new() }).expect("fills");
            assert_eq!(tris.len(), n - 2, "n = {n}");
            // The loop runs counter-clockwise seen from +Z, as the rim of a
            // surface above it would; the fill closes it from below.
            for t in &tris {
                let [a, b, c] = t.map(|i| v[i as usize]);
                assert!((b - a).cross(c - a).z < 0.0, "n = {n}: {t:?} faces up");
            }
            let disc = n as f64 / 2.0 * (std::f64::consts::TAU / n as f64).sin();
            assert!((area(&tris, &v) - disc).abs() < 1e-5 * disc, "n = {n}");
        }
    }

    #[test]
    fn concave_loop_is_ear_clipped_without_overlap() {
        // A comb: many teeth, so every wrong ear would overlap the polygon.
        let mut pts = Vec::new();
        let teeth = 120;
        for i in 0..teeth {
            let x = i as f32;
            pts.push(Vec3::new(x, 0.0, 0.0));
            pts.push(Vec3::new(x + 0.5, 5.0, 0.0));
        }
        pts.push(Vec3::new(teeth as f32, 0.0, 0.0));
        pts.push(Vec3::new(teeth as f32, -1.0, 0.0));
        pts.push(Vec3::new(0.0, -1.0, 0.0));
        // Make it counter-clockwise seen from +Z.
        pts.reverse();
        let lp: Vec<u32> = (0..pts.len() as u32).collect();
        let topo = Topology::build(&[]);
        let tris = fill(&lp, &pts, &mut Taken { topo: &topo, added: HashSet::new() }).expect("fills");
        assert_eq!(tris.len(), pts.len() - 2);
        let polygon_area: f64 = {
            let n = pts.len();
            (0..n)
                .map(|i| {
                    let (a, b) = (pts[i].as_dvec3(), pts[(i + 1) % n].as_dvec3());
                    a.x * b.y - b.x * a.y
                })
                .sum::<f64>()
                .abs()
                / 2.0
        };
        // No overlap: the triangles' areas add up to the polygon's.
        assert!((area(&tris, &pts) - polygon_area).abs() < 1e-6 * polygon_area);
    }

    #[test]
    fn a_fill_that_would_add_a_defect_is_refused() {
        // Collinear points: only zero-area triangles close them.
        let v: Vec<Vec3> = (0..3).map(|i| Vec3::new(i as f32, 0.0, 0.0)).collect();
        let topo = Topology::build(&[]);
        assert!(fill(&[0, 1, 2], &v, &mut Taken { topo: &topo, added: HashSet::new() }).is_none());
        // A square whose both diagonals already exist elsewhere.
        let v = vec![Vec3::ZERO, Vec3::X, Vec3::new(1.0, 1.0, 0.0), Vec3::Y, Vec3::Z];
        let topo = Topology::build(&[[0, 2, 4], [1, 3, 4]]);
        assert!(fill(&[0, 1, 2, 3], &v, &mut Taken { topo: &topo, added: HashSet::new() }).is_none());
    }

    #[test]
    fn figure_eight_boundary_splits_into_two_loops() {
        let mut loops = Vec::new();
        split_simple(&[0, 1, 2, 0, 3, 4], &mut loops);
        assert_eq!(loops, vec![vec![0, 1, 2], vec![0, 3, 4]]);
    }
}
