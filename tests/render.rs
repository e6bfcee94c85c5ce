//! `strata render`: golden images of sample models (a small tolerance for
//! rounding), options, and errors. `STRATA_BLESS=1` rewrites the goldens
//! after a deliberate change to the renderer; look at them before committing.

use std::path::{Path, PathBuf};

use crate::util::{repo_datasets, run};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

const GOLDEN: &[(&str, &str)] = &[
    ("ur3_collision_upperarm.stl", "iso"),
    ("spot.obj", "front"),
    ("assimp_spider_binary.stl", "top"),
    ("3mf_box.3mf", "side"),
];

#[test]
fn sample_models_match_their_golden_images() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bless = std::env::var_os("STRATA_BLESS").is_some();
    let mut problems = Vec::new();
    for (model, view) in GOLDEN {
        let out = tmp.path().join(format!("{model}.png"));
        let input = repo_datasets().join(model);
        let args = [
            "render",
            input.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
            "--view",
            view,
            "--size",
            "160",
        ];
        let o = run(&args);
        assert!(o.status.success(), "{model}: {}", String::from_utf8_lossy(&o.stderr));
        let golden = golden_dir().join(format!("{model}.{view}.png"));
        let got = std::fs::read(&out).expect("png written");
        if bless {
            std::fs::write(&golden, &got).expect("bless");
            continue;
        }
        let (w, h, a) = decode(&got);
        let (gw, gh, b) = decode(&std::fs::read(&golden).expect("golden exists (STRATA_BLESS=1 makes it)"));
        assert_eq!((w, h), (gw, gh));
        let differ = a
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .filter(|(p, q)| p.iter().zip(*q).any(|(x, y)| x.abs_diff(*y) > 24))
            .count();
        let drawn = b.chunks_exact(4).filter(|q| q[3] > 0).count();
        assert!(drawn > 1000, "{model}: golden nearly empty");
        if differ as f64 > 0.005 * f64::from(w * h) {
            problems.push(format!("{model} ({view}): {differ} pixels differ"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn size_background_and_antialias_options() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("cube.png");
    let model = repo_datasets().join("numpystl_cube_binary_solidheader.stl");
    let o = run(&[
        "render",
        model.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
        "--size",
        "200x100",
        "--background",
        "#ff8000",
        "--antialias",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (w, h, px) = decode(&std::fs::read(&out).expect("png"));
    assert_eq!((w, h), (200, 100));
    assert_eq!(&px[..4], &[255, 128, 0, 255]);
    // The default is 512x512 on a transparent background.
    let o = run(&["render", model.to_str().expect("utf-8"), out.to_str().expect("utf-8")]);
    assert!(o.status.success());
    let (w, h, px) = decode(&std::fs::read(&out).expect("png"));
    assert_eq!((w, h, px[3]), (512, 512, 0));
}

#[test]
fn bad_input_and_options_fail_and_keep_the_old_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("keep.png");
    std::fs::write(&out, b"old").expect("write");
    let bad = tmp.path().join("bad.stl");
    std::fs::write(&bad, b"solid x\nfacet normal 0 0 1\n").expect("write");
    let o = run(&["render", bad.to_str().expect("utf-8"), out.to_str().expect("utf-8")]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.stl"));
    assert_eq!(std::fs::read(&out).expect("kept"), b"old");
    let model = repo_datasets().join("spot.obj");
    for (flag, value, says) in [
        ("--size", "0", "not a size"),
        ("--size", "99999", "not a size"),
        ("--view", "perspective", "unknown view"),
        ("--background", "blue", "not `transparent`"),
    ] {
        let o = run(&["render", model.to_str().expect("utf-8"), out.to_str().expect("utf-8"), flag, value]);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(says), "{flag} {value}: {e}");
    }
    assert_eq!(std::fs::read(&out).expect("kept"), b"old");
}
