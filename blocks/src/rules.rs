//! The rule language: Begin rules, Condition blocks and sync filters.
//!
//! ```json
//! {"all": [
//!   {"field": "brex_status", "op": "equals", "value": "ACTIVE"},
//!   {"not": {"field": "end_date", "op": "before", "value": "<<today>>"}}
//! ]}
//! ```
//!
//! Comparisons are lenient the way an HR user expects (`"5"` equals `5`, a missing field
//! is empty); only a value template that cannot render is an error.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use regex::Regex;
use serde_json::{Map, Value};

use crate::diag::{self, ConfigError, Diagnostics};
use crate::path::Path;
use crate::template::{JsonTemplate, RenderError, Template};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Equals,
    NotEquals,
    Contains,
    StartsWith,
    EndsWith,
    In,
    IsEmpty,
    IsNotEmpty,
    GreaterThan,
    LessThan,
    Before,
    After,
    OnOrBefore,
    OnOrAfter,
    Matches,
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::Equals,
        Op::NotEquals,
        Op::Contains,
        Op::StartsWith,
        Op::EndsWith,
        Op::In,
        Op::IsEmpty,
        Op::IsNotEmpty,
        Op::GreaterThan,
        Op::LessThan,
        Op::Before,
        Op::After,
        Op::OnOrBefore,
        Op::OnOrAfter,
        Op::Matches,
    ];

    /// The name used in workflow files.
    pub fn name(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEquals => "not_equals",
            Op::Contains => "contains",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::In => "in",
            Op::IsEmpty => "is_empty",
            Op::IsNotEmpty => "is_not_empty",
            Op::GreaterThan => "greater_than",
            Op::LessThan => "less_than",
            Op::Before => "before",
            Op::After => "after",
            Op::OnOrBefore => "on_or_before",
            Op::OnOrAfter => "on_or_after",
            Op::Matches => "matches",
        }
    }

    /// Every op name, in documentation order.
    pub fn names() -> impl Iterator<Item = &'static str> + Clone {
        Op::ALL.iter().map(|op| op.name())
    }

    /// Looks an op up by name; case, spaces and dashes are forgiven (`Not Equals`).
    pub fn from_name(name: &str) -> Option<Op> {
        let normal: String =
            name.trim().chars().map(|c| if c == ' ' || c == '-' { '_' } else { c.to_ascii_lowercase() }).collect();
        Op::ALL.into_iter().find(|op| op.name() == normal)
    }

    /// Whether the op compares against a `value`.
    pub fn takes_value(self) -> bool {
        !matches!(self, Op::IsEmpty | Op::IsNotEmpty)
    }

    fn is_date(self) -> bool {
        matches!(self, Op::Before | Op::After | Op::OnOrBefore | Op::OnOrAfter)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One comparison: `field op value`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub field: Path,
    pub op: Op,
    /// The value to compare with; string leaves are templates rendered at evaluation.
    pub value: Option<JsonTemplate>,
    /// The rule as written, for display.
    pub source: Value,
    /// Compiled once at load when the `matches` pattern has no variables.
    regex: Option<Regex>,
}

/// A tree of rules.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// Boxed: a rule is large and blocks embed conditions by value.
    Rule(Box<Rule>),
}

/// A rule that could not be evaluated (not one that was merely false).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule `{rule}`: {error}")]
    Render { rule: String, error: RenderError },
    #[error("rule `{rule}`: {message}")]
    Invalid { rule: String, message: String },
}

impl RuleError {
    /// The variable that was missing or null, when that is the problem.
    pub fn variable(&self) -> Option<&str> {
        match self {
            RuleError::Render { error, .. } => error.variable(),
            RuleError::Invalid { .. } => None,
        }
    }
}

const RULE_KEYS: &[&str] = &["field", "op", "value"];
const ALL_KEYS: &[&str] = &["field", "op", "value", "all", "any", "not"];

