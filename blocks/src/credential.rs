//! Credentials as blocks use them: decrypted, in memory only for the length of a run.
//!
//! The engine keeps them encrypted at rest; here a secret is wrapped so that `Debug`,
//! logs and accidental formatting never show it.

use std::fmt;
use std::str::FromStr;

use crate::diag::UnknownName;

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
    pub fn kind(&self) -> CredentialKind {
        match self {
            Auth::Bearer { .. } => CredentialKind::Bearer,
            Auth::ApiKey { .. } => CredentialKind::ApiKey,
            Auth::Basic { .. } => CredentialKind::Basic,
            Auth::Expensify { .. } => CredentialKind::Expensify,
            Auth::OAuth2 { .. } => CredentialKind::OAuth2,
        }
    }
}

/// The kinds of credential there are: the one list `credentials add --kind`, the store,
/// connectors and the default rate limits go by. Stored and shown by [`CredentialKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Bearer,
    ApiKey,
    Basic,
    Expensify,
    OAuth2,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::Bearer,
        CredentialKind::ApiKey,
        CredentialKind::Basic,
        CredentialKind::Expensify,
        CredentialKind::OAuth2,
    ];

    /// The kind's name as the CLI, the store and `credentials list` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Bearer => "bearer",
            CredentialKind::ApiKey => "api-key",
            CredentialKind::Basic => "basic",
            CredentialKind::Expensify => "expensify",
            CredentialKind::OAuth2 => "oauth2",
        }
    }

    /// What the kind sends and which settings it needs, for help texts.
    pub fn description(self) -> &'static str {
        match self {
            CredentialKind::Bearer => "Authorization: Bearer <secret>",
            CredentialKind::ApiKey => "the secret in a header named by --header",
            CredentialKind::Basic => "HTTP basic auth: --username and the secret as password",
            CredentialKind::Expensify => {
                "Expensify partner credentials: --username is the partnerUserID, the secret is partnerUserSecret"
            }
            CredentialKind::OAuth2 => {
                "OAuth2 token endpoint (--token-url, --client-id; secret = client secret; optional --username with password from --password-env)"
            }
        }
    }

    /// The non-secret settings a credential of this kind cannot work without, with the
    /// flag that sets each.
    pub fn required_settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            CredentialKind::Bearer => &[],
            CredentialKind::ApiKey => &[("header", "--header NAME")],
            CredentialKind::Basic | CredentialKind::Expensify => &[("username", "--username")],
            CredentialKind::OAuth2 => &[("token_url", "--token-url URL"), ("client_id", "--client-id ID")],
        }
    }

    /// "bearer, api-key, basic, expensify, oauth2".
    pub fn names() -> String {
        CredentialKind::ALL.map(CredentialKind::as_str).join(", ")
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        CredentialKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownName {
            what: "credential kind",
            given: s.to_string(),
            known: CredentialKind::names(),
        })
    }
}

impl serde::Serialize for CredentialKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CredentialKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_and_json() {
        for kind in CredentialKind::ALL {
            assert_eq!(kind.to_string().parse::<CredentialKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<CredentialKind>(&json).unwrap(), kind);
        }
        let names: Vec<&str> = CredentialKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["bearer", "api-key", "basic", "expensify", "oauth2"]);
    }

    #[test]
    fn an_unknown_kind_names_the_known_ones() {
        let err = "token".parse::<CredentialKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown credential kind `token` (known: bearer, api-key, basic, expensify, oauth2)"
        );
        let err = serde_json::from_str::<CredentialKind>("\"Bearer\"").unwrap_err();
        assert!(err.to_string().contains("unknown credential kind `Bearer`"), "{err}");
    }
}
