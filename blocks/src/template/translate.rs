//! Splits user template text into literal text, variables and handlebars expressions.
//!
//! `<<path>>` is ours, `{{...}}` is handlebars. Both end up as pieces here; the caller
//! decides whether the template can be rendered without handlebars at all.

use crate::diag;
use crate::path::{Path, Segment};

use super::{TemplateError, UniquePaths};

/// Helpers a user may call; `roster_*` ones are internal and not listed.
pub(super) const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len",
    "default", "json",
];

/// How deep `{{#block}}`s and `(sub expressions)` may nest. Handlebars compiles and
/// renders them recursively; far deeper nesting would exhaust a thread's stack, and no
/// readable template comes near this.
pub(super) const MAX_NESTING: usize = 32;

/// Block helpers whose body sees a different `this`, so paths inside are relative.
const SCOPING_BLOCKS: &[&str] = &["each", "with"];

/// `~` whitespace control on either side of a mustache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Trim {
    pub left: bool,
    pub right: bool,
}

impl Trim {
    pub fn is_none(self) -> bool {
        !self.left && !self.right
    }
    pub fn open(self) -> &'static str {
        if self.left { "{{~" } else { "{{" }
    }
    pub fn close(self) -> &'static str {
        if self.right { "~}}" } else { "}}" }
    }
}

#[derive(Debug)]
pub(super) enum Piece {
    /// Literal output, already unescaped (`\<<` is `<<` here).
    Text(String),
    /// A path in our grammar: `<<a.b[0]>>` or `{{a.b[0]}}`.
    Var { path: Path, trim: Trim },
    /// A bare handlebars reference we can't express as a Path (`@index`, `../name`).
    HbVar { reference: String, trim: Trim },
    /// Any other handlebars tag, already rewritten to handlebars path syntax.
    Hb(String),
}

pub(super) struct Scan {
    /// Each piece with the byte offset in the source where it starts.
    pub pieces: Vec<(usize, Piece)>,
    /// Paths that resolve against the root scope, in first-use order.
    pub vars: Vec<Path>,
}

struct Open {
    name: String,
    at: usize,
    scoping: bool,
}

struct Scanner<'a> {
    src: &'a str,
    pieces: Vec<(usize, Piece)>,
    text: String,
    text_at: usize,
    blocks: Vec<Open>,
    scoping_depth: usize,
    vars: UniquePaths,
}

pub(super) fn scan(src: &str) -> Result<Scan, TemplateError> {
    let mut s = Scanner {
        src,
        pieces: Vec::new(),
        text: String::new(),
        text_at: 0,
        blocks: Vec::new(),
        scoping_depth: 0,
        vars: UniquePaths::default(),
    };
    let mut i = 0;
    while i < src.len() {
        let rest = &src[i..];
        if rest.starts_with("\\\\<<") || rest.starts_with("\\\\{{") {
            // `\\{{x}}` is a literal backslash, then the tag (as in handlebars).
            s.push_text(i, "\\");
            i += 2;
        } else if rest.starts_with("\\<<") {
            s.push_text(i, "<<");
            i += 3;
        } else if rest.starts_with("\\{{") {
            s.push_text(i, "{{");
            i += 3;
        } else if let Some(after) = rest.strip_prefix("<<") {
            match angle_var(src, i) {
                Some((path, end)) => {
                    s.record(&path);
                    s.push_piece(i, Piece::Var { path, trim: Trim::default() });
                    i = end;
                }
                // `<<` right before a name starts a variable: left open, it is a typo
                // that would otherwise go out as literal text.
                None if after.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
                    let message = match Path::parse_prefix(after) {
                        Ok((path, _)) => format!("`<<{path}` is never closed"),
                        Err(reason) => format!("`<<` starts a variable, but {reason}"),
                    };
                    return Err(
                        TemplateError::at(src, i, message).with_help("add `>>`, or write `\\<<` for a literal `<<`")
                    );
                }
                None => {
                    // Not a variable (`a << b`, `1<<2`, `<<>>`): keep one `<` and look again.
                    s.push_text(i, "<");
                    i += 1;
                }
            }
        } else if rest.starts_with("{{") {
            i = s.mustache(i)?;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            s.text_at = if s.text.is_empty() { i } else { s.text_at };
            s.text.push(c);
            i += c.len_utf8();
        }
    }
    s.flush_text();
    if let Some(open) = s.blocks.last() {
        return Err(TemplateError::at(src, open.at, format!("`{{{{#{}}}}}` is never closed", open.name))
            .with_help(format!("add `{{{{/{}}}}}`", open.name)));
    }
    Ok(Scan { pieces: s.pieces, vars: s.vars.order })
}

