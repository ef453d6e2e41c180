//! Compiled templates: `<<path>>` variables, `{{path}}` too, and handlebars blocks.
//!
//! Compiled once when a workflow loads. Text with only variables renders without
//! handlebars (a lookup per variable, no copy of the scope); text with blocks or helpers
//! is translated once and rendered by a shared strict handlebars registry.

mod helpers;
mod translate;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use handlebars::{Context, Output, RenderContext, RenderErrorReason, Renderable};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::diag::{self, ConfigError, Diagnostics};
use crate::path::{self, Path};
use translate::{Piece, Trim};

/// How interpolated values are escaped. Literal template text is never touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Escape {
    /// Values go in as they are.
    #[default]
    None,
    /// Each value is percent-encoded, leaving only RFC 3986 unreserved characters, so it
    /// is safe as one URL path segment or query value (`../` becomes `..%2F`).
    UrlComponent,
}

/// Everything but RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub(crate) fn url_encode(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// A template that failed to compile: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub help: Option<String>,
    /// Byte offset in the source.
    pub offset: usize,
    /// 1-based line and column (in characters).
    pub line: usize,
    pub column: usize,
    near: String,
}

impl TemplateError {
    fn at(source: &str, offset: usize, message: impl Into<String>) -> Self {
        // Offsets mapped back from handlebars' text may land inside a character.
        let offset = source.floor_char_boundary(offset);
        let (line, column) = translate::line_col(source, offset);
        let near: String = source[offset..].lines().next().unwrap_or("").chars().take(24).collect();
        Self { message: message.into(), help: None, offset, line, column, near }
    }

    fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The message with its position, without the help.
    pub fn describe(&self) -> String {
        let mut s = format!("{} at line {}, column {}", self.message, self.line, self.column);
        if !self.near.is_empty() {
            s.push_str(&format!(" (near `{}`)", self.near));
        }
        s
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())?;
        if let Some(help) = &self.help {
            write!(f, "; {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateError {}

/// Why a template could not be rendered against a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("variable `{variable}` does not exist{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Missing {
        variable: String,
        /// "did you mean `now`?", from the names the scope does hold there.
        hint: Option<String>,
    },
    #[error(
        "variable `{variable}` is null (if it is optional, write {{{{#if {variable}}}}}…{{{{/if}}}} or {{{{default {variable} \"\"}}}})"
    )]
    Null { variable: String },
    #[error("{0}")]
    Other(String),
}

impl RenderError {
    /// The variable the error is about, if any.
    pub fn variable(&self) -> Option<&str> {
        match self {
            RenderError::Missing { variable, .. } | RenderError::Null { variable } => Some(variable),
            RenderError::Other(_) => None,
        }
    }
}

/// Paths in first-use order without repeats; the set keeps adding linear in the count.
#[derive(Debug, Default)]
struct UniquePaths {
    order: Vec<Path>,
    seen: std::collections::HashSet<Path>,
}

impl UniquePaths {
    fn add(&mut self, path: &Path) {
        if !self.seen.contains(path) {
            self.seen.insert(path.clone());
            self.order.push(path.clone());
        }
    }
}

/// At most this many tags in a template that needs handlebars. Handlebars' compiler
/// works out each tag's line and column from the start of the text, so its time grows
/// with tags × length; this keeps one template's compile to milliseconds.
const MAX_HANDLEBARS_TAGS: usize = 1_000;

/// A compiled template. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    body: Body,
    vars: Vec<Path>,
}

#[derive(Debug, Clone)]
enum Body {
    Literal(String),
    Single(Path),
    Parts(Arc<[Part]>),
    Handlebars(Arc<handlebars::Template>),
}

#[derive(Debug)]
enum Part {
    Text(String),
    Var(Path),
}

