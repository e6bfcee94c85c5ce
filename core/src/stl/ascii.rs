//! ASCII STL, parsed with `nom` straight from the bytes (no UTF-8 check,
//! no line splitting).
//!
//! Grammar, keywords case-insensitive, any run of spaces, tabs, CR or LF as
//! a separator:
//!
//! ```text
//! file   := (solid)+ trailing?
//! solid  := "solid" name? EOL facet* "endsolid" name?
//! facet  := "facet" "normal" f f f "outer" "loop" vertex vertex vertex "endloop" "endfacet"
//! vertex := "vertex" f f f
//! ```
//!
//! A file may hold several solids. A missing final `endsolid` and text
//! after the last solid are accepted with a warning, since the geometry is
//! complete; anything else that breaks the grammar is an error naming the
//! line and what was expected there.

use nom::bytes::complete::{tag_no_case, take_till, take_while, take_while1};
use nom::{IResult, Parser};

use super::Facet;
use crate::{ParseError, Warning};

/// Where parsing stopped and what the grammar wanted there.
#[derive(Debug)]
struct Syntax<'a> {
    at: &'a [u8],
    expected: &'static str,
}

impl<'a> nom::error::ParseError<&'a [u8]> for Syntax<'a> {
    fn from_error_kind(input: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        Syntax { at: input, expected: "valid ASCII STL" }
    }

    fn append(_input: &'a [u8], _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type Res<'a, T> = IResult<&'a [u8], T, Syntax<'a>>;

#[inline(always)]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn fail<'a, T>(at: &'a [u8], expected: &'static str) -> Res<'a, T> {
    Err(nom::Err::Error(Syntax { at, expected }))
}

#[inline(always)]
fn ws0(i: &[u8]) -> Res<'_, &[u8]> {
    take_while(is_space).parse(i)
}

#[inline(always)]
fn ws1(i: &[u8]) -> Res<'_, &[u8]> {
    match take_while1::<_, _, Syntax<'_>>(is_space).parse(i) {
        Ok(ok) => Ok(ok),
        Err(_) => fail(i, "whitespace"),
    }
}

/// `word` (any case) followed by at least one whitespace byte.
#[inline(always)]
fn keyword<'a>(word: &'static str, expected: &'static str, i: &'a [u8]) -> Res<'a, ()> {
    match (tag_no_case(word), ws1).parse(i) {
        Ok((rest, _)) => Ok((rest, ())),
        Err(_) => fail(i, expected),
    }
}

#[inline(always)]
fn number(i: &[u8]) -> Res<'_, f32> {
    match fast_float2::parse_partial::<f32, _>(i) {
        Ok((value, used)) if used > 0 => Ok((&i[used..], value)),
        _ => fail(i, "a number"),
    }
}

/// Three numbers, each followed by whitespace.
#[inline(always)]
fn triple(i: &[u8]) -> Res<'_, [f32; 3]> {
    let (i, x) = number(i)?;
    let (i, _) = ws1(i)?;
    let (i, y) = number(i)?;
    let (i, _) = ws1(i)?;
    let (i, z) = number(i)?;
    let (i, _) = ws1(i)?;
    Ok((i, [x, y, z]))
}

#[inline(always)]
fn vertex(i: &[u8]) -> Res<'_, [f32; 3]> {
    let (i, ()) = keyword("vertex", "'vertex'", i)?;
    triple(i)
}

/// One facet, from `facet` to the whitespace after `endfacet`.
fn facet(i: &[u8]) -> Res<'_, Facet> {
    let (i, ()) = keyword("facet", "'facet'", i)?;
    let (i, ()) = keyword("normal", "'normal'", i)?;
    let (i, normal) = triple(i)?;
    let (i, ()) = keyword("outer", "'outer loop'", i)?;
    let (i, ()) = keyword("loop", "'outer loop'", i)?;
    let (i, a) = vertex(i)?;
    let (i, b) = vertex(i)?;
    let (i, c) = vertex(i)?;
    let (i, ()) = keyword("endloop", "'endloop' (a facet has exactly 3 vertices)", i)?;
    let (i, _) = match tag_no_case::<_, _, Syntax<'_>>("endfacet").parse(i) {
        Ok(ok) => ok,
        Err(_) => return fail(i, "'endfacet'"),
    };
    // `endfacet` must end the token: whitespace or the end of the file.
    if i.first().is_some_and(|&b| !is_space(b)) {
        return fail(i, "whitespace");
    }
    let (i, _) = ws0(i)?;
    Ok((i, Facet { normal, vertices: [a, b, c] }))
}

fn starts_with_word(i: &[u8], word: &[u8]) -> bool {
    i.len() >= word.len() && i[..word.len()].eq_ignore_ascii_case(word)
}

/// The rest of the current line (a solid's optional name).
fn rest_of_line(i: &[u8]) -> Res<'_, &[u8]> {
    take_till(|b| b == b'\n' || b == b'\r').parse(i)
}

/// How one `solid` block ended.
enum End {
    Endsolid,
    EndOfFile,
}

/// A whole `solid ... endsolid` block; facets are pushed onto `out`.
fn solid<'a>(i: &'a [u8], out: &mut Vec<Facet>) -> Res<'a, End> {
    let (i, _) = match tag_no_case::<_, _, Syntax<'_>>("solid").parse(i) {
        Ok(ok) => ok,
        Err(_) => return fail(i, "'solid'"),
    };
    let (i, _) = rest_of_line(i)?;
    let (mut i, _) = ws0(i)?;
    loop {
        if starts_with_word(i, b"facet") {
            let (rest, f) = facet(i)?;
            out.push(f);
            i = rest;
        } else if starts_with_word(i, b"endsolid") {
            let (rest, _) = rest_of_line(&i[b"endsolid".len()..])?;
            let (rest, _) = ws0(rest)?;
            return Ok((rest, End::Endsolid));
        } else if i.is_empty() {
            return Ok((i, End::EndOfFile));
        } else {
            return fail(i, "'facet' or 'endsolid'");
        }
    }
}

