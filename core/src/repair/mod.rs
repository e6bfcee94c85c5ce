//! Repair: turn a broken mesh into a printable volume where that is
//! possible, and say exactly what was done.
//!
//! [`repair`] runs these passes in order. Each one only removes a defect
//! or leaves the mesh as it was, so no defect count grows, and a repaired
//! mesh goes through every pass unchanged (both tested as properties).
//!
//! 1. **Weld** vertices closer than a tolerance (by default
//!    [`AUTO_TOLERANCE`] times the bounding-box diagonal: below f32
//!    precision for any real detail, above CAD export noise).
//! 2. **Collapsed faces** (a repeated vertex) are removed: they have no
//!    area and no edges.
//! 3. **Zero-area faces** (three distinct, collinear vertices) are removed
//!    by splitting the face across their longest edge at their middle
//!    vertex, so the surface stays closed and its shape is unchanged. Where
//!    that neighbour is missing or ambiguous the face is kept: dropping it
//!    would open a hole.
//! 4. **Duplicate faces** (same three vertices in either order): the first
//!    copy is kept.
//! 5. **Winding** is made consistent within each body (faces connected
//!    through edges shared by exactly two faces).
//! 6. **Non-manifold edges** where bodies touch (each body using the edge
//!    exactly twice: two parts touching along an edge) are split: every
//!    body but the first gets its own copies of the edge's vertices. Other
//!    non-manifold edges are left: any split would open them.
//! 7. **Holes** are filled: every boundary loop is triangulated without
//!    adding vertices (`holes`). A fill that would only close a flat sheet
//!    (a body with no volume, such as a lone triangle) is taken back: there
//!    is no solid to recover, and a zero-thickness "solid" only misleads a
//!    slicer.
//! 8. **Orientation**: every inside-out closed body is reversed, except
//!    cavities (wholly inside an odd number of other bodies), which keep
//!    facing inward. Bodies facing out are never reversed, even when nested
//!    (assemblies embed parts on purpose). Open pieces are turned outward
//!    before their rims are traced (step 7).
//! 9. The vertex copies of step 6 are moved a hair (well above the weld
//!    tolerance, far below print resolution) into their own body, so that
//!    the parts stay separate when the mesh is written as STL, which only
//!    has positions.
//! 10. On request, **stray bodies** are removed: bodies still open, and
//!     flat sheets.
//!
//! Normals are not stored in the mesh; [`to_binary_stl`] computes them from
//! the winding.

mod holes;
mod orient;
mod topology;

use std::collections::HashMap;

use glam::{DVec3, Vec3};
use rayon::prelude::*;
use serde::Serialize;

use crate::mesh::IndexedMesh;
use topology::{Components, Topology, edge_key};

/// Default weld tolerance, relative to the bounding-box diagonal. f32
/// carries about 7 digits, so positions closer than this are noise.
pub const AUTO_TOLERANCE: f32 = 1e-6;

/// A closed body with `|volume| <= FLAT * area^1.5` encloses nothing.
const FLAT: f64 = 1e-6;

/// How to repair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RepairOptions {
    /// Weld distance in file units; `None` picks [`AUTO_TOLERANCE`] times
    /// the bounding-box diagonal; `Some(0.0)` welds exact matches only.
    pub weld_tolerance: Option<f32>,
    /// Remove bodies that are still open after hole filling, and flat
    /// sheets (stray faces, loose fragments).
    pub remove_unconnected: bool,
}