impl Template {
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let scan = translate::scan(source)?;
        let pieces = scan.pieces;
        let simple = pieces.iter().all(|(_, p)| match p {
            Piece::Text(_) => true,
            Piece::Var { trim, .. } => trim.is_none(),
            _ => false,
        });
        let body = if pieces.iter().all(|(_, p)| matches!(p, Piece::Text(_))) {
            let mut text = String::new();
            for (_, p) in &pieces {
                if let Piece::Text(t) = p {
                    text.push_str(t);
                }
            }
            Body::Literal(text)
        } else if simple && pieces.len() == 1 {
            match pieces.into_iter().next() {
                Some((_, Piece::Var { path, .. })) => Body::Single(path),
                _ => unreachable!("checked above"),
            }
        } else if simple {
            let parts: Vec<Part> = pieces
                .into_iter()
                .map(|(_, p)| match p {
                    Piece::Text(t) => Part::Text(t),
                    Piece::Var { path, .. } => Part::Var(path),
                    _ => unreachable!("checked above"),
                })
                .collect();
            Body::Parts(parts.into())
        } else {
            Body::Handlebars(Arc::new(to_handlebars(source, &pieces)?))
        };
        Ok(Template { source: source.to_string(), body, vars: scan.vars })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template has no variables or handlebars tags at all.
    pub fn is_literal(&self) -> bool {
        matches!(self.body, Body::Literal(_))
    }

    /// The literal text, when [`is_literal`](Self::is_literal).
    pub fn literal(&self) -> Option<&str> {
        match &self.body {
            Body::Literal(s) => Some(s),
            _ => None,
        }
    }

    /// Paths read from the root scope. Paths inside `{{#each}}`/`{{#with}}` are relative
    /// to the item and are left out.
    pub fn variables(&self) -> Vec<Path> {
        self.vars.clone()
    }

    /// Some when the whole source is one variable, e.g. `<<x.y>>` or `{{x.y}}`.
    pub fn single_variable(&self) -> Option<&Path> {
        match &self.body {
            Body::Single(p) => Some(p),
            _ => None,
        }
    }

    /// A single-variable template gives the variable's own JSON value (number, object,
    /// null …); anything else gives the rendered string.
    pub fn render_value(&self, scope: &Value) -> Result<Value, RenderError> {
        self.render_value_with(scope, &mut None)
    }

    pub fn render_string(&self, scope: &Value, escape: Escape) -> Result<String, RenderError> {
        self.render_string_with(scope, escape, &mut None)
    }

    /// `ctx` caches the scope copy handlebars needs, so a JSON tree makes it only once.
    fn render_value_with(&self, scope: &Value, ctx: &mut Option<Context>) -> Result<Value, RenderError> {
        match &self.body {
            Body::Single(p) => p.lookup(scope).cloned().ok_or_else(|| missing(p, scope)),
            Body::Literal(s) => Ok(Value::String(s.clone())),
            _ => self.render_string_with(scope, Escape::None, ctx).map(Value::String),
        }
    }

    fn render_string_with(
        &self,
        scope: &Value,
        escape: Escape,
        ctx: &mut Option<Context>,
    ) -> Result<String, RenderError> {
        match &self.body {
            Body::Literal(s) => Ok(s.clone()),
            Body::Single(p) => {
                let value = p.lookup(scope).ok_or_else(|| missing(p, scope))?;
                Ok(escaped(format_value(value, &p.to_string())?, escape).into_owned())
            }
            Body::Parts(parts) => {
                let mut out = String::with_capacity(self.source.len() + 32);
                for part in parts.iter() {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Var(p) => {
                            let value = p.lookup(scope).ok_or_else(|| missing(p, scope))?;
                            out.push_str(&escaped(format_value(value, &p.to_string())?, escape));
                        }
                    }
                }
                Ok(out)
            }
            Body::Handlebars(tpl) => {
                let ctx = ctx.get_or_insert_with(|| Context::from(scope.clone()));
                let mut rc = RenderContext::new(None);
                let mut out = StrOut(String::with_capacity(self.source.len() + 32));
                tpl.render(helpers::registry(escape), ctx, &mut rc, &mut out)
                    .map_err(|e| from_handlebars(e).hinted(scope))?;
                Ok(out.0)
            }
        }
    }
}

fn missing(p: &Path, scope: &Value) -> RenderError {
    RenderError::Missing { variable: p.to_string(), hint: None }.hinted(scope)
}

impl RenderError {
    /// Adds "did you mean …" to a missing variable, from the keys the scope holds where
    /// the path first fails (record fields and the built-ins `now`, `today`, `run`,
    /// `steps`, `record`, `item` at the top).
    fn hinted(self, scope: &Value) -> RenderError {
        let RenderError::Missing { variable, hint: None } = self else { return self };
        let hint = Path::parse(&variable).ok().and_then(|p| {
            let mut at = scope;
            for seg in p.segments() {
                let path::Segment::Key(key) = seg else { return None };
                let map = at.as_object()?;
                match map.get(key) {
                    Some(next) => at = next,
                    None => return diag::closest(key, map.keys().map(String::as_str)),
                }
            }
            None
        });
        RenderError::Missing { variable, hint: hint.map(|k| format!("did you mean `{k}`?")) }
    }
}

