//! What every connector shares, on top of the one HTTP layer (`roster_blocks::http`): its
//! link to the vendor (client, the credential's rate limiter, the retry policy), turning
//! an answer into a failure, and the retry loop of one request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_blocks::http::rate::RateLimiter;
use roster_blocks::http::retry::{Outcome, RetryPolicy, Stop};
use roster_blocks::http::{SendErrorKind, excerpt, exchange, parse_body, vendor_message};
use serde_json::Value;

use crate::{ConnectorError, ErrorKind};

const EXCERPT_CHARS: usize = 300;

/// An HTTP answer, body read in full.
pub(crate) use roster_blocks::http::Reply as Response;

/// The body as JSON, or Malformed with a bounded excerpt.
pub(crate) fn json(vendor: &str, resp: &Response) -> Result<Value, ConnectorError> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        let text = String::from_utf8_lossy(&resp.body);
        malformed(format!(
            "{vendor} sent a {} answer that is not JSON ({e}): {}",
            resp.status,
            excerpt(text.trim(), EXCERPT_CHARS)
        ))
    })
}

/// The vendor's own words from an error answer.
pub(crate) fn message(resp: &Response) -> String {
    vendor_message(&parse_body(&resp.body)).unwrap_or_else(|| "(empty body)".into())
}

/// How a connector reaches its vendor.
pub(crate) struct Link {
    pub client: reqwest::Client,
    /// The credential's limiter, shared with every run and sync using the credential.
    rate: Option<Arc<RateLimiter>>,
    policy: RetryPolicy,
}

impl Link {
    pub fn new(client: reqwest::Client, rate: Option<Arc<RateLimiter>>, policy: RetryPolicy) -> Link {
        Link { client, rate, policy }
    }

    /// Sends one request when the rate limit lets it, and reads the answer. Transport
    /// failures are transient.
    pub async fn send(&self, vendor: &str, request: reqwest::RequestBuilder) -> Result<Response, Failure> {
        let permit = match &self.rate {
            Some(rate) => Some(rate.acquire().await),
            None => None,
        };
        let reply = exchange(request).await;
        drop(permit);
        reply.map_err(|e| {
            let kind = match e.kind {
                SendErrorKind::Timeout | SendErrorKind::Connect | SendErrorKind::Other => ErrorKind::Transport,
                SendErrorKind::BodyTooLarge => ErrorKind::Malformed,
                // A bad URL or a refused redirect fails the same way every time.
                SendErrorKind::Redirect | SendErrorKind::Request | SendErrorKind::Paging => ErrorKind::Config,
            };
            let said = match e.kind {
                SendErrorKind::Redirect => format!("{vendor}: {}", e.message),
                SendErrorKind::Timeout => format!("timed out talking to {vendor}: {}", e.message),
                SendErrorKind::BodyTooLarge => format!("{vendor} sent an answer that is too large: {}", e.message),
                _ => format!("could not talk to {vendor}: {}", e.message),
            };
            Failure { error: ConnectorError::new(kind, said), outcome: e.outcome() }
        })
    }

    /// A fresh retry count for one request (one page, one job, one token).
    pub fn retries(&self) -> Retries<'_> {
        Retries { policy: &self.policy, attempt: 1, first: Instant::now() }
    }
}

/// A failed attempt and what it came to.
pub(crate) struct Failure {
    pub error: ConnectorError,
    pub outcome: Outcome,
}

impl Failure {
    pub fn fatal(error: ConnectorError) -> Failure {
        Failure { error, outcome: Outcome::Final }
    }

    /// The vendor answered `status` (in the HTTP status or, for Expensify, in the body).
    pub fn answered(error: ConnectorError, status: u16, retry_after: Option<Duration>) -> Failure {
        Failure { error, outcome: Outcome::Answered { status, retry_after } }
    }
}

impl From<ConnectorError> for Failure {
    fn from(error: ConnectorError) -> Failure {
        Failure::fatal(error)
    }
}

/// A value quoted in an error, bounded.
pub(crate) fn brief(v: &Value) -> String {
    excerpt(&v.to_string(), 200)
}

pub(crate) fn malformed(message: String) -> ConnectorError {
    ConnectorError::new(ErrorKind::Malformed, message)
}