/// What [`repair`] did, with counts. Every field is part of the JSON that
/// `strata repair --report` writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepairLog {
    /// The weld tolerance used (file units).
    pub weld_tolerance: f32,
    /// Vertices merged into a neighbour within the tolerance.
    pub vertices_merged: u64,
    /// Faces with a repeated vertex, removed.
    pub collapsed_faces_removed: u64,
    /// Faces with three collinear vertices, removed.
    pub zero_area_faces_removed: u64,
    /// Neighbouring faces split at the middle vertex of a removed
    /// zero-area face, keeping the surface closed.
    pub faces_split: u64,
    /// Extra copies of faces, removed.
    pub duplicate_faces_removed: u64,
    /// Faces reversed to make winding consistent within their body.
    pub faces_flipped: u64,
    /// Edges whose faces still disagree (a non-orientable surface).
    pub orientation_conflicts: u64,
    /// Non-manifold edges split between the bodies that meet there.
    pub nonmanifold_edges_split: u64,
    /// Vertex copies made for that split, moved into their own body.
    pub vertices_separated: u64,
    /// Distance those copies were moved (file units).
    pub separation: f32,
    /// Boundary loops triangulated.
    pub holes_filled: u64,
    /// Faces added by hole filling.
    pub hole_faces_added: u64,
    /// Loops left open: chains that do not close, or the rims of flat
    /// sheets that would enclose no volume.
    pub holes_left_open: u64,
    /// Closed bodies reversed to face outward (or inward, for cavities).
    pub bodies_reversed: u64,
    /// Open or flat bodies removed (`remove_unconnected`).
    pub stray_bodies_removed: u64,
    /// Faces those bodies had.
    pub stray_faces_removed: u64,
    /// Faces in the result; their normals are recomputed from the winding
    /// when written.
    pub faces_out: u64,
}

impl RepairLog {
    /// Adds a later round's counts; what is left open is the later round's.
    fn absorb(&mut self, later: &RepairLog) {
        self.vertices_merged += later.vertices_merged;
        self.collapsed_faces_removed += later.collapsed_faces_removed;
        self.zero_area_faces_removed += later.zero_area_faces_removed;
        self.faces_split += later.faces_split;
        self.duplicate_faces_removed += later.duplicate_faces_removed;
        self.faces_flipped += later.faces_flipped;
        self.orientation_conflicts = later.orientation_conflicts;
        self.nonmanifold_edges_split += later.nonmanifold_edges_split;
        self.vertices_separated += later.vertices_separated;
        self.separation = self.separation.max(later.separation);
        self.holes_filled += later.holes_filled;
        self.hole_faces_added += later.hole_faces_added;
        self.holes_left_open = later.holes_left_open;
        self.bodies_reversed += later.bodies_reversed;
        self.stray_bodies_removed += later.stray_bodies_removed;
        self.stray_faces_removed += later.stray_faces_removed;
        self.faces_out = later.faces_out;
    }

    /// Whether any pass changed the mesh.
    pub fn changed(&self) -> bool {
        self.vertices_merged
            + self.collapsed_faces_removed
            + self.zero_area_faces_removed
            + self.faces_split
            + self.duplicate_faces_removed
            + self.faces_flipped
            + self.nonmanifold_edges_split
            + self.holes_filled
            + self.bodies_reversed
            + self.stray_bodies_removed
            > 0
    }
}

/// A repaired mesh and what was done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Repaired {
    /// The mesh, vertices renumbered in first-occurrence order.
    pub mesh: IndexedMesh,
    /// The passes' counts.
    pub log: RepairLog,
    /// Validation of `mesh` (without soup facts: `triangles` is the face
    /// count, normals are not judged).
    pub report: crate::ValidationReport,
}

/// Most rounds of passes [`repair`] runs.
const ROUNDS: usize = 6;

/// Repairs a mesh (see the module documentation for the passes).
///
/// The passes run in rounds. Each round is validated against its input: a
/// round that would raise any defect count (the passes interact in rare
/// soups, e.g. a fill along the edge of a face too flat to split) is run
/// again without hole filling, and if that too would make things worse the
/// mesh is kept as it was. So no defect count ever grows, by construction.
/// Rounds go on while holes, flat faces or non-manifold edges remain and
/// the last round changed
/// something: a rim shared by two pieces that were oriented apart only
/// closes into a loop once the pieces around it have been filled and
/// turned outward. A repaired mesh goes through a round unchanged, so
/// repairing it again does nothing.
pub fn repair(mesh: IndexedMesh, options: &RepairOptions) -> Repaired {
    let before = report_of(&mesh);
    repair_validated(mesh, &before, options)
}

