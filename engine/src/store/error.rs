//! What a store call can fail with, typed so callers can tell a conflict from a full disk.

use std::fmt;

/// Why a store call failed. Backends map their own errors onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The backend cannot be reached or did not answer (I/O error, lost connection).
    Unavailable,
    /// Another writer got there first: a lost lease, a uniqueness the write would break.
    Conflict,
    /// Stored bytes cannot be read back; the store may be damaged.
    Corrupt,
    /// The thing the write refers to does not exist.
    NotFound,
    /// No space is left for the write.
    Full,
}

impl StoreErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Conflict => "conflict",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::NotFound => "not found",
            StoreErrorKind::Full => "full",
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync>;

/// A failed store call: its kind, what was being done, and the backend's own error.
#[derive(Debug)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    message: String,
    source: Option<Source>,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Unavailable, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Conflict, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Corrupt, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::NotFound, message)
    }

    pub fn full(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Full, message)
    }

    /// Whether the same call may succeed later unchanged: the backend came back, or space
    /// was freed. A conflict, damage or a missing thing stays as it is.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Unavailable | StoreErrorKind::Full)
    }

    /// An I/O error as a store error: a full disk is `Full`, anything else `Unavailable`.
    pub fn from_io(doing: &str, e: std::io::Error) -> Self {
        let kind = if is_out_of_space(&e) { StoreErrorKind::Full } else { StoreErrorKind::Unavailable };
        Self::new(kind, format!("{doing}: {e}")).with_source(e)
    }
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(28)
        || e.to_string().contains("No space left")
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(source) = &self.source {
            let text = source.to_string();
            if !self.message.contains(&text) {
                write!(f, ": {text}")?;
            }
        }
        if matches!(self.kind, StoreErrorKind::Corrupt) {
            f.write_str(" (the store may be damaged)")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl StoreError {
    /// The kind as a word, for logs and answers.
    pub fn kind_name(&self) -> &'static str {
        self.kind.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_retryable_and_a_conflict_is_not() {
        let full = StoreError::from_io("writing a step", std::io::Error::from_raw_os_error(28));
        assert_eq!(full.kind, StoreErrorKind::Full);
        assert!(full.is_retryable());
        assert!(std::error::Error::source(&full).is_some(), "the source is kept");
        let lost = StoreError::conflict("run 1 is held by node b");
        assert!(!lost.is_retryable());
        let broken = StoreError::corrupt("a stored run cannot be read");
        assert!(broken.to_string().ends_with("(the store may be damaged)"));
    }
}
