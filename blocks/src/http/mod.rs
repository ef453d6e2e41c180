//! The one HTTP layer every vendor call goes through: API blocks and connectors alike.
//!
//! - [`send`]: one exchange, bounded and redacted, and the API block's paged send on top;
//! - [`retry`]: when a failed attempt is sent again, and after how long;
//! - [`rate`]: one limiter per credential, shared by every run and sync that uses it;
//! - here: the client every vendor call uses and its redirect rule.

use std::time::Duration;

pub mod rate;
pub mod retry;
mod send;

pub use send::{
    HttpResponse, MAX_BODY_BYTES, Reply, SendError, SendErrorKind, excerpt, exchange, parse_body, send, vendor_message,
};

/// A client with the timeouts a vendor call should have, and the redirect rule every
/// vendor call follows: see [`same_origin_redirects`].
pub fn client(timeout: Duration, connect_timeout: Duration) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .redirect(same_origin_redirects())
        .user_agent(concat!("roster/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with default TLS settings always builds")
}

/// The most redirects a vendor call follows.
const MAX_REDIRECTS: usize = 10;

/// Vendor calls carry credentials (headers, and for Expensify and OAuth2 the body), and
/// reqwest re-sends custom headers and 307/308 bodies to wherever a redirect points. So a
/// redirect is followed only within the origin (scheme, host and port) the request was
/// sent to, where the credential belongs anyway; one to another origin is an error that
/// names both, and nothing is sent there.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else { return attempt.follow() };
        let (from, to) = (first.origin().ascii_serialization(), attempt.url().origin().ascii_serialization());
        if from != to {
            let message = format!(
                "{from} redirected to another origin, {to}; vendor calls never follow a redirect to another \
                 origin (it would carry the credential there). If the vendor now lives at {to}, point the \
                 credential there"
            );
            return attempt.error(message);
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects within {from}"));
        }
        attempt.follow()
    })
}

/// The words of [`same_origin_redirects`] when `e` is its refusal (reqwest wraps them).
pub fn redirect_refusal(e: &reqwest::Error) -> Option<String> {
    if !e.is_redirect() {
        return None;
    }
    let mut innermost = std::error::Error::source(e)?;
    while let Some(s) = innermost.source() {
        innermost = s;
    }
    Some(innermost.to_string())
}

/// rustls needs one process-wide crypto provider; reqwest is built without a default.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
