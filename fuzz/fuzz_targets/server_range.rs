//! The server's `range` parser on arbitrary bytes: see `strata_server::fuzzing::range`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_server::fuzzing::range(data));
