//! The vendors' own OpenAPI files, embedded, plus a checker for the subset of OpenAPI 3.0 schema
//! keywords those files use. The Brex fake validates request bodies with it; tests validate
//! every response with it. Hand-written because OpenAPI 3.0 (`nullable`, `discriminator`) is not
//! JSON Schema, and the Brex file has a reference cycle (CardOwner -> UserOwner -> CardOwner).

use std::sync::OnceLock;

use serde_json::Value;

pub const BREX_SPEC_JSON: &str = include_str!("../specs/brex_team.oas.json");
pub const SAGE_SPEC_JSON: &str = include_str!("../specs/sage_people.oas.json");

/// One place where an instance does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path into the instance (`owner.user_id`, `items[3].status`); empty for the root.
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "body" } else { &self.path };
        write!(f, "{path} is invalid: {}", self.reason)
    }
}

#[derive(Debug)]
pub struct Spec {
    doc: Value,
}

/// The Brex Team API spec (sandbox/specs/brex_team.oas.json).
pub fn brex() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::from_json(BREX_SPEC_JSON).expect("embedded Brex spec parses"))
}

/// The Sage People API spec (sandbox/specs/sage_people.oas.json).
pub fn sage() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::from_json(SAGE_SPEC_JSON).expect("embedded Sage spec parses"))
}

impl Spec {
    pub fn from_json(text: &str) -> anyhow::Result<Spec> {
        Ok(Spec { doc: serde_json::from_str(text)? })
    }

    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// `#/components/schemas/{name}`.
    pub fn component(&self, name: &str) -> Option<&Value> {
        self.doc.pointer(&format!("/components/schemas/{name}"))
    }

    fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        self.doc.get("paths")?.get(path)?.get(method.to_ascii_lowercase())
    }

    /// The JSON request body schema of an operation, by path template (`/v2/cards/{id}`).
    pub fn request_schema(&self, method: &str, path: &str) -> Option<&Value> {
        self.operation(method, path)?.pointer("/requestBody/content/application~1json/schema")
    }

    /// The JSON response schema an operation declares for `status`.
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> Option<&Value> {
        self.operation(method, path)?
            .get("responses")?
            .get(status.to_string())?
            .pointer("/content/application~1json/schema")
    }

    /// Checks `instance` against `schema`; every violation found, in document order.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), Vec<Violation>> {
        let mut checker = Checker { spec: self, active_refs: Vec::new(), errors: Vec::new() };
        checker.check(schema, instance, &mut String::new());
        if checker.errors.is_empty() { Ok(()) } else { Err(checker.errors) }
    }

    /// Convenience: validate against a named component schema.
    pub fn validate_component(&self, name: &str, instance: &Value) -> Result<(), Vec<Violation>> {
        match self.component(name) {
            Some(schema) => self.validate(schema, instance),
            None => Err(vec![Violation { path: String::new(), reason: format!("unknown schema {name}") }]),
        }
    }
}

struct Checker<'s> {
    spec: &'s Spec,
    /// (reference, instance address) pairs being checked: re-entering one means a cycle, which
    /// adds no new constraint, so it is skipped.
    active_refs: Vec<(&'s str, usize)>,
    errors: Vec<Violation>,
}

