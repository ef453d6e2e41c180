//! Brex Team API: `GET /v2/users`, bearer token, cursor paging (NOTES.md §0, §9).

use roster_blocks::credential::{Auth, Credential, CredentialKind, Secret};
use serde_json::Value;

use crate::http::{Backoff, Failure, brief, send, status_failure};
use crate::{ConnectorError, ConnectorInfo, ErrorKind, Page, PageFuture, RAW_PAGES, Source, SyncOptions};

const VENDOR: &str = "Brex";
const DEFAULT_BASE_URL: &str = "https://api.brex.com";
/// Brex answers 400 above this.
const MAX_LIMIT: u32 = 1000;

pub(crate) const INFO: ConnectorInfo = ConnectorInfo {
    name: "brex",
    description: "Brex users (GET /v2/users), paged by cursor",
    credential_kind: CredentialKind::Bearer,
    default_mapping: &[
        ("brex_user_id", "<<id>>"),
        ("username", "<<id>>"),
        ("email", "<<email>>"),
        ("first_name", "<<first_name>>"),
        ("last_name", "<<last_name>>"),
        ("brex_status", "<<status>>"),
        ("brex_manager_id", "<<manager_id>>"),
        ("brex_department_id", "<<department_id>>"),
        ("brex_location_id", "<<location_id>>"),
        ("brex_title_id", "<<title_id>>"),
    ],
    key_path: "id",
};

struct Brex {
    client: reqwest::Client,
    url: String,
    token: Secret,
    limit: u32,
    max_retries: u32,
    /// None before the first page; Some(None) once Brex said there is no next page.
    cursor: Option<Option<String>>,
    pages: usize,
}

pub(crate) fn open(
    credential: &Credential,
    options: SyncOptions,
    client: reqwest::Client,
) -> Result<Box<dyn Source>, ConnectorError> {
    let Auth::Bearer { token } = &credential.auth else {
        return Err(ConnectorError::new(ErrorKind::Config, "brex needs a bearer credential"));
    };
    let limit = match options.page_size {
        None => MAX_LIMIT,
        Some(0) => return Err(ConnectorError::new(ErrorKind::Config, "page_size must be at least 1")),
        Some(n) => n.min(MAX_LIMIT),
    };
    let base = if credential.base_url.trim().is_empty() { DEFAULT_BASE_URL } else { credential.base_url.trim() };
    Ok(Box::new(Brex {
        client,
        url: format!("{}/v2/users", base.trim_end_matches('/')),
        token: token.clone(),
        limit,
        max_retries: options.max_retries,
        cursor: None,
        pages: 0,
    }))
}

impl Source for Brex {
    fn next_page(&mut self) -> PageFuture<'_> {
        Box::pin(self.fetch())
    }
}

impl Brex {
    async fn fetch(&mut self) -> Result<Option<Page>, ConnectorError> {
        let cursor = match &self.cursor {
            Some(None) => return Ok(None),
            Some(Some(c)) => Some(c.clone()),
            None => None,
        };
        let mut backoff = Backoff::new(self.max_retries);
        let mut body = loop {
            let mut request =
                self.client.get(&self.url).bearer_auth(self.token.expose()).query(&[("limit", self.limit)]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let attempt = match send(VENDOR, request).await {
                Ok(resp) if resp.is_success() => resp.json(VENDOR).map_err(Failure::from),
                Ok(resp) => Err(status_failure(VENDOR, &resp)),
                Err(f) => Err(f),
            };
            match attempt {
                Ok(body) => break body,
                Err(f) => backoff.wait_or_fail(f).await?,
            }
        };

        let raw = (self.pages < RAW_PAGES).then(|| body.clone());
        let next = match body.get("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(shape(format!("`next_cursor` is {}, not a string or null", brief(other))));
            }
        };
        let records = match body.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => return Err(shape("no `items` array".into())),
        };
        // A malformed item is the engine's to count as one failed person; the page goes on.
        self.pages += 1;
        tracing::debug!(connector = "brex", page = self.pages, records = records.len(), more = next.is_some(), "page");
        self.cursor = Some(next.clone());
        Ok(Some(Page { records, raw, next }))
    }
}

fn shape(what: String) -> ConnectorError {
    ConnectorError::new(ErrorKind::Malformed, format!("Brex's user list has an unexpected shape: {what}"))
}