impl Condition {
    /// Compiles rules from JSON, pushing every problem (with its JSON path under `path`)
    /// into `diags`. Returns None if there was any.
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<Condition> {
        let before = diags.len();
        let condition = compile_condition(value, path, diags);
        if diags.len() > before { None } else { condition }
    }

    pub fn evaluate(&self, scope: &Value) -> Result<bool, RuleError> {
        match self {
            Condition::All(items) => {
                for c in items {
                    if !c.evaluate(scope)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Any(items) => {
                for c in items {
                    if c.evaluate(scope)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::Not(inner) => Ok(!inner.evaluate(scope)?),
            Condition::Rule(rule) => Ok(rule.check(scope)?.passed),
        }
    }

    /// None when the condition holds; otherwise which rule failed and why, e.g.
    /// `end_date before 2027-03-01 (end_date is "2027-04-01")`.
    pub fn first_failure(&self, scope: &Value) -> Result<Option<String>, RuleError> {
        match self {
            Condition::All(items) => {
                for c in items {
                    if let Some(why) = c.first_failure(scope)? {
                        return Ok(Some(why));
                    }
                }
                Ok(None)
            }
            Condition::Any(items) => {
                let mut failures = Vec::with_capacity(items.len());
                for c in items {
                    match c.first_failure(scope)? {
                        None => return Ok(None),
                        Some(why) => failures.push(why),
                    }
                }
                Ok(Some(match failures.len() {
                    0 => "no rule in `any` (an empty `any` never holds)".to_string(),
                    1 => failures.remove(0),
                    _ => format!("none of these held: {}", failures.join("; ")),
                }))
            }
            Condition::Not(inner) => {
                if inner.evaluate(scope)? {
                    Ok(Some(format!("{self} ({inner} is true)")))
                } else {
                    Ok(None)
                }
            }
            Condition::Rule(rule) => {
                let verdict = rule.check(scope)?;
                Ok((!verdict.passed).then(|| rule.explain(&verdict)))
            }
        }
    }

    /// Every path read: rule fields and variables in rule values.
    pub fn variables(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_variables(&mut out);
        out
    }

    fn collect_variables(&self, out: &mut Vec<Path>) {
        let mut add = |p: Path| {
            if !out.contains(&p) {
                out.push(p);
            }
        };
        match self {
            Condition::All(items) | Condition::Any(items) => {
                for c in items {
                    c.collect_variables(out);
                }
            }
            Condition::Not(inner) => inner.collect_variables(out),
            Condition::Rule(rule) => {
                add(rule.field.clone());
                for v in rule.value.iter().flat_map(JsonTemplate::variables) {
                    add(v);
                }
            }
        }
    }

    fn fmt_nested(&self, f: &mut fmt::Formatter<'_>, nested: bool) -> fmt::Result {
        match self {
            Condition::Rule(rule) => write!(f, "{rule}"),
            Condition::All(items) if items.is_empty() => f.write_str("always"),
            Condition::Any(items) if items.is_empty() => f.write_str("never"),
            Condition::All(items) | Condition::Any(items) if items.len() == 1 => items[0].fmt_nested(f, nested),
            Condition::All(items) | Condition::Any(items) => {
                let joiner = if matches!(self, Condition::All(_)) { " and " } else { " or " };
                if nested {
                    f.write_str("(")?;
                }
                for (i, c) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(joiner)?;
                    }
                    c.fmt_nested(f, true)?;
                }
                if nested {
                    f.write_str(")")?;
                }
                Ok(())
            }
            Condition::Not(inner) => {
                f.write_str("not ")?;
                inner.fmt_nested(f, true)
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_nested(f, false)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.op)?;
        if let Some(v) = self.source.get("value") {
            write!(f, " {}", show_value(self.op, v))?;
        }
        Ok(())
    }
}

// ---- compiling -------------------------------------------------------------------

fn compile_condition(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<Condition> {
    match value {
        Value::Array(items) => compile_list(items, path, diags).map(Condition::All),
        Value::Object(map) => {
            let groups: Vec<&str> = ["all", "any", "not"].into_iter().filter(|k| map.contains_key(*k)).collect();
            match groups.first() {
                Some(&group) => compile_group(group, map, path, diags),
                None => compile_rule(map, path, diags).map(|r| Condition::Rule(Box::new(r))),
            }
        }
        other => {
            diags.push(
                ConfigError::new(path, format!("expected a rule or a list of rules, found {}", kind_of(other)))
                    .with_help(r#"write a rule like {"field": "status", "op": "equals", "value": "ACTIVE"}"#),
            );
            None
        }
    }
}

fn compile_list(items: &[Value], path: &str, diags: &mut Diagnostics) -> Option<Vec<Condition>> {
    // Compile every item so all errors are reported, then give up if any failed.
    let compiled: Vec<Option<Condition>> = items
        .iter()
        .enumerate()
        .map(|(i, v)| compile_condition(v, &diag::join(path, &format!("[{i}]")), diags))
        .collect();
    compiled.into_iter().collect()
}

fn compile_group(group: &str, map: &Map<String, Value>, path: &str, diags: &mut Diagnostics) -> Option<Condition> {
    let mut ok = true;
    for key in map.keys().filter(|k| k.as_str() != group) {
        ok = false;
        diags.push(
            ConfigError::new(diag::join(path, key), format!("`{key}` can't sit next to `{group}`"))
                .with_help(format!("an object with `{group}` holds nothing else; put rules inside the `{group}`")),
        );
    }
    let at = diag::join(path, group);
    let inner = &map[group];
    let condition = match (group, inner) {
        ("not", Value::Object(_) | Value::Array(_)) => {
            compile_condition(inner, &at, diags).map(|c| Condition::Not(Box::new(c)))
        }
        ("not", other) => {
            diags.push(ConfigError::new(
                &at,
                format!("`not` needs a rule or a list of rules, found {}", kind_of(other)),
            ));
            None
        }
        (_, Value::Array(items)) if items.is_empty() && group == "any" => {
            diags.push(
                ConfigError::new(&at, "`any` needs at least one rule").with_help("an empty `any` would never hold"),
            );
            None
        }
        (_, Value::Array(items)) => compile_list(items, &at, diags)
            .map(|list| if group == "all" { Condition::All(list) } else { Condition::Any(list) }),
        (_, other) => {
            diags.push(
                ConfigError::new(&at, format!("`{group}` needs a list of rules, found {}", kind_of(other)))
                    .with_help(format!(r#"write "{group}": [{{...}}, {{...}}]"#)),
            );
            None
        }
    };
    if ok { condition } else { None }
}

fn compile_rule(map: &Map<String, Value>, path: &str, diags: &mut Diagnostics) -> Option<Rule> {
    let before = diags.len();
    for key in map.keys().filter(|k| !RULE_KEYS.contains(&k.as_str())) {
        diags.push(
            ConfigError::new(diag::join(path, key), format!("unknown key `{key}` in a rule"))
                .with_help(diag::suggest(key, ALL_KEYS.iter().copied())),
        );
    }

    let field = match map.get("field") {
        None => {
            diags.push(
                ConfigError::new(path, "a rule needs a `field`")
                    .with_help(r#"e.g. {"field": "status", "op": "equals", "value": "ACTIVE"}"#),
            );
            None
        }
        Some(Value::String(s)) => match parse_field(s) {
            Ok(p) => Some(p),
            Err(msg) => {
                diags.error(diag::join(path, "field"), msg);
                None
            }
        },
        Some(other) => {
            diags.error(
                diag::join(path, "field"),
                format!("`field` must be a path such as \"status\", found {}", kind_of(other)),
            );
            None
        }
    };

    let op_at = diag::join(path, "op");
    let op = match map.get("op") {
        None => {
            diags.push(
                ConfigError::new(path, "a rule needs an `op`")
                    .with_help(format!("one of: {}", Op::names().collect::<Vec<_>>().join(", "))),
            );
            None
        }
        Some(Value::String(s)) => match Op::from_name(s) {
            Some(op) => Some(op),
            None => {
                diags.push(
                    ConfigError::new(&op_at, format!("unknown op \"{s}\"")).with_help(diag::suggest(s, Op::names())),
                );
                None
            }
        },
        Some(other) => {
            diags.error(&op_at, format!("`op` must be a string, found {}", kind_of(other)));
            None
        }
    };

    let value_at = diag::join(path, "value");
    let raw = map.get("value");
    let mut value = None;
    let mut regex = None;
    if op.is_none()
        && let Some(raw) = raw
    {
        // The op is wrong, but the value's templates can still be checked in this pass.
        JsonTemplate::compile(raw, &value_at, diags);
    }
    if let Some(op) = op {
        match (op.takes_value(), raw) {
            (false, Some(_)) => {
                diags.push(ConfigError::new(&value_at, format!("`{op}` takes no `value`")).with_help("remove `value`"))
            }
            (true, None) => {
                diags.push(ConfigError::new(path, format!("`{op}` needs a `value`")).with_help(value_example(op)))
            }
            (false, None) => {}
            (true, Some(raw)) => {
                value = JsonTemplate::compile(raw, &value_at, diags);
                if let Some(v) = &value {
                    regex = check_value(op, raw, v, &value_at, diags);
                }
            }
        }
    }

    if diags.len() > before {
        return None;
    }
    Some(Rule { field: field?, op: op?, value, source: Value::Object(map.clone()), regex })
}

/// A field is a path; `<<x>>` / `{{x}}` is forgiven since users write it by habit.
fn parse_field(text: &str) -> Result<Path, String> {
    if let Ok(t) = Template::compile(text)
        && let Some(p) = t.single_variable()
    {
        return Ok(p.clone());
    }
    Path::parse(text).map_err(|e| format!("invalid field: {e}"))
}

/// Checks a value whose shape we can see at load; returns the regex for `matches`.
fn check_value(op: Op, raw: &Value, value: &JsonTemplate, at: &str, diags: &mut Diagnostics) -> Option<Regex> {
    let single_var = value.as_template().is_some_and(|t| t.single_variable().is_some());
    let literal = value.as_literal();
    let bad = |diags: &mut Diagnostics, msg: String| {
        diags.push(ConfigError::new(at, msg).with_help(value_example(op)));
    };
    match op {
        Op::In if !raw.is_array() && !single_var => {
            bad(diags, format!("`in` needs a list of values, found {}", kind_of(raw)));
        }
        Op::Matches => match (raw, literal) {
            (Value::String(_), Some(Value::String(pattern))) => match Regex::new(pattern) {
                Ok(re) => return Some(re),
                Err(e) => bad(diags, format!("invalid regular expression: {}", one_line(&e.to_string()))),
            },
            (Value::String(_), _) => {} // has variables: compiled when evaluated
            _ => bad(diags, format!("`matches` needs a pattern string, found {}", kind_of(raw))),
        },
        Op::GreaterThan | Op::LessThan => {
            if let Some(v) = literal
                && number_of(v).is_none()
            {
                bad(diags, format!("`{op}` needs a number, found {}", show_json(v)));
            }
        }
        op if op.is_date() => {
            if let Some(v) = literal
                && moment_of(v).is_none()
            {
                bad(
                    diags,
                    format!("`{op}` needs a date (YYYY-MM-DD) or an RFC 3339 timestamp, found {}", show_json(v)),
                );
            }
        }
        _ => {}
    }
    None
}

fn value_example(op: Op) -> String {
    let example = match op {
        Op::In => r#"["ACTIVE", "INVITED"]"#,
        Op::GreaterThan | Op::LessThan => "10",
        Op::Before | Op::After | Op::OnOrBefore | Op::OnOrAfter => r#""2027-03-01" or "<<today>>""#,
        Op::Matches => r#""^[a-z]+@example\\.com$""#,
        _ => r#""ACTIVE""#,
    };
    format!(r#"e.g. "value": {example}"#)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- evaluating ------------------------------------------------------------------

/// The outcome of one rule, with what is needed to explain a failure.
struct Verdict<'a> {
    passed: bool,
    actual: Option<&'a Value>,
    expected: Option<Value>,
}

impl Rule {
    fn check<'a>(&self, scope: &'a Value) -> Result<Verdict<'a>, RuleError> {
        let actual = self.field.lookup(scope);
        let expected = match &self.value {
            Some(t) => Some(t.render(scope).map_err(|error| RuleError::Render { rule: self.to_string(), error })?),
            None => None,
        };
        let field = actual.unwrap_or(&Value::Null);
        let want = expected.as_ref().unwrap_or(&Value::Null);
        let passed = match self.op {
            Op::Equals => loose_eq(field, want),
            Op::NotEquals => !loose_eq(field, want),
            Op::Contains => contains(field, want),
            Op::StartsWith => match (text_of(field, false), text_of(want, false)) {
                (Some(a), Some(b)) => a.starts_with(b.as_ref()),
                _ => false,
            },
            Op::EndsWith => match (text_of(field, false), text_of(want, false)) {
                (Some(a), Some(b)) => a.ends_with(b.as_ref()),
                _ => false,
            },
            Op::In => match want {
                Value::Array(options) => options.iter().any(|o| loose_eq(field, o)),
                single => loose_eq(field, single),
            },
            Op::IsEmpty => is_empty(field),
            Op::IsNotEmpty => !is_empty(field),
            Op::GreaterThan => compare_numbers(field, want) == Some(Ordering::Greater),
            Op::LessThan => compare_numbers(field, want) == Some(Ordering::Less),
            Op::Before => compare_moments(field, want).is_some_and(Ordering::is_lt),
            Op::After => compare_moments(field, want).is_some_and(Ordering::is_gt),
            Op::OnOrBefore => compare_moments(field, want).is_some_and(Ordering::is_le),
            Op::OnOrAfter => compare_moments(field, want).is_some_and(Ordering::is_ge),
            Op::Matches => {
                let compiled;
                let re = match &self.regex {
                    Some(re) => re,
                    None => {
                        let pattern = text_of(want, true).unwrap_or_default();
                        compiled = Regex::new(&pattern).map_err(|e| RuleError::Invalid {
                            rule: self.to_string(),
                            message: format!("invalid regular expression: {}", one_line(&e.to_string())),
                        })?;
                        &compiled
                    }
                };
                text_of(field, true).is_some_and(|t| re.is_match(&t))
            }
        };
        Ok(Verdict { passed, actual, expected })
    }

    /// `field op rendered-value (why)`.
    fn explain(&self, v: &Verdict<'_>) -> String {
        let mut head = format!("{} {}", self.field, self.op);
        if let Some(e) = &v.expected {
            head.push(' ');
            head.push_str(&show_value(self.op, e));
        }
        let field = &self.field;
        let why = match v.actual {
            None => format!("{field} is missing"),
            Some(actual) => {
                let shown = show_json(actual);
                match self.op {
                    Op::IsNotEmpty => format!("{field} is empty"),
                    Op::GreaterThan | Op::LessThan if number_of(actual).is_none() => {
                        format!("{field} is {shown}, not a number")
                    }
                    op if op.is_date() && moment_of(actual).is_none() => {
                        format!("{field} is {shown}, not a date")
                    }
                    op if op.is_date() && v.expected.as_ref().is_some_and(|e| moment_of(e).is_none()) => {
                        format!("{field} is {shown}, but the value to compare with is not a date")
                    }
                    _ => format!("{field} is {shown}"),
                }
            }
        };
        format!("{head} ({why})")
    }
}

/// Every value a field can hold and still `equals` `want`, when they are few: a text
/// that reads as neither a number nor a boolean equals only itself; one that reads as a
/// boolean equals that boolean too. `None` for the rest (a number equals endless texts).
pub fn equal_values(want: &Value) -> Option<Vec<Value>> {
    let Value::String(s) = want else { return None };
    if parse_number(s).is_some() {
        return None;
    }
    Some(match parse_bool(s) {
        Some(b) => vec![want.clone(), Value::Bool(b)],
        None => vec![want.clone()],
    })
}

/// The text `starts_with`, `ends_with` and `contains` compare a value as: a string, or a
/// number as JSON writes it.
pub fn compared_text(v: &Value) -> Option<Cow<'_, str>> {
    text_of(v, false)
}

/// The UTC day the date ops (`before`, `on_or_after`, ...) read `v` as; `None` when it is
/// neither a date nor a timestamp. Whatever they compare, a field they accept lies on the
/// accepting side of this day or on it. Every text they read starts with its date as
/// written (`2027-03-01`, `20270301`, or a signed six-digit year: `+002027-03-01`), and a
/// timestamp's UTC day is within two days of that date (offsets are under 26 hours).
pub fn day_of(v: &Value) -> Option<Date> {
    moment_of(v).map(Moment::day)
}

/// Equality as a user means it: `"5"` equals `5`, `"true"` equals `true`, 1 equals 1.0.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            parse_number(s).is_some_and(|v| Some(v) == n.as_f64())
        }
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => parse_bool(s) == Some(*x),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| loose_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| loose_eq(v, w)))
        }
        _ => a == b,
    }
}

