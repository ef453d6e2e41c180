//! Sage People API v4 (connectors.md §3A): a Salesforce OAuth2 token, then
//! `GET {instance_url}/services/apexrest/spapi/v4/employees` paged by `marker` (the last id).

use roster_blocks::credential::{Auth, Credential, CredentialKind, Secret};
use serde_json::Value;

use crate::http::{Backoff, Failure, Response, brief, send, status_failure};
use crate::{ConnectorError, ConnectorInfo, ErrorKind, Page, PageFuture, RAW_PAGES, Source, SyncOptions};

const VENDOR: &str = "Sage People";
const EMPLOYEES_PATH: &str = "/services/apexrest/spapi/v4/employees";

pub(crate) const INFO: ConnectorInfo = ConnectorInfo {
    name: "sage_people",
    description: "Sage People employees (Sage People API v4 /employees), OAuth2, paged by marker",
    credential_kind: CredentialKind::OAuth2,
    default_mapping: &[
        ("address_line_1", "<<workAddress.line1>>"),
        ("address_line_2", "<<workAddress.line2>>"),
        ("address_line_3", "<<workAddress.line3>>"),
        ("city", "<<workAddress.city>>"),
        ("country", "<<workAddress.country>>"),
        ("email", "<<emailAddress>>"),
        ("employment_active", "<<currentEmployment.active>>"),
        ("employment_name", "<<currentEmployment.name>>"),
        ("end_date", "<<currentEmployment.endDate>>"),
        ("first_name", "<<firstName>>"),
        ("full_name", "<<fullName>>"),
        ("hr_department", "<<hrDepartment>>"),
        ("sage_people_id", "<<id>>"),
        ("job_title", "<<currentEmployment.jobTitle>>"),
        ("last_name", "<<lastName>>"),
        ("postal_code", "<<workAddress.postalCode>>"),
        ("region", "<<workAddress.region>>"),
        ("start_date", "<<currentEmployment.startDate>>"),
        ("work_location", "<<workAddress.name>>"),
    ],
    key_path: "id",
};

struct Grant {
    token_url: String,
    client_id: String,
    client_secret: Secret,
    /// Password grant when both are set, client credentials otherwise.
    user: Option<(String, Secret)>,
}

struct Token {
    access_token: Secret,
    /// Where the API lives: the credential's base URL, else the token's `instance_url`.
    api_base: String,
}

struct SagePeople {
    client: reqwest::Client,
    grant: Grant,
    base_url_override: Option<String>,
    max_retries: u32,
    /// Kept for the Source's life; replaced when the API says the session is gone.
    token: Option<Token>,
    marker: Option<String>,
    done: bool,
    pages: usize,
}

pub(crate) fn open(
    credential: &Credential,
    options: SyncOptions,
    client: reqwest::Client,
) -> Result<Box<dyn Source>, ConnectorError> {
    let Auth::OAuth2 { token_url, client_id, client_secret, username, password } = &credential.auth else {
        return Err(ConnectorError::new(ErrorKind::Config, "sage_people needs an oauth2 credential"));
    };
    if token_url.trim().is_empty() {
        return Err(ConnectorError::new(ErrorKind::Config, "the sage_people credential has no token URL"));
    }
    let user = match (username, password) {
        (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p.clone())),
        _ => None,
    };
    let base = credential.base_url.trim().trim_end_matches('/');
    Ok(Box::new(SagePeople {
        client,
        grant: Grant {
            token_url: token_url.trim().to_string(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            user,
        },
        base_url_override: (!base.is_empty()).then(|| base.to_string()),
        max_retries: options.max_retries,
        token: None,
        marker: None,
        done: false,
        pages: 0,
    }))
}

impl Source for SagePeople {
    fn next_page(&mut self) -> PageFuture<'_> {
        Box::pin(self.fetch())
    }
}

