//! Times the STL readers Strata is compared against, one mode per run, so
//! `hyperfine` and `/usr/bin/time` see each as its own process.
//!
//! usage: strata-anchors MODE FILE
//!   floor           memory-map the file and sum every float (the physical limit)
//!   stl_io-iter     stl_io's triangle iterator
//!   stl_io-indexed  stl_io::read_stl (triangles welded into an indexed mesh)
//!   mesh-loader     mesh_loader::stl::from_slice over a memory map
//!   nom_stl         nom_stl::parse_stl
//!   strata-parse    strata's parser alone (ASCII: facets decoded; binary: the view set up)
//!   strata-view     strata's zero-copy binary view: parse, then read every vertex
//!   strata-weld     strata: parse + exact weld into the indexed mesh
//!   strata-inspect  strata: parse + weld + full validation, in process

use std::fs::File;
use std::io::BufReader;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: strata-anchors MODE FILE");
        std::process::exit(2);
    };
    let file = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (triangles, check): (usize, f64) = match mode.as_str() {
        "floor" => {
            // SAFETY: benchmark input that nothing modifies while it runs.
            let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
            let body = &map[84.min(map.len())..];
            let mut acc = [0f32; 12];
            for rec in body.chunks_exact(50) {
                for (a, c) in acc.iter_mut().zip(rec[..48].chunks_exact(4)) {
                    *a += f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            (body.len() / 50, acc.iter().map(|&x| f64::from(x)).sum())
        }
        "stl_io-iter" => {
            let mut r = BufReader::new(file);
            let it = stl_io::create_stl_reader(&mut r).expect("stl_io reader");
            let (mut n, mut s) = (0, 0f64);
            for t in it {
                let t = t.expect("triangle");
                n += 1;
                s += f64::from(t.vertices[2][2]);
            }
            (n, s)
        }
        "stl_io-indexed" => {
            let mut r = BufReader::new(file);
            let mesh = stl_io::read_stl(&mut r).expect("stl_io read");
            (mesh.faces.len(), mesh.vertices.len() as f64)
        }
        "mesh-loader" => {
            // SAFETY: as above.
            let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
            let scene = mesh_loader::stl::from_slice(&map).expect("mesh-loader");
            let n = scene.meshes.iter().map(|m| m.faces.len()).sum();
            (n, scene.meshes.iter().map(|m| m.vertices.len() as f64).sum())
        }
        "nom_stl" => {
            let mut r = BufReader::new(file);
            let mesh = nom_stl::parse_stl(&mut r).expect("nom_stl");
            (mesh.triangles().len(), f64::from(mesh.triangles().last().map_or(0.0, |t| t.vertices()[2][2])))
        }
            "strata-inspect" => {
            // SAFETY: as above.
            let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
            let ins = strata_core::inspect(&map, &Default::default(), &Default::default()).expect("inspects");
            (ins.mesh.faces.len(), ins.report.volume)
        }
        "strata-parse" => {
            // SAFETY: as above.
            let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
            let stl = strata_core::stl::parse(&map).expect("strata parses");
            (stl.facet_count(), 0.0)
        }
        "strata-view" | "strata-weld" => {
            // SAFETY: as above.
            let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
            let stl = strata_core::stl::parse(&map).expect("strata parses");
            if mode == "strata-weld" {
                let (mesh, _) = strata_core::mesh::weld_stl(&stl, &Default::default()).expect("welds");
                (mesh.faces.len(), mesh.vertices.len() as f64)
            } else {
                let strata_core::stl::Facets::Binary(records) = stl.facets() else {
                    panic!("strata-view takes binary STL")
                };
                // The same 12 sums as `floor`, through the zero-copy view.
                let mut acc = [0f32; 12];
                for r in records {
                    let [v0, v1, v2] = r.vertices();
                    let fs = [r.normal(), v0, v1, v2];
                    for (a, x) in acc.iter_mut().zip(fs.iter().flatten()) {
                        *a += x;
                    }
                }
                (records.len(), acc.iter().map(|&x| f64::from(x)).sum())
            }
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    println!("{mode}: {triangles} triangles (check {check})");
}
