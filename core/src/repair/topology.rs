//! Half-edge adjacency for repair: which half-edge of which face is the
//! twin of each half-edge, found by one parallel sort of edge keys.
//!
//! Half-edge `h = 3 * face + k` runs from `face[k]` to `face[(k + 1) % 3]`.
//! Validation only counts edges; repair needs to walk across them, so it
//! pays for a full table here (12 bytes per face) instead.

use std::collections::HashMap;

/// No twin: the edge is used by this face only (the rim of a hole).
pub(crate) const BOUNDARY: u32 = u32::MAX;
/// The edge is used by more than two faces: no single twin.
pub(crate) const NONMANIFOLD: u32 = u32::MAX - 1;

/// The undirected key of the edge between `a` and `b`.
#[inline]
pub(crate) fn edge_key(a: u32, b: u32) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (u64::from(lo) << 32) | u64::from(hi)
}

/// Adjacency of a mesh without collapsed faces.
#[derive(Debug)]
pub(crate) struct Topology {
    /// The twin of every half-edge, or [`BOUNDARY`] / [`NONMANIFOLD`].
    pub(crate) twin: Vec<u32>,
    /// Every distinct undirected edge, sorted (for "does this edge exist").
    pub(crate) edges: Vec<u64>,
    /// Keys of the edges used by more than two faces.
    pub(crate) nonmanifold: Vec<u64>,
}

impl Topology {
    /// Builds the adjacency. Collapsed faces (a repeated vertex) must have
    /// been removed: their half-edges would pair with themselves.
    pub(crate) fn build(faces: &[[u32; 3]]) -> Topology {
        // Half-edges are bucketed by their lower vertex (a counting sort:
        // vertex ids follow first occurrence, so buckets are small and the
        // scatter stays cache-friendly), then each bucket is sorted by the
        // higher vertex. A global sort of 3 keys per face was 4x slower.
        let nv = faces.iter().flatten().max().map_or(0, |&m| m as usize + 1);
        let mut start = vec![0u32; nv + 1];
        for t in faces {
            for k in 0..3 {
                start[t[k].min(t[(k + 1) % 3]) as usize + 1] += 1;
            }
        }
        for v in 0..nv {
            start[v + 1] += start[v];
        }
        let mut cursor = start.clone();
        let mut half = vec![(0u32, 0u32); faces.len() * 3];
        for (f, t) in faces.iter().enumerate() {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                let slot = &mut cursor[a.min(b) as usize];
                half[*slot as usize] = (a.max(b), (3 * f + k) as u32);
                *slot += 1;
            }
        }
        let mut twin = vec![BOUNDARY; faces.len() * 3];
        let mut edges = Vec::with_capacity(half.len() / 2 + 1);
        let mut nonmanifold = Vec::new();
        for lo in 0..nv {
            let bucket = &mut half[start[lo] as usize..start[lo + 1] as usize];
            bucket.sort_unstable();
            for run in bucket.chunk_by(|a, b| a.0 == b.0) {
                let key = edge_key(lo as u32, run[0].0);
                edges.push(key);
                match run {
                    [_] => {}
                    [a, b] => {
                        twin[a.1 as usize] = b.1;
                        twin[b.1 as usize] = a.1;
                    }
                    _ => {
                        nonmanifold.push(key);
                        for e in run {
                            twin[e.1 as usize] = NONMANIFOLD;
                        }
                    }
                }
            }
        }
        Topology { twin, edges, nonmanifold }
    }

    /// Adds the twins of faces appended from index `from` on (hole fills):
    /// their edges pair with boundary half-edges of the mesh or with each
    /// other, never with an edge used twice already (fills refuse that), so
    /// only those need looking at.
    pub(crate) fn extend(&mut self, faces: &[[u32; 3]], from: usize) {
        let mut open: HashMap<u64, u32> = HashMap::new();
        for (h, &t) in self.twin.iter().enumerate() {
            if t == BOUNDARY {
                let (f, k) = (h / 3, h % 3);
                open.insert(edge_key(faces[f][k], faces[f][(k + 1) % 3]), h as u32);
            }
        }
        self.twin.resize(faces.len() * 3, BOUNDARY);
        for (f, t) in faces.iter().enumerate().skip(from) {
            for k in 0..3 {
                let h = (3 * f + k) as u32;
                let key = edge_key(t[k], t[(k + 1) % 3]);
                match open.remove(&key) {
                    Some(t) => {
                        self.twin[h as usize] = t;
                        self.twin[t as usize] = h;
                    }
                    None => {
                        open.insert(key, h);
                    }
                }
            }
        }
    }

    /// Reverses face `f` (swaps its last two corners) and keeps the table
    /// true: its half-edges 0 and 2 trade places (`a->b` becomes `b->a` at
    /// index 2, `c->a` becomes `a->c` at index 0), and their twins are told.
    pub(crate) fn flip(&mut self, faces: &mut [[u32; 3]], f: usize) {
        faces[f].swap(1, 2);
        let (h0, h2) = (3 * f, 3 * f + 2);
        self.twin.swap(h0, h2);
        for h in [h0, h2] {
            let t = self.twin[h];
            if t < NONMANIFOLD {
                self.twin[t as usize] = h as u32;
            }
        }
    }

    /// Whether an edge between `a` and `b` exists in the mesh.
    pub(crate) fn has_edge(&self, a: u32, b: u32) -> bool {
        self.edges.binary_search(&edge_key(a, b)).is_ok()
    }
}

