//! Wavefront OBJ: positions and faces, read line by line from the bytes.
//!
//! What is read: `v x y z` (extra values such as `w` or vertex colours are
//! ignored) and `f` with any of the index forms `i`, `i/t`, `i//n`, `i/t/n`,
//! 1-based or negative (relative to the vertices read so far). Polygons are
//! fan-triangulated from their first corner, as trimesh does. Everything
//! else (`vt`, `vn`, `o`, `g`, `s`, `usemtl`, `mtllib`, `l`, `p`, comments,
//! blank lines, a trailing `\` continuation is not supported) is skipped:
//! geometry is what Strata needs. A bad number, a face with fewer than three
//! corners, an index of 0 or out of range is an error naming the line.
//!
//! Faces keep the file's vertex ids, but the mesh is rebuilt from positions
//! (the triangles are an [`IndexedTriangles`]): OBJ files split vertices along UV
//! seams, and the mesh must be welded by position to see its real topology.

use crate::ParseError;
use crate::mesh::IndexedTriangles;

/// The triangles of an OBJ file, over its vertex positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Obj {
    /// `v` lines in order, and the triangles after fan triangulation.
    pub mesh: IndexedTriangles,
    /// `f` lines read (polygons before triangulation).
    pub polygons: u64,
}

fn error(line: u64, offset: usize, reason: String) -> ParseError {
    ParseError::Syntax { format: "OBJ", line, offset: offset as u64, reason }
}

/// Parses OBJ text.
pub fn parse(bytes: &[u8]) -> Result<Obj, ParseError> {
    let mut obj = Obj::default();
    let mut corners: Vec<u32> = Vec::new();
    let mut offset = 0;
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n as u64 + 1;
        let start = offset;
        offset += raw.len() + 1;
        let line = raw.split(|&b| b == b'#').next().unwrap_or_default();
        let mut tokens = line.split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty());
        match tokens.next() {
            Some(b"v") => {
                let mut xyz = [0f32; 3];
                for c in &mut xyz {
                    let token = tokens.next().ok_or_else(|| {
                        error(line_no, start, "expected 3 coordinates after 'v'".to_string())
                    })?;
                    *c = number(token).ok_or_else(|| {
                        error(line_no, start, format!("expected a number, found '{}'", token.escape_ascii()))
                    })?;
                }
                obj.mesh.positions.push(xyz);
            }
            Some(b"f") => {
                corners.clear();
                for token in tokens {
                    corners.push(index(token, obj.mesh.positions.len()).map_err(|reason| {
                        error(line_no, start, format!("{reason} in face corner '{}'", token.escape_ascii()))
                    })?);
                }
                if corners.len() < 3 {
                    return Err(error(
                        line_no,
                        start,
                        format!("a face needs at least 3 corners, found {}", corners.len()),
                    ));
                }
                obj.polygons += 1;
                for k in 1..corners.len() - 1 {
                    obj.mesh.triangles.push([corners[0], corners[k], corners[k + 1]]);
                }
            }
            _ => {}
        }
    }
    if obj.mesh.triangles.len() as u64 * 3 >= u64::from(u32::MAX) {
        return Err(ParseError::TooLarge { facets: obj.mesh.triangles.len() as u64 });
    }
    Ok(obj)
}

fn number(token: &[u8]) -> Option<f32> {
    match fast_float2::parse_partial::<f32, _>(token) {
        Ok((value, used)) if used == token.len() => Some(value),
        _ => None,
    }
}

/// The position index of one face corner (`i`, `i/t`, `i//n` or `i/t/n`).
fn index(token: &[u8], count: usize) -> Result<u32, String> {
    let first = token.split(|&b| b == b'/').next().unwrap_or_default();
    let text = std::str::from_utf8(first).map_err(|_| "not a number".to_string())?;
    let i: i64 = text.parse().map_err(|_| "not a vertex index".to_string())?;
    let resolved = match i {
        0 => return Err("vertex index 0 (OBJ counts from 1)".to_string()),
        i if i > 0 => i - 1,
        i => count as i64 + i,
    };
    if resolved < 0 || resolved >= count as i64 {
        return Err(format!("vertex index {i} out of range (only {count} vertices so far)"));
    }
    Ok(resolved as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangles_polygons_and_every_index_form() {
        let text = b"# a quad and a triangle\r\nv 0 0 0\nv 1 0 0\r\nv 1 1 0\nv 0 1 0 1.0\n\
                     vt 0 0\nvn 0 0 1\no thing\ng part\ns off\nusemtl red\n\
                     f 1/1/1 2/1/1 3//1 4\n\nf -4 -3 -1 # comment\n";
        let obj = parse(text).expect("parses");
        assert_eq!(obj.mesh.positions.len(), 4);
        assert_eq!(obj.polygons, 2);
        assert_eq!(obj.mesh.triangles, vec![[0, 1, 2], [0, 2, 3], [0, 1, 3]]);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let bad = |text: &str| parse(text.as_bytes()).expect_err("must fail").to_string();
        assert_eq!(bad("v 0 0 0\nv 1 0 x\n"), "OBJ line 2: expected a number, found 'x'");
        assert_eq!(bad("v 0 0\n"), "OBJ line 1: expected 3 coordinates after 'v'");
        assert_eq!(
            bad("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n"),
            "OBJ line 4: vertex index 4 out of range (only 3 vertices so far) in face corner '4'"
        );
        assert_eq!(
            bad("v 0 0 0\nv 1 0 0\nv 0 1 0\n\nf 0 1 2\n"),
            "OBJ line 5: vertex index 0 (OBJ counts from 1) in face corner '0'"
        );
        assert_eq!(bad("v 0 0 0\nv 1 0 0\nf 1 2\n"), "OBJ line 3: a face needs at least 3 corners, found 2");
        assert_eq!(
            bad("v 0 0 0\nf 1 -2 1\n"),
            "OBJ line 2: vertex index -2 out of range (only 1 vertices so far) in face corner '-2'"
        );
    }
}
