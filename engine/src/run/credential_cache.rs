//! Credentials opened for runs, cached for the life of the engine with their limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_blocks::credential::Credential;

use crate::credentials;
use crate::error::{Error, Result};
use crate::limits::RateLimiter;
use crate::store::Store;
use crate::vault::Vault;

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
        let rate = credentials::rate_limit_of(&stored).and_then(RateLimiter::parse).map(Arc::new);
        let opened =
            Connection { credential, limits: CredentialLimits { rate, timeout: credentials::timeout_of(&stored) } };
        // Runs that opened the credential at the same moment keep the first one's: two
        // limiters for one credential would each let their own burst through.
        Ok(self.open.lock().expect("credential cache").entry(name.to_string()).or_insert(opened).clone())
    }

    /// Drops a credential after it changed or was removed, so the next use opens it afresh.
    pub fn forget(&self, name: &str) {
        self.open.lock().expect("credential cache").remove(name);
    }
}