fn escaped(text: Cow<'_, str>, escape: Escape) -> Cow<'_, str> {
    match escape {
        Escape::None => text,
        Escape::UrlComponent => Cow::Owned(url_encode(&text)),
    }
}

/// A value as it appears inside text: strings as-is, other scalars as JSON, containers
/// as compact JSON. Null is an error: an empty value would quietly produce `/users/`.
pub(crate) fn format_value<'a>(value: &'a Value, name: &str) -> Result<Cow<'a, str>, RenderError> {
    match value {
        Value::String(s) => Ok(Cow::Borrowed(s)),
        Value::Null => Err(RenderError::Null { variable: name.to_string() }),
        Value::Bool(b) => Ok(Cow::Borrowed(if *b { "true" } else { "false" })),
        other => Ok(Cow::Owned(other.to_string())),
    }
}

fn from_handlebars(e: handlebars::RenderError) -> RenderError {
    match e.reason() {
        RenderErrorReason::NestedError(inner) => match inner.downcast_ref::<RenderError>() {
            Some(ours) => ours.clone(),
            None => RenderError::Other(inner.to_string()),
        },
        RenderErrorReason::MissingVariable(Some(p)) => RenderError::Missing { variable: p.clone(), hint: None },
        RenderErrorReason::MissingVariable(None) => {
            RenderError::Other("a value passed to a helper does not exist".to_string())
        }
        RenderErrorReason::InvalidJsonIndex(seg) => {
            RenderError::Other(format!("`{seg}` is used on a list; use an index such as `[0]`"))
        }
        other => RenderError::Other(other.to_string()),
    }
}

struct StrOut(String);

impl Output for StrOut {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        self.0.push_str(seg);
        Ok(())
    }

    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), std::io::Error> {
        fmt::Write::write_fmt(&mut self.0, args).map_err(std::io::Error::other)
    }
}

/// Builds the handlebars text for the pieces and compiles it, mapping errors back to
/// the user's source.
fn to_handlebars(source: &str, pieces: &[(usize, Piece)]) -> Result<handlebars::Template, TemplateError> {
    if let Some((at, _)) = pieces.iter().filter(|(_, p)| !matches!(p, Piece::Text(_))).nth(MAX_HANDLEBARS_TAGS) {
        return Err(TemplateError::at(source, *at, format!("more than {MAX_HANDLEBARS_TAGS} tags in one template"))
            .with_help("split the text across several fields or blocks"));
    }
    let mut text = String::with_capacity(source.len() + 64);
    // (offset in `text`, offset in `source`) at the start of each piece.
    let mut map: Vec<(usize, usize)> = Vec::with_capacity(pieces.len());
    let var = |text: &mut String, reference: &str, name: &str, trim: Trim| {
        text.push_str(trim.open());
        text.push_str("roster_var ");
        text.push_str(reference);
        text.push(' ');
        text.push_str(&json_string(name));
        text.push_str(trim.close());
    };
    for (at, piece) in pieces {
        map.push((text.len(), *at));
        match piece {
            // `{{` or `\` in raw text would be read as handlebars escapes.
            Piece::Text(t) if t.contains("{{") || t.contains('\\') => {
                text.push_str("{{roster_lit ");
                text.push_str(&json_string(t));
                text.push_str("}}");
            }
            Piece::Text(t) => text.push_str(t),
            Piece::Var { path, trim } => {
                let reference = translate::hb_path(path).map_err(|m| TemplateError::at(source, *at, m))?;
                var(&mut text, &reference, &path.to_string(), *trim);
            }
            Piece::HbVar { reference, trim } => var(&mut text, reference, reference, *trim),
            Piece::Hb(h) => text.push_str(h),
        }
    }
    handlebars::Template::compile(&text).map_err(|e| {
        let at = e.pos().map_or(source.len(), |(line, col)| {
            let t = offset_of(&text, line, col);
            let (t0, s0) = map.iter().rev().find(|(t0, _)| *t0 <= t).copied().unwrap_or((0, 0));
            (s0 + (t - t0)).min(source.len())
        });
        let message = match e.reason() {
            handlebars::TemplateErrorReason::InvalidSyntax(_) => "invalid handlebars syntax".to_string(),
            other => other.to_string(),
        };
        TemplateError::at(source, at, message)
    })
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Byte offset of a 1-based (line, column-in-chars) position.
fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let line_start =
        if line <= 1 { 0 } else { text.match_indices('\n').nth(line - 2).map_or(text.len(), |(i, _)| i + 1) };
    text[line_start..].char_indices().nth(col.saturating_sub(1)).map_or(text.len(), |(i, _)| line_start + i)
}

