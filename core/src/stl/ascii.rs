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

/// Inputs at least this large are cut at facet boundaries and parsed on
/// every core; below it the split costs more than it saves.
const PARALLEL_MIN: usize = 1 << 20;

/// Parses a whole ASCII STL file (the caller checked it starts with `solid`).
///
/// Large files take the parallel path first. It accepts only the plain
/// well-formed shape (every solid closed, nothing after the last one); any
/// error, warning or oddity sends the file through the sequential parser,
/// so results and error messages are the same either way.
pub(super) fn parse(bytes: &[u8]) -> Result<(Vec<Facet>, usize, Vec<Warning>), ParseError> {
    if bytes.len() >= PARALLEL_MIN
        && rayon::current_num_threads() > 1
        && let Some((facets, solids)) = parse_parallel(bytes)
    {
        return Ok((facets, solids, Vec::new()));
    }
    parse_sequential(bytes)
}

fn parse_sequential(bytes: &[u8]) -> Result<(Vec<Facet>, usize, Vec<Warning>), ParseError> {
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

/// `solid` or `endsolid` lines met in a piece, with the number of the
/// piece's facets that came before each.
enum Mark {
    Solid(usize),
    Endsolid(usize),
}

struct Piece {
    facets: Vec<Facet>,
    marks: Vec<Mark>,
}

fn parse_parallel(bytes: &[u8]) -> Option<(Vec<Facet>, usize)> {
    use rayon::prelude::*;
    let pieces = rayon::current_num_threads() * 4;
    let mut cuts = vec![0];
    for k in 1..pieces {
        let from = (bytes.len() / pieces * k).max(*cuts.last()?);
        match next_cut(bytes, from) {
            Some(cut) if cut < bytes.len() => cuts.push(cut),
            _ => break,
        }
    }
    cuts.push(bytes.len());
    let last = cuts.len() - 2;
    let parsed: Vec<Option<Piece>> =
        cuts.par_windows(2).enumerate().map(|(k, w)| piece(&bytes[w[0]..w[1]], k == last)).collect();

    // The pieces must join into `solid facet* endsolid`, repeated.
    let mut open = false;
    let mut solids = 0;
    let total = parsed.iter().map(|p| p.as_ref().map_or(0, |p| p.facets.len())).sum();
    let mut facets = Vec::with_capacity(total);
    for p in parsed {
        let p = p?;
        let mut seen = 0;
        for mark in &p.marks {
            let (at, opens) = match *mark {
                Mark::Solid(at) => (at, true),
                Mark::Endsolid(at) => (at, false),
            };
            if at > seen && !open || open == opens {
                return None;
            }
            seen = at;
            open = opens;
            solids += usize::from(opens);
        }
        if p.facets.len() > seen && !open {
            return None;
        }
        facets.extend_from_slice(&p.facets);
    }
    (!open && solids > 0).then_some((facets, solids))
}

/// The start of the token after the first `endfacet` at or after `from`
/// that stands as a word of its own.
fn next_cut(bytes: &[u8], from: usize) -> Option<usize> {
    const WORD: &[u8] = b"endfacet";
    let mut i = from.max(1);
    while i + WORD.len() < bytes.len() {
        let at = i + bytes[i..].iter().position(|&b| b | 0x20 == b'e')?;
        let after = at + WORD.len();
        if after < bytes.len()
            && bytes[at..after].eq_ignore_ascii_case(WORD)
            && is_space(bytes[at - 1])
            && is_space(bytes[after])
            && follows_endloop(&bytes[..at])
        {
            let skip = bytes[after..].iter().position(|&b| !is_space(b)).unwrap_or(bytes.len() - after);
            return Some(after + skip);
        }
        i = at + 1;
    }
    None
}

/// Whether `before` ends with the word `endloop` and whitespace, as every
/// real `endfacet` does (a solid's name could hold the word too).
fn follows_endloop(before: &[u8]) -> bool {
    const WORD: &[u8] = b"endloop";
    let end = before.iter().rposition(|&b| !is_space(b)).map_or(0, |p| p + 1);
    end > WORD.len()
        && before[end - WORD.len()..end].eq_ignore_ascii_case(WORD)
        && is_space(before[end - WORD.len() - 1])
}

/// Parses one piece: facets and `solid`/`endsolid` lines only. A name line
/// must end inside the piece (unless it is the last one): if it ran on, the
/// cut was inside a name and the file goes the sequential way instead.
fn piece(text: &[u8], is_last: bool) -> Option<Piece> {
    let mut out = Piece { facets: Vec::with_capacity(text.len() / 160), marks: Vec::new() };
    let (mut i, _) = ws0(text).ok()?;
    while !i.is_empty() {
        if starts_with_word(i, b"facet") {
            let (rest, f) = facet(i).ok()?;
            out.facets.push(f);
            i = rest;
            continue;
        }
        let (word, mark): (&[u8], Mark) = if starts_with_word(i, b"endsolid") {
            (b"endsolid", Mark::Endsolid(out.facets.len()))
        } else if starts_with_word(i, b"solid") {
            (b"solid", Mark::Solid(out.facets.len()))
        } else {
            return None;
        };
        let (rest, _) = rest_of_line(&i[word.len()..]).ok()?;
        if rest.is_empty() && !is_last {
            return None;
        }
        out.marks.push(mark);
        (i, _) = ws0(rest).ok()?;
    }
    Some(out)
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
    fn parallel_and_sequential_parses_agree() {
        let facets = crate::synth::torus(60, 50);
        let one = crate::synth::to_ascii_stl("a", &facets);
        // Two solids, mixed case, odd spacing, names that contain keywords.
        let text = format!(
            "{one}\r\n{}",
            one.replace("facet normal", "FACET\tNormal").replacen("solid a", "solid endfacet facet b", 1)
        );
        assert!(text.len() >= PARALLEL_MIN);
        let parallel = parse_parallel(text.as_bytes()).expect("well-formed input takes the parallel path");
        let (seq, solids, warnings) = parse_sequential(text.as_bytes()).expect("parses");
        assert_eq!((parallel.0.len(), parallel.1), (seq.len(), solids));
        assert!(parallel.0 == seq && warnings.is_empty());

        // Anything unusual falls back and gives the sequential answer.
        let open = text.trim_end().trim_end_matches("endsolid a").to_string();
        assert!(parse_parallel(open.as_bytes()).is_none());
        assert_eq!(parse(open.as_bytes()).expect("parses").2, vec![Warning::MissingEndsolid]);
        let broken = text.replacen("vertex", "vertex oops", 5000);
        assert!(parse_parallel(broken.as_bytes()).is_none());
        assert_eq!(parse(broken.as_bytes()).unwrap_err(), parse_sequential(broken.as_bytes()).unwrap_err());
    }

    #[test]
    fn line_numbers_count_cr_only_files() {
        let text = ONE.replace('\n', "\r").replace("vertex 0 1 0", "vertex 0 1 x");
        let err = parse(text.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("line 6:"), "{err}");
    }
}
