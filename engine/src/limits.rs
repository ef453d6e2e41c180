//! Per-credential rate limits, shared by every run that uses the credential, so a batch
//! of ten thousand offboardings slows down instead of hammering a vendor into 429s.
//! The limiter itself is `roster_blocks::rate::RateLimiter` (sending paces every page with
//! it); this module knows which limit a credential gets.

pub use roster_blocks::rate::RateLimiter;

use crate::model::CredentialKind;

/// The vendor's documented limit when the credential sets none: Brex allows 1,000
/// requests per 60 s per token, Expensify 5 requests per 10 s.
pub fn default_limit(kind: CredentialKind, base_url: &str) -> Option<&'static str> {
    if kind == CredentialKind::Expensify {
        Some("5/10s")
    } else if base_url.contains("brex") {
        Some("1000/60s")
    } else {
        None
    }
}
