//! Snapshot rendering: a software rasteriser that draws a mesh into an
//! RGBA image and encodes it as PNG, with no GPU and no window system.
//!
//! # How
//! - Orthographic views ([`View`]); the model's projected box is framed to
//!   fill the image less a 5% margin, so a snapshot never crops the model.
//! - Screen positions are snapped to 1/256 pixel and rasterised with exact
//!   integer edge functions and a top-left fill rule: faces that share an
//!   edge cover every pixel centre along it exactly once, so a closed
//!   surface has no cracks however small its faces are.
//! - Faces are flat-shaded by their normal with a fixed light over the
//!   viewer's shoulder (both sides lit, so open sheets stay visible from
//!   behind), nearest face wins in a z-buffer.
//! - The image is cut into bands of rows rendered in parallel with rayon;
//!   faces are binned into the bands they touch first. A face whose box
//!   holds no pixel centre is dropped before binning: on a 1M-face mesh
//!   at 512x512 that is most faces, and it costs one box test each.
//! - Antialiasing renders at twice the size and averages 2x2 blocks
//!   (premultiplied, so silhouettes blend into a transparent background).

use glam::{DVec3, Vec3};
use rayon::prelude::*;

use crate::mesh::IndexedMesh;

/// Largest width or height accepted.
pub const MAX_SIZE: u32 = 16_384;
/// Rows per band rendered by one task.
const BAND_ROWS: usize = 16;
/// Sub-pixel bits of the fixed-point screen positions.
const SUBPIXEL_BITS: u32 = 8;
const SUBPIXEL: f64 = (1 << SUBPIXEL_BITS) as f64;
/// Fraction of the image left empty on each side.
const MARGIN: f64 = 0.05;

/// Where the camera looks from. The model's +Z is up in every view but
/// [`View::Top`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// From the front, right and above (the camera on (1, -1, 1)).
    Iso,
    /// From -Y towards +Y.
    Front,
    /// From +Z down, +X to the right and +Y up.
    Top,
    /// From +X towards -X.
    Side,
}

impl std::str::FromStr for View {
    type Err = String;
    fn from_str(s: &str) -> Result<View, String> {
        match s {
            "iso" => Ok(View::Iso),
            "front" => Ok(View::Front),
            "top" => Ok(View::Top),
            "side" => Ok(View::Side),
            other => Err(format!("unknown view {other:?}: use iso, front, top or side")),
        }
    }
}

impl View {
    /// (right, up, towards the viewer), orthonormal.
    fn basis(self) -> (DVec3, DVec3, DVec3) {
        let to_viewer = match self {
            View::Iso => DVec3::new(1.0, -1.0, 1.0).normalize(),
            View::Front => DVec3::NEG_Y,
            View::Top => return (DVec3::X, DVec3::Y, DVec3::Z),
            View::Side => DVec3::X,
        };
        let right = DVec3::Z.cross(to_viewer).normalize();
        (right, to_viewer.cross(right), to_viewer)
    }
}

/// How to render.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Camera direction.
    pub view: View,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Background colour, or `None` for transparent.
    pub background: Option<[u8; 3]>,
    /// The model's colour under full light.
    pub color: [u8; 3],
    /// Smooth edges by 2x2 supersampling.
    pub antialias: bool,
    /// Skip faces turned away from the camera: only for closed meshes
    /// wound outward (a valid volume), where they are always hidden.
    pub cull_back_faces: bool,
}

impl Default for RenderOptions {
    fn default() -> RenderOptions {
        RenderOptions {
            view: View::Iso,
            width: 512,
            height: 512,
            background: None,
            color: [176, 192, 214],
            antialias: false,
            cull_back_faces: false,
        }
    }
}

/// Why an image could not be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A zero or too large size.
    #[error("image size {width}x{height} must be between 1 and {MAX_SIZE} on each side")]
    BadSize {
        /// Asked-for width.
        width: u32,
        /// Asked-for height.
        height: u32,
    },
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

/// An RGBA8 image, rows top to bottom, straight (not premultiplied) alpha.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub rgba: Vec<u8>,
}

