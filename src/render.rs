//! `strata render IN OUT.png`: a snapshot image of a model.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_core::render::{RenderOptions, View};

use crate::files::write_atomically;

#[derive(Debug, clap::Args)]
pub(crate) struct RenderArgs {
    /// The model: binary or ASCII STL, OBJ or 3MF.
    input: PathBuf,
    /// The PNG to write (replaced atomically).
    output: PathBuf,
    /// Camera: iso, front, top or side.
    #[arg(long, default_value = "iso")]
    view: View,
    /// Image size: `N` for N x N, or `WxH`.
    #[arg(long, default_value = "512", value_parser = parse_size)]
    size: (u32, u32),
    /// Background: `transparent` or a hex colour such as `ffffff`.
    #[arg(long, default_value = "transparent", value_parser = parse_background)]
    background: Background,
    /// Smooth edges (renders at twice the size and averages).
    #[arg(long)]
    antialias: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Background(Option<[u8; 3]>);

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let side = |t: &str| -> Result<u32, String> {
        match t.parse::<u32>() {
            Ok(n) if (1..=strata_core::render::MAX_SIZE).contains(&n) => Ok(n),
            _ => Err(format!("{t:?} is not a size from 1 to {}", strata_core::render::MAX_SIZE)),
        }
    };
    match s.split_once('x') {
        Some((w, h)) => Ok((side(w)?, side(h)?)),
        None => side(s).map(|n| (n, n)),
    }
}

fn parse_background(s: &str) -> Result<Background, String> {
    if s == "transparent" {
        return Ok(Background(None));
    }
    let hex = s.trim_start_matches('#');
    let ok = hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string());
    if !ok {
        return Err(format!("{s:?} is not `transparent` or a colour like `ffffff`"));
    }
    Ok(Background(Some([byte(0)?, byte(2)?, byte(4)?])))
}

pub(crate) fn run(args: &RenderArgs) -> ExitCode {
    crate::exit_with(render(args).map(|()| ExitCode::SUCCESS))
}

fn render(args: &RenderArgs) -> Result<(), String> {
    let name = args.input.display();
    let (_, inspection) = crate::inspect_file(&args.input)?;
    let options = RenderOptions {
        view: args.view,
        width: args.size.0,
        height: args.size.1,
        background: args.background.0,
        antialias: args.antialias,
        // Back faces of a valid volume are always hidden: skip them.
        cull_back_faces: inspection.report.is_volume,
        ..RenderOptions::default()
    };
    let snapshot =
        strata_core::render::render(&inspection.mesh, &options).map_err(|e| format!("{name}: {e}"))?;
    let png = snapshot.image.to_png().map_err(|e| format!("{name}: {e}"))?;
    write_atomically(&args.output, &png)
        .map_err(|e| format!("{}: cannot write: {e}", args.output.display()))?;
    Ok(())
}