fn is_nullable(schema: &Value) -> bool {
    if schema.get("nullable") == Some(&Value::Bool(true)) {
        return true;
    }
    // The spec writes nullable references as `allOf: [{$ref}, {nullable: true}]`.
    schema.get("allOf").and_then(Value::as_array).is_some_and(|parts| {
        parts
            .iter()
            .any(|p| p.as_object().is_some_and(|o| o.len() == 1 && o.get("nullable") == Some(&Value::Bool(true))))
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && s.is_ascii()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

pub(crate) fn is_date(s: &str) -> bool {
    s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok()
}

impl<'s> Checker<'s> {
    fn fail(&mut self, path: &str, reason: impl Into<String>) {
        self.errors.push(Violation { path: path.to_string(), reason: reason.into() });
    }

    /// Runs a check in isolation and reports whether it passed, keeping its errors out.
    fn passes(&mut self, schema: &'s Value, instance: &Value, path: &mut String) -> bool {
        let saved = std::mem::take(&mut self.errors);
        self.check(schema, instance, path);
        let ok = self.errors.is_empty();
        self.errors = saved;
        ok
    }

    fn check(&mut self, schema: &'s Value, instance: &Value, path: &mut String) {
        let Some(obj) = schema.as_object() else {
            return; // `true`/garbage schemas constrain nothing
        };
        if instance.is_null() {
            if is_nullable(schema) {
                return;
            }
            if obj.contains_key("type") {
                self.fail(path, "must not be null");
                return;
            }
        }

        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            self.check_ref(reference, instance, path);
        }

        if let Some(t) = obj.get("type").and_then(Value::as_str)
            && !self.check_type(t, obj.get("format").and_then(Value::as_str), instance, path)
        {
            return; // the remaining keywords would only repeat the type error
        }

        if let Some(options) = obj.get("enum").and_then(Value::as_array)
            && !instance.is_null()
            && !options.contains(instance)
        {
            let names: Vec<String> =
                options.iter().map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string)).collect();
            self.fail(path, format!("must be one of {}", names.join(", ")));
        }

        self.check_bounds(obj, instance, path);

        if let Some(parts) = obj.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.check(part, instance, path);
            }
        }
        if let Some(parts) = obj.get("anyOf").and_then(Value::as_array)
            && !parts.iter().any(|p| self.passes(p, instance, path))
        {
            self.fail(path, "does not match any allowed shape");
        }
        if let Some(parts) = obj.get("oneOf").and_then(Value::as_array) {
            self.check_one_of(obj, parts, instance, path);
        }

        match instance {
            Value::Object(map) => self.check_object(obj, map, path),
            Value::Array(items) => {
                if let Some(item_schema) = obj.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        self.check(item_schema, item, path);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    fn check_ref(&mut self, reference: &'s str, instance: &Value, path: &mut String) {
        let key = (reference, instance as *const Value as usize);
        if self.active_refs.contains(&key) {
            return;
        }
        let spec = self.spec;
        match reference.strip_prefix('#').and_then(|p| spec.doc.pointer(p)) {
            Some(target) => {
                self.active_refs.push(key);
                self.check(target, instance, path);
                self.active_refs.pop();
            }
            None => self.fail(path, format!("unresolvable reference {reference}")),
        }
    }

    fn check_type(&mut self, t: &str, format: Option<&str>, v: &Value, path: &str) -> bool {
        let ok = match t {
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "number" => v.is_number(),
            "integer" => {
                let whole = v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0 && f.is_finite());
                if whole && format == Some("int32") {
                    let n = v.as_f64().unwrap_or(0.0);
                    if n < i32::MIN as f64 || n > i32::MAX as f64 {
                        self.fail(path, "is out of range for a 32-bit integer");
                        return false;
                    }
                }
                whole
            }
            _ => true,
        };
        if !ok {
            let want = match t {
                "integer" => "an integer",
                "object" => "an object",
                "array" => "an array",
                "string" => "a string",
                "boolean" => "a boolean",
                _ => "a number",
            };
            self.fail(path, format!("must be {want}, got {}", type_name(v)));
            return false;
        }
        if let (Some(fmt), Some(s)) = (format, v.as_str()) {
            let bad = match fmt {
                "email" => (!is_email(s)).then_some("must be a valid email address"),
                "date" => (!is_date(s)).then_some("must be a date (YYYY-MM-DD)"),
                "date-time" => s.parse::<jiff::Timestamp>().is_err().then_some("must be an RFC 3339 date-time"),
                _ => None,
            };
            if let Some(reason) = bad {
                self.fail(path, reason);
                return false;
            }
        }
        true
    }

    fn check_bounds(&mut self, obj: &serde_json::Map<String, Value>, v: &Value, path: &str) {
        let num = |k: &str| obj.get(k).and_then(Value::as_f64);
        if let Some(s) = v.as_str() {
            let len = s.chars().count() as f64;
            if let Some(min) = num("minLength")
                && len < min
            {
                if min == 1.0 {
                    self.fail(path, "must not be empty");
                } else {
                    self.fail(path, format!("must be at least {min} characters"));
                }
            }
            if let Some(max) = num("maxLength")
                && len > max
            {
                self.fail(path, format!("must be at most {max} characters"));
            }
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = num("minimum")
                && n < min
            {
                self.fail(path, format!("must be at least {min}"));
            }
            if let Some(max) = num("maximum")
                && n > max
            {
                self.fail(path, format!("must be at most {max}"));
            }
        }
        if let Some(items) = v.as_array() {
            if let Some(min) = num("minItems")
                && (items.len() as f64) < min
            {
                self.fail(path, format!("must have at least {min} items"));
            }
            if let Some(max) = num("maxItems")
                && (items.len() as f64) > max
            {
                self.fail(path, format!("must have at most {max} items"));
            }
        }
        if let Some(map) = v.as_object()
            && let Some(min) = num("minProperties")
            && (map.len() as f64) < min
        {
            self.fail(path, format!("must have at least {min} properties"));
        }
    }

    fn check_one_of(
        &mut self,
        obj: &'s serde_json::Map<String, Value>,
        parts: &'s [Value],
        instance: &Value,
        path: &mut String,
    ) {
        if let Some(disc) = obj.get("discriminator") {
            let prop = disc.get("propertyName").and_then(Value::as_str).unwrap_or("type");
            let mapping = disc.get("mapping").and_then(Value::as_object);
            let Some(tag) = instance.get(prop).and_then(Value::as_str) else {
                let len = path.len();
                push_field(path, prop);
                self.fail(path, "required field is missing");
                path.truncate(len);
                return;
            };
            match mapping.and_then(|m| m.get(tag)).and_then(Value::as_str) {
                Some(target) => self.check_ref(target, instance, path),
                None => {
                    let allowed: Vec<&str> =
                        mapping.map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
                    let len = path.len();
                    push_field(path, prop);
                    self.fail(path, format!("must be one of {}", allowed.join(", ")));
                    path.truncate(len);
                }
            }
            return;
        }
        let matches = parts.iter().filter(|p| self.passes(p, instance, path)).count();
        if matches != 1 {
            self.fail(path, format!("must match exactly one allowed shape (matched {matches})"));
        }
    }

    fn check_object(
        &mut self,
        obj: &'s serde_json::Map<String, Value>,
        map: &serde_json::Map<String, Value>,
        path: &mut String,
    ) {
        let properties = obj.get("properties").and_then(Value::as_object);
        if let Some(required) = obj.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    let len = path.len();
                    push_field(path, name);
                    self.fail(path, "required field is missing");
                    path.truncate(len);
                }
            }
        }
        for (key, value) in map {
            let len = path.len();
            push_field(path, key);
            match properties.and_then(|p| p.get(key)) {
                Some(prop_schema) => self.check(prop_schema, value, path),
                None => match obj.get("additionalProperties") {
                    Some(Value::Bool(false)) => self.fail(path, "is not an allowed field"),
                    Some(extra @ Value::Object(_)) => self.check(extra, value, path),
                    _ => {}
                },
            }
            path.truncate(len);
        }
    }
}

