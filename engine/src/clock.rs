//! The engine's idea of "now", injectable so tests and demos can say "today is 2027-03-01".

use jiff::{Timestamp, civil::Date, tz::TimeZone};

/// Where time comes from: the system clock, or a fixed instant from `ROSTER_NOW` / `--now`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    fixed: Option<Timestamp>,
}

impl Clock {
    pub fn system() -> Self {
        Self { fixed: None }
    }

    pub fn fixed(at: Timestamp) -> Self {
        Self { fixed: Some(at) }
    }

    /// Parses an RFC 3339 timestamp, or `2027-03-01`: the start of that day in the
    /// machine's time zone, so that `today` is that date.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(ts) = text.parse::<Timestamp>() {
            return Ok(Self::fixed(ts));
        }
        if let Ok(date) = text.parse::<Date>() {
            let ts = date.to_zoned(TimeZone::system()).map_err(|e| e.to_string())?.timestamp();
            return Ok(Self::fixed(ts));
        }
        Err(format!("`{text}` is neither a date (2027-03-01) nor a timestamp (2027-03-01T09:00:00Z)"))
    }

    /// `ROSTER_NOW` when set, else the system clock.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("ROSTER_NOW") {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).map_err(|e| format!("ROSTER_NOW: {e}")),
            _ => Ok(Self::system()),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.fixed.unwrap_or_else(Timestamp::now)
    }

    /// Today's date where this machine is (its time zone; `TZ` chooses another): what
    /// `<<today>>` means for runs started by hand, by `run --all` and by record events.
    pub fn today(&self) -> Date {
        self.today_in(&TimeZone::system())
    }

    /// Today's date in `zone`.
    pub fn today_in(&self, zone: &TimeZone) -> Date {
        self.now().to_zoned(zone.clone()).date()
    }

    /// The real instant at which this clock shows `at`. Timers, leases and heartbeats run
    /// on the real clock (a process waits real time), so under a fixed clock (`--now`) a
    /// wait keeps its length from the moment it began: `at` minus the fixed instant, from
    /// the real now.
    pub fn real_instant(&self, at: Timestamp) -> Timestamp {
        match self.fixed {
            None => at,
            Some(fixed) => Timestamp::now().checked_add(at.duration_since(fixed)).unwrap_or(Timestamp::MAX),
        }
    }

    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }
}

/// RFC 3339 text for a timestamp, to the second: for fire times, marks and keys, whose
/// text must stay the same from one version to the next.
pub fn rfc3339(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 text to the millisecond: for when things happened (steps, runs, syncs), so
/// two steps in one second keep their order and a reader sees sub-second times.
pub fn rfc3339_millis(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