/// [`repair`] for a mesh whose validation report the caller already has
/// (from [`inspect`](crate::inspect)), saving one validation.
pub fn repair_validated(
    mesh: IndexedMesh,
    before: &crate::ValidationReport,
    options: &RepairOptions,
) -> Repaired {
    // Strays are removed only once rounds without removal change nothing:
    // a piece still open after the first round may close in the second.
    // Removal then runs in rounds of its own until nothing changes, since
    // removing a stray can free an edge for a split.
    let keep = RepairOptions { remove_unconnected: false, ..*options };
    let mut removing = false;
    let mut state = before.clone();
    // The last validation of a round's own result, when one was accepted.
    let mut fresh = None;
    let mut done = Repaired { mesh, log: RepairLog::default(), report: crate::ValidationReport::default() };
    let mut first = true;
    for _ in 0..2 * ROUNDS {
        let round_options = if removing { options } else { &keep };
        match guarded_round(&done.mesh, &state, round_options) {
            Ok((next, report)) => {
                if first {
                    done.log = next.log;
                } else {
                    done.log.absorb(&next.log);
                }
                first = false;
                done.mesh = next.mesh;
                state = report;
                fresh = Some(state.clone());
            }
            Err(unchanged) => {
                if first {
                    // Nothing to do (or nothing safe): still say what is open.
                    done.log.weld_tolerance = unchanged.weld_tolerance;
                    done.log.holes_left_open = unchanged.holes_left_open;
                    done.log.orientation_conflicts = unchanged.orientation_conflicts;
                }
                if removing || !options.remove_unconnected || state.boundary_edges == 0 {
                    break;
                }
                removing = true;
                continue;
            }
        }
        // Another round can only help where something is still open, flat
        // or non-manifold (a fill can make a non-manifold edge splittable).
        if state.boundary_edges == 0 && state.degenerate_faces == 0 && state.nonmanifold_edges == 0 {
            break;
        }
    }
    done.log.faces_out = done.mesh.faces.len() as u64;
    done.report = fresh.unwrap_or_else(|| report_of(&done.mesh));
    done
}

/// One round, or the same round without hole filling if the full one
/// would raise a defect count. `Err` carries the log of a round that
/// changed nothing (or nothing without making something worse).
fn guarded_round(
    mesh: &IndexedMesh,
    before: &crate::ValidationReport,
    options: &RepairOptions,
) -> Result<(Repaired, crate::ValidationReport), Box<RepairLog>> {
    let mut first_log = None;
    for fill in [true, false] {
        let next = repair_round(mesh.clone(), options, fill);
        if !next.log.changed() && next.mesh == *mesh {
            return Err(Box::new(first_log.unwrap_or(next.log)));
        }
        let report = report_of(&next.mesh);
        if !worse(&report, before) {
            return Ok((next, report));
        }
        // Rejected: nothing of it is applied, so every loop it saw is open.
        let open = next.log.holes_left_open + next.log.holes_filled;
        first_log.get_or_insert(RepairLog { holes_left_open: open, ..next.log });
    }
    Err(Box::new(first_log.unwrap_or_default()))
}

fn report_of(mesh: &IndexedMesh) -> crate::ValidationReport {
    crate::validate::validate(mesh, &crate::SoupStats::default(), &crate::ValidateOptions::default())
}

/// Whether `a` has more of any defect than `b`.
fn worse(a: &crate::ValidationReport, b: &crate::ValidationReport) -> bool {
    a.boundary_edges > b.boundary_edges
        || a.nonmanifold_edges > b.nonmanifold_edges
        || a.misoriented_edges > b.misoriented_edges
        || a.degenerate_faces > b.degenerate_faces
        || a.duplicate_faces > b.duplicate_faces
}

