//! Black-box tests: start the sandbox, talk to it over loopback HTTP with reqwest.
//! One test binary (modules below) to keep link time down.

mod admin;
mod brex;
mod brex_spec;
mod expensify;
mod faults;
mod people;
mod sage;

use std::sync::Once;

use roster_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

pub fn today() -> jiff::civil::Date {
    jiff::civil::date(2026, 11, 22)
}

pub fn config() -> SandboxConfig {
    SandboxConfig { seed: 7, people: 40, today: today(), ..SandboxConfig::default() }
}

pub async fn start(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("sandbox starts")
}

pub fn client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    // reqwest is built without a TLS provider here; it wants one installed even for http://.
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("client builds")
}

/// Status, parsed JSON body (Null when empty), headers.
pub async fn parts(resp: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body reads");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body, headers)
}
