//! The server's `signatures` parser on arbitrary bytes: see `strata_server::fuzzing::signatures`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_server::fuzzing::signatures(data));