fn contains(field: &Value, want: &Value) -> bool {
    match field {
        Value::Array(items) => items.iter().any(|i| loose_eq(i, want)),
        Value::String(_) | Value::Number(_) => match (text_of(field, false), text_of(want, true)) {
            (Some(hay), Some(needle)) => hay.contains(needle.as_ref()),
            _ => false,
        },
        _ => false,
    }
}

/// null, missing, blank strings, empty lists and empty objects.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A scalar as text: strings and numbers, and booleans when `bools` is set.
fn text_of(v: &Value, bools: bool) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) if bools => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    // Rust also parses "inf" and "NaN"; no HR value means those.
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

fn compare_numbers(a: &Value, b: &Value) -> Option<Ordering> {
    number_of(a)?.partial_cmp(&number_of(b)?)
}

/// A date or an instant; which one decides the granularity of a comparison.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Day(Date),
    Instant(Timestamp),
}

impl Moment {
    fn day(self) -> Date {
        match self {
            Moment::Day(d) => d,
            Moment::Instant(t) => t.to_zoned(TimeZone::UTC).date(),
        }
    }
}

/// `YYYY-MM-DD`, an RFC 3339 timestamp, or a date-time without offset (taken as UTC).
fn moment_of(v: &Value) -> Option<Moment> {
    let s = v.as_str()?.trim();
    if s.len() == 10 {
        return s.parse::<Date>().ok().map(Moment::Day);
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(Moment::Instant(t));
    }
    let dt = s.parse::<DateTime>().ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| Moment::Instant(z.timestamp()))
}

/// Instants compare exactly; as soon as one side is a plain date, by UTC day.
fn compare_moments(a: &Value, b: &Value) -> Option<Ordering> {
    match (moment_of(a)?, moment_of(b)?) {
        (Moment::Instant(x), Moment::Instant(y)) => Some(x.cmp(&y)),
        (x, y) => Some(x.day().cmp(&y.day())),
    }
}

/// A value in a rule description: dates bare, everything else as (short) JSON.
fn show_value(op: Op, v: &Value) -> String {
    match v {
        Value::String(s) if op.is_date() => s.clone(),
        other => show_json(other),
    }
}

fn show_json(v: &Value) -> String {
    const MAX: usize = 80;
    let s = v.to_string();
    if s.chars().count() <= MAX {
        s
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests;