impl Image {
    /// The pixel at column `x`, row `y`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        let i = (y as usize * self.width as usize + x as usize) * 4;
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2], self.rgba[i + 3]]
    }

    /// Encodes as PNG (8-bit RGBA).
    pub fn to_png(&self) -> Result<Vec<u8>, RenderError> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let png_error = |e: png::EncodingError| RenderError::Png(e.to_string());
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(&self.rgba).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
        Ok(out)
    }
}

/// A rendered image and how the model was framed in it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The image.
    pub image: Image,
    /// Pixels per file unit; the model's projected centre is the image's
    /// centre.
    pub pixels_per_unit: f64,
}

/// A vertex on screen.
#[derive(Clone, Copy)]
struct ScreenVertex {
    x: i32,
    y: i32,
    depth: f32,
}

/// A face ready to rasterise: fixed-point screen corners (counter-clockwise
/// in pixel coordinates, y down), depths and shade.
#[derive(Clone, Copy)]
struct ScreenFace {
    x: [i32; 3],
    y: [i32; 3],
    depth: [f32; 3],
    /// Rows of pixel centres covered, inclusive.
    rows: (u32, u32),
    /// Columns of pixel centres covered, inclusive.
    cols: (u32, u32),
    /// 1 / twice the screen area (positive), for the depth weights.
    inv_area: f32,
    shade: [u8; 3],
}

