//! What every connector shares: one HTTP attempt, reading the answer bounded, turning a
//! status into a failure, and retrying transient failures with backoff and jitter.

use std::time::Duration;

use roster_blocks::http::{excerpt, parse_body, vendor_message};
use serde_json::Value;

use crate::{ConnectorError, ErrorKind};

/// Larger answers are refused rather than held in memory (a Brex page of 1000 is ~1 MiB).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// First retry delay for errors; doubles per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// First delay for a 429 without `Retry-After`: rate windows are seconds long, not milliseconds.
const RATE_LIMIT_BASE: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A longer `Retry-After` is not waited out inside a sync; the run fails as rate limited.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
const EXCERPT_CHARS: usize = 300;

/// An HTTP answer, body read in full.
pub(crate) struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, or Malformed with a bounded excerpt.
    pub fn json(&self, vendor: &str) -> Result<Value, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let text = String::from_utf8_lossy(&self.body);
            malformed(format!(
                "{vendor} sent a {} answer that is not JSON ({e}): {}",
                self.status,
                excerpt(text.trim(), EXCERPT_CHARS)
            ))
        })
    }

    /// The vendor's own words from an error answer.
    pub fn message(&self) -> String {
        vendor_message(&parse_body(&self.body)).unwrap_or_else(|| "(empty body)".into())
    }
}

/// A failed attempt and whether trying again may help.
pub(crate) struct Failure {
    pub error: ConnectorError,
    pub retry: Retry,
}

pub(crate) enum Retry {
    No,
    /// After the vendor's `Retry-After` when given, else after a backoff.
    Yes(Option<Duration>),
}

impl Failure {
    pub fn fatal(error: ConnectorError) -> Failure {
        Failure { error, retry: Retry::No }
    }

    pub fn transient(error: ConnectorError, after: Option<Duration>) -> Failure {
        Failure { error, retry: Retry::Yes(after) }
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

/// Sends one request and reads the answer. Transport failures are transient.
pub(crate) async fn send(vendor: &str, request: reqwest::RequestBuilder) -> Result<Response, Failure> {
    let transport = |e: reqwest::Error| {
        let what = if e.is_timeout() { "timed out talking to" } else { "could not talk to" };
        let said = roster_blocks::http::redirect_refusal(&e)
            .map(|r| format!("{vendor}: {r}"))
            .unwrap_or_else(|| format!("{what} {vendor}: {}", chain(&e)));
        let error = ConnectorError::new(ErrorKind::Transport, said);
        // A builder error (bad URL) or a refused redirect will fail the same way every time.
        if e.is_builder() || e.is_redirect() {
            Failure::fatal(ConnectorError { kind: ErrorKind::Config, ..error })
        } else {
            Failure::transient(error, None)
        }
    };
    let mut resp = request.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Failure::fatal(malformed(format!(
                "{vendor} sent an answer larger than {} MiB; refusing to read it",
                MAX_BODY_BYTES >> 20
            ))));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, retry_after, body })
}

/// reqwest hides the useful part (e.g. "connection refused") in the source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    message
}

/// The usual meaning of a non-2xx status. `{vendor} said {status}: {vendor's message}`.
pub(crate) fn status_failure(vendor: &str, resp: &Response) -> Failure {
    let said = format!("{vendor} said {}: {}", resp.status, resp.message());
    match resp.status {
        401 | 403 => Failure::fatal(ConnectorError::new(ErrorKind::Auth, said)),
        429 => Failure::transient(ConnectorError::new(ErrorKind::RateLimited, said), resp.retry_after),
        408 => Failure::transient(ConnectorError::new(ErrorKind::Transport, said), resp.retry_after),
        500..=599 => Failure::transient(ConnectorError::new(ErrorKind::Vendor, said), resp.retry_after),
        404 => {
            Failure::fatal(ConnectorError::new(ErrorKind::Config, format!("{said} (check the credential's base URL)")))
        }
        _ => Failure::fatal(ConnectorError::new(ErrorKind::Vendor, said)),
    }
}

/// Retry bookkeeping for one request (one page); a fresh one per request.
pub(crate) struct Backoff {
    max_retries: u32,
    retries: u32,
}

