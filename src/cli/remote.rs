//! Talking to a running `roster serve` when it holds the store: `run`, `runs` and
//! `records` go through its HTTP API instead of failing on the lock.

use serde_json::Value;

use super::Context;
use super::serve::SERVE_FILE;

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
        Ok(Remote { url, token, client: reqwest::Client::new() })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let resp = self.client.get(format!("{}{path}", self.url)).bearer_auth(&self.token).query(query).send().await;
        self.answer(resp).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self.client.post(format!("{}{path}", self.url)).bearer_auth(&self.token).json(body).send().await;
        self.answer(resp).await
    }

    async fn answer(&self, resp: reqwest::Result<reqwest::Response>) -> anyhow::Result<Value> {
        let resp = resp.map_err(|e| anyhow::anyhow!("`roster serve` at {} does not answer: {e}", self.url))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
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
