//! 3MF: the zip container, its model part streamed as XML, every build item
//! flattened with its transform, components resolved, units made millimetres.
//!
//! The model part is found through `_rels/.rels` (falling back to the usual
//! `3D/3dmodel.model`). Its XML is read as a stream of events, never as a
//! tree, so a 225k-triangle model costs its triangles and little more.
//! Transforms follow the 3MF convention: row vectors, `p' = p · M` with the
//! 12 numbers `m00 m01 m02 m10 m11 m12 m20 m21 m22 m30 m31 m32`.
//!
//! A zip bomb is refused: the model part's declared size must be under a
//! limit, and the bytes actually inflated are counted against it too, since
//! a declared size can lie.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use glam::{DAffine3, DVec3};
use quick_xml::events::{BytesStart, Event};

use crate::ParseError;
use crate::mesh::IndexedTriangles;

/// Inflated model XML above this is refused (1 GiB: ~10M triangles).
pub const MAX_MODEL_BYTES: u64 = 1 << 30;
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

/// Reads a 3MF file held in memory.
pub fn parse(bytes: &[u8]) -> Result<ThreeMf, ParseError> {
    parse_with_limit(bytes, MAX_MODEL_BYTES)
}

/// [`parse`] with a different limit on the inflated model XML.
pub fn parse_with_limit(bytes: &[u8], limit: u64) -> Result<ThreeMf, ParseError> {
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
    let mut xml = Vec::new();
    file.take(limit + 1).read_to_end(&mut xml).map_err(|e| bad(format!("model part {part}: {e}")))?;
    if xml.len() as u64 > limit {
        return Err(bad(format!("model part {part} inflates past the {limit}-byte limit (a zip bomb?)")));
    }
    let model = read_model(&xml)?;
    flatten(&model)
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

fn read_model(xml: &[u8]) -> Result<Model, ParseError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut model = Model { scale: 1.0, objects: HashMap::new(), items: Vec::new() };
    let mut current: Option<(u32, Object)> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(format!("model XML at byte {}: {e}", reader.buffer_position())))?;
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
                    object.vertices.push(DVec3::new(number(e, "x")?, number(e, "y")?, number(e, "z")?));
                }
                "triangle" => {
                    let (_, object) =
                        current.as_mut().ok_or_else(|| bad("<triangle> outside an <object>"))?;
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

fn flatten(model: &Model) -> Result<ThreeMf, ParseError> {
    let mut out = ThreeMf::default();
    let units = DAffine3::from_scale(DVec3::splat(model.scale));
    for &(id, item) in &model.items {
        emit(model, id, units * item, 0, &mut out)?;
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
) -> Result<(), ParseError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("components nest deeper than {MAX_DEPTH} levels at object {id} (a cycle?)")));
    }
    let object = model.objects.get(&id).ok_or_else(|| bad(format!("reference to undefined object {id}")))?;
    let base = out.mesh.positions.len() as u64;
    if base + object.vertices.len() as u64 >= u64::from(u32::MAX) {
        return Err(ParseError::TooLarge { facets: out.mesh.triangles.len() as u64 });
    }
    out.mesh
        .positions
        .extend(object.vertices.iter().map(|&v| to_world.transform_point3(v).as_vec3().to_array()));
    out.mesh.triangles.extend(object.triangles.iter().map(|t| t.map(|v| (base + u64::from(v)) as u32)));
    for &(child, transform) in &object.components {
        emit(model, child, to_world * transform, depth + 1, out)?;
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
