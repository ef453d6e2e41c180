//! Importing people from files, and finding a record by its key.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::Record;
use crate::store::{RecordWrite, Store, key_text, normalize_key};

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub read: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// `(row, reason)` for rows that were not written.
    pub refused: Vec<(usize, String)>,
}

/// Reads rows from a JSON array, NDJSON or CSV (with a header row) file.
pub fn read_rows(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    let name = path.display().to_string();
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    parse_rows(&bytes, &name, is_csv)
}

/// Parses the bytes of an import file; `name` is how messages refer to it. A UTF-8 byte
/// order mark is skipped; text that is not UTF-8 is refused with the line it is on.
pub fn parse_rows(bytes: &[u8], name: &str, is_csv: bool) -> Result<Vec<Map<String, Value>>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        Error::Refused(format!(
            "{name}:{line}: not valid UTF-8 (byte {column} of line {line}); save the file as UTF-8 and import it again"
        ))
    })?;
    if is_csv {
        return read_csv(text, name);
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let rows: Vec<Value> = serde_json::from_str(&exact_big_integers(text)).map_err(|e| {
            Error::Refused(format!("{name}: not a valid JSON array (line {}, column {}): {e}", e.line(), e.column()))
        })?;
        return rows
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => Ok(m),
                _ => Err(Error::Refused(format!("{name}: element {} is not a JSON object", i + 1))),
            })
            .collect();
    }
    if trimmed.starts_with('{') {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&exact_big_integers(line)) {
                Ok(Value::Object(m)) => rows.push(m),
                Ok(_) => return Err(Error::Refused(format!("{name}:{}: each line must be a JSON object", i + 1))),
                Err(e) => return Err(Error::Refused(format!("{name}:{}: not valid JSON: {e}", i + 1))),
            }
        }
        return Ok(rows);
    }
    read_csv(text, name)
}

/// JSON text with every integer too large for 64 bits turned into a string of the same
/// digits. serde_json would read such a number as a float and round it (an id such as
/// 123456789012345678901234567890 would be sent as `1.2345678901234568e+29`).
fn exact_big_integers(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let token = &text[start..i];
                let integer = token.trim_start_matches('-');
                let is_integer = !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit());
                if is_integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
                    buf.push_str(&text[copied..start]);
                    buf.push('"');
                    buf.push_str(token);
                    buf.push('"');
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied.min(text.len())..]);
            std::borrow::Cow::Owned(buf)
        }
    }
}

fn read_csv(text: &str, name: &str) -> Result<Vec<Map<String, Value>>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let headers =
        reader.headers().map_err(|e| Error::Refused(format!("{name}: cannot read the CSV header row: {e}")))?.clone();
    let mut columns: Vec<String> = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim().to_string();
        if h.is_empty() {
            return Err(Error::Refused(format!(
                "{name}: column {} of the header row has no name; name every column",
                i + 1
            )));
        }
        if let Some(first) = columns.iter().position(|c| *c == h) {
            return Err(Error::Refused(format!(
                "{name}: the header row names `{h}` twice (columns {} and {}); rename or remove one",
                first + 1,
                i + 1
            )));
        }
        columns.push(h);
    }
    let mut rows = Vec::new();
    let mut records = reader.records().peekable();
    while let Some(row) = records.next() {
        let line = |pos: Option<&csv::Position>| pos.map_or(0, |p| p.line());
        let row = row.map_err(|e| {
            let at = e.position().map(|p| format!(" (line {})", p.line())).unwrap_or_default();
            Error::Refused(format!("{name}: CSV row{at}: {e}"))
        })?;
        // A quote that is never closed swallows every line after it into one value; in a
        // well-formed file every row holds an even number of `"`.
        let start = row.position().map_or(0, |p| p.byte() as usize);
        let end = match records.peek() {
            Some(Ok(next)) => next.position().map_or(text.len(), |p| p.byte() as usize),
            _ => text.len(),
        };
        if text.get(start..end).is_some_and(|raw| raw.matches('"').count() % 2 == 1) {
            return Err(Error::Refused(format!(
                "{name}:{}: a `\"` in this row is never closed, so the rows after it would be read as one value; \
                 close the quote, or double it (`\"\"`) inside a quoted value",
                line(row.position())
            )));
        }
        let mut m = Map::new();
        for (h, v) in columns.iter().zip(row.iter()) {
            // Empty CSV cells are absent values, not empty strings.
            m.insert(h.clone(), if v.is_empty() { Value::Null } else { Value::String(v.to_string()) });
        }
        rows.push(m);
    }
    Ok(rows)
}

/// Writes `rows` into the store, matched by `key` (created or updated), in one batch.
/// Two rows with one key value: the second is refused and named.
pub async fn import(
    store: &Store,
    rows: Vec<Map<String, Value>>,
    key: &str,
    source: &str,
    at: &str,
) -> Result<ImportReport> {
    store.records.index_field(key).await?;
    let mut report = ImportReport { read: rows.len(), ..Default::default() };
    let mut seen = HashSet::new();
    let mut writes = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let n = i + 1;
        let Some(value) = row.get(key).and_then(key_text) else {
            report.refused.push((n, format!("no `{key}` value (the key field)")));
            continue;
        };
        if !seen.insert(value.clone()) {
            report.refused.push((n, format!("`{key}` {value} appears twice in this file; the second is refused")));
            continue;
        }
        let existing = store.records.records_by_field(key, &value).await?;
        let id = match existing.as_slice() {
            [] => None,
            [one] => Some(one.id),
            many => {
                report
                    .refused
                    .push((n, format!("{} records already have `{key}` {value}; fix them first", many.len())));
                continue;
            }
        };
        writes.push(RecordWrite { id, changes: row, source: source.to_string(), at: at.to_string() });
    }
    for w in store.records.write_records(writes).await? {
        match &w.event {
            Some(e) if e.kind == crate::model::EventKind::Created => report.created += 1,
            Some(_) => report.updated += 1,
            None => report.unchanged += 1,
        }
    }
    Ok(report)
}

