//! `end`: finishes the run. Optional `state` marks it failed on purpose.

use serde_json::Value;

use crate::diag::Diagnostics;
use crate::fields::Fields;

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
