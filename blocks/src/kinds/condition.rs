//! `condition`: evaluates rules and follows `then` or `else`.

use serde_json::Value;

use crate::diag::Diagnostics;
use crate::fields::Fields;
use crate::rules::{Condition, RuleError};

use super::Edge;

#[derive(Debug, Clone)]
pub struct ConditionBlock {
    pub when: Condition,
    pub then: Option<String>,
    pub otherwise: Option<String>,
}

impl ConditionBlock {
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<ConditionBlock> {
        let f =
            Fields::open(value, path, "a condition block", &["type", "description", "when", "then", "else"], diags)?;
        let when = match f.get("when") {
            Some(v) => Condition::compile(v, &f.at("when"), diags),
            None => {
                diags.error(f.at("when"), "missing required field `when` (the rules to test)");
                None
            }
        };
        let then = f.opt_string("then", diags).map(str::to_string);
        let otherwise = f.opt_string("else", diags).map(str::to_string);
        if then.is_none() && otherwise.is_none() {
            diags.push(
                crate::ConfigError::new(f.at("then"), "a condition needs `then` or `else`")
                    .with_help("name the block to go to when the rules match (`then`) and when they do not (`else`)"),
            );
        }
        Some(ConditionBlock { when: when?, then, otherwise })
    }

    /// Which branch the scope takes: `("then", target)` or `("else", target)`; the target is
    /// `None` when that branch is not given, which ends the run.
    pub fn decide(&self, scope: &Value) -> Result<(&'static str, Option<&str>), RuleError> {
        if self.when.evaluate(scope)? {
            Ok(("then", self.then.as_deref()))
        } else {
            Ok(("else", self.otherwise.as_deref()))
        }
    }

    pub fn edges(&self) -> Vec<Edge> {
        super::edges(&[("then", &self.then), ("else", &self.otherwise)])
    }
}
