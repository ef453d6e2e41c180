//! `api`: calls a vendor API, with a hand-written `request` or a `preset`.
//!
//! The block plans one call (or one per `for_each` item) with [`ApiBlock::render`], which
//! builds the exact request; the engine sends it and journals it; and the block's
//! [`Exchange`] side says what the answer means: which statuses it accepts, the record
//! changes it maps to (`response`, `error_response`), and where the run goes after the
//! last call (`next`, or `on_error` when a call failed).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diag::{ConfigError, Diagnostics, join, suggest};
use crate::fields::{Fields, kind_of};
use crate::http::{HttpResponse, SendError, vendor_message};
use crate::kinds::plan::{Answer, Calls, Exchange, Exit, Plan, PlannedCall, Refusal, Wording};
use crate::kinds::update::{compile_mapping, render_mapping};
use crate::kinds::{Block, BlockKind, CompileContext, Edge, Registration};
use crate::path::Path;
use crate::preset::{Check, Paginate, parse_accept};
use crate::rules::Condition;
use crate::template::{Escape, JsonTemplate, RenderError, Template};

pub const KIND: Registration = Registration {
    name: "api",
    about: "call a vendor API (a custom request or a preset) and map its response onto the record",
    edge_keys: &["next", "on_error"],
    compile: |value, path, cx, diags| ApiBlock::compile(value, path, cx, diags).map(Block::new),
};

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// A preset parameter bound by a block: its `with` template, if any, and its rules.
#[derive(Debug, Clone)]
pub struct BoundParam {
    pub name: String,
    pub with: Option<JsonTemplate>,
    pub default: Option<Value>,
    pub required: bool,
    pub from_record: bool,
    pub allowed: Option<Vec<Value>>,
}

#[derive(Debug, Clone)]
pub struct ApiBlock {
    pub credential: Option<String>,
    pub preset: Option<String>,
    pub method: String,
    pub url: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(String, Template)>,
    pub body: Option<JsonTemplate>,
    pub params: Vec<BoundParam>,
    pub checks: Vec<Check>,
    pub response: Vec<(String, JsonTemplate)>,
    pub error_response: Vec<(String, JsonTemplate)>,
    pub accept: Vec<u16>,
    /// Sending the request twice does no harm (reads, or writes that set a state).
    pub retry_safe: bool,
    /// Header that carries the idempotency key, and whether the vendor requires it.
    pub idempotency_header: Option<(String, bool)>,
    /// The block's own key template; the engine derives one when absent.
    pub idempotency_key: Option<Template>,
    pub paginate: Option<Paginate>,
    pub for_each: Option<Template>,
    pub where_rules: Option<Condition>,
    pub drop_nulls: bool,
    /// How transient failures are retried; `None` takes the engine's default.
    pub retry: Option<crate::http::retry::RetryPolicy>,
    pub next: Option<String>,
    pub on_error: Option<String>,
}

/// A request exactly as it will be sent, minus authentication (added at send time from
/// the credential, so it never reaches the journal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenderedRequest {
    pub method: String,
    /// Relative URLs are joined to the credential's base URL when sent.
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl RenderedRequest {
    /// `POST /v2/cards`-style one-line summary.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

/// The URL exactly as the HTTP client will put it on the wire, so a dry run shows what a
/// run sends. The URL parser drops `.` and `..` path segments, percent-encoded ones too
/// (`%2E%2E`), so a value of `..` would silently aim the request at another resource
/// (`DELETE /groups/g/members/..` deletes `/groups/g`): such a path is refused instead.
pub fn as_sent(url: &str) -> Result<String, StepError> {
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let path = url[..path_end].split_once("://").map_or(&url[..path_end], |(_, rest)| rest);
    for segment in path.split(['/', '\\']) {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(StepError::Invalid(format!(
                "the URL `{url}` has a `{segment}` path segment (a value that is `.` or `..`?): \
                 HTTP clients remove it and the request would reach another resource; refusing to send it"
            )));
        }
    }
    let absolute = url.starts_with("http://") || url.starts_with("https://");
    let full =
        if absolute { url.to_string() } else { format!("http://roster.invalid/{}", url.trim_start_matches('/')) };
    let parsed =
        reqwest::Url::parse(&full).map_err(|e| StepError::Invalid(format!("`{url}` is not a valid URL: {e}")))?;
    if absolute {
        let mut parsed = parsed;
        parsed.set_fragment(None);
        return Ok(parsed.to_string());
    }
    Ok(match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    })
}