impl Backoff {
    pub fn new(max_retries: u32) -> Backoff {
        Backoff { max_retries, retries: 0 }
    }

    /// Sleeps before the next attempt, or gives the failure back when it is final or the
    /// retries are used up.
    pub async fn wait_or_fail(&mut self, failure: Failure) -> Result<(), ConnectorError> {
        let Retry::Yes(after) = failure.retry else {
            return Err(failure.error);
        };
        let mut error = failure.error;
        if self.retries >= self.max_retries {
            if self.retries > 0 {
                error.message = format!("{} (gave up after {} retries)", error.message, self.retries);
            }
            return Err(error);
        }
        let delay = match after {
            Some(d) if d > MAX_RETRY_AFTER => {
                error.message = format!("{} (asked to wait {} s; not waiting that long)", error.message, d.as_secs());
                return Err(error);
            }
            // A little jitter so parallel clients do not return in lockstep.
            Some(d) => d + Duration::from_millis((rand::random::<f64>() * 250.0) as u64),
            None if error.kind == ErrorKind::RateLimited => jittered(RATE_LIMIT_BASE, self.retries),
            None => jittered(BACKOFF_BASE, self.retries),
        };
        self.retries += 1;
        // Log lines are scrubbed of secrets on their way out, so the vendor's words may go in.
        tracing::debug!(
            kind = %error.kind,
            retry = self.retries,
            delay_ms = delay.as_millis() as u64,
            error = %error.message,
            "retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Exponential backoff with "equal jitter": half fixed, half random.
fn jittered(base: Duration, retries: u32) -> Duration {
    let full = base.saturating_mul(1u32 << retries.min(16)).min(BACKOFF_CAP);
    full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response { status, retry_after: None, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for retries in 0..5 {
            let full = BACKOFF_BASE * (1 << retries);
            let d = jittered(BACKOFF_BASE, retries);
            assert!(d >= full / 2 && d <= full, "{retries}: {d:?}");
        }
        assert!(jittered(BACKOFF_BASE, 40) <= BACKOFF_CAP);
    }

    #[test]
    fn statuses_map_to_kinds() {
        let f = status_failure("Brex", &resp(403, r#"{"type":"FORBIDDEN","message":"Invalid or Revoked Token"}"#));
        assert_eq!(f.error.kind, ErrorKind::Auth);
        assert_eq!(f.error.message, "Brex said 403: Invalid or Revoked Token (FORBIDDEN)");
        assert!(matches!(status_failure("X", &resp(503, "")).retry, Retry::Yes(None)));
        assert!(matches!(status_failure("X", &resp(400, "{}")).retry, Retry::No));
        assert_eq!(status_failure("X", &resp(401, "")).error.message, "X said 401: (empty body)");
        assert_eq!(status_failure("X", &resp(404, "")).error.kind, ErrorKind::Config);
    }

    #[test]
    fn bad_json_is_malformed_with_a_bounded_excerpt() {
        let long = format!("<html>{}</html>", "x".repeat(5000));
        let e = resp(200, &long).json("Brex").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed);
        assert!(e.message.starts_with("Brex sent a 200 answer that is not JSON"), "{e}");
        assert!(e.message.len() < 600, "{}", e.message.len());
    }

    #[tokio::test]
    async fn final_failures_are_not_retried_and_retries_run_out() {
        let mut b = Backoff::new(1);
        let e = b.wait_or_fail(Failure::fatal(ConnectorError::new(ErrorKind::Auth, "no"))).await.unwrap_err();
        assert_eq!(e.message, "no");
        let transient = || Failure::transient(ConnectorError::new(ErrorKind::Vendor, "busy"), Some(Duration::ZERO));
        b.wait_or_fail(transient()).await.unwrap();
        let e = b.wait_or_fail(transient()).await.unwrap_err();
        assert_eq!(e.message, "busy (gave up after 1 retries)");
        let long = Failure::transient(
            ConnectorError::new(ErrorKind::RateLimited, "slow down"),
            Some(Duration::from_secs(3600)),
        );
        let e = Backoff::new(5).wait_or_fail(long).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
    }
}
