//! Property tests across the parse -> weld -> validate path.

use proptest::prelude::*;

use crate::stl::{self, Facet, Facets};
use crate::{IndexedMesh, ValidateOptions, WeldOptions, mesh, synth, validate};

fn any_facet() -> impl Strategy<Value = Facet> {
    // A small grid of values makes shared vertices (and so welding) likely.
    let coord = prop_oneof![(-4i32..4).prop_map(|v| v as f32 * 0.5), any::<f32>()];
    let v = [coord.clone(), coord.clone(), coord];
    (prop::array::uniform3(-1.0f32..1.0), [v.clone(), v.clone(), v])
        .prop_map(|(normal, vertices)| Facet { normal, vertices })
}

fn soup_of(mesh: &IndexedMesh) -> Vec<Facet> {
    (0..mesh.faces.len())
        .map(|f| Facet { normal: [0.0; 3], vertices: mesh.triangle(f).map(|v| v.to_array()) })
        .collect()
}

fn same_bits(a: &[Facet], b: &[Facet]) -> bool {
    let bits = |f: &Facet| f.vertices.map(|v| v.map(f32::to_bits));
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bits(x) == bits(y))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = crate::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default());
        let _ = stl::parse_ascii(&bytes);
    }

    #[test]
    fn arbitrary_text_after_solid_never_panics(body in "[ -~\t\r\n]{0,400}") {
        let text = format!("solid x\n{body}");
        let _ = crate::inspect(text.as_bytes(), &WeldOptions { tolerance: Some(0.1) }, &ValidateOptions::default());
    }

    #[test]
    fn arbitrary_records_behind_a_consistent_header_always_parse(
        records in prop::collection::vec(any::<[u8; 50]>(), 0..40),
        header in any::<[u8; 80]>(),
    ) {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&(records.len() as u32).to_le_bytes());
        bytes.extend(records.iter().flatten());
        let ins = crate::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default());
        let ins = ins.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(ins.report.triangles as usize, records.len());
        prop_assert!(ins.mesh.faces.iter().flatten().all(|&v| (v as usize) < ins.mesh.vertices.len()));
    }

    #[test]
    fn binary_and_ascii_round_trip_exactly(facets in prop::collection::vec(any_facet(), 0..30)) {
        let finite: Vec<Facet> = facets.into_iter()
            .filter(|f| f.vertices.iter().flatten().chain(&f.normal).all(|c| c.is_finite()))
            .collect();
        let bin = synth::to_binary_stl("p", &finite);
        let parsed = stl::parse(&bin).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Facets::Binary(records) = parsed.facets() else { return Err(TestCaseError::fail("not binary")) };
        let back: Vec<Facet> = records.iter().map(|r| Facet { normal: r.normal(), vertices: r.vertices() }).collect();
        prop_assert!(same_bits(&back, &finite));

        let text = synth::to_ascii_stl("p", &finite);
        let parsed = stl::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Facets::Ascii(back) = parsed.facets() else { return Err(TestCaseError::fail("not ascii")) };
        prop_assert!(same_bits(back, &finite));
    }

    #[test]
    fn weld_is_idempotent(
        facets in prop::collection::vec(any_facet(), 0..60),
        tolerance in prop_oneof![Just(None), (0.01f32..0.6).prop_map(Some)],
    ) {
        let options = WeldOptions { tolerance };
        let (once, _) = mesh::weld(&facets[..], &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (twice, _) = mesh::weld(&soup_of(&once)[..], &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn closed_mesh_volume_and_topology_survive_translation(
        rings in 3usize..24,
        segments in 3usize..24,
        offset in prop::array::uniform3(-100.0f32..100.0),
    ) {
        let torus = synth::torus(rings, segments);
        let moved: Vec<Facet> = torus.iter()
            .map(|f| Facet { normal: f.normal, vertices: f.vertices.map(|v| [v[0] + offset[0], v[1] + offset[1], v[2] + offset[2]]) })
            .collect();
        let report = |f: &[Facet]| {
            let (m, soup) = mesh::weld(f, &WeldOptions::default()).expect("welds");
            validate::validate(&m, &soup, &ValidateOptions::default())
        };
        let (a, b) = (report(&torus), report(&moved));
        prop_assert!(a.is_volume && b.is_volume);
        prop_assert_eq!((a.euler_number, a.bodies, a.vertices), (b.euler_number, b.bodies, b.vertices));
        // Translation rounds each coordinate to f32 near |offset| + 13, a
        // relative error of ~1e-5 on the 13-unit torus at worst.
        prop_assert!((a.volume - b.volume).abs() <= 1e-4 * a.volume, "{} vs {}", a.volume, b.volume);
    }
}

/// One kind of damage done to a closed mesh.
#[derive(Debug, Clone)]
enum Damage {
    Delete(usize),
    Flip(usize),
    Duplicate(usize),
    Collapse(usize),
    /// Cut a face at an edge midpoint and add the zero-area sliver that
    /// keeps the surface closed, as CAD exporters do.
    Sliver(usize),
}

fn any_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0usize..10_000).prop_map(Damage::Delete),
        (0usize..10_000).prop_map(Damage::Flip),
        (0usize..10_000).prop_map(Damage::Duplicate),
        (0usize..10_000).prop_map(Damage::Collapse),
        (0usize..10_000).prop_map(Damage::Sliver),
    ]
}

