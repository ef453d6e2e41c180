//! roster-connectors: fetch and page people from source systems.
//!
//! A connector yields pages of raw vendor records (`serde_json::Value` objects exactly as the
//! vendor returns each person). Mapping, sync keys, filters and writes belong to the engine.
//! Each connector is one module; [`REGISTRY`] below is the only place they are listed.

use std::future::Future;
use std::pin::Pin;

use roster_blocks::credential::{Credential, CredentialKind};
use roster_blocks::redact;
use serde_json::Value;

mod brex;
mod expensify;
mod http;
mod sage_people;

/// What went wrong, coarsely, so callers can decide what to tell the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The vendor refused the credential (401/403, OAuth errors).
    Auth,
    /// Still rate limited after every retry.
    RateLimited,
    /// The vendor answered with an error (including 5xx after every retry).
    Vendor,
    /// No HTTP answer: connect failure, timeout, dropped connection.
    Transport,
    /// The answer was not the JSON shape the vendor documents.
    Malformed,
    /// The integration or credential is set up wrongly (wrong credential kind, unknown
    /// connector, unknown policy id, bad base URL).
    Config,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Vendor => "vendor",
            ErrorKind::Transport => "transport",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Config => "config",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connector failure. `message` carries the vendor's own words and never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ConnectorError {
        ConnectorError { kind, message: message.into() }
    }
}

/// Per-integration settings the connectors read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// Records per vendor page where the vendor lets us choose (Brex: default and max 1000).
    pub page_size: Option<u32>,
    /// Expensify: read these policies instead of listing the ones the account administers.
    pub policy_ids: Vec<String>,
    /// Retries per request for transient failures (connect errors, timeouts, 429, 5xx).
    pub max_retries: u32,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions { page_size: None, policy_ids: Vec::new(), max_retries: 5 }
    }
}

/// One page of source people plus, for the first few pages, the raw payload (for `sync --test`).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Value>,
    pub raw: Option<Value>,
    /// Where the vendor said the next page starts (Brex's `next_cursor`, Sage People's
    /// marker), None on the last page or when the connector chooses its pages itself.
    /// The engine refuses a cursor it has seen before: the vendor's listing loops.
    pub next: Option<String>,
}

/// How many pages of a stream carry their raw payload.
pub const RAW_PAGES: usize = 3;

/// The future [`Source::next_page`] returns.
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Page>, ConnectorError>> + Send + 'a>>;

/// A stream of pages of people from one source.
pub trait Source: Send {
    /// The next page, or None after the last. Must be restartable only by creating a new Source.
    /// After an error the position is kept, so calling again retries the same page.
    fn next_page(&mut self) -> PageFuture<'_>;
}

/// What the engine needs to know about a connector before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// The credential kind (`Auth::kind()`) it needs.
    pub credential_kind: CredentialKind,
    /// (record field, template over the source record), e.g. ("email", "<<email>>").
    pub default_mapping: &'static [(&'static str, &'static str)],
    /// A stable source id path, e.g. "id" or "email".
    pub key_path: &'static str,
}

type OpenFn = fn(&Credential, SyncOptions, reqwest::Client) -> Result<Box<dyn Source>, ConnectorError>;

struct Registration {
    info: ConnectorInfo,
    open: OpenFn,
}

/// Every connector, in one place.
const REGISTRY: &[Registration] = &[
    Registration { info: brex::INFO, open: brex::open },
    Registration { info: expensify::INFO, open: expensify::open },
    Registration { info: sage_people::INFO, open: sage_people::open },
];

const fn infos() -> [ConnectorInfo; REGISTRY.len()] {
    let mut out = [REGISTRY[0].info; REGISTRY.len()];
    let mut i = 1;
    while i < REGISTRY.len() {
        out[i] = REGISTRY[i].info;
        i += 1;
    }
    out
}

/// The built-in connectors.
pub const CONNECTORS: &[ConnectorInfo] = &infos();

/// Opens a page stream for `connector` with `credential`. Nothing is sent until the first
/// [`Source::next_page`].
pub fn open(
    connector: &str,
    credential: &Credential,
    options: SyncOptions,
    client: reqwest::Client,
) -> Result<Box<dyn Source>, ConnectorError> {
    let Some(reg) = REGISTRY.iter().find(|r| r.info.name == connector) else {
        let known: Vec<&str> = CONNECTORS.iter().map(|c| c.name).collect();
        return Err(ConnectorError::new(
            ErrorKind::Config,
            format!("unknown connector `{connector}` (known: {})", known.join(", ")),
        ));
    };
    let kind = credential.auth.kind();
    if kind != reg.info.credential_kind {
        return Err(ConnectorError::new(
            ErrorKind::Config,
            format!(
                "connector `{connector}` needs a `{}` credential, but `{}` is `{kind}`",
                reg.info.credential_kind, credential.name
            ),
        ));
    }
    redact::process().add_credential(credential);
    let inner = (reg.open)(credential, options, client)?;
    Ok(Box::new(Scrubbed { inner }))
}

/// A vendor may echo a secret back, in an error or in a person's fields: every page and
/// error leaves the connector scrubbed of every secret the process knows (the credential's,
/// and tokens the connector obtained on the way).
struct Scrubbed {
    inner: Box<dyn Source>,
}

impl Source for Scrubbed {
    fn next_page(&mut self) -> PageFuture<'_> {
        Box::pin(async move {
            let secrets = redact::process();
            match self.inner.next_page().await {
                Ok(Some(mut page)) => {
                    for record in &mut page.records {
                        secrets.scrub_value(record);
                    }
                    if let Some(raw) = &mut page.raw {
                        secrets.scrub_value(raw);
                    }
                    Ok(Some(page))
                }
                Ok(None) => Ok(None),
                Err(mut e) => {
                    e.message = secrets.scrub(&e.message).into_owned();
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use roster_blocks::credential::{Auth, Secret};

    use super::*;

    fn bearer() -> Credential {
        Credential { name: "b".into(), base_url: String::new(), auth: Auth::Bearer { token: Secret::new("tok-123") } }
    }

    #[test]
    fn registry_lists_each_connector_once() {
        let names: Vec<&str> = CONNECTORS.iter().map(|c| c.name).collect();
        assert_eq!(names, ["brex", "expensify", "sage_people"]);
        for c in CONNECTORS {
            assert!(c.default_mapping.iter().any(|(_, t)| t.contains(c.key_path)), "{}", c.name);
            for (field, template) in c.default_mapping {
                assert!(template.starts_with("<<") && template.ends_with(">>"), "{field}");
            }
        }
    }

    #[test]
    fn unknown_connector_and_wrong_credential_kind_are_config_errors() {
        let client = roster_blocks::http::client(std::time::Duration::from_secs(5), std::time::Duration::from_secs(5));
        let e = open("okta", &bearer(), SyncOptions::default(), client.clone()).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("brex, expensify, sage_people"), "{e}");
        let e = open("sage_people", &bearer(), SyncOptions::default(), client).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("`oauth2`") && e.message.contains("`bearer`"), "{e}");
    }

    #[test]
    fn defaults() {
        assert_eq!(SyncOptions::default().max_retries, 5);
        assert_eq!(ConnectorError::new(ErrorKind::Auth, "no").to_string(), "no");
    }
}
