//! `update`: sets record fields from templates.

use serde_json::{Map, Value};

use crate::diag::Diagnostics;
use crate::fields::Fields;
use crate::path::Path;
use crate::template::{JsonTemplate, RenderError};

use super::plan::{Plan, Refusal, Wording};
use super::{Block, BlockKind, CompileContext, Edge, Registration};

pub const KIND: Registration = Registration {
    name: "update",
    about: "set record fields from templates",
    edge_keys: &["next"],
    compile: |value, path, _: &CompileContext, diags| UpdateBlock::compile(value, path, diags).map(Block::new),
};

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
}

impl BlockKind for UpdateBlock {
    fn kind(&self) -> &'static str {
        "update"
    }

    fn edges(&self) -> Vec<Edge> {
        super::edges(&[("next", &self.next)])
    }

    fn variables(&self) -> Vec<Path> {
        self.set.iter().flat_map(|(_, t)| t.variables()).collect()
    }

    fn label(&self) -> String {
        format!("set {}", self.set.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "))
    }

    fn plan(&self, scope: &Value, _key: &dyn Fn(Option<usize>) -> String) -> Plan<'_> {
        match self.render(scope) {
            Ok(changes) => Plan::Write { changes, next: self.next.clone() },
            Err(e) => Plan::Refuse(Refusal {
                message: e.to_string(),
                variable: e.variable().map(str::to_string),
                in_run: Wording::InContext,
                in_dry_run: Wording::InContext,
                on_error: None,
                dry_next: self.next.clone(),
            }),
        }
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

#[cfg(test)]
mod plan_tests {
    use serde_json::json;

    use super::*;

    fn block() -> UpdateBlock {
        let mut diags = Diagnostics::new();
        let value = json!({"type": "update", "set": {"status": "left", "by": "<<manager>>"}, "next": "done"});
        UpdateBlock::compile(&value, "b", &mut diags).expect("compiles")
    }

    #[test]
    fn plans_the_fields_to_write_and_the_next_block() {
        match block().plan(&json!({"manager": "kim"}), &|_| String::new()) {
            Plan::Write { changes, next } => {
                assert_eq!(Value::Object(changes), json!({"status": "left", "by": "kim"}));
                assert_eq!(next.as_deref(), Some("done"));
            }
            _ => panic!("a write"),
        }
    }

    #[test]
    fn a_missing_variable_is_refused_and_a_dry_run_goes_on() {
        let Plan::Refuse(r) = block().plan(&json!({}), &|_| String::new()) else { panic!("a refusal") };
        assert_eq!(r.variable.as_deref(), Some("manager"));
        assert_eq!(r.dry_next.as_deref(), Some("done"));
        assert!(r.on_error.is_none());
    }
}
