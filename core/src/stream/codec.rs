//! The decompressed chunk payload: layers as delta + zig-zag varints.
//! Layout (all integers LEB128 varints unless said otherwise):
//!
//! ```text
//! chunk   = "STRL" version:u8 first_layer layer_count layer*
//! layer   = z:f64-le open_chains polygon_count polygon*
//! polygon = point_count point*
//! point   = zigzag(dx) zigzag(dy)
//! ```
//!
//! A polygon's first point is relative to the previous polygon's first
//! point in the same layer (the origin for the first); every other point to
//! the point before it. Differences wrap in two's complement, so any `i64`
//! coordinates round-trip.

use super::{ChunkInfo, StreamError};
use crate::slice::{Layer, Point, Polygon};

pub(super) const MAGIC: &[u8; 4] = b"STRL";
pub(super) const PAYLOAD_VERSION: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// One layer's bytes (without the chunk header).
pub(super) fn encode_layer(layer: &Layer) -> Vec<u8> {
    let points: usize = layer.polygons.iter().map(|p| p.points.len()).sum();
    let mut out = Vec::with_capacity(16 + layer.polygons.len() * 2 + points * 4);
    out.extend_from_slice(&layer.z.to_le_bytes());
    put_varint(&mut out, u64::from(layer.open_chains));
    put_varint(&mut out, layer.polygons.len() as u64);
    let mut anchor: Point = [0, 0];
    for p in &layer.polygons {
        put_varint(&mut out, p.points.len() as u64);
        let mut prev = anchor;
        for (i, q) in p.points.iter().enumerate() {
            put_varint(&mut out, zigzag(q[0].wrapping_sub(prev[0])));
            put_varint(&mut out, zigzag(q[1].wrapping_sub(prev[1])));
            if i == 0 {
                anchor = *q;
            }
            prev = *q;
        }
    }
    out
}

/// The chunk payload: header plus the layers' bytes.
pub(super) fn chunk_payload(first_layer: usize, layers: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = layers.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total + 25);
    out.extend_from_slice(MAGIC);
    out.push(PAYLOAD_VERSION);
    put_varint(&mut out, first_layer as u64);
    put_varint(&mut out, layers.len() as u64);
    for l in layers {
        out.extend_from_slice(l);
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    chunk: usize,
}

impl Reader<'_> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, StreamError> {
        Err(StreamError::Corrupt { chunk: self.chunk, offset: self.at, reason: reason.into() })
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], StreamError> {
        if self.remaining() < n {
            return self.fail(format!("{n} bytes needed, {} left", self.remaining()));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, StreamError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return self.fail("truncated varint");
            };
            self.at += 1;
            if shift == 63 && b > 1 {
                return self.fail("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    /// A count of items that each take at least `min_bytes`: refused when
    /// the rest of the payload could not hold them, so a lying count never
    /// drives an allocation.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, StreamError> {
        let n = self.varint()?;
        if n > (self.remaining() / min_bytes) as u64 {
            return self.fail(format!("{n} {what} cannot fit in the {} bytes left", self.remaining()));
        }
        Ok(n as usize)
    }
}

/// Decodes a chunk payload, checking it against the manifest's entry and
/// layer heights.
pub(super) fn decode_payload(
    chunk: usize,
    bytes: &[u8],
    info: &ChunkInfo,
    layer_z: &[f64],
) -> Result<Vec<Layer>, StreamError> {
    let mut r = Reader { bytes, at: 0, chunk };
    if r.take(4)? != MAGIC {
        return r.fail("missing STRL magic");
    }
    let version = r.take(1)?[0];
    if version != PAYLOAD_VERSION {
        return r.fail(format!("payload version {version}, expected {PAYLOAD_VERSION}"));
    }
    let first = r.varint()?;
    if first != u64::from(info.first_layer) {
        return r.fail(format!("starts at layer {first}, the manifest says {}", info.first_layer));
    }
    let count = r.count("layers", 10)?;
    let expected = (info.last_layer - info.first_layer) as usize + 1;
    if count != expected {
        return r.fail(format!("holds {count} layers, the manifest says {expected}"));
    }
    let mut layers = Vec::with_capacity(count);
    for k in 0..count {
        let index = info.first_layer as usize + k;
        let raw_z = r.take(8)?;
        let z = f64::from_le_bytes([
            raw_z[0], raw_z[1], raw_z[2], raw_z[3], raw_z[4], raw_z[5], raw_z[6], raw_z[7],
        ]);
        if layer_z.get(index).map(|m| m.to_bits()) != Some(z.to_bits()) {
            return r.fail(format!("layer {index} is at z {z}, the manifest says {:?}", layer_z.get(index)));
        }
        let open = r.varint()?;
        let Ok(open_chains) = u32::try_from(open) else {
            return r.fail(format!("{open} open chains"));
        };
        let n_polygons = r.count("polygons", 1)?;
        let mut polygons = Vec::with_capacity(n_polygons);
        let mut anchor: Point = [0, 0];
        for _ in 0..n_polygons {
            let n = r.count("points", 2)?;
            let mut points = Vec::with_capacity(n);
            let mut prev = anchor;
            for i in 0..n {
                let dx = unzigzag(r.varint()?);
                let dy = unzigzag(r.varint()?);
                let q = [prev[0].wrapping_add(dx), prev[1].wrapping_add(dy)];
                if i == 0 {
                    anchor = q;
                }
                points.push(q);
                prev = q;
            }
            polygons.push(Polygon { points });
        }
        layers.push(Layer { z, polygons, open_chains });
    }
    if r.remaining() != 0 {
        return r.fail(format!("{} bytes after the last layer", r.remaining()));
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn varints_round_trip_and_overflow_is_refused() {
        let mut out = Vec::new();
        for v in [0, 127, 128, u64::MAX] {
            put_varint(&mut out, v);
        }
        let mut r = Reader { bytes: &out, at: 0, chunk: 0 };
        for v in [0, 127, 128, u64::MAX] {
            assert_eq!(r.varint(), Ok(v));
        }
        let eleven = [0xffu8; 11];
        let mut r = Reader { bytes: &eleven, at: 0, chunk: 3 };
        assert!(matches!(r.varint(), Err(StreamError::Corrupt { chunk: 3, .. })));
    }
}
