//! Arbitrary bytes loaded as any model, then repaired: repair must not
//! panic, must not add a defect, and must be idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::{RepairOptions, ValidateOptions, WeldOptions, repair, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(ins) = strata_core::inspect(data, &WeldOptions::default(), &ValidateOptions::default()) else { return };
    if ins.mesh.faces.len() > 20_000 {
        return;
    }
    let remove_unconnected = data.first().is_some_and(|b| b & 1 == 1);
    let options = RepairOptions { remove_unconnected, ..RepairOptions::default() };
    let once = repair(ins.mesh, &options);
    let after = validate::validate(&once.mesh, &Default::default(), &ValidateOptions::default());
    let before = &ins.report;
    assert!(after.boundary_edges <= before.boundary_edges);
    assert!(after.nonmanifold_edges <= before.nonmanifold_edges);
    assert!(after.misoriented_edges <= before.misoriented_edges);
    assert!(after.degenerate_faces <= before.degenerate_faces);
    assert!(after.duplicate_faces <= before.duplicate_faces);
    let twice = repair(once.mesh.clone(), &options);
    assert!(!twice.log.changed());
    assert_eq!(twice.mesh, once.mesh);
});