/// Why a step could not go ahead or did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// A template named a variable that does not exist (or is null where a value is needed).
    Render(RenderError),
    /// A preset parameter or check failed before anything was sent.
    Invalid(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Render(e) => write!(f, "{e}"),
            StepError::Invalid(m) => f.write_str(m),
        }
    }
}

impl StepError {
    /// The variable that was missing or null, when that is the problem.
    pub fn variable(&self) -> Option<&str> {
        match self {
            StepError::Render(e) => e.variable(),
            StepError::Invalid(_) => None,
        }
    }
}

impl std::error::Error for StepError {}

impl From<RenderError> for StepError {
    fn from(e: RenderError) -> Self {
        StepError::Render(e)
    }
}

const KEYS: &[&str] = &[
    "type",
    "description",
    "credential",
    "request",
    "preset",
    "with",
    "response",
    "error_response",
    "accept",
    "for_each",
    "where",
    "idempotency_key",
    "retry",
    "next",
    "on_error",
];

impl ApiBlock {
    pub fn compile(value: &Value, path: &str, cx: &CompileContext, diags: &mut Diagnostics) -> Option<ApiBlock> {
        let f = Fields::open(value, path, "an api block", KEYS, diags)?;
        let credential = f.opt_string("credential", diags).map(str::to_string);
        if let (Some(name), Some(known)) = (&credential, cx.credentials)
            && !known.contains(name)
        {
            let help = if known.is_empty() {
                format!("add it with `roster credentials add {name} --kind bearer --base-url URL`")
            } else {
                format!(
                    "{} or add it with `roster credentials add {name} ...`",
                    suggest(name, known.iter().map(String::as_str))
                )
            };
            diags.push(ConfigError::new(f.at("credential"), format!("unknown credential `{name}`")).with_help(help));
        }

        let core = match (f.get("request"), f.opt_string("preset", diags)) {
            (Some(_), Some(_)) => {
                diags.push(
                    ConfigError::new(f.at("preset"), "an api block has either `request` or `preset`, not both")
                        .with_help("remove one of them"),
                );
                None
            }
            (None, None) => {
                diags.push(ConfigError::new(path, "an api block needs `request` or `preset`").with_help(
                    "write a request {\"method\", \"url\", ...} or name a preset such as \"brex.get_user\"",
                ));
                None
            }
            (Some(request), None) => {
                if f.get("with").is_some() {
                    diags.error(f.at("with"), "`with` sets preset parameters; this block has no `preset`");
                }
                compile_custom(request, &f.at("request"), diags)
            }
            (None, Some(name)) => compile_preset(name, &f, cx, diags),
        };
        // A request that did not compile still leaves the other fields to check, so one
        // pass reports them too.
        let compiled = core.is_some();
        let mut block = core.unwrap_or_else(ApiBlock::placeholder);

        block.credential = credential;
        if compiled && block.credential.is_none() && !block.url.source().starts_with("http") {
            diags.push(
                ConfigError::new(f.at("credential"), "a relative URL needs a credential to say which server it is on")
                    .with_help(
                        "set `credential` to a credential whose base URL is the vendor's, or write an absolute URL",
                    ),
            );
        }
        if let Some(resp) = f.opt_object("response", diags) {
            let mapped = compile_mapping(resp, &f.at("response"), diags);
            for (field, t) in mapped {
                block.response.retain(|(k, _)| *k != field);
                block.response.push((field, t));
            }
        }
        if let Some(resp) = f.opt_object("error_response", diags) {
            block.error_response = compile_mapping(resp, &f.at("error_response"), diags);
        }
        if let Some(accept) = f.get("accept") {
            block.accept = parse_accept(accept, &f.at("accept"), diags).unwrap_or_default();
        }
        if let Some(src) = f.opt_string("for_each", diags) {
            block.for_each = compile_template(src, &f.at("for_each"), diags);
        }
        if let Some(w) = f.get("where") {
            if block.for_each.is_none() {
                diags.error(f.at("where"), "`where` filters `for_each` items; this block has no `for_each`");
            }
            block.where_rules = Condition::compile(w, &f.at("where"), diags);
        }
        if let Some(src) = f.opt_string("idempotency_key", diags) {
            block.idempotency_key = compile_template(src, &f.at("idempotency_key"), diags);
            if block.idempotency_header.is_none() {
                block.idempotency_header = Some(("Idempotency-Key".into(), false));
            }
        }
        block.retry = f.get("retry").and_then(|r| crate::http::retry::RetryPolicy::compile(r, &f.at("retry"), diags));
        block.next = f.opt_string("next", diags).map(str::to_string);
        block.on_error = f.opt_string("on_error", diags).map(str::to_string);
        compiled.then_some(block)
    }

