//! The indexed mesh: unique vertices and triangles that point at them.
//!
//! STL is a triangle soup: every vertex is written once per facet that
//! uses it (about six times on a closed mesh). Welding turns the soup into
//! an [`IndexedMesh`], which is what topology needs (edges are pairs of
//! vertex ids) and what later stages store and stream.
//!
//! # Exact weld, in parallel
//!
//! Two positions are the same vertex when their coordinates are equal as
//! values (bit patterns after mapping `-0.0` to `+0.0`). The soup is cut
//! into fixed chunks of facets; each chunk is welded on its own rayon task
//! into a small, cache-resident hash table, producing chunk-local ids.
//! Meanwhile one merger thread takes the finished chunks in file order and
//! gives every distinct key a global id, reading keys again from the source
//! rather than keeping them, so the scratch beside the mesh is one tagged
//! table. The merge is sequential; running it beside the chunk welding lets
//! the two overlap on two cores.
//!
//! # Vertex order
//!
//! Vertices are numbered in order of first occurrence. That order depends
//! only on the facets, never on the thread count; it is a fixed point
//! (welding the triangles of a welded mesh gives the same mesh, ids
//! included, tested as a property); and it keeps the ids of neighbouring
//! faces close, which every later pass over the mesh relies on for cache
//! locality. (A merge partitioned by hash over both cores was tried: it
//! welded 15% faster but scattered ids so badly that validation became
//! three times slower.)
//!
//! # Tolerance weld
//!
//! CAD exports often write `3.8e-33` where a neighbouring facet has `0.0`.
//! [`WeldOptions::tolerance`] additionally merges vertices closer than a
//! distance (transitively: chains of close vertices become one), using a
//! grid of cells of that size over the already exactly-welded vertices.
//! Each group keeps the position and the place in the order of its
//! lowest-numbered vertex, which is also its first occurrence, so the result
//! is in first-occurrence order like an exact weld.

use glam::Vec3;
use rayon::prelude::*;

use crate::ParseError;
use crate::stl::{FacetSource, Facets, Stl};

/// A triangle mesh with shared vertices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexedMesh {
    /// Unique vertex positions.
    pub vertices: Vec<Vec3>,
    /// Triangles as indices into `vertices`, in the file's facet order.
    pub faces: Vec<[u32; 3]>,
}

impl IndexedMesh {
    /// Bytes the mesh's own buffers hold (for memory budgets and reports).
    pub fn heap_bytes(&self) -> usize {
        self.vertices.capacity() * std::mem::size_of::<Vec3>()
            + self.faces.capacity() * std::mem::size_of::<[u32; 3]>()
    }

    /// The three corner positions of face `f`.
    #[inline]
    pub fn triangle(&self, f: usize) -> [Vec3; 3] {
        let [a, b, c] = self.faces[f];
        [self.vertices[a as usize], self.vertices[b as usize], self.vertices[c as usize]]
    }
}

/// A mesh is also a facet source (without stored normals), so that its
/// triangles can be welded again.
impl FacetSource for IndexedMesh {
    fn facet_count(&self) -> usize {
        self.faces.len()
    }

    #[inline]
    fn vertices(&self, i: usize) -> [[f32; 3]; 3] {
        self.triangle(i).map(|v| v.to_array())
    }

    fn normal(&self, _: usize) -> [f32; 3] {
        [0.0; 3]
    }
}

/// Signed volume enclosed by `faces` (negative when they are wound inside
/// out), in the flux form validation uses: one helper for repair's bodies
/// and the slicer's whole-mesh check.
pub(crate) fn signed_volume<'a>(vertices: &[Vec3], faces: impl Iterator<Item = &'a [u32; 3]>) -> f64 {
    faces
        .map(|f| {
            let [a, b, c] = f.map(|i| vertices[i as usize].as_dvec3());
            (b - a).cross(c - a).x * (a.x + b.x + c.x) / 6.0
        })
        .sum()
}

/// Triangles over a list of positions, as OBJ and 3MF store them: indexed,
/// but not welded (the files split vertices along seams and per object), so
/// they are welded by position like any soup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexedTriangles {
    /// Vertex positions as the file gives them.
    pub positions: Vec<[f32; 3]>,
    /// Triangles as indices into `positions`.
    pub triangles: Vec<[u32; 3]>,
}

impl FacetSource for IndexedTriangles {
    fn facet_count(&self) -> usize {
        self.triangles.len()
    }