/// Renders a mesh (see the module documentation).
pub fn render(mesh: &IndexedMesh, options: &RenderOptions) -> Result<Snapshot, RenderError> {
    let (w, h) = (options.width, options.height);
    if w == 0 || h == 0 || w > MAX_SIZE || h > MAX_SIZE {
        return Err(RenderError::BadSize { width: w, height: h });
    }
    let factor = if options.antialias { 2 } else { 1 };
    let (rw, rh) = (w * factor, h * factor);
    let (right, up, toward) = options.view.basis();

    // Framing: the projected extent of the vertices, in one pass that
    // allocates nothing.
    let project = |v: &Vec3| {
        let p = v.as_dvec3();
        DVec3::new(p.dot(right), p.dot(up), p.dot(toward))
    };
    let empty = (DVec3::splat(f64::INFINITY), DVec3::splat(f64::NEG_INFINITY));
    let (lo, hi) = mesh
        .vertices
        .par_iter()
        .with_min_len(1 << 14)
        .fold(
            || empty,
            |(lo, hi), v| {
                let p = project(v);
                (lo.min(p), hi.max(p))
            },
        )
        .reduce(|| empty, |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let extent = (hi - lo).max(DVec3::splat(1e-30));
    let usable = 1.0 - 2.0 * MARGIN;
    let scale = if mesh.faces.is_empty() {
        1.0
    } else {
        (f64::from(rw) * usable / extent.x).min(f64::from(rh) * usable / extent.y)
    };
    let mid = (lo + hi) / 2.0;
    let (cx, cy) = (f64::from(rw) / 2.0, f64::from(rh) / 2.0);
    // Fixed-point screen positions (at most 2^15 pixels of 2^8 steps fit
    // i32) and depth relative to the model's middle, so f32 keeps its
    // precision.
    let screen: Vec<ScreenVertex> = mesh
        .vertices
        .par_iter()
        .with_min_len(1 << 14)
        .map(|v| {
            let p = project(v);
            let sx = (p.x - mid.x) * scale + cx;
            let sy = cy - (p.y - mid.y) * scale;
            ScreenVertex {
                x: (sx * SUBPIXEL).round() as i32,
                y: (sy * SUBPIXEL).round() as i32,
                depth: (p.z - mid.z) as f32,
            }
        })
        .collect();

    let light = (toward + up * 0.6 - right * 0.4).normalize().as_vec3();
    let toward32 = toward.as_vec3();
    let faces: Vec<ScreenFace> = mesh
        .faces
        .par_iter()
        .with_min_len(1 << 14)
        .filter_map(|f| screen_face(mesh, f, &screen, rh, rw, light, toward32, options))
        .collect();

    // Bin faces into bands of rows by counting sort.
    let bands = (rh as usize).div_ceil(BAND_ROWS);
    let band_range = |f: &ScreenFace| (f.rows.0 as usize / BAND_ROWS)..=(f.rows.1 as usize / BAND_ROWS);
    let mut start = vec![0usize; bands + 1];
    for f in &faces {
        for b in band_range(f) {
            start[b + 1] += 1;
        }
    }
    for b in 0..bands {
        start[b + 1] += start[b];
    }
    let mut fill = start.clone();
    let mut binned = vec![0u32; start[bands]];
    for (i, f) in faces.iter().enumerate() {
        for b in band_range(f) {
            binned[fill[b]] = i as u32;
            fill[b] += 1;
        }
    }

    let background = options.background.map_or([0, 0, 0, 0], |[r, g, b]| [r, g, b, 255]);
    let row_bytes = rw as usize * 4;
    let mut rgba = vec![0u8; row_bytes * rh as usize];
    rgba.par_chunks_mut(row_bytes * BAND_ROWS).enumerate().for_each(|(band, pixels)| {
        let y0 = band * BAND_ROWS;
        let rows = pixels.len() / row_bytes;
        for px in pixels.chunks_exact_mut(4) {
            px.copy_from_slice(&background);
        }
        let mut zbuf = vec![f32::NEG_INFINITY; rw as usize * rows];
        for &i in &binned[start[band]..start[band + 1]] {
            raster(&faces[i as usize], y0, rows, rw as usize, &mut zbuf, pixels);
        }
    });
    let image = Image { width: rw, height: rh, rgba };
    let image = if options.antialias { downsample(&image) } else { image };
    Ok(Snapshot { image, pixels_per_unit: scale / f64::from(factor) })
}

/// Projects, shades and culls one face; `None` when it covers no pixel
/// centre or has no area on screen.
#[allow(clippy::too_many_arguments)]
fn screen_face(
    mesh: &IndexedMesh,
    f: &[u32; 3],
    screen: &[ScreenVertex],
    height: u32,
    width: u32,
    light: Vec3,
    toward: Vec3,
    options: &RenderOptions,
) -> Option<ScreenFace> {
    let s = f.map(|v| screen[v as usize]);
    let mut x = s.map(|v| i64::from(v.x));
    let mut y = s.map(|v| i64::from(v.y));
    let (xmin, xmax) = (x[0].min(x[1]).min(x[2]), x[0].max(x[1]).max(x[2]));
    let (ymin, ymax) = (y[0].min(y[1]).min(y[2]), y[0].max(y[1]).max(y[2]));
    // Pixel centres are at (i + 0.5) * SUBPIXEL; the first and last inside.
    let half = (SUBPIXEL / 2.0) as i64;
    let first = |lo: i64| (lo - half + (1 << SUBPIXEL_BITS) - 1).div_euclid(1 << SUBPIXEL_BITS).max(0);
    let last = |hi: i64, n: u32| (hi - half).div_euclid(1 << SUBPIXEL_BITS).min(i64::from(n) - 1);
    let (c0, c1) = (first(xmin), last(xmax, width));
    let (r0, r1) = (first(ymin), last(ymax, height));
    if c0 > c1 || r0 > r1 {
        return None;
    }
    let mut d = s.map(|v| v.depth);
    let area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0]);
    // With y down, a face wound counter-clockwise towards the viewer has
    // negative area here.
    if area == 0 || (options.cull_back_faces && area > 0) {
        return None;
    }
    if area < 0 {
        x.swap(1, 2);
        y.swap(1, 2);
        d.swap(1, 2);
    }
    let [a, b, c] = f.map(|v| mesh.vertices[v as usize]);
    let mut n = (b - a).cross(c - a).normalize_or_zero();
    if n.dot(toward) < 0.0 {
        n = -n;
    }
    let intensity = 0.22 + 0.78 * n.dot(light).max(0.0);
    // `as u8` saturates; + 0.5 rounds (no libm call on the hot path).
    let shade = options.color.map(|ch| (f32::from(ch) * intensity + 0.5) as u8);
    Some(ScreenFace {
        x: x.map(|v| v as i32),
        y: y.map(|v| v as i32),
        depth: d,
        rows: (r0 as u32, r1 as u32),
        cols: (c0 as u32, c1 as u32),
        inv_area: 1.0 / area.abs() as f32,
        shade,
    })
}