/// Groups of faces connected through manifold edges (edges shared by
/// exactly two faces), as trimesh's `split` defines bodies: a non-manifold
/// edge separates the bodies that meet there.
#[derive(Debug, Default)]
pub(crate) struct Components {
    /// Component id of every face.
    pub(crate) of_face: Vec<u32>,
    /// Faces of each component, in face order.
    pub(crate) members: Vec<Vec<u32>>,
}

impl Components {
    pub(crate) fn find(faces: &[[u32; 3]], topo: &Topology) -> Components {
        let n = faces.len();
        let mut of_face = vec![BOUNDARY; n];
        let mut members = Vec::new();
        let mut stack = Vec::new();
        for seed in 0..n {
            if of_face[seed] != BOUNDARY {
                continue;
            }
            let id = members.len() as u32;
            let mut group = Vec::new();
            of_face[seed] = id;
            stack.push(seed as u32);
            while let Some(f) = stack.pop() {
                group.push(f);
                for k in 0..3 {
                    let t = topo.twin[3 * f as usize + k];
                    if t < NONMANIFOLD {
                        let g = (t / 3) as usize;
                        if of_face[g] == BOUNDARY {
                            of_face[g] = id;
                            stack.push(g as u32);
                        }
                    }
                }
            }
            group.sort_unstable();
            members.push(group);
        }
        Components { of_face, members }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_boundary_and_nonmanifold() {
        // Two triangles sharing edge 1-2, and a third on the same edge.
        let faces = [[0, 1, 2], [2, 1, 3], [1, 2, 4]];
        let t = Topology::build(&faces[..2]);
        assert_eq!(t.twin[1], 3, "edge 1->2 of face 0 pairs with edge 2->1 of face 1");
        assert_eq!(t.twin[3], 1);
        assert_eq!(t.twin[0], BOUNDARY);
        assert!(t.nonmanifold.is_empty());
        assert!(t.has_edge(2, 1) && !t.has_edge(0, 3));

        let t = Topology::build(&faces);
        assert_eq!((t.twin[1], t.twin[3], t.twin[6]), (NONMANIFOLD, NONMANIFOLD, NONMANIFOLD));
        assert_eq!(t.nonmanifold, vec![edge_key(1, 2)]);
        let c = Components::find(&faces, &t);
        assert_eq!(c.members.len(), 3, "a non-manifold edge separates components");
    }

    #[test]
    fn extending_with_new_faces_matches_a_fresh_build() {
        // A cube missing two faces, then the two faces added back.
        let cube = [
            [0, 1, 2],
            [0, 2, 3],
            [4, 6, 5],
            [4, 7, 6],
            [0, 4, 5],
            [0, 5, 1],
            [1, 5, 6],
            [1, 6, 2],
            [2, 6, 7],
            [2, 7, 3],
            [3, 7, 4],
            [3, 4, 0],
        ];
        let mut t = Topology::build(&cube[..10]);
        t.extend(&cube, 10);
        assert_eq!(t.twin, Topology::build(&cube).twin);
    }

    #[test]
    fn flipping_keeps_twins_true() {
        // A square of two faces plus a third on its far side, then flip.
        let mut faces = vec![[0, 1, 2], [2, 1, 3], [2, 3, 4]];
        let mut t = Topology::build(&faces);
        for f in [1, 0, 2, 1] {
            t.flip(&mut faces, f);
            let fresh = Topology::build(&faces);
            assert_eq!(t.twin, fresh.twin, "after flipping face {f}: {faces:?}");
        }
    }
}
