//! Rate limits: what keeps every request of a credential (each page of a listing, each
//! attempt, each sync job) within the vendor's limit, however many runs and syncs share it.
//!
//! Vendors count requests in a sliding window ("5 per 10 s"): at most that many in any
//! stretch of that length. A token bucket (governor's GCRA included) that allows a burst
//! of 5 refilled at 5 per 10 s lets 9 through in the first 10 s, which the vendor refuses,
//! and one that keeps to the window with a burst of 1 spaces even three calls 2 s apart.
//! So the limiter keeps the times of the last window and lets a request go when it fits
//! every window: the burst the vendor allows, and never more.
//!
//! A request counts from when its answer came back, not from when it left: the vendor
//! saw it somewhere in between, and a slow first request (a new connection) would
//! otherwise leave room for one too many at the vendor's end. Until then it counts as
//! sent just now.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::credential::CredentialKind;

/// At most `requests` in any `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    requests: usize,
    per: Duration,
}

#[derive(Debug, Default)]
struct Sent {
    /// When the answers of finished requests came, within the longest window, oldest first.
    answered: VecDeque<Instant>,
    in_flight: usize,
}

/// A limiter over one or more windows (Expensify: 5 per 10 s and 20 per 60 s).
#[derive(Debug)]
pub struct RateLimiter {
    windows: Vec<Window>,
    sent: Mutex<Sent>,
    /// A request finished: a waiter whose window was full of requests in flight may go.
    finished: Notify,
}

/// Leave to send one request; dropped when its answer is in (or it failed).
#[must_use = "the request counts as in flight until the permit is dropped"]
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<RateLimiter>,
}

impl Permit {
    /// The limiter this permit came from (a listing's next page takes its own permit).
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut sent = self.limiter.lock();
        sent.in_flight = sent.in_flight.saturating_sub(1);
        sent.answered.push_back(Instant::now());
        drop(sent);
        self.limiter.finished.notify_waiters();
    }
}

impl RateLimiter {
    /// Parses `1000/60s`, `5/10s`, `100/1m`, or several windows that all apply,
    /// separated by commas: `5/10s, 20/60s`.
    pub fn parse(text: &str) -> Option<RateLimiter> {
        let windows = text.split(',').map(parse_window).collect::<Option<Vec<Window>>>()?;
        Some(RateLimiter { windows, sent: Mutex::new(Sent::default()), finished: Notify::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one request may go out; it counts until the permit is dropped.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let wait = self.reserve(&mut self.lock(), Instant::now());
            let Some(wait) = wait else {
                return Permit { limiter: self.clone() };
            };
            tracing::debug!(wait_ms = wait.map_or(0, |w| w.as_millis() as u64), "pacing to the rate limit");
            match wait {
                Some(wait) => tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = finished => {}
                },
                None => finished.await,
            }
        }
    }

    /// Counts a request at `now` if it fits every window. Otherwise how long until one
    /// that is counted ages out, or `Some(None)` when only a request in flight finishing
    /// can make room.
    fn reserve(&self, sent: &mut Sent, now: Instant) -> Option<Option<Duration>> {
        let longest = self.windows.iter().map(|w| w.per).max().unwrap_or_default();
        while sent.answered.front().is_some_and(|t| now.duration_since(*t) >= longest) {
            sent.answered.pop_front();
        }
        let mut wait: Option<Option<Duration>> = None;
        for w in &self.windows {
            let answered = sent.answered.iter().rev().take_while(|t| now.duration_since(**t) < w.per).count();
            if answered + sent.in_flight < w.requests {
                continue;
            }
            // The oldest answers must age out until one more fits; requests in flight do not.
            let this = (sent.in_flight < w.requests).then(|| {
                let oldest_to_go = sent.answered[sent.answered.len() - (w.requests - sent.in_flight)];
                w.per - now.duration_since(oldest_to_go)
            });
            wait = Some(match (wait.flatten(), this) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (_, None) => None,
                (a, b) => a.or(b),
            });
            if wait == Some(None) {
                break;
            }
        }
        if wait.is_none() {
            sent.in_flight += 1;
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
pub fn default_limit(kind: CredentialKind, base_url: &str) -> Option<&'static str> {
    if kind == CredentialKind::Expensify {
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

    /// Sends one request at `at` that is answered at once.
    fn send(limiter: &RateLimiter, sent: &mut Sent, at: Instant) -> Option<Option<Duration>> {
        let wait = limiter.reserve(sent, at);
        if wait.is_none() {
            sent.in_flight -= 1;
            sent.answered.push_back(at);
        }
        wait
    }

    #[test]
    fn windows_are_kept_exactly_with_the_burst_they_allow() {
        let limiter = RateLimiter::parse("5/10s, 20/60s").unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sent = Sent::default();
        for i in 0..5 {
            assert_eq!(send(&limiter, &mut sent, at(i * 100)), None, "the first five go at once");
        }
        assert_eq!(send(&limiter, &mut sent, at(500)), Some(Some(Duration::from_millis(9_500))));
        assert_eq!(send(&limiter, &mut sent, at(10_000)), None);
        // 20 spread out so no 10 s window is full; the 21st waits for the minute window.
        let mut sent = Sent::default();
        for i in 0..20 {
            assert_eq!(send(&limiter, &mut sent, at(i * 2_500)), None, "{i}");
        }
        assert_eq!(send(&limiter, &mut sent, at(50_000)), Some(Some(Duration::from_secs(10))));
        assert_eq!(send(&limiter, &mut sent, at(60_000)), None);
    }

    #[test]
    fn a_request_counts_until_its_answer_is_in() {
        let limiter = RateLimiter::parse("2/1s").unwrap();
        let t0 = Instant::now();
        let mut sent = Sent::default();
        assert_eq!(limiter.reserve(&mut sent, t0), None);
        assert_eq!(limiter.reserve(&mut sent, t0), None);
        // Both still in flight two seconds on: only one of them finishing makes room.
        assert_eq!(limiter.reserve(&mut sent, t0 + Duration::from_secs(2)), Some(None));
        sent.in_flight -= 1;
        sent.answered.push_back(t0 + Duration::from_secs(2));
        let wait = limiter.reserve(&mut sent, t0 + Duration::from_millis(2_400));
        assert_eq!(wait, Some(Some(Duration::from_millis(600))), "a second after the answer, not after the send");
    }

    #[tokio::test]
    async fn acquire_waits_for_the_window_and_for_answers() {
        let limiter = Arc::new(RateLimiter::parse("2/300ms").unwrap());
        let start = Instant::now();
        drop((limiter.acquire().await, limiter.acquire().await));
        assert!(start.elapsed() < Duration::from_millis(100), "the first two go at once");
        drop(limiter.acquire().await);
        let paced = start.elapsed();
        assert!(paced >= Duration::from_millis(300), "the third waits for the first to age out: {paced:?}");

        let limiter = Arc::new(RateLimiter::parse("1/50ms").unwrap());
        let slow = limiter.acquire().await;
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let asked = Instant::now();
                drop(limiter.acquire().await);
                asked.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(slow);
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(240), "50 ms after the slow answer came back: {waited:?}");
    }

    #[test]
    fn parsing() {
        assert!(RateLimiter::parse("1000/60s").is_some());
        assert!(RateLimiter::parse("100/1m").is_some());
        for bad in ["0/1s", "five/1s", "10/0s", "5", "5/10s,", "5/soon"] {
            assert!(RateLimiter::parse(bad).is_none(), "{bad}");
        }
        for kind in [CredentialKind::Expensify, CredentialKind::Bearer] {
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
