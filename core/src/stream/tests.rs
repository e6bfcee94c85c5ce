use proptest::prelude::*;

use super::*;
use crate::mesh::{WeldOptions, weld};
use crate::slice::{Polygon, slice};
use crate::synth::torus;

fn model() -> ModelInfo {
    ModelInfo { sha256: sha256_hex(b"model"), bbox: Some(BoundingBox { min: [0.0; 3], max: [1.0; 3] }) }
}

fn torus_layers() -> Vec<Layer> {
    let mesh = weld(&torus(200, 60)[..], &WeldOptions::default()).expect("welds").0;
    slice(&mesh, &SliceOptions::default()).expect("slices")
}

fn small_chunks() -> EncodeOptions {
    EncodeOptions { chunk_target: 4096, ..EncodeOptions::default() }
}

fn encoded() -> EncodedStream {
    encode(&torus_layers(), &model(), &SliceOptions::default(), &small_chunks()).expect("encodes")
}

#[test]
fn a_sliced_torus_round_trips_in_layer_aligned_chunks() {
    let layers = torus_layers();
    let s = encode(&layers, &model(), &SliceOptions::default(), &small_chunks()).expect("encodes");
    assert!(s.chunks.len() > 3, "{} chunks", s.chunks.len());
    assert_eq!(s.manifest.layer_count as usize, layers.len());
    for c in &s.manifest.chunks {
        // Layer-aligned and near the target: a chunk only passes the target
        // when it is one layer.
        assert!(c.raw_bytes <= 4096 + 64 || c.first_layer == c.last_layer, "{c:?}");
        assert!(c.bytes < c.raw_bytes, "chunk {} did not compress", c.index);
    }
    assert_eq!(decode(&s, &Limits::default()).expect("decodes"), layers);
    // The manifest survives JSON exactly, z included.
    let back = Manifest::from_json(&s.manifest.to_json(), &Limits::default()).expect("parses");
    assert_eq!(back, s.manifest);
}

#[test]
fn chunk_of_layer_finds_the_chunk_and_refuses_past_the_end() {
    let s = encoded();
    let m = &s.manifest;
    for layer in 0..m.layer_count {
        let c = &m.chunks[m.chunk_of_layer(u64::from(layer)).expect("in range")];
        assert!(c.first_layer <= layer && layer <= c.last_layer);
    }
    assert!(matches!(m.chunk_of_layer(u64::from(m.layer_count)), Err(StreamError::NoSuchLayer { .. })));
}

#[test]
fn empty_stream_has_no_chunks_and_decodes_to_nothing() {
    let s = encode(&[], &model(), &SliceOptions::default(), &EncodeOptions::default()).expect("encodes");
    assert!(s.chunks.is_empty());
    assert_eq!(s.manifest.stream_sha256, sha256_hex(b""));
    assert_eq!(decode(&s, &Limits::default()).expect("decodes"), Vec::<Layer>::new());
}

#[test]
fn a_flipped_bit_is_a_hash_error_naming_the_chunk() {
    let mut s = encoded();
    s.chunks[2][10] ^= 1;
    let e = decode(&s, &Limits::default()).expect_err("corrupt");
    assert!(matches!(e, StreamError::ChunkHash { chunk: 2, .. }), "{e}");
    assert_eq!(e.chunk(), Some(2));
}

#[test]
fn a_truncated_chunk_is_a_length_error() {
    let mut s = encoded();
    s.chunks[1].truncate(5);
    let e = decode(&s, &Limits::default()).expect_err("truncated");
    assert!(matches!(e, StreamError::ChunkLength { chunk: 1, actual: 5, .. }), "{e}");
}

/// Re-signs chunk `i` in the manifest after its bytes changed, as an
/// attacker who controls both would.
fn resign(s: &mut EncodedStream, i: usize) {
    let c = &mut s.manifest.chunks[i];
    c.bytes = s.chunks[i].len() as u64;
    c.sha256 = sha256_hex(&s.chunks[i]);
    s.manifest.stream_sha256 = stream_hash(&s.manifest.chunks).expect("hex");
}

#[test]
fn a_wrong_stream_hash_is_refused() {
    let mut s = encoded();
    s.manifest.chunks.swap(0, 1);
    s.manifest.chunks[0].index = 0;
    s.manifest.chunks[1].index = 1;
    // Swapping the entries breaks the layer ranges first.
    assert!(matches!(s.manifest.check(), Err(StreamError::Inconsistent(_))));
    let mut s = encoded();
    s.manifest.stream_sha256 = sha256_hex(b"other");
    assert!(matches!(decode(&s, &Limits::default()), Err(StreamError::StreamHash { .. })));
}

#[test]
fn a_decompression_bomb_is_refused_before_it_inflates() {
    let mut s = encoded();
    // 64 MiB of zeros compresses to a few KiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).expect("compresses");
    s.chunks[0] = bomb;
    resign(&mut s, 0);
    let e = decode(&s, &Limits::default()).expect_err("bomb");
    assert!(matches!(e, StreamError::TooLarge { chunk: 0, .. }), "{e}");
    // Also when the manifest claims the large size, over the limit.
    s.manifest.chunks[0].raw_bytes = 64 << 20;
    let limits = Limits { max_chunk_raw_bytes: 1 << 20, ..Limits::default() };
    let e = decode(&s, &limits).expect_err("over the limit");
    assert!(matches!(e, StreamError::TooLarge { chunk: 0, allowed: 1048576, .. }), "{e}");
}