    /// Stands in for a block whose request did not compile while its other fields are
    /// checked; never returned.
    fn placeholder() -> ApiBlock {
        let mut diags = Diagnostics::new();
        let request = serde_json::json!({"method": "GET", "url": "/"});
        compile_custom(&request, "", &mut diags).expect("a fixed request compiles")
    }

    /// The `for_each` items this block runs over, after `where`: `(index, item)` pairs.
    /// `None` when the block has no `for_each`.
    pub fn items(&self, scope: &Value) -> Result<Option<Vec<(usize, Value)>>, StepError> {
        let Some(t) = &self.for_each else {
            return Ok(None);
        };
        let list = match t.render_value(scope)? {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => {
                return Err(StepError::Invalid(format!(
                    "for_each `{}` must be a list, found {}",
                    t.source(),
                    kind_of(&other)
                )));
            }
        };
        let mut out = Vec::new();
        for (i, item) in list.into_iter().enumerate() {
            if let Some(rules) = &self.where_rules {
                let item_scope = with_item(scope, &item, i);
                if !rules.evaluate(&item_scope).map_err(|e| StepError::Invalid(e.to_string()))? {
                    continue;
                }
            }
            out.push((i, item));
        }
        Ok(Some(out))
    }

    /// Binds preset parameters into the scope: `with` first, then the record field of the
    /// same name, then the preset's default; then checks required values, enums and checks.
    pub fn bind(&self, scope: &Value) -> Result<Value, StepError> {
        if self.params.is_empty() {
            return Ok(scope.clone());
        }
        let mut bound = scope.clone();
        let preset = self.preset.as_deref().unwrap_or("?");
        for p in &self.params {
            let value = match &p.with {
                Some(t) => t.render(scope)?,
                None => {
                    let from_record = if p.from_record { scope.get(&p.name).cloned() } else { None };
                    match from_record {
                        Some(v) if !v.is_null() => v,
                        _ => p.default.clone().unwrap_or(Value::Null),
                    }
                }
            };
            if value.is_null() && p.required {
                let source = if p.from_record {
                    format!("set it in `with` or give the record a `{}` field", p.name)
                } else {
                    format!("set it in `with` (\"with\": {{\"{}\": ...}})", p.name)
                };
                return Err(StepError::Invalid(format!("preset {preset} needs `{}`: {source}", p.name)));
            }
            if let Some(allowed) = &p.allowed
                && !value.is_null()
                && !allowed.contains(&value)
            {
                return Err(StepError::Invalid(format!("{} must be one of {}, not {value}", p.name, list(allowed))));
            }
            if let Value::Object(m) = &mut bound {
                m.insert(p.name.clone(), value);
            }
        }
        for check in &self.checks {
            let applies = match &check.when {
                Some(w) => w.evaluate(&bound).map_err(|e| StepError::Invalid(e.to_string()))?,
                None => true,
            };
            if applies && !check.require.evaluate(&bound).map_err(|e| StepError::Invalid(e.to_string()))? {
                return Err(StepError::Invalid(format!("{}: {}", preset, check.message)));
            }
        }
        Ok(bound)
    }

