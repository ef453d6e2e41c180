//! Rate limits: what keeps every request of a credential (each page of a listing, each
//! attempt, each sync job) within the vendor's limit, however many runs and syncs share it.
//!
//! Vendors count requests in a sliding window ("5 per 10 s"): at most that many in any
//! stretch of that length. A token bucket (governor's GCRA included) that allows a burst
//! of 5 refilled at 5 per 10 s lets 9 through in the first 10 s, which the vendor refuses,
//! and one that keeps to the window with a burst of 1 spaces even three calls 2 s apart.
//! So the limiter keeps the send times of the last window and lets a request go when
//! it fits every window: the burst the vendor allows, and never more.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most `requests` in any `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    requests: usize,
    per: Duration,
}

/// A limiter over one or more windows (Expensify: 5 per 10 s and 20 per 60 s).
#[derive(Debug)]
pub struct RateLimiter {
    windows: Vec<Window>,
    /// Send times within the longest window, oldest first.
    sent: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// Parses `1000/60s`, `5/10s`, `100/1m`, or several windows that all apply,
    /// separated by commas: `5/10s, 20/60s`.
    pub fn parse(text: &str) -> Option<RateLimiter> {
        let windows = text.split(',').map(parse_window).collect::<Option<Vec<Window>>>()?;
        Some(RateLimiter { windows, sent: Mutex::new(VecDeque::new()) })
    }

    /// Waits until one request may go out, and counts it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
                self.reserve(&mut sent, Instant::now())
            };
            match wait {
                None => return,
                Some(wait) => {
                    tracing::debug!(wait_ms = wait.as_millis() as u64, "pacing to the rate limit");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Counts a request at `now` if it fits every window; otherwise how long until it would.
    fn reserve(&self, sent: &mut VecDeque<Instant>, now: Instant) -> Option<Duration> {
        let longest = self.windows.iter().map(|w| w.per).max().unwrap_or_default();
        while sent.front().is_some_and(|t| now.duration_since(*t) >= longest) {
            sent.pop_front();
        }
        let wait = self
            .windows
            .iter()
            .filter_map(|w| {
                let inside = sent.iter().rev().take_while(|t| now.duration_since(**t) < w.per).count();
                // The oldest request of a full window must age out before the next one fits.
                (inside >= w.requests).then(|| w.per - now.duration_since(sent[sent.len() - w.requests]))
            })
            .max();
        if wait.is_none() {
            sent.push_back(now);
        }
        wait
    }
}

fn parse_window(text: &str) -> Option<Window> {
    let (n, per) = text.split_once('/')?;
    let requests: usize = n.trim().parse().ok().filter(|n| *n > 0)?;
    let per = super::retry::parse_duration(per)?;
    (!per.is_zero()).then_some(Window { requests, per })
}

/// The vendor's documented limit when the credential sets none: Brex allows 1,000
/// requests per 60 s per token, Expensify 5 requests per 10 s and 20 per 60 s per account.
/// `kind` is the credential's kind (`bearer`, `expensify`, ...).
pub fn default_limit(kind: &str, base_url: &str) -> Option<&'static str> {
    if kind == "expensify" {
        Some("5/10s, 20/60s")
    } else if base_url.contains("brex") {
        Some("1000/60s")
    } else {
        None
    }
}

/// One limiter per credential name, shared by everything that sends with the credential:
/// a sync and the runs calling the same vendor account draw on the same allowance.
#[derive(Debug, Default)]
pub struct RateLimits {
    by_credential: Mutex<HashMap<String, Arc<RateLimiter>>>,
}

impl RateLimits {
    /// The credential's limiter, made from `limit` (see [`RateLimiter::parse`]) by the
    /// first caller; None when the credential is not paced.
    pub fn for_credential(&self, name: &str, limit: Option<&str>) -> Option<Arc<RateLimiter>> {
        let mut limiters = self.by_credential.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limiter) = limiters.get(name) {
            return Some(limiter.clone());
        }
        let limiter = Arc::new(RateLimiter::parse(limit?)?);
        limiters.insert(name.to_string(), limiter.clone());
        Some(limiter)
    }

    /// The limiter of a credential already opened, if it is paced.
    pub fn get(&self, name: &str) -> Option<Arc<RateLimiter>> {
        self.by_credential.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Drops a credential's limiter (its limit changed, or it was removed): the next
    /// caller makes a new one.
    pub fn forget(&self, name: &str) {
        self.by_credential.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_kept_exactly_with_the_burst_they_allow() {
        let limiter = RateLimiter::parse("5/10s, 20/60s").unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sent = VecDeque::new();
        for i in 0..5 {
            assert_eq!(limiter.reserve(&mut sent, at(i * 100)), None, "the first five go at once");
        }
        assert_eq!(limiter.reserve(&mut sent, at(500)), Some(Duration::from_millis(9_500)));
        assert_eq!(limiter.reserve(&mut sent, at(10_000)), None);
        // 20 spread out so no 10 s window is full; the 21st waits for the minute window.
        let mut sent = VecDeque::new();
        for i in 0..20 {
            assert_eq!(limiter.reserve(&mut sent, at(i * 2_500)), None, "{i}");
        }
        assert_eq!(limiter.reserve(&mut sent, at(50_000)), Some(Duration::from_secs(10)));
        assert_eq!(limiter.reserve(&mut sent, at(60_000)), None);
    }

    #[tokio::test]
    async fn acquire_waits_for_the_window() {
        let limiter = RateLimiter::parse("2/300ms").unwrap();
        let start = Instant::now();
        for _ in 0..2 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(100), "the first two go at once");
        limiter.acquire().await;
        let paced = start.elapsed();
        assert!(paced >= Duration::from_millis(300), "the third waits for the first to age out: {paced:?}");
    }

    #[test]
    fn parsing() {
        assert!(RateLimiter::parse("1000/60s").is_some());
        assert!(RateLimiter::parse("100/1m").is_some());
        for bad in ["0/1s", "five/1s", "10/0s", "5", "5/10s,", "5/soon"] {
            assert!(RateLimiter::parse(bad).is_none(), "{bad}");
        }
        for kind in ["expensify", "bearer"] {
            if let Some(limit) = default_limit(kind, "https://api.brex.com") {
                assert!(RateLimiter::parse(limit).is_some(), "{limit}");
            }
        }
    }

    #[test]
    fn one_limiter_per_credential_until_it_is_forgotten() {
        let limits = RateLimits::default();
        let first = limits.for_credential("expensify", Some("5/10s")).unwrap();
        let again = limits.for_credential("expensify", Some("1/1s")).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a sync and a run get the same limiter");
        assert!(Arc::ptr_eq(&limits.get("expensify").unwrap(), &first));
        assert!(limits.for_credential("open", None).is_none());
        limits.forget("expensify");
        let fresh = limits.for_credential("expensify", Some("1/1s")).unwrap();
        assert!(!Arc::ptr_eq(&first, &fresh), "a changed limit takes effect");
        assert_eq!(fresh.windows, [Window { requests: 1, per: Duration::from_secs(1) }]);
    }
}
