//! Arbitrary bytes through detection, both parsers, weld and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::{ValidateOptions, WeldOptions};

fuzz_target!(|data: &[u8]| {
    for tolerance in [None, Some(0.5)] {
        if let Ok(ins) = strata_core::inspect(data, &WeldOptions { tolerance }, &ValidateOptions::default()) {
            assert!(ins.mesh.faces.iter().flatten().all(|&v| (v as usize) < ins.mesh.vertices.len()));
            assert!(ins.report.faces <= ins.report.triangles);
        }
    }
});
