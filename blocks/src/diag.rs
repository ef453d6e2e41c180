//! Configuration errors that carry the JSON path they were found at.
//!
//! Loading a workflow collects every problem instead of stopping at the first, so each
//! compile step pushes into a [`Diagnostics`] and keeps going.

use std::fmt;

/// A name that is none of the ones a typed value knows (a credential kind, a run
/// trigger …), with the ones it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (known: {known})")]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub known: String,
}

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
///
/// Jaro-Winkler finds most typos; one edit (`nw` for `now`) also counts, since short
/// names score low on Jaro-Winkler however close they are.
pub fn closest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .filter_map(|k| {
            let score = strsim::jaro_winkler(unknown, k);
            let one_edit =
                unknown.len() >= 2 && unknown.len().abs_diff(k.len()) <= 4 && strsim::osa_distance(unknown, k) <= 1;
            (score >= 0.8 || one_edit).then_some((one_edit, score, k))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, k)| k)
}

/// "did you mean `x`?" help text for an unknown name, or a list of the known names.
pub fn suggest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match closest(unknown, known.clone()) {
        Some(k) => format!("did you mean `{k}`?"),
        None => known_list(known),
    }
}

/// At most this many names in a "known: …" list.
const LISTED: usize = 20;

/// "known: a, b, c" (the first [`LISTED`] names, then how many more).
fn known_list<'a>(known: impl IntoIterator<Item = &'a str>) -> String {
    let mut names = Vec::new();
    let mut more = 0;
    for name in known {
        if names.len() < LISTED {
            names.push(name);
        } else {
            more += 1;
        }
    }
    if more == 0 {
        format!("known: {}", names.join(", "))
    } else {
        format!("known: {} and {more} more", names.join(", "))
    }
}

/// [`suggest`] for many unknown names against one large set of known ones (block names
/// in a big workflow). Comparing each typo with every name is quadratic, so after a
/// fixed amount of comparing, later typos get the list instead of a guess.
pub struct Suggester<'a> {
    known: Vec<&'a str>,
    /// Name comparisons left.
    budget: usize,
}

impl<'a> Suggester<'a> {
    /// Enough for 250 typos against a thousand names, a fraction of a second.
    const BUDGET: usize = 250_000;

    pub fn new(known: impl IntoIterator<Item = &'a str>) -> Self {
        Self { known: known.into_iter().collect(), budget: Self::BUDGET }
    }

    pub fn closest(&mut self, unknown: &str) -> Option<&'a str> {
        if self.known.len() > self.budget {
            return None;
        }
        self.budget -= self.known.len();
        closest(unknown, self.known.iter().copied())
    }

    pub fn suggest(&mut self, unknown: &str) -> String {
        match self.closest(unknown) {
            Some(k) => format!("did you mean `{k}`?"),
            None => known_list(self.known.iter().copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_guess_close_names_and_list_few() {
        assert_eq!(suggest("equls", ["equals", "in"]), "did you mean `equals`?");
        let many: Vec<String> = (0..100).map(|i| format!("name{i}")).collect();
        let text = suggest("zzz", many.iter().map(String::as_str));
        assert!(text.ends_with("name19 and 80 more"), "{text}");
    }

    #[test]
    fn many_typos_against_many_names_stay_fast() {
        let names: Vec<String> = (0..10_000).map(|i| format!("block_{i}")).collect();
        let mut suggester = Suggester::new(names.iter().map(String::as_str));
        let started = std::time::Instant::now();
        let guessed = (0..10_000).filter(|i| suggester.closest(&format!("blok_{i}")).is_some()).count();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(guessed, 25, "the first typos still get a guess");
    }
}