    /// Renders the request for `scope` (which already holds `item` for `for_each`).
    /// `default_key` is the idempotency key the engine derived for this step.
    pub fn render(&self, scope: &Value, default_key: &str) -> Result<RenderedRequest, StepError> {
        let bound = self.bind(scope)?;
        let mut url = self.url.render_string(&bound, Escape::UrlComponent)?;
        let mut query = Vec::new();
        for (k, t) in &self.query {
            let v = t.render_string(&bound, Escape::UrlComponent)?;
            query.push(format!("{}={v}", encode_component(k)));
        }
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
        let mut headers = Vec::new();
        for (name, t) in &self.headers {
            let value = t.render_string(&bound, Escape::None)?;
            if value.contains(['\r', '\n']) {
                return Err(StepError::Invalid(format!(
                    "header `{name}` would contain a line break (from `{}`); refusing to send it",
                    t.source()
                )));
            }
            headers.push((name.clone(), value));
        }
        if let Some((header, _)) = &self.idempotency_header {
            let key = match &self.idempotency_key {
                Some(t) => t.render_string(&bound, Escape::None)?,
                None => default_key.to_string(),
            };
            if key.contains(['\r', '\n']) || key.is_empty() {
                return Err(StepError::Invalid("the idempotency key is empty or has a line break".into()));
            }
            headers.push((header.clone(), key));
        }
        let body = match &self.body {
            Some(t) => {
                let mut b = t.render(&bound)?;
                if self.drop_nulls {
                    drop_nulls(&mut b);
                }
                Some(b)
            }
            None => None,
        };
        if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        let url = as_sent(&url)?;
        Ok(RenderedRequest { method: self.method.clone(), url, headers, body })
    }

    pub fn accepts(&self, status: u16) -> bool {
        if self.accept.is_empty() { (200..300).contains(&status) } else { self.accept.contains(&status) }
    }

    /// Record changes from a successful response; `scope` holds `response`.
    pub fn map_response(&self, scope: &Value) -> Result<Map<String, Value>, RenderError> {
        render_mapping(&self.response, scope)
    }

    /// Record changes from a failed response (`error_response`).
    pub fn map_error_response(&self, scope: &Value) -> Result<Map<String, Value>, RenderError> {
        render_mapping(&self.error_response, scope)
    }

    /// Whether the request may be sent again after a crash left its outcome unknown.
    pub fn safe_to_resend(&self) -> bool {
        self.retry_safe || self.idempotency_header.is_some() || self.method == "GET" || self.method == "HEAD"
    }
}

impl BlockKind for ApiBlock {
    fn kind(&self) -> &'static str {
        "api"
    }

    fn edges(&self) -> Vec<Edge> {
        super::edges(&[("next", &self.next), ("on_error", &self.on_error)])
    }

    fn variables(&self) -> Vec<Path> {
        let mut vars = self.url.variables();
        vars.extend(self.query.iter().flat_map(|(_, t)| t.variables()));
        vars.extend(self.headers.iter().flat_map(|(_, t)| t.variables()));
        if let Some(b) = &self.body {
            vars.extend(b.variables());
        }
        for p in &self.params {
            if let Some(w) = &p.with {
                vars.extend(w.variables());
            }
        }
        vars.extend(self.response.iter().flat_map(|(_, t)| t.variables()));
        vars.extend(self.error_response.iter().flat_map(|(_, t)| t.variables()));
        if let Some(t) = &self.for_each {
            vars.extend(t.variables());
        }
        if let Some(t) = &self.idempotency_key {
            vars.extend(t.variables());
        }
        // Parameter names are bound by the block itself, not read from the scope.
        vars.retain(|v| !self.params.iter().any(|p| p.name == v.root()));
        vars
    }

    fn label(&self) -> String {
        let call = match &self.preset {
            Some(p) => p.clone(),
            None => format!("{} {}", self.method, self.url.source()),
        };
        match (&self.for_each, &self.where_rules) {
            (Some(items), Some(rules)) => format!("{call}\nfor each {} where {rules}", items.source()),
            (Some(items), None) => format!("{call}\nfor each {}", items.source()),
            _ => call,
        }
    }

    fn plan(&self, scope: &Value, key: &dyn Fn(Option<usize>) -> String) -> Plan<'_> {
        let items = match self.items(scope) {
            Ok(items) => items,
            Err(e) => {
                return Plan::Refuse(Refusal {
                    message: e.to_string(),
                    variable: e.variable().map(str::to_string),
                    in_run: Wording::InContext,
                    in_dry_run: Wording::Prefixed("would fail: for_each: "),
                    on_error: self.on_error.clone(),
                    dry_next: self.next.clone(),
                });
            }
        };
        let plan_call = |item: Option<(usize, Value)>| {
            let request = match &item {
                Some((i, value)) => self.render(&with_item(scope, value, *i), &key(Some(*i))),
                None => self.render(scope, &key(None)),
            };
            let request = request.map_err(|e| Refusal {
                message: e.to_string(),
                variable: e.variable().map(str::to_string),
                in_run: match e {
                    StepError::Render(_) => Wording::InContext,
                    StepError::Invalid(_) => Wording::AfterBlock,
                },
                in_dry_run: Wording::Prefixed("would fail: "),
                on_error: self.on_error.clone(),
                dry_next: self.next.clone(),
            });
            PlannedCall { item, request }
        };
        let for_each = items.is_some();
        let calls = match items {
            None => vec![plan_call(None)],
            Some(list) => list.into_iter().map(|item| plan_call(Some(item))).collect(),
        };
        Plan::Send(Calls { exchange: self, for_each, calls })
    }

    fn exchange(&self) -> Option<&dyn Exchange> {
        Some(self)
    }
}

