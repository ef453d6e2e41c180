//! Credentials as blocks use them: decrypted, in memory only for the length of a run.
//!
//! The engine keeps them encrypted at rest; here a secret is wrapped so that `Debug`,
//! logs and accidental formatting never show it.

use std::fmt;

/// A secret string. Its `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plaintext. Call only where the value leaves the process for its vendor.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a credential authenticates a request.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// A key in a named header, e.g. `X-Api-Key`.
    ApiKey { header: String, key: Secret },
    /// HTTP basic auth.
    Basic { username: String, password: Secret },
    /// Expensify's partner credentials, sent inside the request body, never in a header.
    Expensify { partner_user_id: String, partner_user_secret: Secret },
    /// OAuth2 (Salesforce-style) client credentials or password grant; connectors fetch
    /// and refresh the access token.
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        username: Option<String>,
        password: Option<Secret>,
    },
}

impl Auth {
    /// The kind's name as the CLI and `credentials list` show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Bearer { .. } => "bearer",
            Auth::ApiKey { .. } => "api-key",
            Auth::Basic { .. } => "basic",
            Auth::Expensify { .. } => "expensify",
            Auth::OAuth2 { .. } => "oauth2",
        }
    }
}

/// A named credential: where its vendor lives and how to authenticate.
#[derive(Debug, Clone)]
pub struct Credential {
    pub name: String,
    /// Relative request URLs are joined to this.
    pub base_url: String,
    pub auth: Auth,
}

impl Credential {
    /// Adds this credential's authentication to a request about to be sent.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Bearer { token } => request.bearer_auth(token.expose()),
            Auth::ApiKey { header, key } => request.header(header.as_str(), key.expose()),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password.expose())),
            // Expensify and OAuth2 are applied by their connectors, which know the flow.
            Auth::Expensify { .. } | Auth::OAuth2 { .. } => request,
        }
    }

    /// Every secret value this credential holds. Output is scrubbed of these and of the
    /// forms derived from them by [`crate::redact::SecretSet::add_credential`].
    pub fn secrets(&self) -> Vec<&str> {
        match &self.auth {
            Auth::Bearer { token } => vec![token.expose()],
            Auth::ApiKey { key, .. } => vec![key.expose()],
            Auth::Basic { password, .. } => vec![password.expose()],
            Auth::Expensify { partner_user_secret, .. } => vec![partner_user_secret.expose()],
            Auth::OAuth2 { client_secret, password, .. } => {
                let mut v = vec![client_secret.expose()];
                if let Some(p) = password {
                    v.push(p.expose());
                }
                v
            }
        }
    }

    /// Joins a request URL to the base URL unless it is already absolute.
    pub fn resolve_url(&self, url: &str) -> String {
        join_url(&self.base_url, url)
    }
}

/// `base` + `url`, with exactly one slash between them; absolute `url`s are kept.
pub fn join_url(base: &str, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") || base.is_empty() {
        return url.to_string();
    }
    format!("{}/{}", base.trim_end_matches('/'), url.trim_start_matches('/'))
}
