//! Durations as people write them in files and flags: `500ms`, `1.5s`, `5m`, `36h`, `3d`,
//! `2w`. One parser for every setting that takes one (retry delays, timeouts, rate-limit
//! periods, waits, retention ages); each caller says how long it allows.

use std::time::Duration;

const UNITS: [(&str, f64); 6] =
    [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86_400.0), ("w", 7.0 * 86_400.0)];

/// `text` as a duration of at most `longest`, or why it is not one we accept.
pub fn parse(text: &str, longest: Duration) -> Result<Duration, String> {
    let not_one = || format!("`{text}` is not a duration; write it like \"500ms\", \"30s\", \"5m\", \"1h\" or \"3d\"");
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(not_one)?);
    let n: f64 = num.trim().parse().map_err(|_| not_one())?;
    let Some((_, seconds)) = UNITS.iter().find(|(name, _)| *name == unit) else { return Err(not_one()) };
    let secs = n * seconds;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(not_one());
    }
    if secs > longest.as_secs_f64() {
        return Err(format!("`{text}` is longer than the maximum of {}", describe(longest)));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration in the largest whole unit that fits it: "30 days", "90 s", "1500 ms".
pub fn describe(d: Duration) -> String {
    let ms = d.as_millis();
    for (name, unit_ms) in
        [("weeks", 604_800_000), ("days", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000)]
    {
        if ms >= unit_ms && ms.is_multiple_of(unit_ms) {
            let n = ms / unit_ms;
            return match (n, name) {
                (1, "weeks") => "1 week".into(),
                (1, "days") => "1 day".into(),
                _ => format!("{n} {name}"),
            };
        }
    }
    format!("{ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn every_unit_reads_and_the_longest_is_kept() {
        let cases =
            [("500ms", 0.5), ("1.5s", 1.5), ("5m", 300.0), ("36h", 129_600.0), ("3d", 259_200.0), ("2w", 1_209_600.0)];
        for (text, secs) in cases {
            assert_eq!(parse(text, 30 * DAY), Ok(Duration::from_secs_f64(secs)), "{text}");
        }
        assert_eq!(parse("30d", 30 * DAY), Ok(30 * DAY));
        assert!(parse("31d", 30 * DAY).unwrap_err().contains("maximum of 30 days"));
        for bad in ["soon", "3", "d", "-3d", "3y", "inf s", "NaNs", "1e400s"] {
            let e = parse(bad, 30 * DAY).unwrap_err();
            assert!(e.contains("not a duration") || e.contains("maximum"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_are_described_in_their_largest_whole_unit() {
        assert_eq!(describe(30 * DAY), "30 days");
        assert_eq!(describe(DAY), "1 day");
        assert_eq!(describe(14 * DAY), "2 weeks");
        assert_eq!(describe(Duration::from_secs(90)), "90 s");
        assert_eq!(describe(Duration::from_millis(1500)), "1500 ms");
    }
}