#[test]
fn a_frame_without_a_declared_size_is_still_bounded() {
    let mut s = encoded();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
    std::io::Write::write_all(&mut enc, &vec![7u8; 8 << 20]).expect("writes");
    s.chunks[0] = enc.finish().expect("finishes");
    assert!(matches!(zstd::zstd_safe::get_frame_content_size(&s.chunks[0]), Ok(None)));
    resign(&mut s, 0);
    let e = decode(&s, &Limits::default()).expect_err("bomb");
    assert!(matches!(e, StreamError::TooLarge { chunk: 0, .. }), "{e}");
}

#[test]
fn garbage_that_hashes_right_is_a_decompress_error() {
    let mut s = encoded();
    s.chunks[0] = b"definitely not zstd".to_vec();
    resign(&mut s, 0);
    let e = decode(&s, &Limits::default()).expect_err("garbage");
    assert!(matches!(e, StreamError::Decompress { chunk: 0, .. }), "{e}");
}

#[test]
fn a_payload_with_a_lying_count_is_corrupt_not_an_allocation() {
    let mut s = encoded();
    // A valid frame whose payload claims 2^60 points in a polygon.
    let mut raw = b"STRL\x01\x00\x01".to_vec();
    raw.extend_from_slice(&s.manifest.layer_z[0].to_le_bytes());
    raw.extend_from_slice(&[0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
    s.chunks[0] = zstd::bulk::compress(&raw, 3).expect("compresses");
    s.manifest.chunks[0].raw_bytes = raw.len() as u64;
    resign(&mut s, 0);
    let e = decode(&s, &Limits::default()).expect_err("corrupt");
    match e {
        StreamError::Corrupt { chunk: 0, reason, .. } => {
            assert!(reason.contains("points cannot fit"), "{reason}")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_versions_formats_and_shapes_are_named() {
    let s = encoded();
    let limits = Limits::default();
    let mut v: serde_json::Value = serde_json::from_slice(&s.manifest.to_json()).expect("json");
    v["version"] = 2.into();
    let e = Manifest::from_json(v.to_string().as_bytes(), &limits).expect_err("v2");
    assert_eq!(e, StreamError::UnsupportedVersion(2));
    v["version"] = 1.into();
    v["format"] = "gcode".into();
    assert_eq!(
        Manifest::from_json(v.to_string().as_bytes(), &limits),
        Err(StreamError::UnknownFormat("gcode".into()))
    );
    v["format"] = FORMAT.into();
    v["layer_count"] = 1.into();
    assert!(matches!(
        Manifest::from_json(v.to_string().as_bytes(), &limits),
        Err(StreamError::Inconsistent(_))
    ));
    assert!(matches!(Manifest::from_json(b"{\"format\": 3}", &limits), Err(StreamError::ManifestSyntax(_))));
    assert!(matches!(Manifest::from_json(b"[", &limits), Err(StreamError::ManifestSyntax(_))));
    let tight = Limits { max_manifest_bytes: 10, ..limits };
    assert!(matches!(
        Manifest::from_json(&s.manifest.to_json(), &tight),
        Err(StreamError::ManifestTooLarge { .. })
    ));
}

fn any_layer() -> impl Strategy<Value = Layer> {
    let point = prop_oneof![
        prop::array::uniform2(-1_000_000_000i64..1_000_000_000),
        prop::array::uniform2(any::<i64>()),
    ];
    let polygon = prop::collection::vec(point, 0..20).prop_map(|points| Polygon { points });
    (
        any::<f64>().prop_filter("finite", |z| z.is_finite()),
        prop::collection::vec(polygon, 0..6),
        any::<u32>(),
    )
        .prop_map(|(z, polygons, open_chains)| Layer { z, polygons, open_chains })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity(
        layers in prop::collection::vec(any_layer(), 0..40),
        target in 1usize..2000,
    ) {
        let options = EncodeOptions { chunk_target: target, level: 1 };
        let s = encode(&layers, &model(), &SliceOptions::default(), &options).expect("encodes");
        let back = Manifest::from_json(&s.manifest.to_json(), &Limits::default()).expect("manifest");
        prop_assert_eq!(&back, &s.manifest);
        prop_assert_eq!(decode(&s, &Limits::default()).expect("decodes"), layers);
    }

    #[test]
    fn arbitrary_chunk_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut s = encoded();
        s.chunks[0] = bytes;
        resign(&mut s, 0);
        prop_assert!(decode(&s, &Limits::default()).is_err());
    }
}

#[test]
fn hashing_a_reader_matches_hashing_its_bytes() {
    // Over one read buffer, so the digest spans several reads; the empty
    // input and the known digest of "abc" (FIPS 180-2) pin the format.
    let bytes: Vec<u8> =
        (0..(3 << 20) + 17).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert_eq!(sha256_hex_of_reader(&bytes[..]).unwrap(), sha256_hex(&bytes));
    assert_eq!(sha256_hex_of_reader(&b""[..]).unwrap(), sha256_hex(b""));
    assert_eq!(
        sha256_hex_of_reader(&b"abc"[..]).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
