//! Replays every input under `fuzz/corpus/` through the library: whatever
//! the fuzzers once found interesting must still load or fail cleanly, and
//! repair what loads without panicking; the server's parsers (Range,
//! Upload-Checksum, signatures and JWTs, JSON and form bodies, multipart)
//! take every input too.

use std::path::Path;

use strata_core::{ValidateOptions, WeldOptions};

#[test]
fn fuzz_corpora_load_or_fail_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).expect("fuzz/corpus exists") {
        let target = target.expect("readable entry").path();
        for input in std::fs::read_dir(&target).expect("a corpus folder") {
            let path = input.expect("readable entry").path();
            let bytes = std::fs::read(&path).expect("corpus file readable");
            for tolerance in [None, Some(1e-3)] {
                // Ok or Err are both fine; a panic fails the test.
                let result =
                    strata_core::inspect(&bytes, &WeldOptions { tolerance }, &ValidateOptions::default());
                if let Ok(ins) = result {
                    let r = &ins.report;
                    assert!(r.faces <= r.triangles, "{}", path.display());
                    assert!(ins.mesh.faces.iter().flatten().all(|&v| (v as usize) < ins.mesh.vertices.len()));
                    // Repair must not panic on anything that loads, nor
                    // change its own result.
                    let once = strata_core::repair(ins.mesh, &strata_core::RepairOptions::default());
                    let twice =
                        strata_core::repair(once.mesh.clone(), &strata_core::RepairOptions::default());
                    assert!(!twice.log.changed(), "{}: {:?}", path.display(), twice.log);
                }
            }
            // The grammar alone, whatever detection would decide.
            let _ = strata_core::stl::parse_ascii(&bytes);
            let _ = strata_core::obj::parse(&bytes);
            let _ = strata_core::stream::Manifest::from_json(&bytes, &Default::default());
            // The server's parsers of untrusted input, each with its own
            // assertions (`strata_server::fuzzing`).
            use strata_server::fuzzing;
            for entry in [fuzzing::range, fuzzing::checksum, fuzzing::signatures, fuzzing::json_body] {
                entry(&bytes);
            }
            let parts = fuzzing::multipart(&bytes);
            if path.file_name().is_some_and(|n| n == "multipart_upload") {
                assert_eq!(parts, 2, "the seed upload form has a field and a file");
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 20, "only {replayed} corpus inputs: the corpus went missing");
}
