//! The stream format: arbitrary manifests through the parser, and layers
//! built from the input through encode and decode (which must give them
//! back), then a damaged chunk (which must be refused, never panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::slice::{Layer, Polygon, SliceOptions};
use strata_core::stream::{self, EncodeOptions, Limits, Manifest, ModelInfo};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::from_json(data, &Limits::default());
    let layers: Vec<Layer> = data
        .chunks(64)
        .enumerate()
        .map(|(i, c)| Layer {
            z: i as f64 * 0.2,
            open_chains: u32::from(c[0] % 3),
            polygons: c
                .chunks(16)
                .map(|p| Polygon {
                    points: p
                        .chunks_exact(4)
                        .map(|q| {
                            let shift = u32::from(q[0] % 48);
                            [i64::from(i16::from_le_bytes([q[0], q[1]])) << shift, i64::from(i16::from_le_bytes([q[2], q[3]]))]
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let options = EncodeOptions { chunk_target: data.len() % 300 + 1, level: 1 };
    let model = ModelInfo { sha256: stream::sha256_hex(data), bbox: None };
    let Ok(mut s) = stream::encode(&layers, &model, &SliceOptions::default(), &options) else { return };
    assert_eq!(stream::decode(&s, &Limits::default()).expect("own stream decodes"), layers);
    if let (Some(chunk), Some(&b)) = (s.chunks.first_mut(), data.first()) {
        let at = usize::from(b) % chunk.len();
        chunk[at] ^= 1;
        assert!(stream::decode(&s, &Limits::default()).is_err());
    }
});
