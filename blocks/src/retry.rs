//! Retry policies: how often and how patiently a transient failure is tried again.
//!
//! Written in a workflow as `"retry": {"max_attempts": 8, "initial": "1s", "factor": 2,
//! "max_delay": "5m", "budget": "30m"}`; every field is optional.

use std::time::Duration;

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

impl RetryPolicy {
    /// The wait after attempt `attempt` failed: the vendor's `Retry-After` when it sent
    /// one, else exponential backoff with jitter (between half and all of the step).
    pub fn delay(&self, attempt: u32, retry_after: Option<u64>) -> Duration {
        if let Some(secs) = retry_after {
            return Duration::from_secs(secs).min(self.max_delay);
        }
        let base = self.initial.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(capped * (0.5 + rand_unit() * 0.5))
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
    let not_one = || format!("`{text}` is not a duration; write it like \"500ms\", \"1s\", \"5m\" or \"1h\"");
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(not_one)?);
    let n: f64 = num.trim().parse().map_err(|_| not_one())?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(not_one());
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(not_one()),
    };
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("`{text}` is longer than the maximum of 30 days (\"720h\")"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A cheap uniform number in [0, 1) for jitter; no need for a cryptographic source.
fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
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
        assert!(p.delay(1, None) <= Duration::from_secs(1));
        assert!(p.delay(3, None) >= Duration::from_secs(2) && p.delay(3, None) <= Duration::from_secs(4));
        assert!(p.delay(10, None) <= Duration::from_secs(5));
        assert_eq!(p.delay(1, Some(3)), Duration::from_secs(3));
        assert_eq!(p.delay(1, Some(60)), Duration::from_secs(5));
    }
}
