//! The home folder: the store, the master key, presets, workflows and integrations.
//!
//! ```text
//! HOME/
//!   store/          sled database (one process at a time)
//!   master.key      vault key, mode 0600 (or ROSTER_MASTER_KEY)
//!   api.token       bearer token for `roster serve`'s HTTP API, mode 0600
//!   presets/        preset overrides and additions
//!   workflows/      workflow files `serve` loads
//!   integrations/   integration files `serve` loads
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::{Redacting, SledStore, Store};
use crate::vault::Vault;

#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    pub fn presets_dir(&self) -> PathBuf {
        self.dir.join("presets")
    }

    pub fn workflows_dir(&self) -> PathBuf {
        self.dir.join("workflows")
    }

    pub fn integrations_dir(&self) -> PathBuf {
        self.dir.join("integrations")
    }

    pub fn exists(&self) -> bool {
        self.store_dir().exists()
    }

    /// Creates the folder layout, a master key and an API token. Safe to run again.
    pub async fn init(&self) -> Result<InitReport> {
        for d in [self.dir.clone(), self.presets_dir(), self.workflows_dir(), self.integrations_dir()] {
            std::fs::create_dir_all(&d)?;
        }
        let created_key = std::env::var(crate::vault::KEY_ENV).is_err() && Vault::create_key_file(&self.dir)?;
        let token_path = self.dir.join("api.token");
        let created_token = if token_path.exists() {
            false
        } else {
            write_private(&token_path, &Vault::generate_key().replace(['+', '/', '='], ""))?;
            true
        };
        let store = self.open_store().await?;
        Ok(InitReport { created_key, created_token, store })
    }

    /// Opens the store; a missing home is a clear error rather than a new empty store.
    /// Every write is scrubbed of secrets on its way in ([`Redacting`]), and the secrets of
    /// every stored credential are known to the process from here on, whichever command
    /// runs, so nothing it stores or prints can hold one.
    pub async fn open_store(&self) -> Result<Store> {
        let store = Redacting::wrap(Store::new(Arc::new(self.open_sled()?)));
        if let Ok(vault) = self.vault() {
            for stored in store.credentials.credentials().await.unwrap_or_default() {
                // One that cannot be opened cannot be used either; its error comes when it is.
                let _ = crate::credentials::open(&vault, &stored);
            }
        }
        Ok(store)
    }

    pub fn open_sled(&self) -> Result<SledStore> {
        if !self.dir.exists() {
            return Err(Error::NoHome { dir: self.dir.clone() });
        }
        SledStore::open(&self.store_dir())
    }

    pub fn vault(&self) -> Result<Vault> {
        Vault::open(&self.dir)
    }

    pub fn api_token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("api.token"))?.trim().to_string())
    }
}

pub struct InitReport {
    pub created_key: bool,
    pub created_token: bool,
    /// The store, open: sled releases its lock only some time after the last handle is
    /// dropped, so a caller that goes on working keeps this one instead of reopening.
    pub store: Store,
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
