//! roster-sandbox: faithful fake vendor APIs (Brex Team API, Expensify Integration Server,
//! Sage People API with Salesforce OAuth) served on 127.0.0.1, state in memory, data generated
//! deterministically from a seed. Used by tests, benches and `roster sandbox` / `roster demo`.
//!
//! Each vendor runs its own HTTP server. All three also answer the admin routes under
//! `/_sandbox/` (no auth): `GET|DELETE /_sandbox/stats`, `GET|PUT /_sandbox/faults[?vendor=]`,
//! `GET /_sandbox/people`, `GET /_sandbox/info`, `POST /_sandbox/sage/expire-tokens`,
//! `POST /_sandbox/brex/accept-invites`, and `ANY /_sandbox/echo[?status=N]`, which answers
//! with whatever credentials the request carried (for credential kinds no vendor here uses).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod brex;
mod common;
mod expensify;
mod faults;
mod net;
mod people;
mod rng;
mod sage;
pub mod spec;
mod stats;

pub use faults::{Echo, Faults};
pub use people::{Lifecycle, Person, WorkLocation, generate_people};
pub use stats::{FaultCounts, SideEffects, Stats, Vendor, VendorStats};

use common::{Ctx, Shared, Urls, lock};

/// The Expensify endpoint path (the only one Expensify has).
pub const EXPENSIFY_PATH: &str = "/Integration-Server/ExpensifyIntegrations";
/// Salesforce token endpoint path on the Sage server.
pub const SAGE_TOKEN_PATH: &str = "/services/oauth2/token";
/// Base path of the Sage People API below the instance URL.
pub const SAGE_API_BASE: &str = "/services/apexrest/spapi/v4";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window; 0 turns the limit off.
    pub requests: u32,
    pub per: Duration,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Seeds the company and every generated id.
    pub seed: u64,
    pub people: usize,
    /// "Today" for start and end dates.
    pub today: jiff::civil::Date,
    pub brex_token: String,
    pub expensify_partner_user_id: String,
    pub expensify_partner_user_secret: String,
    pub sage_client_id: String,
    pub sage_client_secret: String,
    pub sage_username: String,
    pub sage_password: String,
    /// Sage access tokens stop working after this; clients must fetch a new one on 401.
    pub sage_token_ttl: Duration,
    /// Per token.
    pub brex_rate_limit: RateLimit,
    /// Per partnerUserID.
    pub expensify_rate_limit: RateLimit,
    pub faults: Faults,
    pub page_size_sage: usize,
}

pub const DEFAULT_BREX_TOKEN: &str = "sandbox-brex-token";
pub const DEFAULT_EXPENSIFY_PARTNER_USER_ID: &str = "sandbox_partner_user";
pub const DEFAULT_EXPENSIFY_PARTNER_USER_SECRET: &str = "sandbox-expensify-secret";
pub const DEFAULT_SAGE_CLIENT_ID: &str = "sandbox-sage-client-id";
pub const DEFAULT_SAGE_CLIENT_SECRET: &str = "sandbox-sage-client-secret";
pub const DEFAULT_SAGE_USERNAME: &str = "integration@acme.test";
pub const DEFAULT_SAGE_PASSWORD: &str = "sandbox-sage-password";

/// Today's date in UTC.
pub fn utc_today() -> jiff::civil::Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            seed: 1,
            people: 25,
            today: utc_today(),
            brex_token: DEFAULT_BREX_TOKEN.into(),
            expensify_partner_user_id: DEFAULT_EXPENSIFY_PARTNER_USER_ID.into(),
            expensify_partner_user_secret: DEFAULT_EXPENSIFY_PARTNER_USER_SECRET.into(),
            sage_client_id: DEFAULT_SAGE_CLIENT_ID.into(),
            sage_client_secret: DEFAULT_SAGE_CLIENT_SECRET.into(),
            sage_username: DEFAULT_SAGE_USERNAME.into(),
            sage_password: DEFAULT_SAGE_PASSWORD.into(),
            sage_token_ttl: Duration::from_secs(3600),
            brex_rate_limit: RateLimit { requests: 1000, per: Duration::from_secs(60) },
            expensify_rate_limit: RateLimit { requests: 5, per: Duration::from_secs(10) },
            faults: Faults::default(),
            page_size_sage: 200,
        }
    }
}

/// Fixed ports for `start_on`; 0 picks a free port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    pub brex: u16,
    pub expensify: u16,
    pub sage: u16,
}

/// A running sandbox: three loopback HTTP servers sharing one generated company.
pub struct Sandbox {
    shared: Arc<Shared>,
    servers: Vec<net::Server>,
}

