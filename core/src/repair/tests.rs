use super::*;
use crate::mesh::{WeldOptions, weld};
use crate::stl::Facet;
use crate::synth::{cube_facets, torus};
use crate::validate::{ValidateOptions, ValidationReport, validate};

fn mesh_of(facets: &[Facet]) -> IndexedMesh {
    weld(facets, &WeldOptions::default()).expect("welds").0
}

fn report(mesh: &IndexedMesh) -> ValidationReport {
    validate(mesh, &crate::SoupStats::default(), &ValidateOptions::default())
}

/// Writes the mesh as STL and reads it back, as a user of the file would.
fn through_stl(mesh: &IndexedMesh) -> ValidationReport {
    let bytes = to_binary_stl(mesh, "test");
    let stl = crate::stl::parse(&bytes).expect("our own STL parses");
    let (m, soup) = crate::mesh::weld_stl(&stl, &WeldOptions::default()).expect("welds");
    validate(&m, &soup, &ValidateOptions::default())
}

fn fixed(facets: &[Facet], options: &RepairOptions) -> (Repaired, ValidationReport) {
    let r = repair(mesh_of(facets), options);
    let v = report(&r.mesh);
    (r, v)
}

fn shifted(facets: &[Facet], by: [f32; 3], scale: f32) -> Vec<Facet> {
    facets
        .iter()
        .map(|f| Facet {
            normal: f.normal,
            vertices: f.vertices.map(|v| std::array::from_fn(|k| v[k] * scale + by[k])),
        })
        .collect()
}

#[test]
fn a_valid_mesh_is_left_alone() {
    let cube = mesh_of(&cube_facets());
    let r = repair(cube.clone(), &RepairOptions::default());
    assert!(!r.log.changed(), "{:?}", r.log);
    assert_eq!(r.mesh, cube);
}

#[test]
fn a_missing_face_is_filled_with_one_face() {
    let (r, v) = fixed(&cube_facets()[1..], &RepairOptions::default());
    assert_eq!((r.log.holes_filled, r.log.hole_faces_added), (1, 1));
    assert!(v.is_volume, "{v:?}");
    assert_eq!(v.faces, 12);
    assert!((v.volume - 8.0).abs() < 1e-12);
}

#[test]
fn flipped_faces_and_an_inside_out_body_are_turned_outward() {
    let mut f = cube_facets();
    f[3].vertices.swap(1, 2);
    f[7].vertices.swap(0, 1);
    let (r, v) = fixed(&f, &RepairOptions::default());
    assert_eq!(r.log.faces_flipped, 2);
    assert!(v.is_volume && (v.volume - 8.0).abs() < 1e-12);

    let inside_out: Vec<Facet> = cube_facets()
        .into_iter()
        .map(|mut f| {
            f.vertices.swap(1, 2);
            f
        })
        .collect();
    let (r, v) = fixed(&inside_out, &RepairOptions::default());
    assert_eq!((r.log.faces_flipped, r.log.bodies_reversed), (0, 1));
    assert!(v.is_volume && (v.volume - 8.0).abs() < 1e-12);
}

#[test]
fn a_cavity_keeps_facing_inward_and_embedded_parts_keep_facing_out() {
    // A hollow cube: the outer wall, and the inner wall written inward (a
    // cavity), then the whole thing written inside out by an exporter.
    let outer = cube_facets();
    let mut inner = shifted(&cube_facets(), [0.5, 0.5, 0.5], 0.5);
    for f in &mut inner {
        f.vertices.swap(1, 2);
    }
    let mut hollow = outer.clone();
    hollow.extend(inner.iter().copied());
    let (r, v) = fixed(&hollow, &RepairOptions::default());
    assert!(!r.log.changed(), "{:?}", r.log);
    assert!(v.is_volume && (v.volume - 7.0).abs() < 1e-12, "{}", v.volume);

    // The outer wall inside out: reversed; the cavity stays a cavity.
    let mut flipped_outer: Vec<Facet> = outer
        .iter()
        .map(|f| Facet { normal: f.normal, vertices: [f.vertices[0], f.vertices[2], f.vertices[1]] })
        .collect();
    flipped_outer.extend(inner.iter().copied());
    let (r, v) = fixed(&flipped_outer, &RepairOptions::default());
    assert_eq!(r.log.bodies_reversed, 1);
    assert!(v.is_volume && (v.volume - 7.0).abs() < 1e-12, "{}", v.volume);

    // A part embedded in another, both facing out (an assembly): kept.
    let mut embedded = outer;
    embedded.extend(shifted(&cube_facets(), [0.5, 0.5, 0.5], 0.5));
    let (r, v) = fixed(&embedded, &RepairOptions::default());
    assert!(!r.log.changed(), "{:?}", r.log);
    assert!((v.volume - 9.0).abs() < 1e-12, "{}", v.volume);
}

