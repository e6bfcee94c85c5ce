//! The server's `checksum` parser on arbitrary bytes: see `strata_server::fuzzing::checksum`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_server::fuzzing::checksum(data));