impl Exchange for ApiBlock {
    fn credential(&self) -> Option<&str> {
        self.credential.as_deref()
    }

    fn paginate(&self) -> Option<&Paginate> {
        self.paginate.as_ref()
    }

    fn retry(&self) -> Option<&crate::http::retry::RetryPolicy> {
        self.retry.as_ref()
    }

    fn safe_to_resend(&self) -> bool {
        ApiBlock::safe_to_resend(self)
    }

    fn answer(&self, scope: &Value, item: Option<(usize, &Value)>, response: &HttpResponse) -> Answer {
        let mut scope = match item {
            Some((i, value)) => with_item(scope, value, i),
            None => scope.clone(),
        };
        if let Value::Object(m) = &mut scope {
            m.insert("response".into(), response.body.clone());
            m.insert("http".into(), serde_json::json!({"status": response.status}));
        }
        if self.accepts(response.status) {
            Answer { changes: self.map_response(&scope), failure: None }
        } else {
            Answer { changes: self.map_error_response(&scope), failure: Some(self.describe(&Ok(response.clone()))) }
        }
    }

    fn leave(&self, failures: &[String]) -> Exit {
        let Some(first) = failures.first() else { return Exit::Next(self.next.clone()) };
        if let Some(target) = &self.on_error {
            return Exit::Next(Some(target.clone()));
        }
        Exit::Fail(match failures.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more)", n - 1),
        })
    }

    fn describe(&self, sent: &Result<HttpResponse, SendError>) -> String {
        let vendor = self.credential.as_deref().unwrap_or("the server");
        match sent {
            Ok(resp) => match vendor_message(&resp.body) {
                Some(msg) => format!("{vendor} answered {}: {msg}", resp.status),
                None => format!("{vendor} answered {} with no message", resp.status),
            },
            Err(e) => format!("{vendor} could not be reached: {}", e.message),
        }
    }

    fn success_next(&self) -> Option<String> {
        self.next.clone()
    }
}

/// The scope for one `for_each` item: `item` and `item_index` added.
pub fn with_item(scope: &Value, item: &Value, index: usize) -> Value {
    let mut s = scope.clone();
    if let Value::Object(m) = &mut s {
        m.insert("item".into(), item.clone());
        m.insert("item_index".into(), Value::from(index));
    }
    s
}

pub(crate) fn compile_template(src: &str, path: &str, diags: &mut Diagnostics) -> Option<Template> {
    match Template::compile(src) {
        Ok(t) => Some(t),
        Err(e) => {
            diags.error(path, format!("bad template: {e}"));
            None
        }
    }
}

fn compile_method(m: &str, path: &str, diags: &mut Diagnostics) -> Option<String> {
    let upper = m.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Some(upper)
    } else {
        diags.push(
            ConfigError::new(path, format!("unknown HTTP method `{m}`"))
                .with_help(suggest(&upper, METHODS.iter().copied())),
        );
        None
    }
}

