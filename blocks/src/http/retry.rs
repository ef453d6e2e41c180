//! Retry policies: how often and how patiently a transient failure is tried again, for
//! API blocks and connectors alike.
//!
//! Written in a workflow as `"retry": {"max_attempts": 8, "initial": "1s", "factor": 2,
//! "max_delay": "5m", "budget": "30m"}`; every field is optional.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::Value;

use crate::diag::{ConfigError, Diagnostics};
use crate::fields::Fields;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial: Duration,
    pub factor: f64,
    pub max_delay: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            budget: Duration::from_secs(30 * 60),
        }
    }
}

/// What an attempt came to, as far as sending it again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The vendor answered with this status (and maybe a `Retry-After`).
    Answered { status: u16, retry_after: Option<Duration> },
    /// No answer came: a timeout, a refused or dropped connection.
    NoAnswer,
    /// Sending again would fail the same way: a refused redirect, a request that cannot be
    /// built, an answer too large or not in the shape the vendor documents.
    Final,
}

impl Outcome {
    /// Whether another attempt may succeed: no answer, or 408, 429 or a 5xx.
    pub fn is_transient(self) -> bool {
        match self {
            Outcome::Answered { status, .. } => status == 408 || status == 429 || (500..600).contains(&status),
            Outcome::NoAnswer => true,
            Outcome::Final => false,
        }
    }

    /// A 408 or 429 was refused before any work was done, so even a request that is unsafe
    /// to repeat may go again; after anything else the vendor may have applied it.
    fn refused_before_work(self) -> bool {
        matches!(self, Outcome::Answered { status: 408 | 429, .. })
    }

    fn retry_after(self) -> Option<Duration> {
        match self {
            Outcome::Answered { retry_after, .. } => retry_after,
            _ => None,
        }
    }
}

