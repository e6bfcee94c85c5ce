use super::*;
use crate::mesh::{WeldOptions, weld};
use crate::stl::Facet;
use crate::synth::{cube_facets, torus};

fn mesh_of(facets: &[Facet]) -> IndexedMesh {
    weld(facets, &WeldOptions::default()).expect("welds").0
}

fn options(view: View, size: u32) -> RenderOptions {
    RenderOptions { view, width: size, height: size, ..RenderOptions::default() }
}

fn covered(image: &Image) -> usize {
    image.rgba.chunks_exact(4).filter(|p| p[3] > 0).count()
}

/// A UV sphere of radius `r` centred on `c`.
fn sphere(r: f64, c: [f64; 3], rings: usize, segments: usize) -> Vec<Facet> {
    let point = |i: usize, j: usize| -> [f32; 3] {
        let theta = std::f64::consts::PI * i as f64 / rings as f64;
        let phi = std::f64::consts::TAU * (j % segments) as f64 / segments as f64;
        [
            (c[0] + r * theta.sin() * phi.cos()) as f32,
            (c[1] + r * theta.sin() * phi.sin()) as f32,
            (c[2] + r * theta.cos()) as f32,
        ]
    };
    let mut out = Vec::new();
    for i in 0..rings {
        for j in 0..segments {
            let (a, b, c, d) = (point(i, j), point(i + 1, j), point(i + 1, j + 1), point(i, j + 1));
            if i > 0 {
                out.push(Facet { normal: [0.0; 3], vertices: [a, b, d] });
            }
            if i + 1 < rings {
                out.push(Facet { normal: [0.0; 3], vertices: [b, c, d] });
            }
        }
    }
    out
}

fn transformed(facets: &[Facet], f: impl Fn([f32; 3]) -> [f32; 3]) -> Vec<Facet> {
    facets.iter().map(|t| Facet { normal: t.normal, vertices: t.vertices.map(&f) }).collect()
}

#[test]
fn a_cube_from_the_top_covers_its_square_and_nothing_else() {
    let s = render(&mesh_of(&cube_facets()), &options(View::Top, 512)).expect("renders");
    // The cube is [0, 2]^3: its side fills 90% of the image.
    let side = 2.0 * s.pixels_per_unit;
    assert!((side - 512.0 * 0.9).abs() < 1e-9, "{side}");
    let expected = side * side;
    let got = covered(&s.image) as f64;
    // Exact coverage rules: off by at most the pixels the boundary crosses.
    assert!((got - expected).abs() <= 4.0 * side, "{got} pixels, expected {expected}");
    // The margin is empty, the middle full, and the top face is one shade.
    assert_eq!(s.image.pixel(5, 5)[3], 0);
    assert_eq!(s.image.pixel(506, 506)[3], 0);
    let mid = s.image.pixel(256, 256);
    assert_eq!(mid[3], 255);
    assert_eq!(s.image.pixel(100, 400), mid);
}

#[test]
fn a_sphere_silhouette_is_a_disc_of_the_expected_radius() {
    let r = 3.0;
    let mesh = mesh_of(&sphere(r, [1.0, -2.0, 5.0], 96, 192));
    for view in [View::Front, View::Top, View::Side, View::Iso] {
        let s = render(&mesh, &options(view, 400)).expect("renders");
        let radius = r * s.pixels_per_unit;
        assert!((radius - 180.0).abs() < 0.5, "{view:?}: radius {radius}");
        let (cx, cy) = (200.0, 200.0);
        let mut wrong = 0;
        for y in 0..400 {
            for x in 0..400 {
                let d = ((f64::from(x) + 0.5 - cx).powi(2) + (f64::from(y) + 0.5 - cy).powi(2)).sqrt();
                let on = s.image.pixel(x, y)[3] > 0;
                if (d < radius - 1.5 && !on) || (d > radius + 1.5 && on) {
                    wrong += 1;
                }
            }
        }
        assert_eq!(wrong, 0, "{view:?}: {wrong} pixels off the disc");
        let area = covered(&s.image) as f64;
        let disc = std::f64::consts::PI * radius * radius;
        assert!((area - disc).abs() / disc < 0.01, "{view:?}: {area} vs {disc}");
    }
}

#[test]
fn the_near_box_hides_the_far_one_whatever_the_face_order() {
    // Far: a wide slab at y in [5, 6]. Near: a cube turned 45 degrees
    // about z at y around 0, so its visible faces are shaded differently.
    let far = transformed(&cube_facets(), |v| [v[0] * 3.0 - 3.0, v[1] * 0.5 + 5.0, v[2] * 3.0 - 3.0]);
    let (s, c) = (std::f32::consts::FRAC_1_SQRT_2, 0.0);
    let near = transformed(&cube_facets(), |v| {
        let (x, y) = (v[0] / 2.0 - 0.5, v[1] / 2.0 - 0.5);
        [(x - y) * s * 2.0, (x + y) * s * 2.0 + c, v[2] - 1.0]
    });
    let render_of = |facets: &[Facet]| {
        // Frame every scene identically: the far slab sets the frame.
        render(&mesh_of(facets), &options(View::Front, 300)).expect("renders").image
    };
    let far_only = render_of(&far);
    let near_then_far: Vec<Facet> = near.iter().chain(&far).copied().collect();
    let far_then_near: Vec<Facet> = far.iter().chain(&near).copied().collect();
    for scene in [render_of(&near_then_far), render_of(&far_then_near)] {
        // Right of the middle: the near cube's face turned towards +x.
        for (x, y) in [(160, 150), (175, 150), (165, 120), (165, 180)] {
            let p = scene.pixel(x, y);
            assert_ne!(p, far_only.pixel(x, y), "pixel ({x}, {y}) shows the far slab");
            assert_eq!(p[3], 255);
        }
        // Away from the near cube the far slab shows.
        assert_eq!(scene.pixel(40, 40), far_only.pixel(40, 40));
    }
}

