//! The slicer against trimesh and shapely (independent reference values in
//! `tests/fixtures/slice_areas.json`, made by
//! `tests/fixtures/slice_reference.py`) for every watertight dataset model:
//! the same planes, every layer's area within 0.01% (or 1e-3 mm² on tiny
//! layers, scaled with the layer height for models in metres) of the union
//! of the bodies' sections, and the stacked layers' volume close to the
//! mesh's.

use std::path::{Path, PathBuf};

use strata_core::slice::{SliceOptions, slice};
use strata_core::{ValidateOptions, WeldOptions};

/// Checks every fixture model found in `dir`; returns how many were checked.
fn check(dir: &Path, require_all: bool) -> usize {
    let fx = crate::util::slice_fixtures();
    let models = fx["models"].as_object().expect("models");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (file, want) in models {
        let path = dir.join(file);
        if !path.exists() {
            assert!(!require_all, "{} is in the fixture but missing from {}", file, dir.display());
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable");
        let ins = strata_core::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default())
            .expect("loads");
        let h = want["layer_height"].as_f64().expect("h");
        let options =
            SliceOptions { layer_height: h, first_layer: want["first_layer"].as_f64().expect("first") };
        let layers = slice(&ins.mesh, &options).expect("slices");
        let z: Vec<f64> = want["z"].as_array().expect("z").iter().map(|v| v.as_f64().expect("f64")).collect();
        let area: Vec<f64> =
            want["union_area"].as_array().expect("area").iter().map(|v| v.as_f64().expect("f64")).collect();
        checked += 1;
        if layers.len() != z.len() {
            problems.push(format!("{file}: {} layers, reference {}", layers.len(), z.len()));
            continue;
        }
        let tiny = 1e-3 * (h / 0.2) * (h / 0.2);
        let (base, top) = (want["bottom"].as_f64().expect("bottom"), want["top"].as_f64().expect("top"));
        let mut stacked = 0.0;
        for (i, (layer, (&rz, &ra))) in layers.iter().zip(z.iter().zip(&area)).enumerate() {
            // OBJ and 3MF coordinates are f64 text to trimesh and f32 to
            // us: the bottom (and so every plane) may differ in the 8th digit.
            if (layer.z - rz).abs() > 1e-6 * rz.abs().max(1.0) {
                problems.push(format!("{file} layer {i}: plane {} vs {rz}", layer.z));
            }
            let got = layer.area();
            if layer.open_chains > 0 {
                problems.push(format!(
                    "{file} layer {i}: {} open chains in a watertight model",
                    layer.open_chains
                ));
            }
            if (got - ra).abs() > crate::util::area_tolerance(file, i, ra, tiny) {
                problems.push(format!(
                    "{file} layer {i} z {rz}: area {got} vs trimesh {ra} ({:.2e} relative; {} polygons, {} open chains)",
                    (got - ra) / ra,
                    layer.polygons.len(),
                    layer.open_chains
                ));
            }
            // The last layer is cut off at the mesh's top.
            let bottom = if i == 0 { 0.0 } else { options.first_layer + (i - 1) as f64 * h };
            let thick = if i == 0 { options.first_layer } else { h };
            let thick = thick.min(top - base - bottom);
            stacked += got * thick;
        }
        let volume = want["volume"].as_f64().expect("volume").abs();
        // Midpoint layers: the stacked volume differs from the mesh's by
        // how much sections change within a layer (2.2% on a 3 mm part with
        // rounded edges cut into 15 layers).
        if (stacked - volume).abs() > 0.03 * volume {
            problems.push(format!("{file}: stacked volume {stacked} vs mesh {volume}"));
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    checked
}

#[test]
fn repo_models_slice_like_trimesh() {
    let n = check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets"), false);
    assert!(n >= 6, "only {n} fixture models in datasets/");
}

#[test]
fn shared_models_slice_like_trimesh() {
    let Some(dir) = std::env::var_os("STRATA_DATASETS") else { return };
    let n = check(&PathBuf::from(dir), true);
    assert!(n >= 20, "{n}");
}
