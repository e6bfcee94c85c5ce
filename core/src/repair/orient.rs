//! Winding: consistent within each body, then outward for each closed body.
//!
//! "Outward" respects nesting: a closed inside-out body wholly inside an
//! odd number of other closed bodies is a cavity (the inside wall of a
//! hollow part) and keeps facing inward, or slicers would fill the hollow.
//! trimesh's `fix_normals` makes every body positive and so fills cavities;
//! we do not. Bodies that already face outward are never reversed, even when
//! nested: assemblies embed parts in one another on purpose.

use glam::DVec3;

use super::topology::{Components, NONMANIFOLD, Topology};

/// What [`make_consistent`] changed, and the components its walk found.
#[derive(Debug, Default)]
pub(crate) struct Consistency {
    /// Faces connected through manifold edges, as [`Components::find`]
    /// would give them (flipping faces does not change them).
    pub(crate) comps: Components,
    /// Faces whose vertex order was reversed.
    pub(crate) flipped: u64,
    /// Manifold edges that still disagree: the body is not orientable
    /// (a Möbius-like surface) or a flipped cycle closes on itself.
    pub(crate) conflicts: u64,
}

/// Flips faces so that every manifold edge is traversed once in each
/// direction, by a walk over each component from its first face. Within a
/// component the smaller of the two consistent orientations (fewer flips)
/// is applied; the outward pass decides the final sign. A component that
/// cannot be oriented (a conflict closes on itself) is left as written.
pub(crate) fn make_consistent(faces: &mut [[u32; 3]], topo: &mut Topology) -> Consistency {
    let n = faces.len();
    let mut seen = vec![false; n];
    let mut flip = vec![false; n];
    let mut stack = Vec::new();
    let mut group = Vec::new();
    let mut out = Consistency::default();
    out.comps.of_face = vec![0; n];
    for seed in 0..n {
        if seen[seed] {
            continue;
        }
        seen[seed] = true;
        group.clear();
        stack.push(seed);
        let conflicts_before = out.conflicts;
        while let Some(f) = stack.pop() {
            group.push(f);
            for k in 0..3 {
                let t = topo.twin[3 * f + k];
                if t >= NONMANIFOLD {
                    continue;
                }
                let (g, j) = ((t / 3) as usize, (t % 3) as usize);
                // Both faces run the edge the same way as stored: one of
                // them must be flipped relative to the other.
                let same = faces[f][k] == faces[g][j];
                let want = same ^ flip[f];
                if !seen[g] {
                    seen[g] = true;
                    flip[g] = want;
                    stack.push(g);
                } else if flip[g] != want {
                    out.conflicts += 1;
                }
            }
        }
        let flips = group.iter().filter(|&&f| flip[f]).count();
        if out.conflicts > conflicts_before {
            // Not orientable: no assignment is consistent, and which one the
            // walk lands on depends on the order it met the faces, so a
            // second repair would flip them again. Leave it as written; the
            // conflicts are reported.
            for &f in &group {
                flip[f] = false;
            }
        } else if flips * 2 > group.len() {
            for &f in &group {
                flip[f] = !flip[f];
            }
        }
        let id = out.comps.members.len() as u32;
        let mut members: Vec<u32> = group.iter().map(|&f| f as u32).collect();
        members.sort_unstable();
        for &f in &members {
            out.comps.of_face[f as usize] = id;
        }
        out.comps.members.push(members);
    }
    for (f, &flipped) in flip.iter().enumerate() {
        if flipped {
            topo.flip(faces, f);
            out.flipped += 1;
        }
    }
    // Each disagreeing edge was seen from both of its faces.
    out.conflicts /= 2;
    out
}

/// One body as the outward pass sees it.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    /// Every edge of the body is shared with exactly one other face of it.
    pub(crate) closed: bool,
    /// Signed volume (flux form, as validation computes it).
    pub(crate) volume: f64,
    /// Surface area.
    pub(crate) area: f64,
    /// Axis-aligned bounds.
    pub(crate) lo: DVec3,
    pub(crate) hi: DVec3,
    /// A point on the body's largest face, used to test nesting.
    pub(crate) probe: DVec3,
}

/// Signed volume of a set of faces (see [`crate::mesh::signed_volume`]).
pub(crate) fn signed_volume(vertices: &[glam::Vec3], faces: &[[u32; 3]], members: &[u32]) -> f64 {
    crate::mesh::signed_volume(vertices, members.iter().map(|&f| &faces[f as usize]))
}

/// Measures every component.
pub(crate) fn measure(
    vertices: &[glam::Vec3],
    faces: &[[u32; 3]],
    topo: &Topology,
    comps: &Components,
) -> Vec<Body> {
    comps
        .members
        .iter()
        .map(|members| {
            let mut body = Body {
                closed: true,
                volume: 0.0,
                area: 0.0,
                lo: DVec3::INFINITY,
                hi: DVec3::NEG_INFINITY,
                probe: DVec3::ZERO,
            };
            let mut largest = -1.0;
            for &f in members {
                let f = f as usize;
                let [a, b, c] = faces[f].map(|i| vertices[i as usize].as_dvec3());
                let cross = (b - a).cross(c - a);
                let area = 0.5 * cross.length();
                body.area += area;
                body.volume += cross.x * (a.x + b.x + c.x) / 6.0;
                body.lo = body.lo.min(a.min(b).min(c));
                body.hi = body.hi.max(a.max(b).max(c));
                if area > largest {
                    largest = area;
                    body.probe = (a + b + c) / 3.0;
                }
                if (0..3).any(|k| topo.twin[3 * f + k] >= NONMANIFOLD) {
                    body.closed = false;
                }
            }
            body
        })
        .collect()
}