fn repair_round(mut mesh: IndexedMesh, options: &RepairOptions, fill: bool) -> Repaired {
    let mut log = RepairLog::default();
    let diagonal = diagonal(&mesh.vertices);
    // An automatic tolerance beyond f32's range means no sensible weld.
    let tolerance = options.weld_tolerance.unwrap_or((f64::from(AUTO_TOLERANCE) * diagonal) as f32);
    if tolerance > 0.0 && tolerance.is_finite() {
        log.weld_tolerance = tolerance;
        let before = mesh.vertices.len();
        crate::mesh::weld_within(&mut mesh, tolerance);
        log.vertices_merged = (before - mesh.vertices.len()) as u64;
    }
    let IndexedMesh { mut vertices, mut faces } = mesh;

    let before = faces.len();
    faces.retain(|f| !collapsed(f));
    log.collapsed_faces_removed = (before - faces.len()) as u64;

    // Duplicates first: a copy on a flat face's long edge would make the
    // edge look shared by two neighbours and block the split.
    remove_duplicates(&mut faces, &mut log);
    remove_zero_area(&vertices, &mut faces, &mut log);
    if log.faces_split > 0 {
        remove_duplicates(&mut faces, &mut log);
    }

    let mut topo = Topology::build(&faces);
    let consistency = orient::make_consistent(&mut faces, &mut topo);
    log.faces_flipped = consistency.flipped;
    log.orientation_conflicts = consistency.conflicts;

    let separated = split_nonmanifold(&mut vertices, &mut faces, &topo, &consistency.comps, &mut log);
    let mut topo = if separated.is_empty() { topo } else { Topology::build(&faces) };
    // The walk's components still hold: flips and splits of edges between
    // components do not change which faces are connected.
    let open_reversed = orient::open_outward(&vertices, &mut faces, &mut topo, &consistency.comps, FLAT);

    let filled_from = faces.len();
    let (loops, open_chains) = if fill { holes::boundary_loops(&faces, &topo) } else { (Vec::new(), 0) };
    log.holes_left_open = open_chains;
    let mut loop_of_fill = Vec::new();
    let mut taken = holes::Taken { topo: &topo, added: Default::default() };
    let mut refused = 0;
    for (i, lp) in loops.iter().enumerate() {
        match holes::fill(lp, &vertices, &mut taken) {
            Some(tris) => {
                loop_of_fill.extend(std::iter::repeat_n(i as u32, tris.len()));
                faces.extend(tris);
            }
            None => refused += 1,
        }
    }

    topo.extend(&faces, filled_from);
    let comps = Components::find(&faces, &topo);
    let mut bodies = orient::measure(&vertices, &faces, &topo, &comps);
    let mut removed = vec![false; faces.len()];
    let mut flat = vec![false; bodies.len()];
    let mut loop_undone = vec![false; loops.len()];
    for (c, body) in bodies.iter().enumerate() {
        if body.closed && body.volume.abs() <= FLAT * body.area.powf(1.5) {
            flat[c] = true;
            for &f in comps.members[c].iter().filter(|&&f| f as usize >= filled_from) {
                removed[f as usize] = true;
                loop_undone[loop_of_fill[f as usize - filled_from] as usize] = true;
            }
        }
    }
    let undone = loop_undone.iter().filter(|&&u| u).count() as u64;
    log.holes_filled = loops.len() as u64 - undone - refused;
    log.holes_left_open += undone + refused;
    log.hole_faces_added = (filled_from..faces.len()).filter(|&f| !removed[f]).count() as u64;
    // Closed as the faces now stand: a flat body whose fills were taken
    // back is open again; one that was closed without fills stays closed.
    let closed_now: Vec<bool> = bodies
        .iter()
        .enumerate()
        .map(|(c, b)| b.closed && !comps.members[c].iter().any(|&f| removed[f as usize]))
        .collect();
    for (c, body) in bodies.iter_mut().enumerate() {
        if flat[c] {
            body.closed = false;
        }
    }
    log.bodies_reversed =
        open_reversed + orient::orient_outward(&vertices, &mut faces, &comps, &mut bodies, &flat);

    let moved = separate(&mut vertices, &faces, &removed, &separated, diagonal, tolerance, &mut log);
    if !moved.is_empty() {
        // A hair-thin body can change sign when its vertices move: judge
        // the bodies that moved again, so a second repair finds nothing.
        let mut touched = vec![false; bodies.len()];
        for (f, face) in faces.iter().enumerate() {
            if !removed[f] && face.iter().any(|v| moved.contains(v)) {
                touched[comps.of_face[f] as usize] = true;
            }
        }
        for (c, body) in bodies.iter_mut().enumerate().filter(|(c, _)| touched[*c]) {
            body.closed = closed_now[c];
            body.volume = orient::signed_volume(&vertices, &faces, &comps.members[c]);
        }
        let skip: Vec<bool> = (0..bodies.len()).map(|c| !touched[c] || !closed_now[c]).collect();
        log.bodies_reversed += orient::orient_outward(&vertices, &mut faces, &comps, &mut bodies, &skip);
    }

    if options.remove_unconnected {
        for (c, body) in bodies.iter().enumerate() {
            if !body.closed {
                log.stray_bodies_removed += 1;
                for &f in &comps.members[c] {
                    if !removed[f as usize] {
                        log.stray_faces_removed += 1;
                    }
                    removed[f as usize] = true;
                }
            }
        }
    }
    let mut k = 0;
    faces.retain(|_| {
        k += 1;
        !removed[k - 1]
    });
    let mesh = compact(&vertices, faces);
    log.faces_out = mesh.faces.len() as u64;
    Repaired { mesh, log, report: crate::ValidationReport::default() }
}

