//! `condition`: evaluates rules and follows `then` or `else`.

use serde_json::Value;

use crate::diag::Diagnostics;
use crate::fields::Fields;
use crate::rules::{Condition, RuleError};

use super::plan::{Plan, Refusal, Wording};
use super::{Block, BlockKind, CompileContext, Edge, Registration, Shape};

pub const KIND: Registration = Registration {
    name: "condition",
    about: "branch to `then` or `else` on rules over the record and earlier steps",
    edge_keys: &["then", "else"],
    compile: |value, path, _: &CompileContext, diags| ConditionBlock::compile(value, path, diags).map(Block::new),
};

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
}

impl BlockKind for ConditionBlock {
    fn kind(&self) -> &'static str {
        "condition"
    }

    fn edges(&self) -> Vec<Edge> {
        super::edges(&[("then", &self.then), ("else", &self.otherwise)])
    }

    fn variables(&self) -> Vec<crate::path::Path> {
        self.when.variables()
    }

    fn label(&self) -> String {
        self.when.to_string()
    }

    fn shape(&self) -> Shape {
        Shape::Decision
    }

    fn plan(&self, scope: &Value, _key: &dyn Fn(Option<usize>) -> String) -> Plan<'_> {
        match self.decide(scope) {
            Ok((branch, target)) => Plan::Branch { branch, target: target.map(str::to_string) },
            Err(e) => Plan::Refuse(Refusal {
                message: e.to_string(),
                variable: e.variable().map(str::to_string),
                in_run: Wording::InContext,
                in_dry_run: Wording::Prefixed("cannot decide: "),
                on_error: None,
                dry_next: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn block() -> ConditionBlock {
        let mut diags = Diagnostics::new();
        let value =
            json!({"type": "condition", "when": {"field": "dept", "op": "equals", "value": "<<team>>"}, "then": "yes"});
        ConditionBlock::compile(&value, "b", &mut diags).expect("compiles")
    }

    #[test]
    fn plans_the_branch_the_rules_take() {
        let b = block();
        let key = |_: Option<usize>| String::new();
        match b.plan(&json!({"dept": "ops", "team": "ops"}), &key) {
            Plan::Branch { branch, target } => assert_eq!((branch, target.as_deref()), ("then", Some("yes"))),
            _ => panic!("a branch"),
        }
        match b.plan(&json!({"dept": "sales", "team": "ops"}), &key) {
            Plan::Branch { branch, target } => assert_eq!((branch, target), ("else", None)),
            _ => panic!("a branch"),
        }
    }

    #[test]
    fn a_rule_that_cannot_be_evaluated_is_refused_with_its_variable() {
        let b = block();
        let Plan::Refuse(r) = b.plan(&json!({}), &|_| String::new()) else { panic!("a refusal") };
        assert_eq!(r.variable.as_deref(), Some("team"), "{r:?}");
        assert_eq!(r.in_dry_run, Wording::Prefixed("cannot decide: "));
        assert!(r.dry_next.is_none(), "a dry run stops at a condition it cannot decide");
    }
}