/// Whether an edge from `(dx, dy)` owns the pixel centres lying exactly on
/// it: of the two faces sharing an edge, exactly one does.
fn owns_edge(dx: i64, dy: i64) -> bool {
    dy > 0 || (dy == 0 && dx < 0)
}

/// Draws one face into a band of `rows` rows starting at row `y0`.
fn raster(f: &ScreenFace, y0: usize, rows: usize, width: usize, zbuf: &mut [f32], pixels: &mut [u8]) {
    let (r0, r1) = (f.rows.0 as usize, f.rows.1 as usize);
    let (r0, r1) = (r0.max(y0), r1.min(y0 + rows - 1));
    if r0 > r1 {
        return;
    }
    let one = 1i64 << SUBPIXEL_BITS;
    let half = one / 2;
    let (fx, fy) = (f.x.map(i64::from), f.y.map(i64::from));
    let (c0, c1) = (f.cols.0 as usize, f.cols.1 as usize);
    // Edge k runs from corner k+1 to corner k+2, opposite corner k.
    let edge = |k: usize| {
        let (i, j) = ((k + 1) % 3, (k + 2) % 3);
        let (dx, dy) = (fx[j] - fx[i], fy[j] - fy[i]);
        // w(p) = dx * (p.y - y_i) - dy * (p.x - x_i): positive inside for a
        // face counter-clockwise in y-down pixel coordinates.
        let bias = if owns_edge(dx, dy) { 0 } else { -1 };
        (dx, dy, fx[i], fy[i], bias)
    };
    let edges = [edge(0), edge(1), edge(2)];
    let inv_area = f.inv_area;
    let px0 = c0 as i64 * one + half;
    for row in r0..=r1 {
        let py = row as i64 * one + half;
        let mut w = edges.map(|(dx, dy, xi, yi, _)| dx * (py - yi) - dy * (px0 - xi));
        let steps = edges.map(|(_, dy, ..)| -dy * one);
        let line = (row - y0) * width;
        for col in c0..=c1 {
            if w[0] + edges[0].4 >= 0 && w[1] + edges[1].4 >= 0 && w[2] + edges[2].4 >= 0 {
                let z = (w[0] as f32 * f.depth[0] + w[1] as f32 * f.depth[1] + w[2] as f32 * f.depth[2])
                    * inv_area;
                let at = line + col;
                if z > zbuf[at] {
                    zbuf[at] = z;
                    pixels[at * 4..at * 4 + 4].copy_from_slice(&[f.shade[0], f.shade[1], f.shade[2], 255]);
                }
            }
            for k in 0..3 {
                w[k] += steps[k];
            }
        }
    }
}

/// Halves an image by averaging 2x2 blocks with premultiplied alpha.
fn downsample(image: &Image) -> Image {
    let (w, h) = (image.width / 2, image.height / 2);
    let mut rgba = vec![0u8; w as usize * h as usize * 4];
    rgba.par_chunks_mut(w as usize * 4).enumerate().for_each(|(y, row)| {
        for x in 0..w as usize {
            let mut sum = [0u32; 4];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = image.pixel((2 * x + dx) as u32, (2 * y + dy) as u32);
                let a = u32::from(p[3]);
                for k in 0..3 {
                    sum[k] += u32::from(p[k]) * a;
                }
                sum[3] += a;
            }
            let out = &mut row[x * 4..x * 4 + 4];
            for k in 0..3 {
                out[k] = (sum[k] + sum[3] / 2).checked_div(sum[3]).unwrap_or(0).min(255) as u8;
            }
            out[3] = ((sum[3] + 2) / 4) as u8;
        }
    });
    Image { width: w, height: h, rgba }
}

#[cfg(test)]
mod tests;
