//! Named credentials: stored sealed, opened only when a run or sync needs them.

use std::collections::BTreeMap;
use std::time::Duration;

use roster_blocks::credential::{Auth, Credential, CredentialKind, Secret};

use crate::error::{Error, Result};
use crate::limits::{RateLimiter, default_limit};
use crate::model::StoredCredential;
use crate::vault::Vault;

/// A request timeout when the credential sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request timeout a credential may set: a vendor call that has not answered
/// in ten minutes is not going to, and a run would hold its step that long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Checks a `--rate-limit` value (`1000/60s`): requests per period, both above zero.
pub fn parse_rate_limit(text: &str) -> Result<RateLimiter> {
    RateLimiter::parse(text).ok_or_else(|| {
        Error::Refused(format!(
            "--rate-limit `{text}` is not REQUESTS/PERIOD with both above zero, e.g. 1000/60s, 5/10s or 100/1m"
        ))
    })
}

/// Checks a `--timeout` value (`30s`, `1.5s`, `2m`): above zero, at most [`MAX_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration> {
    let bad = |why: &str| Error::Refused(format!("--timeout `{text}` {why}"));
    let timeout =
        roster_blocks::retry::parse_duration(text).ok_or_else(|| bad("is not a duration such as 500ms, 30s or 2m"))?;
    if timeout.is_zero() {
        return Err(bad("must be above zero"));
    }
    if timeout > MAX_TIMEOUT {
        return Err(bad(&format!("is longer than the most allowed, {}s", MAX_TIMEOUT.as_secs())));
    }
    Ok(timeout)
}

/// The rate limit that applies to a credential: its own, else the vendor's documented one.
/// `None` means requests are not paced.
pub fn rate_limit_of(stored: &StoredCredential) -> Option<&str> {
    stored.settings.get("rate_limit").map(String::as_str).or(default_limit(stored.kind, &stored.base_url))
}

/// The request timeout that applies to a credential.
pub fn timeout_of(stored: &StoredCredential) -> Duration {
    stored.settings.get("timeout").and_then(|t| parse_timeout(t).ok()).unwrap_or(DEFAULT_TIMEOUT)
}

/// What `credentials add` collected (secrets already read from stdin or env); also the
/// body of `POST /v1/credentials`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NewCredential {
    pub name: String,
    pub kind: CredentialKind,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

/// Validates and seals a new credential.
pub fn seal(vault: &Vault, new: NewCredential, now: &str) -> Result<StoredCredential> {
    let NewCredential { name, kind, base_url, settings, secrets } = new;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(Error::Refused(format!("credential name `{name}` may only use letters, digits, `-`, `_` and `.`")));
    }
    for (key, flag) in kind.required_settings() {
        if settings.get(*key).is_none_or(|v| v.is_empty()) {
            return Err(Error::Refused(format!("a {kind} credential needs {flag}")));
        }
    }
    match secrets.get("secret") {
        Some(s) if s.len() >= 4 => {}
        Some(_) => return Err(Error::Refused("the secret is shorter than 4 characters; that cannot be right".into())),
        None => return Err(Error::Refused("no secret was given (pipe it on stdin or use --secret-env VAR)".into())),
    }
    // Output is scrubbed of secrets, but not of ones so short they would redact ordinary words.
    if secrets.get("password").is_some_and(|p| p.len() < roster_blocks::redact::MIN_SECRET_BYTES) {
        return Err(Error::Refused("the password is shorter than 4 characters; that cannot be right".into()));
    }
    if !(base_url.is_empty() || base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(Error::Refused(format!("--base-url `{base_url}` must start with http:// or https://")));
    }
    if let Some(limit) = settings.get("rate_limit") {
        parse_rate_limit(limit)?;
    }
    if let Some(timeout) = settings.get("timeout") {
        parse_timeout(timeout)?;
    }
    let sealed = vault.seal(&name, &secrets)?;
    Ok(StoredCredential { name, kind, base_url, settings, sealed, created_at: now.to_string(), updated_at: None })
}

/// What `credentials update` changes; `None` keeps what is stored.
/// Also the body of `PATCH /v1/credentials/{name}`.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct CredentialUpdate {
    #[serde(default)]
    pub base_url: Option<String>,
    /// Settings to set (`rate_limit`, `timeout`, `header`, `username`, …).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Secrets to replace (`secret`, `password`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// Changes the stored credential `name` in the store (`credentials update`, by hand or
/// through serve's API); see [`update`].
pub async fn update_in(
    store: &crate::store::Store,
    vault: &Vault,
    name: &str,
    change: CredentialUpdate,
    now: &str,
) -> Result<StoredCredential> {
    let stored = store
        .credentials
        .credential(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no credential named `{name}`")))?;
    let updated = update(vault, &stored, change, now)?;
    store.credentials.put_credential(&updated).await?;
    Ok(updated)
}

/// Changes a stored credential in place, checked exactly as a new one is; the secrets it
/// does not replace are kept, and so is its creation time.
pub fn update(
    vault: &Vault,
    stored: &StoredCredential,
    change: CredentialUpdate,
    now: &str,
) -> Result<StoredCredential> {
    let mut secrets = vault.unseal(&stored.name, &stored.sealed)?;
    secrets.extend(change.secrets);
    let mut settings = stored.settings.clone();
    settings.extend(change.settings);
    let new = NewCredential {
        name: stored.name.clone(),
        kind: stored.kind,
        base_url: change.base_url.unwrap_or_else(|| stored.base_url.clone()),
        settings,
        secrets,
    };
    let mut updated = seal(vault, new, &stored.created_at)?;
    updated.updated_at = Some(now.to_string());
    Ok(updated)
}

/// Opens a stored credential for use.
pub fn open(vault: &Vault, stored: &StoredCredential) -> Result<Credential> {
    let secrets = vault.unseal(&stored.name, &stored.sealed)?;
    let secret = |key: &str| Secret::new(secrets.get(key).cloned().unwrap_or_default());
    let setting = |key: &str| stored.settings.get(key).cloned().unwrap_or_default();
    let auth = match stored.kind {
        CredentialKind::Bearer => Auth::Bearer { token: secret("secret") },
        CredentialKind::ApiKey => Auth::ApiKey { header: setting("header"), key: secret("secret") },
        CredentialKind::Basic => Auth::Basic { username: setting("username"), password: secret("secret") },
        CredentialKind::Expensify => {
            Auth::Expensify { partner_user_id: setting("username"), partner_user_secret: secret("secret") }
        }
        CredentialKind::OAuth2 => Auth::OAuth2 {
            token_url: setting("token_url"),
            client_id: setting("client_id"),
            client_secret: secret("secret"),
            username: stored.settings.get("username").cloned(),
            password: secrets.get("password").cloned().map(Secret::new),
        },
    };
    let credential = Credential { name: stored.name.clone(), base_url: stored.base_url.clone(), auth };
    // From now on nothing this process writes or prints may hold these secrets.
    roster_blocks::redact::process().add_credential(&credential);
    Ok(credential)
}