/// The usual meaning of a non-2xx status. `{vendor} said {status}: {vendor's message}`.
pub(crate) fn status_failure(vendor: &str, resp: &Response) -> Failure {
    let said = format!("{vendor} said {}: {}", resp.status, message(resp));
    let kind = match resp.status {
        401 | 403 => ErrorKind::Auth,
        429 => ErrorKind::RateLimited,
        408 => ErrorKind::Transport,
        404 => {
            return Failure::fatal(ConnectorError::new(
                ErrorKind::Config,
                format!("{said} (check the credential's base URL)"),
            ));
        }
        _ => ErrorKind::Vendor,
    };
    Failure::answered(ConnectorError::new(kind, said), resp.status, resp.retry_after)
}

/// Retry bookkeeping for one request; whether and when to go again is the policy's.
pub(crate) struct Retries<'a> {
    policy: &'a RetryPolicy,
    attempt: u32,
    first: Instant,
}

impl Retries<'_> {
    /// Sleeps before the next attempt, or gives the failure back when it is final or the
    /// attempts or the budget are used up. Every connector request is safe to send again:
    /// they only read (Expensify's `get` jobs and the OAuth token request included).
    pub async fn wait_or_fail(&mut self, failure: Failure) -> Result<(), ConnectorError> {
        let Failure { mut error, outcome } = failure;
        let delay = match self.policy.next_attempt_in(self.attempt, self.first.elapsed(), outcome, true) {
            Ok(delay) => delay,
            Err(Stop::TooLong(asked)) => {
                error.message =
                    format!("{} (asked to wait {} s; not waiting that long)", error.message, asked.as_secs());
                return Err(error);
            }
            Err(Stop::Attempts | Stop::Budget) if self.attempt > 1 => {
                error.message = format!("{} (gave up after {} retries)", error.message, self.attempt - 1);
                return Err(error);
            }
            Err(_) => return Err(error),
        };
        // Log lines are scrubbed of secrets on their way out, so the vendor's words may go in.
        tracing::debug!(
            kind = %error.kind,
            retry = self.attempt,
            delay_ms = delay.as_millis() as u64,
            error = %error.message,
            "retrying"
        );
        self.attempt += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response { status, retry_after: None, trace_id: None, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn statuses_map_to_kinds() {
        let f = status_failure("Brex", &resp(403, r#"{"type":"FORBIDDEN","message":"Invalid or Revoked Token"}"#));
        assert_eq!(f.error.kind, ErrorKind::Auth);
        assert_eq!(f.error.message, "Brex said 403: Invalid or Revoked Token (FORBIDDEN)");
        assert!(!f.outcome.is_transient());
        assert!(status_failure("X", &resp(503, "")).outcome.is_transient());
        assert_eq!(status_failure("X", &resp(429, "")).error.kind, ErrorKind::RateLimited);
        assert!(!status_failure("X", &resp(400, "{}")).outcome.is_transient());
        assert_eq!(status_failure("X", &resp(401, "")).error.message, "X said 401: (empty body)");
        assert_eq!(status_failure("X", &resp(404, "")).error.kind, ErrorKind::Config);
    }

    #[test]
    fn bad_json_is_malformed_with_a_bounded_excerpt() {
        let long = format!("<html>{}</html>", "x".repeat(5000));
        let e = json("Brex", &resp(200, &long)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed);
        assert!(e.message.starts_with("Brex sent a 200 answer that is not JSON"), "{e}");
        assert!(e.message.len() < 600, "{}", e.message.len());
    }

    #[tokio::test]
    async fn final_failures_are_not_retried_and_retries_run_out() {
        let policy = RetryPolicy { max_attempts: 2, initial: Duration::from_millis(2), ..RetryPolicy::default() };
        let link = Link::new(roster_blocks::http::client(Duration::from_secs(1), Duration::from_secs(1)), None, policy);
        let mut retries = link.retries();
        let e = retries.wait_or_fail(Failure::fatal(ConnectorError::new(ErrorKind::Auth, "no"))).await.unwrap_err();
        assert_eq!(e.message, "no");
        let busy = || Failure::answered(ConnectorError::new(ErrorKind::Vendor, "busy"), 503, Some(Duration::ZERO));
        retries.wait_or_fail(busy()).await.unwrap();
        let e = retries.wait_or_fail(busy()).await.unwrap_err();
        assert_eq!(e.message, "busy (gave up after 1 retries)");
        let slow_down = Failure::answered(
            ConnectorError::new(ErrorKind::RateLimited, "slow down"),
            429,
            Some(Duration::from_secs(3600)),
        );
        let e = link.retries().wait_or_fail(slow_down).await.unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::RateLimited, "slow down (asked to wait 3600 s; not waiting that long)")
        );
    }
}