#[test]
fn duplicate_and_collapsed_faces_are_removed() {
    let mut f = cube_facets();
    f.push(f[2]);
    let mut reversed = f[5];
    reversed.vertices.swap(0, 2);
    f.push(reversed);
    let a = f[0].vertices[0];
    f.push(Facet { normal: [0.0; 3], vertices: [a, a, f[0].vertices[1]] });
    let (r, v) = fixed(&f, &RepairOptions::default());
    assert_eq!((r.log.duplicate_faces_removed, r.log.collapsed_faces_removed), (2, 1));
    assert!(v.is_volume && v.faces == 12 && v.degenerate_faces == 0 && v.duplicate_faces == 0);
}

#[test]
fn a_zero_area_face_is_removed_by_splitting_its_neighbour() {
    // Face (a, b, c) of the cube is cut at the midpoint m of a-b, and the
    // sliver (a, b, m) closes the surface, as CAD exporters write it.
    let mut f = cube_facets();
    let [a, b, c] = f[0].vertices;
    let m = std::array::from_fn(|k| (a[k] + b[k]) / 2.0);
    f[0].vertices = [a, m, c];
    f.push(Facet { normal: [0.0; 3], vertices: [m, b, c] });
    f.push(Facet { normal: [0.0; 3], vertices: [a, b, m] });
    let before = report(&mesh_of(&f));
    assert!(before.watertight && before.degenerate_faces == 1, "{before:?}");

    let (r, v) = fixed(&f, &RepairOptions::default());
    assert_eq!((r.log.zero_area_faces_removed, r.log.faces_split, r.log.holes_filled), (1, 1, 0));
    assert!(v.is_volume && v.degenerate_faces == 0, "{v:?}");
    assert_eq!(v.faces, 14);
    assert!((v.volume - 8.0).abs() < 1e-12);
}

#[test]
fn bodies_touching_on_an_edge_are_separated_and_stay_separate_in_stl() {
    let mut f = cube_facets();
    f.extend(shifted(&cube_facets(), [2.0, 2.0, 0.0], 1.0));
    let before = report(&mesh_of(&f));
    assert_eq!(before.nonmanifold_edges, 1);

    let (r, v) = fixed(&f, &RepairOptions::default());
    assert_eq!((r.log.nonmanifold_edges_split, r.log.vertices_separated), (1, 2));
    assert!(v.is_volume && v.bodies == 2, "{v:?}");
    // The moved edge shaves a sliver of about 1e-5 of the volume.
    assert!((v.volume - 16.0).abs() < 1e-3, "{}", v.volume);
    let written = through_stl(&r.mesh);
    assert!(written.is_volume && written.nonmanifold_edges == 0, "{written:?}");

    let again = repair(r.mesh.clone(), &RepairOptions::default());
    assert!(!again.log.changed(), "{:?}", again.log);
}

#[test]
fn a_lone_triangle_is_not_inflated_into_a_flat_solid() {
    let mut f = cube_facets();
    f.push(Facet { normal: [0.0; 3], vertices: [[5.0, 0.0, 0.0], [6.0, 0.0, 0.0], [5.0, 1.0, 0.0]] });
    let (r, v) = fixed(&f, &RepairOptions::default());
    assert_eq!((r.log.holes_filled, r.log.holes_left_open), (0, 1));
    assert_eq!((v.boundary_edges, v.duplicate_faces), (3, 0));
    assert!(!v.is_volume);

    let (r, v) = fixed(&f, &RepairOptions { remove_unconnected: true, ..RepairOptions::default() });
    assert_eq!((r.log.stray_bodies_removed, r.log.stray_faces_removed), (1, 1));
    assert!(v.is_volume && v.faces == 12);
}

