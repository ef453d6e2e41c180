//! Credentials opened for runs, cached for the life of the engine with their limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_blocks::credential::Credential;

use crate::credentials;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::vault::Vault;
use roster_blocks::http::rate::{RateLimiter, RateLimits};

/// A credential's shared rate limiter and its request timeout.
#[derive(Clone)]
pub(crate) struct CredentialLimits {
    pub rate: Option<Arc<RateLimiter>>,
    pub timeout: Duration,
}

/// An open credential and its limits: what sending with it needs.
#[derive(Clone)]
pub(crate) struct Connection {
    pub credential: Arc<Credential>,
    pub limits: CredentialLimits,
}

#[derive(Default)]
pub(crate) struct CredentialCache {
    open: Mutex<HashMap<String, Connection>>,
    /// One rate limiter per credential, shared by its runs and its syncs.
    rate_limits: RateLimits,
}

impl CredentialCache {
    /// Opens a credential by name, or returns the one opened before.
    pub async fn open(&self, store: &Store, vault: Option<&Vault>, name: &str) -> Result<Connection> {
        if let Some(c) = self.open.lock().expect("credential cache").get(name) {
            return Ok(c.clone());
        }
        let stored = store.credentials.credential(name).await?.ok_or_else(|| {
            Error::NotFound(format!("no credential named `{name}` (add it with `roster credentials add {name} ...`)"))
        })?;
        let vault = vault.ok_or_else(|| Error::Vault("no master key is available to open credentials".into()))?;
        let credential = Arc::new(credentials::open(vault, &stored)?);
        let rate = self.rate_limits.for_credential(name, credentials::rate_limit_of(&stored));
        let opened =
            Connection { credential, limits: CredentialLimits { rate, timeout: credentials::timeout_of(&stored) } };
        // Runs that opened the credential at the same moment keep the first one's: two
        // limiters for one credential would each let their own burst through.
        Ok(self.open.lock().expect("credential cache").entry(name.to_string()).or_insert(opened).clone())
    }

    /// Drops a credential after it changed or was removed, so the next use opens it afresh.
    pub fn forget(&self, name: &str) {
        self.open.lock().expect("credential cache").remove(name);
        self.rate_limits.forget(name);
    }

    /// The rate limiter of a credential opened before, for a sync to share with the runs;
    /// `None` when the credential is not paced.
    pub fn rate_limiter(&self, name: &str) -> Option<Arc<RateLimiter>> {
        self.rate_limits.get(name)
    }
}