impl SagePeople {
    async fn fetch(&mut self) -> Result<Option<Page>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let Some(mut body) = self.employees_page().await? else {
            self.done = true;
            return Ok(None);
        };
        let raw = (self.pages < RAW_PAGES).then(|| body.clone());
        let records = match body.get_mut("data").map(Value::take) {
            Some(Value::Array(data)) => data,
            None | Some(Value::Null) => Vec::new(),
            Some(other) => return Err(shape(format!("`data` is {}, not an array", brief(&other)))),
        };
        let Some(last) = records.last() else {
            self.done = true;
            return Ok(None);
        };
        let Some(last_id) = last.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
            return Err(shape(
                "the last employee of the page has no `id`, so there is no marker for the next page".into(),
            ));
        };
        // A malformed employee is the engine's to count as one failed person; the page goes on.
        // An API that ignores the marker hands out the same one again, which the engine refuses.
        self.marker = Some(last_id.to_string());
        self.pages += 1;
        tracing::debug!(connector = "sage_people", page = self.pages, records = records.len(), "page");
        Ok(Some(Page { records, raw, next: self.marker.clone() }))
    }

    /// The next employees answer, or None on 204. Refreshes the token once on 401.
    async fn employees_page(&mut self) -> Result<Option<Value>, ConnectorError> {
        let mut backoff = Backoff::new(self.max_retries);
        let mut refreshed = false;
        loop {
            if self.token.is_none() {
                self.token = Some(self.fetch_token().await?);
            }
            let Some(token) = &self.token else { continue };
            let mut request = self
                .client
                .get(format!("{}{EMPLOYEES_PATH}", token.api_base))
                .bearer_auth(token.access_token.expose())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(m) = &self.marker {
                request = request.query(&[("marker", m)]);
            }
            let failure = match send(VENDOR, request).await {
                Ok(resp) if resp.status == 204 => return Ok(None),
                Ok(resp) if resp.is_success() => match resp.json(VENDOR) {
                    Ok(body) => return Ok(Some(body)),
                    Err(e) => Failure::fatal(e),
                },
                Ok(resp) if resp.status == 401 && !refreshed => {
                    // Salesforce sessions end early (timeout, revoked, admin reset): one new token.
                    tracing::debug!(connector = "sage_people", "session expired; fetching a new token");
                    refreshed = true;
                    self.token = None;
                    continue;
                }
                Ok(resp) => status_failure(VENDOR, &resp),
                Err(f) => f,
            };
            backoff.wait_or_fail(failure).await?;
        }
    }

    async fn fetch_token(&self) -> Result<Token, ConnectorError> {
        let g = &self.grant;
        // Holds secrets: sent as the form body only, never logged.
        let mut form: Vec<(&str, &str)> =
            vec![("client_id", &g.client_id), ("client_secret", g.client_secret.expose())];
        match &g.user {
            Some((username, password)) => {
                form.extend([("grant_type", "password"), ("username", username), ("password", password.expose())]);
            }
            None => form.push(("grant_type", "client_credentials")),
        }
        let mut backoff = Backoff::new(self.max_retries);
        loop {
            tracing::debug!(connector = "sage_people", password_grant = g.user.is_some(), "token request");
            let failure = match send(VENDOR, self.client.post(&g.token_url).form(&form)).await {
                Ok(resp) if resp.is_success() => match self.token_from(&resp) {
                    Ok(t) => return Ok(t),
                    Err(e) => Failure::fatal(e),
                },
                Ok(resp) => token_failure(&resp),
                Err(f) => f,
            };
            backoff.wait_or_fail(failure).await?;
        }
    }

    fn token_from(&self, resp: &Response) -> Result<Token, ConnectorError> {
        let body = resp.json(VENDOR)?;
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let access_token = text("access_token").ok_or_else(|| token_shape("no `access_token`"))?;
        let api_base = match (&self.base_url_override, text("instance_url")) {
            (Some(base), _) => base.clone(),
            (None, Some(instance)) => instance.trim_end_matches('/').to_string(),
            (None, None) => return Err(token_shape("no `instance_url`, and the credential has no base URL")),
        };
        // A token obtained at run time is as secret as the credential that got it.
        roster_blocks::redact::process().add(access_token);
        Ok(Token { access_token: Secret::new(access_token), api_base })
    }
}

/// OAuth errors (`{"error", "error_description"}`) are credential problems; 429/5xx are not.
fn token_failure(resp: &Response) -> Failure {
    let body = roster_blocks::http::parse_body(&resp.body);
    let description = body.get("error_description").and_then(Value::as_str);
    let error = body.get("error").and_then(Value::as_str);
    if (400..500).contains(&resp.status) && resp.status != 429 && (description.is_some() || error.is_some()) {
        let words = match (description, error) {
            (Some(d), Some(e)) => format!("{d} ({e})"),
            (Some(d), None) => d.to_string(),
            (None, e) => e.unwrap_or_default().to_string(),
        };
        let message = format!("{VENDOR} token endpoint said {}: {words}", resp.status);
        return Failure::fatal(ConnectorError::new(ErrorKind::Auth, message));
    }
    let mut f = status_failure(&format!("{VENDOR} token endpoint"), resp);
    if resp.status == 404 {
        f.error.message = format!("{VENDOR} token endpoint said 404: {} (check the token URL)", resp.message());
    } else if f.error.kind == ErrorKind::Vendor && (400..500).contains(&resp.status) {
        f.error.kind = ErrorKind::Auth;
    }
    f
}

fn shape(what: String) -> ConnectorError {
    ConnectorError::new(ErrorKind::Malformed, format!("Sage People's employee list has an unexpected shape: {what}"))
}

fn token_shape(what: &str) -> ConnectorError {
    ConnectorError::new(ErrorKind::Malformed, format!("Sage People's token answer has {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_are_auth_with_the_description() {
        let resp = Response {
            status: 400,
            retry_after: None,
            body: br#"{"error":"invalid_client","error_description":"invalid client credentials"}"#.to_vec(),
        };
        let f = token_failure(&resp);
        assert_eq!(f.error.kind, ErrorKind::Auth);
        assert_eq!(f.error.message, "Sage People token endpoint said 400: invalid client credentials (invalid_client)");
        let resp = Response { status: 503, retry_after: None, body: Vec::new() };
        assert!(matches!(token_failure(&resp).retry, crate::http::Retry::Yes(None)));
    }
}
