//! `strata repair IN OUT`: load, repair, validate again, write binary STL.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;
use strata_core::{RepairLog, RepairOptions, ValidationReport, Warning};

use crate::RepairArgs;
use crate::files::write_atomically;

/// The JSON report (`--report FILE`, `--json`): a contract with scripts.
#[derive(Serialize)]
struct Report<'a> {
    file: &'a str,
    output: &'a str,
    format: &'static str,
    /// Whether OUT was written (it is unless nothing is left).
    written: bool,
    /// The result is watertight, consistently wound and encloses volume.
    valid_volume: bool,
    /// What still keeps it from being a valid volume (empty when valid).
    remaining: Vec<String>,
    before: &'a ValidationReport,
    repair: &'a RepairLog,
    after: &'a ValidationReport,
    warnings: &'a [Warning],
}

pub(crate) fn run(args: &RepairArgs) -> ExitCode {
    crate::exit_with(repair(args))
}

fn repair(args: &RepairArgs) -> Result<ExitCode, String> {
    let name = args.input.to_string_lossy();
    let out_name = args.output.to_string_lossy();
    let (_, inspection) = crate::inspect_file(&args.input)?;
    let options =
        RepairOptions { weld_tolerance: args.weld_tolerance, remove_unconnected: args.remove_unconnected };
    let repaired = strata_core::repair::repair_validated(inspection.mesh, &inspection.report, &options);
    let after = &repaired.report;
    let remaining = remaining(after, &repaired.log);

    let written = !repaired.mesh.faces.is_empty();
    if written {
        let file_name = args.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let header = format!(
            "Strata {} repair of {file_name}: {} faces{}",
            env!("CARGO_PKG_VERSION"),
            after.faces,
            if after.is_volume { ", valid volume" } else { ", NOT a valid volume" }
        );
        let stl = strata_core::repair::to_binary_stl(&repaired.mesh, &header);
        write_atomically(&args.output, &stl).map_err(|e| format!("{out_name}: cannot write: {e}"))?;
    }

    let report = Report {
        file: &name,
        output: &out_name,
        format: inspection.format,
        written,
        valid_volume: after.is_volume,
        remaining: remaining.clone(),
        before: &inspection.report,
        repair: &repaired.log,
        after,
        warnings: &inspection.warnings,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    if let Some(path) = &args.report {
        write_atomically(path, format!("{json}\n").as_bytes())
            .map_err(|e| format!("{}: cannot write the report: {e}", path.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let shown = if args.json {
        writeln!(out, "{json}")
    } else {
        write!(out, "{}", summary(&name, &out_name, &inspection.report, &repaired.log, after, written))
    };
    if shown.is_err() {
        return Ok(ExitCode::FAILURE);
    }
    if after.is_volume {
        Ok(ExitCode::SUCCESS)
    } else {
        let what = if remaining.is_empty() { "nothing left".to_string() } else { remaining.join("; ") };
        eprintln!("error: {name}: still not a valid volume after repair: {what}");
        if !args.remove_unconnected && repaired.log.holes_left_open > 0 {
            eprintln!("hint: --remove-unconnected drops open fragments and flat sheets");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// What keeps a repaired mesh from being a valid volume, in words.
fn remaining(after: &ValidationReport, log: &RepairLog) -> Vec<String> {
    let mut left = Vec::new();
    if after.faces == 0 {
        left.push("no faces left".to_string());
        return left;
    }
    for (n, what) in [
        (after.boundary_edges, "boundary edges (open holes)"),
        (log.holes_left_open, "holes left open (flat sheets or unclosed rims)"),
        (after.nonmanifold_edges, "non-manifold edges"),
        (after.misoriented_edges, "misoriented edges"),
        (after.degenerate_faces, "degenerate faces"),
        (after.duplicate_faces, "duplicate faces"),
    ] {
        if n > 0 {
            left.push(format!("{n} {what}"));
        }
    }
    if after.watertight && after.winding_consistent && after.volume <= 0.0 {
        left.push(format!("encloses no positive volume ({})", after.volume));
    }
    left
}

fn summary(
    name: &str,
    out_name: &str,
    before: &ValidationReport,
    log: &RepairLog,
    after: &ValidationReport,
    written: bool,
) -> String {
    let verdict = |r: &ValidationReport| {
        if r.is_volume {
            format!("a valid volume ({} faces, volume {:.6})", r.faces, r.volume)
        } else {
            format!(
                "not a valid volume ({} faces, {} boundary, {} non-manifold, {} misoriented edges)",
                r.faces, r.boundary_edges, r.nonmanifold_edges, r.misoriented_edges
            )
        }
    };
    let mut s = format!("{name}: {}\n", verdict(before));
    let lines = [
        (
            log.vertices_merged,
            format!("{} vertices merged within {:e}", log.vertices_merged, log.weld_tolerance),
        ),
        (log.collapsed_faces_removed, format!("{} collapsed faces removed", log.collapsed_faces_removed)),
        (
            log.zero_area_faces_removed,
            format!(
                "{} zero-area faces removed ({} neighbours split to keep the surface closed)",
                log.zero_area_faces_removed, log.faces_split
            ),
        ),
        (log.duplicate_faces_removed, format!("{} duplicate faces removed", log.duplicate_faces_removed)),
        (log.faces_flipped, format!("{} faces flipped to match their neighbours", log.faces_flipped)),
        (
            log.nonmanifold_edges_split,
            format!(
                "{} non-manifold edges split between bodies ({} vertices moved {:e} apart)",
                log.nonmanifold_edges_split, log.vertices_separated, log.separation
            ),
        ),
        (log.holes_filled, format!("{} holes filled with {} faces", log.holes_filled, log.hole_faces_added)),
        (log.holes_left_open, format!("{} holes left open", log.holes_left_open)),
        (log.bodies_reversed, format!("{} bodies turned outward (cavities inward)", log.bodies_reversed)),
        (
            log.stray_bodies_removed,
            format!("{} stray bodies removed ({} faces)", log.stray_bodies_removed, log.stray_faces_removed),
        ),
        (log.orientation_conflicts, format!("{} edges could not be oriented", log.orientation_conflicts)),
    ];
    let done: Vec<&String> = lines.iter().filter(|(n, _)| *n > 0).map(|(_, l)| l).collect();
    if done.is_empty() {
        s += "  nothing to repair\n";
    }
    for l in done {
        s += &format!("  {l}\n");
    }
    if written {
        s += &format!("{out_name}: {}; normals recomputed from the winding\n", verdict(after));
    } else {
        s += &format!("{out_name}: not written, no faces left\n");
    }
    s
}
