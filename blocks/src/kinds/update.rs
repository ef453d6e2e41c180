//! `update`: sets record fields from templates.

use serde_json::{Map, Value};

use crate::diag::Diagnostics;
use crate::fields::Fields;
use crate::path::Path;
use crate::template::{JsonTemplate, RenderError};

use super::Edge;

#[derive(Debug, Clone)]
pub struct UpdateBlock {
    /// Field name and the template its new value comes from, in file order.
    pub set: Vec<(String, JsonTemplate)>,
    pub next: Option<String>,
}

impl UpdateBlock {
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<UpdateBlock> {
        let f = Fields::open(value, path, "an update block", &["type", "description", "set", "next"], diags)?;
        let set = match f.opt_object("set", diags) {
            Some(map) => compile_mapping(map, &f.at("set"), diags),
            None => {
                diags.error(f.at("set"), "missing required field `set` (the record fields to write)");
                Vec::new()
            }
        };
        let next = f.opt_string("next", diags).map(str::to_string);
        Some(UpdateBlock { set, next })
    }

    /// The record changes this block makes against `scope`.
    pub fn render(&self, scope: &Value) -> Result<Map<String, Value>, RenderError> {
        render_mapping(&self.set, scope)
    }

    pub fn edges(&self) -> Vec<Edge> {
        super::edges(&[("next", &self.next)])
    }

    pub fn variables(&self) -> Vec<Path> {
        self.set.iter().flat_map(|(_, t)| t.variables()).collect()
    }
}

/// Compiles a `{field: template}` mapping (update `set`, API `response`). Values are
/// templates or JSON literals (whose string leaves are templates too).
pub fn compile_mapping(map: &Map<String, Value>, path: &str, diags: &mut Diagnostics) -> Vec<(String, JsonTemplate)> {
    let mut out = Vec::new();
    for (field, value) in map {
        let at = crate::diag::join(path, field);
        if field.trim().is_empty() {
            diags.error(&at, "record field names must not be empty");
            continue;
        }
        if let Some(t) = JsonTemplate::compile(value, &at, diags) {
            out.push((field.clone(), t));
        }
    }
    out
}

/// Renders a compiled mapping against `scope`.
pub fn render_mapping(set: &[(String, JsonTemplate)], scope: &Value) -> Result<Map<String, Value>, RenderError> {
    let mut changes = Map::new();
    for (field, template) in set {
        changes.insert(field.clone(), template.render(scope)?);
    }
    Ok(changes)
}
