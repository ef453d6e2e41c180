//! The home folder: the store, the master key, presets, workflows and integrations.
//!
//! ```text
//! HOME/
//!   store/          sled database (one process at a time), unless the store is PostgreSQL
//!   store.url       the PostgreSQL store's URL, mode 0600, when `init --store URL` chose one
//!   master.key      vault key, mode 0600 (or ROSTER_MASTER_KEY)
//!   api.token       bearer token for `roster serve`'s HTTP API, mode 0600
//!   serve.lock      locked while `roster serve` runs on this home
//!   presets/        preset overrides and additions
//!   workflows/      workflow files `serve` loads
//!   integrations/   integration files `serve` loads
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::{PostgresStore, Redacting, SledStore, Store};
use crate::vault::Vault;

#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
    /// `--store URL` / `ROSTER_STORE_URL`: overrides what the home recorded.
    store_url: Option<String>,
}

/// Where a home's store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled in `HOME/store`.
    Embedded(PathBuf),
    /// A PostgreSQL database several nodes may share (`postgres://…`).
    Postgres(String),
}

/// The file in a home that records its PostgreSQL store's URL.
const STORE_URL_FILE: &str = "store.url";

/// The file `serve` keeps locked while it runs. A sled store's folder lock already keeps
/// every other command of the home out (they go through serve's API instead); a PostgreSQL
/// store takes any number of processes, so this lock is what says that serve runs here.
const SERVE_LOCK_FILE: &str = "serve.lock";

/// Held by a running `serve` (see [`Home::hold_for_serve`]); the lock ends with the process,
/// however it ends.
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), store_url: None }
    }

    /// The same home with its store at `url` (`postgres://…`), whatever it recorded.
    pub fn with_store_url(mut self, url: Option<String>) -> Self {
        self.store_url = url.filter(|u| !u.trim().is_empty());
        self
    }

    /// `--store URL` first, then the URL `init --store` recorded, then sled in `HOME/store`.
    pub fn store_location(&self) -> Result<StoreLocation> {
        let recorded = || std::fs::read_to_string(self.dir.join(STORE_URL_FILE)).ok().map(|t| t.trim().to_string());
        match self.store_url.clone().or_else(recorded) {
            None => Ok(StoreLocation::Embedded(self.store_dir())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                remember_password(&url);
                Ok(StoreLocation::Postgres(url))
            }
            Some(url) => Err(Error::Refused(format!(
                "--store / ROSTER_STORE_URL: `{}` is not a store URL; a PostgreSQL store reads \
                 postgres://USER@HOST:PORT/DATABASE, and leaving it out keeps the embedded store in HOME/store",
                url.split('@').next_back().unwrap_or_default()
            ))),
        }
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
        self.store_dir().exists() || self.dir.join(STORE_URL_FILE).exists()
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
        if let (Some(url), StoreLocation::Postgres(_)) = (&self.store_url, self.store_location()?) {
            let path = self.dir.join(STORE_URL_FILE);
            if std::fs::read_to_string(&path).ok().as_deref().map(str::trim) != Some(url.trim()) {
                let _ = std::fs::remove_file(&path);
                write_private(&path, url.trim())?;
            }
        }
        let store = self.open_store_migrated().await?;
        Ok(InitReport { created_key, created_token, store })
    }

    /// Opens the store; a missing home is a clear error rather than a new empty store.
    /// Every write is scrubbed of secrets on its way in ([`Redacting`]), and the secrets of
    /// every stored credential are known to the process from here on, whichever command
    /// runs, so nothing it stores or prints can hold one.
    pub async fn open_store(&self) -> Result<Store> {
        self.open(false).await
    }

    /// Opens the store after bringing a PostgreSQL schema up to this roster's version (under
    /// a lock, so nodes starting together do not race): what `init`, `serve` and `store
    /// migrate` do. Other commands refuse a database that is not migrated yet.
    pub async fn open_store_migrated(&self) -> Result<Store> {
        self.open(true).await
    }

    async fn open(&self, migrate: bool) -> Result<Store> {
        let location = self.store_location()?;
        if let StoreLocation::Postgres(_) = location {
            if !self.dir.exists() {
                return Err(Error::NoHome { dir: self.dir.clone() });
            }
            // As on sled, a command of a home whose serve runs goes through serve (the same
            // output, one process's rate limits, no run claimed beside serve's workers);
            // `init`, `serve` and `store migrate` (the migrating opens) work on the store itself.
            if !migrate && self.serve_runs() {
                return Err(Error::StoreLocked { dir: self.dir.clone() });
            }
        }
        let backend = match location {
            StoreLocation::Embedded(_) => Store::new(Arc::new(self.open_sled()?)),
            postgres => open_location(&postgres, migrate).await?,
        };
        let store = Redacting::wrap(backend);
        if let Ok(vault) = self.vault() {
            for stored in store.credentials.credentials().await.unwrap_or_default() {
                // One that cannot be opened cannot be used either; its error comes when it is.
                let _ = crate::credentials::open(&vault, &stored);
            }
        }
        Ok(store)
    }

    /// Marks the home as served by this process until the lock drops; fails with
    /// [`Error::StoreLocked`] when another `serve` runs on it.
    pub fn hold_for_serve(&self) -> Result<ServeLock> {
        if !self.dir.exists() {
            return Err(Error::NoHome { dir: self.dir.clone() });
        }
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.serve_lock())?;
        match file.try_lock() {
            Ok(()) => Ok(ServeLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::StoreLocked { dir: self.dir.clone() }),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Whether a `serve` holds this home (a lock left by a killed one is gone with it).
    fn serve_runs(&self) -> bool {
        let Ok(file) = std::fs::File::open(self.serve_lock()) else { return false };
        matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
    }

    fn serve_lock(&self) -> PathBuf {
        self.dir.join(SERVE_LOCK_FILE)
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

/// Opens the store at `location` as it is (no secret scrubbing, no credentials loaded): what
/// `store copy` reads and writes. A PostgreSQL schema is migrated first when `migrate`
/// says so, and must be current otherwise.
pub async fn open_location(location: &StoreLocation, migrate: bool) -> Result<Store> {
    match location {
        StoreLocation::Embedded(dir) => Ok(Store::new(Arc::new(SledStore::open(dir)?))),
        StoreLocation::Postgres(url) => {
            remember_password(url);
            let pg = PostgresStore::connect(url).await?;
            if migrate {
                pg.migrate().await?;
            } else {
                pg.require_current().await?;
            }
            Ok(Store::new(Arc::new(pg)))
        }
    }
}

/// A password in a store URL is a secret like any other: nothing the process writes or
/// prints may show it.
fn remember_password(url: &str) {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else { return };
    let Some((userinfo, _)) = rest.split_once('@') else { return };
    if let Some((_, password)) = userinfo.split_once(':') {
        let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
        roster_blocks::redact::process().add(&decoded);
        roster_blocks::redact::process().add(password);
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