fn compile_headers(map: &Map<String, Value>, path: &str, diags: &mut Diagnostics) -> Vec<(String, Template)> {
    let mut out = Vec::new();
    for (name, v) in map {
        let at = join(path, name);
        if name.eq_ignore_ascii_case("authorization") {
            diags.push(
                ConfigError::new(&at, "do not write Authorization in a workflow file")
                    .with_help("secrets belong in a credential: `roster credentials add` and `\"credential\": NAME`"),
            );
            continue;
        }
        match v.as_str() {
            Some(src) => {
                if let Some(t) = compile_template(src, &at, diags) {
                    out.push((name.clone(), t));
                }
            }
            None => diags.error(&at, format!("header values must be strings, found {}", kind_of(v))),
        }
    }
    out
}

fn compile_custom(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<ApiBlock> {
    let r = Fields::open(value, path, "a request", &["method", "url", "headers", "query", "body"], diags)?;
    let method = r.string("method", diags).and_then(|m| compile_method(m, &r.at("method"), diags));
    let url = r.string("url", diags).and_then(|u| compile_template(u, &r.at("url"), diags));
    let headers =
        r.opt_object("headers", diags).map(|m| compile_headers(m, &r.at("headers"), diags)).unwrap_or_default();
    let query = r
        .opt_object("query", diags)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let at = join(&r.at("query"), k);
                    let src = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    compile_template(&src, &at, diags).map(|t| (k.clone(), t))
                })
                .collect()
        })
        .unwrap_or_default();
    let body = match r.get("body") {
        None | Some(Value::Null) => None,
        Some(b) => Some(JsonTemplate::compile(b, &r.at("body"), diags)?),
    };
    let method = method?;
    if body.is_some() && (method == "GET" || method == "HEAD") {
        diags.error(r.at("body"), format!("a {method} request has no body"));
    }
    Some(ApiBlock {
        credential: None,
        preset: None,
        retry_safe: method == "GET" || method == "HEAD" || method == "PUT",
        method,
        url: url?,
        query,
        headers,
        body,
        params: Vec::new(),
        checks: Vec::new(),
        response: Vec::new(),
        error_response: Vec::new(),
        accept: Vec::new(),
        idempotency_header: None,
        idempotency_key: None,
        paginate: None,
        for_each: None,
        where_rules: None,
        drop_nulls: false,
        retry: None,
        next: None,
        on_error: None,
    })
}

fn compile_preset(name: &str, f: &Fields, cx: &CompileContext, diags: &mut Diagnostics) -> Option<ApiBlock> {
    let Some(preset) = cx.presets.get(name) else {
        diags.push(
            ConfigError::new(f.at("preset"), format!("unknown preset `{name}`"))
                .with_help(format!("{} (`roster presets list` shows them all)", suggest(name, cx.presets.names()))),
        );
        return None;
    };
    let with = f.opt_object("with", diags).cloned().unwrap_or_default();
    let mut ok = true;
    for key in with.keys() {
        if preset.parameter(key).is_none() {
            ok = false;
            let names: Vec<&str> = preset.parameters.iter().map(|p| p.name.as_str()).collect();
            diags.push(
                ConfigError::new(join(&f.at("with"), key), format!("preset {name} has no parameter `{key}`"))
                    .with_help(suggest(key, names.iter().copied())),
            );
        }
    }
    let mut params = Vec::new();
    for p in &preset.parameters {
        let at = join(&f.at("with"), &p.name);
        let with_t = match with.get(&p.name) {
            Some(v) => {
                if let Some(allowed) = &p.allowed
                    && is_literal(v)
                    && !v.is_null()
                    && !allowed.contains(v)
                {
                    ok = false;
                    diags.push(
                        ConfigError::new(&at, format!("{} must be one of {}", p.name, list(allowed)))
                            .with_help(format!("found {v}")),
                    );
                }
                let t = JsonTemplate::compile(v, &at, diags);
                ok &= t.is_some();
                t
            }
            None => {
                if p.required && !p.from_record && p.default.is_none() {
                    ok = false;
                    let choices = p.allowed.as_ref().map(|a| format!(" (one of {})", list(a))).unwrap_or_default();
                    diags.push(
                        ConfigError::new(&at, format!("preset {name} needs `{}` in `with`{choices}", p.name))
                            .with_help(p.description.clone()),
                    );
                }
                None
            }
        };
        params.push(BoundParam {
            name: p.name.clone(),
            with: with_t,
            default: p.default.clone(),
            required: p.required,
            from_record: p.from_record,
            allowed: p.allowed.clone(),
        });
    }
    let at = format!("{} (preset {name})", f.at("preset"));
    let url = compile_template(&preset.url, &at, diags);
    let headers = compile_headers(&preset.headers, &at, diags);
    let body = match &preset.body {
        Some(b) => Some(JsonTemplate::compile(b, &at, diags)?),
        None => None,
    };
    let response = compile_mapping(&preset.response, &at, diags);
    if !ok {
        return None;
    }
    Some(ApiBlock {
        credential: None,
        preset: Some(name.to_string()),
        method: preset.method.clone(),
        url: url?,
        query: Vec::new(),
        headers,
        body,
        params,
        checks: preset.checks.clone(),
        response,
        error_response: Vec::new(),
        accept: preset.accept.clone(),
        retry_safe: preset.retry_safe,
        idempotency_header: preset.idempotency.as_ref().map(|i| (i.header.clone(), i.required)),
        idempotency_key: None,
        paginate: preset.paginate.clone(),
        for_each: None,
        where_rules: None,
        drop_nulls: preset.drop_nulls,
        retry: None,
        next: None,
        on_error: None,
    })
}