    #[inline]
    fn vertices(&self, i: usize) -> [[f32; 3]; 3] {
        self.triangles[i].map(|v| self.positions[v as usize])
    }

    fn normal(&self, _: usize) -> [f32; 3] {
        [0.0; 3]
    }
}

/// How to weld a soup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WeldOptions {
    /// Also merge vertices closer than this distance (file units). `None`
    /// welds exactly equal positions only.
    pub tolerance: Option<f32>,
}

/// Facts about the soup that welding sees once and validation reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoupStats {
    /// Facets in the file.
    pub facets: u64,
    /// Facets left out because a coordinate was NaN or infinite.
    pub nonfinite_facets: u64,
    /// Index of the first such facet.
    pub first_nonfinite: Option<u64>,
    /// Facets whose stored normal points more than 45 degrees away from
    /// the normal their vertex order implies (zero normals excluded).
    pub normal_mismatches: u64,
    /// Facets whose stored normal is zero or not finite (common and
    /// harmless: many exporters leave normals out).
    pub zero_normals: u64,
}

impl SoupStats {
    /// Adds one chunk's findings; chunks must come in file order so that
    /// `first_nonfinite` is the first in the file.
    fn absorb(&mut self, chunk: &ChunkWeld) {
        self.nonfinite_facets += chunk.nonfinite;
        self.normal_mismatches += chunk.normal_mismatches;
        self.zero_normals += chunk.zero_normals;
        if self.first_nonfinite.is_none() {
            self.first_nonfinite = chunk.first_nonfinite;
        }
    }
}

/// Facets per weld chunk: small enough that a chunk's table stays in L2.
const CHUNK: usize = 8 * 1024;
/// Chunks from which the exact weld runs its merge on a thread of its own,
/// beside the chunk welding (see `weld_exact`): 196,608 faces.
const OVERLAP_MIN_CHUNKS: usize = 24;
const EMPTY: u32 = u32::MAX;

/// Welds a parsed STL file.
pub fn weld_stl(stl: &Stl<'_>, options: &WeldOptions) -> Result<(IndexedMesh, SoupStats), ParseError> {
    match stl.facets() {
        Facets::Binary(records) => weld(records, options),
        Facets::Ascii(facets) => weld(facets, options),
    }
}

/// Welds any facet source into an indexed mesh.
pub fn weld<S: FacetSource + ?Sized>(
    source: &S,
    options: &WeldOptions,
) -> Result<(IndexedMesh, SoupStats), ParseError> {
    let n = source.facet_count();
    if n as u64 * 3 >= u64::from(EMPTY) {
        return Err(ParseError::TooLarge { facets: n as u64 });
    }
    let mut faces = vec![[0u32; 3]; n];
    let mut stats = SoupStats { facets: n as u64, ..SoupStats::default() };
    let vertices = weld_exact(source, &mut faces, &mut stats);
    if stats.nonfinite_facets > 0 {
        faces.retain(|f| f[0] != EMPTY);
    }
    let mut mesh = IndexedMesh { vertices, faces };
    if let Some(tolerance) = options.tolerance.filter(|t| *t > 0.0 && t.is_finite()) {
        weld_within(&mut mesh, tolerance);
    }
    Ok((mesh, stats))
}

/// A position's identity: coordinate bits with `-0.0` mapped to `+0.0`.
type Key = [u32; 3];

#[inline(always)]
fn key_of(p: [f32; 3]) -> Key {
    // Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
    [(p[0] + 0.0).to_bits(), (p[1] + 0.0).to_bits(), (p[2] + 0.0).to_bits()]
}

