//! The server's `json_body` parser on arbitrary bytes: see `strata_server::fuzzing::json_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_server::fuzzing::json_body(data));
