use super::*;
use crate::mesh::{WeldOptions, weld};
use crate::stl::Facet;
use crate::synth::{cube_facets, torus};

fn mesh_of(facets: &[Facet]) -> IndexedMesh {
    weld(facets, &WeldOptions::default()).expect("welds").0
}

fn layers(facets: &[Facet], layer_height: f64, first_layer: f64) -> Vec<Layer> {
    slice(&mesh_of(facets), &SliceOptions { layer_height, first_layer }).expect("slices")
}

fn moved(facets: &[Facet], by: [f32; 3]) -> Vec<Facet> {
    facets
        .iter()
        .map(|f| Facet {
            normal: f.normal,
            vertices: f.vertices.map(|v| std::array::from_fn(|k| v[k] + by[k])),
        })
        .collect()
}

#[test]
fn a_cube_gives_one_square_per_layer_counter_clockwise() {
    let l = layers(&cube_facets(), 0.2, 0.2);
    assert_eq!(l.len(), 10);
    for (i, layer) in l.iter().enumerate() {
        assert!((layer.z - (0.1 + 0.2 * i as f64)).abs() < 1e-12, "{}", layer.z);
        assert_eq!(layer.polygons.len(), 1);
        assert_eq!(layer.open_chains, 0);
        assert_eq!(layer.polygons[0].area2(), 2 * 4_000_000_000_000, "exactly 4 mm^2, counter-clockwise");
        assert_eq!(layer.holes(), 0);
    }
}

#[test]
fn first_layer_and_count() {
    // Binary-exact heights: layers [0, .25], [.25, .75], [.75, 1.25]; the
    // next would start at the top.
    let z = plane_heights(0.0, 1.0, &SliceOptions { layer_height: 0.5, first_layer: 0.25 }).expect("heights");
    let want = [0.125, 0.5, 1.0];
    assert_eq!(z.len(), want.len());
    for (a, b) in z.iter().zip(want) {
        assert!((a - b).abs() < 1e-12);
    }
    assert!(matches!(
        plane_heights(0.0, 1.0, &SliceOptions { layer_height: 0.0, first_layer: 0.1 }),
        Err(SliceError::BadLayerHeight(_))
    ));
    assert!(matches!(
        plane_heights(0.0, 1.0, &SliceOptions { layer_height: f64::NAN, first_layer: 0.1 }),
        Err(SliceError::BadLayerHeight(_))
    ));
    assert!(matches!(
        plane_heights(0.0, 1e9, &SliceOptions::default()),
        Err(SliceError::TooManyLayers { .. })
    ));
}

#[test]
fn vertices_exactly_on_the_plane() {
    // An octahedron whose equator (4 vertices) lies on the first plane.
    let (t, b) = ([0.0, 0.0, 1.0], [0.0, 0.0, -1.0]);
    let eq = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let mut f = Vec::new();
    for i in 0..4 {
        let (p, q) = (eq[i], eq[(i + 1) % 4]);
        f.push(Facet { normal: [0.0; 3], vertices: [p, q, t] });
        f.push(Facet { normal: [0.0; 3], vertices: [q, p, b] });
    }
    let l = layers(&f, 0.5, 2.0);
    assert_eq!((l.len(), l[0].z), (1, 0.0));
    assert_eq!(l[0].polygons.len(), 1);
    assert!((l[0].area() - 2.0).abs() < 1e-12, "{}", l[0].area());
    // Planes at -0.25 and 0.75: squares of half-diagonal 0.75 and 0.25.
    let l = layers(&f, 0.5, 1.5);
    assert_eq!(l.len(), 2);
    assert!((l[0].area() - 2.0 * 0.75 * 0.75).abs() < 1e-9, "{}", l[0].area());
    assert!((l[1].area() - 2.0 * 0.25 * 0.25).abs() < 1e-9, "{}", l[1].area());
}

#[test]
fn a_plane_through_a_horizontal_face_cuts_the_full_section() {
    // First layer 4: the plane is at z = 2, the cube's top face.
    let l = layers(&cube_facets(), 1.0, 4.0);
    assert_eq!(l[0].z, 2.0);
    assert!((l[0].area() - 4.0).abs() < 1e-12);
}

#[test]
fn flipped_faces_do_not_break_a_contour() {
    let mut f = cube_facets();
    f[8].vertices.swap(1, 2);
    f[3].vertices.swap(0, 1);
    for layer in layers(&f, 0.2, 0.2) {
        assert_eq!((layer.polygons.len(), layer.open_chains), (1, 0));
        assert!((layer.area() - 4.0).abs() < 1e-12);
    }
}

#[test]
fn an_open_side_is_reported_and_a_tiny_crack_is_closed() {
    // Without the +X side (faces 10, 11) every layer is a U: open.
    let f: Vec<Facet> = cube_facets().into_iter().take(10).collect();
    for layer in layers(&f, 0.2, 0.2) {
        assert_eq!((layer.polygons.len(), layer.open_chains), (0, 1));
    }
    // A crack of 1e-6 mm between two facets' corners: joined.
    let mut f = cube_facets();
    f[10].vertices[0][1] += 1e-6;
    for layer in layers(&f, 0.2, 0.2) {
        assert_eq!((layer.polygons.len(), layer.open_chains), (1, 0), "z {}", layer.z);
        assert!((layer.area() - 4.0).abs() < 1e-5);
    }
}

