//! Whether a failed attempt is tried again, and when: the HTTP layer's one retry policy,
//! asked with what the attempt got back.

use std::time::Duration;

use roster_blocks::http::retry::RetryPolicy;
use roster_blocks::http::{HttpResponse, SendError};

/// The wait before the next attempt, or `None` when the outcome stands. `elapsed` is the
/// time since the call's first attempt went out.
pub(crate) fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    elapsed: Duration,
    safe_to_resend: bool,
    sent: &Result<HttpResponse, SendError>,
) -> Option<Duration> {
    let outcome = sent.as_ref().map_or_else(SendError::outcome, HttpResponse::outcome);
    policy.next_attempt_in(attempt, elapsed, outcome, safe_to_resend).ok()
}
