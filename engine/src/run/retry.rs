//! Whether a failed attempt is tried again, and when: the one retry decision.

use std::time::Duration;

use roster_blocks::http::{HttpResponse, SendError};
use roster_blocks::retry::RetryPolicy;

/// The wait before the next attempt, or `None` when the outcome stands. `elapsed` is the
/// time since the call's first attempt went out.
pub(crate) fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    elapsed: Duration,
    safe_to_resend: bool,
    sent: &Result<HttpResponse, SendError>,
) -> Option<Duration> {
    let retryable = match sent {
        Ok(r) => r.status == 429 || r.status == 408 || r.status >= 500,
        Err(e) => e.is_transient(),
    };
    // A 429 or 408 was refused before any work; anything else may have been applied, so
    // only a request that is safe to repeat goes again.
    let refused_unapplied = sent.as_ref().is_ok_and(|r| r.status == 429 || r.status == 408);
    let again =
        retryable && attempt < policy.max_attempts && elapsed < policy.budget && (safe_to_resend || refused_unapplied);
    again.then(|| policy.delay(attempt, sent.as_ref().ok().and_then(|r| r.retry_after_secs)))
}