#[test]
fn small_faces_leave_no_cracks_in_a_closed_surface() {
    // 80k faces in a 64x64 image: most faces cover no pixel centre, yet
    // every pixel inside the silhouette is drawn.
    let mesh = mesh_of(&torus(400, 100));
    let s = render(&mesh, &options(View::Top, 64)).expect("renders");
    let ppu = s.pixels_per_unit;
    let (cx, cy) = (32.0, 32.0);
    for y in 0..64 {
        for x in 0..64 {
            let d = ((f64::from(x) + 0.5 - cx).powi(2) + (f64::from(y) + 0.5 - cy).powi(2)).sqrt() / ppu;
            // Ring between radius 7 and 13, less a pixel of slack.
            if d > 7.0 + 1.0 / ppu && d < 13.0 - 1.0 / ppu {
                assert_eq!(s.image.pixel(x, y)[3], 255, "crack at ({x}, {y})");
            }
            if d < 7.0 - 1.0 / ppu || d > 13.0 + 1.0 / ppu {
                assert_eq!(s.image.pixel(x, y)[3], 0, "stray pixel at ({x}, {y})");
            }
        }
    }
}

#[test]
fn antialiasing_blends_edges_into_the_background() {
    let mesh = mesh_of(&sphere(1.0, [0.0; 3], 32, 64));
    let plain = render(&mesh, &options(View::Front, 128)).expect("renders").image;
    let smooth = render(&mesh, &RenderOptions { antialias: true, ..options(View::Front, 128) })
        .expect("renders")
        .image;
    assert_eq!((smooth.width, smooth.height), (128, 128));
    let partial = |i: &Image| i.rgba.chunks_exact(4).filter(|p| p[3] > 0 && p[3] < 255).count();
    assert_eq!(partial(&plain), 0);
    assert!(partial(&smooth) > 100, "{} partly covered pixels", partial(&smooth));
    let diff = covered(&plain) as f64 - covered(&smooth) as f64;
    assert!(diff.abs() < 0.05 * covered(&plain) as f64);
}

#[test]
fn solid_background_and_png_round_trip() {
    let opts =
        RenderOptions { background: Some([10, 20, 30]), width: 64, height: 48, ..RenderOptions::default() };
    let s = render(&mesh_of(&cube_facets()), &opts).expect("renders");
    assert_eq!(s.image.pixel(0, 0), [10, 20, 30, 255]);
    let png = s.image.to_png().expect("encodes");
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!((info.width, info.height), (64, 48));
    assert_eq!(&buf[..info.buffer_size()], &s.image.rgba[..]);
}

#[test]
fn empty_meshes_and_bad_sizes() {
    let empty = IndexedMesh::default();
    let s = render(&empty, &options(View::Iso, 16)).expect("renders");
    assert_eq!(covered(&s.image), 0);
    for (w, h) in [(0, 10), (10, 0), (MAX_SIZE + 1, 10)] {
        let opts = RenderOptions { width: w, height: h, ..RenderOptions::default() };
        assert_eq!(render(&empty, &opts).map(|_| ()), Err(RenderError::BadSize { width: w, height: h }));
    }
    assert_eq!("iso".parse(), Ok(View::Iso));
    assert!("perspective".parse::<View>().is_err());
}

#[test]
fn culling_back_faces_changes_nothing_on_a_closed_outward_mesh() {
    let closed = [mesh_of(&sphere(2.0, [0.0; 3], 24, 48)), mesh_of(&cube_facets()), mesh_of(&torus(60, 30))];
    for mesh in &closed {
        for view in [View::Iso, View::Front, View::Top, View::Side] {
            let all = render(mesh, &options(view, 96)).expect("renders").image;
            let culled = render(mesh, &RenderOptions { cull_back_faces: true, ..options(view, 96) })
                .expect("renders")
                .image;
            assert_eq!(all, culled, "{view:?}");
        }
    }
    // Two sheets seen from the top: the top face faces the camera and is
    // kept; the bottom face alone faces away and is culled.
    let top: Vec<Facet> = cube_facets().into_iter().filter(|f| f.normal == [0.0, 0.0, 1.0]).collect();
    let bottom: Vec<Facet> = cube_facets().into_iter().filter(|f| f.normal == [0.0, 0.0, -1.0]).collect();
    let sheets = mesh_of(&top.iter().chain(&bottom).copied().collect::<Vec<_>>());
    let culled =
        render(&sheets, &RenderOptions { cull_back_faces: true, ..options(View::Top, 64) }).expect("renders");
    let all = render(&sheets, &options(View::Top, 64)).expect("renders");
    assert!(covered(&culled.image) > 1000);
    assert_eq!(covered(&culled.image), covered(&all.image));
    let under = mesh_of(&bottom);
    let culled =
        render(&under, &RenderOptions { cull_back_faces: true, ..options(View::Top, 64) }).expect("renders");
    assert_eq!(covered(&culled.image), 0, "the bottom face seen from above is culled");
}
