//! The block kinds a workflow is built from, registered in one place.
//!
//! Adding a kind means one module here and one line in [`KINDS`] and [`Block::compile`].
//! Each kind compiles from JSON (collecting errors with their paths) into an immutable
//! value the engine executes; none of them touches the store.

pub mod api;
pub mod begin;
pub mod condition;
pub mod end;
pub mod update;

use std::collections::BTreeSet;

use serde_json::Value;

use crate::diag::{ConfigError, Diagnostics, join, suggest};
use crate::preset::PresetCatalog;

pub use api::ApiBlock;
pub use begin::{Begin, Schedule, Trigger, compile_schedule};
pub use condition::ConditionBlock;
pub use end::EndBlock;
pub use update::UpdateBlock;

/// Every block `type` a workflow may use, with one line on what it does.
pub const KINDS: &[(&str, &str)] = &[
    ("api", "call a vendor API (a custom request or a preset) and map its response onto the record"),
    ("condition", "branch to `then` or `else` on rules over the record and earlier steps"),
    ("update", "set record fields from templates"),
    ("end", "finish the run"),
];

/// What a block compile can look up.
pub struct CompileContext<'a> {
    pub presets: &'a PresetCatalog,
    /// Known credential names; `None` skips the check (e.g. validating without a home).
    pub credentials: Option<&'a BTreeSet<String>>,
}

/// A compiled block other than `begin`.
#[derive(Debug, Clone)]
pub enum Block {
    Api(Box<ApiBlock>),
    Condition(ConditionBlock),
    Update(UpdateBlock),
    End(EndBlock),
}

/// A labelled edge out of a block, e.g. (`next`, `deactivate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub label: &'static str,
    pub target: String,
}

impl Block {
    /// Compiles one entry of `blocks`. Reports every problem found into `diags`.
    pub fn compile(value: &Value, path: &str, cx: &CompileContext, diags: &mut Diagnostics) -> Option<Block> {
        let Some(kind) = value.get("type") else {
            diags.push(
                ConfigError::new(join(path, "type"), "missing block `type`")
                    .with_help(format!("set `type` to one of: {}", kind_names().join(", "))),
            );
            return None;
        };
        match kind.as_str() {
            Some("api") => ApiBlock::compile(value, path, cx, diags).map(|b| Block::Api(Box::new(b))),
            Some("condition") => ConditionBlock::compile(value, path, diags).map(Block::Condition),
            Some("update") => UpdateBlock::compile(value, path, diags).map(Block::Update),
            Some("end") => EndBlock::compile(value, path, diags).map(Block::End),
            Some("begin") => {
                diags.push(
                    ConfigError::new(join(path, "type"), "`begin` is not a block inside `blocks`")
                        .with_help("a workflow has exactly one begin block: the top-level `begin` field"),
                );
                None
            }
            Some(other) => {
                diags.push(
                    ConfigError::new(join(path, "type"), format!("unknown block type `{other}`"))
                        .with_help(suggest(other, kind_names())),
                );
                None
            }
            None => {
                diags.error(join(path, "type"), "block `type` must be a string");
                None
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Block::Api(_) => "api",
            Block::Condition(_) => "condition",
            Block::Update(_) => "update",
            Block::End(_) => "end",
        }
    }

    /// The edges out of this block, in the order a reader expects them.
    pub fn edges(&self) -> Vec<Edge> {
        match self {
            Block::Api(b) => b.edges(),
            Block::Condition(b) => b.edges(),
            Block::Update(b) => b.edges(),
            Block::End(_) => Vec::new(),
        }
    }

    /// Every template variable the block reads, for load-time checks.
    pub fn variables(&self) -> Vec<crate::path::Path> {
        match self {
            Block::Api(b) => b.variables(),
            Block::Condition(b) => b.when.variables(),
            Block::Update(b) => b.variables(),
            Block::End(_) => Vec::new(),
        }
    }
}

/// The edge fields of each block kind, and of any block whose kind is unknown.
fn edge_keys(kind: Option<&str>) -> &'static [&'static str] {
    match kind {
        Some("api") => &["next", "on_error"],
        Some("condition") => &["then", "else"],
        Some("update") => &["next"],
        Some("end") => &[],
        _ => &["next", "then", "else", "on_error"],
    }
}

/// The edges a block's JSON names, read leniently (every string under one of its kind's
/// edge fields), so a block that fails to compile still takes part in the graph checks
/// and one `validate` reports its dangling edges, cycles and unreachable blocks too.
pub fn raw_edges(value: &Value) -> Vec<Edge> {
    let kind = value.get("type").and_then(Value::as_str);
    edge_keys(kind)
        .iter()
        .filter_map(|label| {
            let target = value.get(*label)?.as_str()?;
            Some(Edge { label, target: target.to_string() })
        })
        .collect()
}

fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|(k, _)| *k).collect()
}

/// Builds `Edge`s from optional targets, skipping the absent ones.
pub(crate) fn edges(pairs: &[(&'static str, &Option<String>)]) -> Vec<Edge> {
    pairs.iter().filter_map(|(label, target)| target.as_ref().map(|t| Edge { label, target: t.clone() })).collect()
}