fn damaged(mut facets: Vec<Facet>, damage: &[Damage]) -> Vec<Facet> {
    for d in damage {
        if facets.is_empty() {
            break;
        }
        let n = facets.len();
        match *d {
            Damage::Delete(i) => {
                facets.remove(i % n);
            }
            Damage::Flip(i) => facets[i % n].vertices.swap(1, 2),
            Damage::Duplicate(i) => facets.push(facets[i % n]),
            Damage::Collapse(i) => {
                let [a, b, _] = facets[i % n].vertices;
                facets.push(Facet { normal: [0.0; 3], vertices: [a, a, b] });
            }
            Damage::Sliver(i) => {
                let [a, b, c] = facets[i % n].vertices;
                let m = std::array::from_fn(|k| ((f64::from(a[k]) + f64::from(b[k])) / 2.0) as f32);
                facets[i % n].vertices = [a, m, c];
                facets.push(Facet { normal: [0.0; 3], vertices: [m, b, c] });
                facets.push(Facet { normal: [0.0; 3], vertices: [a, b, m] });
            }
        }
    }
    facets
}

fn defects(r: &crate::ValidationReport) -> [(&'static str, u64); 5] {
    [
        ("boundary_edges", r.boundary_edges),
        ("nonmanifold_edges", r.nonmanifold_edges),
        ("misoriented_edges", r.misoriented_edges),
        ("degenerate_faces", r.degenerate_faces),
        ("duplicate_faces", r.duplicate_faces),
    ]
}

/// Repairs a soup and checks both properties: no defect count grows, and
/// the repaired mesh goes through repair unchanged.
fn check_repair(facets: &[Facet], options: &crate::RepairOptions) -> Result<(), TestCaseError> {
    let (m, soup) =
        mesh::weld(facets, &WeldOptions::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let before = validate::validate(&m, &soup, &ValidateOptions::default());
    let once = crate::repair(m, options);
    let after = validate::validate(&once.mesh, &crate::SoupStats::default(), &ValidateOptions::default());
    for ((name, b), (_, a)) in defects(&before).into_iter().zip(defects(&after)) {
        prop_assert!(a <= b, "{} grew from {} to {}; log {:?}", name, b, a, once.log);
    }
    let twice = crate::repair(once.mesh.clone(), options);
    prop_assert!(!twice.log.changed(), "second repair changed {:?}", twice.log);
    prop_assert_eq!(&twice.mesh, &once.mesh);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn repair_of_a_damaged_closed_mesh_never_adds_a_defect_and_is_idempotent(
        rings in 3usize..16,
        segments in 3usize..12,
        damage in prop::collection::vec(any_damage(), 0..12),
        remove_unconnected in any::<bool>(),
    ) {
        let facets = damaged(synth::torus(rings, segments), &damage);
        check_repair(&facets, &crate::RepairOptions { remove_unconnected, ..Default::default() })?;
    }

    #[test]
    fn repair_of_an_arbitrary_soup_never_adds_a_defect_and_is_idempotent(
        facets in prop::collection::vec(any_facet(), 0..40),
        remove_unconnected in any::<bool>(),
    ) {
        let finite: Vec<Facet> = facets.into_iter()
            .filter(|f| f.vertices.iter().flatten().all(|c| c.is_finite() && c.abs() < 1e6))
            .collect();
        check_repair(&finite, &crate::RepairOptions { remove_unconnected, ..Default::default() })?;
    }
}
