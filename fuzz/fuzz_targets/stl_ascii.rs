//! Arbitrary bytes through the ASCII grammar alone, with and without a
//! leading `solid` so the fuzzer reaches the facet rules quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata_core::stl::parse_ascii(data);
    let mut prefixed = b"solid f\n".to_vec();
    prefixed.extend_from_slice(data);
    if let Ok(stl) = strata_core::stl::parse_ascii(&prefixed) {
        let _ = strata_core::mesh::weld_stl(&stl, &Default::default());
    }
});