impl Sandbox {
    /// Starts all three vendors on free ports of 127.0.0.1.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        Sandbox::start_on(config, Ports::default()).await
    }

    pub async fn start_on(config: SandboxConfig, ports: Ports) -> anyhow::Result<Sandbox> {
        anyhow::ensure!(config.page_size_sage > 0, "page_size_sage must be at least 1");
        let brex_listener = net::bind(ports.brex).await?;
        let expensify_listener = net::bind(ports.expensify).await?;
        let sage_listener = net::bind(ports.sage).await?;
        let base =
            |l: &tokio::net::TcpListener| -> anyhow::Result<String> { Ok(format!("http://{}", l.local_addr()?)) };
        let urls =
            Urls { brex: base(&brex_listener)?, expensify: base(&expensify_listener)?, sage: base(&sage_listener)? };

        let people = generate_people(config.seed, config.people, config.today);
        let shared = Arc::new(Shared {
            stats: Mutex::default(),
            faults: Default::default(),
            brex: Mutex::new(brex::Store::generate(&config, &people)),
            expensify: expensify::Store::generate(&config, &people),
            sage: Mutex::new(sage::Store::new(config.seed)),
            urls,
            people,
            config,
        });
        shared.set_faults(None, &shared.config.faults);

        let ctx = |vendor| Ctx { shared: shared.clone(), vendor };
        let servers = vec![
            net::spawn(brex_listener, brex::router(ctx(Vendor::Brex)))?,
            net::spawn(expensify_listener, expensify::router(ctx(Vendor::Expensify)))?,
            net::spawn(sage_listener, sage::router(ctx(Vendor::Sage)))?,
        ];
        Ok(Sandbox { shared, servers })
    }

    /// Brex base URL; API paths start with `/v2/`.
    pub fn brex_url(&self) -> String {
        self.shared.urls.brex.clone()
    }

    /// The full URL of Expensify's single Integration Server endpoint.
    pub fn expensify_url(&self) -> String {
        format!("{}{EXPENSIFY_PATH}", self.shared.urls.expensify)
    }

    /// Salesforce-style OAuth token endpoint for Sage People.
    pub fn sage_token_url(&self) -> String {
        format!("{}{SAGE_TOKEN_PATH}", self.shared.urls.sage)
    }

    /// What the token response's `instance_url` says; the API lives under
    /// `{instance_url}/services/apexrest/spapi/v4`.
    pub fn sage_instance_url(&self) -> String {
        self.shared.urls.sage.clone()
    }

    /// Base URL of the server for `vendor` (its admin routes live under `/_sandbox/`).
    pub fn base_url(&self, vendor: Vendor) -> String {
        match vendor {
            Vendor::Brex => self.shared.urls.brex.clone(),
            Vendor::Expensify => self.shared.urls.expensify.clone(),
            Vendor::Sage => self.shared.urls.sage.clone(),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats().clone()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats() = Stats::default();
    }

    /// Replaces the faults of every vendor (and restarts the deterministic draw).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(None, &faults);
    }

    pub fn set_vendor_faults(&self, vendor: Vendor, faults: Faults) {
        self.shared.set_faults(Some(vendor), &faults);
    }

    /// The generated company, as Sage People holds it.
    pub fn people(&self) -> Vec<Person> {
        self.shared.people.clone()
    }

    /// Makes every Sage access token issued so far invalid (the next API call gets 401).
    pub fn expire_sage_tokens(&self) {
        lock(&self.shared.sage).expire_all();
    }

    /// The Sage access tokens issued and not expired (tests check they never leak).
    pub fn sage_access_tokens(&self) -> Vec<String> {
        lock(&self.shared.sage).live_tokens()
    }

    /// Simulates invited Brex users accepting their invite: INVITED becomes ACTIVE.
    pub fn accept_brex_invites(&self) -> usize {
        lock(&self.shared.brex).accept_invites()
    }

    /// Addresses and credentials as JSON (also `GET /_sandbox/info`).
    pub fn info(&self) -> Value {
        info_json(&self.shared)
    }

    pub async fn shutdown(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

pub(crate) fn info_json(shared: &Shared) -> Value {
    let c = &shared.config;
    json!({
        "seed": c.seed,
        "people": c.people,
        "today": c.today.to_string(),
        "brex": {"url": shared.urls.brex, "token": c.brex_token},
        "expensify": {
            "url": format!("{}{EXPENSIFY_PATH}", shared.urls.expensify),
            "partnerUserID": c.expensify_partner_user_id,
            "partnerUserSecret": c.expensify_partner_user_secret,
        },
        "sage": {
            "token_url": format!("{}{SAGE_TOKEN_PATH}", shared.urls.sage),
            "instance_url": shared.urls.sage,
            "api_base": format!("{}{SAGE_API_BASE}", shared.urls.sage),
            "client_id": c.sage_client_id,
            "client_secret": c.sage_client_secret,
            "username": c.sage_username,
            "password": c.sage_password,
        },
        "admin": {
            "stats": "GET|DELETE /_sandbox/stats",
            "faults": "GET|PUT /_sandbox/faults[?vendor=brex|expensify|sage]",
            "people": "GET /_sandbox/people",
            "expire_sage_tokens": "POST /_sandbox/sage/expire-tokens",
            "accept_brex_invites": "POST /_sandbox/brex/accept-invites",
            "echo": "ANY /_sandbox/echo[?status=N]",
        },
    })
}