/// `<<path>>` at `i`, allowing spaces inside the delimiters; None if it isn't one.
fn angle_var(src: &str, i: usize) -> Option<(Path, usize)> {
    let start = skip_spaces(src, i + 2);
    // `1 << 2 >> 3` is arithmetic, not a variable: spaced form needs a name to start.
    if start > i + 2 && !src[start..].starts_with(|c: char| c.is_alphabetic() || c == '_') {
        return None;
    }
    let (path, used) = Path::parse_prefix(&src[start..]).ok()?;
    let end = skip_spaces(src, start + used);
    src[end..].starts_with(">>").then_some((path, end + 2))
}

fn skip_spaces(src: &str, mut i: usize) -> usize {
    while matches!(src.as_bytes().get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

impl Scanner<'_> {
    fn push_text(&mut self, at: usize, text: &str) {
        if self.text.is_empty() {
            self.text_at = at;
        }
        self.text.push_str(text);
    }

    fn flush_text(&mut self) {
        if !self.text.is_empty() {
            let text = std::mem::take(&mut self.text);
            self.pieces.push((self.text_at, Piece::Text(text)));
        }
    }

    fn push_piece(&mut self, at: usize, piece: Piece) {
        self.flush_text();
        self.pieces.push((at, piece));
    }

    /// Remembers a root-scope path, unless we are inside `{{#each}}`/`{{#with}}`.
    fn record(&mut self, path: &Path) {
        if self.scoping_depth == 0 && path.root() != "this" {
            self.vars.add(path);
        }
    }

    fn err(&self, at: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, at, message)
    }

    /// Handles the `{{` at `i`; returns the offset just after the closing `}}`.
    fn mustache(&mut self, i: usize) -> Result<usize, TemplateError> {
        let src = self.src;
        let rest = &src[i..];
        if rest.starts_with("{{{{") {
            return Err(self
                .err(i, "raw blocks (`{{{{`) are not supported")
                .with_help("write `\\{{` for a literal `{{`"));
        }
        // Comments render nothing, so drop them here.
        if rest.starts_with("{{!--") {
            return match rest.find("--}}") {
                Some(end) => Ok(i + end + 4),
                None => Err(self.err(i, "comment `{{!--` is never closed").with_help("add `--}}`")),
            };
        }
        if rest.starts_with("{{!") {
            return match rest.find("}}") {
                Some(end) => Ok(i + end + 2),
                None => Err(self.err(i, "comment `{{!` is never closed").with_help("add `}}`")),
            };
        }

        let triple = rest.starts_with("{{{");
        let (open_len, close) = if triple { (3, "}}}") } else { (2, "}}") };
        let Some(end) = find_close(src, i + open_len, close) else {
            return Err(self
                .err(i, format!("`{}` is never closed", &rest[..open_len]))
                .with_help(format!("add `{close}`, or write `\\{{{{` for a literal `{{{{`")));
        };
        let after = end + close.len();
        let inner = &src[i + open_len..end];

        let mut trim = Trim::default();
        let mut body = inner;
        if let Some(b) = body.strip_prefix('~') {
            trim.left = true;
            body = b;
        }
        if let Some(b) = body.strip_suffix('~') {
            trim.right = true;
            body = b;
        }
        body = body.trim();
        if !triple && let Some(b) = body.strip_prefix('&') {
            // `{{& x}}` means "don't escape"; we never HTML-escape anyway.
            body = b.trim_start();
        }
        let body_at = offset_in(src, body);
        if body.is_empty() {
            return Err(self.err(i, "empty `{{}}`"));
        }

        let first = body.chars().next().unwrap_or_default();
        match first {
            '#' => {
                let rest = body[1..].trim_start();
                if rest.starts_with('>') {
                    return Err(self.err(i, "partial blocks (`{{#>`) are not supported"));
                }
                if rest.starts_with('*') {
                    return Err(self.err(i, "decorators (`{{#*`) are not supported"));
                }
                let name = rest[..token_end(rest, 0)].to_string();
                if self.blocks.len() >= MAX_NESTING {
                    return Err(self
                        .err(i, format!("blocks nest more than {MAX_NESTING} deep"))
                        .with_help("close some blocks first, or combine conditions with `and`/`or`"));
                }
                let rewritten = self.rewrite(rest, offset_in(src, rest), true)?;
                let scoping = SCOPING_BLOCKS.contains(&name.as_str());
                self.blocks.push(Open { name, at: i, scoping });
                if scoping {
                    self.scoping_depth += 1;
                }
                let text = format!("{}#{}{}", trim.open(), rewritten, trim.close());
                self.push_piece(i, Piece::Hb(text));
            }
            '/' => {
                let name = body[1..].trim();
                match self.blocks.pop() {
                    None => {
                        return Err(self.err(i, format!("`{{{{/{name}}}}}` closes a block that was never opened")));
                    }
                    Some(open) if open.name != name => {
                        let (line, column) = line_col(src, open.at);
                        return Err(self
                            .err(
                                i,
                                format!(
                                    "`{{{{/{name}}}}}` closes `{{{{#{}}}}}` (opened at line {line}, column {column})",
                                    open.name
                                ),
                            )
                            .with_help(format!("close it with `{{{{/{}}}}}` first", open.name)));
                    }
                    Some(open) => {
                        if open.scoping {
                            self.scoping_depth -= 1;
                        }
                    }
                }
                let text = format!("{}/{}{}", trim.open(), name, trim.close());
                self.push_piece(i, Piece::Hb(text));
            }
            '>' => return Err(self.err(i, "partials (`{{>`) are not supported")),
            '*' => return Err(self.err(i, "decorators (`{{*`) are not supported")),
            '!' => {} // `{{~! comment ~}}`
            _ if body == "else" || body == "^" || is_else_chain(body) => {
                if self.blocks.is_empty() {
                    return Err(self.err(i, format!("`{{{{{body}}}}}` outside a block")));
                }
                let rewritten = self.rewrite(body, body_at, true)?;
                let text = format!("{}{}{}", trim.open(), rewritten, trim.close());
                self.push_piece(i, Piece::Hb(text));
            }
            _ if token_end(body, 0) == body.len() && !body.starts_with(['"', '\'']) => {
                // One token: a value to print.
                match Path::parse(body) {
                    Ok(path) => {
                        self.record(&path);
                        self.push_piece(i, Piece::Var { path, trim });
                    }
                    Err(_) => {
                        let reference = body.to_string();
                        self.push_piece(i, Piece::HbVar { reference, trim });
                    }
                }
            }
            _ => {
                let rewritten = self.rewrite(body, body_at, true)?;
                let text = format!("{}{}{}", trim.open(), rewritten, trim.close());
                self.push_piece(i, Piece::Hb(text));
            }
        }
        Ok(after)
    }

    /// Rewrites JS-style paths in a handlebars expression to handlebars syntax and checks
    /// that each helper it calls exists. `at` is where `body` starts in the source.
    fn rewrite(&mut self, body: &str, at: usize, mut expect_name: bool) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(body.len() + 8);
        let mut in_block_params = false;
        let mut depth = 0;
        let mut i = 0;
        while i < body.len() {
            let c = body[i..].chars().next().unwrap_or_default();
            if c.is_whitespace() {
                out.push(c);
                i += c.len_utf8();
                continue;
            }
            match c {
                '(' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(self
                            .err(at + i, format!("sub-expressions nest more than {MAX_NESTING} deep"))
                            .with_help("split the expression, or combine conditions with `and`/`or`"));
                    }
                    out.push(c);
                    expect_name = true;
                    i += 1;
                }
                ')' => {
                    depth = depth.saturating_sub(1);
                    out.push(c);
                    i += 1;
                }
                '=' => {
                    out.push(c);
                    i += 1;
                }
                '|' => {
                    out.push(c);
                    in_block_params = !in_block_params;
                    i += 1;
                }
                '"' | '\'' => {
                    let end = string_end(body, i);
                    out.push_str(&body[i..end]);
                    i = end;
                }
                _ => {
                    let end = token_end(body, i).max(i + c.len_utf8());
                    let token = &body[i..end];
                    let token_at = at + i;
                    if in_block_params {
                        out.push_str(token);
                    } else if expect_name {
                        expect_name = token == "else";
                        if !expect_name && token != "^" {
                            self.check_helper(token, token_at)?;
                        }
                        out.push_str(token);
                    } else if token == "as" || is_literal(token) || body[end..].trim_start().starts_with('=') {
                        out.push_str(token);
                    } else if let Ok(path) = Path::parse(token) {
                        let hb = hb_path(&path).map_err(|m| self.err(token_at, m))?;
                        out.push_str(&hb);
                        self.record(&path);
                    } else {
                        // Native handlebars: `@index`, `../x`, `a.[b c]`.
                        out.push_str(token);
                    }
                    i = end;
                }
            }
        }
        Ok(out)
    }

    fn check_helper(&self, name: &str, at: usize) -> Result<(), TemplateError> {
        if HELPERS.contains(&name) {
            return Ok(());
        }
        Err(self.err(at, format!("unknown helper `{name}`")).with_help(
            match diag::closest(name, HELPERS.iter().copied()) {
                Some(k) => format!("did you mean `{k}`?"),
                None => {
                    format!("helpers are: {}; a key with spaces is written `<<x['first name']>>`", HELPERS.join(", "))
                }
            },
        ))
    }
}