/// How many other closed bodies contain body `i` entirely.
///
/// Real files are full of bodies that overlap without being nested
/// (collision meshes, naive assemblies); a cavity must lie wholly inside its
/// container, so its bounding box must, and so must every sampled vertex
/// (up to [`SAMPLES`] spread over its faces, plus the probe point).
fn nesting_depth(
    i: usize,
    bodies: &[Body],
    members: &[Vec<u32>],
    vertices: &[glam::Vec3],
    faces: &[[u32; 3]],
) -> usize {
    let me = &bodies[i];
    let step = members[i].len().div_ceil(SAMPLES).max(1);
    let mut points = vec![me.probe];
    points
        .extend(members[i].iter().step_by(step).map(|&f| vertices[faces[f as usize][0] as usize].as_dvec3()));
    bodies
        .iter()
        .enumerate()
        .filter(|&(j, d)| {
            j != i
                && d.closed
                && d.lo.cmplt(me.lo).all()
                && d.hi.cmpgt(me.hi).all()
                && points.iter().all(|&p| {
                    let hits = members[j]
                        .iter()
                        .filter(|&&f| ray_hits(p, faces[f as usize].map(|v| vertices[v as usize].as_dvec3())))
                        .count();
                    hits % 2 == 1
                })
        })
        .count()
}

/// Points of a body tested for containment.
const SAMPLES: usize = 32;

/// A fixed direction no axis-aligned model edge or face is parallel to, so
/// the ray rarely grazes an edge.
const RAY: DVec3 = DVec3::new(0.5406319, 0.6152923, 0.5738216);

/// Möller–Trumbore in f64: does the ray from `p` along [`RAY`] cross the
/// triangle?
fn ray_hits(p: DVec3, [a, b, c]: [DVec3; 3]) -> bool {
    let (e1, e2) = (b - a, c - a);
    let h = RAY.cross(e2);
    let det = e1.dot(h);
    if det.abs() < 1e-300 {
        return false;
    }
    let inv = 1.0 / det;
    let s = p - a;
    let u = s.dot(h) * inv;
    if !(0.0..=1.0).contains(&u) {
        return false;
    }
    let q = s.cross(e1);
    let v = RAY.dot(q) * inv;
    if v < 0.0 || u + v > 1.0 {
        return false;
    }
    e2.dot(q) * inv > 0.0
}

/// Reverses every closed inside-out body (negative volume) that is not a
/// cavity, i.e. not wholly inside an odd number of other closed bodies.
/// Returns how many bodies were reversed.
pub(crate) fn orient_outward(
    vertices: &[glam::Vec3],
    faces: &mut [[u32; 3]],
    comps: &Components,
    bodies: &mut [Body],
    skip: &[bool],
) -> u64 {
    let mut reversed = 0;
    let decisions: Vec<bool> = (0..bodies.len())
        .map(|i| {
            let b = &bodies[i];
            // Outward bodies are kept as written, nested or not: an
            // assembly may embed one part in another. An inside-out body is
            // reversed unless it is a cavity.
            if skip[i] || !b.closed || b.volume >= 0.0 {
                return false;
            }
            nesting_depth(i, bodies, &comps.members, vertices, faces).is_multiple_of(2)
        })
        .collect();
    for (i, reverse) in decisions.into_iter().enumerate() {
        if reverse {
            for &f in &comps.members[i] {
                faces[f as usize].swap(1, 2);
            }
            bodies[i].volume = -bodies[i].volume;
            reversed += 1;
        }
    }
    reversed
}

/// Turns every open body outward before its holes are traced, judged by
/// the signed volume of the cone from its area-weighted centroid to its
/// faces. Two pieces of one surface that touch only at a vertex are oriented
/// independently by [`make_consistent`]; unless both face out, their rim
/// edges run against each other and never close into a loop. Bodies with
/// no clear sign (flat sheets) are left alone, so this is idempotent.
pub(crate) fn open_outward(
    vertices: &[glam::Vec3],
    faces: &mut [[u32; 3]],
    topo: &mut Topology,
    comps: &Components,
    flat: f64,
) -> u64 {
    let mut reversed = 0;
    for members in &comps.members {
        let open = members.iter().any(|&f| (0..3).any(|k| topo.twin[3 * f as usize + k] >= NONMANIFOLD));
        if !open {
            continue;
        }
        let tri = |f: u32| faces[f as usize].map(|v| vertices[v as usize].as_dvec3());
        let (mut area, mut centroid) = (0.0, DVec3::ZERO);
        for &f in members {
            let [a, b, c] = tri(f);
            let w = 0.5 * (b - a).cross(c - a).length();
            area += w;
            centroid += w * (a + b + c) / 3.0;
        }
        if area <= 0.0 {
            continue;
        }
        let centroid = centroid / area;
        let cone: f64 = members
            .iter()
            .map(|&f| {
                let [a, b, c] = tri(f);
                (a - centroid).dot((b - centroid).cross(c - centroid)) / 6.0
            })
            .sum();
        if cone < -flat * area.powf(1.5) {
            for &f in members {
                topo.flip(faces, f as usize);
            }
            reversed += 1;
        }
    }
    reversed
}
