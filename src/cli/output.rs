//! Printing: aligned plain-text tables for people, JSON for machines.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Set once a write to stdout (or stderr) failed; later output to it is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when stdout failed for a reason other than a closed pipe (a full disk), so the
/// command exits non-zero instead of claiming output it never wrote.
static WRITE_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout (or stderr): what `print!`/`println!` expand to in the CLI. Every
/// known secret is scrubbed out of the text first. A reader that went away (`| head -1`)
/// is no error: the command finishes its work quietly, as other Unix tools do, instead of
/// panicking halfway through.
pub fn write(to_stderr: bool, args: fmt::Arguments<'_>, newline: bool) {
    let closed = if to_stderr { &STDERR_CLOSED } else { &STDOUT_CLOSED };
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let raw = fmt::format(args);
    let text = roster_blocks::redact::process().scrub(&raw);
    let result = if to_stderr {
        let mut err = io::stderr().lock();
        err.write_all(text.as_bytes()).and_then(|()| if newline { err.write_all(b"\n") } else { Ok(()) })
    } else {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) })
    };
    if let Err(e) = result {
        closed.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe && !to_stderr {
            WRITE_FAILED.store(true, Ordering::Relaxed);
            write(true, format_args!("error: cannot write to stdout: {e}"), true);
        }
    }
}

/// True when stdout failed for a reason other than its reader closing it.
pub fn write_failed() -> bool {
    // Output still in the buffer fails here, if it fails at all.
    if !STDOUT_CLOSED.load(Ordering::Relaxed)
        && let Err(e) = io::stdout().flush()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            WRITE_FAILED.store(true, Ordering::Relaxed);
            write(true, format_args!("error: cannot write to stdout: {e}"), true);
        }
    }
    WRITE_FAILED.load(Ordering::Relaxed)
}

/// Prints rows as an aligned table with a header.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints `value` as pretty JSON, its strings scrubbed of secrets as values (so a secret
/// holding `"` or `\` is found however JSON escapes it).
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(value)?;
    roster_blocks::redact::process().scrub_value(&mut value);
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// A JSON value as a short cell: strings bare, others as JSON, cut to `max` characters.
pub fn cell(value: Option<&serde_json::Value>, max: usize) -> String {
    let text = match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.chars().count() > max { format!("{}…", text.chars().take(max - 1).collect::<String>()) } else { text }
}
