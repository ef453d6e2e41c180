//! Reading a JSON object field by field while collecting errors with their paths.
//!
//! Workflow files are compiled by hand from `serde_json::Value` rather than derived with
//! serde so that one pass reports every problem, each with its JSON path and a fix.

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, join, suggest};

/// A view over one JSON object at `path`, reporting into `diags`.
pub struct Fields<'a> {
    pub path: String,
    pub map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Checks `value` is an object whose keys are all in `known`; unknown keys are reported
    /// with the closest known name. Returns `None` (after reporting) when it is no object.
    pub fn open(
        value: &'a Value,
        path: &str,
        what: &str,
        known: &[&str],
        diags: &mut Diagnostics,
    ) -> Option<Fields<'a>> {
        let Some(map) = value.as_object() else {
            diags.error(path, format!("{what} must be a JSON object, found {}", kind_of(value)));
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                diags.push(
                    crate::ConfigError::new(join(path, key), format!("unknown field `{key}` in {what}"))
                        .with_help(suggest(key, known.iter().copied())),
                );
            }
        }
        Some(Fields { path: path.to_string(), map })
    }

    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// A required string field.
    pub fn string(&self, key: &str, diags: &mut Diagnostics) -> Option<&'a str> {
        match self.map.get(key) {
            None => {
                diags.error(self.at(key), format!("missing required field `{key}`"));
                None
            }
            Some(v) => self.as_str(key, v, diags),
        }
    }

    /// An optional string field (absent or null is `None`).
    pub fn opt_string(&self, key: &str, diags: &mut Diagnostics) -> Option<&'a str> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.as_str(key, v, diags),
        }
    }

    /// An optional object field.
    pub fn opt_object(&self, key: &str, diags: &mut Diagnostics) -> Option<&'a Map<String, Value>> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                diags.error(self.at(key), format!("`{key}` must be an object, found {}", kind_of(other)));
                None
            }
        }
    }

    pub fn opt_bool(&self, key: &str, diags: &mut Diagnostics) -> Option<bool> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                diags.error(self.at(key), format!("`{key}` must be true or false, found {}", kind_of(other)));
                None
            }
        }
    }

    fn as_str(&self, key: &str, v: &'a Value, diags: &mut Diagnostics) -> Option<&'a str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                diags.error(self.at(key), format!("`{key}` must be a string, found {}", kind_of(other)));
                None
            }
        }
    }
}

/// A short name for a JSON value's type, for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
