//! What each fuzz target does with one input. Shared by the cargo-fuzz binaries and by
//! `tests/fuzz_smoke.rs`; each function may return errors but must never panic.

use roster_blocks::kinds::CompileContext;
use roster_blocks::template::{Escape, Template};
use serde_json::{Value, json};

/// A scope like the one runs see, with Unicode names and every JSON type.
pub fn sample_scope() -> Value {
    json!({
        "email": "ann@acme.test", "first_name": "Ann", "prénom": "Anne", "名前": "アン", "n": 42,
        "big": 18446744073709551615u64, "ok": true, "none": null, "list": [1, "two", {"x": 3}],
        "user": {"id": "u_1", "first name": "Ann", "tags": ["a", "b"]},
        "today": "2027-03-01", "now": "2027-03-01T09:00:00Z",
        "steps": {"invite": {"status": 201, "response": {"id": "u_9", "items": [{"id": "c1"}]}}},
        "item": {"id": "../x", "status": "ACTIVE"}, "item_index": 0
    })
}

/// Loads arbitrary bytes as a workflow file with the built-in presets.
pub fn workflow_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    if let Ok(wf) = roster_engine::workflow::Workflow::compile(text, "fuzz.json", &cx) {
        // A workflow that loads can be drawn.
        let _ = wf.to_dot();
        let _ = wf.to_mermaid();
    }
}

/// Compiles arbitrary text as a template and renders it every way the engine does.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(t) = Template::compile(text) else { return };
    let scope = sample_scope();
    let _ = t.variables();
    let _ = t.render_value(&scope);
    let _ = t.render_string(&scope, Escape::None);
    let _ = t.render_string(&scope, Escape::UrlComponent);
}

/// Parses arbitrary bytes as an import file, both as CSV and as JSON/NDJSON.
pub fn import(data: &[u8]) {
    let _ = roster_engine::records::parse_rows(data, "fuzz", true);
    let _ = roster_engine::records::parse_rows(data, "fuzz", false);
}