fn is_else_chain(body: &str) -> bool {
    body.strip_prefix("else").is_some_and(|r| r.starts_with(char::is_whitespace))
}

/// Byte offset of `part` inside `whole`; `part` must be a subslice of it.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(super) fn line_col(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..src.floor_char_boundary(at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where `close` ends this mustache, skipping over quoted strings.
fn find_close(src: &str, from: usize, close: &str) -> Option<usize> {
    let bytes = src.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                let end = string_end(src, i);
                if end > src.len() || !src[i + 1..end].ends_with(bytes[i] as char) {
                    // A stray quote (`{{it's}}`): fall back to the first close.
                    return src[from..].find(close).map(|p| from + p);
                }
                i = end;
            }
            // Bytes, not `src[i..]`: `i` may sit inside a multi-byte character.
            _ if bytes[i..].starts_with(close.as_bytes()) => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Offset just after the string literal starting at `start` (which holds the quote).
fn string_end(s: &str, start: usize) -> usize {
    let bytes = s.as_bytes();
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// End of the token at `start`: stops at whitespace or `( ) | = ~`, but keeps a
/// bracketed segment (`['a b']`, `[weird key]`) whole.
fn token_end(s: &str, start: usize) -> usize {
    let bytes = s.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'|' | b'=' => break,
            b'[' => {
                i += 1;
                let mut quote = None;
                while i < bytes.len() {
                    let b = bytes[i];
                    match quote {
                        Some(_) if b == b'\\' => i += 1,
                        Some(q) if b == q => quote = None,
                        Some(_) => {}
                        None if b == b'\'' || b == b'"' => quote = Some(b),
                        None if b == b']' => break,
                        None => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    i.min(s.len())
}

/// Literals handlebars parses itself: `true`, `false`, `null`, numbers.
fn is_literal(token: &str) -> bool {
    if matches!(token, "true" | "false" | "null") {
        return true;
    }
    let digits = token.strip_prefix('-').unwrap_or(token);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.as_bytes()[0].is_ascii_digit()
}

/// Writes a Path in handlebars' own path syntax (`a.[b c].[0]`).
pub(super) fn hb_path(path: &Path) -> Result<String, String> {
    let mut out = String::new();
    for (i, seg) in path.segments().iter().enumerate() {
        match seg {
            Segment::Key(k) if k.contains(']') => {
                return Err(format!(
                    "key `{k}` contains `]`, which handlebars blocks can't address; move it out of the block or rename the field"
                ));
            }
            Segment::Key(k) if i == 0 => {
                if k == "this" {
                    out.push_str("this");
                } else if plain_hb_name(k) {
                    out.push_str(k);
                } else {
                    // `[0]` or `[true]` alone would parse as a literal, so anchor it.
                    out.push_str("this.[");
                    out.push_str(k);
                    out.push(']');
                }
            }
            Segment::Key(k) if plain_hb_name(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Key(k) => {
                out.push_str(".[");
                out.push_str(k);
                out.push(']');
            }
            Segment::Index(n) => {
                out.push_str(".[");
                out.push_str(&n.to_string());
                out.push(']');
            }
        }
    }
    Ok(out)
}

/// A name handlebars reads as a plain identifier, never as a literal or keyword.
fn plain_hb_name(k: &str) -> bool {
    crate::path::is_name(k)
        && !k.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && !matches!(k, "true" | "false" | "null" | "else" | "as" | "this")
}
