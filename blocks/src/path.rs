//! Paths into a JSON scope: `steps.get_user.response.id`, `user['first name']`, `items[0]`.
//!
//! One grammar is shared by templates (`<<path>>`), rule fields and load-time checks, so a
//! path that validates at load is the same path that is looked up at run time.

use std::fmt;

use serde_json::Value;

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An object key (`a.b`, `a['b c']`). All-digit keys also index arrays.
    Key(String),
    /// An array index (`a[0]`). Also finds an object key spelled as that number.
    Index(usize),
}

/// A parsed path such as `steps.get_user.response.id` or `user['first name']`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Vec<Segment>,
}

impl Path {
    /// Parses the whole of `text` as a path.
    pub fn parse(text: &str) -> Result<Path, String> {
        let (path, used) = Path::parse_prefix(text)?;
        match text[used..].chars().next() {
            None => Ok(path),
            Some(c) => Err(format!("unexpected `{c}` at position {} in path `{text}`", position(text, used))),
        }
    }

    /// Parses the longest path at the start of `text`; returns it and the bytes used.
    ///
    /// Stops quietly at a character that cannot continue a path, so a caller can look
    /// for its own closing delimiter (`>>`, `}}`) after it.
    pub fn parse_prefix(text: &str) -> Result<(Path, usize), String> {
        let bytes = text.as_bytes();
        let mut segments = Vec::new();

        // The root: a name, or a quoted key in brackets.
        let mut pos = if bytes.first() == Some(&b'[') {
            let (seg, next) = parse_bracket(text, 0)?;
            if let Segment::Index(_) = seg {
                return Err(format!("path `{text}` must start with a name, not an index"));
            }
            segments.push(seg);
            next
        } else {
            let end = name_end(text, 0);
            if end == 0 {
                return Err(if text.is_empty() {
                    "empty path".to_string()
                } else {
                    format!("path `{text}` must start with a name")
                });
            }
            segments.push(Segment::Key(text[..end].to_string()));
            end
        };

        loop {
            match bytes.get(pos) {
                Some(b'.') => {
                    let end = name_end(text, pos + 1);
                    if end == pos + 1 {
                        return Err(format!(
                            "expected a name after `.` at position {} in path `{text}`",
                            position(text, pos)
                        ));
                    }
                    segments.push(Segment::Key(text[pos + 1..end].to_string()));
                    pos = end;
                }
                Some(b'[') => {
                    let (seg, next) = parse_bracket(text, pos)?;
                    segments.push(seg);
                    pos = next;
                }
                _ => break,
            }
        }
        Ok((Path { segments }, pos))
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first key, e.g. `steps` in `steps.get_user.id`.
    pub fn root(&self) -> &str {
        match &self.segments[0] {
            Segment::Key(k) => k,
            // parse never produces an index root
            Segment::Index(_) => "",
        }
    }

    /// The value at this path, or None when any step is missing or of the wrong kind.
    pub fn lookup<'a>(&self, scope: &'a Value) -> Option<&'a Value> {
        let mut current = scope;
        for seg in &self.segments {
            current = match (seg, current) {
                (Segment::Key(k), Value::Object(map)) => map.get(k)?,
                (Segment::Key(k), Value::Array(items)) if is_digits(k) => items.get(k.parse::<usize>().ok()?)?,
                (Segment::Index(i), Value::Array(items)) => items.get(*i)?,
                (Segment::Index(i), Value::Object(map)) => map.get(&i.to_string())?,
                _ => return None,
            };
        }
        Some(current)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_name(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{}]", quote_key(k))?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// True for a key that can be written bare (`first-name`, `id`, `0`, `prénom`, `名前`).
pub fn is_name(key: &str) -> bool {
    !key.is_empty() && key.chars().all(is_name_char)
}

/// `'key'` with `'` and `\` escaped, as written inside brackets.
pub fn quote_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    out.push('\'');
    for c in key.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// ASCII letters, digits, `_` and `-`, and every non-ASCII character but spaces and
/// controls, so any field name in any script (accents, combining marks, CJK, emoji) can
/// be written bare; ASCII punctuation stays free to delimit (`.`, `[`, `>>`, `}}`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The 1-based character position of byte offset `at`, as messages show it.
fn position(text: &str, at: usize) -> usize {
    text[..text.floor_char_boundary(at)].chars().count() + 1
}

/// Byte offset where the run of name characters starting at `start` ends.
fn name_end(text: &str, start: usize) -> usize {
    text[start..].char_indices().find(|&(_, c)| !is_name_char(c)).map_or(text.len(), |(i, _)| start + i)
}

/// Parses `[0]`, `['key']` or `["key"]` at `start` (which holds `[`).
fn parse_bracket(text: &str, start: usize) -> Result<(Segment, usize), String> {
    let rest = &text[start + 1..];
    let mut chars = rest.char_indices();
    match chars.next() {
        Some((_, q @ ('\'' | '"'))) => {
            let mut key = String::new();
            let mut escaped = false;
            for (i, c) in chars {
                if escaped {
                    key.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    let after = start + 1 + i + 1;
                    if text.as_bytes().get(after) != Some(&b']') {
                        return Err(format!(
                            "expected `]` after the quoted key at position {} in path `{text}`",
                            position(text, after)
                        ));
                    }
                    return Ok((Segment::Key(key), after + 1));
                } else {
                    key.push(c);
                }
            }
            Err(format!("unclosed quote in path `{text}`"))
        }
        Some((_, c)) if c.is_ascii_digit() => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let after = start + 1 + digits;
            if text.as_bytes().get(after) != Some(&b']') {
                return Err(format!(
                    "expected `]` after the index at position {} in path `{text}`",
                    position(text, after)
                ));
            }
            let n = rest[..digits]
                .parse::<usize>()
                .map_err(|_| format!("index `{}` is too large in path `{text}`", &rest[..digits]))?;
            Ok((Segment::Index(n), after + 1))
        }
        _ => Err(format!(
            "expected a number or a quoted key after `[` at position {} in path `{text}` (write `a[0]` or `a['key']`)",
            position(text, start)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(p: &Path) -> Vec<String> {
        p.segments()
            .iter()
            .map(|s| match s {
                Segment::Key(k) => format!("k:{k}"),
                Segment::Index(i) => format!("i:{i}"),
            })
            .collect()
    }

    #[test]
    fn parses_every_spelling() {
        let p = Path::parse("steps.get_user.response.id").unwrap();
        assert_eq!(keys(&p), ["k:steps", "k:get_user", "k:response", "k:id"]);
        assert_eq!(p.root(), "steps");

        assert_eq!(keys(&Path::parse("a['b c']").unwrap()), ["k:a", "k:b c"]);
        assert_eq!(keys(&Path::parse("a[\"b\"]").unwrap()), ["k:a", "k:b"]);
        assert_eq!(keys(&Path::parse("a[0]").unwrap()), ["k:a", "i:0"]);
        assert_eq!(keys(&Path::parse("a.0").unwrap()), ["k:a", "k:0"]);
        assert_eq!(keys(&Path::parse("user.first-name").unwrap()), ["k:user", "k:first-name"]);
        assert_eq!(keys(&Path::parse("a[1]['x'].y").unwrap()), ["k:a", "i:1", "k:x", "k:y"]);
        assert_eq!(keys(&Path::parse("['odd key'].x").unwrap()), ["k:odd key", "k:x"]);
        assert_eq!(keys(&Path::parse(r"a['it\'s']").unwrap()), ["k:a", "k:it's"]);
        assert_eq!(keys(&Path::parse("ümlaut.straße").unwrap()), ["k:ümlaut", "k:straße"]);
    }

    #[test]
    fn rejects_bad_paths_with_a_reason() {
        for (text, wanted) in [
            ("", "empty path"),
            ("a.", "expected a name after `.`"),
            ("a..b", "expected a name after `.`"),
            ("a[", "expected a number or a quoted key"),
            ("a[x]", "expected a number or a quoted key"),
            ("a[0", "expected `]`"),
            ("a['x'", "expected `]`"),
            ("a['x", "unclosed quote"),
            ("[0].a", "must start with a name"),
            (".a", "must start with a name"),
            ("a b", "unexpected ` `"),
            ("a}", "unexpected `}`"),
        ] {
            let err = Path::parse(text).unwrap_err();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn prefix_stops_before_delimiters() {
        let (p, used) = Path::parse_prefix("a.b[0]>> rest").unwrap();
        assert_eq!(p.to_string(), "a.b[0]");
        assert_eq!(used, 6);
        assert!(Path::parse_prefix("a.>>").is_err());
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for (text, shown) in [
            ("a.b.c", "a.b.c"),
            ("a[\"b\"]", "a.b"),
            ("a['b c'][0]", "a['b c'][0]"),
            ("a.0", "a.0"),
            ("first-name", "first-name"),
            (r"a['it\'s']", r"a['it\'s']"),
            ("['x y'].z", "['x y'].z"),
        ] {
            let p = Path::parse(text).unwrap();
            assert_eq!(p.to_string(), shown);
            assert_eq!(Path::parse(shown).unwrap(), p);
        }
    }

    #[test]
    fn looks_up_objects_and_arrays() {
        let scope = json!({
            "steps": {"get_user": {"response": {"id": 7, "items": [{"id": "a"}, {"id": "b"}]}}},
            "weird key": {"0": "zero-key"},
            "list": ["x", "y"],
            "nothing": null
        });
        let get = |t: &str| Path::parse(t).unwrap().lookup(&scope).cloned();
        assert_eq!(get("steps.get_user.response.id"), Some(json!(7)));
        assert_eq!(get("steps.get_user.response.items[1].id"), Some(json!("b")));
        assert_eq!(get("steps.get_user.response.items.1.id"), Some(json!("b")));
        assert_eq!(get("['weird key'][0]"), Some(json!("zero-key")));
        assert_eq!(get("['weird key'].0"), Some(json!("zero-key")));
        assert_eq!(get("list[5]"), None);
        assert_eq!(get("list.name"), None);
        assert_eq!(get("steps.nope"), None);
        assert_eq!(get("nothing"), Some(Value::Null));
        assert_eq!(get("nothing.deeper"), None);
        assert_eq!(get("steps.get_user.response.id.x"), None);
    }
}
