//! Pruning old finished runs: by hand (`roster runs prune --older-than 90d`) or by `serve`
//! with a retention setting. Only finished runs go, with their journals; unfinished runs
//! and the dedupe keys that keep triggers from firing twice always stay.

use jiff::{SignedDuration, Timestamp};

use crate::error::{Error, Result};
use crate::store::Store;

/// Runs deleted per store call, so a large prune never holds the store for long.
const BATCH: usize = 500;

/// `90d`, `12w`, `36h`: how old a finished run must be to go. At least an hour, so a typo
/// like `90` (no unit) or `0d` never empties the history.
pub fn parse_age(text: &str) -> Result<SignedDuration> {
    let refuse = |why: String| Error::Refused(format!("{why}: not an age to prune at (write it like 90d, 12w or 36h)"));
    let age =
        roster_blocks::duration::parse(text, std::time::Duration::from_secs(100 * 365 * 86_400)).map_err(refuse)?;
    if age < std::time::Duration::from_secs(3600) {
        return Err(refuse(format!("`{text}` is shorter than an hour")));
    }
    SignedDuration::try_from(age).map_err(|e| refuse(format!("`{text}`: {e}")))
}

/// What a prune did.
#[derive(Debug, Clone, Copy)]
pub struct Pruned {
    /// Finished runs deleted, with their journals.
    pub runs: usize,
    /// They all finished before this.
    pub before: Timestamp,
}

/// Deletes every finished run that finished more than `age` before `now`, in batches.
pub async fn prune(store: &Store, now: Timestamp, age: SignedDuration) -> Result<Pruned> {
    let before = now.checked_sub(age).map_err(|e| Error::Refused(format!("cannot go back {age} from {now}: {e}")))?;
    let mut runs = 0;
    loop {
        let n = store.runs.prune_finished(before, BATCH).await?;
        runs += n;
        if n < BATCH {
            return Ok(Pruned { runs, before });
        }
        // Let runs and requests in between batches.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_unit_and_refuse_what_would_empty_the_history() {
        assert_eq!(parse_age("90d").unwrap(), SignedDuration::from_hours(90 * 24));
        assert_eq!(parse_age("2w").unwrap(), SignedDuration::from_hours(14 * 24));
        assert_eq!(parse_age("36h").unwrap(), SignedDuration::from_hours(36));
        assert_eq!(parse_age("1.5d").unwrap(), SignedDuration::from_hours(36));
        for bad in ["90", "0d", "30m", "d", "-3d", "3y", "99999999999999999999d"] {
            let e = parse_age(bad).unwrap_err().to_string();
            assert!(e.contains("90d"), "{bad}: {e}");
        }
    }
}
