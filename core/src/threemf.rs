//! 3MF: the zip container, its model part streamed as XML, every build item
//! flattened with its transform, components resolved, units made millimetres.
//!
//! The model part is found through `_rels/.rels` (falling back to the usual
//! `3D/3dmodel.model`). Its XML is read as a stream of events, never as a
//! tree, so a 225k-triangle model costs its triangles and little more.
//! Transforms follow the 3MF convention: row vectors, `p' = p · M` with the
//! 12 numbers `m00 m01 m02 m10 m11 m12 m20 m21 m22 m30 m31 m32`.
//!
//! A zip bomb is refused: the model part is inflated as it is read, never
//! held whole; its declared size must be under a limit and the bytes
//! actually inflated are counted against it too, since a declared size can
//! lie. The mesh it builds (the parsed objects, then every copy that build
//! items and components make of them) is counted against a memory budget
//! ([`Limits::max_mesh_bytes`]), since a few kilobytes of XML can name one
//! object a million times.

use std::collections::HashMap;
use std::io::{BufReader, Cursor, Read};

use glam::{DAffine3, DVec3};
use quick_xml::events::{BytesStart, Event};

use crate::ParseError;
use crate::mesh::IndexedTriangles;

/// Inflated model XML above this is refused (1 GiB: ~10M triangles).
pub const MAX_MODEL_BYTES: u64 = 1 << 30;
/// The default budget for the mesh a 3MF builds (4 GiB).
pub const MAX_MESH_BYTES: u64 = 4 << 30;

/// What reading one 3MF may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Inflated bytes of the model XML.
    pub max_xml_bytes: u64,
    /// Bytes of mesh in memory: parsed vertices (24 bytes) and triangles
    /// (12 bytes), then the flattened copies with what welding and
    /// validation will take for them (24 bytes a vertex, 60 a triangle),
    /// counted together.
    pub max_mesh_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_xml_bytes: MAX_MODEL_BYTES, max_mesh_bytes: MAX_MESH_BYTES }
    }
}
/// Components nested deeper than this are refused (it also stops cycles).
const MAX_DEPTH: usize = 32;

/// The triangles of every build item, in millimetres, world coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreeMf {
    /// Positions after transforms and unit conversion, and the triangles.
    pub mesh: IndexedTriangles,
    /// Build items flattened.
    pub items: u64,
}

fn bad(reason: impl Into<String>) -> ParseError {
    ParseError::Container { format: "3MF", reason: reason.into() }
}

/// Reads a 3MF file held in memory, within the default [`Limits`].
pub fn parse(bytes: &[u8]) -> Result<ThreeMf, ParseError> {
    parse_within(bytes, &Limits::default())
}

/// [`parse`] with a different limit on the inflated model XML.
pub fn parse_with_limit(bytes: &[u8], limit: u64) -> Result<ThreeMf, ParseError> {
    parse_within(bytes, &Limits { max_xml_bytes: limit, ..Limits::default() })
}

/// [`parse`] within `limits`.
pub fn parse_within(bytes: &[u8], limits: &Limits) -> Result<ThreeMf, ParseError> {
    let limit = limits.max_xml_bytes;
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(format!("not a readable zip: {e}")))?;
    let part = model_part(&mut zip)?;
    let file = zip.by_name(&part).map_err(|e| bad(format!("model part {part}: {e}")))?;
    if file.size() > limit {
        return Err(bad(format!(
            "model part {part} declares {} bytes, over the {limit}-byte limit (a zip bomb?)",
            file.size()
        )));
    }
    // One byte past the limit is read, so inflating past it is seen.
    let mut xml = ItemCap { inner: BufReader::with_capacity(64 << 10, file.take(limit + 1)), since: 0 };
    let mut budget = Budget { used: 0, limit: limits.max_mesh_bytes };
    let model = read_model(&mut xml, &mut budget).map_err(|e| {
        if xml.inner.get_ref().limit() == 0 {
            bad(format!("model part {part} inflates past the {limit}-byte limit (a zip bomb?)"))
        } else {
            e
        }
    })?;
    if xml.inner.get_ref().limit() == 0 {
        return Err(bad(format!("model part {part} inflates past the {limit}-byte limit (a zip bomb?)")));
    }
    flatten(&model, &mut budget)
}

/// The most bytes one XML event (a tag, a text run, a comment) may span:
/// the XML reader holds an event whole, so without this one 1 GiB run of
/// whitespace or comment would be held whole too.
pub const MAX_ITEM_BYTES: u64 = 16 << 20;

/// The model XML as the reader sees it, refusing to let one event grow
/// past [`MAX_ITEM_BYTES`] (`since` is reset after every event).
struct ItemCap<R> {
    inner: R,
    since: u64,
}

