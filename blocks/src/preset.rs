//! Presets: vendor requests as data files (`presets/<vendor>/<name>.json`).
//!
//! A preset names a request (method, URL, headers, body), its parameters, which statuses
//! count as success, its default response mapping, whether a retry is safe and how its
//! idempotency key is sent. An API block with `"preset": "brex.lock_card"` uses it; the
//! block's `with` sets parameters, and a parameter not in `with` is read from the record
//! field of the same name.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::diag::{ConfigError, Diagnostics, join};
use crate::fields::Fields;
use crate::paging::PageLimits;
use crate::rules::Condition;
use crate::template::{JsonTemplate, Template};

/// One declared parameter of a preset.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub description: String,
    /// A run fails before sending when a required parameter has no value.
    pub required: bool,
    /// When not in `with`, read the record field of the same name.
    pub from_record: bool,
    pub default: Option<Value>,
    /// The only values allowed (the vendor's enum), checked at load time for literal
    /// `with` values and at run time for rendered ones.
    pub allowed: Option<Vec<Value>>,
}

/// A rule over the bound parameters that must hold before the request goes out.
#[derive(Debug, Clone)]
pub struct Check {
    pub when: Option<Condition>,
    pub require: Condition,
    pub message: String,
}

/// Cursor pagination: follow the cursor until it is null, collecting every page's items.
#[derive(Debug, Clone)]
pub struct Paginate {
    pub cursor_param: String,
    pub next_cursor: String,
    pub items: String,
    pub limit_param: Option<String>,
    pub limit: Option<u32>,
    /// `max_pages` / `max_items`: a listing past them fails (defaults: [`PageLimits::PRESET`]).
    pub limits: PageLimits,
}

/// How a preset sends its idempotency key.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub header: String,
    /// The vendor refuses the request without it (Brex create card).
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct Preset {
    pub name: String,
    pub title: String,
    pub description: String,
    pub method: String,
    pub url: String,
    pub headers: Map<String, Value>,
    pub body: Option<Value>,
    pub parameters: Vec<Parameter>,
    pub accept: Vec<u16>,
    pub response: Map<String, Value>,
    pub retry_safe: bool,
    pub idempotency: Option<Idempotency>,
    pub paginate: Option<Paginate>,
    pub checks: Vec<Check>,
    /// Drop body object keys whose value rendered to null (optional fields left unset).
    pub drop_nulls: bool,
    /// A sample record for `roster presets show`.
    pub sample_record: Map<String, Value>,
    /// The `with` a sample block would give.
    pub sample_with: Map<String, Value>,
    /// Where the preset came from: `built-in` or a file path.
    pub origin: String,
}

