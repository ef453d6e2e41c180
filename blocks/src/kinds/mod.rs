//! The block kinds a workflow is built from, registered in one place.
//!
//! Adding a kind means one module here and one line in [`REGISTRY`]: the module compiles
//! its JSON (collecting errors with their paths) into an immutable value and implements
//! [`BlockKind`] for it, which is all the engine knows of a kind (its edges and variables
//! for the graph checks, its label for drawings, and its [`plan`] for each step). None of
//! them touches the store or the network.

pub mod api;
pub mod begin;
pub mod condition;
pub mod end;
pub mod plan;
pub mod update;
pub mod wait;

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use serde_json::Value;

use crate::diag::{ConfigError, Diagnostics, join, suggest};
use crate::path::Path;
use crate::preset::PresetCatalog;

pub use api::ApiBlock;
pub use begin::{Begin, Schedule, Trigger, compile_schedule};
pub use condition::ConditionBlock;
pub use end::EndBlock;
pub use plan::Plan;
pub use update::UpdateBlock;
pub use wait::WaitBlock;

/// One block kind: its `type`, one line on what it does, its edge fields and its compiler.
pub struct Registration {
    pub name: &'static str,
    pub about: &'static str,
    /// The fields that name other blocks, read leniently for graph checks.
    pub edge_keys: &'static [&'static str],
    pub compile: fn(&Value, &str, &CompileContext, &mut Diagnostics) -> Option<Block>,
}

/// Every block `type` a workflow may use.
pub const REGISTRY: &[Registration] = &[api::KIND, condition::KIND, update::KIND, wait::KIND, end::KIND];

/// What a block compile can look up.
pub struct CompileContext<'a> {
    pub presets: &'a PresetCatalog,
    /// Known credential names; `None` skips the check (e.g. validating without a home).
    pub credentials: Option<&'a BTreeSet<String>>,
}

/// How a drawing shows a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Step,
    Decision,
    Terminal,
}

/// What every block kind does for the engine.
pub trait BlockKind: Any + Debug + Send + Sync {
    /// The `type` it is written with.
    fn kind(&self) -> &'static str;
    /// The edges out of the block, in the order a reader expects them.
    fn edges(&self) -> Vec<Edge>;
    /// Every template variable the block reads, for load-time checks.
    fn variables(&self) -> Vec<Path>;
    /// A short label for drawings of the graph.
    fn label(&self) -> String;
    fn shape(&self) -> Shape {
        Shape::Step
    }
    /// What the step does in `scope`. `key` gives the idempotency key of the call for a
    /// `for_each` item (or the block's single call); it is the engine's to derive.
    fn plan(&self, scope: &Value, key: &dyn Fn(Option<usize>) -> String) -> Plan<'_>;
    /// How the kind sends requests, when it does (what a request found pending after a
    /// crash needs to be settled).
    fn exchange(&self) -> Option<&dyn plan::Exchange> {
        None
    }
}

/// A compiled block other than `begin`.
#[derive(Debug, Clone)]
pub struct Block(Arc<dyn BlockKind>);

impl std::ops::Deref for Block {
    type Target = dyn BlockKind;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// A labelled edge out of a block, e.g. (`next`, `deactivate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub label: &'static str,
    pub target: String,
}

impl Block {
    pub fn new(kind: impl BlockKind) -> Block {
        Block(Arc::new(kind))
    }

    /// The block as its kind's own type, for code that needs that kind's details.
    pub fn downcast_ref<T: BlockKind>(&self) -> Option<&T> {
        let any: &dyn Any = self.0.as_ref();
        any.downcast_ref()
    }

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
            Some("begin") => {
                diags.push(
                    ConfigError::new(join(path, "type"), "`begin` is not a block inside `blocks`")
                        .with_help("a workflow has exactly one begin block: the top-level `begin` field"),
                );
                None
            }
            Some(name) => match registration(name) {
                Some(r) => (r.compile)(value, path, cx, diags),
                None => {
                    diags.push(
                        ConfigError::new(join(path, "type"), format!("unknown block type `{name}`"))
                            .with_help(suggest(name, kind_names())),
                    );
                    None
                }
            },
            None => {
                diags.error(join(path, "type"), "block `type` must be a string");
                None
            }
        }
    }
}

fn registration(name: &str) -> Option<&'static Registration> {
    REGISTRY.iter().find(|r| r.name == name)
}

/// The edge fields of every kind, for a block whose kind is unknown.
const ANY_EDGE_KEYS: &[&str] = &["next", "then", "else", "on_error"];

/// The edges a block's JSON names, read leniently (every string under one of its kind's
/// edge fields), so a block that fails to compile still takes part in the graph checks
/// and one `validate` reports its dangling edges, cycles and unreachable blocks too.
pub fn raw_edges(value: &Value) -> Vec<Edge> {
    let kind = value.get("type").and_then(Value::as_str).and_then(registration);
    kind.map_or(ANY_EDGE_KEYS, |r| r.edge_keys)
        .iter()
        .filter_map(|label| {
            let target = value.get(*label)?.as_str()?;
            Some(Edge { label, target: target.to_string() })
        })
        .collect()
}

fn kind_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|r| r.name).collect()
}

/// Builds `Edge`s from optional targets, skipping the absent ones.
pub(crate) fn edges(pairs: &[(&'static str, &Option<String>)]) -> Vec<Edge> {
    pairs.iter().filter_map(|(label, target)| target.as_ref().map(|t| Edge { label, target: t.clone() })).collect()
}
