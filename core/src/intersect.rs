//! Self-intersection counting with parry3d.
//!
//! Faces go into parry's BVH by bounding box; each face queries the tree for
//! overlapping boxes, and candidate pairs that share no vertex id are tested
//! exactly with parry's GJK-based `intersection_test`. Pairs that share a
//! vertex or an edge are neighbours on the surface and always touch, so they
//! are not counted; pairs that merely touch without sharing a vertex (a
//! T-junction, two bodies resting on each other) are counted, since a
//! slicer sees them as overlapping material too.

use parry3d::bounding_volume::Aabb;
use parry3d::math::Pose;
use parry3d::partitioning::{Bvh, BvhBuildStrategy};
use parry3d::shape::Triangle;
use rayon::prelude::*;

use crate::mesh::IndexedMesh;

/// Number of unordered face pairs `(i, j)` that share no vertex and whose
/// triangles intersect. Collapsed faces are skipped.
pub fn count_self_intersections(mesh: &IndexedMesh) -> u64 {
    let boxes: Vec<Aabb> =
        (0..mesh.faces.len()).into_par_iter().map(|f| Aabb::from_points(mesh.triangle(f))).collect();
    let bvh = Bvh::from_leaves(BvhBuildStrategy::Binned, &boxes);
    let identity = Pose::IDENTITY;
    (0..mesh.faces.len())
        .into_par_iter()
        .map(|i| {
            let fi = mesh.faces[i];
            if collapsed(fi) {
                return 0;
            }
            let [a, b, c] = mesh.triangle(i);
            let ti = Triangle::new(a, b, c);
            bvh.intersect_aabb(&boxes[i])
                .filter(|&j| j as usize > i)
                .filter(|&j| {
                    let fj = mesh.faces[j as usize];
                    !collapsed(fj) && !fi.iter().any(|v| fj.contains(v))
                })
                .filter(|&j| {
                    let [a, b, c] = mesh.triangle(j as usize);
                    let tj = Triangle::new(a, b, c);
                    parry3d::query::intersection_test(&identity, &ti, &identity, &tj)
                        .is_ok_and(|hit| hit.intersecting)
                })
                .count() as u64
        })
        .sum()
}

fn collapsed(f: [u32; 3]) -> bool {
    f[0] == f[1] || f[1] == f[2] || f[0] == f[2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::Vec3;

    #[test]
    fn closed_cube_has_none_and_a_pierced_one_has_some() {
        let facets = crate::testutil::cube_facets();
        let (mut mesh, _) = crate::mesh::weld(&facets[..], &Default::default()).expect("welds");
        assert_eq!(count_self_intersections(&mesh), 0);

        // A triangle stabbing through the cube's top and bottom (z = 0, 2).
        let base = mesh.vertices.len() as u32;
        mesh.vertices.extend([Vec3::new(1.0, 1.0, -1.0), Vec3::new(1.2, 1.0, 3.0), Vec3::new(0.8, 1.1, 3.0)]);
        mesh.faces.push([base, base + 1, base + 2]);
        let hits = count_self_intersections(&mesh);
        // Two faces of the top and two of the bottom are diagonal-split
        // squares; the stab crosses at least one face of each.
        assert!((2..=4).contains(&hits), "{hits}");
    }
}
