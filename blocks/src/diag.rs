//! Configuration errors that carry the JSON path they were found at.
//!
//! Loading a workflow collects every problem instead of stopping at the first, so each
//! compile step pushes into a [`Diagnostics`] and keeps going.

use std::fmt;

/// One problem in a configuration file: where it is, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted JSON path, e.g. `blocks.is_active.then`. Empty for the document root.
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
    /// What to do about it, when we can say.
    pub help: Option<String>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), help: None }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// Collects [`ConfigError`]s while a file is compiled.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ConfigError::new(path, message));
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }
}

/// The error for a file that is not JSON at all, with where and what to do.
pub fn json_syntax(e: &serde_json::Error) -> ConfigError {
    let error = ConfigError::new("", format!("not valid JSON at line {}, column {}: {e}", e.line(), e.column()));
    if e.to_string().starts_with("recursion limit exceeded") {
        error.with_help("the JSON nests more than 128 levels deep; no setting needs that, so flatten it")
    } else {
        error.with_help("fix the JSON syntax (a missing comma or quote is the usual cause)")
    }
}

/// Joins a parent path and a child key the way error messages show them.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}

/// The known name closest to `unknown`, if any is close enough to be a likely typo.
pub fn closest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// "did you mean `x`?" help text for an unknown name, or a list of the known names.
pub fn suggest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match closest(unknown, known.clone()) {
        Some(k) => format!("did you mean `{k}`?"),
        None => {
            let names: Vec<&str> = known.into_iter().collect();
            format!("known: {}", names.join(", "))
        }
    }
}