impl Preset {
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// Parses a preset file. `origin` is shown in errors and `presets show`.
    pub fn parse(text: &str, origin: &str) -> Result<Preset, Vec<ConfigError>> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| vec![ConfigError::new("", format!("{origin} is not valid JSON: {e}"))])?;
        let mut diags = Diagnostics::new();
        let preset = Self::compile(&value, origin, &mut diags);
        match preset {
            Some(p) if diags.is_empty() => Ok(p),
            _ => Err(diags.into_errors()),
        }
    }

    fn compile(value: &Value, origin: &str, diags: &mut Diagnostics) -> Option<Preset> {
        const KEYS: &[&str] = &[
            "name",
            "title",
            "description",
            "request",
            "parameters",
            "accept",
            "response",
            "retry_safe",
            "idempotency",
            "paginate",
            "checks",
            "drop_nulls",
            "sample",
        ];
        let f = Fields::open(value, "", "a preset", KEYS, diags)?;
        let name = f.string("name", diags)?.to_string();
        let request = f.get("request").unwrap_or(&Value::Null);
        let r = Fields::open(request, "request", "a preset request", &["method", "url", "headers", "body"], diags)?;
        let method = r.string("method", diags)?.to_ascii_uppercase();
        let url = r.string("url", diags)?.to_string();
        let headers = r.opt_object("headers", diags).cloned().unwrap_or_default();
        let body = r.get("body").cloned();

        let mut parameters = Vec::new();
        if let Some(params) = f.opt_object("parameters", diags) {
            for (pname, spec) in params {
                let at = join("parameters", pname);
                let Some(p) = Fields::open(
                    spec,
                    &at,
                    "a parameter",
                    &["description", "required", "from_record", "default", "enum"],
                    diags,
                ) else {
                    continue;
                };
                let allowed = match p.get("enum") {
                    None => None,
                    Some(Value::Array(a)) => Some(a.clone()),
                    Some(_) => {
                        diags.error(p.at("enum"), "`enum` must be an array of allowed values");
                        None
                    }
                };
                parameters.push(Parameter {
                    name: pname.clone(),
                    description: p.opt_string("description", diags).unwrap_or_default().to_string(),
                    required: p.opt_bool("required", diags).unwrap_or(false),
                    from_record: p.opt_bool("from_record", diags).unwrap_or(true),
                    default: p.get("default").cloned(),
                    allowed,
                });
            }
        }

        let accept = match f.get("accept") {
            None => vec![200],
            Some(v) => parse_accept(v, "accept", diags).unwrap_or_default(),
        };
        let idempotency = f.opt_object("idempotency", diags).map(|m| Idempotency {
            header: m.get("header").and_then(Value::as_str).unwrap_or("Idempotency-Key").to_string(),
            required: m.get("required").and_then(Value::as_bool).unwrap_or(false),
        });
        let paginate = f.opt_object("paginate", diags).map(|m| {
            let s = |k: &str, d: &str| m.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
            Paginate {
                cursor_param: s("cursor_param", "cursor"),
                next_cursor: s("next_cursor", "next_cursor"),
                items: s("items", "items"),
                limit_param: m.get("limit_param").and_then(Value::as_str).map(str::to_string),
                limit: m.get("limit").and_then(Value::as_u64).map(|l| l as u32),
                limits: PageLimits::PRESET.compile(m, "paginate", diags),
            }
        });
        let mut checks = Vec::new();
        if let Some(Value::Array(items)) = f.get("checks") {
            for (i, c) in items.iter().enumerate() {
                let at = format!("checks[{i}]");
                let Some(cf) = Fields::open(c, &at, "a check", &["when", "require", "message"], diags) else {
                    continue;
                };
                let when = cf.get("when").and_then(|w| Condition::compile(w, &cf.at("when"), diags));
                let require = cf.get("require").and_then(|w| Condition::compile(w, &cf.at("require"), diags));
                let message = cf.string("message", diags).unwrap_or_default().to_string();
                if let Some(require) = require {
                    checks.push(Check { when, require, message });
                }
            }
        }

        let preset = Preset {
            name,
            title: f.opt_string("title", diags).unwrap_or_default().to_string(),
            description: f.opt_string("description", diags).unwrap_or_default().to_string(),
            method,
            url,
            headers,
            body,
            parameters,
            accept,
            response: f.opt_object("response", diags).cloned().unwrap_or_default(),
            retry_safe: f.opt_bool("retry_safe", diags).unwrap_or(false),
            idempotency,
            paginate,
            checks,
            drop_nulls: f.opt_bool("drop_nulls", diags).unwrap_or(true),
            sample_record: sample_part(f.get("sample"), "record"),
            sample_with: sample_part(f.get("sample"), "with"),
            origin: origin.to_string(),
        };
        preset.check_variables_declared(diags);
        Some(preset)
    }

    /// Every variable the request uses must be a declared parameter (or a run value).
    fn check_variables_declared(&self, diags: &mut Diagnostics) {
        let mut templates: Vec<(String, Vec<crate::path::Path>)> = Vec::new();
        match Template::compile(&self.url) {
            Ok(t) => templates.push(("request.url".into(), t.variables())),
            Err(e) => diags.error("request.url", format!("bad template: {e}")),
        }
        for (k, v) in &self.headers {
            if let Some(t) = JsonTemplate::compile(v, &join("request.headers", k), diags) {
                templates.push((join("request.headers", k), t.variables()));
            }
        }
        if let Some(body) = &self.body
            && let Some(t) = JsonTemplate::compile(body, "request.body", diags)
        {
            templates.push(("request.body".into(), t.variables()));
        }
        for (at, vars) in templates {
            for v in vars {
                let root = v.root();
                if !RUN_ROOTS.contains(&root) && self.parameter(root).is_none() {
                    diags.push(
                        ConfigError::new(&at, format!("variable `{v}` is not a declared parameter"))
                            .with_help(format!("add `{root}` under `parameters`")),
                    );
                }
            }
        }
    }
}