#[inline(always)]
fn hash(k: &Key) -> u64 {
    // Two folded 64x64->128 multiplies: good avalanche for the highly
    // regular bit patterns of grid-aligned CAD coordinates.
    #[inline(always)]
    fn fold(x: u64, k: u64) -> u64 {
        let p = u128::from(x) * u128::from(k);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let a = u64::from(k[0]) | (u64::from(k[1]) << 32);
    let h = fold(a ^ 0x243f_6a88_85a3_08d3, 0x9e37_79b9_7f4a_7c15);
    fold(h ^ u64::from(k[2]), 0xbf58_476d_1ce4_e5b9)
}

/// One chunk's result. Its distinct keys are not kept: local ids are
/// handed out in first-occurrence order, so the merge finds each key again
/// at the first corner carrying the next unseen id.
struct ChunkWeld {
    distinct: u32,
    nonfinite: u64,
    first_nonfinite: Option<u64>,
    normal_mismatches: u64,
    zero_normals: u64,
}

/// Open-addressing table of `(hash, local id)` and the chunk's keys, both
/// reused across the chunks one rayon worker welds.
#[derive(Default)]
struct LocalTable {
    slots: Vec<(u32, u32)>,
    keys: Vec<Key>,
}

impl LocalTable {
    /// Starting size for a chunk of `facets`: a closed mesh has about one
    /// distinct vertex per two facets, so this keeps the load under 1/2
    /// without growing for most chunks, and the per-chunk clear is small
    /// (tiny models, common in catalogs, get tiny tables).
    fn reset(&mut self, facets: usize) {
        let size = (2 * facets).next_power_of_two().clamp(64, 2 * CHUNK);
        if self.slots.len() != size {
            self.slots = vec![(0, EMPTY); size];
        } else {
            self.slots.fill((0, EMPTY));
        }
        self.keys.clear();
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        self.slots = vec![(0, EMPTY); size];
        for (id, key) in self.keys.iter().enumerate() {
            let h = hash(key);
            let mut i = h as usize & (size - 1);
            while self.slots[i].1 != EMPTY {
                i = (i + 1) & (size - 1);
            }
            self.slots[i] = ((h >> 32) as u32, id as u32);
        }
    }

    #[inline(always)]
    fn id(&mut self, key: Key) -> u32 {
        if self.keys.len() * 2 >= self.slots.len() {
            self.grow();
        }
        let h = hash(&key);
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let (t, id) = self.slots[i];
            if id == EMPTY {
                let id = self.keys.len() as u32;
                self.keys.push(key);
                self.slots[i] = (tag, id);
                return id;
            }
            if t == tag && self.keys[id as usize] == key {
                return id;
            }
            i = (i + 1) & mask;
        }
    }
}

fn weld_chunk<S: FacetSource + ?Sized>(
    source: &S,
    start: usize,
    out: &mut [[u32; 3]],
    table: &mut LocalTable,
) -> ChunkWeld {
    table.reset(out.len());
    let mut result =
        ChunkWeld { distinct: 0, nonfinite: 0, first_nonfinite: None, normal_mismatches: 0, zero_normals: 0 };
    for (k, face) in out.iter_mut().enumerate() {
        let i = start + k;
        let v = source.vertices(i);
        if !v.iter().flatten().all(|c| c.is_finite()) {
            *face = [EMPTY; 3];
            result.nonfinite += 1;
            result.first_nonfinite.get_or_insert(i as u64);
            continue;
        }
        *face = [table.id(key_of(v[0])), table.id(key_of(v[1])), table.id(key_of(v[2]))];
        match normal_agrees(source.normal(i), v) {
            Some(false) => result.normal_mismatches += 1,
            None => result.zero_normals += 1,
            Some(true) => {}
        }
    }
    result.distinct = table.keys.len() as u32;
    result
}

/// `None` when the stored normal carries no direction; otherwise whether it
/// agrees with the winding. A degenerate triangle agrees with anything.
///
/// `cos(angle) >= 1/sqrt(2)` is tested as `2 (n.c)^2 >= |n|^2 |c|^2` with
/// `n.c >= 0`: no square roots on a path taken once per facet.
#[inline(always)]
fn normal_agrees(stored: [f32; 3], v: [[f32; 3]; 3]) -> Option<bool> {
    let n = Vec3::from(stored);
    let nn = n.length_squared();
    if !(nn > 0.0 && nn.is_finite()) {
        return None;
    }
    let [a, b, c] = v.map(Vec3::from);
    let computed = (b - a).cross(c - a);
    let cc = computed.length_squared();
    if !(cc > 0.0 && cc.is_finite()) {
        return Some(true);
    }
    let dot = n.dot(computed);
    Some(dot >= 0.0 && 2.0 * dot * dot >= nn * cc)
}

/// The exact weld: chunks are welded locally on the rayon pool while one
/// merger thread takes them in file order, gives every distinct key a
/// global id in first-occurrence order, and rewrites the chunk's local ids
/// to those ids.
///
/// The merge is sequential (that is what makes ids first-occurrence
/// ordered), so for a large model it runs beside the chunk welding instead
/// of after it: on two cores the two halves overlap. A small model is
/// welded and merged chunk by chunk on the calling thread. The merger is a scoped OS thread, not a
/// rayon task, so it never blocks a pool worker that the chunks need.
fn weld_exact<S: FacetSource + ?Sized>(
    source: &S,
    faces: &mut [[u32; 3]],
    stats: &mut SoupStats,
) -> Vec<Vec3> {
    weld_exact_with(source, faces, stats, OVERLAP_MIN_CHUNKS)
}

