//! Arbitrary facet records behind a header whose count matches their size,
//! so every input takes the zero-copy binary path into weld and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::{ValidateOptions, WeldOptions};

fuzz_target!(|data: &[u8]| {
    let records = data.len() / 50;
    let mut bytes = vec![b' '; 80];
    bytes.extend_from_slice(&(records as u32).to_le_bytes());
    bytes.extend_from_slice(&data[..records * 50]);
    let ins = strata_core::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default());
    let ins = ins.expect("a size-consistent binary STL always parses");
    assert_eq!(ins.report.triangles as usize, records);
});