#[test]
fn bodies_touching_on_an_edge_stay_two_squares() {
    let mut f = cube_facets();
    f.extend(moved(&cube_facets(), [2.0, 2.0, 0.0]));
    for layer in layers(&f, 0.2, 0.2) {
        assert_eq!(layer.polygons.len(), 2, "z {}", layer.z);
        assert!((layer.area() - 8.0).abs() < 1e-12, "{}", layer.area());
        assert_eq!(layer.holes(), 0);
    }
}

#[test]
fn a_torus_has_a_hole() {
    let t = torus(64, 32);
    let l = layers(&t, 0.5, 0.5);
    let mid = &l[l.len() / 2];
    assert_eq!((mid.polygons.len(), mid.holes()), (2, 1), "z {}", mid.z);
    let (outer, hole): (Vec<&Polygon>, Vec<&Polygon>) = mid.polygons.iter().partition(|p| !p.is_hole());
    assert!(outer[0].area2() > -hole[0].area2());
}

#[test]
fn empty_mesh_has_no_layers_and_bad_options_are_errors() {
    assert!(slice(&IndexedMesh::default(), &SliceOptions::default()).expect("ok").is_empty());
    let e = slice(&mesh_of(&cube_facets()), &SliceOptions { layer_height: -1.0, first_layer: 0.2 });
    assert_eq!(e.map(|_| ()).map_err(|e| e.code()), Err("bad_layer_height"));
}

#[test]
fn a_figure_eight_loop_is_cut_into_two() {
    let eight = vec![[0, 0], [10, 0], [10, 10], [0, 0], [-10, 0], [-10, -10]];
    let pieces = split_at_repeats(eight);
    assert_eq!(pieces, vec![vec![[0, 0], [10, 0], [10, 10]], vec![[0, 0], [-10, 0], [-10, -10]]]);
    let polys = orient(pieces.into_iter().map(|p| (p, 0)).collect());
    assert!(polys.iter().all(|p| !p.is_hole()), "two outer boundaries: {polys:?}");
}

#[test]
fn intersecting_bodies_are_unioned() {
    // Two cubes overlapping by half: each layer is a 3 x 2 rectangle.
    let both: Vec<Facet> = cube_facets().into_iter().chain(moved(&cube_facets(), [1.0, 0.0, 0.0])).collect();
    let l = layers(&both, 0.5, 0.5);
    assert_eq!(l.len(), 4);
    for layer in &l {
        assert_eq!(layer.polygons.len(), 1, "{:?}", layer.polygons);
        assert!((layer.area() - 6.0).abs() < 1e-9, "{}", layer.area());
        assert!(!layer.polygons[0].is_hole());
    }
    // A body embedded in another (both wound outward) adds nothing; the
    // same inner cube wound inward is a cavity: a hole.
    let outer: Vec<Facet> = moved(&cube_facets(), [-1.0, -1.0, -1.0])
        .into_iter()
        .map(|f| Facet { normal: f.normal, vertices: f.vertices.map(|v| v.map(|c| c * 2.0)) })
        .collect();
    let inner = moved(&cube_facets(), [-1.0, -1.0, -1.0]);
    let inward: Vec<Facet> = inner
        .iter()
        .map(|f| Facet { normal: f.normal, vertices: [f.vertices[0], f.vertices[2], f.vertices[1]] })
        .collect();
    for (body, holes, area) in [(&inner, 0, 16.0), (&inward, 1, 12.0)] {
        let l = layers(&outer.iter().chain(body.iter()).copied().collect::<Vec<_>>(), 0.5, 0.5);
        let middle = l.iter().find(|l| (l.z - 0.25).abs() < 1e-9).expect("layer at 0.25");
        assert_eq!(middle.holes(), holes);
        assert!((middle.area() - area).abs() < 1e-9, "{}", middle.area());
    }
    // A whole mesh wound inside out still slices the right way up.
    let inside_out: Vec<Facet> = cube_facets()
        .into_iter()
        .map(|f| Facet { normal: f.normal, vertices: [f.vertices[0], f.vertices[2], f.vertices[1]] })
        .collect();
    for layer in layers(&inside_out, 0.5, 0.5) {
        assert!((layer.area() - 4.0).abs() < 1e-9);
    }
}

#[test]
fn limits_on_layers_and_time_stop_the_slicer() {
    let cube = mesh_of(&cube_facets());
    let fine = SliceOptions { layer_height: 0.031_25, first_layer: 0.031_25 };
    let few = SliceLimits { max_layers: 50, deadline: None };
    assert!(matches!(
        slice_within(&cube, &fine, &few),
        Err(SliceError::TooManyLayers { layers: 64, limit: 50, .. })
    ));
    let past = SliceLimits { max_layers: MAX_LAYERS, deadline: Some(std::time::Instant::now()) };
    let e = slice_within(&cube, &fine, &past).expect_err("no time left");
    assert_eq!(e.code(), "time_limit");
    assert!(e.to_string().starts_with("slicing passed the job's time limit after 0 of 64 layers"), "{e}");
    let ample = SliceLimits {
        max_layers: 64,
        deadline: std::time::Instant::now().checked_add(std::time::Duration::from_secs(60)),
    };
    assert_eq!(slice_within(&cube, &fine, &ample).expect("within").len(), 64);
}
