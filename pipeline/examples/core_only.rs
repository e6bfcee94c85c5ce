//! The core alone over a catalog: every model hashed and processed from
//! memory, with no reading, no store and no database, on a pool of N
//! threads. `benches/ingest_bench.sh` runs it beside `strata ingest` so the
//! pipeline's figures can be held against what the core does by itself
//! (its own speed-up from 1 to 2 threads is the ceiling of the pipeline's).
//!
//! ```text
//! cargo run --release -p strata-pipeline --example core_only -- CATALOG_DIR THREADS [ROUNDS]
//! ```
//!
//! It holds the whole catalog in memory (1.2 GB for the 1,000-file bench).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use rayon::prelude::*;
use strata_pipeline::ingest::collect_inputs;
use strata_pipeline::process::{ProcessOptions, process};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(threads)) = (args.first(), args.get(1).and_then(|s| s.parse::<usize>().ok())) else {
        eprintln!("usage: core_only CATALOG_DIR THREADS [ROUNDS]");
        return ExitCode::from(2);
    };
    let rounds = args.get(2).and_then(|s| s.parse::<usize>().ok()).unwrap_or(3).max(1);
    match run(PathBuf::from(dir), threads.max(1), rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("core_only: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: PathBuf, threads: usize, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let inputs = collect_inputs(&[dir])?;
    let files = inputs
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes: usize = files.iter().map(Vec::len).sum();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let options = ProcessOptions::default();
    let mut walls = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let clock = Instant::now();
        let ok = pool.install(|| {
            files
                .par_iter()
                .filter(|b| {
                    let sha = strata_core::stream::sha256_hex(b);
                    process(b, &sha, &options).is_ok()
                })
                .count()
        });
        walls.push(clock.elapsed().as_secs_f64());
        if ok == 0 {
            return Err("no model processed".into());
        }
    }
    walls.sort_by(f64::total_cmp);
    let median = walls[walls.len() / 2];
    println!(
        "core only, {threads} thread(s): median {median:.3} s over {rounds} rounds ({} models, {:.1} models/s, {:.1} MB/s)",
        files.len(),
        files.len() as f64 / median,
        bytes as f64 / 1e6 / median
    );
    Ok(())
}