impl<R: std::io::BufRead> Read for ItemCap<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::BufRead::fill_buf(self)?.len().min(out.len());
        out[..n].copy_from_slice(&self.inner.fill_buf()?[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl<R: std::io::BufRead> std::io::BufRead for ItemCap<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.since > MAX_ITEM_BYTES {
            return Err(std::io::Error::other(format!(
                "one tag, text or comment spans more than {MAX_ITEM_BYTES} bytes"
            )));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.since += n as u64;
        self.inner.consume(n);
    }
}

/// What one flattened vertex is charged: its copy (12 bytes) and its welded
/// copy after parsing (12).
const FLAT_VERTEX_BYTES: u64 = 24;
/// What one flattened triangle is charged: its copy (12 bytes) and what
/// welding and validation take for it after parsing (48, measured: a 3MF
/// of 33M triangles peaked at 2.0 GB, 63 bytes a triangle in all).
const FLAT_TRIANGLE_BYTES: u64 = 60;

/// Mesh bytes spent so far against [`Limits::max_mesh_bytes`].
struct Budget {
    used: u64,
    limit: u64,
}

impl Budget {
    fn spend(&mut self, bytes: u64) -> Result<(), ParseError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(ParseError::OverBudget { bytes: self.used, limit: self.limit });
        }
        Ok(())
    }
}

/// The path of the 3D model part, from the package relationships.
fn model_part(zip: &mut zip::ZipArchive<Cursor<&[u8]>>) -> Result<String, ParseError> {
    let mut rels = String::new();
    if let Ok(file) = zip.by_name("_rels/.rels") {
        file.take(1 << 20).read_to_string(&mut rels).map_err(|e| bad(format!("_rels/.rels: {e}")))?;
    }
    let mut reader = quick_xml::Reader::from_str(&rels);
    loop {
        match reader.read_event() {
            Ok(Event::Empty(e) | Event::Start(e)) if e.local_name().as_ref() == "Relationship" => {
                let (mut target, mut is_model) = (None, false);
                for a in e.attributes().flatten() {
                    match a.key.as_ref() {
                        "Target" => target = Some(a.value.into_owned()),
                        "Type" => is_model = a.value.ends_with("/3dmodel"),
                        _ => {}
                    }
                }
                if let (Some(t), true) = (target, is_model) {
                    return Ok(t.trim_start_matches('/').to_string());
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    Ok("3D/3dmodel.model".to_string())
}

#[derive(Default)]
struct Object {
    vertices: Vec<DVec3>,
    triangles: Vec<[u32; 3]>,
    components: Vec<(u32, DAffine3)>,
}

struct Model {
    scale: f64,
    objects: HashMap<u32, Object>,
    items: Vec<(u32, DAffine3)>,
}

fn attr<'a>(e: &'a BytesStart<'_>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    e.attributes().flatten().find(|a| a.key.local_name().as_ref() == name).map(|a| a.value)
}

fn number<T: std::str::FromStr>(e: &BytesStart<'_>, name: &str) -> Result<T, ParseError> {
    let raw = attr(e, name).ok_or_else(|| bad(format!("<{}> has no {name}", tag(e))))?;
    raw.trim()
        .parse()
        .map_err(|_| bad(format!("<{}> {name}=\"{}\" is not a number", tag(e), raw.escape_debug())))
}

fn tag(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_string()
}

fn transform(e: &BytesStart<'_>) -> Result<DAffine3, ParseError> {
    let Some(raw) = attr(e, "transform") else { return Ok(DAffine3::IDENTITY) };
    let m: Vec<f64> = raw.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN)).collect();
    if m.len() != 12 || m.iter().any(|x| !x.is_finite()) {
        return Err(bad(format!(
            "<{}> transform=\"{}\" is not 12 finite numbers",
            tag(e),
            raw.escape_debug()
        )));
    }
    let v = |k: usize| DVec3::new(m[k], m[k + 1], m[k + 2]);
    Ok(DAffine3::from_cols(v(0), v(3), v(6), v(9)))
}

fn unit_scale(unit: &str) -> Result<f64, ParseError> {
    Ok(match unit {
        "micron" => 0.001,
        "millimeter" => 1.0,
        "centimeter" => 10.0,
        "inch" => 25.4,
        "foot" => 304.8,
        "meter" => 1000.0,
        other => return Err(bad(format!("unknown unit \"{}\"", other.escape_debug()))),
    })
}

fn read_model<R: std::io::BufRead>(xml: &mut ItemCap<R>, budget: &mut Budget) -> Result<Model, ParseError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut model = Model { scale: 1.0, objects: HashMap::new(), items: Vec::new() };
    let mut current: Option<(u32, Object)> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(format!("model XML at byte {}: {e}", reader.buffer_position())))?;
        reader.get_mut().since = 0;
        match &event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "model" => {
                    if let Some(unit) = attr(e, "unit") {
                        model.scale = unit_scale(&unit)?;
                    }
                }
                "object" => current = Some((number(e, "id")?, Object::default())),
                "vertex" => {
                    let (_, object) = current.as_mut().ok_or_else(|| bad("<vertex> outside an <object>"))?;
                    budget.spend(24)?;
                    object.vertices.push(DVec3::new(number(e, "x")?, number(e, "y")?, number(e, "z")?));
                }
                "triangle" => {
                    let (_, object) =
                        current.as_mut().ok_or_else(|| bad("<triangle> outside an <object>"))?;
                    budget.spend(12)?;
                    object.triangles.push([number(e, "v1")?, number(e, "v2")?, number(e, "v3")?]);
                }
                "component" => {
                    let (_, object) =
                        current.as_mut().ok_or_else(|| bad("<component> outside an <object>"))?;
                    object.components.push((number(e, "objectid")?, transform(e)?));
                }
                "item" => model.items.push((number(e, "objectid")?, transform(e)?)),
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "object" => {
                if let Some((id, object)) = current.take() {
                    let n = object.vertices.len();
                    if let Some(t) = object.triangles.iter().find(|t| t.iter().any(|&v| v as usize >= n)) {
                        return Err(bad(format!("object {id}: triangle {t:?} points past its {n} vertices")));
                    }
                    model.objects.insert(id, object);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        if let Event::Empty(e) = &event
            && e.local_name().as_ref() == "object"
            && let Some((id, object)) = current.take()
        {
            model.objects.insert(id, object);
        }
        buf.clear();
    }
    Ok(model)
}