/// Parses a whole ASCII STL file (the caller checked it starts with `solid`).
pub(super) fn parse(bytes: &[u8]) -> Result<(Vec<Facet>, usize, Vec<Warning>), ParseError> {
    // A facet takes at least ~120 bytes of text; the estimate is bounded by
    // the input's real length, never by anything the file declares.
    let mut facets = Vec::with_capacity(bytes.len() / 160);
    let mut warnings = Vec::new();
    let mut solids = 0;
    let (mut i, _) = ws0(bytes).map_err(|e| to_error(bytes, e))?;
    while !i.is_empty() {
        if solids > 0 && !starts_with_word(i, b"solid") {
            warnings.push(Warning::TrailingText { line: line_of(bytes, i) });
            break;
        }
        let (rest, end) = solid(i, &mut facets).map_err(|e| to_error(bytes, e))?;
        solids += 1;
        if let End::EndOfFile = end {
            warnings.push(Warning::MissingEndsolid);
        }
        i = rest;
    }
    Ok((facets, solids, warnings))
}

fn to_error(whole: &[u8], err: nom::Err<Syntax<'_>>) -> ParseError {
    let syntax = match err {
        nom::Err::Error(s) | nom::Err::Failure(s) => s,
        nom::Err::Incomplete(_) => Syntax { at: &[], expected: "more input" },
    };
    let offset = (whole.len() - syntax.at.len()) as u64;
    let found = describe(syntax.at);
    ParseError::AsciiSyntax {
        line: line_of(whole, syntax.at),
        offset,
        reason: format!("expected {}, found {}", syntax.expected, found),
    }
}

/// 1-based line of the position where `rest` starts; CR, LF and CRLF each
/// end one line, so classic-Mac files get correct numbers too.
fn line_of(whole: &[u8], rest: &[u8]) -> u64 {
    let before = &whole[..whole.len() - rest.len()];
    let mut line = 1;
    let mut prev = 0u8;
    for &b in before {
        if b == b'\n' && prev != b'\r' || b == b'\r' {
            line += 1;
        }
        prev = b;
    }
    line
}

/// The token at the error position, quoted and escaped, for messages.
fn describe(at: &[u8]) -> String {
    if at.is_empty() {
        return "end of file".to_string();
    }
    let token: Vec<u8> = at.iter().take_while(|&&b| !is_space(b)).take(24).copied().collect();
    if token.is_empty() {
        return "whitespace".to_string();
    }
    format!("'{}'", token.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> (Vec<Facet>, usize, Vec<Warning>) {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    const ONE: &str = "solid t\n facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n   vertex 0 1 0\n  endloop\n endfacet\nendsolid t\n";

    #[test]
    fn one_facet() {
        let (f, solids, w) = parse_ok(ONE);
        assert_eq!(solids, 1);
        assert!(w.is_empty());
        assert_eq!(
            f,
            vec![Facet {
                normal: [0.0, 0.0, 1.0],
                vertices: [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
            }]
        );
    }

    #[test]
    fn mixed_case_tabs_crlf_cr_scientific_and_bare_endsolid() {
        let text = "SOLID\r\n\tFacet Normal 0e0 -0 1E+0\r\n\t\tOUTER LOOP\r\n\t\t\tvertex 1.5e-3 +2 -3.25E2\r\n\t\t\tVertex .5 5. 0\r\r\t\t\tvertex 0 0 0\n\tendloop endfacet\r\n\r\nEndSolid";
        let (f, _, w) = parse_ok(text);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(f[0].vertices[0], [1.5e-3, 2.0, -325.0]);
        assert_eq!(f[0].vertices[1], [0.5, 5.0, 0.0]);
    }

    #[test]
    fn several_solids_and_warnings() {
        let text = format!("{ONE}{ONE}");
        let (f, solids, w) = parse_ok(&text);
        assert_eq!((f.len(), solids), (2, 2));
        assert!(w.is_empty());

        let cut = ONE.trim_end().trim_end_matches("endsolid t");
        let (f, _, w) = parse_ok(cut);
        assert_eq!(f.len(), 1);
        assert_eq!(w, vec![Warning::MissingEndsolid]);

        let (_, _, w) = parse_ok(&format!("{ONE}\n\0\0 junk"));
        assert_eq!(w, vec![Warning::TrailingText { line: 11 }]);
    }

    #[test]
    fn bad_number_names_line_and_token() {
        let text = ONE.replace("vertex 1 0 0", "vertex 0 0 blah");
        let err = parse(text.as_bytes()).unwrap_err();
        let ParseError::AsciiSyntax { line, reason, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*line, 5);
        assert_eq!(reason, "expected a number, found 'blah'");
    }

    #[test]
    fn four_vertices_and_truncation_are_errors() {
        let four = ONE.replace("   vertex 0 1 0\n", "   vertex 0 1 0\n   vertex 1 1 0\n");
        let err = parse(four.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 7: expected 'endloop'"), "{err}");

        let cut = &ONE[..ONE.find("vertex 0 1 0").unwrap() + 9];
        let err = parse(cut.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 6"), "{err}");
    }

    #[test]
    fn line_numbers_count_cr_only_files() {
        let text = ONE.replace('\n', "\r").replace("vertex 0 1 0", "vertex 0 1 x");
        let err = parse(text.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("line 6:"), "{err}");
    }
}
