//! Helpers shared by the per-vendor test files.

use std::time::Duration;

use roster_connectors::{ConnectorError, Page, Source};
use roster_sandbox::{Lifecycle, Sandbox, SandboxConfig};

pub fn client() -> reqwest::Client {
    roster_blocks::http::client(Duration::from_secs(10), Duration::from_secs(2))
}

pub fn config(people: usize) -> SandboxConfig {
    // A fixed "today" so the generated company (and the fault draw) is the same on every run.
    SandboxConfig { seed: 7, people, today: jiff::civil::date(2026, 11, 22), ..SandboxConfig::default() }
}

pub async fn start(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("the sandbox starts")
}

/// People who have started: in Brex and Expensify (Sage also has the starters).
#[allow(dead_code)] // not every test binary uses it
pub fn started(sandbox: &Sandbox) -> Vec<roster_sandbox::Person> {
    sandbox.people().into_iter().filter(|p| p.lifecycle != Lifecycle::Starter).collect()
}

/// Every page until the end, or the first error.
pub async fn drain(source: &mut dyn Source) -> Result<Vec<Page>, ConnectorError> {
    let mut pages = Vec::new();
    while let Some(page) = source.next_page().await? {
        pages.push(page);
        assert!(pages.len() < 10_000, "the source never ends");
    }
    Ok(pages)
}