/// Finds one record by key value: a record id, or the value of `key` (email by default).
pub async fn find(store: &Store, key: &str, value: &str) -> Result<Record> {
    if let Ok(id) = uuid::Uuid::parse_str(value)
        && let Some(r) = store.records.record(id).await?
    {
        return Ok(r);
    }
    let found = store.records.records_by_field(key, value).await?;
    match found.len() {
        0 => Err(Error::NotFound(format!(
            "no record has {key} `{}` (see `roster records list`, or pass --key FIELD to match another field)",
            normalize_key(value)
        ))),
        1 => Ok(found.into_iter().next().expect("one record")),
        n => Err(Error::Refused(format!("{n} records have {key} `{value}`; use the record id instead"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(text: &[u8], csv: bool) -> Result<Vec<Map<String, Value>>> {
        parse_rows(text, "people", csv)
    }

    fn refused(text: &[u8], csv: bool) -> String {
        match rows(text, csv) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("expected a refusal, read {r:?}"),
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_every_format() {
        for (text, csv) in [
            (&b"\xEF\xBB\xBF[{\"email\": \"a@x.test\"}]"[..], false),
            (&b"\xEF\xBB\xBF{\"email\": \"a@x.test\"}\n"[..], false),
            (&b"\xEF\xBB\xBFemail,name\na@x.test,A\n"[..], true),
        ] {
            let read = rows(text, csv).unwrap();
            assert_eq!(read.len(), 1, "{}", String::from_utf8_lossy(text));
            assert_eq!(read[0]["email"], json!("a@x.test"));
        }
    }

    #[test]
    fn an_unclosed_csv_quote_is_refused_with_its_line() {
        let text = b"email,name\na@x.test,Ann\nb@x.test,\"Bob\nc@x.test,Cy\nd@x.test,Di\n";
        let err = refused(text, true);
        assert!(err.contains("people:3:") && err.contains("never closed"), "{err}");
        // Quotes that are closed, doubled, or hold a line break are fine.
        let ok = b"email,name\na@x.test,\"Ann \"\"A\"\" Lee\"\nb@x.test,\"two\nlines\"\nc@x.test,Cy\n";
        let read = rows(ok, true).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0]["name"], json!("Ann \"A\" Lee"));
        assert_eq!(read[1]["name"], json!("two\nlines"));
    }

    #[test]
    fn a_duplicate_or_empty_csv_header_is_refused() {
        let err = refused(b"email,name,email\na,b,c\n", true);
        assert!(err.contains("`email` twice (columns 1 and 3)"), "{err}");
        let err = refused(b"email,,name\na,b,c\n", true);
        assert!(err.contains("column 2 of the header row has no name"), "{err}");
    }

    #[test]
    fn integers_beyond_64_bits_keep_every_digit() {
        let text = br#"[{"email": "a@x.test", "badge": 123456789012345678901234567890, "neg": -98765432109876543210,
                        "big_u64": 18446744073709551615, "pi": 3.25, "exp": 1e3, "note": "12345678901234567890123 in text"}]"#;
        let read = rows(text, false).unwrap();
        assert_eq!(read[0]["badge"], json!("123456789012345678901234567890"));
        assert_eq!(read[0]["neg"], json!("-98765432109876543210"));
        assert_eq!(read[0]["big_u64"], json!(18446744073709551615u64));
        assert_eq!(read[0]["pi"], json!(3.25));
        assert_eq!(read[0]["exp"], json!(1000.0));
        assert_eq!(read[0]["note"], json!("12345678901234567890123 in text"));
        let nd = b"{\"email\": \"a@x.test\", \"badge\": 123456789012345678901234567890}\n";
        assert_eq!(rows(nd, false).unwrap()[0]["badge"], json!("123456789012345678901234567890"));
    }

    #[test]
    fn text_that_is_not_utf8_names_its_line() {
        let err = refused(b"email,name\na@x.test,Ann\nb@x.test,B\xFFb\n", true);
        assert!(err.contains("people:3: not valid UTF-8"), "{err}");
        let err = refused(b"[{\"email\": \"a\"},\n{\"email\": \"\xC3\"}]", false);
        assert!(err.contains("people:2: not valid UTF-8"), "{err}");
    }

    #[test]
    fn escaped_quotes_in_json_strings_do_not_confuse_the_number_scan() {
        let text = br#"[{"email": "a@x.test", "q": "say \"99999999999999999999999\"", "n": 99999999999999999999999}]"#;
        let read = rows(text, false).unwrap();
        assert_eq!(read[0]["q"], json!("say \"99999999999999999999999\""));
        assert_eq!(read[0]["n"], json!("99999999999999999999999"));
    }
}