/// [`weld_exact`] with the size from which the merge gets its own thread
/// (the tests hold both paths to the same result).
fn weld_exact_with<S: FacetSource + ?Sized>(
    source: &S,
    faces: &mut [[u32; 3]],
    stats: &mut SoupStats,
    overlap_min_chunks: usize,
) -> Vec<Vec3> {
    let n = faces.len();
    let chunks = n.div_ceil(CHUNK);
    if chunks < overlap_min_chunks.max(2) {
        // A small model: the merger thread and the hand-over cost more than
        // the overlap saves (measured with `strata inspect` on tori: at 60k
        // and 130k faces the sequential weld is as fast in wall time and
        // takes 12-20% less CPU; at 250k the thread wins 10%, at 1M 15%).
        // Catalogs are mostly such models, ingested with every core busy,
        // where the extra CPU is all loss.
        let mut merger = Merger::new(n);
        let mut table = LocalTable::default();
        for (c, out) in faces.chunks_mut(CHUNK).enumerate() {
            let weld = weld_chunk(source, c * CHUNK, out, &mut table);
            merger.merge_chunk(source, c * CHUNK, out, &weld);
            stats.absorb(&weld);
        }
        return merger.finish();
    }
    let (sender, receiver) = std::sync::mpsc::channel::<(usize, Welded<'_>)>();
    let merged = std::thread::scope(|scope| {
        let merger = scope.spawn(move || {
            let mut merger = Merger::new(n);
            let mut pending: Vec<Option<Welded<'_>>> = (0..chunks).map(|_| None).collect();
            let mut next = 0;
            let mut totals = SoupStats::default();
            for (c, (out, weld)) in receiver {
                pending[c] = Some((out, weld));
                while let Some((out, weld)) = pending.get_mut(next).and_then(Option::take) {
                    merger.merge_chunk(source, next * CHUNK, out, &weld);
                    totals.absorb(&weld);
                    next += 1;
                }
            }
            (merger.finish(), totals)
        });
        faces.par_chunks_mut(CHUNK).enumerate().for_each_init(
            || (LocalTable::default(), sender.clone()),
            |(table, sender), (c, out)| {
                let weld = weld_chunk(source, c * CHUNK, out, table);
                // The merger only stops receiving if it panicked, which
                // `join` below reports.
                let _ = sender.send((c, (out, weld)));
            },
        );
        drop(sender);
        merger.join()
    });
    let (vertices, totals) = match merged {
        Ok(done) => done,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    *stats = SoupStats { facets: stats.facets, ..totals };
    vertices
}

/// A chunk's faces (holding local ids) and what welding it found.
type Welded<'a> = (&'a mut [[u32; 3]], ChunkWeld);

/// The merge's state: an open-addressing table whose slots are `tag << 32
/// | vertex id` (so a probe reads a vertex to compare only when 32 bits of
/// hash match), the vertices in first-occurrence order, and scratch.
struct Merger {
    slots: Vec<u64>,
    vertices: Vec<Vec3>,
    batch: Vec<(Key, u64)>,
    map: Vec<u32>,
}

impl Merger {
    const FREE: u64 = u64::MAX;

    fn new(facets: usize) -> Merger {
        // A closed mesh has about one vertex per two facets (plus two per
        // extra body), so the vertex list gets that with a little slack and
        // the table 1.4 slots per expected vertex; soups have up to three
        // vertices per facet, and both grow for them.
        let expected = facets / 2 + facets / 100 + 1024;
        Merger {
            slots: vec![Self::FREE; facets * 7 / 10 + 2048],
            vertices: Vec::with_capacity(expected),
            batch: Vec::with_capacity((3 * facets).min(3 * CHUNK)),
            map: Vec::with_capacity((3 * facets).min(3 * CHUNK)),
        }
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    /// Merges one chunk: finds its distinct keys again in the source (local
    /// ids are handed out in first-occurrence order, so the first corner
    /// carrying the next unseen id is where its key is), reads each key's
    /// home slot in one independent sweep so the CPU overlaps the cache
    /// misses, then resolves the keys in order and rewrites the faces.
    fn merge_chunk<S: FacetSource + ?Sized>(
        &mut self,
        source: &S,
        start: usize,
        out: &mut [[u32; 3]],
        weld: &ChunkWeld,
    ) {
        self.batch.clear();
        for (k, face) in out.iter().enumerate() {
            if face[0] == EMPTY || face.iter().all(|&local| (local as usize) < self.batch.len()) {
                continue;
            }
            let corners = source.vertices(start + k);
            for (&local, corner) in face.iter().zip(corners) {
                if local as usize == self.batch.len() {
                    let key = key_of(corner);
                    self.batch.push((key, hash(&key)));
                }
            }
        }
        debug_assert_eq!(self.batch.len(), weld.distinct as usize);
        for &(_, h) in &self.batch {
            std::hint::black_box(self.slots[self.home(h)]);
        }
        self.map.clear();
        for i in 0..self.batch.len() {
            let (key, h) = self.batch[i];
            let id = self.id(key, h);
            self.map.push(id);
        }
        for face in out.iter_mut().filter(|f| f[0] != EMPTY) {
            *face = face.map(|local| self.map[local as usize]);
        }
    }

    #[inline(always)]
    fn id(&mut self, key: Key, h: u64) -> u32 {
        let tag = h >> 32;
        let mut i = self.home(h);
        loop {
            let slot = self.slots[i];
            if slot == Self::FREE {
                // Grow before the load passes 0.85: probes stay short, and a
                // free slot always exists, so every probe ends.
                if (self.vertices.len() + 1) * 20 >= self.slots.len() * 17 {
                    self.grow();
                    return self.id(key, h);
                }
                let id = self.vertices.len() as u32;
                self.vertices.push(vertex_of(&key));
                self.slots[i] = (tag << 32) | u64::from(id);
                return id;
            }
            if slot >> 32 == tag && key_of(self.vertices[slot as u32 as usize].to_array()) == key {
                return slot as u32;
            }
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
    }

    /// Doubles the table and re-inserts every vertex.
    fn grow(&mut self) {
        self.slots = vec![Self::FREE; self.slots.len() * 2];
        for (id, v) in self.vertices.iter().enumerate() {
            let h = hash(&key_of(v.to_array()));
            let mut i = self.home(h);
            while self.slots[i] != Self::FREE {
                i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
            }
            self.slots[i] = ((h >> 32) << 32) | id as u64;
        }
    }

    fn finish(self) -> Vec<Vec3> {
        let mut vertices = self.vertices;
        drop(self.slots);
        vertices.shrink_to_fit();
        vertices
    }
}

#[inline(always)]
fn vertex_of(k: &Key) -> Vec3 {
    Vec3::new(f32::from_bits(k[0]), f32::from_bits(k[1]), f32::from_bits(k[2]))
}

/// Merges vertices closer than `tolerance` (transitively), keeping the
/// position of the first vertex of each group, and renumbers the faces.
pub(crate) fn weld_within(mesh: &mut IndexedMesh, tolerance: f32) {
    let n = mesh.vertices.len();
    let cell_of = |p: Vec3| -> [i64; 3] {
        // `as` saturates, so coordinates far beyond tolerance * 2^63 share
        // edge cells; they are still compared by distance below.
        let c = p / tolerance;
        [c.x.floor() as i64, c.y.floor() as i64, c.z.floor() as i64]
    };
    let mut order: Vec<(u32, [i64; 3])> =
        mesh.vertices.iter().enumerate().map(|(i, p)| (i as u32, cell_of(*p))).collect();
    order.par_sort_unstable_by_key(|&(i, c)| (c, i));

    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let up = parent[parent[x as usize] as usize];
            parent[x as usize] = up;
            x = up;
        }
        x
    }
    let tol2 = tolerance * tolerance;
    // Neighbour cells are found with nine cursors, one per (dx, dy) column
    // of cells: as `order` is walked in key order, each column's window
    // (cx + dx, cy + dy, cz - 1 ..= cz + 1) only moves forward, so the
    // whole search is linear after the sort (binary searches per cell cost
    // 20x more on a million vertices).
    let columns: [(i64, i64); 9] =
        [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)];
    let mut cursors = [0usize; 9];
    for &(v, c) in &order {
        let p = mesh.vertices[v as usize];
        for (cursor, &(dx, dy)) in cursors.iter_mut().zip(&columns) {
            let (x, y) = (c[0].saturating_add(dx), c[1].saturating_add(dy));
            let lo = [x, y, c[2].saturating_sub(1)];
            let hi = [x, y, c[2].saturating_add(1)];
            while *cursor < order.len() && order[*cursor].1 < lo {
                *cursor += 1;
            }
            for &(w, k) in &order[*cursor..] {
                if k > hi {
                    break;
                }
                if w > v && mesh.vertices[w as usize].distance_squared(p) <= tol2 {
                    let (a, b) = (find(&mut parent, v), find(&mut parent, w));
                    // Link under the smaller id: the group keeps its
                    // first vertex.
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    parent[hi as usize] = lo;
                }
            }
        }
    }
    let mut new_id = vec![EMPTY; n];
    let mut vertices = Vec::new();
    for v in 0..n as u32 {
        let root = find(&mut parent, v);
        if root == v {
            new_id[v as usize] = vertices.len() as u32;
            vertices.push(mesh.vertices[v as usize]);
        }
    }
    for v in 0..n as u32 {
        let root = find(&mut parent, v);
        new_id[v as usize] = new_id[root as usize];
    }
    for face in &mut mesh.faces {
        *face = face.map(|i| new_id[i as usize]);
    }
    mesh.vertices = vertices;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stl::Facet;

    fn weld_facets(f: &[Facet], tolerance: Option<f32>) -> IndexedMesh {
        weld(f, &WeldOptions { tolerance }).expect("welds").0
    }

    /// Every face corner points at the position its facet had.
    fn assert_faithful(mesh: &IndexedMesh, facets: &[Facet]) {
        assert_eq!(mesh.faces.len(), facets.len());
        for (face, facet) in mesh.faces.iter().zip(facets) {
            for (&id, &v) in face.iter().zip(&facet.vertices) {
                assert_eq!(key_of(mesh.vertices[id as usize].to_array()), key_of(v));
            }
        }
    }

    #[test]
    fn cube_welds_to_eight_vertices() {
        let facets = crate::testutil::cube_facets();
        let mesh = weld_facets(&facets, None);
        assert_eq!(mesh.vertices.len(), 8);
        assert_faithful(&mesh, &facets);
        assert_eq!(weld_facets(&facets, None), mesh, "deterministic");
    }

    #[test]
    fn negative_zero_welds_with_positive_zero() {
        let f = [
            Facet { normal: [0.0; 3], vertices: [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] },
            Facet { normal: [0.0; 3], vertices: [[-0.0, 0.0, -0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]] },
        ];
        assert_eq!(weld_facets(&f, None).vertices.len(), 3);
    }

    #[test]
    fn non_finite_facets_are_dropped_and_counted() {
        let mut f = crate::testutil::cube_facets();
        f[3].vertices[1][2] = f32::NAN;
        f[7].vertices[0][0] = f32::INFINITY;
        let (mesh, stats) = weld(&f[..], &WeldOptions::default()).expect("welds");
        assert_eq!(mesh.faces.len(), 10);
        assert_eq!((stats.nonfinite_facets, stats.first_nonfinite), (2, Some(3)));
        assert!(mesh.vertices.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn non_finite_facets_across_chunks_report_the_first_in_the_file() {
        let mut f = crate::synth::torus(160, 100);
        assert!(f.len() > 3 * CHUNK + 7, "four chunks");
        f[3 * CHUNK + 7].vertices[2][1] = f32::NEG_INFINITY;
        f[CHUNK + 1].vertices[0][0] = f32::NAN;
        let (mesh, stats) = weld(&f[..], &WeldOptions::default()).expect("welds");
        assert_eq!((stats.nonfinite_facets, stats.first_nonfinite), (2, Some(CHUNK as u64 + 1)));
        assert_eq!(mesh.faces.len(), f.len() - 2);
        assert!(mesh.faces.iter().flatten().all(|&v| (v as usize) < mesh.vertices.len()));
    }

    #[test]
    fn tolerance_merges_near_vertices_transitively() {
        let f = [
            Facet { normal: [0.0; 3], vertices: [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] },
            Facet { normal: [0.0; 3], vertices: [[3.8e-33, 0.0, 0.0], [1.0, 1e-7, 0.0], [0.0, 1.0, 2e-7]] },
        ];
        assert_eq!(weld_facets(&f, None).vertices.len(), 6);
        let m = weld_facets(&f, Some(1e-6));
        assert_eq!(m.vertices.len(), 3);
        assert_eq!(m.faces[0], m.faces[1]);
        // The group of each corner keeps the position of one of its members.
        for (k, &id) in m.faces[0].iter().enumerate() {
            let p = m.vertices[id as usize];
            assert!(p == Vec3::from(f[0].vertices[k]) || p == Vec3::from(f[1].vertices[k]));
        }
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_result() {
        // Enough facets for several chunks, with vertices shared across them.
        let facets: Vec<Facet> = (0..3 * CHUNK + 17)
            .map(|i| {
                let x = (i % 97) as f32;
                let y = (i / 97) as f32;
                Facet { normal: [0.0; 3], vertices: [[x, y, 0.0], [x + 1.0, y, 0.0], [x, y + 1.0, 0.0]] }
            })
            .collect();
        let mesh = weld_facets(&facets, None);
        let distinct: std::collections::HashSet<Key> =
            facets.iter().flat_map(|f| f.vertices).map(key_of).collect();
        assert_eq!(mesh.vertices.len(), distinct.len());
        assert_faithful(&mesh, &facets);
    }

    /// Welds with the merge on its own thread (`threaded`) or not.
    fn weld_exact_as(facets: &[Facet], threaded: bool) -> (Vec<Vec3>, Vec<[u32; 3]>, SoupStats) {
        let mut faces = vec![[0u32; 3]; facets.len()];
        let mut stats = SoupStats { facets: facets.len() as u64, ..SoupStats::default() };
        let vertices = weld_exact_with(facets, &mut faces, &mut stats, if threaded { 2 } else { usize::MAX });
        (vertices, faces, stats)
    }

    #[test]
    fn the_threaded_and_the_sequential_merge_agree() {
        let mut facets = crate::synth::torus(120, 100);
        // A non-finite facet in the second chunk: counted and reported alike.
        facets[CHUNK + 5].vertices[1][2] = f32::NAN;
        let threaded = weld_exact_as(&facets, true);
        let sequential = weld_exact_as(&facets, false);
        assert!(facets.len() > 2 * CHUNK, "several chunks");
        assert_eq!(threaded.0, sequential.0, "vertices, in first-occurrence order");
        assert_eq!(threaded.1, sequential.1, "faces");
        assert_eq!(threaded.2, sequential.2, "stats");
        assert_eq!(sequential.2.nonfinite_facets, 1);
        assert_eq!(sequential.2.first_nonfinite, Some((CHUNK + 5) as u64));
    }

    #[test]
    fn same_mesh_inside_a_one_thread_pool_and_no_deadlock() {
        // Several chunks and the merge on its own thread, so the merger and
        // the chunk tasks really interleave.
        let facets = crate::synth::torus(120, 100);
        let expected = weld_exact_as(&facets, true);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a pool");
        let inside = pool.install(|| weld_exact_as(&facets, true));
        assert_eq!(inside, expected);
        let nested =
            pool.install(|| rayon::join(|| weld_exact_as(&facets, true), || weld_exact_as(&facets, true)));
        assert_eq!(nested, (expected.clone(), expected));
    }

    #[test]
    fn soups_larger_than_a_chunk_weld() {
        // Every corner distinct: three new keys per facet, far more than the
        // merge table starts with. This hung before the table grew in a loop.
        for n in [CHUNK / 3, CHUNK + 1, 3 * CHUNK + 5] {
            let facets: Vec<Facet> = (0..n)
                .map(|i| {
                    let x = i as f32;
                    Facet { normal: [0.0; 3], vertices: [[x, 0.0, 0.0], [x, 1.0, 0.5], [x, 0.5, 1.0]] }
                })
                .collect();
            let mesh = weld_facets(&facets, None);
            assert_eq!(mesh.vertices.len(), 3 * n);
            assert_faithful(&mesh, &facets);
        }
    }

    #[test]
    fn normal_check() {
        let v = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert_eq!(normal_agrees([0.0, 0.0, 1.0], v), Some(true));
        assert_eq!(normal_agrees([0.0, 0.0, -1.0], v), Some(false));
        assert_eq!(normal_agrees([1.0, 0.0, 0.2], v), Some(false));
        assert_eq!(normal_agrees([0.0, 0.0, 0.0], v), None);
        assert_eq!(normal_agrees([f32::NAN, 0.0, 0.0], v), None);
    }
}