/// Why an attempt stays the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Trying again would not help: an answer other than 408, 429 or 5xx, or a final failure.
    Final,
    /// The vendor may have applied the request, and it is not safe to send twice.
    Unsafe,
    /// `max_attempts` attempts were made.
    Attempts,
    /// The next attempt would start after the budget.
    Budget,
    /// The vendor asked to wait this long, more than `max_delay`: sending sooner would only
    /// be refused again.
    TooLong(Duration),
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` after attempt `attempt` came to
    /// `outcome`, `since_first` after the first one went out; or why `attempt` stays the
    /// last. `resend_safe`: repeating the request does no harm (a GET, a PUT, a POST with
    /// an idempotency key).
    pub fn next_attempt_in(
        &self,
        attempt: u32,
        since_first: Duration,
        outcome: Outcome,
        resend_safe: bool,
    ) -> Result<Duration, Stop> {
        if !outcome.is_transient() {
            return Err(Stop::Final);
        }
        if !(resend_safe || outcome.refused_before_work()) {
            return Err(Stop::Unsafe);
        }
        if attempt >= self.max_attempts {
            return Err(Stop::Attempts);
        }
        let wait = self.delay(attempt, outcome.retry_after())?;
        // No new attempt starts once the budget is spent.
        if since_first.saturating_add(wait) >= self.budget {
            return Err(Stop::Budget);
        }
        Ok(wait)
    }

    /// The wait after attempt `attempt` failed: the vendor's `Retry-After` when it sent
    /// one (never sooner, and not at all past `max_delay`), else exponential backoff with
    /// jitter (between half and all of the step), at most `max_delay`.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Result<Duration, Stop> {
        if let Some(wait) = retry_after {
            return if wait > self.max_delay { Err(Stop::TooLong(wait)) } else { Ok(wait) };
        }
        // backon's jitter adds up to the step again, so halving the step and the cap gives
        // "between half and all" of them. A run resumed at attempt n skips the first steps.
        let steps = ExponentialBuilder::new()
            .with_min_delay(self.initial / 2)
            .with_factor(self.factor as f32)
            .with_max_delay(self.max_delay / 2)
            .with_jitter()
            .without_max_times()
            .build();
        Ok(steps.take(attempt.max(1) as usize).last().unwrap_or(self.initial).min(self.max_delay))
    }

    pub fn compile(value: &Value, path: &str, diags: &mut Diagnostics) -> Option<RetryPolicy> {
        let f = Fields::open(
            value,
            path,
            "a retry policy",
            &["max_attempts", "initial", "factor", "max_delay", "budget"],
            diags,
        )?;
        let mut policy = RetryPolicy::default();
        if let Some(v) = f.get("max_attempts") {
            match v.as_u64() {
                Some(n) if (1..=100).contains(&n) => policy.max_attempts = n as u32,
                _ => diags.error(f.at("max_attempts"), "max_attempts must be a whole number from 1 to 100"),
            }
        }
        if let Some(v) = f.get("factor") {
            match v.as_f64() {
                Some(x) if (1.0..=10.0).contains(&x) => policy.factor = x,
                _ => diags.error(f.at("factor"), "factor must be a number from 1 to 10"),
            }
        }
        for (key, slot) in
            [("initial", &mut policy.initial), ("max_delay", &mut policy.max_delay), ("budget", &mut policy.budget)]
        {
            if let Some(v) = f.get(key) {
                match v.as_str().map(check_duration) {
                    Some(Ok(d)) => *slot = d,
                    Some(Err(reason)) => diags.error(f.at(key), reason),
                    None => diags.push(
                        ConfigError::new(f.at(key), format!("`{v}` is not a duration"))
                            .with_help("write it as a string like \"500ms\", \"1s\", \"5m\" or \"1h\""),
                    ),
                }
            }
        }
        if policy.max_delay < policy.initial {
            diags.error(f.at("max_delay"), "max_delay must not be shorter than initial");
        }
        Some(policy)
    }
}

/// The longest duration any setting accepts. Longer waits are typos, and `Duration`
/// arithmetic on them overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// `500ms`, `1s`, `1.5s`, `5m`, `1h`, up to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    check_duration(text).ok()
}

/// Like [`parse_duration`], with the reason when `text` is not a duration we accept.
pub fn check_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text, MAX_DURATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_bad_policies() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("720h"), Some(MAX_DURATION));
        for huge in [
            "20000000000000000000s",
            "18446744073709551616s",
            "721h",
            "99999999999999999999ms",
            "1000000000000000000000000000000h",
        ] {
            let reason = check_duration(huge).unwrap_err();
            assert!(reason.contains("maximum of 30 days"), "{huge}: {reason}");
        }
        assert!(check_duration("inf s").unwrap_err().contains("not a duration"));
        let mut d = Diagnostics::new();
        let p = RetryPolicy::compile(&serde_json::json!({"max_attempts": 3, "initial": "100ms"}), "r", &mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!((p.max_attempts, p.initial), (3, Duration::from_millis(100)));
        RetryPolicy::compile(&serde_json::json!({"max_attempts": 0, "initial": "fast", "tries": 2}), "r", &mut d);
        let text: Vec<String> = d.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        let mut d = Diagnostics::new();
        let p = RetryPolicy::compile(
            &serde_json::json!({"max_delay": "20000000000000000000s", "budget": "1e400h"}),
            "r",
            &mut d,
        );
        assert!(p.is_some());
        let text: Vec<String> = d.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("r.max_delay: `20000000000000000000s` is longer than the maximum of 30 days"),
            "{text:?}"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p =
            RetryPolicy { initial: Duration::from_secs(1), max_delay: Duration::from_secs(5), ..Default::default() };
        let delay = |attempt, retry_after: Option<u64>| p.delay(attempt, retry_after.map(Duration::from_secs));
        assert!(delay(1, None).unwrap() <= Duration::from_secs(1));
        let third = delay(3, None).unwrap();
        assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
        assert!(delay(10, None).unwrap() <= Duration::from_secs(5));
        assert_eq!(delay(1, Some(3)), Ok(Duration::from_secs(3)));
        assert_eq!(delay(1, Some(60)), Err(Stop::TooLong(Duration::from_secs(60))), "never sooner than asked");
        for _ in 0..200 {
            let d = delay(2, None).unwrap();
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "jitter keeps within half and all: {d:?}"
            );
        }
    }

    fn answered(status: u16, retry_after: Option<u64>) -> Outcome {
        Outcome::Answered { status, retry_after: retry_after.map(Duration::from_secs) }
    }

    #[test]
    fn retry_after_beats_the_backoff_and_max_delay_caps_it() {
        let p = RetryPolicy {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_secs(30),
            ..Default::default()
        };
        let wait = p.next_attempt_in(1, Duration::ZERO, answered(429, Some(7)), true);
        assert_eq!(wait, Ok(Duration::from_secs(7)), "the vendor's word, not 10 ms of backoff");
        let wait = p.next_attempt_in(1, Duration::ZERO, answered(503, Some(3600)), true);
        assert_eq!(wait, Err(Stop::TooLong(Duration::from_secs(3600))), "not longer than max_delay, and not sooner");
        let backoff = p.next_attempt_in(1, Duration::ZERO, answered(503, None), true).unwrap();
        assert!(backoff <= Duration::from_millis(10), "{backoff:?}");
    }

    #[test]
    fn attempts_and_the_budget_run_out() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(p.next_attempt_in(2, Duration::ZERO, Outcome::NoAnswer, true).is_ok());
        assert_eq!(p.next_attempt_in(3, Duration::ZERO, Outcome::NoAnswer, true), Err(Stop::Attempts));
        assert!(p.next_attempt_in(1, Duration::from_secs(8), answered(500, Some(1)), true).is_ok());
        assert_eq!(
            p.next_attempt_in(1, Duration::from_secs(9), answered(500, Some(1)), true),
            Err(Stop::Budget),
            "the next attempt would start when the budget is spent"
        );
    }

    #[test]
    fn only_transient_failures_go_again_and_unsafe_requests_only_when_refused() {
        let p = RetryPolicy::default();
        for final_status in [200, 400, 401, 403, 404, 409, 422] {
            let stop = p.next_attempt_in(1, Duration::ZERO, answered(final_status, Some(1)), true);
            assert_eq!(stop, Err(Stop::Final), "{final_status}");
        }
        assert_eq!(p.next_attempt_in(1, Duration::ZERO, Outcome::Final, true), Err(Stop::Final));
        // A POST without an idempotency key: a 500 or a timeout may have been applied.
        assert_eq!(p.next_attempt_in(1, Duration::ZERO, answered(500, None), false), Err(Stop::Unsafe));
        assert_eq!(p.next_attempt_in(1, Duration::ZERO, Outcome::NoAnswer, false), Err(Stop::Unsafe));
        assert!(p.next_attempt_in(1, Duration::ZERO, answered(429, None), false).is_ok());
        assert!(p.next_attempt_in(1, Duration::ZERO, answered(408, None), false).is_ok());
    }
}