/// A JSON tree whose string leaves are templates; object keys stay literal.
#[derive(Debug, Clone)]
pub struct JsonTemplate {
    node: Node,
    vars: Vec<Path>,
}

#[derive(Debug, Clone)]
enum Node {
    /// A subtree with no templates in it.
    Fixed(Value),
    Text(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl JsonTemplate {
    /// Compiles every string leaf. Each bad leaf adds one error at its JSON path (under
    /// `path`); returns None if any failed.
    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<JsonTemplate> {
        let before = diags.len();
        let mut vars = UniquePaths::default();
        let node = compile_node(value, path, diags, &mut vars);
        (diags.len() == before).then_some(JsonTemplate { node, vars: vars.order })
    }

    /// Renders each string leaf on its own with [`Template::render_value`], so a value
    /// can never break out of its string, and `"<<n>>"` keeps n's type.
    pub fn render(&self, scope: &Value) -> Result<Value, RenderError> {
        render_node(&self.node, scope, &mut None)
    }

    pub fn variables(&self) -> Vec<Path> {
        self.vars.clone()
    }

    /// The value itself when the tree holds no variables.
    pub fn as_literal(&self) -> Option<&Value> {
        match &self.node {
            Node::Fixed(v) => Some(v),
            _ => None,
        }
    }

    /// The template, when the whole tree is one string.
    pub fn as_template(&self) -> Option<&Template> {
        match &self.node {
            Node::Text(t) => Some(t),
            _ => None,
        }
    }
}

fn compile_node(value: &Value, at: &str, diags: &mut Diagnostics, vars: &mut UniquePaths) -> Node {
    match value {
        Value::String(s) => match Template::compile(s) {
            Ok(t) if t.is_literal() => Node::Fixed(Value::String(t.literal().unwrap_or_default().to_string())),
            Ok(t) => {
                for v in &t.vars {
                    vars.add(v);
                }
                Node::Text(t)
            }
            Err(e) => {
                let mut err = ConfigError::new(at, format!("invalid template: {}", e.describe()));
                err.help = e.help;
                diags.push(err);
                Node::Fixed(Value::Null)
            }
        },
        Value::Array(items) => {
            let nodes: Vec<Node> = items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_node(v, &diag::join(at, &format!("[{i}]")), diags, vars))
                .collect();
            if nodes.iter().all(|n| matches!(n, Node::Fixed(_))) {
                Node::Fixed(Value::Array(nodes.into_iter().map(fixed).collect()))
            } else {
                Node::Array(nodes)
            }
        }
        Value::Object(map) => {
            let nodes: Vec<(String, Node)> =
                map.iter().map(|(k, v)| (k.clone(), compile_node(v, &child_path(at, k), diags, vars))).collect();
            if nodes.iter().all(|(_, n)| matches!(n, Node::Fixed(_))) {
                Node::Fixed(Value::Object(nodes.into_iter().map(|(k, n)| (k, fixed(n))).collect()))
            } else {
                Node::Object(nodes)
            }
        }
        other => Node::Fixed(other.clone()),
    }
}

fn fixed(node: Node) -> Value {
    match node {
        Node::Fixed(v) => v,
        _ => unreachable!("only called on fixed nodes"),
    }
}

/// `parent.key`, or `parent['odd key']` when the key isn't a plain name.
fn child_path(parent: &str, key: &str) -> String {
    if path::is_name(key) {
        diag::join(parent, key)
    } else {
        diag::join(parent, &format!("[{}]", path::quote_key(key)))
    }
}

fn render_node(node: &Node, scope: &Value, ctx: &mut Option<Context>) -> Result<Value, RenderError> {
    Ok(match node {
        Node::Fixed(v) => v.clone(),
        Node::Text(t) => t.render_value_with(scope, ctx)?,
        Node::Array(items) => Value::Array(items.iter().map(|n| render_node(n, scope, ctx)).collect::<Result<_, _>>()?),
        Node::Object(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, n) in entries {
                map.insert(k.clone(), render_node(n, scope, ctx)?);
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
mod tests;