fn flatten(model: &Model, budget: &mut Budget) -> Result<ThreeMf, ParseError> {
    let mut out = ThreeMf::default();
    let units = DAffine3::from_scale(DVec3::splat(model.scale));
    for &(id, item) in &model.items {
        emit(model, id, units * item, 0, &mut out, budget)?;
        out.items += 1;
    }
    if out.mesh.triangles.len() as u64 * 3 >= u64::from(u32::MAX) {
        return Err(ParseError::TooLarge { facets: out.mesh.triangles.len() as u64 });
    }
    Ok(out)
}

fn emit(
    model: &Model,
    id: u32,
    to_world: DAffine3,
    depth: usize,
    out: &mut ThreeMf,
    budget: &mut Budget,
) -> Result<(), ParseError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("components nest deeper than {MAX_DEPTH} levels at object {id} (a cycle?)")));
    }
    let object = model.objects.get(&id).ok_or_else(|| bad(format!("reference to undefined object {id}")))?;
    let base = out.mesh.positions.len() as u64;
    if base + object.vertices.len() as u64 >= u64::from(u32::MAX) {
        return Err(ParseError::TooLarge { facets: out.mesh.triangles.len() as u64 });
    }
    budget.spend(
        FLAT_VERTEX_BYTES * object.vertices.len() as u64
            + FLAT_TRIANGLE_BYTES * object.triangles.len() as u64,
    )?;
    out.mesh
        .positions
        .extend(object.vertices.iter().map(|&v| to_world.transform_point3(v).as_vec3().to_array()));
    out.mesh.triangles.extend(object.triangles.iter().map(|t| t.map(|v| (base + u64::from(v)) as u32)));
    for &(child, transform) in &object.components {
        emit(model, child, to_world * transform, depth + 1, out, budget)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::stl::FacetSource;

    fn package(model: &str) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let rels = r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Target="/3D/model.model" Id="r0" Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/></Relationships>"#;
        zip.start_file("_rels/.rels", stored).expect("zip entry");
        zip.write_all(rels.as_bytes()).expect("zip write");
        zip.start_file("3D/model.model", stored).expect("zip entry");
        zip.write_all(model.as_bytes()).expect("zip write");
        zip.finish().expect("zip finish").into_inner()
    }

    /// A package whose model part is `head`, then `filler` `times` over,
    /// then `tail`, deflated as it is written (so a bomb costs the test
    /// little memory).
    fn deflated(head: &str, filler: &[u8], times: usize, tail: &str) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let deflate =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("3D/3dmodel.model", deflate).expect("zip entry");
        zip.write_all(head.as_bytes()).expect("zip write");
        for _ in 0..times {
            zip.write_all(filler).expect("zip write");
        }
        zip.write_all(tail.as_bytes()).expect("zip write");
        zip.finish().expect("zip finish").into_inner()
    }

    const TRIANGLE: &str = r#"<object id="1" type="model"><mesh><vertices>
        <vertex x="0" y="0" z="0"/><vertex x="1" y="0" z="0"/><vertex x="0" y="1" z="0"/>
        </vertices><triangles><triangle v1="0" v2="1" v3="2"/></triangles></mesh></object>"#;

    #[test]
    fn items_components_transforms_and_units() {
        let model = format!(
            r#"<?xml version="1.0"?><model unit="inch" xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02"><resources>{TRIANGLE}
            <object id="2"><components><component objectid="1" transform="1 0 0 0 1 0 0 0 1 10 0 0"/></components></object>
            </resources><build><item objectid="1"/><item objectid="2" transform="0 1 0 -1 0 0 0 0 1 0 0 5"/></build></model>"#
        );
        let m = parse(&package(&model)).expect("parses");
        assert_eq!((m.items, m.mesh.triangles.len()), (2, 2));
        let inch = 25.4f32;
        assert_eq!(m.mesh.vertices(0), [[0.0, 0.0, 0.0], [inch, 0.0, 0.0], [0.0, inch, 0.0]]);
        // Component (translate x by 10) then item (rotate 90 deg about z,
        // lift 5): (x, y, z) -> (-(y), x + 10, z + 5), in inches.
        let expect = |x: f32, y: f32| [-y * inch, (x + 10.0) * inch, 5.0 * inch];
        let got = m.mesh.vertices(1);
        for (g, e) in got.iter().zip([expect(0.0, 0.0), expect(1.0, 0.0), expect(0.0, 1.0)]) {
            for k in 0..3 {
                assert!((g[k] - e[k]).abs() < 1e-3, "{got:?}");
            }
        }
    }

    #[test]
    fn bombs_cycles_and_broken_models_are_refused() {
        let model = format!(
            r#"<model unit="millimeter"><resources>{TRIANGLE}</resources><build><item objectid="1"/></build></model>"#
        );
        let err = parse_with_limit(&package(&model), 100).expect_err("over the limit");
        assert!(err.to_string().contains("over the 100-byte limit"), "{err}");
        assert_eq!(err.code(), "bad_container");

        // 20 MiB of whitespace between two tags: one text event the XML
        // reader would hold whole.
        let head = format!("<model><resources>{TRIANGLE}</resources>");
        let tail = "<build><item objectid=\"1\"/></build></model>";
        let err = parse(&deflated(&head, &[b' '; 1 << 20], 20, tail)).expect_err("one huge text run");
        assert!(err.to_string().contains("spans more than 16777216 bytes"), "{err}");
        // Within the item cap but past a 4 MiB XML limit, counted as it
        // inflates (the declared size says nothing until the end).
        let limits = Limits { max_xml_bytes: 4 << 20, ..Limits::default() };
        let err = parse_within(&deflated(&head, &[b' '; 1 << 20], 6, tail), &limits).expect_err("over");
        assert!(err.to_string().contains("over the 4194304-byte limit"), "{err}");
        // Many small runs of whitespace are streamed, never held: fine.
        let spaced = deflated(&head, b"<!-- a comment --> \n", 200_000, tail);
        assert_eq!(parse(&spaced).expect("streams").mesh.triangles.len(), 1);

        // One triangle named by 1000 components, the group named by 1000
        // items: a few kilobytes of XML for a million copies.
        let group: String = (0..1000)
            .map(|i| format!(r#"<component objectid="1" transform="1 0 0 0 1 0 0 0 1 {i} 0 0"/>"#))
            .collect();
        let items = "<item objectid=\"2\"/>".repeat(1000);
        let amplified = format!(
            "<model><resources>{TRIANGLE}<object id=\"2\"><components>{group}</components></object></resources><build>{items}</build></model>"
        );
        let limits = Limits { max_mesh_bytes: 64 << 20, ..Limits::default() };
        let err = parse_within(&package(&amplified), &limits).expect_err("amplified past the budget");
        assert_eq!(err.code(), "memory_limit");
        assert!(err.to_string().contains("over the job's 67108864-byte memory limit"), "{err}");

        let cycle = r#"<model><resources><object id="1"><components><component objectid="2"/></components></object>
            <object id="2"><components><component objectid="1"/></components></object></resources>
            <build><item objectid="1"/></build></model>"#;
        assert!(parse(&package(cycle)).expect_err("cycle").to_string().contains("deeper than"));

        let past = TRIANGLE.replace(r#"v3="2""#, r#"v3="7""#);
        let past =
            format!("<model><resources>{past}</resources><build><item objectid=\"1\"/></build></model>");
        assert!(
            parse(&package(&past)).expect_err("index").to_string().contains("points past its 3 vertices")
        );

        let missing = "<model><resources></resources><build><item objectid=\"9\"/></build></model>";
        assert!(parse(&package(missing)).expect_err("missing").to_string().contains("undefined object 9"));
        assert!(parse(b"PK\x03\x04 not really a zip").is_err());
    }
}