/// A JSON value with no template in it.
fn is_literal(v: &Value) -> bool {
    match v {
        Value::String(s) => Template::compile(s).map(|t| t.is_literal()).unwrap_or(false),
        Value::Array(a) => a.iter().all(is_literal),
        Value::Object(m) => m.values().all(is_literal),
        _ => true,
    }
}

fn list(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes object keys whose value is null, at every depth.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod url_tests {
    use super::as_sent;

    #[test]
    fn the_url_parser_drops_encoded_dot_segments_so_they_are_refused() {
        // Why encoding is not enough: the parser treats `%2E%2E` as `..`.
        let parsed = reqwest::Url::parse("http://h/v2/cards/%2E%2E/lock").unwrap();
        assert_eq!(parsed.path(), "/v2/lock");
        for url in ["/v2/cards/../lock", "/v2/cards/./lock", "/v2/cards/%2E%2E/lock", "/a/.%2e", "https://h/a/%2e/b"] {
            let err = as_sent(url).unwrap_err().to_string();
            assert!(err.contains("path segment"), "{url}: {err}");
        }
    }

    #[test]
    fn as_sent_is_what_the_client_sends() {
        assert_eq!(as_sent("/v2/cards/.../lock?x=..").unwrap(), "/v2/cards/.../lock?x=..");
        assert_eq!(as_sent("/a b/c").unwrap(), "/a%20b/c");
        assert_eq!(as_sent("users/1").unwrap(), "/users/1");
        assert_eq!(as_sent("https://h.test:8443/x?y=1#frag").unwrap(), "https://h.test:8443/x?y=1");
    }
}

#[cfg(test)]
mod plan_tests {
    use serde_json::json;

    use super::*;
    use crate::preset::PresetCatalog;

    fn block(value: Value) -> ApiBlock {
        let presets = PresetCatalog::new();
        let cx = CompileContext { presets: &presets, credentials: None };
        let mut diags = Diagnostics::new();
        let block = ApiBlock::compile(&value, "b", &cx, &mut diags);
        block.unwrap_or_else(|| panic!("{:?}", diags.errors()))
    }

    fn lock_cards() -> ApiBlock {
        block(json!({"type": "api", "credential": "brex", "for_each": "<<cards>>",
                     "request": {"method": "POST", "url": "/v2/cards/<<item.id>>/lock"},
                     "idempotency_key": "lock-<<item.id>>-<<run.id>>",
                     "response": {"locked": "<<response.ok>>"}, "error_response": {"lock_error": "<<http.status>>"},
                     "next": "done", "on_error": "tell"}))
    }

    fn response(status: u16, body: Value) -> HttpResponse {
        HttpResponse { status, body, trace_id: None, retry_after_secs: None, elapsed_ms: 1, pages: 1 }
    }

    #[test]
    fn plans_one_request_per_item_with_the_key_the_driver_supplies() {
        let mut b = block(json!({"type": "api", "credential": "brex", "for_each": "<<cards>>",
                                 "request": {"method": "POST", "url": "/v2/cards/<<item.id>>/lock"}}));
        assert!(!b.safe_to_resend(), "a POST with no idempotency key");
        // As a preset with an idempotency header declares it.
        b.idempotency_header = Some(("Idempotency-Key".into(), true));
        let scope = json!({"cards": [{"id": "c1"}, {"id": "c2"}], "run": {"id": "r"}});
        let Plan::Send(calls) = b.plan(&scope, &|item| format!("key-{}", item.unwrap_or(99))) else { panic!("a send") };
        assert!(calls.for_each);
        assert_eq!(calls.exchange.credential(), Some("brex"));
        assert!(calls.exchange.safe_to_resend(), "a derived idempotency key makes a POST safe to resend");
        let sent: Vec<(Option<usize>, String, String)> = calls
            .calls
            .iter()
            .map(|c| {
                let r = c.request.as_ref().unwrap();
                let key = r.headers.iter().find(|(k, _)| k == "Idempotency-Key").unwrap().1.clone();
                (c.index(), r.line(), key)
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                (Some(0), "POST /v2/cards/c1/lock".to_string(), "key-0".to_string()),
                (Some(1), "POST /v2/cards/c2/lock".to_string(), "key-1".to_string())
            ]
        );
    }

    #[test]
    fn a_single_call_gets_the_blocks_key_and_a_bad_item_is_refused_alone() {
        let b =
            block(json!({"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/users/<<id>>"}}));
        let Plan::Send(calls) = b.plan(&json!({"id": "u1"}), &|item| format!("{item:?}")) else { panic!("a send") };
        assert!(!calls.for_each);
        assert_eq!(calls.calls.len(), 1);
        assert_eq!(calls.calls[0].request.as_ref().unwrap().url, "/users/u1");
        let Plan::Send(calls) = b.plan(&json!({}), &|_| String::new()) else { panic!("a send") };
        let refusal = calls.calls[0].request.as_ref().unwrap_err();
        assert_eq!(refusal.variable.as_deref(), Some("id"));
        assert_eq!(refusal.in_run, Wording::InContext);
    }

    #[test]
    fn for_each_over_something_that_is_not_a_list_is_refused_with_on_error() {
        let Plan::Refuse(r) = lock_cards().plan(&json!({"cards": 3}), &|_| String::new()) else { panic!("a refusal") };
        assert_eq!(r.on_error.as_deref(), Some("tell"));
        assert_eq!(r.dry_next.as_deref(), Some("done"));
        assert_eq!(r.in_dry_run, Wording::Prefixed("would fail: for_each: "));
    }

    #[test]
    fn an_accepted_answer_maps_response_and_a_refused_one_error_response() {
        let b = lock_cards();
        let scope = json!({"cards": [{"id": "c1"}]});
        let ok = b.answer(&scope, Some((0, &json!({"id": "c1"}))), &response(200, json!({"ok": true})));
        assert_eq!(ok.failure, None);
        assert_eq!(Value::Object(ok.changes.unwrap()), json!({"locked": true}));
        let refused = b.answer(&scope, None, &response(404, json!({"message": "no such card"})));
        assert_eq!(refused.failure.as_deref(), Some("brex answered 404: no such card"));
        assert_eq!(Value::Object(refused.changes.unwrap()), json!({"lock_error": 404}));
    }

    #[test]
    fn leaving_goes_on_error_when_a_call_failed_and_fails_without_it() {
        assert_eq!(lock_cards().leave(&[]), Exit::Next(Some("done".into())));
        assert_eq!(lock_cards().leave(&["x".into()]), Exit::Next(Some("tell".into())));
        let plain = block(json!({"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/u"}}));
        assert_eq!(plain.leave(&["a".into(), "b".into(), "c".into()]), Exit::Fail("a (and 2 more)".into()));
        assert!(plain.safe_to_resend());
        let unreached = SendError { kind: crate::http::SendErrorKind::Timeout, message: "timed out".into() };
        assert_eq!(plain.describe(&Err(unreached)), "brex could not be reached: timed out");
    }
}