fn sample_part(sample: Option<&Value>, key: &str) -> Map<String, Value> {
    sample.and_then(|s| s.get(key)).and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Names every template may use that come from the run, not the record.
pub const RUN_ROOTS: &[&str] = &["run", "now", "today", "steps", "item", "item_index", "record"];

/// `accept`: a list of statuses, a single status, or `"2xx"`.
pub fn parse_accept(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<Vec<u16>> {
    // One status (`200`, `"404"`) or a class of them (`"2xx"`, `"4XX"`).
    let one = |v: &Value| -> Option<Vec<u16>> {
        match v {
            Value::Number(n) => n.as_u64().filter(|s| (100..600).contains(s)).map(|s| vec![s as u16]),
            Value::String(s) => {
                let s = s.trim();
                if let Ok(status) = s.parse::<u16>() {
                    return (100..600).contains(&status).then(|| vec![status]);
                }
                let class = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX"))?;
                let first = class.parse::<u16>().ok().filter(|d| (1..6).contains(d))?;
                Some((first * 100..first * 100 + 100).collect())
            }
            _ => None,
        }
    };
    let bad = |at: String, v: &Value| {
        ConfigError::new(at, format!("`{v}` is not an HTTP status or class of statuses"))
            .with_help("write statuses from 100 to 599 such as 200 or 404, or a class such as \"2xx\"")
    };
    let mut out: Vec<u16> = match value {
        Value::Array(items) if items.is_empty() => {
            diags.push(
                ConfigError::new(path, "`accept` is empty, so no response could succeed")
                    .with_help("list the statuses that count as success, e.g. [200, 404], or remove `accept` for 2xx"),
            );
            return None;
        }
        Value::Array(items) => {
            let mut all = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match one(item) {
                    Some(statuses) => all.extend(statuses),
                    None => {
                        diags.push(bad(crate::diag::join(path, &format!("[{i}]")), item));
                        ok = false;
                    }
                }
            }
            if !ok {
                return None;
            }
            all
        }
        other => match one(other) {
            Some(statuses) => statuses,
            None => {
                diags.push(bad(path.to_string(), other));
                return None;
            }
        },
    };
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Every preset Roster knows: the built-in ones plus any from a folder.
#[derive(Debug, Clone, Default)]
pub struct PresetCatalog {
    presets: BTreeMap<String, Preset>,
}

impl PresetCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, for overrides) one preset.
    pub fn insert(&mut self, preset: Preset) {
        self.presets.insert(preset.name.clone(), preset);
    }

    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.presets.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.presets.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Preset> {
        self.presets.values()
    }

    pub fn len(&self) -> usize {
        self.presets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.presets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accept_takes_statuses_and_classes_and_names_a_bad_item() {
        let parse = |v: Value| {
            let mut diags = Diagnostics::new();
            let out = parse_accept(&v, "blocks.x.accept", &mut diags);
            (out, diags.errors().iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let (out, errors) = parse(json!([200, "2xx", "404"]));
        assert!(errors.is_empty(), "{errors:?}");
        let out = out.unwrap();
        assert_eq!(out.len(), 101, "200 once, 200-299 and 404");
        assert!(out.contains(&204) && out.contains(&404) && !out.contains(&300));
        assert_eq!(parse(json!("4XX")).0.unwrap().len(), 100);
        let (out, errors) = parse(json!([200, "2xy", 700]));
        assert!(out.is_none());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("blocks.x.accept[1]: `\"2xy\"` is not an HTTP status"), "{errors:?}");
        assert!(errors[1].starts_with("blocks.x.accept[2]: `700`"), "{errors:?}");
        assert!(parse(json!([])).1[0].contains("is empty"));
    }
}
