//! `end`: finishes the run. Optional `state` marks it failed on purpose.

use serde_json::Value;

use crate::diag::Diagnostics;
use crate::fields::Fields;
use crate::path::Path;

use super::plan::Plan;
use super::{Block, BlockKind, CompileContext, Edge, Registration, Shape};

pub const KIND: Registration = Registration {
    name: "end",
    about: "finish the run",
    edge_keys: &[],
    compile: |value, path, _: &CompileContext, diags| EndBlock::compile(value, path, diags).map(Block::new),
};

#[derive(Debug, Clone)]
pub struct EndBlock {
    /// `true` when the workflow ends here by design as a failure (e.g. "not found in Brex").
    pub fail: bool,
    pub message: Option<String>,
}

impl EndBlock {
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<EndBlock> {
        let f = Fields::open(value, path, "an end block", &["type", "description", "fail", "message"], diags)?;
        let fail = f.opt_bool("fail", diags).unwrap_or(false);
        let message = f.opt_string("message", diags).map(str::to_string);
        Some(EndBlock { fail, message })
    }
}

impl BlockKind for EndBlock {
    fn kind(&self) -> &'static str {
        "end"
    }

    fn edges(&self) -> Vec<Edge> {
        Vec::new()
    }

    fn variables(&self) -> Vec<Path> {
        Vec::new()
    }

    fn label(&self) -> String {
        "end".into()
    }

    fn shape(&self) -> Shape {
        Shape::Terminal
    }

    fn plan(&self, _scope: &Value, _key: &dyn Fn(Option<usize>) -> String) -> Plan<'_> {
        Plan::End { failed: self.fail, message: self.message.clone() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plans_the_end_it_was_written_with() {
        let mut diags = Diagnostics::new();
        let b = EndBlock::compile(&json!({"type": "end", "fail": true, "message": "gone"}), "b", &mut diags).unwrap();
        match b.plan(&json!({}), &|_| String::new()) {
            Plan::End { failed, message } => assert_eq!((failed, message.as_deref()), (true, Some("gone"))),
            _ => panic!("an end"),
        }
    }
}
