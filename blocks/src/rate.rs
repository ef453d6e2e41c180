//! A token-bucket rate limiter: what keeps every request of a credential (each page of a
//! listing included) within the vendor's limit, however many runs share it.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// A token bucket: `capacity` requests at once, refilled at `capacity` per `per`.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(requests: u32, per: Duration) -> Self {
        let capacity = requests.max(1) as f64;
        Self {
            capacity,
            per_second: capacity / per.as_secs_f64().max(0.001),
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Parses `1000/60s`, `5/10s`, `100/1m`.
    pub fn parse(text: &str) -> Option<RateLimiter> {
        let (n, per) = text.split_once('/')?;
        let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let per = crate::retry::parse_duration(per)?;
        (!per.is_zero()).then(|| RateLimiter::new(n, per))
    }

    /// Waits until one request may go out.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut guard = self.state.lock().await;
                let (tokens, last) = &mut *guard;
                let now = Instant::now();
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.capacity);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - *tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_lets_a_burst_through_then_paces() {
        let limiter = RateLimiter::parse("5/1s").unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(100), "the first five go at once");
        for _ in 0..3 {
            limiter.acquire().await;
        }
        let paced = start.elapsed();
        assert!(paced >= Duration::from_millis(550), "three more wait about 200 ms each: {paced:?}");
        assert!(RateLimiter::parse("0/1s").is_none());
        assert!(RateLimiter::parse("five/1s").is_none());
    }
}
