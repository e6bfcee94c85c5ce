//! The server's `multipart` parser on arbitrary bytes: see `strata_server::fuzzing::multipart`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata_server::fuzzing::multipart(data);
});
