//! Fault injection settings and the deterministic per-request draw.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rng::{mix, unit};
use crate::stats::Vendor;

/// Fractions of vendor requests (0.0..=1.0) that misbehave. All zero by default. The draw for
/// the n-th request to a vendor depends only on (`seed`, vendor, n), so a sequential client sees
/// the same faults on every run. Setting faults restarts n at zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer 500 with the vendor's error shape (Expensify: half as HTTP 500, half as HTTP 200
    /// with `responseCode` 500 in the body, both of which it does in the wild).
    pub error_500: f64,
    /// Answer 429 with `Retry-After: 1`.
    pub rate_limit_429: f64,
    /// Delay the request by `slow_for`, then serve it normally.
    pub slow: f64,
    /// JSON: `slow_for_ms`.
    #[serde(rename = "slow_for_ms", with = "duration_ms")]
    pub slow_for: Duration,
    /// Close the connection without any response.
    pub drop_connection: f64,
    /// Share of dropped connections that happen after the request was applied (the response is
    /// lost, the side effect is not): the case idempotency keys exist for. Default 0.5.
    pub drop_after_effect: f64,
    pub seed: u64,
    /// Make the vendor echo back the credentials it was sent, as careless vendors do (not a
    /// fraction: every request while set). Not part of any vendor's documented behaviour.
    pub echo_credentials: Echo,
    /// Answer every vendor request `307 Temporary Redirect` to this base URL, same path and
    /// query (a vendor that moved, or a hostile one).
    pub redirect_to: Option<String>,
}

/// How a vendor echoes the credentials it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Echo {
    #[default]
    Off,
    /// Refuse the request in the vendor's error shape (Brex 401, Expensify `responseCode`
    /// 401, Sage 400 `invalid_client` from the token endpoint, 401 from the API) with the
    /// credentials in the message and in the trace-id header.
    Reject,
    /// Serve the request, with the credentials in an `echo` field added to every JSON object
    /// of the answer (where a response mapping or a sync mapping can pick them up).
    Accept,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            error_500: 0.0,
            rate_limit_429: 0.0,
            slow: 0.0,
            slow_for: Duration::from_secs(1),
            drop_connection: 0.0,
            drop_after_effect: 0.5,
            seed: 0,
            echo_credentials: Echo::Off,
            redirect_to: None,
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Error500 { in_body: bool },
    RateLimit429,
    Slow(Duration),
    DropBefore,
    DropAfter,
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    pub(crate) counter: u64,
}

impl Faults {
    fn any(&self) -> bool {
        self.error_500 > 0.0 || self.rate_limit_429 > 0.0 || self.slow > 0.0 || self.drop_connection > 0.0
    }
}

impl FaultState {
    pub(crate) fn set(&mut self, faults: Faults) {
        self.faults = faults;
        self.counter = 0;
    }

    /// Draws the fault (if any) for the next request to `vendor`.
    pub(crate) fn draw(&mut self, vendor: Vendor) -> Option<Fault> {
        let f = &self.faults;
        if !f.any() {
            return None;
        }
        let n = self.counter;
        self.counter += 1;
        let h = mix(f.seed ^ mix(vendor.index() as u64 + 1) ^ mix(n.wrapping_add(0xfa17)));
        let roll = unit(h);
        let second = unit(mix(h));
        let mut edge = 0.0;
        let mut hit = |p: f64| {
            edge += p.clamp(0.0, 1.0);
            roll < edge
        };
        if hit(f.error_500) {
            Some(Fault::Error500 { in_body: second < 0.5 })
        } else if hit(f.rate_limit_429) {
            Some(Fault::RateLimit429)
        } else if hit(f.slow) {
            Some(Fault::Slow(f.slow_for))
        } else if hit(f.drop_connection) {
            Some(if second < f.drop_after_effect { Fault::DropAfter } else { Fault::DropBefore })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_roughly_honoured_and_repeatable() {
        let faults = Faults { error_500: 0.1, rate_limit_429: 0.1, drop_connection: 0.2, seed: 5, ..Faults::default() };
        let run = || {
            let mut st = FaultState::default();
            st.set(faults.clone());
            (0..10_000).map(|_| st.draw(Vendor::Brex)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let count = |pred: fn(&Option<Fault>) -> bool| a.iter().filter(|f| pred(f)).count();
        let e500 = count(|f| matches!(f, Some(Fault::Error500 { .. })));
        let drops = count(|f| matches!(f, Some(Fault::DropAfter | Fault::DropBefore)));
        assert!((800..1200).contains(&e500), "{e500}");
        assert!((1700..2300).contains(&drops), "{drops}");
    }

    #[test]
    fn zero_means_never() {
        let mut st = FaultState::default();
        assert!((0..1000).all(|_| st.draw(Vendor::Sage).is_none()));
    }

    #[test]
    fn json_uses_milliseconds_and_defaults() {
        let f: Faults = serde_json::from_str(r#"{"slow": 0.5, "slow_for_ms": 250}"#).unwrap();
        assert_eq!(f.slow_for, Duration::from_millis(250));
        assert_eq!(f.error_500, 0.0);
        assert_eq!(f.drop_after_effect, 0.5);
    }
}
