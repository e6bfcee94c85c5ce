//! Arbitrary bytes through the OBJ reader, then weld and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::{ValidateOptions, WeldOptions, mesh, obj, validate};

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = obj::parse(data) {
        let t = &parsed.mesh;
        assert!(t.triangles.iter().flatten().all(|&v| (v as usize) < t.positions.len()));
        if let Ok((m, soup)) = mesh::weld(t, &WeldOptions::default()) {
            let _ = validate::validate(&m, &soup, &ValidateOptions::default());
        }
    }
});
