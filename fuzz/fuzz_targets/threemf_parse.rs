//! Arbitrary bytes as a 3MF package, and arbitrary text as its model XML
//! (wrapped in a real zip, so the fuzzer reaches the XML rules quickly).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use strata_core::stl::FacetSource;
use strata_core::threemf;

fuzz_target!(|data: &[u8]| {
    let _ = threemf::parse(data);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    if zip.start_file("3D/3dmodel.model", stored).is_ok() && zip.write_all(data).is_ok() {
        if let Ok(package) = zip.finish() {
            if let Ok(model) = threemf::parse_with_limit(&package.into_inner(), 1 << 20) {
                let t = &model.mesh;
                assert!(t.triangles.iter().flatten().all(|&v| (v as usize) < t.positions.len()));
                let _ = t.facet_count();
            }
        }
    }
});