fn collapsed(f: &[u32; 3]) -> bool {
    f[0] == f[1] || f[1] == f[2] || f[0] == f[2]
}

/// The bounding-box diagonal, in f64: coordinates near f32's limit (which
/// fuzzed files have) would overflow it to infinity in f32.
fn diagonal(vertices: &[Vec3]) -> f64 {
    let Some(first) = vertices.first() else { return 0.0 };
    let (lo, hi) = vertices.iter().fold((*first, *first), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    lo.as_dvec3().distance(hi.as_dvec3())
}

/// Twice the area vector of a face, in f64 as validation computes it, so
/// "zero area" means the same thing in both.
fn cross(vertices: &[Vec3], f: &[u32; 3]) -> DVec3 {
    let [a, b, c] = f.map(|i| vertices[i as usize].as_dvec3());
    (b - a).cross(c - a)
}

/// Removes faces whose three distinct vertices are collinear. The middle
/// vertex lies on the longest edge, so the face across that edge is split
/// there into two faces in its own plane: the surface stays closed and
/// keeps its shape. Runs until nothing changes (a split half can itself be
/// flat), at most a few rounds.
fn remove_zero_area(vertices: &[Vec3], faces: &mut Vec<[u32; 3]>, log: &mut RepairLog) {
    for _round in 0..8 {
        let flat: Vec<usize> =
            (0..faces.len()).filter(|&f| cross(vertices, &faces[f]) == DVec3::ZERO).collect();
        if flat.is_empty() {
            return;
        }
        // Each flat face's longest edge and middle vertex; one flat face
        // per edge per round (the first in face order).
        let mut by_edge: HashMap<u64, usize> = HashMap::with_capacity(flat.len());
        let mut long_edge = Vec::with_capacity(flat.len());
        for &f in &flat {
            let t = faces[f];
            let p = t.map(|i| vertices[i as usize].as_dvec3());
            let len = |k: usize| p[k].distance_squared(p[(k + 1) % 3]);
            let k = (0..3).max_by(|&a, &b| len(a).total_cmp(&len(b))).unwrap_or(0);
            let key = edge_key(t[k], t[(k + 1) % 3]);
            by_edge.entry(key).or_insert(f);
            long_edge.push((key, t[(k + 2) % 3]));
        }
        // The faces (not flat themselves) that use each such edge.
        let mut is_flat = vec![false; faces.len()];
        for &f in &flat {
            is_flat[f] = true;
        }
        let mut users: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
        for (g, t) in faces.iter().enumerate().filter(|(g, _)| !is_flat[*g]) {
            for k in 0..3 {
                let key = edge_key(t[k], t[(k + 1) % 3]);
                if by_edge.contains_key(&key) {
                    users.entry(key).or_default().push((g, k));
                }
            }
        }
        let mut drop = vec![false; faces.len()];
        let mut split_now = vec![false; faces.len()];
        let mut added = Vec::new();
        let mut progress = false;
        for (&f, &(key, middle)) in flat.iter().zip(&long_edge) {
            if by_edge.get(&key) != Some(&f) {
                continue;
            }
            match users.get(&key).map(Vec::as_slice) {
                Some(&[(g, k)]) if !split_now[g] => {
                    let t = faces[g];
                    let (p, q, d) = (t[k], t[(k + 1) % 3], t[(k + 2) % 3]);
                    if middle == d {
                        continue;
                    }
                    split_now[g] = true;
                    faces[g] = [p, middle, d];
                    added.push([middle, q, d]);
                    log.faces_split += 1;
                }
                // Its neighbour was split this round: next round.
                Some(&[_]) => continue,
                // No single neighbour to split (a rim, or an edge shared
                // by several faces): dropping the face would open its two
                // short edges, trading a degenerate face for a hole. Keep
                // it; validation still reports it.
                _ => continue,
            }
            drop[f] = true;
            log.zero_area_faces_removed += 1;
            progress = true;
        }
        let mut i = 0;
        faces.retain(|_| {
            i += 1;
            !drop[i - 1]
        });
        faces.extend(added);
        if !progress {
            return;
        }
    }
}

/// Keeps the first copy of faces on the same three vertices.
fn remove_duplicates(faces: &mut Vec<[u32; 3]>, log: &mut RepairLog) {
    let mut keys: Vec<([u32; 3], u32)> = faces
        .par_iter()
        .enumerate()
        .map(|(i, f)| {
            let mut k = *f;
            k.sort_unstable();
            (k, i as u32)
        })
        .collect();
    keys.par_sort_unstable();
    let mut drop = vec![false; faces.len()];
    let mut any = false;
    for run in keys.chunk_by(|a, b| a.0 == b.0) {
        for dup in &run[1..] {
            drop[dup.1 as usize] = true;
            any = true;
        }
    }
    if any {
        let before = faces.len();
        let mut i = 0;
        faces.retain(|_| {
            i += 1;
            !drop[i - 1]
        });
        log.duplicate_faces_removed += (before - faces.len()) as u64;
    }
}

/// Gives every body but the first its own copies of the vertices of each
/// non-manifold edge. Returns the new copies (to be moved apart later).
fn split_nonmanifold(
    vertices: &mut Vec<Vec3>,
    faces: &mut [[u32; 3]],
    topo: &Topology,
    comps: &Components,
    log: &mut RepairLog,
) -> Vec<u32> {
    if topo.nonmanifold.is_empty() {
        return Vec::new();
    }
    // Uses of each non-manifold edge per component. An edge is split only
    // where every body at it uses it exactly twice (two parts touching
    // along an edge): each copy is then an ordinary manifold edge. Any other
    // split would trade the non-manifold edge for boundary edges.
    let mut uses: HashMap<u64, Vec<(u32, u32)>> = topo.nonmanifold.iter().map(|&k| (k, Vec::new())).collect();
    for (f, t) in faces.iter().enumerate() {
        for k in 0..3 {
            if let Some(list) = uses.get_mut(&edge_key(t[k], t[(k + 1) % 3])) {
                let c = comps.of_face[f];
                match list.iter_mut().find(|e| e.0 == c) {
                    Some(e) => e.1 += 1,
                    None => list.push((c, 1)),
                }
            }
        }
    }
    let clean = |key: &u64| uses[key].iter().all(|&(_, n)| n == 2);
    let mut unsafe_vertex = std::collections::HashSet::new();
    for key in topo.nonmanifold.iter().filter(|k| !clean(k)) {
        unsafe_vertex.extend([(*key >> 32) as u32, *key as u32]);
    }
    let mut at_vertex: HashMap<u32, Vec<u32>> = HashMap::new();
    for key in topo.nonmanifold.iter().filter(|k| clean(k)) {
        for v in [(*key >> 32) as u32, *key as u32] {
            if !unsafe_vertex.contains(&v) {
                at_vertex.entry(v).or_default();
            }
        }
    }
    // Which components use each such vertex, in face order.
    for (f, t) in faces.iter().enumerate() {
        for &v in t {
            if let Some(list) = at_vertex.get_mut(&v) {
                let c = comps.of_face[f];
                if !list.contains(&c) {
                    list.push(c);
                }
            }
        }
    }
    let mut copy: HashMap<(u32, u32), u32> = HashMap::new();
    let mut made = Vec::new();
    for (f, t) in faces.iter_mut().enumerate() {
        let c = comps.of_face[f];
        for v in t.iter_mut() {
            let Some(list) = at_vertex.get(v) else { continue };
            if list.first() == Some(&c) {
                continue;
            }
            let id = *copy.entry((*v, c)).or_insert_with(|| {
                vertices.push(vertices[*v as usize]);
                made.push(vertices.len() as u32 - 1);
                vertices.len() as u32 - 1
            });
            *v = id;
        }
    }
    if !made.is_empty() {
        let after = Topology::build(faces);
        log.nonmanifold_edges_split = (topo.nonmanifold.len() - after.nonmanifold.len()) as u64;
    }
    log.vertices_separated = made.len() as u64;
    made
}

/// Moves each vertex copy of the non-manifold split a small distance into
/// its own body (against the body's area-weighted normal there), so the
/// bodies no longer share positions: STL stores positions only, and would
/// join them again on reading. Returns the vertices it moved.
fn separate(
    vertices: &mut [Vec3],
    faces: &[[u32; 3]],
    removed: &[bool],
    copies: &[u32],
    diagonal: f64,
    tolerance: f32,
    log: &mut RepairLog,
) -> std::collections::HashSet<u32> {
    let mut moved_ids = std::collections::HashSet::new();
    if copies.is_empty() {
        return moved_ids;
    }
    let largest = vertices.iter().fold(0.0f32, |m, v| m.max(v.abs().max_element()));
    // Above the weld tolerance (a second repair must not join them again)
    // and above f32 spacing at this magnitude and trimesh's 1e-8 merge
    // grid, but far below any printer's resolution.
    let ulp = f32::EPSILON * largest.max(f32::MIN_POSITIVE);
    let step = f64::from((2.5 * tolerance).max(64.0 * ulp).max(1e-6)).max(1e-7 * diagonal);
    log.separation = step as f32;
    let mut normal: HashMap<u32, DVec3> = copies.iter().map(|&v| (v, DVec3::ZERO)).collect();
    for f in faces.iter().zip(removed).filter(|(_, gone)| !**gone).map(|(f, _)| f) {
        let n = cross(vertices, f);
        for v in f {
            if let Some(acc) = normal.get_mut(v) {
                *acc += n;
            }
        }
    }
    for &v in copies {
        let n = normal[&v].normalize_or_zero();
        // Never move a vertex off the finite range (or by a step that is
        // not finite): it stays where it was, joined to the other body.
        let moved = vertices[v as usize].as_dvec3() - n * step;
        if moved.is_finite() && moved.abs().max_element() <= f64::from(f32::MAX) {
            vertices[v as usize] = moved.as_vec3();
            moved_ids.insert(v);
        }
    }
    moved_ids
}

/// Drops unused vertices and numbers the rest in order of first use by the
/// faces, as a weld of the written file would.
fn compact(vertices: &[Vec3], mut faces: Vec<[u32; 3]>) -> IndexedMesh {
    let mut new_id = vec![u32::MAX; vertices.len()];
    let mut out = Vec::new();
    for f in &mut faces {
        for v in f.iter_mut() {
            let slot = &mut new_id[*v as usize];
            if *slot == u32::MAX {
                *slot = out.len() as u32;
                out.push(vertices[*v as usize]);
            }
            *v = *slot;
        }
    }
    IndexedMesh { vertices: out, faces }
}

/// Writes a mesh as binary STL with normals computed from the winding and
/// an 80-byte header that says what the file is (never starting with
/// `solid`, which would make other readers take it for ASCII).
pub fn to_binary_stl(mesh: &IndexedMesh, header: &str) -> Vec<u8> {
    let header = if header.trim_start().to_ascii_lowercase().starts_with("solid") {
        format!("STL {header}")
    } else {
        header.to_string()
    };
    let count = u32::try_from(mesh.faces.len()).unwrap_or(u32::MAX) as usize;
    let mut out = vec![0u8; 84 + 50 * count];
    let mut head = [b' '; 80];
    let take = header.len().min(80);
    head[..take].copy_from_slice(&header.as_bytes()[..take]);
    out[..80].copy_from_slice(&head);
    out[80..84].copy_from_slice(&(count as u32).to_le_bytes());
    // Records are independent 50-byte slots: fill them on all cores.
    out[84..].par_chunks_mut(50).zip(&mesh.faces[..count]).for_each(|(record, f)| {
        let [a, b, c] = f.map(|i| mesh.vertices[i as usize]);
        let n = (b - a).cross(c - a).normalize_or_zero();
        for (slot, x) in record[..48]
            .chunks_exact_mut(4)
            .zip(n.to_array().into_iter().chain([a, b, c].into_iter().flat_map(|v| v.to_array())))
        {
            slot.copy_from_slice(&x.to_le_bytes());
        }
    });
    out
}

#[cfg(test)]
mod tests;
