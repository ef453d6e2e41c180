//! The two shared handlebars registries and our helpers.
//!
//! Handlebars has one escape function per registry, so plain text and URL components
//! each get their own. Both are strict, never HTML-escape, and are built once.

use std::sync::LazyLock;

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason, ScopedJson,
};
use serde_json::Value;

use super::{Escape, RenderError, format_value, url_encode};

static PLAIN: LazyLock<Handlebars<'static>> = LazyLock::new(|| build(Escape::None));
static URL: LazyLock<Handlebars<'static>> = LazyLock::new(|| build(Escape::UrlComponent));

pub(super) fn registry(escape: Escape) -> &'static Handlebars<'static> {
    match escape {
        Escape::None => &PLAIN,
        Escape::UrlComponent => &URL,
    }
}

fn build(escape: Escape) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    match escape {
        Escape::None => hb.register_escape_fn(handlebars::no_escape),
        Escape::UrlComponent => hb.register_escape_fn(url_encode),
    }
    hb.register_helper("roster_var", Box::new(VarHelper));
    hb.register_helper("roster_lit", Box::new(LitHelper));
    hb.register_helper("default", Box::new(DefaultHelper));
    hb.register_helper("json", Box::new(JsonHelper));
    hb
}

/// Carries our error through handlebars so the caller gets it back intact.
fn nested(e: RenderError) -> handlebars::RenderError {
    RenderErrorReason::NestedError(Box::new(e)).into()
}

fn param_name(h: &Helper<'_>, idx: usize) -> String {
    h.param(idx)
        .and_then(|p| p.relative_path().cloned())
        .unwrap_or_else(|| format!("argument {} of `{}`", idx + 1, h.name()))
}

/// `{{roster_var path "shown name"}}`: what every `<<x>>` / `{{x}}` becomes.
struct VarHelper;

impl HelperDef for VarHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = h.param(1).and_then(|p| p.value().as_str()).unwrap_or("?");
        let value = match h.param(0) {
            Some(p) if !p.is_value_missing() => p.value(),
            _ => {
                return Err(nested(RenderError::Missing { variable: name.to_string(), hint: None }));
            }
        };
        let text = format_value(value, name).map_err(nested)?;
        out.write(&(r.get_escape_fn())(&text))?;
        Ok(())
    }
}

/// `{{roster_lit "text"}}`: literal text handlebars would otherwise misread (`{{`, `\`).
struct LitHelper;

impl HelperDef for LitHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        if let Some(text) = h.param(0).and_then(|p| p.value().as_str()) {
            out.write(text)?;
        }
        Ok(())
    }
}

/// `{{default x "fallback"}}`: x unless it is missing or null.
struct DefaultHelper;

impl DefaultHelper {
    fn pick<'a>(h: &'a Helper<'_>) -> Result<(&'a Value, String), RenderError> {
        if let Some(p) = h.param(0)
            && !p.is_value_missing()
            && !p.value().is_null()
        {
            return Ok((p.value(), param_name(h, 0)));
        }
        match h.param(1) {
            Some(p) if !p.is_value_missing() => Ok((p.value(), param_name(h, 1))),
            Some(_) => Err(RenderError::Missing { variable: param_name(h, 1), hint: None }),
            None => Err(RenderError::Other("`default` needs a fallback, e.g. {{default manager_id \"\"}}".to_string())),
        }
    }
}

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let (value, _) = Self::pick(h).map_err(nested)?;
        Ok(ScopedJson::Derived(value.clone()))
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let (value, name) = Self::pick(h).map_err(nested)?;
        // An explicit null fallback means "print nothing".
        if !value.is_null() {
            let text = format_value(value, &name).map_err(nested)?;
            out.write(&(r.get_escape_fn())(&text))?;
        }
        Ok(())
    }
}

/// `{{json x}}`: x as compact JSON, strings quoted.
struct JsonHelper;

impl HelperDef for JsonHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let value = match h.param(0) {
            Some(p) if !p.is_value_missing() => p.value(),
            _ => {
                return Err(nested(RenderError::Missing { variable: param_name(h, 0), hint: None }));
            }
        };
        out.write(&(r.get_escape_fn())(&value.to_string()))?;
        Ok(())
    }
}