#[test]
fn a_large_hole_is_ear_clipped_closed() {
    // Remove half the tube over 150 of 400 rings: one loop of 324 edges,
    // far more than the exact triangulation takes, and far from planar.
    let (rings, segments) = (400, 24);
    let t = torus(rings, segments);
    let cut = |i: usize| {
        let (ring, seg) = (i / 2 / segments, i / 2 % segments);
        ring < 150 && seg < segments / 2
    };
    let kept: Vec<Facet> = t.iter().enumerate().filter(|(i, _)| !cut(*i)).map(|(_, f)| *f).collect();
    let before = report(&mesh_of(&kept));
    assert!(before.boundary_edges as usize > holes::DP_LIMIT, "{}", before.boundary_edges);
    let (r, v) = fixed(&kept, &RepairOptions::default());
    assert!(r.log.holes_filled >= 1);
    assert!(v.watertight && v.winding_consistent && v.is_volume, "{v:?}");
}

#[test]
fn tolerance_weld_closes_cracks_and_the_log_says_so() {
    let mut f = cube_facets();
    // Move one corner of one facet by 1e-7: a crack an exact weld keeps.
    f[0].vertices[0][0] += 1e-7;
    assert!(!report(&mesh_of(&f)).watertight);
    let (r, v) = fixed(&f, &RepairOptions::default());
    assert_eq!(r.log.vertices_merged, 1);
    assert!(v.is_volume);

    // Exact welding only: the crack's two corners stay two vertices (the
    // crack is closed by filling instead, with faces of their own).
    let (r, v) = fixed(&f, &RepairOptions { weld_tolerance: Some(0.0), ..RepairOptions::default() });
    assert_eq!((r.log.weld_tolerance, r.log.vertices_merged), (0.0, 0));
    assert_eq!(r.mesh.vertices.len(), 9, "the moved corner is still its own vertex");
    assert!(r.log.holes_filled >= 1 && v.faces > 12, "{:?}", r.log);
}

#[test]
fn stl_header_never_starts_with_solid() {
    let bytes = to_binary_stl(&mesh_of(&cube_facets()), "solid repaired");
    assert!(!bytes.starts_with(b"solid"));
    assert_eq!(bytes.len(), 84 + 50 * 12);
}

/// Found by the soup property test: a flat face on the rim of fills made
/// by an earlier round.
#[test]
fn regression_flat_face_beside_fills_never_adds_a_nonmanifold_edge() {
    let f = |v: [[f32; 3]; 3]| Facet { normal: [0.0; 3], vertices: v };
    let soup = [
        f([[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -0.5]]),
        f([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
        f([[-0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -0.5, 0.0]]),
        f([[-0.5, -1.0, 0.0], [0.0, 0.0, -1.5], [-0.0, 0.0, 0.0]]),
        f([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    ];
    let m = mesh_of(&soup);
    let before = report(&m);
    let r = repair(m, &RepairOptions::default());
    let after = report(&r.mesh);
    assert!(after.nonmanifold_edges <= before.nonmanifold_edges, "{:?}\n{:?}", r.log, r.mesh);
    assert!(after.boundary_edges <= before.boundary_edges);
    let again = repair(r.mesh.clone(), &RepairOptions::default());
    assert!(!again.log.changed(), "{:?}", again.log);
}

#[test]
fn the_bench_damage_is_undone_exactly() {
    let t = torus(200, 100);
    let original = report(&mesh_of(&t));
    let (broken, d) = crate::synth::damage(&t, 100);
    let before = report(&mesh_of(&broken));
    assert_eq!(before.boundary_edges as usize, 3 * d.holes);
    assert_eq!(before.degenerate_faces as usize, d.degenerate);
    assert!(before.duplicate_faces as usize >= d.duplicates);
    let (r, v) = fixed(&broken, &RepairOptions::default());
    assert!(v.is_volume, "{v:?}");
    assert_eq!(v.faces, original.faces, "{:?}", r.log);
    assert!(
        (v.volume - original.volume).abs() <= 1e-9 * original.volume,
        "{} vs {}",
        v.volume,
        original.volume
    );
    assert_eq!((r.log.holes_filled as usize, r.log.faces_flipped as usize), (d.holes, d.flipped));
}

/// Found by the repair fuzz target: near f32's limit the bounding-box
/// diagonal overflowed and the split copies were moved to infinity.
#[test]
fn huge_coordinates_never_become_infinite() {
    let mut f = shifted(&cube_facets(), [0.0; 3], 1e37);
    f.extend(shifted(&cube_facets(), [2e37, 2e37, 0.0], 1e37));
    let (r, _) = fixed(&f, &RepairOptions::default());
    assert!(r.mesh.vertices.iter().all(|v| v.is_finite()), "{:?}", r.mesh.vertices);
    assert!(r.log.separation.is_finite());
    let again = repair(r.mesh.clone(), &RepairOptions::default());
    assert!(!again.log.changed(), "{:?}", again.log);
}
