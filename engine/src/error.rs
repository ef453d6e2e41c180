//! Engine errors: each says what went wrong and, where we can tell, what to do.

use std::path::PathBuf;

use roster_blocks::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store in {dir} is in use by another roster process (a `roster serve`?); stop it or use its HTTP API")]
    StoreLocked { dir: PathBuf },

    #[error(
        "the store in {dir} cannot be opened: {reason}. If the folder was damaged, restore it from a backup or move it aside and run `roster init` again"
    )]
    StoreCorrupt { dir: PathBuf, reason: String },

    #[error("no Roster home in {dir}: run `roster init` first (or pass --home DIR / set ROSTER_HOME)")]
    NoHome { dir: PathBuf },

    #[error("store error: {0}")]
    Store(#[from] crate::store::StoreError),

    /// Something inside Roster went wrong that no input explains (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),

    #[error("{0}")]
    Vault(String),

    #[error("{file}: {count} problem{s}:\n{list}", count = errors.len(), s = if errors.len() == 1 { "" } else { "s" }, list = format_errors(file, errors))]
    Invalid { file: String, errors: Vec<ConfigError> },

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    Refused(String),

    #[error("{0}")]
    Io(String),
}

fn format_errors(file: &str, errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("  {file}: {e}")).collect::<Vec<_>>().join("\n")
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl Error {
    /// Whether the same work may succeed later unchanged: the store came back or the disk
    /// has room again. Runs that fail so wait and carry on instead of failing.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Io(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
