//! Talking to a running `roster serve` when it holds the store: every command that needs
//! the store goes through its HTTP API instead of failing on the lock, and prints the
//! answer with the same printer as when it reads the store itself.

use roster_api::wire::{RunDetail, SentFile};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Context;
use super::serve::SERVE_FILE;

/// The query of a request that takes none.
pub const NO_QUERY: &[(&str, &str)] = &[];

pub struct Remote {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    /// The serve process of this home, from the file it writes on start.
    pub fn find(cx: &Context) -> anyhow::Result<Remote> {
        let path = cx.home.dir.join(SERVE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            anyhow::anyhow!(
                "the store in {} is in use by another roster process, and no `roster serve` address was found in {}",
                cx.home.store_dir().display(),
                path.display()
            )
        })?;
        let info: Value = serde_json::from_str(&text)?;
        let url = info["url"].as_str().unwrap_or_default().to_string();
        let token = cx.home.api_token()?;
        roster_blocks::http::install_crypto_provider();
        // The API token (and any credential being added) goes to `serve` and nowhere else:
        // serve never redirects, so no redirect is followed.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
        Ok(Remote { url, token, client })
    }

    /// `GET path?query`, its answer read as `T` (a [`roster_api::wire`] type).
    pub async fn get<Q: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, query: &Q) -> anyhow::Result<T> {
        let resp = self.client.get(format!("{}{path}", self.url)).bearer_auth(&self.token).query(query).send().await;
        self.answer(resp).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self.client.post(format!("{}{path}", self.url)).bearer_auth(&self.token).json(body).send().await;
        self.answer(resp).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self.client.patch(format!("{}{path}", self.url)).bearer_auth(&self.token).json(body).send().await;
        self.answer(resp).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.client.delete(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await;
        self.answer(resp).await
    }

    pub async fn run_detail(&self, id: &str) -> anyhow::Result<RunDetail> {
        self.get(&format!("/v1/runs/{id}"), NO_QUERY).await
    }

    /// Waits until run `id` rests (finished, or waiting for a person or for its timer);
    /// its detail then.
    pub async fn follow(&self, id: &str) -> anyhow::Result<RunDetail> {
        loop {
            let detail = self.run_detail(id).await?;
            if detail.state.is_resting() {
                return Ok(detail);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn answer<T: DeserializeOwned>(&self, resp: reqwest::Result<reqwest::Response>) -> anyhow::Result<T> {
        let resp = resp.map_err(|e| anyhow::anyhow!("`roster serve` at {} does not answer: {e}", self.url))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        // A refusal by a workflow's rules is an answer the command prints (exit 1).
        if status.is_success() || body["state"] == "refused" {
            serde_json::from_value(body).map_err(|e| {
                anyhow::anyhow!("`roster serve` at {} answered in a shape this roster does not know: {e}", self.url)
            })
        } else {
            let msg = body["error"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
            Err(anyhow::anyhow!("{msg}"))
        }
    }
}

/// `true` when an error means "serve holds the store": go remote.
pub fn is_locked(e: &roster_engine::Error) -> bool {
    matches!(e, roster_engine::Error::StoreLocked { .. })
}

/// What a request names a workflow or integration file by: its `name` in the file (else
/// the argument), and the file's text and path when `arg` is a file, so serve compiles
/// exactly that file even if it has not loaded it.
pub fn sent_file(path: Option<std::path::PathBuf>, arg: &str) -> anyhow::Result<(String, SentFile)> {
    let Some(path) = path else { return Ok((arg.to_string(), SentFile::default())) };
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| arg.to_string());
    Ok((name, SentFile { source: Some(text), file: Some(path.display().to_string()) }))
}