fn push_field(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn brex_card_request_rules_from_the_spec() {
        let spec = brex();
        let schema = spec.request_schema("POST", "/v2/cards").unwrap();
        let good = json!({
            "owner": {"type": "USER", "user_id": "cuuser_x"},
            "card_name": "Travel", "card_type": "VIRTUAL", "limit_type": "USER"
        });
        assert_eq!(spec.validate(schema, &good), Ok(()));

        let bad = json!({
            "owner": {"type": "TEAM", "user_id": "cuuser_x"},
            "card_name": "", "card_type": "PLASTIC", "limit_type": "USER",
            "spend_controls": {"spend_limit": {"amount": "ten"}}
        });
        let errors = spec.validate(schema, &bad).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"owner.type is invalid: must be one of USER".to_string()));
        assert!(text.contains(&"card_name is invalid: must not be empty".to_string()));
        assert!(text.iter().any(|t| t.starts_with("card_type is invalid: must be one of")));
        assert!(
            text.contains(
                &"spend_controls.spend_limit.amount is invalid: must be an integer, got a string".to_string()
            )
        );
        assert!(text.contains(&"spend_controls.spend_duration is invalid: required field is missing".to_string()));
    }

    #[test]
    fn nullable_refs_and_formats() {
        let spec = brex();
        let user = spec.component("CreateUserRequest").unwrap();
        assert!(
            spec.validate(user, &json!({"first_name": "A", "last_name": "B", "email": "a@b.test", "manager_id": null}))
                .is_ok()
        );
        let errors = spec.validate(user, &json!({"first_name": "A", "last_name": "B", "email": "nope"})).unwrap_err();
        assert_eq!(errors[0].to_string(), "email is invalid: must be a valid email address");

        let card = spec.component("Card").unwrap();
        let errors = spec.validate(card, &json!({"id": "x"})).unwrap_err();
        assert!(errors.iter().any(|e| e.path == "owner"));
    }

    #[test]
    fn sage_employees_schema_present() {
        let spec = sage();
        assert!(spec.response_schema("GET", "/employees", 200).is_some());
        assert!(spec.component("Error").is_some());
    }
}
