//! Importing people from files, and finding a record by its key.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::Record;
use crate::store::{RecordWrite, Store, key_text, normalize_key};

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize)]
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
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    let name = path.display().to_string();
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        return read_csv(&text, &name);
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let rows: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
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
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(m)) => rows.push(m),
                Ok(_) => return Err(Error::Refused(format!("{name}:{}: each line must be a JSON object", i + 1))),
                Err(e) => return Err(Error::Refused(format!("{name}:{}: not valid JSON: {e}", i + 1))),
            }
        }
        return Ok(rows);
    }
    read_csv(&text, &name)
}

fn read_csv(text: &str, name: &str) -> Result<Vec<Map<String, Value>>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let headers =
        reader.headers().map_err(|e| Error::Refused(format!("{name}: cannot read the CSV header row: {e}")))?.clone();
    let mut rows = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| Error::Refused(format!("{name}: CSV row {}: {e}", i + 2)))?;
        let mut m = Map::new();
        for (h, v) in headers.iter().zip(row.iter()) {
            // Empty CSV cells are absent values, not empty strings.
            m.insert(h.trim().to_string(), if v.is_empty() { Value::Null } else { Value::String(v.to_string()) });
        }
        rows.push(m);
    }
    Ok(rows)
}

/// Writes `rows` into the store, matched by `key` (created or updated), in one batch.
/// Two rows with one key value: the second is refused and named.
pub fn import(
    store: &dyn Store,
    rows: Vec<Map<String, Value>>,
    key: &str,
    source: &str,
    at: &str,
) -> Result<ImportReport> {
    store.ensure_index(key)?;
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
        let existing = store.records_by_field(key, &value)?;
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
    for w in store.write_records(writes)? {
        match &w.event {
            Some(e) if e.kind == "created" => report.created += 1,
            Some(_) => report.updated += 1,
            None => report.unchanged += 1,
        }
    }
    Ok(report)
}

/// Finds one record by key value: a record id, or the value of `key` (email by default).
pub fn find(store: &dyn Store, key: &str, value: &str) -> Result<Record> {
    if let Ok(id) = uuid::Uuid::parse_str(value)
        && let Some(r) = store.record(id)?
    {
        return Ok(r);
    }
    let found = store.records_by_field(key, value)?;
    match found.len() {
        0 => Err(Error::NotFound(format!(
            "no record has {key} `{}` (see `roster records list`, or pass --key FIELD to match another field)",
            normalize_key(value)
        ))),
        1 => Ok(found.into_iter().next().expect("one record")),
        n => Err(Error::Refused(format!("{n} records have {key} `{value}`; use the record id instead"))),
    }
}
